/**
 * quotas family: SET_QUOTA and GET_QUOTA (docs/protocol.md "Quotas"). Limits and usage live in the
 * quota service (kernel/quotas/service.ts), which also counts and enforces; this only resolves the
 * target and decides who may read it. Operators read and set anything; an agent reads its own quotas and
 * its descendants', and sets quotas only on its descendants, never looser than its own.
 */
import {
  defineFamily,
  InvalidRequestError,
  PermissionDeniedError,
  type AgentRecord,
  type Caller,
  type Services,
} from '../../core/family.js';

/** The agent a request names (agent_id, else name), found as KILL finds it; undefined when it names none. */
function agentOf(services: Services, caller: Caller, req: { agent_id?: number; name?: string }) {
  if (!req.agent_id && req.name === undefined) return undefined;
  const t = req.agent_id ? { id: req.agent_id } : { name: req.name };
  try {
    return services.agents.find(t);
  } catch (e) {
    // To a non-operator a missing agent is refused like another's (no probing of ids and names).
    if (caller.role === 'operator') throw e;
    throw new PermissionDeniedError(`Permission denied: agent ${t.name ?? t.id} is not yours`);
  }
}

export default defineFamily(({ services }) => {
  const { quotas, agents } = services;
  const readable = (caller: Caller, a: AgentRecord): AgentRecord => {
    if (!quotas.mayRead(caller, a))
      throw new PermissionDeniedError(`Permission denied: cannot read the quotas of agent ${a.def.name}`);
    return a;
  };
  return {
    name: 'quotas',
    handlers: {
      SET_QUOTA: ({ caller }, req) => {
        const agent = agentOf(services, caller, req);
        if (!agent && !req.service)
          throw new InvalidRequestError('invalid request: agent_id, name or service required');
        if (agent && req.service)
          throw new InvalidRequestError('invalid request: give an agent or a service, not both');
        return { success: true, quotas: quotas.set(caller, { agent, service: req.service }, req.quotas) };
      },
      GET_QUOTA: ({ caller }, req) => {
        if (req.all) {
          if (caller.role !== 'operator')
            throw new PermissionDeniedError('Permission denied: only an operator may read every quota');
          return {
            success: true,
            agents: agents.list().map((a) => quotas.agentQuotas(a)),
            services: quotas.allServices(),
          };
        }
        if (req.service) {
          if (caller.role !== 'operator') {
            const own = agents.get(caller.id);
            const mine = own && quotas.agentQuotas(own).service;
            if (mine?.project !== req.service.project || mine.service !== req.service.service)
              throw new PermissionDeniedError(
                "Permission denied: an agent may read only its own service's quotas",
              );
          }
          return { success: true, ...quotas.serviceQuotas(req.service) };
        }
        let a = agentOf(services, caller, req);
        if (!a) {
          a = agents.get(caller.id);
          if (!a) throw new InvalidRequestError('invalid request: agent_id, name, service or all required');
        }
        return { success: true, ...quotas.agentQuotas(readable(caller, a)) };
      },
    },
  };
});
