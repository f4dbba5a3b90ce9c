/**
 * Restart latency of a Python agent: SIGKILL → the agent back and serving, beside the bare start time
 * of the same interpreter and beside PM2 restarting the same script, all in the same run.
 *
 *   npm run build && node dist/bench/restart.js [--quick] [--kills N]
 *
 * Series (same script, bench/agents/ready_agent.py, same real interpreter), run side by side:
 *   clove/kernel        default SPAWN (sandboxed); the agent connects to the kernel and SENDs "ready" to
 *                       the bench, which waits in a blocking RECV (raw protocol: socket + struct + json).
 *   clove/sdk           the same through the Python SDK (`from clove_sdk import CloveClient`). On these
 *                       defaults the restart releases the agent's spare sandbox (docs/supervision.md
 *                       "Spare sandbox"): a new interpreter in a sandbox made in advance.
 *   clove/sdk-nospare   as clove/sdk on a third kernel run with `--no-spare-sandboxes`: every restart
 *                       spawns its sandbox first (what the spare saves). Before each kill the bench waits
 *                       (untimed) until LIST shows the agent's spare ready, where it keeps one.
 *   clove/plain-kernel  as clove/kernel on a second kernel run with `--sandbox off` (plain processes):
 *                       the sandbox's share of the restart.
 *   clove/plain-socket  `--sandbox off`; the agent writes "ready" to a Unix socket the bench listens
 *                       on (no kernel hop): the apples-to-apples comparison with PM2.
 *   clove/standby       as clove/sdk with SPAWN `standby: 1` (docs/supervision.md "Warm standby"): the kill is
 *                       answered by promoting a parked process (interpreter and SDK already loaded); before
 *                       each kill the bench waits (untimed) until LIST shows the next standby ready.
 *   clove/plain-standby as clove/standby on the `--sandbox off` kernel.
 *   pm2/socket          PM2 (autorestart, restart_delay 0) runs the script; same Unix-socket signal.
 * Each kill waits SPACING ms after "ready" so both supervisors see an agent that was up longer than their
 * min-uptime (1 s for both), i.e. every kill is a first crash (no backoff). The bare start times
 * (`python -c pass`, the pyenv shim, `node -e 0`, …) are sampled in those gaps, so they see the same load.
 * The Python SDK is byte-compiled first (`python -m compileall`), as `pip install` leaves it: sandboxed
 * agents cannot write `__pycache__` into the read-only repository, so a checkout without it would make
 * every clove/sdk start compile the SDK from source.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { tempDir, type KernelProcess } from '../harness/kernel.js';
import { programPid } from '../harness/procs.js';
import { REPO_ROOT } from '../kernel/config.js';
import type { CloveClient } from '../sdk/typescript/client.js';
import { machineInfo, machineLine, realPythonPath, shimPythonPath } from './lib/machine.js';
import { timeCommand, profileKernelIfAsked, startHelper, startKernel, stopChild } from './lib/child.js';
import { Pm2 } from './lib/pm2.js';
import { sleep } from './lib/proc.js';
import { r, roundSummary, summarize, type Summary } from './lib/stats.js';
import {
  barSpec,
  facetHistogramSpec,
  mdTable,
  parseFlags,
  writeChart,
  writeJson,
  writeText,
  envelope,
  givenFlags,
} from './lib/report.js';

const flags = parseFlags(['cpu-prof', 'kills', 'series', 'settle', 'spacing']);
const QUICK = flags.quick;
const KILLS = Number(flags.get('kills') ?? (QUICK ? 12 : 60));
const SPACING_MS = Number(flags.get('spacing') ?? 1200);
/**
 * Quiet before each kill: at least this long since the previous series' restart ended, and every series'
 * standby parked (a replacement standby is prepared 200 ms after a promotion: a Python start on these two
 * cores that would otherwise land on the next series' restart).
 */
const SETTLE_MS = Number(flags.get('settle') ?? 300);
const SERIES = (
  flags.get('series') ??
  'clove/kernel,clove/sdk,clove/sdk-nospare,clove/standby,clove/plain-standby,clove/plain-kernel,clove/plain-socket,pm2/socket'
).split(',');
/** The kernel a series runs on: defaults, `--no-spare-sandboxes`, or `--sandbox off`. */
type KernelKind = 'auto' | 'nospare' | 'off';
const CLOVE_SERIES: Record<
  string,
  { via: string; sandboxed: boolean; signal: string; standby?: boolean; kernel?: KernelKind }
