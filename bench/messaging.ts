/**
 * Messaging comparison (issue 12): Clove beside a raw Unix-socket relay (the floor), Redis pub/sub and
 * core NATS, in one run on this machine, for 64-byte and 1-KiB messages, 1→1 and 4→4 (pairs).
 *
 *   bash bench/setup.sh && npm run build && node dist/bench/messaging.js [--quick] [--time MS] [--pings N]
 *     [--warmup N] (untimed round trips per pair before the timed ones; 5000, --quick 100)
 *     [--rounds N] [--systems a,b] [--sizes 64,1024] [--shapes 1,4] (a subset: not the report's full table)
 *     [--perf DIR | --cpu-prof DIR | --agents-cpu-prof DIR] (where the time goes: diagnostic runs, their rates
 *     include the profiler's cost) [--halt-poll-ns N] (a KVM guest's halt polling for the run, put back after)
 *     [--report NAME] (reports/NAME.{md,json,svg} instead of reports/messaging.*: a diagnostic run's own)
 *
 * Every peer is its own process (bench/lib/msg-peer.ts), so brokers and clients share the machine's cores
 * as Clove's kernel and agents do. Per system, size and shape: messages/s delivered with a bounded window
 * (WINDOW unacknowledged per producer, an ack every ACK_EVERY), then round trips producer → broker →
 * consumer → broker → producer, one in flight per pair.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { tempDir, waitForSocket, until, type KernelProcess } from '../harness/kernel.js';
import { freePort, waitForPort, which } from '../harness/services.js';
import type { CloveClient } from '../sdk/typescript/client.js';
import { HALT_POLL_NS, machineInfo, machineLine } from './lib/machine.js';
import { BENCH_SRC, DIST_BENCH, profileKernelIfAsked, startKernel, stopChild } from './lib/child.js';
import { ACK_EVERY, WINDOW, type Order, type Outcome } from './lib/msg-peer-protocol.js';
import { cpuSecondsOf, descendants } from './lib/proc.js';
import { median, summarize, r, roundSummary, type Summary } from './lib/stats.js';
import { envelope, givenFlags, mdTable, parseFlags, writeChart, writeJson, writeText } from './lib/report.js';
import type * as vl from 'vega-lite';

export type CloveSystem =
  | 'clove-fast-batch'
  | 'clove-fast-batch-quiet'
  | 'clove-fast-batch-quiet-nopoll'
  | 'clove-fast-raw'
  | 'clove-fast-raw-quiet'
  | 'clove-fast-batch-plain'
  | 'clove-fast'
  | 'clove'
  | 'clove-plain';
export type System = CloveSystem | 'relay' | 'relay-c' | 'redis' | 'nats';
const isClove = (s: System): s is CloveSystem => s.startsWith('clove');
/**
 * The kernel flags and the peers' mode of each Clove row; `quiet`: the batch peers send SEND_BATCH with
 * `results: "none"` (not answered unless something is refused) instead of `"refused"`.
 */
const CLOVE_RUN: Record<
  CloveSystem,
  { kernel: string[]; mode: 'send' | 'batch' | 'raw'; sandboxed: boolean; quiet?: boolean }
> = {
  'clove-fast-batch': { kernel: ['--fast-path'], mode: 'batch', sandboxed: true },
  'clove-fast-batch-quiet': { kernel: ['--fast-path'], mode: 'batch', sandboxed: true, quiet: true },
  'clove-fast-batch-quiet-nopoll': {
    kernel: ['--fast-path', '--fast-path-poll-us', '0'],
    mode: 'batch',
    sandboxed: true,
    quiet: true,
  },
  'clove-fast-raw': { kernel: ['--fast-path'], mode: 'raw', sandboxed: true },
  'clove-fast-raw-quiet': { kernel: ['--fast-path'], mode: 'raw', sandboxed: true, quiet: true },
  'clove-fast-batch-plain': { kernel: ['--fast-path'], mode: 'batch', sandboxed: false },
  'clove-fast': { kernel: ['--fast-path'], mode: 'send', sandboxed: true },
  clove: { kernel: [], mode: 'send', sandboxed: true },
  'clove-plain': { kernel: [], mode: 'send', sandboxed: false },
};
/** The rows issue 12's goals are judged on, each on its own. */
export const GOAL_SYSTEMS: CloveSystem[] = ['clove-fast-batch', 'clove-fast-batch-quiet', 'clove-fast'];
/**
 * What a run measures unless `--systems` says otherwise: with `clove-fast-batch-quiet` (the batch job with
 * SEND_BATCH unanswered), `clove-fast-batch-quiet-nopoll` (the same with the reactor never polling) and
 * `clove-fast-raw` (the batch job without the SDK), so that the report shows what the replies, the
 * reactor's polling and the SDK cost or give. The other diagnostics are asked for by name: `clove-fast-raw-quiet`
 * (no SDK, no replies), `clove-plain` and `clove-fast-batch-plain` (agents unsandboxed: what the sandbox
 * costs).
 */
