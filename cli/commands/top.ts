/**
 * `clove top [--interval MS] [--once] [--json]`: every agent's state, CPU, memory, restarts and
 * messages, with kernel totals in a header line, refreshed in place.
 *
 * Entry point: `register(program: Command, ctx: CommandContext)` where
 *   `ctx = { socket(): string; dataDir(): string; defaults }` (see cli/commands/logs.ts).
 *
 * Data: LIST (names, states, labels), METRICS_ALL_AGENTS (process and cgroup CPU time and memory, the
 * kernel's message counters) and METRICS_SYSTEM, once per refresh. CPU % is the delta of the agent's
 * cumulative CPU time (its cgroup's usage_usec when it has one, which covers its children, else its
 * process's user+system time) over the wall time between two refreshes, relative to one core (200% =
 * two cores busy); `-` until there are two samples, and after a restart until the next one.
 *
 * Modes: on a terminal, a live view (log-update) quit with `q` or Ctrl-C (stdin in raw mode, restored on
 * exit); `--once` samples twice (one interval apart, for CPU %), prints one frame (or with `--json` one
 * JSON snapshot) and exits; stdout not a terminal without --once: a frame every interval, separated
 * by a blank line, like `top -b`, until SIGINT/SIGTERM. Exit 6 when the kernel cannot be reached at
 * the start; if it goes away later the live view says so and keeps retrying.
 */
import { Command, InvalidArgumentError } from 'commander';
import { createLogUpdate } from 'log-update';
import pc from 'picocolors';
import type { AgentMetrics, SystemMetrics } from '../../protocol/index.js';
import { CloveClient } from '../../sdk/typescript/client.js';
import { CliError, EXIT, fmtBytes, fmtUptime } from '../lib.js';
import type { CommandContext, Listed } from './logs.js';

/** One agent's line of the view (also the `--json` shape). */
export interface TopRow {
  id: number;
  name: string;
  service: string | null;
  state: string;
  pid: number;
  /** Percent of one core since the previous sample; null without two samples of the same process. */
  cpu_percent: number | null;
  /** Bytes: the cgroup's memory.current when the agent has a cgroup, else the process's RSS. */
  memory_bytes: number | null;
  restarts: number;
  messages_in: number;
  messages_out: number;
  uptime_ms: number;
  /** The highest use of any of its quotas, `name pct%`, when the kernel reports quota use. */
  quota: string | null;
}

export interface TopSnapshot {
  timestamp: number;
  agents_by_state: Record<string, number>;
  system: {
    cpu_percent: number;
    cpu_count: number;
    load_avg: number[];
    memory_total: number;
    memory_used: number;
    memory_percent: number;
  } | null;
  agents: TopRow[];
}

interface Sample {
  at: number;
  list: Listed[];
  metrics: Map<number, AgentMetrics>;
  system: SystemMetrics | null;
}

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 100) throw new InvalidArgumentError('must be an integer ≥ 100 (ms)');
  return n;
}

/** One round of the three calls; METRICS_SYSTEM is optional (a kernel without it still shows agents). */
async function sample(c: CloveClient): Promise<Sample> {
  const [list, all, system] = await Promise.all([
    c.list(),
    c.allAgentMetrics(),
    c.systemMetrics().then(
      (r) => r.metrics,
      () => null,
    ),
  ]);
  return {
    at: Date.now(),
    list: list as Listed[],
    metrics: new Map(all.agents.map((m) => [m.agent_id, m])),
    system,
  };
}

/** Cumulative CPU milliseconds of an agent and the pid they belong to (null when unknown). */
function cpuMs(m: AgentMetrics | undefined): number | null {
  if (!m) return null;
  if (m.cgroup?.valid) return m.cgroup.cpu.usage_usec / 1000;
  if (m.process) return m.process.cpu.time_user_ms + m.process.cpu.time_system_ms;
  return null;
}

/** The most used quota, from a `quotas` object in the metrics reply (if this kernel reports one). */
function quotaUse(m: AgentMetrics | undefined): string | null {
  const q = (m as { quotas?: Record<string, { limit?: unknown; used?: unknown }> } | undefined)?.quotas;
  if (!q || typeof q !== 'object') return null;
  let best: string | null = null;
  let bestPct = -1;
  for (const [name, v] of Object.entries(q)) {
    if (typeof v?.limit !== 'number' || typeof v.used !== 'number' || v.limit <= 0) continue;
    const pct = (v.used / v.limit) * 100;
    if (pct > bestPct) {
      bestPct = pct;
      best = `${name} ${Math.round(pct)}%`;
    }
  }
  return best;
}

