/**
 * Processes a test must be able to name for good and clean up: a pid with its start time (pids are
 * reused), and the set of processes to SIGKILL after a test that may leave some running (an agent that
 * outlives its kernel).
 */
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

/** Pids to SIGKILL once a test is over, whatever happened to it. */
export class Strays extends Set<number> {
  /** SIGKILLs every pid (those gone are skipped) and forgets them. */
  killAll(): void {
    for (const pid of this) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    this.clear();
  }
}
