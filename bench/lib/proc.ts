/** Readers of /proc for one process: resident memory and CPU time. */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

/** VmRSS (and RssAnon, RssFile) of a process in KiB. */
export function memoryKiB(pid: number): { vmRss: number; rssAnon: number; rssFile: number; vmHwm: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN);
  return { vmRss: get('VmRSS'), rssAnon: get('RssAnon'), rssFile: get('RssFile'), vmHwm: get('VmHWM') };
}

let ticks: number | null = null;

/** Clock ticks per second (USER_HZ), for /proc/<pid>/stat times. */
export function clockTicks(): number {
  if (ticks === null) {
    try {
      ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticks = 100;
    }
  }
  return ticks;
}

/** utime + stime of a process in seconds (own threads, not reaped children). */
export function cpuSeconds(pid: number): { utime: number; stime: number; total: number } {
  const rest = statAfterComm(pid);
  // fields after comm: state(3) ppid(4) … utime(14) stime(15) → rest[11], rest[12]
  const hz = clockTicks();
  const utime = Number(rest[11]) / hz;
  const stime = Number(rest[12]) / hz;
  return { utime, stime, total: utime + stime };
}

/** Number of open file descriptors of a process. */
export function fdCount(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The live processes below `pid` (children, their children, …), from the parent pids in /proc. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    const p = Number(e);
    if (!Number.isInteger(p)) continue;
    let ppid: number;
    try {
      ppid = Number(statAfterComm(p)[1]);
    } catch {
      continue; // gone since the listing
    }
    const siblings = children.get(ppid);
    if (siblings) siblings.push(p);
    else children.set(ppid, [p]);
  }
  const out: number[] = [];
  for (let todo = [...(children.get(pid) ?? [])]; todo.length;) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** utime + stime of processes in seconds, summed; a process that is gone counts 0. */
export function cpuSecondsOf(pids: number[]): number {
  let s = 0;
  for (const p of pids) {
    try {
      s += cpuSeconds(p).total;
    } catch {
      // exited
    }
  }
  return s;
}

/** The fields of /proc/<pid>/stat after comm (which may hold spaces): state, ppid, … (field n at n - 3). */
function statAfterComm(pid: number): string[] {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}