/** The snapshot of `cur`, with CPU % from the CPU time `prev` saw for the same agent and pid. */
export function snapshot(cur: Sample, prev: Sample | null): TopSnapshot {
  const agents: TopRow[] = [];
  const byState: Record<string, number> = {};
  for (const a of [...cur.list].sort((x, y) => x.name.localeCompare(y.name))) {
    byState[a.state] = (byState[a.state] ?? 0) + 1;
    const m = cur.metrics.get(a.id);
    const p = prev?.metrics.get(a.id);
    const now = cpuMs(m);
    const before = p && m && p.pid === m.pid ? cpuMs(p) : null;
    const dt = prev ? cur.at - prev.at : 0;
    const cpu =
      now !== null && before !== null && dt > 0 && now >= before
        ? Math.round(((now - before) / dt) * 1000) / 10
        : null;
    const mem = m?.cgroup?.valid ? m.cgroup.memory.current : m?.process ? m.process.memory.rss : null;
    agents.push({
      id: a.id,
      name: a.name,
      service: a.labels?.['clove.service'] ?? null,
      state: a.state,
      pid: a.pid,
      cpu_percent: a.pid ? cpu : null,
      memory_bytes: a.pid ? mem : null,
      restarts: a.restarts,
      messages_in: m?.kernel_stats.messages_recv ?? 0,
      messages_out: m?.kernel_stats.messages_sent ?? 0,
      uptime_ms: a.uptime_ms,
      quota: quotaUse(m),
    });
  }
  const s = cur.system;
  return {
    timestamp: cur.at,
    agents_by_state: byState,
    system: s
      ? {
          cpu_percent: s.cpu.percent,
          cpu_count: s.cpu.count,
          load_avg: s.cpu.load_avg,
          memory_total: s.memory.total,
          memory_used: s.memory.used,
          memory_percent: s.memory.percent,
        }
      : null,
    agents,
  };
}

const STATE_ORDER = [
  'RUNNING',
  'STARTING',
  'RESTARTING',
  'BACKOFF',
  'PAUSED',
  'STOPPING',
  'STOPPED',
  'FAILED',
];

/** The text of one frame: header lines and the hand-aligned table (colours only when `colored`). */
export function renderTop(snap: TopSnapshot, colored: boolean, note?: string): string {
  const c = pc.createColors(colored);
  const stateColor = (s: string) =>
    s === 'RUNNING'
      ? c.green(s)
      : s === 'FAILED'
        ? c.red(s)
        : s === 'BACKOFF' || s === 'STARTING' || s === 'RESTARTING'
          ? c.yellow(s)
          : s === 'PAUSED' || s === 'STOPPING'
            ? c.magenta(s)
            : c.gray(s);
  const states = Object.keys(snap.agents_by_state).sort(
    (a, b) => (STATE_ORDER.indexOf(a) + 1 || 99) - (STATE_ORDER.indexOf(b) + 1 || 99),
  );
  const lines: string[] = [];
  const total = snap.agents.length;
  lines.push(
    `${c.bold('clove top')}  ${new Date(snap.timestamp).toISOString().slice(11, 19)}  ` +
      `agents ${total}${states.length ? ': ' : ''}${states.map((s) => `${stateColor(s)} ${snap.agents_by_state[s]}`).join('  ')}`,
  );
  const s = snap.system;
  if (s) {
    lines.push(
      `cpu ${s.cpu_percent.toFixed(1)}% of ${s.cpu_count} cores  load ${s.load_avg.map((x) => x.toFixed(2)).join(' ')}  ` +
        `mem ${fmtBytes(s.memory_used)}/${fmtBytes(s.memory_total)} (${s.memory_percent.toFixed(0)}%)`,
    );
  }
  if (note) lines.push(c.red(note));
  lines.push('');
  const withQuota = snap.agents.some((a) => a.quota !== null);
  const head = ['NAME', 'SERVICE', 'STATE', 'CPU%', 'MEM', 'RESTARTS', 'MSGS IN', 'MSGS OUT', 'UPTIME'];
  if (withQuota) head.push('QUOTA');
  const rows = snap.agents.map((a) => {
    const r = [
      a.name,
      a.service ?? '-',
      a.state,
      a.cpu_percent === null ? '-' : a.cpu_percent.toFixed(1),
      fmtBytes(a.memory_bytes),
      String(a.restarts),
      String(a.messages_in),
      String(a.messages_out),
      fmtUptime(a.uptime_ms),
    ];
    if (withQuota) r.push(a.quota ?? '-');
    return r;
  });
  const numeric = new Set([3, 4, 5, 6, 7]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[], paint?: (i: number, cell: string) => string) =>
    r
      .map((cell, i) => {
        const padded = numeric.has(i) ? cell.padStart(widths[i]) : cell.padEnd(widths[i]);
        return paint ? paint(i, padded) : padded;
      })
      .join('  ')
      .trimEnd();
  lines.push(c.bold(line(head)));
  for (const r of rows)
    lines.push(
      line(r, (i, cell) => (i === 2 ? stateColor(cell.trimEnd()) + cell.slice(cell.trimEnd().length) : cell)),
    );
  if (rows.length === 0) lines.push(c.gray('(no agents)'));
  return lines.join('\n');
}

