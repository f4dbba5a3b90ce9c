/**
 * IPC benchmark: round trips and pipelined throughput through the kernel, beside a direct Unix-socket
 * ping-pong of the same framing between two processes, in the same run.
 *
 *   npm run build && node dist/bench/ipc.js [--quick]
 *
 * Processes: this process is client A; the kernel runs as its own process (`startKernelProcess`); B is
 * a separate Node process (bench/lib/ipc-peer.ts) on the TS SDK; the baseline echo server is a separate
 * Node process too. Latencies come from tinybench (one sample per round trip); throughput is messages
 * per second over bursts of BURST pipelined messages.
 */
import path from 'node:path';
import { Bench, type Task } from 'tinybench';
import { tempDir, type KernelProcess } from '../harness/kernel.js';
import { CloveClient, unixTransport } from '../sdk/typescript/client.js';
import { machineInfo, machineLine } from './lib/machine.js';
import { startHelper, stopChild, profileKernelIfAsked, startKernel } from './lib/child.js';
import { summarize, r, roundSummary, type Summary } from './lib/stats.js';
import {
  facetHistogramSpec,
  mdTable,
  parseFlags,
  writeChart,
  writeJson,
  writeText,
  envelope,
} from './lib/report.js';
import type { ChildProcess } from 'node:child_process';

const flags = parseFlags(['cpu-prof', 'time']);
const QUICK = flags.quick;
const TIME_MS = Number(flags.get('time') ?? (QUICK ? 1500 : 6000));
const BURST = 1000;
const ROUNDS = QUICK ? 2 : 3;
const NOOP_PAYLOAD = Buffer.alloc(64, 'x');
const RELAY_PAD = 'x'.repeat(32);

interface TaskOut {
  name: string;
  what: string;
  samples: number;
  latency_ms: Summary;
  /** operations per second (round trips/s for latency tasks, messages/s for bursts). */
  ops_per_s: number;
}

/**
 * Issue 12 step 0, as measured (each step's figures come from full runs of this script at that step's
 * code, two runs each; the machine was shared with other benchmarks, see the load averages). Pipelined
 * figures are messages/s; compare each kernel figure with the direct row of the same run.
 */
const STEPS = {
  machine: '2 cores AMD EPYC, 23.5 GiB, Linux 6.18.44-fc-v1098, Node v20.20.2 (2026-12-02)',
  runs: [
    ['before: one write per reply (e076bd7)', '08:44', 6.94, 93_679, 61_083, 35_040, 645],
    ['before: one write per reply (e076bd7)', '08:45', 4.32, 104_363, 76_416, 34_120, 534],
    ['0a: replies of one read corked, one writev per batch', '08:47', 4.19, 84_685, 50_633, 19_947, 482],
    ['0a: replies of one read corked, one writev per batch', '08:48', 6.68, 73_399, 39_696, 16_580, 554],
    ['0b: corked, flushed every 64 KiB (kept)', '09:10', 9.74, 51_866, 22_815, 17_204, 479],
    ['0b: corked, flushed every 64 KiB (kept)', '09:12', 10.52, 48_486, 31_931, 22_952, 522],
    ['3: 0b and push delivery (HELLO push; this code)', '09:15', 10.15, 78_149, 87_220, 30_960, 425],
  ] as const,
};

/** Samples of one task over every round (tinybench keeps them with retainSamples). */
const collected = new Map<string, number[]>();

function collect(t: Task): void {
  const res = t.result as unknown as { state: string; latency: { samples?: number[] } };
  if (res.state !== 'completed')
    throw new Error(
      `task ${t.name} ${res.state}: ${JSON.stringify((t.result as { error?: unknown }).error ?? '')}`,
    );
  const list = collected.get(t.name) ?? [];
  for (const x of res.latency.samples ?? []) list.push(x);
  collected.set(t.name, list);
}

