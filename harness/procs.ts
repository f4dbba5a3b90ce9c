/**
 * Processes a test must be able to name for good and clean up: a pid with its start time (pids are
 * reused), and the set of processes to SIGKILL after a test that may leave some running (an agent that
 * outlives its kernel).
 */
import fs from 'node:fs';

/** The start time of `pid` (/proc/<pid>/stat field 22), null when it is gone or a zombie. */
export function startOf(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return f[0] === 'Z' ? null : f[19];
  } catch {
    return null;
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
