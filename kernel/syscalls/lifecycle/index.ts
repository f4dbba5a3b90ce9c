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
      SPAWN: ({ caller }, req) => agents.spawn(caller, req),
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
      LIST: ({ caller }) =>
        agents
          .list()
          .filter((a) => a.def.id === caller.id || agents.mayControl(caller, a))
          .map((a) => agents.describe(a, caller.role === 'operator')),
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