> = {
  'clove/kernel': {
    via: 'kernel',
    sandboxed: true,
    signal:
      'SEND to the bench through the kernel (raw protocol), bench in a blocking RECV; default SPAWN (sandboxed, restarted in its spare sandbox)',
  },
  'clove/sdk': {
    via: 'sdk',
    sandboxed: true,
    signal: 'the same through the Python SDK; default SPAWN (sandboxed, restarted in its spare sandbox)',
  },
  'clove/sdk-nospare': {
    via: 'sdk',
    sandboxed: true,
    kernel: 'nospare',
    signal:
      'the same through the Python SDK; sandboxed; kernel --no-spare-sandboxes (each restart spawns its sandbox)',
  },
  'clove/standby': {
    via: 'sdk',
    sandboxed: true,
    standby: true,
    signal: 'the same through the Python SDK; SPAWN standby: 1 (a parked process is promoted); sandboxed',
  },
  'clove/plain-standby': {
    via: 'sdk',
    sandboxed: false,
    standby: true,
    signal: 'the same through the Python SDK; SPAWN standby: 1; kernel --sandbox off (plain process)',
  },
  'clove/plain-kernel': {
    via: 'kernel',
    sandboxed: false,
    signal: 'SEND through the kernel (raw protocol); kernel --sandbox off (plain process)',
  },
  'clove/plain-socket': {
    via: 'socket',
    sandboxed: false,
    signal: 'write to a Unix socket the bench listens on; kernel --sandbox off (plain process, as PM2)',
  },
};
const AGENT = path.join(REPO_ROOT, 'bench', 'agents', 'ready_agent.py');
const PY = realPythonPath();
const SHIM = shimPythonPath();
const SDK_PATH = path.join(REPO_ROOT, 'sdk', 'python');

const BARE: { name: string; cmd: string; args: string[] }[] = [
  { name: `${PY} -c pass`, cmd: PY, args: ['-c', 'pass'] },
  { name: `python3 -c pass (PATH: ${SHIM})`, cmd: SHIM, args: ['-c', 'pass'] },
  { name: 'node -e 0', cmd: process.execPath, args: ['-e', '0'] },
  {
    name: `${PY} -c "import socket, struct, json" (the agent's imports)`,
    cmd: PY,
    args: ['-c', 'import socket, struct, json'],
  },
  {
    name: `${PY} -c "import clove_sdk"`,
    cmd: 'env',
    args: [`PYTHONPATH=${SDK_PATH}`, PY, '-c', 'import clove_sdk'],
  },
];

/**
 * The floor under every restart: SIGKILL of a Python process with the SDK imported (what a crashed agent
 * is) until a supervisor hears of its exit (Node's 'exit' event: SIGCHLD, waitpid). Tearing the process
 * down takes the operating system this long before anybody can react.
 */
const EXIT_FLOOR = `SIGKILL → exit seen (Node 'exit' event) of ${PY} with clove_sdk imported: the floor of any restart`;

async function killToExit(): Promise<number> {
  const child = spawn(
    PY,
    ['-c', 'import clove_sdk, clove_sdk.client, sys\nprint("up", flush=True)\nsys.stdin.read()'],
    { env: { ...process.env, PYTHONPATH: SDK_PATH }, stdio: ['pipe', 'pipe', 'ignore'] },
  );
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', () => reject(new Error('the floor probe exited before it was up')));
  });
  const exited = new Promise<bigint>((resolve) => child.once('exit', () => resolve(process.hrtime.bigint())));
  const t = process.hrtime.bigint();
  child.kill('SIGKILL');
  return Number((await exited) - t) / 1e6;
}

/** A ready signal: agent pid (as it sees it), arrival time (hrtime), and when its script started (epoch ms). */
interface Ready {
  pid: number;
  t: bigint;
  tMain: number;
}

/** "ready" signals over the side-channel Unix socket: a line `<agent name> <pid>`, timed on arrival. */
class ReadySocket {
  readonly path: string;
  private server: net.Server;
  private arrived = new Map<string, { t: bigint; pid: number; tMain: number }>();
  private pending = new Set<() => boolean>();

  constructor(dir: string) {
    this.path = path.join(dir, 'ready.sock');
    this.server = net.createServer((s) => {
      let buf = '';
      s.on('data', (d) => {
        const t = process.hrtime.bigint();
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const [name, pid, tMain] = buf.slice(0, nl).split(' ');
        this.arrived.set(name, { t, pid: Number(pid), tMain: Number(tMain) });
        buf = buf.slice(nl + 1);
        for (const p of [...this.pending]) if (p()) this.pending.delete(p);
      });
      s.on('error', () => s.destroy());
    });
  }

  listen(): Promise<void> {
    // Sandboxed agents may run as another uid: the socket (in a 0700 temp dir) is for unsandboxed ones.
    return new Promise((res) => this.server.listen(this.path, () => res()));
  }

