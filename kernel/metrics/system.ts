/**
 * The system object of METRICS_SYSTEM (clove-wire-reference.md section 3.13), from /proc. Every field is
 * a number: what cannot be read is 0.
 */
import fs from 'node:fs';
import type { SystemMetrics } from '../../protocol/index.js';
import os from 'node:os';
import { readText } from '../sandbox/cgroups.js';

interface CpuSample {
  busy: number;
  total: number;
}

function readCpuSamples(): CpuSample[] {
  const out: CpuSample[] = [];
  for (const line of (readText('/proc/stat') ?? '').split('\n')) {
    if (!line.startsWith('cpu')) continue;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    const total = f.slice(0, 8).reduce((a, b) => a + (b || 0), 0);
    out.push({ busy: total - idle, total });
  }
  return out; // [aggregate, cpu0, cpu1, ...]
}

const pct = (a: CpuSample | undefined, b: CpuSample | undefined): number => {
  if (!a || !b || b.total <= a.total) return 0;
  return Math.round(((b.busy - a.busy) / (b.total - a.total)) * 10000) / 100;
};

/** A METRICS_SYSTEM sampler: cpu percentages are deltas since the previous call of the same sampler. */
export function createSystemSampler(): () => SystemMetrics {
  let prev = readCpuSamples();
  return () => {
    const now = readCpuSamples();
    const cpuPercent = pct(prev[0], now[0]);
    const perCore = now.slice(1).map((s, i) => pct(prev[i + 1], s));
    prev = now;
    const mem = readKeyedKb('/proc/meminfo');
    const total = mem.MemTotal ?? 0;
    const available = mem.MemAvailable ?? 0;
    const swapTotal = mem.SwapTotal ?? 0;
    const swapFree = mem.SwapFree ?? 0;
    const speeds = os
      .cpus()
      .map((c) => c.speed)
      .filter((s) => s > 0);
    const load = os.loadavg();
    return {
      timestamp: Date.now(),
      cpu: {
        percent: cpuPercent,
        per_core: perCore,
        count: os.cpus().length,
        freq_mhz: speeds.length ? Math.round(speeds.reduce((a, b) => a + b, 0) / speeds.length) : 0,
        load_avg: [load[0], load[1], load[2]],
      },
      memory: {
        total,
        available,
        used: total - available,
        percent: total ? Math.round(((total - available) / total) * 10000) / 100 : 0,
        buffers: mem.Buffers ?? 0,
        cached: mem.Cached ?? 0,
      },
      swap: { total: swapTotal, used: swapTotal - swapFree, free: swapFree },
      disk: diskTotals(),
      network: netTotals(),
    };
  };
}

let defaultSampler: (() => SystemMetrics) | undefined;

/** METRICS_SYSTEM `metrics` object (cpu percent since the previous call of this function). */
export function systemMetrics(): SystemMetrics {
  defaultSampler ??= createSystemSampler();
  return defaultSampler();
}

/** /proc/meminfo-style "Key: N kB" lines, in bytes. */
function readKeyedKb(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of (readText(file) ?? '').split('\n')) {
    const m = /^(\w+(?:\(\w+\))?):\s+(\d+)(\s+kB)?/.exec(line);
    if (m) out[m[1]] = Number(m[2]) * (m[3] ? 1024 : 1);
  }
  return out;
}

function diskTotals(): SystemMetrics['disk'] {
  const d = { read_bytes: 0, write_bytes: 0, read_ops: 0, write_ops: 0 };
  let whole: Set<string>;
  try {
    whole = new Set(fs.readdirSync('/sys/block').filter((n) => !/^(loop|ram|zram)/.test(n)));
  } catch {
    whole = new Set();
  }
  for (const line of (readText('/proc/diskstats') ?? '').split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !whole.has(f[2])) continue; // whole disks only: partitions would count twice
    d.read_ops += Number(f[3]);
    d.read_bytes += Number(f[5]) * 512;
    d.write_ops += Number(f[7]);
    d.write_bytes += Number(f[9]) * 512;
  }
  return d;
}

function netTotals(): SystemMetrics['network'] {
  const n = { bytes_sent: 0, bytes_recv: 0, packets_sent: 0, packets_recv: 0, errors_in: 0, errors_out: 0 };
  for (const line of (readText('/proc/net/dev') ?? '').split('\n').slice(2)) {
    const [name, rest] = line.split(':');
    if (!rest || name.trim() === 'lo') continue;
    const f = rest.trim().split(/\s+/).map(Number);
    n.bytes_recv += f[0];
    n.packets_recv += f[1];
    n.errors_in += f[2];
    n.bytes_sent += f[8];
    n.packets_sent += f[9];
    n.errors_out += f[10];
  }
  return n;
}

export type { SystemMetrics };
