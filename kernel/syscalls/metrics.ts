/**
 * METRICS_SYSTEM, METRICS_AGENT, METRICS_ALL_AGENTS, METRICS_CGROUP with the reply fields of the public
 * kernel (numbers, never null inside the objects). Agents see themselves and the agents they spawned;
 * operators see everything. A client cgroup path is confined to the kernel's own cgroup tree.
 */
import path from 'node:path';
import { NotFoundError, PermissionDeniedError, InvalidRequestError } from '../errors.js';
import type { Caller, Kernel } from '../kernel.js';
import type { AgentRecord } from '../supervisor/supervisor.js';
import {
  agentCgroupMetrics,
  cgroupMetrics,
  createSystemSampler,
  processMetrics,
  CgroupPathError,
} from '../sandbox/index.js';
import { optInt, optString } from '../validate.js';
import type { HandlerTable } from './index.js';
import { mayControl } from './lifecycle.js';

let sampler: (() => ReturnType<ReturnType<typeof createSystemSampler>>) | null = null;

function visible(k: Kernel, c: Caller, a: AgentRecord): boolean {
  return c.principal.id === a.def.id || mayControl(k, c, a);
}

function agentObject(k: Kernel, a: AgentRecord) {
  const cg = k.sandbox.cgroupOf(a.proc);
  const root = k.sandbox.cgroupRoot();
  const stats = k.stats(a.def.id);
  return {
    timestamp: Date.now(),
    agent_id: a.def.id,
    name: a.def.name,
    pid: a.proc ? a.pid : 0,
    status: a.state,
    uptime_ms: a.proc ? Date.now() - a.startedAt : 0,
    sandboxed: Boolean(a.isolation?.namespaces.pid),
    restarts: a.restarts,
    process: (a.proc && processMetrics(a.pid)) || null,
    cgroup: cg && root ? agentCgroupMetrics(root, cg) : null,
    kernel_stats: {
      syscall_count: stats.syscalls,
      llm_calls: 0,
      llm_tokens_used: 0,
      messages_sent: stats.sent,
      messages_recv: stats.received,
      bytes_read: 0,
      bytes_written: 0,
    },
  };
}

export const metrics: HandlerTable = {
  METRICS_SYSTEM: {
    fn: () => {
      sampler ??= createSystemSampler();
      return { success: true, metrics: sampler() };
    },
  },
  METRICS_AGENT: {
    fn: (k, c, p) => {
      const id = optInt(p, 'agent_id', 0, 0xffffffff) || c.principal.id;
      const a = k.supervisor.get(id);
      if (!a) throw new NotFoundError('Agent not found', { agent_id: id });
      if (!visible(k, c, a))
        throw new PermissionDeniedError(`Permission denied: cannot read agent ${id}'s metrics`, {
          agent_id: id,
        });
      return { success: true, metrics: agentObject(k, a) };
    },
  },
  METRICS_ALL_AGENTS: {
    fn: (k, c) => {
      const agents = k.supervisor
        .list()
        .filter((a) => visible(k, c, a))
        .map((a) => agentObject(k, a));
      return { success: true, agents, count: agents.length };
    },
  },
  METRICS_CGROUP: {
    fn: (k, c, p) => {
      const root = k.sandbox.cgroupRoot();
      let requested = optString(p, 'cgroup_path');
      const own =
        c.principal.role === 'agent'
          ? k.sandbox.cgroupOf(k.supervisor.get(c.principal.id)?.proc ?? null)
          : undefined;
      const ownLeaf = own ? path.basename([...own.dirs.values()][0] ?? '') : undefined;
      if (!requested) {
        if (!ownLeaf) throw new InvalidRequestError('cgroup_path required', { cgroup_path: '' });
        requested = ownLeaf;
      }
      if (!root) throw new NotFoundError('Cgroup not found or not readable', { cgroup_path: requested });
      if (c.principal.role !== 'operator') {
        const leaf = requested.replace(/^clove\//, '').split('/')[0];
        if (leaf !== ownLeaf)
          throw new PermissionDeniedError('Permission denied: an agent may read only its own cgroup', {
            cgroup_path: requested,
          });
      }
      let m;
      try {
        m = cgroupMetrics(root, requested);
      } catch (e) {
        if (e instanceof CgroupPathError)
          throw new InvalidRequestError(`invalid cgroup_path: ${e.message}`, { cgroup_path: requested });
        throw e;
      }
      if (!m) throw new NotFoundError('Cgroup not found or not readable', { cgroup_path: requested });
      return { success: true, metrics: m };
    },
  },
};
