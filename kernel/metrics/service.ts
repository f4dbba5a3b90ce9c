/**
 * The metrics service behind the METRICS_* syscalls: the system sampler, the agent object (process,
 * cgroup, kernel counters) and cgroup reads confined to the kernel's own cgroup tree. Who may see what
 * is the family's decision; this only measures.
 */
import path from 'node:path';
import type { Stats } from '../core/principals.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { AgentRecord } from '../supervisor/supervisor.js';
import { agentCgroupMetrics, cgroupMetrics, type CgroupMetrics } from './cgroup.js';
import { processMetrics } from './process.js';
import { createSystemSampler, type SystemMetrics } from './system.js';

export { CgroupPathError } from '../sandbox/errors.js';

export class MetricsService {
  private sampler: (() => SystemMetrics) | null = null;

  constructor(
    private readonly sandbox: SandboxRuntime,
    private readonly stats: (id: number) => Stats,
  ) {}

  /** Host figures; cpu percent is the delta since the previous call. */
  system(): SystemMetrics {
    this.sampler ??= createSystemSampler();
    return this.sampler();
  }

  /** The agent object of METRICS_AGENT. */
  agent(a: AgentRecord) {
    const cg = this.sandbox.cgroupOf(a.proc);
    const root = this.sandbox.cgroupRoot();
    const stats = this.stats(a.def.id);
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
        bytes_read: stats.bytesRead,
        bytes_written: stats.bytesWritten,
      },
    };
  }

  /** The leaf name of an agent's own cgroup (what METRICS_CGROUP reads by default), if it has one. */
  ownLeaf(a: AgentRecord | undefined): string | undefined {
    const own = this.sandbox.cgroupOf(a?.proc ?? null);
    return own ? path.basename([...own.dirs.values()][0] ?? '') : undefined;
  }

  /** Whether the kernel has a cgroup tree at all. */
  hasCgroups(): boolean {
    return this.sandbox.cgroupRoot() !== undefined;
  }

  /**
   * A cgroup of the kernel's tree by its client path (`<leaf>` or `clove/<leaf>`); undefined when it
   * does not exist. Throws CgroupPathError for a path that tries to leave the tree.
   */
  cgroup(requested: string): CgroupMetrics | undefined {
    const root = this.sandbox.cgroupRoot();
    return root ? cgroupMetrics(root, requested) : undefined;
  }
}
