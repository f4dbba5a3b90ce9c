/**
 * Processes a test must be able to name for good and clean up: a pid with its start time (pids are
 * reused), and the set of processes to SIGKILL after a test that may leave some running (an agent that
 * outlives its kernel).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import { statFields } from '../kernel/sandbox/procfs.js';

/**
 * The agent's own program for a pid LIST gives: the first child of its clove-init (PID 1 of a sandboxed
 * agent's namespace) when `pid` is one, else `pid` itself. A crash of the agent is the program's.
 */
export function programPid(pid: number): number {
  try {
    if (!fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0')[0]?.endsWith('clove-init')) return pid;
    const kids = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'latin1').trim().split(/\s+/);
    return kids[0] ? Number(kids[0]) : pid;
  } catch {
    return pid;
  }
}

/** The start time of `pid` (/proc/<pid>/stat field 22), null when it is gone or a zombie. */
export function startOf(pid: number): string | null {
  const f = statFields(`/proc/${pid}/stat`);
  return !f || f[0] === 'Z' ? null : f[19];
}

/**
 * Whether every thread of `pid` is stopped (state T in /proc/<pid>/task/<tid>/stat): a SIGSTOP has
 * taken hold of the whole process only then. False when it is gone.
 */
export function allStopped(pid: number): boolean {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .every((t) => statFields(`/proc/${pid}/task/${t}/stat`)?.[0] === 'T');
  } catch {
    return false;
  }
}

/**
 * Processes to SIGKILL once a test is over, whatever happened to it. Each is named by its pid and start
 * time: a pid that ended during the test may name another process by the end (pids wrap at pid_max,
 * 32768 here, within minutes of a test run that starts a Python per agent), maybe another test file's,
 * running beside this one. Only the process that was added is killed.
 */
export class Strays {
  private readonly starts = new Map<number, string>();

  /** Remembers `pid` with its start time; one already gone is not remembered. */
  add(pid: number): this {
    const start = startOf(pid);
    if (start !== null) this.starts.set(pid, start);
    return this;
  }

  /** SIGKILLs every process still the one added (gone or reused pids are skipped) and forgets them. */
  killAll(): void {
    for (const [pid, start] of this.starts) {
      if (startOf(pid) !== start) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    this.starts.clear();
  }
}

/**
 * Starts `argv` as pid `pid`, a pid that ended (pid reuse, made to happen): the host's next pid is set
 * through /proc/sys/kernel/ns_last_pid (root), then the process forked. Other processes fork meanwhile
 * (tests run side by side), so it tries `tries` times; null if it never got that pid, else the child.
 */
export async function spawnAtPid(
  pid: number,
  argv: string[],
  opts: SpawnOptions = {},
  tries = 50,
): Promise<ChildProcess | null> {
  for (let i = 0; i < tries; i++) {
    fs.writeFileSync('/proc/sys/kernel/ns_last_pid', String(pid - 1));
    const child = spawn(argv[0], argv.slice(1), { stdio: 'ignore', ...opts });
    await new Promise((r) => child.once('spawn', r));
    if (child.pid === pid) return child;
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
  return null;
}