  /** The next "ready" of `name` (forgets an earlier one). */
  next(name: string, timeoutMs: number): Promise<Ready> {
    this.arrived.delete(name);
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const got = this.arrived.get(name);
        if (!got) return false;
        this.arrived.delete(name);
        clearTimeout(timer);
        resolve(got);
        return true;
      };
      const timer = setTimeout(() => {
        this.pending.delete(check);
        reject(new Error(`no ready signal from ${name} on the side socket`));
      }, timeoutMs);
      this.pending.add(check);
    });
  }

  close(): void {
    this.server.close();
  }
}

/** The next "ready" message of agent `name` through the kernel: a blocking RECV on the bench's connection. */
async function nextReadyViaKernel(c: CloveClient, name: string, timeoutMs: number): Promise<Ready> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const got = await c.recv({ max: 10, timeoutMs: Math.max(1, deadline - Date.now()) });
    const t = process.hrtime.bigint();
    for (const m of got.messages) {
      const msg = m.message as { ready: number; t_main: number };
      if (m.from_name === name) return { pid: msg.ready, t, tMain: msg.t_main };
    }
  }
  throw new Error(`no ready message from ${name} through the kernel`);
}

/** A probe process (bench/lib/probe.ts) pinging one kernel with NOOPs, to see its event loop stall. */
class Probe {
  private constructor(
    private readonly child: ChildProcess,
    private readonly rl: readline.Interface,
  ) {}

  static async start(socketPath: string): Promise<Probe> {
    const { child, lines } = await startHelper('probe.js', [socketPath], { stdin: true });
    return new Probe(child, lines);
  }

  phase(name: string): void {
    this.child.stdin!.write(`phase ${name}\n`);
  }

  async dump(): Promise<Record<string, number[]>> {
    const line = new Promise<string>((resolve) => this.rl.once('line', resolve));
    this.child.stdin!.write('dump\n');
    return JSON.parse(await line) as Record<string, number[]>;
  }
}

/** The probes' control (bench/lib/probe.ts --echo-server): an idle Node process echoing bytes, no kernel. */
const CONTROL_LABEL = 'control: idle Node echo server, no kernel';

interface ProbeOut {
  kernel: string;
  idle: Summary;
  restarts: Summary;
  over_5ms_during_restarts: number;
}

interface SeriesOut {
  name: string;
  signal: string;
  kills: number;
  restart_ms: Summary;
  kill_to_script_start_ms: Summary;
  script_start_to_ready_ms: Summary;
  samples_ms: number[];
  failures: number;
}

/** Byte-compiles the Python SDK with the bench's interpreter (see the header). */
function compileSdk(): void {
  const res = spawnSync(PY, ['-m', 'compileall', '-q', path.join(SDK_PATH, 'clove_sdk')], {
    stdio: 'inherit',
  });
  if (res.status !== 0) throw new Error(`${PY} -m compileall sdk/python/clove_sdk failed (${res.status})`);
}