function taskOut(t: Task, what: string, perOp = 1): TaskOut & { raw: number[] } {
  const raw = collected.get(t.name) ?? [];
  const s = summarize(raw);
  return { name: t.name, what, samples: raw.length, latency_ms: s, ops_per_s: (perOp * 1000) / s.mean, raw };
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const t0 = Date.now();
  console.log(`ipc bench (${QUICK ? 'quick' : 'full'}, ${TIME_MS} ms per task) on ${machineLine(machine)}`);
  let kp: KernelProcess | undefined;
  let peer: ChildProcess | undefined;
  let rawPeer: ChildProcess | undefined;
  let corkPeer: ChildProcess | undefined;
  const dir = tempDir('clvipc');
  try {
    profileKernelIfAsked(flags.get('cpu-prof'));
    kp = await startKernel();
    const rawSock = path.join(dir, 'raw.sock');
    const b = await startHelper('ipc-peer.js', ['clove', kp.socketPath]);
    peer = b.child;
    const bId = Number(b.ready);
    const rp = await startHelper('ipc-peer.js', ['raw', rawSock]);
    rawPeer = rp.child;
    const corkSock = path.join(dir, 'cork.sock');
    const cp = await startHelper('ipc-peer.js', ['raw-cork', corkSock]);
    corkPeer = cp.child;

    const a = await kp.client();
    const rawClient = await CloveClient.connect({ transport: unixTransport(rawSock), reconnect: false });
    const corkClient = await CloveClient.connect({ transport: unixTransport(corkSock), reconnect: false });
    let seq = 0;

    // ROUNDS rounds of every task, TIME_MS / ROUNDS each, so that a burst of load from elsewhere does not
    // land on one task only.
    const bench = new Bench({
      name: 'ipc',
      time: TIME_MS / ROUNDS,
      warmupTime: QUICK ? 200 : 500,
      retainSamples: true,
      throws: true,
    });
    bench
      .add('direct: unix-socket ping-pong', async () => {
        await rawClient.echo(NOOP_PAYLOAD);
      })
      .add('clove: NOOP echo', async () => {
        await a.echo(NOOP_PAYLOAD);
      })
      .add('clove: A SEND→B RECV, B SEND→A RECV', async () => {
        // SEND and the blocking RECV are pipelined on A's connection (replies come back in order).
        const [, got] = await Promise.all([
          a.send(bId, { echo: ++seq, pad: RELAY_PAD }),
          a.recv({ max: 1, timeoutMs: 10_000 }),
        ]);
        if (got.count !== 1) throw new Error('relay: no reply from B within 10 s');
      })
      .add(`direct: ${BURST} pipelined frames`, async () => {
        await Promise.all(Array.from({ length: BURST }, () => rawClient.echo(NOOP_PAYLOAD)));
      })
      .add(`direct, replies of one read in one writev: ${BURST} pipelined frames`, async () => {
        await Promise.all(Array.from({ length: BURST }, () => corkClient.echo(NOOP_PAYLOAD)));
      })
      .add(`clove: ${BURST} pipelined NOOP`, async () => {
        await Promise.all(Array.from({ length: BURST }, () => a.echo(NOOP_PAYLOAD)));
      })
      .add(`clove: ${BURST} pipelined SEND A→B, delivered to B's RECV`, async () => {
        // Written in this order on one connection: the kernel serves the SENDs, then the RECV waits for B's ack.
        const sends = Array.from({ length: BURST }, (_, i) => a.send(bId, { i, n: BURST, pad: RELAY_PAD }));
        const done = a.recv({ max: 1, timeoutMs: 30_000 });
        await Promise.all(sends);
        const got = await done;
        if (got.count !== 1) throw new Error('burst: no ack from B');
      });
    for (let round = 0; round < ROUNDS; round++) {
      await bench.run();
      for (const t of bench.tasks) collect(t);
      bench.reset();
    }
    const [rawRtt, noop, relay, rawBurst, corkBurst, noopBurst, relayBurst] = bench.tasks;
    const out = [
      taskOut(
        rawRtt,
        'round trip, 64-byte payload, no kernel (same framing, echo server in another process)',
      ),
      taskOut(noop, 'round trip, NOOP with a 64-byte payload echoed by the kernel'),
      taskOut(relay, 'round trip A→kernel→B→kernel→A, ~60-byte JSON message, blocking RECV on both sides'),
      taskOut(rawBurst, `${BURST} frames written back to back, all echoes received`, BURST),
      taskOut(
        corkBurst,
        `${BURST} frames back to back; the echo server corks the replies to one read into one writev`,
        BURST,
      ),
      taskOut(noopBurst, `${BURST} NOOPs written back to back, all replies received`, BURST),
      taskOut(
        relayBurst,
        `${BURST} SENDs written back to back; B drains with RECV max=1000 and acks the last`,
        BURST,
      ),
    ];
    a.close();
    rawClient.close();
    corkClient.close();

    const results = {
      setup: {
        kernel: 'child process (harness startKernelProcess), plain spawner',
        client_a: 'this process, TypeScript SDK (sdk/typescript/client.ts)',
        peer_b: 'separate Node process, TypeScript SDK, loop of blocking RECV (max 1000) + pipelined SEND',
        direct_baseline:
          'separate Node process echoing every 17-byte-header frame (protocol/frame.ts), one write per reply',
        tinybench: { time_ms_per_task: TIME_MS, rounds: ROUNDS, version: '6.2.4' },
        burst: BURST,
      },
      tasks: out.map(({ raw: _raw, ...t }) => ({
        ...t,
        latency_ms: roundSummary(t.latency_ms),
        ops_per_s: Math.round(t.ops_per_s),
      })),
      headline: {
        direct_rtt_p50_us: r(out[0].latency_ms.p50 * 1000),
        direct_rtt_p99_us: r(out[0].latency_ms.p99 * 1000),
        noop_rtt_p50_us: r(out[1].latency_ms.p50 * 1000),
        noop_rtt_p99_us: r(out[1].latency_ms.p99 * 1000),
        relay_rtt_p50_us: r(out[2].latency_ms.p50 * 1000),
        relay_rtt_p99_us: r(out[2].latency_ms.p99 * 1000),
        direct_pipelined_msgs_per_s: Math.round(out[3].ops_per_s),
        direct_corked_pipelined_msgs_per_s: Math.round(out[4].ops_per_s),
        noop_pipelined_msgs_per_s: Math.round(out[5].ops_per_s),
        relay_pipelined_msgs_per_s: Math.round(out[6].ops_per_s),
      },
    };
    const env = envelope('ipc', { quick: QUICK, machine, startedAt: t0, results });
    writeJson('ipc', env);
    await writeChart(
      'ipc-latency.svg',
      facetHistogramSpec(
        'Round-trip latency (µs), one sample per round trip',
        out.slice(0, 3).map((t) => ({
          name: `${t.name}  (p50 ${r(t.latency_ms.p50 * 1000)} µs, p99 ${r(t.latency_ms.p99 * 1000)} µs)`,
          values: clip(t.raw.map((x) => x * 1000)),
        })),
        'µs',
      ),
    );
    const h = results.headline;
    const md = [
      '# IPC: round trips and throughput through the kernel',
      '',
      `Machine: ${machineLine(machine)}; load average at end ${env.loadavg_at_end.join(' / ')}.`,
      '',
      `Reproduce: \`${env.command}\` (${env.duration_s} s).`,
      '',
      'Client A is the bench process; the kernel is a separate process; B is a separate Node process on the TypeScript SDK',
      'that loops on a blocking RECV. The baseline is a direct Unix-socket ping-pong with the same 17-byte framing between',
      'two processes (an echo server, no kernel), measured in the same run with the same client code.',
      '',
      mdTable(
        ['task', 'samples', 'p50 µs', 'p99 µs', 'max µs', 'ops/s'],
        out.map((t) => [
          t.name,
          t.samples,
          r(t.latency_ms.p50 * 1000),
          r(t.latency_ms.p99 * 1000),
          r(t.latency_ms.max * 1000),
          Math.round(t.ops_per_s).toLocaleString('en-US'),
        ]),
      ),
      '',
      `For the ${BURST}-message bursts, latency is the time of one whole burst and ops/s is messages per second.`,
      '',
      `- Kernel NOOP round trip vs direct socket: p50 ${h.noop_rtt_p50_us} µs vs ${h.direct_rtt_p50_us} µs (${r(h.noop_rtt_p50_us / h.direct_rtt_p50_us)}×).`,
      `- Relay A→B→A (two SENDs, two blocking RECVs, four kernel hops): p50 ${h.relay_rtt_p50_us} µs, p99 ${h.relay_rtt_p99_us} µs.`,
      `- Pipelined: ${h.relay_pipelined_msgs_per_s.toLocaleString('en-US')} messages/s delivered A→B, ${h.noop_pipelined_msgs_per_s.toLocaleString('en-US')} NOOP/s, direct socket ${h.direct_pipelined_msgs_per_s.toLocaleString('en-US')} frames/s` +
        ` (${h.direct_corked_pipelined_msgs_per_s.toLocaleString('en-US')} frames/s when the echo server sends the replies to one read in one writev).`,
      "- Where the kernel's time goes under pipelined load: `node dist/bench/ipc.js --cpu-prof <dir>`, then",
      '  `node dist/bench/profile-summary.js <dir>/*.cpuprofile`. Before step 0 about half of its busy time was in',
      '  `writeBuffer`/`writev`, one write syscall per reply; the replies of one read now leave corked (below).',
      '',
      '## Steps (issue 12, step 0)',
      '',
      `Machine: ${STEPS.machine}; load average at the start of each run in the table (other benchmarks shared the machine).`,
      '',
      mdTable(
        [
          'step',
          'run (UTC)',
          'load',
          'direct pipelined/s',
          'clove NOOP pipelined/s',
          'clove SEND→RECV /s',
          'relay p50 µs',
        ],
        STEPS.runs.map(([step, at, load, direct, noop, relay, p50]) => [
          step,
          at,
          load,
          direct.toLocaleString('en-US'),
          noop.toLocaleString('en-US'),
          relay.toLocaleString('en-US'),
          p50,
        ]),
      ),
      '',
      '- Step 0a/0b, coalesced writes (kernel/core/connection.ts): the replies produced while serving the frames of one',
      '  read are written under `socket.cork()`, flushed every 64 KiB, so they leave in a few `writev` calls; a reply',
      "  produced later (a parked RECV) is written at once. The kernel's write syscalls for 10,000 pipelined NOOPs fell",
      '  from about 300 to about 12 (kernel/core/coalesce.test.ts counts them). 0a held the whole batch to its end; 0b',
      '  lets the peer start reading after 64 KiB. On this shared machine (load 4 to 10 on 2 cores) the throughput',
      '  figures move more between runs than between steps: no gain is measurable in them yet, and none is claimed.',
      '- Step 0, RECV replies without re-encoding: already so before this issue. Mailboxes hold each message as its JSON',
      '  text and RECV splices those texts into its reply (kernel/syscalls/ipc/index.ts); pushed messages (step 3) are',
      '  built the same way. Nothing to change, so no figure.',
      '',
      '![round-trip latency histograms](ipc-latency.svg)',
      '',
      'Numbers taken while other work ran on the machine are noisy: see the load averages above. Single round trips between',
      'two processes also depend on whether the CPUs were idle before the wake-up (on this 2-vCPU VM the same script gave',
      'several times lower round trips under load than on an idle machine, for the kernel and the direct baseline alike):',
      'compare the kernel only with the direct baseline of the same run.',
    ].join('\n');
    writeText('ipc.md', md);
    console.log(md);
  } finally {
    await stopChild(peer);
    await stopChild(rawPeer);
    await stopChild(corkPeer);
    await kp?.stop();
  }
}

/** Drops the slowest 0.5 % from the chart only (the tables keep every sample), so the bins stay readable. */
function clip(xs: number[]): number[] {
  const s = [...xs].sort((x, y) => x - y);
  return s.slice(0, Math.max(1, Math.floor(s.length * 0.995)));
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
