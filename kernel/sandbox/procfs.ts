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

/** `pid`'s pid in its innermost PID namespace (the last NSpid of /proc/PID/status), null when gone. */
export function innermostPid(pid: number): number | null {
  try {
    const m = /^NSpid:\s*([\d\s]+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    const last = m ? Number(m[1].trim().split(/\s+/).pop()) : NaN;
    return Number.isInteger(last) ? last : null;
  } catch {
    return null;
  }
}

/** PF_EXITING in /proc/PID/stat `flags` (include/linux/sched.h): the thread is in do_exit(). */
const PF_EXITING = 0x4;

/**
 * The wait status `pid` is exiting with when every one of its threads is past the point of no return
 * (PF_EXITING; the status is /proc/PID/stat field 52, set before the process's memory is released), else
 * null (running, gone, or not ours to read).
 */
export function exitingStatus(pid: number): number | null {
  try {
    let status: number | null = null;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (rest.length < 50 || (Number(rest[6]) & PF_EXITING) === 0) return null;
      if (Number(tid) === pid) status = Number(rest[49]);
    }
    return status !== null && Number.isInteger(status) ? status : null;
  } catch {
    return null;
  }
}