async function main(): Promise<void> {
  const machine = machineInfo();
  const t0 = Date.now();
  compileSdk();
  console.log(
    `restart bench (${QUICK ? 'quick' : 'full'}, ${KILLS} kills per series, ${SPACING_MS} ms apart) on ${machineLine(machine)}`,
  );
  const dir = tempDir('clvrst');
  const ready = new ReadySocket(dir);
  await ready.listen();
  const bare = new Map<string, number[]>([
    ...BARE.map((b): [string, number[]] => [b.name, []]),
    [EXIT_FLOOR, []],
  ]);
  const sampleBare = async (): Promise<void> => {
    for (const b of BARE) bare.get(b.name)!.push(await timeCommand(b.cmd, b.args));
    bare.get(EXIT_FLOOR)!.push(await killToExit());
  };
  // a few warm-up runs so the page cache holds both interpreters
  for (let i = 0; i < 3; i++) await sampleBare();
  for (const v of bare.values()) v.length = 0;

  interface Runner {
    name: string;
    signal: string;
    /** host pid to SIGKILL (sandboxed agents see another pid in their pid namespace) */
    pid: number;
    readyAt: number;
    next: () => Promise<Ready>;
    pidAfterReady: (reported: number) => Promise<number>;
    /** Resolves once what is parked for the next restart (warm standby, spare sandbox) is ready (untimed, before each kill). */
    parkedReady?: () => Promise<void>;
    samples: number[];
    /** SIGKILL → the new script's first line runs (exit noticed, respawn, interpreter start) */
    toMain: number[];
    failures: number;
  }
  const runners: Runner[] = [];
  const skipped: { name: string; reason: string }[] = [];
  let kp: KernelProcess | undefined;
  let kpPlain: KernelProcess | undefined;
  let kpNoSpare: KernelProcess | undefined;
  let probes: { kernel: string; probe: Probe }[] = [];
  let echo: ChildProcess | undefined;
  const probeOut: ProbeOut[] = [];
  const pm2 = new Pm2(path.join(dir, 'pm2'));
  let pm2Version = '';
  try {
    // Kernel A: defaults (`--sandbox auto`). Kernel B: `--sandbox off`, for the plain-process series
    // that compare with PM2 (which runs plain processes as the caller's uid).
    profileKernelIfAsked(flags.get('cpu-prof'));
    kp = await startKernel();
    kpPlain = await startKernel({ extra: ['--sandbox', 'off'] });
    const wanted = SERIES.map((s) => CLOVE_SERIES[s]?.kernel);
    if (wanted.includes('nospare')) kpNoSpare = await startKernel({ extra: ['--no-spare-sandboxes'] });
    const kernels = new Map<KernelKind, { c: CloveClient; ctl: CloveClient }>();
    for (const [kind, k] of [
      ['auto', kp],
      ['off', kpPlain],
      ['nospare', kpNoSpare],
    ] as const) {
      if (!k) continue;
      // Two connections: replies are in order per connection, so a blocking RECV would hold up SPAWN/KILL.
      const c = await k.client();
      await c.register('bench');
      kernels.set(kind, { c, ctl: await k.client() });
    }
    for (const sName of SERIES.filter((x) => x.startsWith('clove/'))) {
      const cfg = CLOVE_SERIES[sName];
      if (!cfg) throw new Error(`unknown series ${sName}`);
      const { c, ctl } = kernels.get(cfg.kernel ?? (cfg.sandboxed ? 'auto' : 'off'))!;
      const hostPid = async (name: string): Promise<number> => {
        const a = (await ctl.list()).find((x) => x.name === name);
        if (!a || !a.pid) throw new Error(`${name} is not running`);
        return programPid(a.pid);
      };
      const agentName = `rb-${sName.split('/')[1]}`;
      const viaKernel = cfg.via !== 'socket';
      const next = () =>
        viaKernel ? nextReadyViaKernel(c, agentName, 20_000) : ready.next(agentName, 20_000);
      // Kernel signal: the message waits in the mailbox, so the RECV may start after SPAWN; the side socket
      // forgets nothing either once next() is armed, so arm it first.
      let firstReady = viaKernel ? null : next();
      firstReady?.catch(() => {});
      let reply: { pid: number };
      try {
        reply = await ctl.spawn({
          script: AGENT,
          name: agentName,
          restart_policy: 'always',
          max_restarts: 1_000_000,
          sandboxed: cfg.sandboxed,
          ...(cfg.standby ? { standby: 1 } : {}),
          env: { READY_VIA: cfg.via, READY_SOCKET: ready.path, READY_NAME: agentName },
        } as never);
      } catch (e) {
        console.error(`${sName}: SPAWN failed, series skipped: ${(e as Error).message}`);
        skipped.push({ name: sName, reason: `SPAWN failed: ${(e as Error).message}` });
        continue;
      }
      firstReady ??= next();
      await firstReady;
      runners.push({
        name: sName,
        signal: cfg.signal,
        pid: programPid(reply.pid),
        readyAt: Date.now(),
        next,
        pidAfterReady: () => hostPid(agentName),
        // What is parked for the next restart (a warm standby, or a spare sandbox where LIST shows one)
        // is ready before each kill, untimed.
        parkedReady: async () => {
          const until = Date.now() + 20_000;
          for (;;) {
            const a = (await ctl.list()).find((x) => x.name === agentName);
            if (cfg.standby ? a?.standby?.ready : !a?.spare || a.spare.ready) return;
            if (Date.now() > until) throw new Error(`${agentName}: nothing parked ready`);
            await sleep(5);
          }
        },
        samples: [],
        toMain: [],
        failures: 0,
      });
    }
    if (SERIES.includes('pm2/socket')) {
      pm2Version = await pm2.version();
      const firstReady = ready.next('rb-pm2', 30_000);
      await pm2.start({
        name: 'rb-pm2',
        script: AGENT,
        interpreter: PY,
        autorestart: true,
        restart_delay: 0,
        max_restarts: 1_000_000,
        min_uptime: 1000,
        env: { READY_VIA: 'socket', READY_SOCKET: ready.path, READY_NAME: 'rb-pm2' },
      });
      const first = await firstReady;
      runners.push({
        name: 'pm2/socket',
        signal: `write to a Unix socket the bench listens on (PM2 ${pm2Version}, fork mode, no sandbox)`,
        pid: first.pid,
        readyAt: Date.now(),
        next: () => ready.next('rb-pm2', 20_000),
        pidAfterReady: async (reported) => reported,
        samples: [],
        toMain: [],
        failures: 0,
      });
    }
    // Probes: NOOP every 2 ms on each kernel, first with nothing happening, then during the kills.
    // And the control: the same probe against an idle Node echo server (no kernel) on the same machine.
    const echoSocket = path.join(dir, 'echo.sock');
    echo = (await startHelper('probe.js', ['--echo-server', echoSocket])).child;
    probes = [
      { kernel: '--sandbox auto', probe: await Probe.start(kp.socketPath) },
      { kernel: '--sandbox off', probe: await Probe.start(kpPlain.socketPath) },
      { kernel: CONTROL_LABEL, probe: await Probe.start(echoSocket) },
    ];
    for (const p of probes) p.probe.phase('idle');
    await sleep(QUICK ? 2000 : 5000);
    for (const p of probes) p.probe.phase('restarts');
    // Round robin: one kill per series per round, so that load from elsewhere hits every series alike.
    let lastEnded = 0;
    for (let i = 0; i < KILLS; i++) {
      await sampleBare();
      for (const run of runners) {
        if (run.failures) continue;
        await sleep(Math.max(100, run.readyAt + SPACING_MS - Date.now()));
        // The other series' standbys parked too (a failure there is theirs: counted at their own turn).
        for (const other of runners)
          if (other !== run && !other.failures) await other.parkedReady?.().catch(() => {});
        await sleep(Math.max(0, lastEnded + SETTLE_MS - Date.now()));
        try {
          await run.parkedReady?.();
        } catch (e) {
          run.failures++;
          console.error(`${run.name}: kill ${i}: ${(e as Error).message}`);
          continue;
        }
        const waiting = run.next();
        const tKillWall = performance.timeOrigin + performance.now();
        const tKill = process.hrtime.bigint();
        process.kill(run.pid, 'SIGKILL');
        try {
          const got = await waiting;
          run.samples.push(Number(got.t - tKill) / 1e6);
          run.toMain.push(got.tMain - tKillWall);
          run.readyAt = Date.now();
          run.pid = await run.pidAfterReady(got.pid);
          lastEnded = Date.now();
        } catch (e) {
          run.failures++;
          console.error(`${run.name}: kill ${i}: ${(e as Error).message}`);
        }
      }
      if ((i + 1) % 10 === 0) console.log(`round ${i + 1}/${KILLS}`);
    }
    for (const p of probes) {
      const d = await p.probe.dump().catch((e: Error) => {
        console.error(`probe of ${p.kernel}: ${e.message}`);
        return {} as Record<string, number[]>;
      });
      probeOut.push({
        kernel: p.kernel,
        idle: summarize(d.idle ?? []),
        restarts: summarize(d.restarts ?? []),
        over_5ms_during_restarts: (d.restarts ?? []).filter((x) => x > 5).length,
      });
    }
  } catch (e) {
    console.error('restart bench failed:', e);
    throw e;
  } finally {
    await pm2.kill();
    await stopChild(echo);
    await kp?.stop();
    await kpPlain?.stop();
    await kpNoSpare?.stop();
    ready.close();
  }
  const series: SeriesOut[] = runners.map((run) => {
    const s = summarize(run.samples);
    console.log(`${run.name}: n=${s.n} p50 ${r(s.p50)} ms p95 ${r(s.p95)} ms max ${r(s.max)} ms`);
    const m = summarize(run.toMain);
    return {
      name: run.name,
      signal: run.signal,
      kills: run.samples.length,
      restart_ms: s,
      kill_to_script_start_ms: m,
      script_start_to_ready_ms: summarize(run.samples.map((x, i) => x - run.toMain[i])),
      samples_ms: run.samples,
      failures: run.failures,
    };
  });
  await writeReports(machine, t0, series, bare, pm2Version, skipped, probeOut);
  fs.rmSync(dir, { recursive: true, force: true });
}

