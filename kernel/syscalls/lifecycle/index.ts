/**
 * Lifecycle family: SPAWN, KILL, RESTART, LIST, PAUSE, RESUME. Who may act on whom is the agents service's
 * rule: operators on every agent, an agent on the agents it (transitively) spawned.
 */
import { defineFamily, target, type NameOwner } from '../../core/family.js';

export default defineFamily(({ services }) => {
  const agents = services.agents;

  /**
   * Clustered: the owner on another node of a target no local agent is (`name`, `name@node`, or another
   * node's agent id). `name@<this node>` is the local name. Undefined: a local target (or none at all).
   */
  function remote(t: { id?: number; name?: string }): { owner?: NameOwner; local: typeof t } {
    const cluster = services.cluster;
    if (!cluster) return { local: t };
    if (t.id) return agents.get(t.id) ? { local: t } : { owner: cluster.remoteOwner({ id: t.id }), local: t };
    if (!t.name) return { local: t };
    const at = t.name.lastIndexOf('@');
    const name = at < 0 ? t.name : t.name.slice(0, at);
    const node = at < 0 ? undefined : t.name.slice(at + 1);
    if (node === cluster.node) return { local: { name } };
    if (
      node === undefined &&
      (services.mail.resolve(name) !== undefined || agents.list().some((a) => a.def.name === name))
    )
      return { local: t };
    return { owner: cluster.remoteOwner({ name, node }), local: t };
  }

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
        const { owner, local } = remote(target(req));
        if (owner) throw services.cluster!.controlRefused(caller, 'KILL', owner);
        const a = agents.controlled(caller, local);
        await agents.kill(caller, a, { graceMs: req.grace_ms, wait: req.wait });
        return { success: true, killed: true, agent_id: a.def.id };
      },
      RESTART: async ({ caller }, req) => {
        const { owner, local } = remote(target(req));
        if (owner) throw services.cluster!.controlRefused(caller, 'RESTART', owner);
        const a = agents.controlled(caller, local);
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
