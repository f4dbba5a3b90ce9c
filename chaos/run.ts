/**
 * One chaos run: a swarm on a fresh kernel, traffic, faults injected into seeded-random victims, more
 * traffic, then stop, drain and verify. The CLI (main.ts) and the test (chaos.test.ts) both call
 * runChaos(); it never exits the process and always stops the kernel and its agents.
 */
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Swarm, type AgentTrack } from '../harness/swarm.js';
import {
  DEFAULT_FAULT_SETTINGS,
  capsOf,
  injectFault,
  mixedKinds,
  resolveFaults,
  spawnOptionsFor,
  type FaultKind,
  type FaultRecord,
  type FaultSettings,
  type SandboxCaps,
} from '../harness/faults.js';
import { mulberry32, sample, sleep, summarize, type Summary } from '../harness/timing.js';
import { until } from '../harness/kernel.js';
import type { AgentInfo } from '../sdk/typescript/client.js';

export type Phase =
  'starting' | 'spawning' | 'warm-up' | 'injecting' | 'recovering' | 'draining' | 'verifying' | 'done';

export interface ChaosOptions {
  agents: number;
  /** How many agents get a fault. */
  faults: number;
  fault: FaultKind | 'mixed';
  /** Kinds a mixed run cycles through (default: every kind, all bounded; see mixedKinds). */
  mixed?: FaultKind[];
  /** Mixed runs without a sandbox leave out leak, cpu and forkbomb (see mixedKinds): for CI. */
  safeOnly?: boolean;
  /** Minimum seconds of traffic (before + after the faults). */
  durationS: number;
  seed: number;
  intervalMs?: number;
  nodeEvery?: number;
  /** Where the kernel runs (harness/swarm.ts SwarmOptions.kernelMode). */
  kernelMode?: 'inproc' | 'process';
  /** The kernel's --sandbox (default auto: the native sandbox when available). */
  sandbox?: 'auto' | 'native' | 'off';
  /** The kernel's --fast-path (docs/fastpath.md): agents' connections and messages in the native reactor. */
  fastPath?: boolean;
  settings?: Partial<FaultSettings>;
  /** Upper bound of every wait (recovery, stop, drain). */
  timeoutS?: number;
  /** Called about every 250 ms with the live state (for the terminal view). */
  onTick?: (v: LiveView) => void;
  log?: (line: string) => void;
}

export interface LiveView {
  phase: Phase;
  elapsedMs: number;
  /** `fault`: planned for this agent; `hit`: injected; `serving`: back and serving since. */
  agents: {
    name: string;
    state: string;
    restarts: number;
    fault?: FaultKind;
    hit: boolean;
    serving: boolean;
    runtime: string;
  }[];
  sent: number;
  delivered: number;
  faultsInjected: number;
  recovered: number;
  sandbox: SandboxCaps | null;
}

export interface Machine {
  cores: number;
  kernel_release: string;
  node: string;
  platform: string;
  memory_gib: number;
}

export interface ChaosResult {
  ok: boolean;
  failures: string[];
  agents: number;
  kernel_mode: 'inproc' | 'process';
  runtimes: { python: number; node: number };
  seed: number;
  faults: { total: number; by_kind: Record<string, number> };
  survivors: number;
  survivors_undisturbed: number;
  disturbed: { name: string; why: string }[];
  restarted: number;
  not_restarted: string[];
  messages_sent: number;
  messages_delivered: number;
  messages_lost: number;
  lost_sample: string[];
  duplicates_redelivered: number;
  restart_ms: Summary;
  restart_ms_by_kind: Record<string, Summary>;
  exits_by_kind: Record<string, Record<string, number>>;
  fault_records: FaultRecord[];
  sandbox: SandboxCaps;
  duration_s: number;
  /** Delay of this process's event loop (kernel + collector) over the run. */
  event_loop_delay_ms: { p99: number; max: number };
  machine: Machine;
}

/**
 * Why an agent that no fault touched counts as disturbed (none: undisturbed): gone, restarted, another
 * pid or state than before, more than one life, errors, or no traffic either way since the faults.
 * The chaos runs on one kernel and across nodes judge survivors by this one rule.
 */
export function disturbance(
  t: AgentTrack,
  a: AgentInfo | undefined,
  pidBefore: number | undefined,
  atFault: { sent: number; got: number } = { sent: 0, got: 0 },
  errors: string[] = [],
): string[] {
  const why: string[] = [];
  if (!a) why.push('gone from LIST');
  else {
    if (a.restarts !== 0) why.push(`restarted ${a.restarts}x`);
    if (a.pid !== pidBefore || a.pid !== t.pid) why.push(`pid changed ${t.pid} -> ${a.pid}`);
    if (a.state !== 'RUNNING') why.push(`state ${a.state}`);
  }
  if (t.epochs.length !== 1) why.push(`${t.epochs.length} lives`);
  if (errors.length) why.push(`errors: ${[...new Set(errors)].join(',')}`);
  if (t.sent - atFault.sent < 1) why.push('sent nothing after the faults');
  if (t.got - atFault.got < 1) why.push('received nothing after the faults');
  return why;
}

