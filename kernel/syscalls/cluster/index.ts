/**
 * Cluster family: CLUSTER_NODES, CLUSTER_STATUS (docs/cluster.md). A kernel without `--cluster` answers
 * both with `clustered: false`, so that clients need not guess.
 */
import { defineFamily } from '../../core/family.js';

export default defineFamily(({ services }) => ({
  name: 'cluster',
  handlers: {
    CLUSTER_NODES: () => {
      const c = services.cluster;
      return { success: true, clustered: c !== undefined, nodes: c ? c.nodes() : [] };
    },
    CLUSTER_STATUS: ({ caller }) => {
      const c = services.cluster;
      if (!c) return { success: true, clustered: false, node: null };
      return { success: true, clustered: true, ...c.status(caller.role === 'operator'), node: c.node };
    },
  },
}));
