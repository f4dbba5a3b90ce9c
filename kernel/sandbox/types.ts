/**
 * The seam between the supervisor and whatever starts agent processes. The supervisor only ever sees
 * this interface: the plain spawner (child_process, `--sandbox off`) and the native sandboxed spawner
 * (native/ addon) both implement it, and both live in kernel/sandbox/.
 */
import type { Isolation, Limits } from '../../protocol/index.js';

/** A uid/gid an agent runs as. */
export interface Account {
  uid: number;
  gid: number;
}

/** Isolation actually applied to one agent, reported in SPAWN replies (the contract's `Isolation`). */
export type IsolationReport = Isolation;

/** SPAWN `limits` (the contract's `Limits`; all optional, defaults live in policy.ts). */
export type ResourceLimits = Limits;

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
   * The uid/gid the agent runs as, decided by the sandbox runtime (runtime.ts `account()`): its own when
   * the kernel is root and it is sandboxed, null for the kernel's own uid (unsandboxed agents, a kernel
   * that is not root). Spawners apply it; they never choose one.
   */
  account: Account | null;
  /**
   * Directories the caller may share with the agent read-only (the script's directory): the sandbox
   * makes them visible, idmapped to the agent's uid when that uid could not read them otherwise.
   */
  share?: string[];
  /**
   * Warm standby (kernel/supervisor/standby.ts): a second live process of the same agent, told apart
   * by this tag (its cgroup leaf gets it as a suffix, so it does not collide with the agent's own).
   */
  instance?: string;
  /**
   * A spare sandbox (kernel/supervisor/standby.ts): everything up to the agent's program is made now
   * (cgroup, namespaces, mounts, clove-init), and the program starts only on release(). A spawner that
   * cannot park starts it at once (its process's `parked` is not true).
   */
  park?: boolean;
}

/**
 * Why an agent process ended. `oom`, `pids` and `cpu` are only reported by spawners that can tell;
 * `unknown`: a re-adopted agent (started by a dead kernel) whose status only its parent could reap.
 */
export type ExitReason = 'exit' | 'signal' | 'oom' | 'pids' | 'cpu' | 'unknown';

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
  /**
   * Called at most once, before onExit's callbacks, as soon as the agent's own program is known to have
   * ended while its sandbox is still being torn down (the exit as onExit will report it): from clove-init's
   * record, the end of file of the program's connection, or at the latest the sandbox's root exit, before
   * its cgroup is removed. Spawners that learn of an exit only once everything is gone never call it. What
   * may run before the teardown is done (a restart: a warm standby's promotion or a new process in a cgroup
   * leaf of its own, supervisor.ts) uses it; everything else waits for onExit.
   */
  onEnded?(cb: (info: ExitInfo) => void): void;
  /**
   * Another process took over as the agent (its warm standby was promoted when this one ended): nobody
   * waits for this one's exit any more, so what is left of its teardown (its cgroup's removal) may wait
   * until the new process has been served.
   */
  replaced?(): void;
  /**
   * A connection of process `pid` reached end of file (its peer closed it). When `pid` is the agent's own
   * program and it has ended or is exiting (killed: every thread past the point of no return), onEnded's
   * callbacks are called now. Anything else: nothing happens.
   */
  peerEnded?(pid: number): void;
  /** True while a spare sandbox (SpawnSpec `park`) waits for release(). */
  readonly parked?: boolean;
  /** Starts the program of a parked spare sandbox (a no-op otherwise). */
  release?(): void;
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
  /**
   * Re-adopts a running agent process a dead kernel started (docs/restart.md): watches `pid` without
   * being its parent. Throws when it is gone. Spawners without it cannot re-adopt (the agent is killed
   * and started again).
   */
  adopt?(spec: Omit<SpawnSpec, 'logFd'>, pid: number): Promise<AgentProcess>;
  /** True when spawn() would honour `park` for an agent with this `sandboxed` (see SpawnSpec.park). */
  canPark?(sandboxed: boolean | undefined): boolean;
}
