/**
 * Lifecycle family: SPAWN, KILL, RESTART, LIST, PAUSE, RESUME. Who may act on whom is the agents service's
 * rule: operators on every agent, an agent on the agents it (transitively) spawned.
 */
import { defineFamily, target } from '../../core/family.js';

export default defineFamily(({ services }) => {
  const agents = services.agents;
  return {
    name: 'lifecycle',
    handlers: {
      SPAWN: async ({ caller }, req) => {
        // Quotas (docs/protocol.md "Quotas"): checked before the spawn, applied to the new identity after.
        const quotas = services.quotas.spawnQuotas(caller, req.quotas);
        const r = await agents.spawn(caller, req);
        services.quotas.applySpawn(r.id, quotas);
        return r;
      },
      KILL: async ({ caller }, req) => {
        const a = agents.controlled(caller, target(req));
        await agents.kill(caller, a, { graceMs: req.grace_ms, wait: req.wait });
        return { success: true, killed: true, agent_id: a.def.id };
      },
      RESTART: async ({ caller }, req) => {
        const a = agents.controlled(caller, target(req));
        const pid = await agents.restart(caller, a, { graceMs: req.grace_ms, wait: req.wait });
        return { success: true, restarted: true, agent_id: a.def.id, pid };
      },
      // Operators see every agent; anybody else itself and the agents it (transitively) spawned.
      // Clustered: each agent names its node; `all_nodes` (operators) adds the other nodes' agents.
      LIST: ({ caller }, req) => {
        const cluster = services.cluster;
        const local = agents
          .list()
          .filter((a) => a.def.id === caller.id || agents.mayControl(caller, a))
          .map((a) => agents.describe(a, caller.role === 'operator'))
          .map((a) => (cluster ? { ...a, node: cluster.node } : a));
        if (!cluster || !req.all_nodes) return local;
        return cluster.remoteList(caller).then((remote) => [...local, ...remote]);
      },
      PAUSE: ({ caller }, req) => {
        const a = agents.controlled(caller, target(req));
        agents.pause(a);
        return { success: true, paused: true, agent_id: a.def.id };
      },
      RESUME: ({ caller }, req) => {
        const a = agents.controlled(caller, target(req));
        agents.resume(a);
        return { success: true, resumed: true, agent_id: a.def.id };
      },
    },
  };
});
