/** Small readers of /proc shared by the supervisor and the agents' service. */
import fs from 'node:fs';

/** The parent pid of `pid` from /proc/PID/stat, or null when it is gone (or not ours to read). */
export function parentPid(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may hold spaces and parentheses: the fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    return Number.isInteger(ppid) ? ppid : null;
  } catch {
    return null;
  }
}
