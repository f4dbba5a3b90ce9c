/**
 * The cgroup object of METRICS_CGROUP and of an agent's metrics (clove-wire-reference.md section 3.13),
 * read from the agent's cgroups in the kernel's own tree. Every field is a number: what cannot be read
 * is 0, and an unlimited limit ("max") is -1.
 */
import fs from 'node:fs';
import type { CgroupMetrics } from '../../protocol/index.js';
import path from 'node:path';
import {
  readKeyed,
  readNumber,
  readText,
  type AgentCgroup,
  type CgroupRoot,
  type Hierarchy,
} from '../sandbox/cgroups.js';
import { CgroupPathError } from '../sandbox/errors.js';

const CLK_TCK = 100; // USER_HZ on every Linux ABI we run on

/** Limits at or above 2^62 (v1's "unlimited" 9223372036854771712) and "max" are reported as -1. */
function lim(v: number | undefined): number {
  if (v === undefined) return -1;
  return v === Infinity || v >= 2 ** 62 ? -1 : v;
}
const num = (v: number | undefined): number => (v === undefined || !Number.isFinite(v) ? 0 : v);

/**
 * Resolves a client-supplied cgroup path against the spawner's root, per hierarchy. Accepts "<leaf>",
 * "<leaf>/<sub>" or the reference's "clove/<leaf>" form. Rejects absolute paths, `..`, `.`, empty or NUL
 * components and any symlink on the way, and re-checks the resolved path stays inside the root.
 * Throws CgroupPathError.
 */
export function resolveCgroupPath(
  root: CgroupRoot,
  requested: string,
): { relative: string; dirs: Map<Hierarchy, string> } {
  if (typeof requested !== 'string' || requested.length === 0 || requested.length > 4096)
    throw new CgroupPathError(String(requested), 'empty or too long');
  if (requested.includes('\0')) throw new CgroupPathError(requested, 'contains NUL');
  if (requested.startsWith('/')) throw new CgroupPathError(requested, 'absolute paths are not accepted');
  let parts = requested.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..'))
    throw new CgroupPathError(requested, 'empty, "." or ".." component');
  if (parts[0] === 'clove' && parts.length > 1) parts = parts.slice(1);
  const relative = parts.join('/');
  const dirs = new Map<Hierarchy, string>();
  for (const [h, rootDir] of root.roots) {
    const base = fs.realpathSync(rootDir);
    let cur = base;
    let ok = true;
    for (const p of parts) {
      cur = path.join(cur, p);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(cur);
      } catch {
        ok = false;
        break;
      }
      if (st.isSymbolicLink()) throw new CgroupPathError(requested, 'symlinks are not followed');
      if (!st.isDirectory()) {
        ok = false;
        break;
      }
    }
    if (!ok) continue;
    const real = fs.realpathSync(cur);
    if (real !== path.join(base, relative) || !real.startsWith(base + '/'))
      throw new CgroupPathError(requested, 'resolves outside the kernel cgroup tree');
    dirs.set(h, real);
  }
  return { relative, dirs };
}

function ioFromV2(dir: string): CgroupMetrics['io'] {
  const io = { read_bytes: 0, write_bytes: 0, read_ops: 0, write_ops: 0 };
  for (const line of (readText(path.join(dir, 'io.stat')) ?? '').split('\n')) {
    for (const kv of line.split(' ').slice(1)) {
      const [k, v] = kv.split('=');
      const n = Number(v) || 0;
      if (k === 'rbytes') io.read_bytes += n;
      else if (k === 'wbytes') io.write_bytes += n;
      else if (k === 'rios') io.read_ops += n;
      else if (k === 'wios') io.write_ops += n;
    }
  }
  return io;
}

function ioFromV1(dir: string): CgroupMetrics['io'] {
  const io = { read_bytes: 0, write_bytes: 0, read_ops: 0, write_ops: 0 };
  const add = (file: string, r: 'read_bytes' | 'read_ops', w: 'write_bytes' | 'write_ops') => {
    for (const line of (readText(path.join(dir, file)) ?? '').split('\n')) {
      const [, op, v] = line.trim().split(/\s+/);
      if (op === 'Read') io[r] += Number(v) || 0;
      else if (op === 'Write') io[w] += Number(v) || 0;
    }
  };
  add('blkio.throttle.io_service_bytes', 'read_bytes', 'write_bytes');
  add('blkio.throttle.io_serviced', 'read_ops', 'write_ops');
  return io;
}

