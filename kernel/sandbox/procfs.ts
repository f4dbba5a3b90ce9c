/** Small readers of /proc shared by the supervisor and the agents' service. */
import fs from 'node:fs';

/**
 * The fields of a /proc/.../stat file from field 3 (state) on, so field n is at index n - 3; null when it
 * cannot be read. comm may hold spaces and parentheses: the fields after its last ')' are fixed.
 */
export function statFields(file: string): string[] | null {
  try {
    const stat = fs.readFileSync(file, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** The parent pid of `pid` from /proc/PID/stat, or null when it is gone (or not ours to read). */
export function parentPid(pid: number): number | null {
  const ppid = Number(statFields(`/proc/${pid}/stat`)?.[1]);
  return Number.isInteger(ppid) ? ppid : null;
}

/** A process's start time (/proc/PID/stat field 22, in clock ticks): with the pid, it names one process for good. */
export function startTime(pid: number): string | null {
  return statFields(`/proc/${pid}/stat`)?.[19] ?? null;
}

/** When process `pid` started (ms since the epoch), from /proc; undefined when unknown. */
export function startedAtMs(pid: number): number | undefined {
  const start = startTime(pid);
  if (start === null) return undefined;
  const ticks = Number(start);
  let btime: RegExpExecArray | null = null;
  try {
    btime = /^btime (\d+)$/m.exec(fs.readFileSync('/proc/stat', 'latin1'));
  } catch {
    return undefined;
  }
  // USER_HZ, the unit of /proc/<pid>/stat times, is 100 on every architecture Linux supports today.
  return btime && Number.isFinite(ticks) ? Number(btime[1]) * 1000 + ticks * 10 : undefined;
}

/** True when `pid` is a zombie, or gone (or not ours to read). */
export function zombieOrGone(pid: number): boolean {
  const state = statFields(`/proc/${pid}/stat`)?.[0];
  return state === undefined || state === 'Z';
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
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return null;
  }
  let status: number | null = null;
  for (const tid of tids) {
    const f = statFields(`/proc/${pid}/task/${tid}/stat`);
    if (!f || f.length < 50 || (Number(f[6]) & PF_EXITING) === 0) return null;
    if (Number(tid) === pid) status = Number(f[49]);
  }
  return status !== null && Number.isInteger(status) ? status : null;
}