export const SYSTEMS: System[] = [
  'clove-fast-batch',
  'clove-fast-batch-quiet',
  'clove-fast-batch-quiet-nopoll',
  'clove-fast-raw',
  'clove-fast',
  'clove',
  'relay',
  'relay-c',
  'redis',
  'nats',
];
/** What each diagnostic row is, for the report's notes (printed when the row was measured). */
const DIAGNOSTIC_NOTES: Partial<Record<System, string[]>> = {
  'clove-fast-raw': [
    '- Clove fast path, raw frames: the SEND_BATCH + push job without the SDK (bench/lib/msg-peer.ts',
    '  `cloveRawPeer`: frames written as bytes, PUSH_BINARY read with protocol/push-binary.ts), a diagnostic',
    '  row to show what the SDK costs.',
  ],
  'clove-fast-raw-quiet': [
    '- Clove fast path, raw frames unanswered: the raw row with SEND_BATCH `results: "none"`, a diagnostic row',
    '  to show what the SDK costs when no reply comes back.',
  ],
  'clove-fast-batch-quiet': [
    '- Clove fast path, SEND_BATCH unanswered: the SEND_BATCH + push row with `results: "none"` (no reply',
    '  unless something is refused, then a SEND_REFUSED frame; as a NATS publish) instead of `"refused"` (a',
    '  reply to every SEND_BATCH, listing only refused items): one write by the kernel and one wake-up of the',
    '  sender fewer per SEND_BATCH. Judged on the goals too, apart from the answered row.',
  ],
  'clove-fast-batch-quiet-nopoll': [
    '- Clove fast path, SEND_BATCH unanswered, reactor not polling: the unanswered row on a kernel started with',
    '  `--fast-path-poll-us 0` (its reactor sleeps in epoll_wait as soon as it has nothing to do, instead of',
    '  first polling up to 50 µs: docs/fastpath.md, "Polling"), a diagnostic row to show what polling gives',
    "  and what it costs (the broker's CPU per message).",
  ],
  'clove-fast-batch-plain': [
    '- Clove fast path, agents unsandboxed: the SEND_BATCH + push row with SPAWN `sandboxed: false`, a',
    '  diagnostic row to show what the sandbox costs.',
  ],
  'clove-plain': [
    '- Clove, agents unsandboxed: the TypeScript path with SPAWN `sandboxed: false` (plain processes with the',
    '  kernel uid), a diagnostic row to show what the sandbox costs; the goals use sandboxed rows.',
  ],
};
export const LABELS: Record<System, string> = {
  'clove-fast-batch': 'Clove fast path, SEND_BATCH + push (sandboxed agents, TS SDK)',
  'clove-fast-batch-quiet': 'Clove fast path, SEND_BATCH unanswered + push (sandboxed agents, TS SDK)',
  'clove-fast-batch-quiet-nopoll': 'Clove fast path, SEND_BATCH unanswered, reactor not polling (diagnostic)',
  'clove-fast': 'Clove fast path, SEND + RECV (sandboxed agents, TS SDK)',
  clove: 'Clove TypeScript path, SEND + RECV (sandboxed agents, TS SDK)',
  'clove-plain': 'Clove TypeScript path, agents unsandboxed (diagnostic)',
  'clove-fast-raw': 'Clove fast path, raw frames without the SDK (diagnostic)',
  'clove-fast-raw-quiet': 'Clove fast path, raw frames unanswered, without the SDK (diagnostic)',
  'clove-fast-batch-plain': 'Clove fast path, SEND_BATCH + push, agents unsandboxed (diagnostic)',
  relay: 'raw relay floor (Node)',
  'relay-c': 'raw relay floor (C, epoll)',
  redis: 'Redis pub/sub',
  nats: 'NATS (core, no JetStream)',
};

export interface Cell {
  system: System;
  size: number;
  pairs: number;
  delivered: number;
  seconds: number;
  /** Median over the rounds of (messages delivered / slowest producer's time). */
  msgs_per_s: number;
  /** The rate of each round, in the order run. */
  msgs_per_s_rounds: number[];
  rtt_us: Summary;
  /** Every round trip of every round and pair (µs); not written to the report. */
  rtt_samples: number[];
  /**
   * CPU time (utime + stime, every thread) over the cell's runs (sending, drain and round trips), in
   * seconds: the broker's (Clove's kernel with its reactor thread, the relay, redis-server, nats-server)
   * and its clients' (producers and consumers: Clove's agents with their sandboxes' init), and the runs'
   * wall time.
   */
  cpu: { broker_s: number; clients_s: number; wall_s: number };
  /** The producers' own CPU time over their round trips (µs, Outcome.rtt_cpu_us summed), and how many. */
  rtt_cpu: { producers_us: number; round_trips: number };
}

/** A cell's CPU per message delivered (µs) and the cores its processes kept busy on average. */
export function cpuPerMessage(c: Cell): {
  broker_us: number;
  clients_us: number;
  cores: number;
  producer_us_per_rtt: number;
} {
  const per = (s: number) => r((s / c.delivered) * 1e6);
  return {
    broker_us: per(c.cpu.broker_s),
    clients_us: per(c.cpu.clients_s),
    cores: r((c.cpu.broker_s + c.cpu.clients_s) / c.cpu.wall_s),
    // 0 for a report written before producers measured it (reports/latest.ts reads old ones too).
    producer_us_per_rtt: c.rtt_cpu?.round_trips ? r(c.rtt_cpu.producers_us / c.rtt_cpu.round_trips) : 0,
  };
}

const PEER = path.join(DIST_BENCH, 'lib', 'msg-peer.js');
export const RELAY_C_SRC = path.join(BENCH_SRC, 'lib', 'relay.c');

/** A peer process with a line-based stdin/stdout conversation. */
class Peer {
  private lines: string[] = [];
  private waiters: ((l: string) => void)[] = [];
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    readline.createInterface({ input: child.stdout! }).on('line', (l) => {
      const w = this.waiters.shift();
      if (w) w(l);
      else this.lines.push(l);
    });
    this.exited = new Promise((res) => child.once('exit', (code) => res(code)));
  }
  /** The next line, or an error naming the peer if it exits first. */
  line(what: string): Promise<string> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(l);
    return Promise.race([
      new Promise<string>((res) => this.waiters.push(res)),
      this.exited.then((code) => {
        throw new Error(`${what} exited with ${code} before answering`);
      }),
    ]);
  }
  send(l: string): void {
    this.child.stdin!.write(l + '\n');
  }
}

async function startPeer(cmd: string, args: string[], what: string): Promise<Peer> {
  const p = new Peer(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] }));
  const ready = await p.line(what);
  if (!ready.startsWith('ready')) throw new Error(`${what}: ${ready}`);
  return p;
}

/** One system with its broker and `pairs` producer/consumer pairs up. */
interface Fleet {
  run(o: Order): Promise<Outcome[]>;
  stop(): Promise<void>;
  /** The broker's processes and its clients' (for the CPU columns). */
  pids: { broker: number[]; clients: number[] };
}