/** Reads the cgroup object from per-controller directories (v1, v2 or mixed). */
export function readCgroupMetrics(
  cgroupPath: string,
  dirOf: (c: 'memory' | 'cpu' | 'cpuacct' | 'pids' | 'io') => { dir: string; version: 1 | 2 } | undefined,
): CgroupMetrics {
  const m: CgroupMetrics = {
    timestamp: Date.now(),
    cgroup_path: cgroupPath,
    valid: false,
    cpu: {
      usage_usec: 0,
      user_usec: 0,
      system_usec: 0,
      throttled_usec: 0,
      nr_periods: 0,
      nr_throttled: 0,
      quota_usec: -1,
      period_usec: 0,
    },
    memory: {
      current: 0,
      min: 0,
      low: 0,
      high: -1,
      max: -1,
      peak: 0,
      swap_current: 0,
      swap_max: -1,
      oom_kills: 0,
    },
    pids: { current: 0, max: -1 },
    io: { read_bytes: 0, write_bytes: 0, read_ops: 0, write_ops: 0 },
  };
  const cpu = dirOf('cpu');
  const acct = dirOf('cpuacct');
  if (acct?.version === 2 || cpu?.version === 2) {
    const d = (acct?.version === 2 ? acct : cpu)!.dir;
    const st = readKeyed(path.join(d, 'cpu.stat'));
    m.cpu.usage_usec = num(st.usage_usec);
    m.cpu.user_usec = num(st.user_usec);
    m.cpu.system_usec = num(st.system_usec);
    m.cpu.nr_periods = num(st.nr_periods);
    m.cpu.nr_throttled = num(st.nr_throttled);
    m.cpu.throttled_usec = num(st.throttled_usec);
    m.valid = true;
  }
  if (acct?.version === 1) {
    m.cpu.usage_usec = Math.round(num(readNumber(path.join(acct.dir, 'cpuacct.usage'))) / 1000);
    const st = readKeyed(path.join(acct.dir, 'cpuacct.stat'));
    m.cpu.user_usec = num(st.user) * (1e6 / CLK_TCK);
    m.cpu.system_usec = num(st.system) * (1e6 / CLK_TCK);
    m.valid = true;
  }
  if (cpu?.version === 1) {
    const st = readKeyed(path.join(cpu.dir, 'cpu.stat'));
    m.cpu.nr_periods = num(st.nr_periods);
    m.cpu.nr_throttled = num(st.nr_throttled);
    m.cpu.throttled_usec = Math.round(num(st.throttled_time) / 1000);
    const q = readNumber(path.join(cpu.dir, 'cpu.cfs_quota_us'));
    m.cpu.quota_usec = q === undefined || q < 0 ? -1 : q;
    m.cpu.period_usec = num(readNumber(path.join(cpu.dir, 'cpu.cfs_period_us')));
    m.valid = true;
  } else if (cpu?.version === 2) {
    const [q, p] = (readText(path.join(cpu.dir, 'cpu.max')) ?? 'max 100000').trim().split(/\s+/);
    m.cpu.quota_usec = q === 'max' ? -1 : Number(q) || 0;
    m.cpu.period_usec = Number(p) || 0;
  }
  const mem = dirOf('memory');
  if (mem?.version === 1) {
    const d = mem.dir;
    const usage = num(readNumber(path.join(d, 'memory.usage_in_bytes')));
    const limit = lim(readNumber(path.join(d, 'memory.limit_in_bytes')));
    m.memory.current = usage;
    m.memory.max = limit;
    m.memory.high = lim(readNumber(path.join(d, 'memory.soft_limit_in_bytes')));
    m.memory.peak = num(readNumber(path.join(d, 'memory.max_usage_in_bytes')));
    const memsw = readNumber(path.join(d, 'memory.memsw.usage_in_bytes'));
    const memswMax = readNumber(path.join(d, 'memory.memsw.limit_in_bytes'));
    m.memory.swap_current = memsw !== undefined ? Math.max(0, memsw - usage) : 0;
    m.memory.swap_max =
      memswMax === undefined ? -1 : lim(memswMax) === -1 || limit === -1 ? -1 : Math.max(0, memswMax - limit);
    m.memory.oom_kills = num(readKeyed(path.join(d, 'memory.oom_control')).oom_kill);
    m.valid = true;
  } else if (mem?.version === 2) {
    const d = mem.dir;
    m.memory.current = num(readNumber(path.join(d, 'memory.current')));
    m.memory.min = num(readNumber(path.join(d, 'memory.min')));
    m.memory.low = num(readNumber(path.join(d, 'memory.low')));
    m.memory.high = lim(readNumber(path.join(d, 'memory.high')));
    m.memory.max = lim(readNumber(path.join(d, 'memory.max')));
    m.memory.peak = num(readNumber(path.join(d, 'memory.peak')));
    m.memory.swap_current = num(readNumber(path.join(d, 'memory.swap.current')));
    m.memory.swap_max = lim(readNumber(path.join(d, 'memory.swap.max')));
    m.memory.oom_kills = num(readKeyed(path.join(d, 'memory.events')).oom_kill);
    m.valid = true;
  }
  const pids = dirOf('pids');
  if (pids) {
    m.pids.current = num(readNumber(path.join(pids.dir, 'pids.current')));
    m.pids.max = lim(readNumber(path.join(pids.dir, 'pids.max')));
    m.valid = true;
  }
  const io = dirOf('io');
  if (io) m.io = io.version === 2 ? ioFromV2(io.dir) : ioFromV1(io.dir);
  return m;
}

/**
 * METRICS_CGROUP: the cgroup object of a client-named cgroup inside this spawner's tree, or undefined
 * when it does not exist ("Cgroup not found or not readable"). Throws CgroupPathError for paths that try
 * to leave the tree.
 */
export function cgroupMetrics(root: CgroupRoot, requested: string): CgroupMetrics | undefined {
  const { relative, dirs } = resolveCgroupPath(root, requested);
  if (dirs.size === 0) return undefined;
  return metricsFromDirs(root, `clove/${relative}`, dirs);
}

/** The cgroup object of an agent's own cgroup (the agent object's `cgroup` field): `spawner.cgroupRoot`, `agent.cgroup`. */
export function agentCgroupMetrics(root: CgroupRoot, cg: AgentCgroup): CgroupMetrics {
  const first = [...cg.dirs.values()][0] ?? '';
  return metricsFromDirs(root, `clove/${path.basename(first)}`, cg.dirs);
}

function metricsFromDirs(root: CgroupRoot, display: string, dirs: Map<Hierarchy, string>): CgroupMetrics {
  const c = root.layout.controllers;
  return readCgroupMetrics(display, (name) => {
    if (name === 'io') {
      const h = root.layout.v2;
      const d = h ? dirs.get(h) : undefined;
      return d && h && h.controllers.includes('io') ? { dir: d, version: 2 } : undefined;
    }
    const h = c[name];
    const d = h ? dirs.get(h) : undefined;
    return d && h ? { dir: d, version: h.version } : undefined;
  });
}

export type { CgroupMetrics };
