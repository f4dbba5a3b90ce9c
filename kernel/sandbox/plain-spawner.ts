/**
 * The unsandboxed spawner: a plain child process in a process group of its own, so that signals reach
 * everything the agent started and nothing it started outlives it. Used where the native sandbox is
 * not available and for agents an operator spawns with `sandboxed: false`.
 */
import { spawn } from 'node:child_process';
import { SpawnFailedError } from '../core/errors.js';
import { loadNative } from './native.js';
import type { AgentProcess, ExitInfo, IsolationReport, SpawnSpec, Spawner } from './types.js';

const NO_ISOLATION: IsolationReport = {
  fully_isolated: false,
  namespaces: { pid: false, net: false, mnt: false, uts: false },
  cgroups: { available: false, memory_limit: false, cpu_quota: false, pids_limit: false },
  degraded_reason: 'plain process: no namespaces or cgroups applied',
};

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // ESRCH: the group is already gone.
  }
}

export class PlainSpawner implements Spawner {
  readonly kind = 'plain';

  constructor(private readonly reason = NO_ISOLATION.degraded_reason) {}

  async spawn(spec: SpawnSpec): Promise<AgentProcess> {
    const [file, ...args] = spec.argv;
    const child = spawn(file, args, {
      cwd: spec.cwd,
      env: spec.env,
      stdio: ['ignore', spec.logFd, spec.logFd],
      detached: true,
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (e: NodeJS.ErrnoException) =>
        reject(new SpawnFailedError(`failed to spawn agent: ${e.code ?? ''} ${e.message}`.trim())),
      );
    });
    return this.handle(pid, (cb) =>
      child.once('exit', (code, signal) => cb({ code, signal, reason: signal ? 'signal' : 'exit' })),
    );
  }

  /**
   * Re-adopts a plain agent a dead kernel started (docs/restart.md): its exit is watched through a pidfd
   * (the addon's watchPid), without a status (reason `unknown`). Throws when it is gone.
   */
  async adopt(_spec: Omit<SpawnSpec, 'logFd'>, pid: number): Promise<AgentProcess> {
    let child;
    try {
      child = loadNative().watchPid(pid);
    } catch (e) {
      throw new SpawnFailedError(`cannot re-adopt pid ${pid}: ${(e as Error).message}`);
    }
    return this.handle(pid, (cb) => child.watch(() => cb({ code: null, signal: null, reason: 'unknown' })));
  }

  /** The AgentProcess of a plain agent leading process group `pid`; `watch` reports its exit once. */
  private handle(pid: number, watch: (cb: (i: ExitInfo) => void) => void): AgentProcess {
    let exitInfo: ExitInfo | null = null;
    const listeners: ((i: ExitInfo) => void)[] = [];
    watch((info) => {
      // The agent is gone: whatever it left behind in its group goes with it.
      killGroup(pid, 'SIGKILL');
      exitInfo = info;
      for (const l of listeners.splice(0)) l(exitInfo);
    });
    const isolation = { ...NO_ISOLATION, degraded_reason: this.reason };
    return {
      pid,
      isolation,
      // Not once it has exited: its group's id is free then, and in time names another process's group.
      signal: (sig) => {
        if (!exitInfo) killGroup(pid, sig);
      },
      onExit: (cb) => {
        if (exitInfo) queueMicrotask(() => cb(exitInfo!));
        else listeners.push(cb);
      },
    };
  }
}