/** Brokers and peers of every system but Clove; their producers take orders on stdin. */
async function startExternal(system: Exclude<System, CloveSystem>, pairs: number): Promise<Fleet> {
  const dir = tempDir('clvmsg');
  const children: ChildProcess[] = [];
  const peers: Peer[] = [];
  let brokers = 0;
  try {
    let address: string;
    let peerSystem = system;
    if (system === 'relay') {
      address = path.join(dir, 'relay.sock');
      const p = await startPeer(process.execPath, [PEER, 'relay', 'relay-server', '0', address], 'relay');
      children.push(p.child);
    } else if (system === 'relay-c') {
      address = path.join(dir, 'relay.sock');
      const bin = path.join(dir, 'relay');
      await compileC(RELAY_C_SRC, bin);
      const p = await startPeer(bin, [address], 'C relay');
      children.push(p.child);
      peerSystem = 'relay';
    } else if (system === 'redis') {
      address = path.join(dir, 'redis.sock');
      const exe = which('redis-server');
      if (!exe) throw new Error('redis-server is not installed (run bash bench/setup.sh)');
      // Persistence off (no RDB snapshots, no AOF), Unix socket only.
      const c = spawn(
        exe,
        ['--port', '0', '--unixsocket', address, '--save', '', '--appendonly', 'no', '--dir', dir],
        { stdio: ['ignore', 'ignore', 'inherit'] },
      );
      children.push(c);
      await waitForSocket(address, 15_000, new Promise((res) => c.once('exit', res)));
    } else {
      const exe = which('nats-server');
      if (!exe) throw new Error('nats-server is not installed (run bash bench/setup.sh)');
      const port = await freePort();
      address = `nats://127.0.0.1:${port}`;
      // Core NATS on loopback TCP (nats-server has no Unix-socket listener); no JetStream.
      const c = spawn(exe, ['-a', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(c);
      // nats-server logs every start and stop on stderr: kept, and shown only if it fails.
      let log = '';
      c.stderr!.on('data', (d) => (log = (log + d).slice(-4000)));
      c.once('exit', (code, sig) => {
        if (code !== 0 && sig !== 'SIGTERM') console.error(`nats-server exited with ${code ?? sig}:\n${log}`);
      });
      await waitForPort(port, 15_000, new Promise((res) => c.once('exit', res)));
    }
    brokers = children.length;
    for (const role of ['consumer', 'producer'])
      for (let i = 0; i < pairs; i++) {
        const p = await startPeer(
          process.execPath,
          [PEER, peerSystem, role, String(i), address],
          `${system} ${role} ${i}`,
        );
        children.push(p.child);
        if (role === 'producer') peers.push(p);
      }
  } catch (e) {
    for (const c of children.reverse()) await stopChild(c);
    fs.rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    pids: {
      broker: children.slice(0, brokers).map((c) => c.pid!),
      clients: children.slice(brokers).map((c) => c.pid!),
    },
    async run(o) {
      for (const p of peers) p.send(JSON.stringify(o));
      return Promise.all(peers.map(async (p) => JSON.parse(await p.line(`${system} producer`)) as Outcome));
    },
    async stop() {
      // Producers and consumers first, then the broker.
      for (const c of children.reverse()) await stopChild(c);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Compiles the C relay once per path (cc -O2); why here: the bench must not need a build step of its own. */
async function compileC(src: string, out: string): Promise<void> {
  await new Promise<void>((res, rej) => {
    const c = spawn('cc', ['-O2', '-o', out, src], { stdio: ['ignore', 'inherit', 'inherit'] });
    c.once('error', rej);
    c.once('exit', (code) => (code === 0 ? res() : rej(new Error(`cc ${src} exited with ${code}`))));
  });
}

/**
 * Clove: a kernel process (default options, as `clove kernel` starts it: sandbox `auto`) and its agents,
 * spawned by SPAWN as `clove up` would; the bench talks to the producers through the kernel as the agent
 * named `bench`.
 */
/**
 * Clove's agents for one shape. With `profDir` (`--agents-cpu-prof`) each runs under `node --cpu-prof`,
 * unsandboxed so that it can write its profile there (NODE_OPTIONS cannot carry --cpu-prof), and is
 * stopped with a grace period so that it exits through Node's exit path, which writes the profile.
 */
async function startClove(
  pairs: number,
  kp: KernelProcess,
  system: CloveSystem,
  profDir?: string,
): Promise<Fleet> {
  const { mode, sandboxed, quiet } = CLOVE_RUN[system];
  const c: CloveClient = await kp.client();
  await c.register('bench');
  const ids: number[] = [];
  const spawnPeer = async (role: string, i: number): Promise<void> => {
    const name = `msg-${role[0]}${i}`;
    const res = await c.spawn({
      name,
      ...(profDir
        ? { command: [process.execPath, '--cpu-prof', `--cpu-prof-dir=${profDir}`, PEER], sandboxed: false }
        : { script: PEER }),
      env: {
        MSG_SYSTEM: 'clove',
        MSG_ROLE: role,
        MSG_PAIR: String(i),
        MSG_MODE: mode,
        ...(quiet ? { MSG_QUIET: '1' } : {}),
      },
      // SPAWN's default (sandboxed) unless measuring what the sandbox costs.
      ...(sandboxed ? {} : { sandboxed: false }),
    });
    ids.push(res.id);
  };
  try {
    for (const role of ['consumer', 'producer']) for (let i = 0; i < pairs; i++) await spawnPeer(role, i);
    // Ready once every agent said HELLO (LIST `ready`).
    await until(async () => {
      const list = await c.list();
      return ids.every((id) => list.find((a) => a.id === id)?.ready);
    }, 30_000);
  } catch (e) {
    for (const id of ids) await c.kill(id, { grace_ms: 0 }).catch(() => {});
    c.close();
    throw e;
  }
  return {
    // The agents (with their sandboxes' init) are the kernel's descendants; the bench's client is not.
    pids: { broker: [kp.child.pid!], clients: descendants(kp.child.pid!) },
    async run(o) {
      for (let i = 0; i < pairs; i++) await c.send(`msg-p${i}`, o);
      const out: Outcome[] = [];
      while (out.length < pairs) {
        const got = await c.recv({ max: pairs, timeoutMs: 120_000 });
        if (got.count === 0) throw new Error('clove: a producer did not answer within 120 s');
        for (const m of got.messages) out.push(m.message as Outcome);
      }
      return out;
    },
    async stop() {
      const grace = profDir ? 10_000 : 0;
      for (const id of ids) await c.kill(id, { grace_ms: grace, wait: true }).catch(() => {});
      c.close();
    },
  };
}

/** The cell of one run: aggregate rate (all delivered over the slowest producer's time), pooled round trips. */
function cell(system: System, size: number, pairs: number, outs: Outcome[], cpu: Cell['cpu']): Cell {
  const delivered = outs.reduce((a, o) => a + o.delivered, 0);
  const seconds = Math.max(...outs.map((o) => o.seconds));
  const rtt = outs.flatMap((o) => o.rtt_us);
  const rate = Math.round(delivered / seconds);
  return {
    system,
    size,
    pairs,
    delivered,
    seconds: r(seconds),
    msgs_per_s: rate,
    msgs_per_s_rounds: [rate],
    rtt_us: roundSummary(summarize(rtt)),
    rtt_samples: rtt,
    cpu,
    rtt_cpu: { producers_us: outs.reduce((a, o) => a + o.rtt_cpu_us, 0), round_trips: rtt.length },
  };
}

/** Folds the cells of several rounds into one per system × size × shape (median rate, pooled round trips). */
export function mergeRounds(cells: Cell[]): Cell[] {
  const by = new Map<string, Cell[]>();
  for (const c of cells) {
    const k = `${c.system}/${c.size}/${c.pairs}`;
    by.set(k, [...(by.get(k) ?? []), c]);
  }
  return [...by.values()].map((cs) => {
    const rtt = cs.flatMap((c) => c.rtt_samples);
    const rates = cs.flatMap((c) => c.msgs_per_s_rounds);
    return {
      ...cs[0],
      delivered: cs.reduce((a, c) => a + c.delivered, 0),
      seconds: r(cs.reduce((a, c) => a + c.seconds, 0)),
      msgs_per_s: Math.round(median(rates)),
      msgs_per_s_rounds: rates,
      rtt_us: roundSummary(summarize(rtt)),
      rtt_samples: rtt,
      cpu: {
        broker_s: r(cs.reduce((a, c) => a + c.cpu.broker_s, 0)),
        clients_s: r(cs.reduce((a, c) => a + c.cpu.clients_s, 0)),
        wall_s: r(cs.reduce((a, c) => a + c.cpu.wall_s, 0)),
      },
      rtt_cpu: {
        producers_us: cs.reduce((a, c) => a + c.rtt_cpu.producers_us, 0),
        round_trips: cs.reduce((a, c) => a + c.rtt_cpu.round_trips, 0),
      },
    };
  });
}

/**
 * Runs one system for every shape and size: starts its broker and peers per shape, measures, stops them.
 * Used by the bench and by its smoke test (tiny `ms` and `pings`).
 */
export async function runSystem(
  system: System,
  o: {
    shapes: number[];
    sizes: number[];
    ms: number;
    /** Untimed round trips before the timed ones (Order.warmup); none when absent. */
    warmup?: number;
    pings: number;
    kernel?: KernelProcess;
    /** Clove's agents write V8 CPU profiles here (unsandboxed: see startClove). */
    agentsProfDir?: string;
  },
): Promise<Cell[]> {
  const cells: Cell[] = [];
  for (const pairs of o.shapes) {
    const fleet = isClove(system)
      ? await startClove(pairs, o.kernel!, system, o.agentsProfDir)
      : await startExternal(system, pairs);
    try {
      // A short warm-up run (JIT, connections, caches) that is not measured.
      await fleet.run({ size: o.sizes[0], ms: Math.min(300, o.ms), pings: Math.min(50, o.pings) });
      for (const size of o.sizes) {
        const cpu0 = { broker: cpuSecondsOf(fleet.pids.broker), clients: cpuSecondsOf(fleet.pids.clients) };
        const t0 = performance.now();
        const outs = await fleet.run({ size, ms: o.ms, warmup: o.warmup, pings: o.pings });
        const cpu = {
          broker_s: r(cpuSecondsOf(fleet.pids.broker) - cpu0.broker),
          clients_s: r(cpuSecondsOf(fleet.pids.clients) - cpu0.clients),
          wall_s: r((performance.now() - t0) / 1000),
        };
        cells.push(cell(system, size, pairs, outs, cpu));
        const c = cells[cells.length - 1];
        console.log(
          `${system.padEnd(8)} ${String(size).padStart(5)} B ${pairs}→${pairs}: ` +
            `${c.msgs_per_s.toLocaleString('en-US')} msgs/s, RTT p50 ${c.rtt_us.p50} µs p99 ${c.rtt_us.p99} µs`,
        );
      }
    } finally {
      await fleet.stop();
    }
  }
  return cells;
}

/** "64 B", "1 KiB": how reports name a message size. */
export const SIZE_LABEL = (n: number): string => (n >= 1024 ? `${n / 1024} KiB` : `${n} B`);
const SHAPE_LABEL = (p: number): string => `${p}→${p}`;

/** Grouped bars: msgs/s and RTT p50/p99 per size × shape, one colour per system. */
export function chartSpec(cells: Cell[]): vl.TopLevelSpec {
  const rows = cells.map((c) => ({
    case: `${SIZE_LABEL(c.size)} ${SHAPE_LABEL(c.pairs)}`,
    system: LABELS[c.system],
    msgs: c.msgs_per_s,
    p50: c.rtt_us.p50,
    p99: c.rtt_us.p99,
  }));
  const panel = (field: string, title: string): vl.TopLevelSpec =>
    ({
      width: 520,
      height: 220,
      title,
      mark: 'bar',
      encoding: {
        y: { field: 'case', type: 'nominal', title: null, sort: null },
        yOffset: { field: 'system', sort: null },
        x: { field, type: 'quantitative', title: null },
        color: { field: 'system', type: 'nominal', title: null, sort: null, legend: { orient: 'bottom' } },
      },
    }) as unknown as vl.TopLevelSpec;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Messaging: Clove vs raw relay, Redis pub/sub, NATS (same run, same machine)',
    background: 'white',
    data: { values: rows },
    vconcat: [
      panel('msgs', 'messages/s delivered (bounded window), higher is better'),
      panel('p50', 'round trip p50 (µs), lower is better'),
      panel('p99', 'round trip p99 (µs), lower is better'),
    ],
  } as unknown as vl.TopLevelSpec;
}

interface Goal {
  goal: string;
  met: boolean;
  detail: string;
}

/** The goals of issue 12, judged on the cells of this run. */
export function goals(cells: Cell[], clove: CloveSystem = 'clove-fast-batch'): Goal[] {
  const get = (s: System, size: number, pairs: number): Cell | undefined =>
    cells.find((c) => c.system === s && c.size === size && c.pairs === pairs);
  const cases = [...new Set(cells.map((c) => `${c.size}/${c.pairs}`))].map((k) => k.split('/').map(Number));
  const out: Goal[] = [];
  const best64 = Math.max(
    0,
    ...cells.filter((c) => c.system === clove && c.size === 64).map((c) => c.msgs_per_s),
  );
  out.push({
    goal: '≥ 1,000,000 messages/s aggregate at 64 B',
    met: best64 >= 1_000_000,
    detail: `best Clove 64 B shape: ${best64.toLocaleString('en-US')} msgs/s (${r(best64 / 1_000_000)}× the goal)`,
  });
  for (const [size, pairs] of cases) {
    const c = get(clove, size, pairs);
    if (!c) continue;
    const k = `${SIZE_LABEL(size)} ${SHAPE_LABEL(pairs)}`;
    const floor = get('relay', size, pairs);
    const cFloor = get('relay-c', size, pairs);
    if (floor)
      out.push({
        goal: `${k}: RTT p50 ≤ 1.5× the raw relay floor (Node)`,
        met: c.rtt_us.p50 <= 1.5 * floor.rtt_us.p50,
        detail:
          `${c.rtt_us.p50} µs vs floor ${floor.rtt_us.p50} µs (${r(c.rtt_us.p50 / floor.rtt_us.p50)}×)` +
          (cFloor ? `; C floor ${cFloor.rtt_us.p50} µs (${r(c.rtt_us.p50 / cFloor.rtt_us.p50)}×)` : ''),
      });
    out.push({
      goal: `${k}: RTT p99 ≤ 1 ms`,
      met: c.rtt_us.p99 <= 1000,
      detail: `${c.rtt_us.p99} µs`,
    });
    for (const rival of ['redis', 'nats'] as const) {
      const x = get(rival, size, pairs);
      if (!x) continue;
      out.push({
        goal: `${k}: ahead of ${LABELS[rival]} (more msgs/s and lower RTT p50)`,
        met: c.msgs_per_s > x.msgs_per_s && c.rtt_us.p50 < x.rtt_us.p50,
        detail:
          `${c.msgs_per_s.toLocaleString('en-US')} vs ${x.msgs_per_s.toLocaleString('en-US')} msgs/s ` +
          `(${r(c.msgs_per_s / x.msgs_per_s)}×); p50 ${c.rtt_us.p50} vs ${x.rtt_us.p50} µs`,
      });
    }
  }
  return out;
}

interface Profile {
  system: CloveSystem;
  /** `perf report` lines: share of the kernel's samples by thread, and the hottest symbols. */
  threads: string[];
  symbols: string[];
  /** The agents' samples: the share of them in Linux, and their hottest symbols summed over the agents. */
  agents: { linux: string; symbols: string[] };
  /** perf's sample count (e.g. "12K"). */
  samples: string;
}

/**
 * `perf record -a` (every CPU) while a Clove row runs: stop() splits the busy samples into the kernel's
 * JavaScript thread, its reactor thread, its other threads (V8's GC and compiler, libuv's pool) and the
 * rest, which during a Clove row is its agents (the bench's producers and consumers: this process and perf
 * are left out), and lists the hottest symbols of the kernel's threads and of the agents. Why every CPU and
 * not `-p <kernel>`: the agents are not followed from the kernel (perf missed them all), and they start
 * per shape, after the record began. Idle samples (cpu-clock counts them as `swapper`) are left out of
 * the shares. Why perf and not --cpu-prof: the fast path's time is in native code and in Linux's socket
 * calls and wake-ups, which V8 does not see.
 */
function startPerf(pid: number, dir: string, system: CloveSystem): { stop(): Promise<Profile> } {
  fs.mkdirSync(dir, { recursive: true });
  const data = path.join(dir, `${system}.perf.data`);
  const rec = spawn('perf', ['record', '-q', '-F', '499', '-g', '-a', '-o', data], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  // The kernel's threads now (the reactor and V8's threads start with the process).
  const kernelTids = new Set(fs.readdirSync(`/proc/${pid}/task`).map(Number));
  const report = (sort: string, limit: string): { lines: string[]; samples: string } => {
    const r = spawnSync(
      'perf',
      [
        'report',
        '-i',
        data,
        '--stdio',
        '--no-children',
        '-g',
        'none',
        '--sort',
        sort,
        '--percent-limit',
        limit,
      ],
      { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 },
    );
    const out = r.stdout ?? '';
    return {
      lines: out
        .split('\n')
        .filter((l) => /^\s+\d/.test(l))
        .map((l) => l.trim()),
      samples: /# Samples: (\S+)/.exec(out)?.[1] ?? '?',
    };
  };
  return {
    async stop() {
      for (const t of fs.readdirSync(`/proc/${pid}/task`)) kernelTids.add(Number(t));
      const mine = new Set(fs.readdirSync('/proc/self/task').map(Number));
      mine.add(rec.pid!);
      rec.kill('SIGINT');
      await new Promise((res) => rec.once('exit', res));
      // Whose a sample is, by thread: `pid` in perf's report is the thread ("12.3%  4242:clove-reactor").
      const KERNEL = new Set(['js', 'reactor', 'other']);
      const owner = (tid: number, comm: string): 'idle' | 'bench' | 'js' | 'reactor' | 'other' | 'agents' => {
        if (tid === 0) return 'idle';
        if (mine.has(tid)) return 'bench';
        if (tid === pid) return 'js';
        if (!kernelTids.has(tid)) return 'agents';
        return comm === 'clove-reactor' ? 'reactor' : 'other';
      };
      const byThread = report('pid', '0');
      const share = { js: 0, reactor: 0, other: 0, agents: 0, bench: 0, idle: 0 };
      for (const l of byThread.lines) {
        const m = /^([\d.]+)%\s+(\d+):(\S+)/.exec(l);
        if (m) share[owner(Number(m[2]), m[3])] += Number(m[1]);
      }
      // Shares of the busy samples: the machine's idle time is not anyone's.
      const busy = 100 - share.idle || 1;
      const pc = (x: number): string => `${((x / busy) * 100).toFixed(1).padStart(5)} %`;
      // "1.2%  4242:clove-reactor  [kernel.kallsyms]  [k] sym"; the agents' summed over the agents.
      const kernelSyms: string[] = [];
      const agentSyms = new Map<string, number>();
      let agentLinux = 0;
      for (const l of report('pid,dso,sym', '0.02').lines) {
        const m = /^([\d.]+)%\s+(\d+):(\S+)\s+(\S+)\s+(\[.\])\s+(.*)$/.exec(l);
        if (!m) continue;
        const pct = Number(m[1]);
        const who = owner(Number(m[2]), m[3]);
        if (KERNEL.has(who)) {
          if (pct / busy >= 0.005)
            kernelSyms.push(`${pc(pct)}  ${m[2]}:${m[3]}  ${m[4]}  ${m[5]} ${m[6].trim()}`);
        } else if (who === 'agents') {
          const key = `${m[4]}  ${m[5]} ${m[6].trim()}`;
          agentSyms.set(key, (agentSyms.get(key) ?? 0) + pct);
          if (m[4] === '[kernel.kallsyms]') agentLinux += pct;
        }
      }
      return {
        system,
        threads: [
          `${pc(share.js)}  kernel: JavaScript thread`,
          `${pc(share.reactor)}  kernel: reactor thread (clove-reactor)`,
          `${pc(share.other)}  kernel: other threads (V8 GC and compiler, libuv pool)`,
          `${pc(share.agents)}  the agents (producers and consumers, Node + TS SDK)`,
          `${pc(share.bench)}  this bench and perf`,
        ],
        symbols: kernelSyms.slice(0, 25),
        agents: {
          linux: share.agents
            ? `${pc(agentLinux).trim()} of the busy samples, ${((agentLinux / share.agents) * 100).toFixed(1)} % of the agents', are in Linux`
            : 'no samples',
          symbols: [...agentSyms]
            .sort((a, b) => b[1] - a[1])
            .slice(0, 15)
            .map(([k, v]) => `${pc(v)}  ${k}`),
        },
        samples: byThread.samples,
      };
    },
  };
}

function profileSection(profiles: Profile[]): string[] {
  return [
    "## Where the kernel's time goes",
    '',
    'From `--perf <dir>`: `perf record -F 499 -g -a` (every CPU) during the first round of each Clove row (every',
    'size and shape of that row), then `perf report --no-children` (self time). Shares are of the busy samples (the',
    "CPUs' idle time left out); the agents are every thread that is not the kernel's, this bench's or perf's (the",
    "machine runs nothing else during a bench). `[kernel.kallsyms]` is time in Linux on the thread's behalf",
    '(socket reads and writes, wake-ups, scheduling).',
    '',
    ...profiles.flatMap((p) => [
      `### ${LABELS[p.system]}`,
      '',
      `${p.samples} samples. Where they fell:`,
      '',
      '```',
      ...p.threads,
      '```',
      '',
      "The kernel's hottest symbols (thread, object, symbol; ≥ 0.5 % of the busy samples):",
      '',
      '```',
      ...p.symbols,
      '```',
      '',
      `The agents: ${p.agents.linux.trim()}. Their hottest symbols, summed over the agents (object, symbol; JIT`,
      "frames are unnamed: the agents' perf maps stay in their sandboxes):",
      '',
      '```',
      ...p.agents.symbols,
      '```',
      '',
    ]),
  ];
}

/**
 * `--halt-poll-ns N`: how long an idle vCPU of this KVM guest polls before it halts (the haltpoll cpuidle
 * driver), for this run only: put back as it was when the bench exits, also on SIGINT or SIGTERM. Why:
 * waking a halted vCPU is the dearest step of a round trip on such machines (reports/fastpath.md).
 */
function haltPollForRun(ns: string | undefined): void {
  if (ns === undefined) return;
  if (!/^\d+$/.test(ns)) throw new Error(`--halt-poll-ns: a number of nanoseconds, not "${ns}"`);
  let before: string;
  try {
    before = fs.readFileSync(HALT_POLL_NS, 'utf8').trim();
  } catch (e) {
    throw new Error(
      `--halt-poll-ns: cannot read ${HALT_POLL_NS} (${(e as NodeJS.ErrnoException).code}): not a KVM guest with the haltpoll cpuidle driver`,
    );
  }
  fs.writeFileSync(HALT_POLL_NS, ns);
  process.once('exit', () => fs.writeFileSync(HALT_POLL_NS, before));
  for (const [sig, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)
    process.once(sig, () => process.exit(code));
}

/** The bench's flags besides --quick; a run given any of them repeats them in its Reproduce line. */
const FLAGS = [
  'agents-cpu-prof',
  'cpu-prof',
  'halt-poll-ns',
  'perf',
  'pings',
  'report',
  'rounds',
  'shapes',
  'sizes',
  'systems',
  'time',
  'warmup',
];

async function main(): Promise<void> {
  const flags = parseFlags(FLAGS);
  const QUICK = flags.quick;
  const ms = Number(flags.get('time') ?? (QUICK ? 500 : 3000));
  const pings = Number(flags.get('pings') ?? (QUICK ? 200 : 2000));
  // Untimed round trips before the timed ones, per pair and run (Order.warmup says why). Checked as
  // --halt-poll-ns is: digits only (an empty value is not 0).
  const warmupFlag = flags.get('warmup');
  if (warmupFlag !== undefined && !/^\d+$/.test(warmupFlag))
    throw new Error(`--warmup: a whole number of round trips, 0 or more, not "${warmupFlag}"`);
  const warmup = warmupFlag !== undefined ? Number(warmupFlag) : QUICK ? 100 : 5000;
  const rounds = Number(flags.get('rounds') ?? (QUICK ? 1 : 3));
  const only = flags.get('systems')?.split(',') as System[] | undefined;
  const perfDir = flags.get('perf') ? path.resolve(flags.get('perf')!) : undefined;
  const agentsProfDir = flags.get('agents-cpu-prof')
    ? path.resolve(flags.get('agents-cpu-prof')!)
    : undefined;
  if (agentsProfDir) fs.mkdirSync(agentsProfDir, { recursive: true });
  const profiles: Profile[] = [];
  const unknown = only?.filter((s) => !(s in LABELS)) ?? [];
  if (unknown.length > 0)
    throw new Error(`--systems: unknown ${unknown.join(', ')} (known: ${Object.keys(LABELS).join(', ')})`);
  // The report's systems in their order, or those asked for by name (diagnostics such as `clove-plain` too).
  const systems = only ? (Object.keys(LABELS) as System[]).filter((s) => only.includes(s)) : SYSTEMS;
  const sizes = flags.get('sizes')?.split(',').map(Number) ?? [64, 1024];
  const shapes = flags.get('shapes')?.split(',').map(Number) ?? [1, 4];
  const name = flags.get('report') ?? 'messaging';
  if (!/^\w[\w.-]*$/.test(name)) throw new Error(`--report: a file name without a directory, not "${name}"`);
  haltPollForRun(flags.get('halt-poll-ns'));
  // After the halt polling is set: the report's machine line says what the run had.
  const machine = machineInfo();
  const t0 = Date.now();
  console.log(`messaging bench (${QUICK ? 'quick' : 'full'}) on ${machineLine(machine)}`);
  profileKernelIfAsked(flags.get('cpu-prof'));
  const all: Cell[] = [];
  const skipped: string[] = [];
  const present = systems.filter((system) => {
    if ((system === 'redis' || system === 'nats') && !which(`${system}-server`)) {
      skipped.push(`${system}: ${system}-server not installed (bash bench/setup.sh)`);
      return false;
    }
    return true;
  });
  // Rounds interleave the systems, each round starting one system later, so that a burst of load from
  // elsewhere on this shared machine does not land on one system only.
  for (let round = 0; round < rounds; round++) {
    console.log(`round ${round + 1} of ${rounds}`);
    for (let k = 0; k < present.length; k++) {
      const system = present[(k + round) % present.length];
      const kernel = isClove(system)
        ? await startKernel({
            extra: ['--log-level', 'error', ...CLOVE_RUN[system].kernel],
            // JIT frames named in perf's report (/tmp/perf-<pid>.map); V8's log goes beside the profile,
            // not into the working directory.
            ...(perfDir
              ? {
                  nodeArgs: [
                    '--perf-basic-prof',
                    '--no-logfile-per-isolate',
                    `--logfile=${path.join(perfDir, `${system}.v8.log`)}`,
                  ],
                }
              : {}),
          })
        : undefined;
      // The kernel's profile is taken in the first round only (one per Clove row).
      const perf =
        kernel && isClove(system) && perfDir && round === 0
          ? startPerf(kernel.child.pid!, perfDir, system)
          : undefined;
      try {
        all.push(...(await runSystem(system, { shapes, sizes, ms, warmup, pings, kernel, agentsProfDir })));
      } finally {
        if (perf) profiles.push(await perf.stop());
        await kernel?.stop();
      }
    }
  }
  const order = (c: Cell): number => present.indexOf(c.system) * 1e6 + c.pairs * 1e5 + c.size;
  const cells = mergeRounds(all).sort((a, b) => order(a) - order(b));
  const g = Object.fromEntries(GOAL_SYSTEMS.map((s) => [s, goals(cells, s)])) as Record<CloveSystem, Goal[]>;
  const results = {
    setup: {
      sizes,
      shapes: shapes.map(SHAPE_LABEL),
      throughput_ms: ms,
      rounds,
      window: WINDOW,
      ack_every: ACK_EVERY,
      warmup_pings_per_pair: warmup,
      pings_per_pair: pings,
      systems: Object.fromEntries(systems.map((s) => [s, LABELS[s]])),
      clove:
        'kernel: child process with default options (sandbox auto, as `clove kernel`/`clove up` start it) and, for ' +
        'the fast-path rows, `--fast-path` (its reactor polls up to 50 µs for work before it sleeps: the default, ' +
        '`auto`, on a machine with 2 CPUs and no CPU quota; ' +
        'docs/fastpath.md, "Polling"); agents spawned with SPAWN (default sandbox), TypeScript SDK. ' +
        'SEND + RECV: one SEND by name per message, blocking RECV max 1000. SEND_BATCH + push: the bodies of one ' +
        'window batch in one SEND_BATCH (results "refused": one reply listing only refused items; the unanswered ' +
        'row: results "none", a reply only if something is refused, as a NATS publish), ' +
        'messages pushed to the agents (HELLO push, binary envelope), no RECV',
      redis: 'redis-server, Unix socket, --save "" --appendonly no; npm redis client, PUBLISH/SUBSCRIBE',
      nats: 'nats-server on 127.0.0.1 TCP (no Unix socket listener), core pub/sub; npm nats client',
      skipped,
    },
    cells: cells.map(({ rtt_samples: _s, ...c }) => c),
    goals: g,
  };
  // A partial or diagnostic run's report says how it was made (the default run needs no flags).
  const extraArgs = givenFlags(flags, FLAGS);
  const env = envelope('messaging', { quick: QUICK, machine, startedAt: t0, results, extraArgs });
  writeJson(name, env);
  await writeChart(`${name}.svg`, chartSpec(cells));
  const md = [
    '# Messaging: Clove beside a raw relay, Redis pub/sub and NATS',
    '',
    `Machine: ${machineLine(machine)}; load average at end ${env.loadavg_at_end.join(' / ')}.`,
    '',
    `Reproduce: \`bash bench/setup.sh && ${env.command}\` (${env.duration_s} s)${extraArgs ? '' : ', or `npm run bench:messaging`'}.`,
    '',
    'Each peer is its own process: the broker (Clove kernel, relay, redis-server, nats-server), N producers and',
    `N consumers (1→1: one pair; 4→4: four pairs, producer i to consumer i). Throughput: each producer keeps at most`,
    `${WINDOW} messages unacknowledged, its consumer acknowledges every ${ACK_EVERY}; messages/s is every delivered`,
    `message over the slowest producer's time (${ms} ms of sending, then the drain). Round trip: producer → broker →`,
    `consumer → broker → producer, one message in flight per pair, ${pings} per pair (pooled over the pairs), timed`,
    `after ${warmup} untimed ones per pair in the same run, for every system alike: V8 compiles each peer's`,
    `round-trip code only after it has run a while (the sending phase runs other code), and the first round trips`,
    `otherwise made most of a 4→4 p99 (reports/fastpath.md, "Warm-up").`,
    `${rounds} round(s), the systems interleaved; msgs/s is the median of the rounds (each round's in`,
    `reports/${name}.json), round trips are pooled over the rounds.`,
    '',
    `- Clove: ${results.setup.clove}.`,
    ...systems.flatMap((s) => DIAGNOSTIC_NOTES[s] ?? []),
    '- Raw relay floor (Node): one Node process on a Unix socket with the same 17-byte framing; complete frames of',
    '  each read go to the paired connection in one write (bench/lib/msg-peer.ts `relayServer`).',
    '- Raw relay floor (C): the same relay in C with epoll (bench/lib/relay.c), clients are the same Node peers.',
    `- Redis: ${results.setup.redis}.`,
    `- NATS: ${results.setup.nats}; JetStream is not used.`,
    ...(skipped.length ? ['', `Skipped: ${skipped.join('; ')}.`] : []),
    '',
    mdTable(
      ['system', 'size', 'shape', 'msgs/s', 'msgs/s range of rounds', 'RTT p50 µs', 'RTT p99 µs', 'samples'],
      cells.map((c) => [
        LABELS[c.system],
        SIZE_LABEL(c.size),
        SHAPE_LABEL(c.pairs),
        c.msgs_per_s.toLocaleString('en-US'),
        `${Math.min(...c.msgs_per_s_rounds).toLocaleString('en-US')}–${Math.max(...c.msgs_per_s_rounds).toLocaleString('en-US')}`,
        c.rtt_us.p50,
        c.rtt_us.p99,
        c.rtt_us.n,
      ]),
    ),
    '',
    `![messages/s and round trips per system](${name}.svg)`,
    '',
    '## CPU per message',
    '',
    'CPU time (utime + stime of every thread, from /proc/<pid>/stat) of the broker and of its clients over each',
    "cell's runs (sending, drain and the round trips; the round trips' share is small), divided by the messages",
    "delivered; cores busy is that CPU time over the runs' wall time (this machine has 2). Clove's clients are its",
    "agents and their sandboxes' init processes; its broker is the kernel with its reactor thread. Producer µs per",
    "round trip is a producer's own CPU time (process.cpuUsage, user + system) over its round trips, divided by",
    'them: what one client spends to send a message and take the answer, most of it in system calls and the',
    "event loop's wake-ups, not in the client library.",
    '',
    mdTable(
      [
        'system',
        'size',
        'shape',
        'broker µs/msg',
        'clients µs/msg',
        'total µs/msg',
        'cores busy',
        'producer µs per round trip',
      ],
      cells.map((c) => {
        const u = cpuPerMessage(c);
        return [
          LABELS[c.system],
          SIZE_LABEL(c.size),
          SHAPE_LABEL(c.pairs),
          u.broker_us,
          u.clients_us,
          r(u.broker_us + u.clients_us),
          u.cores,
          u.producer_us_per_rtt,
        ];
      }),
    ),
    '',
    "## Issue 12's goals in this run",
    '',
    ...GOAL_SYSTEMS.filter((s) => cells.some((c) => c.system === s)).flatMap((s) => [
      `### ${LABELS[s]}`,
      '',
      `${g[s].filter((x) => x.met).length} of ${g[s].length} goals met in this run.`,
      '',
      mdTable(
        ['goal', 'met', 'this run'],
        g[s].map((x) => [x.goal, x.met ? 'yes' : '**no**', x.detail]),
      ),
      '',
    ]),
    '"Ahead" means more messages/s and a lower round-trip p50 on that size and shape. The goal rows are computed',
    'from the table above by `goals()` in bench/messaging.ts.',
    '',
    ...(profiles.length ? profileSection(profiles) : []),
    '## Notes',
    '',
    "- Clove's agents run with SPAWN's default limits (1 CPU each through the cgroup quota, 256 MiB, 64 pids), each",
    '  as its own uid in its own namespaces with seccomp (the isolation SPAWN reports), as `clove up` runs them.',
    '  With SEND + RECV its producer sends with pipelined SENDs then waits in a blocking RECV on the same connection',
    "  (the SDK's replies are ordered); one event-loop turn between a reply and the next write is part of its round",
    '  trip. With SEND_BATCH + push, replies and messages arrive on one connection as they come',
    '  (`client.messages()`); the unanswered row gets no replies (`results: "none"`), as a NATS publish gets',
    '  none; Redis answers each PUBLISH.',
    '- The fast path (`clove kernel --fast-path`, docs/fastpath.md) serves SEND, SEND_BATCH, RECV and BROADCAST in',
    "  the addon's reactor thread; the TypeScript path is the kernel without the flag.",
    '- Redis and NATS clients are the npm packages `redis` and `nats`; each publish is one client call, batched',
    '  by the client (node-redis pipelines the commands of one tick; nats.js buffers until a flush).',
    "- Where the time goes: `--perf <dir>` (above; `bash bench/setup.sh` installs perf); the kernel's JavaScript",
    "  alone: `--cpu-prof <dir>`, then `node dist/bench/profile-summary.js <dir>/*.cpuprofile`; its agents'",
    '  JavaScript: `--agents-cpu-prof <dir>` (the agents then run unsandboxed; one profile per agent and shape).',
    '- Numbers taken while other work ran on the machine are noisy (load averages above: this machine is shared',
    '  with builds and tests); compare systems only within one run.',
  ].join('\n');
  writeText(`${name}.md`, md);
  console.log(md);
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(DIST_BENCH, 'messaging.js'))
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
