/**
 * The per-process object inside METRICS_AGENT (clove-wire-reference.md section 3.13), from /proc/<pid>.
 * Every field is a number: what cannot be read is 0.
 */
import fs from 'node:fs';
import type { ProcessMetrics } from '../../protocol/index.js';
import os from 'node:os';
import { readText } from '../sandbox/cgroups.js';

const CLK_TCK = 100; // USER_HZ on every Linux ABI we run on
const PAGE = 4096;

const lastCpu = new Map<number, { ticks: number; at: number; start: number }>();

/**
 * The per-process object of METRICS_AGENT for a host pid, or undefined when the process is gone (so no
 * field is ever garbage). cpu.percent is relative to one core, since the previous call for that pid.
 */
export function processMetrics(pid: number): ProcessMetrics | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const stat = readText(`/proc/${pid}/stat`);
  if (!stat) {
    lastCpu.delete(pid);
    return undefined;
  }
  const open = stat.indexOf('(');
  const close = stat.lastIndexOf(')');
  const name = stat.slice(open + 1, close);
  const f = stat.slice(close + 2).split(' '); // f[0] = field 3 (state)
  const state = /^[RSDZT]$/.test(f[0]) ? f[0] : '?';
  const utime = Number(f[11]) || 0;
  const stime = Number(f[12]) || 0;
  const start = Number(f[19]) || 0;
  const now = performance.now();
  const prev = lastCpu.get(pid);
  let percent = 0;
  if (prev && prev.start === start && now > prev.at)
    percent = Math.round((((utime + stime - prev.ticks) / CLK_TCK) * 1000 * 10000) / (now - prev.at)) / 100;
  lastCpu.set(pid, { ticks: utime + stime, at: now, start });
  const statm = (readText(`/proc/${pid}/statm`) ?? '').trim().split(' ').map(Number);
  const rss = (statm[1] || 0) * PAGE;
  const ioKeys: Record<string, number> = {};
  for (const line of (readText(`/proc/${pid}/io`) ?? '').split('\n')) {
    const [k, v] = line.split(':');
    if (k && v) ioKeys[k.trim()] = Number(v) || 0;
  }
  let fds = 0;
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    /* not ours to read */
  }
  const total = os.totalmem();
  return {
    timestamp: Date.now(),
    pid,
    ppid: Number(f[1]) || 0,
    name,
    state,
    cmdline: (readText(`/proc/${pid}/cmdline`) ?? '').split('\0').filter(Boolean).join(' '),
    cpu: {
      percent,
      time_user_ms: (utime * 1000) / CLK_TCK,
      time_system_ms: (stime * 1000) / CLK_TCK,
      priority: Number(f[15]) || 0,
      nice: Number(f[16]) || 0,
    },
    memory: {
      rss,
      vms: (statm[0] || 0) * PAGE,
      shared: (statm[2] || 0) * PAGE,
      data: (statm[5] || 0) * PAGE,
      percent: total ? Math.round((rss / total) * 10000) / 100 : 0,
    },
    io: {
      read_bytes: ioKeys.read_bytes ?? 0,
      write_bytes: ioKeys.write_bytes ?? 0,
      read_ops: ioKeys.syscr ?? 0,
      write_ops: ioKeys.syscw ?? 0,
    },
    threads: Number(f[17]) || 0,
    fds,
  };
}

export type { ProcessMetrics };
