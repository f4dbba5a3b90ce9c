/**
 * The seam between the supervisor and whatever starts agent processes. The supervisor only ever sees
 * this interface: the plain spawner (child_process) and the native sandboxed spawner (native/ addon,
 * kernel/sandbox/) both implement it.
 */

/** Isolation actually applied to one agent, reported in SPAWN replies (field names of the reference). */
export interface IsolationReport {
  fully_isolated: boolean;
  namespaces: { pid: boolean; net: boolean; mnt: boolean; uts: boolean; ipc?: boolean; user?: boolean };
  cgroups: {
    available: boolean;
    memory_limit: boolean;
    cpu_quota: boolean;
    pids_limit: boolean;
    version?: string;
  };
  degraded_reason?: string;
}

/** Resource limits of the reference's SPAWN `limits` object (all optional; defaults live in the sandbox). */
export interface ResourceLimits {
  memory?: number;
  max_pids?: number;
  cpu_quota?: number;
  cpu_period?: number;
  cpu_shares?: number;
}

export interface SpawnSpec {
  /** Kernel-assigned agent id (stable across restarts). */
  agentId: number;
  name: string;
  /** argv[0] is an absolute path to the executable (interpreters are resolved once by the kernel). */
  argv: string[];
  /** The complete environment of the agent: nothing of the kernel's own is inherited. */
  env: Record<string, string>;
  cwd: string;
  /** An fd opened O_APPEND on the agent's log file; it becomes the agent's stdout and stderr. */
  logFd: number;
  /** Sandbox request: `sandboxed` false means a plain process; `network` grants a network namespace with access. */
  sandboxed: boolean;
  network: boolean;
  limits: ResourceLimits;
  /**
   * The uid/gid the agent runs as when the kernel is root (one per agent, so agents cannot read each
   * other's files); the sandbox's default uid when absent.
   */
  uid?: number;
  gid?: number;
}

/** Why an agent process ended. `oom`, `pids` and `cpu` are only reported by spawners that can tell. */
export type ExitReason = 'exit' | 'signal' | 'oom' | 'pids' | 'cpu';

export interface ExitInfo {
  /** Exit status when the process exited normally, else null. */
  code: number | null;
  /** Signal name (e.g. SIGKILL) when a signal ended it, else null. */
  signal: NodeJS.Signals | null;
  reason: ExitReason;
}

export interface AgentProcess {
  readonly pid: number;
  readonly isolation: IsolationReport;
  /** Sends a signal to the agent and every process it started. Never throws for an already dead agent. */
  signal(sig: NodeJS.Signals): void;
  /** Called exactly once, after the agent and its process tree are gone and reaped. */
  onExit(cb: (info: ExitInfo) => void): void;
}

export interface Spawner {
  readonly kind: string;
  /** Starts an agent; throws SpawnError (kernel/errors.ts) when it cannot be started at all. */
  spawn(spec: SpawnSpec): Promise<AgentProcess>;
  /**
   * Maps a peer pid (from SO_PEERCRED) to the agent whose process tree it belongs to, when the spawner
   * can tell by construction (e.g. cgroup membership). Undefined means "ask /proc's parent chain".
   */
  ownerOf?(pid: number): number | undefined;
  /** Releases spawner-wide resources (cgroup roots, namespace fds) at kernel shutdown. */
  close?(): Promise<void>;
}
