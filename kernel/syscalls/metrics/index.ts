/**
 * Metrics family: METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS, METRICS_CGROUP, with the reply
 * fields of the public kernel. Agents see themselves and the agents they spawned; operators see
 * everything. A client cgroup path is confined to the kernel's own cgroup tree.
 */
import {
  defineFamily,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
  type AgentRecord,
  type Caller,
} from '../../core/family.js';

export default defineFamily(({ services }) => {
  const { agents, metrics, quotas } = services;
  // The agent object, with its quotas: usage counted by the quota service, and the agent's own limits.
  const agentMetrics = (a: AgentRecord) => ({ ...metrics.agent(a), quotas: quotas.metricsFor(a) });
  const visible = (c: Caller, a: AgentRecord) => c.id === a.def.id || agents.mayControl(c, a);
  return {
    name: 'metrics',
    handlers: {
      METRICS_SYSTEM: () => ({ success: true, metrics: metrics.system() }),
      METRICS_AGENT: ({ caller }, req) => {
        const id = req.agent_id || caller.id;
        const a = agents.get(id);
        // Only operators learn whether an id is an agent at all; anybody else is refused alike.
        if (!a && caller.role !== 'operator')
          throw new PermissionDeniedError(`Permission denied: cannot read agent ${id}'s metrics`, {
            agent_id: id,
          });
        if (!a) throw new NotFoundError('Agent not found', { agent_id: id });
        if (!visible(caller, a))
          throw new PermissionDeniedError(`Permission denied: cannot read agent ${id}'s metrics`, {
            agent_id: id,
          });
        return { success: true, metrics: agentMetrics(a) };
      },
      METRICS_ALL_AGENTS: ({ caller }) => {
        const list = agents
          .list()
          .filter((a) => visible(caller, a))
          .map((a) => agentMetrics(a));
        return { success: true, agents: list, count: list.length };
      },
      METRICS_CGROUP: ({ caller }, req) => {
        const ownLeaf = caller.role === 'agent' ? metrics.ownLeaf(agents.get(caller.id)) : undefined;
        const requested = req.cgroup_path || ownLeaf;
        if (!requested) throw new InvalidRequestError('cgroup_path required', { cgroup_path: '' });
        if (!metrics.hasCgroups())
          throw new NotFoundError('Cgroup not found or not readable', { cgroup_path: requested });
        if (caller.role !== 'operator') {
          const leaf = requested.replace(/^clove\//, '').split('/')[0];
          if (leaf !== ownLeaf)
            throw new PermissionDeniedError('Permission denied: an agent may read only its own cgroup', {
              cgroup_path: requested,
            });
        }
        let m;
        try {
          m = metrics.cgroup(requested);
        } catch (e) {
          if ((e as { code?: string }).code === 'ECGPATH')
            throw new InvalidRequestError(`invalid cgroup_path: ${(e as Error).message}`, {
              cgroup_path: requested,
            });
          throw e;
        }
        if (!m) throw new NotFoundError('Cgroup not found or not readable', { cgroup_path: requested });
        return { success: true, metrics: m };
      },
    },
  };
});
