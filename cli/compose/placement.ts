/**
 * Where `clove up` / `clove scale` put a service's new replicas on a clustered kernel (docs/compose.md
 * "Placement"): a pure function of the live nodes (CLUSTER_NODES), the replicas the service already has
 * on each node (LIST `all_nodes`) and the service's `placement:`.
 */
import type { Placement } from './load.js';

/** What placement reads of a node (CLUSTER_NODES). */
export interface NodeLoad {
  node: string;
  alive: boolean;
  free_memory: number;
  idle_cpu: number;
}

/** No node may take another replica of the service (the listed nodes are gone, or all at max_per_node). */
export class PlacementError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PlacementError';
  }
}

/**
 * The node of each of `count` new replicas, in order. Each choice counts for the next: with `spread`
 * (the default) the node with the fewest replicas of this service, then the most free memory, the most
 * idle CPU, the name; without it the roomiest node (free memory, idle CPU, name) until `max_per_node`.
 * Only live nodes, and only `nodes:` when given (listed nodes that are not live are skipped).
 */
export function placeReplicas(
  nodes: NodeLoad[],
  have: Map<string, number>,
  placement: Placement | null,
  count: number,
  service: string,
): string[] {
  const p: Placement = placement ?? { nodes: null, spread: true, maxPerNode: null };
  const eligible = nodes.filter((n) => n.alive && (!p.nodes || p.nodes.includes(n.node)));
  if (!eligible.length)
    throw new PlacementError(
      p.nodes
        ? `${service}: none of the nodes ${p.nodes.join(', ')} is alive in the cluster`
        : `${service}: no live node in the cluster`,
    );
  const counts = new Map(eligible.map((n) => [n.node, have.get(n.node) ?? 0]));
  const roomier = (a: NodeLoad, b: NodeLoad) =>
    b.free_memory - a.free_memory || b.idle_cpu - a.idle_cpu || a.node.localeCompare(b.node);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    const open = eligible.filter((n) => p.maxPerNode === null || counts.get(n.node)! < p.maxPerNode);
    if (!open.length)
      throw new PlacementError(
        `${service}: no room for ${count - i} more replica(s): every eligible node (${eligible
          .map((n) => n.node)
          .join(', ')}) has max_per_node ${p.maxPerNode}`,
      );
    open.sort((a, b) => (p.spread ? counts.get(a.node)! - counts.get(b.node)! : 0) || roomier(a, b));
    const chosen = open[0].node;
    counts.set(chosen, counts.get(chosen)! + 1);
    out.push(chosen);
  }
  return out;
}