/**
 * Warm-up: traffic flows, then a third of the run's minimum duration passes before any fault. Returns
 * when the warm-up started (the run's traffic is timed from it).
 */
export async function warmUp(
  swarm: Pick<Swarm, 'waitTraffic'>,
  timeoutMs: number,
  durationS: number,
): Promise<number> {
  const start = Date.now();
  await swarm.waitTraffic(timeoutMs);
  await sleep(Math.max(0, (durationS * 1000) / 3 - (Date.now() - start)));
  return start;
}

export function machine(): Machine {
  return {
    cores: os.cpus().length,
    kernel_release: os.release(),
    node: process.version,
    platform: `${os.platform()}-${os.arch()}`,
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
  };
}

/** The victims and their fault kinds, from the seed alone (before anything is spawned). */
export function plan(
  names: string[],
  count: number,
  kinds: FaultKind[],
  seed: number,
): Map<string, FaultKind> {
  const rand = mulberry32(seed);
  const victims = sample(names, count, rand);
  return new Map(victims.map((v, i) => [v, kinds[i % kinds.length]]));
}

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const started = Date.now();
  const log = o.log ?? (() => {});
  const timeoutMs = (o.timeoutS ?? 120) * 1000;
  const settings = { ...DEFAULT_FAULT_SETTINGS, ...o.settings };
  let phase: Phase = 'starting';
  const setPhase = (p: Phase) => {
    phase = p;
    log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${p}`);
  };
  if (o.faults > o.agents) throw new Error(`cannot fault ${o.faults} of ${o.agents} agents`);

  // The kernel runs in this process: a blocked event loop delays the kernel and the collector alike.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  loopDelay.enable();
  const swarm = await Swarm.start({
    agents: o.agents,
    intervalMs: o.intervalMs ?? 500,
    nodeEvery: o.nodeEvery,
    kernelMode: o.kernelMode,
    kernel: { ...(o.sandbox ? { sandbox: o.sandbox } : {}), ...(o.fastPath ? { fastPath: true } : {}) },
  });
  let ticker: NodeJS.Timeout | undefined;
  let lastList: AgentInfo[] = [];
  const records: FaultRecord[] = [];
  try {
    const iso = await swarm.probeIsolation();
    const caps = capsOf(iso);
    const kinds = o.fault === 'mixed' ? (o.mixed ?? mixedKinds(caps, o.safeOnly)) : [o.fault];
    const victims = plan(swarm.names, o.faults, kinds, o.seed);
    log(
      `sandbox: memory=${caps.memory} pids=${caps.pids} cpu=${caps.cpu}; victims: ${[...victims].map(([n, k]) => `${n}:${k}`).join(' ')}`,
    );

    // The live view polls LIST; it never blocks the run.
    if (o.onTick) {
      let busy = false;
      const tick = async () => {
        if (busy) return;
        busy = true;
        try {
          lastList = await swarm.list();
        } catch {
          // Kernel closing.
        } finally {
          busy = false;
        }
        const byName = new Map(lastList.map((a) => [a.name, a]));
        const acct = { sent: swarm.sentKeys.size, delivered: swarm.recvKeys.size };
        o.onTick!({
          phase,
          elapsedMs: Date.now() - started,
          agents: swarm.names.map((n, i) => ({
            name: n,
            state: byName.get(n)?.state ?? (swarm.tracks.get(n)?.pid ? 'STOPPED' : 'PENDING'),
            restarts: byName.get(n)?.restarts ?? 0,
            fault: victims.get(n),
            hit: records.some((r) => r.name === n),
            serving: records.find((r) => r.name === n)?.servingAt !== undefined,
            runtime: swarm.runtimeOf(i),
          })),
          sent: acct.sent,
          delivered: acct.delivered,
          faultsInjected: records.length,
          recovered: records.filter((r) => r.servingAt !== undefined).length,
          sandbox: caps,
        });
      };
      ticker = setInterval(() => void tick(), 200);
      void tick();
    }

    setPhase('spawning');
    for (let i = 0; i < swarm.names.length; i++) {
      const kind = victims.get(swarm.names[i]);
      await swarm.spawnOne(i, kind ? spawnOptionsFor(kind, settings) : {});
    }
    await swarm.waitUp(timeoutMs);

    setPhase('warm-up');
    const trafficStart = await warmUp(swarm, timeoutMs, o.durationS);

    setPhase('injecting');
    const before = await swarm.listByName();
    const countsAtFault = swarm.counts();
    const survivors = swarm.names.filter((n) => !victims.has(n));
    for (const [name, kind] of victims)
      records.push(await injectFault(swarm, name, kind, caps, settings, before.get(name)));
    // Messages to the victims while they are down (or about to be): the restarted agents must get them.
    for (let k = 0; k < 3; k++) for (const v of victims.keys()) await swarm.sendData(v);
    log(`injected ${records.length} faults`);

    setPhase('recovering');
    const recovered = until(
      () => resolveFaults(swarm, records),
      timeoutMs,
      'every victim back and serving',
    ).catch((e: Error) => e);
    const active = swarm.waitTraffic(timeoutMs, survivors, countsAtFault).catch((e: Error) => e);
    const [rec, act] = await Promise.all([recovered, active]);
    await sleep(Math.max(0, o.durationS * 1000 - (Date.now() - trafficStart)));

    setPhase('draining');
    const stopErr = await swarm.stopTraffic(timeoutMs).then(
      () => null,
      (e: Error) => e,
    );
    const acct = await swarm.drain(timeoutMs);
    resolveFaults(swarm, records);

    setPhase('verifying');
    const after = await swarm.listByName();
    const failures: string[] = [];
    if (rec instanceof Error) failures.push(`recovery: ${rec.message}`);
    if (act instanceof Error) failures.push(`survivor traffic: ${act.message}`);
    if (stopErr) failures.push(`stop: ${stopErr.message}`);

    const disturbed: { name: string; why: string }[] = [];
    for (const n of survivors) {
      const t = swarm.track(n);
      const why = disturbance(
        t,
        after.get(n),
        before.get(n)?.pid,
        countsAtFault.get(n),
        t.errors.map((e) => String(e.code ?? e.op)),
      );
      if (why.length) disturbed.push({ name: n, why: why.join('; ') });
    }
    for (const d of disturbed) failures.push(`survivor ${d.name} disturbed: ${d.why}`);

    const notRestarted: string[] = [];
    for (const r of records) {
      const a = after.get(r.name);
      const t = swarm.track(r.name);
      const ok =
        a &&
        a.state === 'RUNNING' &&
        a.restarts >= 1 &&
        a.id === t.id &&
        a.pid !== r.pidBefore &&
        r.servingAt !== undefined;
      if (!ok) {
        notRestarted.push(r.name);
        failures.push(
          `victim ${r.name} (${r.kind}) not back: state ${a?.state ?? 'gone'}, restarts ${a?.restarts ?? '?'}, serving ${r.servingAt !== undefined}`,
        );
      }
    }
    if (acct.lost.length)
      failures.push(`${acct.lost.length} messages lost (e.g. ${acct.lost.slice(0, 3).join(', ')})`);
    const victimErrors = records.flatMap((r) =>
      swarm.track(r.name).errors.map((e) => `${r.name}: ${e.op} ${e.code}`),
    );
    if (victimErrors.length)
      failures.push(`errors reported by victims: ${victimErrors.slice(0, 5).join('; ')}`);

    const byKind: Record<string, number> = {};
    const latByKind: Record<string, number[]> = {};
    const exitsByKind: Record<string, Record<string, number>> = {};
    for (const r of records) {
      byKind[r.kind] = (byKind[r.kind] ?? 0) + 1;
      if (r.latencyMs !== undefined) (latByKind[r.kind] ??= []).push(r.latencyMs);
      const how = r.exit
        ? r.exit.reason === 'signal'
          ? (r.exit.signal ?? 'signal')
          : r.exit.reason === 'exit'
            ? `exit ${r.exit.exit_code}`
            : String(r.exit.reason)
        : 'unknown';
      (exitsByKind[r.kind] ??= {})[how] = (exitsByKind[r.kind]?.[how] ?? 0) + 1;
    }
    const latencies = records.flatMap((r) => (r.latencyMs !== undefined ? [r.latencyMs] : []));
    const runtimes = { python: 0, node: 0 };
    for (let i = 0; i < swarm.names.length; i++) runtimes[swarm.runtimeOf(i)]++;

    setPhase('done');
    return {
      ok: failures.length === 0,
      failures,
      agents: o.agents,
      kernel_mode: o.kernelMode ?? 'inproc',
      runtimes,
      seed: o.seed,
      faults: { total: records.length, by_kind: byKind },
      survivors: survivors.length,
      survivors_undisturbed: survivors.length - disturbed.length,
      disturbed,
      restarted: records.length - notRestarted.length,
      not_restarted: notRestarted,
      messages_sent: acct.sent,
      messages_delivered: acct.delivered,
      messages_lost: acct.lost.length,
      lost_sample: acct.lost.slice(0, 10),
      duplicates_redelivered: acct.duplicates,
      restart_ms: summarize(latencies),
      restart_ms_by_kind: Object.fromEntries(Object.entries(latByKind).map(([k, v]) => [k, summarize(v)])),
      exits_by_kind: exitsByKind,
      fault_records: records,
      sandbox: caps,
      duration_s: Math.round((Date.now() - started) / 100) / 10,
      event_loop_delay_ms: {
        p99: Math.round(loopDelay.percentile(99) / 1e6),
        max: Math.round(loopDelay.max / 1e6),
      },
      machine: machine(),
    };
  } finally {
    if (ticker) clearInterval(ticker);
    loopDelay.disable();
    await swarm.close();
  }
}