async function writeReports(
  machine: ReturnType<typeof machineInfo>,
  t0: number,
  series: SeriesOut[],
  bare: Map<string, number[]>,
  pm2Version: string,
  skipped: { name: string; reason: string }[],
  probeOut: ProbeOut[],
): Promise<void> {
  const bareOut = [...bare].map(([name, xs]) => ({
    name,
    start_ms: summarize(xs),
    samples_ms: xs.map((x) => r(x)),
  }));
  const py = bareOut[0].start_ms;
  const floor = bareOut.find((b) => b.name === EXIT_FLOOR)?.start_ms;
  const clove = series.find((s) => s.name === 'clove/kernel');
  const cloveSock = series.find((s) => s.name === 'clove/plain-socket');
  const pm2 = series.find((s) => s.name === 'pm2/socket');
  const standby = series.find((s) => s.name === 'clove/standby');
  const plainStandby = series.find((s) => s.name === 'clove/plain-standby');
  const standbyGoal = standby
    ? {
        goal: 'warm standby promotion (clove/standby, SIGKILL -> serving) p95 <= 5 ms for a Python agent',
        clove_standby_p95_ms: r(standby.restart_ms.p95),
        clove_plain_standby_p95_ms: plainStandby ? r(plainStandby.restart_ms.p95) : null,
        cold_clove_sdk_p95_ms: r(series.find((s) => s.name === 'clove/sdk')?.restart_ms.p95 ?? NaN),
        met: standby.restart_ms.p95 <= 5,
      }
    : null;
  const sdk = series.find((s) => s.name === 'clove/sdk');
  const noSpare = series.find((s) => s.name === 'clove/sdk-nospare');
  const goal = clove
    ? {
        clove_kernel_p95_ms: r(clove.restart_ms.p95),
        // Issue 17 §3: SIGKILL -> serving *through the SDK* within 1.1x the bare start, at the median and
        // at p95 both (a tail of the bare starts alone must not carry the goal).
        clove_sdk_p50_ms: sdk ? r(sdk.restart_ms.p50) : null,
        clove_sdk_p95_ms: sdk ? r(sdk.restart_ms.p95) : null,
        sdk_ratio_p50_to_bare_p50: sdk ? r(sdk.restart_ms.p50 / py.p50) : null,
        sdk_ratio_p95_to_bare_p95: sdk ? r(sdk.restart_ms.p95 / py.p95) : null,
        // The same without spare sandboxes (each restart spawns its sandbox first).
        nospare_ratio_p50_to_bare_p50: noSpare ? r(noSpare.restart_ms.p50 / py.p50) : null,
        nospare_ratio_p95_to_bare_p95: noSpare ? r(noSpare.restart_ms.p95 / py.p95) : null,
        meets_sdk_goal: sdk ? sdk.restart_ms.p50 <= 1.1 * py.p50 && sdk.restart_ms.p95 <= 1.1 * py.p95 : null,
        bare_python_p95_ms: r(py.p95),
        bare_python_p50_ms: r(py.p50),
        clove_kernel_p50_ms: r(clove.restart_ms.p50),
        ratio_p50_to_bare_p50: r(clove.restart_ms.p50 / py.p50),
        ratio_p95_to_bare_p95: r(clove.restart_ms.p95 / py.p95),
        ratio_p95_to_bare_p50: r(clove.restart_ms.p95 / py.p50),
        goal: 'Clove p50 and p95 each <= 1.1 x those of bare `python -c pass` (same interpreter), and faster than PM2',
        meets_bare_goal: clove.restart_ms.p50 <= 1.1 * py.p50 && clove.restart_ms.p95 <= 1.1 * py.p95,
        faster_than_pm2_same_signal: pm2 && cloveSock ? cloveSock.restart_ms.p95 < pm2.restart_ms.p95 : null,
        faster_than_pm2_kernel_signal: pm2 ? clove.restart_ms.p95 < pm2.restart_ms.p95 : null,
      }
    : null;
  const rs = roundSummary;
  const results = {
    setup: {
      agent: 'bench/agents/ready_agent.py',
      interpreter: PY,
      kills_per_series: KILLS,
      spacing_ms: SPACING_MS,
      settle_ms: SETTLE_MS,
      clove:
        'three kernels as child processes (startKernelProcess): defaults (--sandbox auto, spare sandboxes) for clove/kernel, clove/sdk and clove/standby, --no-spare-sandboxes for clove/sdk-nospare, --sandbox off for clove/plain-*; SPAWN restart_policy=always, max_restarts=1e6, default backoff/min_uptime (1000 ms)',
      pm2: pm2Version
        ? `pm2 ${pm2Version} (npm devDependency), PM2_HOME in a temp dir, autorestart, restart_delay 0, min_uptime 1000, interpreter ${PY}`
        : 'not run',
      sdk: 'sdk/python/clove_sdk byte-compiled first (python -m compileall), as pip install leaves it',
      timing:
        't0 = just before process.kill(pid, SIGKILL) in the bench; t1 = when the bench receives the new pid\'s "ready"',
    },
    series: series.map((s) => ({
      ...s,
      restart_ms: rs(s.restart_ms),
      kill_to_script_start_ms: rs(s.kill_to_script_start_ms),
      script_start_to_ready_ms: rs(s.script_start_to_ready_ms),
      samples_ms: s.samples_ms.map((x) => r(x)),
    })),
    skipped,
    kernel_event_loop_probe: probeOut.map((p) => ({ ...p, idle: rs(p.idle), restarts: rs(p.restarts) })),
    bare_start: bareOut.map((b) => ({ ...b, start_ms: rs(b.start_ms) })),
    goal,
    standby_goal: standbyGoal,
  };
  const env = envelope('restart', {
    quick: QUICK,
    machine,
    startedAt: t0,
    results,
    extraArgs: givenFlags(flags, ['kills', 'spacing', 'settle', 'series']),
  });
  writeJson('restart', env);
  await writeChart(
    'restart-latency.svg',
    facetHistogramSpec(
      'SIGKILL → agent ready again (ms), and bare interpreter start (ms)',
      [
        ...series.map((s) => ({
          name: `${s.name}: p50 ${r(s.restart_ms.p50)}, p95 ${r(s.restart_ms.p95)} ms`,
          values: s.samples_ms,
        })),
        ...bareOut.slice(0, 3).map((b) => ({
          name: `bare ${b.name}: p50 ${r(b.start_ms.p50)}, p95 ${r(b.start_ms.p95)} ms`,
          values: bare.get(b.name)!,
        })),
      ],
      'ms',
      30,
    ),
  );
  await writeChart(
    'restart-summary.svg',
    barSpec(
      'Restart latency vs bare start (ms)',
      [
        ...series.flatMap((s) => [
          { label: `restart ${s.name}`, stat: 'p50', value: r(s.restart_ms.p50) },
          { label: `restart ${s.name}`, stat: 'p95', value: r(s.restart_ms.p95) },
        ]),
        ...bareOut.slice(0, 3).flatMap((b) => [
          { label: `bare ${b.name.replace(PY, 'python')}`, stat: 'p50', value: r(b.start_ms.p50) },
          { label: `bare ${b.name.replace(PY, 'python')}`, stat: 'p95', value: r(b.start_ms.p95) },
        ]),
      ],
      'ms',
    ),
  );
  const md = [
    '# Restart latency of a Python agent',
    '',
    `Machine: ${machineLine(machine)}; load average at end ${env.loadavg_at_end.join(' / ')}.`,
    '',
    `Reproduce: \`${env.command}\` (${env.duration_s} s).`,
    '',
    `SIGKILL of the agent's program (its Python process: below clove-init for sandboxed agents, as PM2's is the script's) → the new process is up and has said "ready" to the bench. Same script`,
    `(\`bench/agents/ready_agent.py\`), same interpreter (\`${PY}\`), ${KILLS} kills per series, one every ${SPACING_MS} ms (at least that long after`,
    "the agent said ready: longer than both supervisors' 1 s min-uptime, so no kill meets a backoff). The series run side by side,",
    `killed round robin, each kill on a settled machine (every series' standby or spare sandbox parked, as LIST shows, the previous series' restart ended at least ${SETTLE_MS} ms before);`,
    'the bare start times (spawn → exit, from Node) were sampled once per round, in the same run.',
    '',
    mdTable(
      [
        'series',
        'ready signal',
        'n',
        'p50 ms',
        'p95 ms',
        'max ms',
        'kill → script runs, p50 ms',
        'script runs → ready, p50 ms',
      ],
      series.map((s) => [
        s.name,
        s.signal,
        s.kills,
        r(s.restart_ms.p50),
        r(s.restart_ms.p95),
        r(s.restart_ms.max),
        r(s.kill_to_script_start_ms.p50),
        r(s.script_start_to_ready_ms.p50),
      ]),
    ),
    '',
    '"kill → script runs" ends at the first line of the agent script (`time.time()`, same wall clock): it holds noticing the exit,',
    'the respawn and the interpreter start-up. "script runs → ready" is the agent connecting and saying ready, and the bench hearing it.',
    '',
    mdTable(
      ['bare start (spawn → exit), and the exit floor', 'n', 'p50 ms', 'p95 ms', 'max ms'],
      bareOut.map((b) => [
        `\`${b.name}\``,
        b.start_ms.n,
        r(b.start_ms.p50),
        r(b.start_ms.p95),
        r(b.start_ms.max),
      ]),
    ),
    '',
    goal
      ? [
          `**Goal** (Clove's p50 and p95 each ≤ 1.1 × those of bare \`python -c pass\`): clove/kernel p50 ${goal.clove_kernel_p50_ms} / p95 ${goal.clove_kernel_p95_ms} ms vs bare ${goal.bare_python_p50_ms} / ${goal.bare_python_p95_ms} ms → ` +
            `${goal.ratio_p50_to_bare_p50}× / ${goal.ratio_p95_to_bare_p95}× (${goal.meets_bare_goal ? 'met' : 'NOT met'}).` +
            (goal.clove_sdk_p95_ms !== null
              ? ` Through the SDK (clove/sdk, the goal's own terms): p50 ${goal.clove_sdk_p50_ms} / p95 ${goal.clove_sdk_p95_ms} ms → ${goal.sdk_ratio_p50_to_bare_p50}× / ${goal.sdk_ratio_p95_to_bare_p95}× (${goal.meets_sdk_goal ? 'met' : 'NOT met'}).`
              : '') +
            (noSpare
              ? ` Without spare sandboxes (clove/sdk-nospare, \`--no-spare-sandboxes\`): p50 ${r(noSpare.restart_ms.p50)} / p95 ${r(noSpare.restart_ms.p95)} ms → ${goal.nospare_ratio_p50_to_bare_p50}× / ${goal.nospare_ratio_p95_to_bare_p95}×.`
              : ''),
          pm2
            ? `**vs PM2** (same script, same socket signal): clove/plain-socket p95 ${r(cloveSock?.restart_ms.p95 ?? NaN)} ms vs pm2/socket p95 ${r(pm2.restart_ms.p95)} ms` +
              ` (${goal.faster_than_pm2_same_signal ? 'Clove faster' : 'Clove NOT faster'}); clove/kernel (ready through the kernel) p95 ${goal.clove_kernel_p95_ms} ms.`
            : '',
        ].join('\n\n')
      : '',
    '',
    standbyGoal
      ? `**Warm standby goal** (promotion p95 ≤ 5 ms, SIGKILL → serving): clove/standby p95 ${standbyGoal.clove_standby_p95_ms} ms` +
        (standbyGoal.clove_plain_standby_p95_ms !== null
          ? `, clove/plain-standby p95 ${standbyGoal.clove_plain_standby_p95_ms} ms`
          : '') +
        ` (${standbyGoal.met ? 'met' : 'NOT met'}); a cold restart through the SDK (clove/sdk) p95 ${standbyGoal.cold_clove_sdk_p95_ms} ms.` +
        " For the standby series \"kill → script runs\" is noticing the exit (the end of file of the killed program's kernel connection, or clove-init's exit record; before the namespace is torn down) plus the promotion (SIGUSR1 straight to the parked process, which runs the script it compiled while parked, its connection to the kernel already open); the kernel's exit bookkeeping waits until the promoted process's first call is answered (docs/supervision.md)." +
        (floor
          ? ` Below every restart lies the exit floor of this run (the last row above): p50 ${r(floor.p50)} / p95 ${r(floor.p95)} ms from SIGKILL until a supervisor can know of the exit.`
          : '') +
        ' Before each of their kills the bench waits, untimed, until LIST shows the next standby ready.\n'
      : '',
    skipped.length
      ? `Series not measured in this run: ${skipped.map((x) => `${x.name} (${x.reason})`).join('; ')}.\n`
      : '',
    ...(probeOut.length
      ? [
          '## Does a restart stall the kernel?',
          '',
          'A separate probe process sends a NOOP every 2 ms to each kernel, first for a few seconds with nothing happening, then',
          "during the kills above. A slow NOOP means the kernel's event loop was busy (every other agent's IPC waits as long),",
          'or that the machine did not run the kernel at that moment: the last rows, the control, probe an idle Node process that',
          'echoes the bytes back (no kernel) in the same phases, so its slow replies are what the load alone (interpreters starting',
          'on 2 cores) does to an idle Node process; what the kernels show beyond the control is theirs.',
          '',
          mdTable(
            ['kernel', 'phase', 'NOOPs', 'p50 ms', 'p99 ms', 'max ms', 'NOOPs > 5 ms'],
            probeOut.flatMap((p) => [
              [p.kernel, 'idle', p.idle.n, r(p.idle.p50), r(p.idle.p99), r(p.idle.max), '—'],
              [
                p.kernel,
                'during restarts',
                p.restarts.n,
                r(p.restarts.p50),
                r(p.restarts.p99),
                r(p.restarts.max),
                p.over_5ms_during_restarts,
              ],
            ]),
          ),
          '',
          "With the native sandbox the clone and the wait for the agent's exec run on the addon's spawn threads",
          "(`native/src/spawn.cc`), not on the event loop; what a restart still costs the loop is `NativeSpawner.spawn`'s",
          "preparation (checks, the agent's cgroup, the mount plan, the scan of /proc/net/unix) and the bookkeeping once the",
          'agent runs. Where the time goes: `node dist/bench/restart.js --cpu-prof <dir>`, then',
          '`node dist/bench/profile-summary.js <file>`.',
          '',
        ]
      : []),
    '![histograms](restart-latency.svg)',
    '',
    '![summary](restart-summary.svg)',
  ].join('\n');
  writeText('restart.md', md);
  console.log(md);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