interface TopOptions {
  interval: number;
  once?: boolean;
  json?: boolean;
}

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('top')
    .description("a live view of every agent's state, CPU, memory, restarts and messages (q quits)")
    .option('-i, --interval <ms>', 'refresh every ms milliseconds', positiveInt, 1000)
    .option('--once', 'print one frame (two samples, one interval apart) and exit')
    .option('--json', 'with --once: one JSON snapshot; live: one JSON line per refresh')
    .action(async (o: TopOptions) => {
      await top(ctx, o);
    });
}

async function connect(socket: string): Promise<CloveClient> {
  try {
    return await CloveClient.connect({ socketPath: socket, reconnect: false });
  } catch (e) {
    throw new CliError(`cannot reach the kernel at ${socket}: ${(e as Error).message}`, EXIT.UNREACHABLE);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function top(ctx: CommandContext, o: TopOptions): Promise<void> {
  const socket = ctx.socket();
  let client: CloveClient | null = await connect(socket);
  const tty = Boolean(process.stdout.isTTY);
  const colored = tty && pc.isColorSupported;
  if (o.once) {
    try {
      const first = await sample(client);
      await sleep(o.interval);
      const snap = snapshot(await sample(client), first);
      process.stdout.write(o.json ? `${JSON.stringify(snap)}\n` : `${renderTop(snap, colored)}\n`);
    } finally {
      client.close();
    }
    return;
  }

  const live = tty && !o.json;
  const log = live ? createLogUpdate(process.stdout) : null;
  let prev: Sample | null = null;
  let stopped = false;
  let wake: (() => void) | null = null;
  const stop = () => {
    stopped = true;
    wake?.();
  };
  const stdin = process.stdin;
  const raw = live && stdin.isTTY;
  const onKey = (d: Buffer) => {
    const k = d.toString();
    if (k.includes('q') || k.includes('Q') || k.includes('\u0003')) stop();
  };
  if (raw) {
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onKey);
  }
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.stdout.on('error', stop);
  try {
    while (!stopped) {
      let note: string | undefined;
      let snap: TopSnapshot | null = null;
      try {
        client ??= await connect(socket);
        const cur = await sample(client);
        snap = snapshot(cur, prev);
        prev = cur;
      } catch (e) {
        client?.close();
        client = null;
        note = `kernel unreachable at ${socket} (${(e as Error).message}); retrying`;
      }
      if (log) {
        log(snap ? renderTop(snap, colored, note) : `${pc.bold('clove top')}  ${note}`);
      } else if (o.json) {
        process.stdout.write(`${JSON.stringify(snap ?? { error: note })}\n`);
      } else {
        process.stdout.write(`${snap ? renderTop(snap, false, note) : note}\n\n`);
      }
      if (stopped) break;
      await new Promise<void>((r) => {
        const t = setTimeout(r, o.interval);
        wake = () => {
          clearTimeout(t);
          r();
        };
      });
      wake = null;
    }
  } finally {
    log?.done();
    if (raw) {
      stdin.off('data', onKey);
      stdin.setRawMode(false);
      stdin.pause();
    }
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    client?.close();
  }
}
