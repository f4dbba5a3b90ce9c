/**
 * Fault injection for swarm agents. `sigkill` comes from outside (process.kill); every other kind is a
 * command message the agent acknowledges and then carries out on itself (harness/agents/).
 *
 * Safety: every fault is bounded even without the sandbox. The leak aborts itself at 300 MiB; the fork
 * bomb forks at most 32 idle children in plain mode (512 when the pids cgroup is there: it stops them
 * at `max_pids`); hang and cpu need the kernel's watchdog, so their victims are spawned with
 * `watchdog_ms`, and a spinner dies with its agent's process group or cgroup when the watchdog fires.
 */
import type { AgentInfo, IsolationReport, SpawnRequest } from '../sdk/typescript/client.js';
import type { Swarm } from './swarm.js';

export const FAULT_KINDS = ['sigkill', 'segv', 'exception', 'leak', 'hang', 'forkbomb', 'cpu'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export function isFaultKind(s: string): s is FaultKind {
  return (FAULT_KINDS as readonly string[]).includes(s);
}

/** What the sandbox enforces here (from a SPAWN reply's isolation report). */
export interface SandboxCaps {
  memory: boolean;
  pids: boolean;
  cpu: boolean;
}

export function capsOf(iso: IsolationReport | null | undefined): SandboxCaps {
  const c = (iso?.cgroups ?? {}) as Record<string, unknown>;
  return { memory: c.memory_limit === true, pids: c.pids_limit === true, cpu: c.cpu_quota === true };
}

export interface FaultSettings {
  /** Watchdog of hang/cpu victims. */
  watchdogMs: number;
  /** Memory limit of leak victims. */
  memoryBytes: number;
  /** pids limit of fork-bomb victims. */
  maxPids: number;
  /** Self-imposed cap of the leak in MiB (the agent aborts there if nothing stopped it). */
  leakCapMb: number;
}

export const DEFAULT_FAULT_SETTINGS: FaultSettings = {
  watchdogMs: 1500,
  memoryBytes: 128 * 1024 * 1024,
  maxPids: 32,
  leakCapMb: 300,
};

/** SPAWN fields a victim of `kind` needs for the kernel to catch the fault. */
export function spawnOptionsFor(
  kind: FaultKind,
  s: FaultSettings = DEFAULT_FAULT_SETTINGS,
): Partial<SpawnRequest> {
  switch (kind) {
    case 'hang':
      return { watchdog_ms: s.watchdogMs };
    case 'cpu':
      return { watchdog_ms: s.watchdogMs, limits: { cpu_quota: 20_000, cpu_period: 100_000 } };
    case 'leak':
      return { limits: { memory: s.memoryBytes } };
    case 'forkbomb':
      return { limits: { max_pids: s.maxPids } };
    default:
      return {};
  }
}

/**
 * The kinds of a "mixed" run. Everything is bounded in plain mode too; `safeOnly` (CI) leaves out the
 * faults that cost real machine resources without a sandbox (leak: 300 MiB; cpu: a core for the watchdog
 * period; forkbomb: 32 processes).
 */
export function mixedKinds(caps: SandboxCaps, safeOnly = false): FaultKind[] {
  const kinds: FaultKind[] = ['sigkill', 'segv', 'exception', 'hang'];
  if (!safeOnly || caps.memory) kinds.push('leak');
  if (!safeOnly || caps.cpu) kinds.push('cpu');
  if (!safeOnly || caps.pids) kinds.push('forkbomb');
  return kinds;
}

export interface FaultRecord {
  fid: string;
  name: string;
  kind: FaultKind;
  /** The life (epoch) and pid the fault was aimed at. */
  epochBefore: string;
  pidBefore: number;
  /** When the fault took effect: SIGKILL sent, or the agent's acknowledgement of the command (ms). */
  t0?: number;
  /** When the agent was back and serving (its first accepted send in a new life reached the collector). */
  servingAt?: number;
  latencyMs?: number;
  /** From AGENT_EXITED: how the faulted life ended. */
  exit?: { reason: string | null; signal: string | null; exit_code: number | null };
  /** Where the restart time goes (ms after t0): exit seen by the kernel, process respawned, "up" report. */
  phases?: { exited?: number; spawned?: number; up?: number };
  note?: string;
}

/** Injects one fault into agent `name` of the swarm. */
export async function injectFault(
  swarm: Swarm,
  name: string,
  kind: FaultKind,
  caps: SandboxCaps,
  s: FaultSettings = DEFAULT_FAULT_SETTINGS,
  /** A LIST entry of the agent taken just before (saves a LIST per fault when injecting many). */
  known?: AgentInfo,
): Promise<FaultRecord> {
  const info = known ?? (await swarm.listByName()).get(name);
  if (!info || !info.running) throw new Error(`cannot inject ${kind}: ${name} is not running`);
  const rec: FaultRecord = {
    fid: `${name}:${kind}:${Date.now()}`,
    name,
    kind,
    epochBefore: swarm.currentEpoch(name) ?? '',
    pidBefore: info.pid,
  };
  if (kind === 'sigkill') {
    rec.t0 = Date.now();
    process.kill(info.pid, 'SIGKILL');
    return rec;
  }
  const cmd: Record<string, unknown> = { cmd: 'fault', kind, fid: rec.fid };
  if (kind === 'leak') cmd.cap_mb = s.leakCapMb;
  if (kind === 'forkbomb') cmd.max_forks = caps.pids ? 512 : 32;
  if (kind === 'leak' && !caps.memory)
    rec.note = `no memory cgroup: self-bounded at ${s.leakCapMb} MiB, then abort()`;
  if (kind === 'forkbomb' && !caps.pids) rec.note = 'no pids cgroup: count-limited to 32 forks';
  if (kind === 'cpu' && !caps.cpu) rec.note = 'no cpu cgroup: unthrottled until the watchdog fires';
  await swarm.command(name, cmd);
  return rec;
}

/**
 * Fills in what happened since injection: t0 from the agent's acknowledgement, the exit from the
 * kernel's AGENT_EXITED, and the restart latency once the agent serves again. Returns true when every
 * record is complete (the victim is back and serving).
 */
export function resolveFaults(swarm: Swarm, recs: FaultRecord[]): boolean {
  let done = true;
  for (const r of recs) {
    if (r.t0 === undefined) {
      const ack = swarm.faultAcks.find((a) => a.fid === r.fid);
      if (ack) r.t0 = ack.ts;
    }
    if (!r.exit) {
      const id = swarm.tracks.get(r.name)?.id;
      const ev = swarm.events.find(
        (e) =>
          e.type === 'AGENT_EXITED' &&
          e.data.agent_id === id &&
          (r.t0 === undefined || e.timestamp >= r.t0 - 5),
      );
      if (ev)
        r.exit = {
          reason: (ev.data.reason as string) ?? null,
          signal: (ev.data.signal as string) ?? null,
          exit_code: (ev.data.exit_code as number) ?? null,
        };
    }
    if (r.servingAt === undefined) {
      const at = swarm.servingAfter(r.name, r.epochBefore);
      if (at !== undefined) r.servingAt = at;
    }
    if (r.t0 !== undefined && r.servingAt !== undefined && !r.phases) {
      const t = swarm.tracks.get(r.name)!;
      const t0 = r.t0;
      const ex = swarm.events.find(
        (e) => e.type === 'AGENT_EXITED' && e.data.agent_id === t.id && e.timestamp >= t0 - 5,
      );
      const sp = swarm.events.find(
        (e) => e.type === 'AGENT_SPAWNED' && e.data.agent_id === t.id && e.timestamp >= t0 - 5,
      );
      const i = t.epochs.indexOf(r.epochBefore);
      const up = i >= 0 ? t.upAt[i + 1] : undefined;
      const rel = (x: number | undefined) => (x === undefined ? undefined : Math.round(x - t0));
      r.phases = { exited: rel(ex?.timestamp), spawned: rel(sp?.timestamp), up: rel(up) };
    }
    if (r.t0 !== undefined && r.servingAt !== undefined)
      r.latencyMs = Math.max(0, Math.round(r.servingAt - r.t0));
    if (r.latencyMs === undefined || !r.exit) done = false;
  }
  return done;
}
