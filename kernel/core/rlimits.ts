/** This process's RLIMIT_NOFILE: read from /proc (Node has no getrlimit), raised at the kernel's start. */
import fs from 'node:fs';

/**
 * Descriptors the kernel holds per agent: its connection, nothing else (a sandboxed agent's exit is
 * watched without one: native/src/spawn.cc, the reaper).
 */
export const FDS_PER_AGENT = 1;
/** The number of idle agents one kernel is built to hold (issue 12); below it the start-up log warns. */
export const TARGET_AGENTS = 10_000;
/**
 * The hard limit a privileged kernel (CAP_SYS_RESOURCE) raises itself to when its own is lower: room for
 * TARGET_AGENTS with their FDS_PER_AGENT, clients, the operators' reserve and the kernel's files.
 */
export const WANTED_NOFILE = 65_536;

export interface NofileLimits {
  soft: number;
  hard: number;
}

let cached: NofileLimits | undefined;

/** Reads "Max open files" from /proc/self/limits (Infinity when unlimited or unreadable). */
function readLimits(): NofileLimits {
  try {
    const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    const num = (s: string | undefined): number => {
      const n = Number(s);
      return Number.isFinite(n) && n > 0 ? n : Number.POSITIVE_INFINITY;
    };
    return { soft: num(line?.[1]), hard: num(line?.[2]) };
  } catch {
    return { soft: Number.POSITIVE_INFINITY, hard: Number.POSITIVE_INFINITY };
  }
}

/**
 * The soft or hard "Max open files" of this process (Infinity when unlimited or unreadable). Read once
 * and remembered (the fd gauge asks on every accept); raiseNofileLimit() reads it again.
 */
export function nofileLimit(which: 'soft' | 'hard'): number {
  cached ??= readLimits();
  return cached[which];
}

/** The largest hard limit the Linux kernel allows (fs.nr_open), or `fallback` when unreadable. */
function nrOpen(fallback: number): number {
  try {
    const n = Number(fs.readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());
    return Number.isFinite(n) && n > 0 ? n : fallback;
  } catch {
    return fallback;
  }
}

export interface NofileRaise {
  before: NofileLimits;
  after: NofileLimits;
  /** Why the hard limit stayed below `want` (e.g. EPERM without CAP_SYS_RESOURCE), or null. */
  hardError: string | null;
  /** Why the soft limit could not reach the hard one, or null. */
  softError: string | null;
}

/**
 * Raises this process's RLIMIT_NOFILE so that the kernel, which holds FDS_PER_AGENT descriptors per
 * agent, is stopped by memory or pids before descriptors: the hard limit to `want` (at most fs.nr_open)
 * when it is lower and the process may (CAP_SYS_RESOURCE; refused otherwise, which is reported, not
 * thrown), then the soft limit to the hard one. `setNofile` is the addon's setrlimit. Agents do not
 * inherit the result: the sandbox gives each its own RLIMIT_NOFILE (policy maxOpenFiles).
 */
export function raiseNofileLimit(
  setNofile: (soft: number, hard: number) => void,
  want = WANTED_NOFILE,
): NofileRaise {
  const before = readLimits();
  let hardError: string | null = null;
  let softError: string | null = null;
  let hard = before.hard;
  const target = Math.min(want, nrOpen(want));
  if (hard < target) {
    try {
      setNofile(target, target);
      hard = target;
    } catch (e) {
      hardError = (e as Error).message;
    }
  }
  const soft = readLimits().soft;
  if (Number.isFinite(hard) && soft < hard) {
    try {
      setNofile(hard, hard);
    } catch (e) {
      softError = (e as Error).message;
    }
  }
  cached = readLimits();
  return { before, after: cached, hardError, softError };
}

/**
 * How many agents fit in `limit` descriptors when `used` are open and `reserve` are kept for operators
 * (the server refuses agents' connections below it).
 */
export function agentRoom(limit: number, used: number, reserve: number): number {
  if (!Number.isFinite(limit)) return Number.POSITIVE_INFINITY;
  return Math.max(0, Math.floor((limit - used - reserve) / FDS_PER_AGENT));
}

/** Descriptors open in this process, or null without /proc. */
export function openFds(): number | null {
  try {
    // The listing holds a descriptor of its own while it reads.
    return fs.readdirSync('/proc/self/fd').length - 1;
  } catch {
    return null;
  }
}

/**
 * The start-up log line about descriptors: what the limit is, what it was raised from, how many agents
 * it leaves room for; a warning naming the limit and the way out when that is fewer than TARGET_AGENTS.
 * `raise` is null when the addon (setrlimit) is unavailable.
 */
export function describeNofile(
  raise: NofileRaise | null,
  reserve: number,
): { level: 'info' | 'warn'; msg: string; fields: Record<string, unknown> } {
  const limits = raise?.after ?? { soft: nofileLimit('soft'), hard: nofileLimit('hard') };
  const used = openFds() ?? 0;
  const room = agentRoom(limits.soft, used, reserve);
  const fields = {
    nofile: {
      soft: limits.soft,
      hard: limits.hard,
      before: raise ? raise.before : null,
      open: used,
      operator_reserve: reserve,
      room_for_agents: room,
      fds_per_agent: FDS_PER_AGENT,
      ...(raise?.hardError ? { hard_raise_error: raise.hardError } : {}),
      ...(raise?.softError ? { soft_raise_error: raise.softError } : {}),
      ...(raise ? {} : { raise_error: 'the native addon is unavailable (setrlimit)' }),
    },
  };
  const was = raise ? ` (was ${raise.before.soft} soft / ${raise.before.hard} hard)` : '';
  if (room >= TARGET_AGENTS)
    return {
      level: 'info',
      msg: `file descriptors: limit ${limits.soft}${was}, room for ${Number.isFinite(room) ? room : 'unlimited'} agents`,
      fields,
    };
  return {
    level: 'warn',
    msg:
      `file descriptors: limit ${limits.soft}${was} leaves room for only ${room} agents ` +
      `(${FDS_PER_AGENT} fds each, ${used} open, ${reserve} kept for operators), fewer than ${TARGET_AGENTS}: ` +
      `raise the hard RLIMIT_NOFILE (ulimit -Hn, systemd LimitNOFILE=) or run the kernel with CAP_SYS_RESOURCE`,
    fields,
  };
}
