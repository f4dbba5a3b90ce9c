/**
 * A swarm of real agents (Python and Node, harness/agents/) on a real kernel, with a collector that
 * accounts for every message: the agents report each message they sent (once the kernel accepted it)
 * and each they received (before acknowledging the RECV lease), and the collector deduplicates
 * at-least-once redeliveries by (src, epoch, n). `lost` is then exact: accepted by the kernel, never
 * received. Used by the chaos CLI (chaos/), its test and the scenarios (scenarios/).
 *
 * Always `close()` a swarm (in a finally): it stops the loops, the kernel and every agent.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, startKernelProcess, until, REPO_ROOT } from './kernel.js';
import type { KernelOptions } from '../kernel/config.js';
import type {
  AgentInfo,
  CloveClient,
  IsolationReport,
  KernelEvent,
  SpawnRequest,
} from '../sdk/typescript/client.js';

export const PY_AGENT = path.join(REPO_ROOT, 'harness', 'agents', 'swarm_agent.py');
export const NODE_AGENT = path.join(REPO_ROOT, 'harness', 'agents', 'swarm_agent.mjs');
export const COLLECTOR = 'collector';

/** Node agents import the compiled SDK: they need `npm run build`. */
export function nodeAgentAvailable(): boolean {
  return fs.existsSync(path.join(REPO_ROOT, 'dist', 'sdk', 'typescript', 'client.js'));
}

export type Runtime = 'python' | 'node';

export interface SwarmOptions {
  agents: number;
  /** Agent names are `${prefix}${i}`. */
  prefix?: string;
  /** Each agent sends one data message every intervalMs. */
  intervalMs?: number;
  /** Every k-th agent (i % k === k - 1) runs the Node agent; 0: Python only. Default 5 (when built). */
  nodeEvery?: number;
  /** sha256 rounds per received message (the agents' "work"). */
  work?: number;
  /** Every agent sends all its data to this one agent (slow-consumer scenario). */
  focus?: string;
  restartPolicy?: 'never' | 'on-failure' | 'always';
  /** Per-agent SPAWN fields (watchdog, limits, max_restarts, …). */
  spawnExtra?: (name: string, index: number) => Partial<SpawnRequest>;
  kernel?: Partial<KernelOptions>;
  /**
   * `inproc` (default): the kernel runs in this process (no build needed; the collector shares its
   * event loop). `process`: `clove kernel` as a child process, like the real daemon (needs the build).
   */
  kernelMode?: 'inproc' | 'process';
  /**
   * A kernel (or cluster) started by the caller, used instead of starting one: its client() is where the
   * collector, the operator and the event listener connect; close() stops it (chaos/cluster.ts).
   */
  kernelHandle?: SwarmKernel;
  /** The agents' scripts as the kernels see them (default PY_AGENT and NODE_AGENT). */
  scripts?: { python: string; node: string };
  /** list() asks LIST `all_nodes` (a cluster: every node's agents, each with its `node`). */
  listAllNodes?: boolean;
}

/** The part of a harness kernel (in-process or child process) a swarm needs. */
export interface SwarmKernel {
  mode: 'inproc' | 'process' | 'cluster';
  client(): Promise<CloveClient>;
  stop(): Promise<unknown>;
  /** Where the kernel writes its agents' logs (`<name>.log`), when it is on this machine. */
  logDir?: string;
  /**
   * A cluster: where the node named `node` (LIST's `node`) writes its agents' logs, when that directory is
   * visible here (both cluster providers put every node's directory on this machine).
   */
  logDirOf?: (node: string) => string | undefined;
}

async function startSwarmKernel(mode: 'inproc' | 'process', k: Partial<KernelOptions>): Promise<SwarmKernel> {
  const o: Partial<KernelOptions> = {
    mailboxSize: 1_000_000,
    logLevel: 'silent',
    shutdownGraceMs: 1000,
    ...k,
  };
  if (mode === 'inproc') {
    const tk = await startKernel(o);
    return {
      mode,
      client: () => tk.client(),
      stop: () => tk.stop(),
      logDir: path.join(tk.dataDir, 'logs'),
    };
  }
  const extra = [
    '--mailbox-size',
    String(o.mailboxSize),
    '--log-level',
    o.logLevel === 'silent' ? 'error' : String(o.logLevel),
  ];
  if (o.sandbox) extra.push('--sandbox', o.sandbox);
  if (o.fastPath) extra.push('--fast-path');
  const kp = await startKernelProcess({ extra });
  return {
    mode,
    client: () => kp.client(),
    logDir: path.join(kp.dataDir, 'logs'),
    stop: async () => {
      await kp.stop();
      fs.rmSync(path.dirname(kp.socketPath), { recursive: true, force: true });
    },
  };
}

export interface Report {
  t: string;
  name: string;
  e: string;
  [k: string]: unknown;
}

export interface FaultAck {
  name: string;
  kind: string;
  fid: string;
  /** The agent's wall clock (ms) when it acknowledged the fault, right before injecting it. */
  ts: number;
  epoch: string;
  /** When the collector saw the acknowledgement. */
  at: number;
}

export interface AgentTrack {
  name: string;
  index: number;
  runtime: Runtime;
  /** The id and pid SPAWN returned (0 until it replied). */
  id: number;
  pid: number;
  isolation: IsolationReport | null;
  /** One epoch per process life, in order of their "up" report. */
  epochs: string[];
  upAt: number[];
  sent: number;
  got: number;
  lastSentAt: number;
  lastGotAt: number;
  /** Collector time of each epoch's first accepted send: the agent is back and serving. */
  firstSentAt: Map<string, number>;
  errors: Report[];
  /** Epochs that acknowledged the stop command. */
  stopped: Set<string>;
}

export interface Accounting {
  sent: number;
  delivered: number;
  lost: string[];
  duplicates: number;
  /** Received but never reported as sent (sender died between SEND and its report): not a loss. */
  unreported: number;
}

/** Every swarm not yet closed (so that a signal handler can stop them all: see closeAllSwarms). */
const open = new Set<Swarm>();

/** Stops every open swarm (kernel and agents): for SIGINT/SIGTERM handlers. */
export async function closeAllSwarms(): Promise<void> {
  await Promise.allSettled([...open].map((s) => s.close()));
}

export class Swarm {
  readonly tracks = new Map<string, AgentTrack>();
  readonly events: (KernelEvent & { at: number })[] = [];
  readonly faultAcks: FaultAck[] = [];
  readonly sentKeys = new Set<string>();
  readonly recvKeys = new Set<string>();
  /** Collector time at which each sent key was first reported (an upper bound of when it was accepted). */
  readonly sentAt = new Map<string, number>();
  duplicates = 0;
  reportsSeen = 0;
  private opSeq = 0;
  private closing = false;
  private closed: Promise<void> | null = null;
  private loops: Promise<void>[] = [];
  private listeners: ((r: Report) => void)[] = [];
  readonly names: string[];

  private constructor(
    readonly tk: SwarmKernel,
    readonly ctl: CloveClient,
    private readonly collector: CloveClient,
    private readonly eventsClient: CloveClient,
    readonly opts: Required<
      Omit<SwarmOptions, 'spawnExtra' | 'kernel' | 'focus' | 'kernelMode' | 'kernelHandle'>
    > &
      Pick<SwarmOptions, 'spawnExtra' | 'focus'>,
  ) {
    this.names = Array.from({ length: opts.agents }, (_, i) => `${opts.prefix}${i}`);
  }

  /** Starts a kernel in this process, the collector and the event listener (no agents yet). */
  static async start(o: SwarmOptions): Promise<Swarm> {
    const tk = o.kernelHandle ?? (await startSwarmKernel(o.kernelMode ?? 'inproc', o.kernel ?? {}));
    try {
      const ctl = await tk.client();
      const collector = await tk.client();
      await collector.register(COLLECTOR);
      const ev = await tk.client();
      await ev.subscribe(['AGENT_EXITED', 'AGENT_RESTARTING', 'AGENT_SPAWNED', 'AGENT_ESCALATED']);
      const s = new Swarm(tk, ctl, collector, ev, {
        agents: o.agents,
        prefix: o.prefix ?? 'a-',
        intervalMs: o.intervalMs ?? 500,
        nodeEvery: o.nodeEvery ?? (nodeAgentAvailable() ? 5 : 0),
        work: o.work ?? 200,
        restartPolicy: o.restartPolicy ?? 'always',
        spawnExtra: o.spawnExtra,
        focus: o.focus,
        scripts: o.scripts ?? { python: PY_AGENT, node: NODE_AGENT },
        listAllNodes: o.listAllNodes ?? false,
      });
      s.loops.push(s.collectLoop(), s.eventLoop());
      open.add(s);
      return s;
    } catch (e) {
      await tk.stop();
      throw e;
    }
  }

  runtimeOf(index: number): Runtime {
    const k = this.opts.nodeEvery;
    return k > 0 && index % k === k - 1 ? 'node' : 'python';
  }

  /**
   * What the sandbox does here: spawns a throwaway agent with limits and reads its SPAWN reply's
   * isolation report (all false in plain mode).
   */
  async probeIsolation(): Promise<IsolationReport> {
    const r = await this.ctl.spawn({
      name: 'isolation-probe',
      script: PY_AGENT,
      env: { SWARM_SIZE: '1', SWARM_PREFIX: 'isolation-probe', SWARM_COLLECTOR: 'nobody-listens' },
      limits: { memory: 128 * 1024 * 1024, max_pids: 32, cpu_quota: 50_000, cpu_period: 100_000 },
    });
    await this.ctl.kill(r.id, { grace_ms: 0 }).catch(() => {});
    return r.isolation;
  }

  /** Spawns every agent (restart policy of the options; per-agent extras from `spawnExtra`). */
  async spawnAll(): Promise<void> {
    for (let i = 0; i < this.names.length; i++) await this.spawnOne(i);
  }

  /** Spawns agent `i` through `via` (another kernel's operator client; default this swarm's). */
  async spawnOne(i: number, extra: Partial<SpawnRequest> = {}, via?: CloveClient): Promise<AgentTrack> {
    const name = this.names[i];
    const runtime = this.runtimeOf(i);
    const o = this.opts;
    const req: SpawnRequest = {
      name,
      script: runtime === 'node' ? o.scripts.node : o.scripts.python,
      restart_policy: o.restartPolicy,
      env: {
        SWARM_PREFIX: o.prefix,
        SWARM_SIZE: String(o.agents),
        SWARM_INTERVAL_MS: String(o.intervalMs),
        SWARM_COLLECTOR: COLLECTOR,
        SWARM_WORK: String(o.work),
        ...(o.focus ? { SWARM_FOCUS: o.focus } : {}),
      },
      ...o.spawnExtra?.(name, i),
      ...extra,
    };
    // The track exists before SPAWN is sent: ingest() drops the reports of a name without one, and the
    // agent's first reports ("up") may reach the collector before the SPAWN reply reaches us (a clustered
    // kernel answers only once it stored the agent's definition in etcd, after the process started).
    const prev = this.tracks.get(name);
    const t: AgentTrack = {
      name,
      index: i,
      runtime,
      id: 0,
      pid: 0,
      isolation: null,
      epochs: prev?.epochs ?? [],
      upAt: prev?.upAt ?? [],
      sent: 0,
      got: 0,
      lastSentAt: 0,
      lastGotAt: 0,
      firstSentAt: new Map(),
      errors: [],
      stopped: new Set(),
    };
    this.tracks.set(name, t);
    const r = await (via ?? this.ctl).spawn(req).catch((e: unknown) => {
      if (prev) this.tracks.set(name, prev);
      else this.tracks.delete(name);
      throw e;
    });
    t.id = r.id;
    t.pid = r.pid;
    t.isolation = r.isolation ?? null;
    return t;
  }

  track(name: string): AgentTrack {
    const t = this.tracks.get(name);
    if (!t) throw new Error(`no agent ${name} in the swarm`);
    return t;
  }

  /** Called for every report the collector receives. */
  onReport(fn: (r: Report) => void): () => void {
    this.listeners.push(fn);
    return () => (this.listeners = this.listeners.filter((l) => l !== fn));
  }

  private async collectLoop(): Promise<void> {
    while (!this.closing) {
      let msgs;
      try {
        msgs = (await this.collector.recv({ max: 5000, timeoutMs: 200 })).messages;
      } catch (e) {
        if (this.closing) return;
        throw e;
      }
      const at = Date.now();
      for (const m of msgs) this.ingest(m.message as Report, at);
    }
  }

  private ingest(r: Report, at: number): void {
    if (!r || typeof r !== 'object' || typeof r.name !== 'string') return;
    this.reportsSeen++;
    const t = this.tracks.get(r.name);
    if (t) {
      switch (r.t) {
        case 'up':
          t.epochs.push(r.e);
          t.upAt.push(at);
          break;
        case 'tick': {
          for (const [dst, n] of (r.sent as [string, number][]) ?? []) {
            const key = `${r.name}@${r.e}>${dst}#${n}`;
            this.sentKeys.add(key);
            if (!this.sentAt.has(key)) this.sentAt.set(key, at);
            t.sent++;
            t.lastSentAt = at;
            if (!t.firstSentAt.has(r.e)) t.firstSentAt.set(r.e, at);
          }
          for (const [src, e, n] of (r.got as [string, string, number][]) ?? []) {
            const k = `${src}@${e}>${r.name}#${n}`;
            if (this.recvKeys.has(k)) this.duplicates++;
            else this.recvKeys.add(k);
            t.got++;
            t.lastGotAt = at;
          }
          break;
        }
        case 'error':
          t.errors.push({ ...r, at }); // when the harness heard of it
          break;
        case 'stopped':
          t.stopped.add(r.e);
          break;
        case 'fault':
          this.faultAcks.push({
            name: r.name,
            kind: String(r.kind),
            fid: String(r.fid),
            ts: Number(r.ts),
            epoch: r.e,
            at,
          });
          break;
      }
    }
    for (const l of this.listeners) l(r);
  }

  private async eventLoop(): Promise<void> {
    while (!this.closing) {
      let evs;
      try {
        evs = (await this.eventsClient.pollEvents({ max: 1000, timeoutMs: 200 })).events;
      } catch (e) {
        if (this.closing) return;
        throw e;
      }
      const at = Date.now();
      for (const e of evs) this.events.push({ ...e, at });
    }
  }

  /** A data message from the operator, accounted like the agents' own (src "chaos"). */
  async sendData(to: string): Promise<boolean> {
    const n = ++this.opSeq;
    try {
      await this.ctl.send(to, { t: 'd', src: 'chaos', e: 'op', n });
    } catch {
      return false;
    }
    this.sentKeys.add(`chaos@op>${to}#${n}`);
    this.sentAt.set(`chaos@op>${to}#${n}`, Date.now());
    return true;
  }

  /** Sends a command; a full mailbox is retried (with backoff) for up to `retryMs`. */
  async command(to: string, cmd: Record<string, unknown>, retryMs = 30_000): Promise<void> {
    const deadline = Date.now() + retryMs;
    for (let i = 0; ; i++) {
      try {
        await this.ctl.send(to, cmd);
        return;
      } catch (e) {
        if ((e as { code?: string }).code !== 'mailbox_full' || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, Math.min(10 * (i + 1), 200)));
      }
    }
  }

  list(): Promise<AgentInfo[]> {
    return this.ctl.list(this.opts.listAllNodes ? { all_nodes: true } : {});
  }

  /** By name; when a name is listed twice (a cluster: a stale copy on another node), the live one wins. */
  async listByName(): Promise<Map<string, AgentInfo>> {
    const out = new Map<string, AgentInfo>();
    for (const a of await this.list()) {
      const had = out.get(a.name);
      if (!had || (!had.running && a.running)) out.set(a.name, a);
    }
    return out;
  }

  /**
   * Until every agent has reported "up" at least once. On timeout the error names the agents that never
   * did, with what LIST says of them, what they reported otherwise and the end of their logs.
   */
  async waitUp(timeoutMs = 60_000, names = this.names): Promise<boolean> {
    const down = () => names.filter((n) => (this.tracks.get(n)?.epochs.length ?? 0) === 0);
    try {
      return await until(() => down().length === 0, timeoutMs, 'every agent up');
    } catch (e) {
      const listed = await this.listByName().catch(() => new Map<string, AgentInfo>());
      const about = down().map((n) => {
        const a = listed.get(n);
        const state = a
          ? `${a.state} pid ${a.pid} restarts ${a.restarts}${a.exit_reason ? ` last exit ${a.exit_reason}` : ''}`
          : 'not listed';
        // An agent that reports all the same lost its "up" only; one that reports nothing is stuck.
        const t = this.tracks.get(n);
        const heard = t ? `; reported ${t.sent} sent, ${t.got} received, ${t.errors.length} errors` : '';
        return `${n}: ${state}${a?.node ? ` on ${a.node}` : ''}${heard}; log: ${this.logTail(n, a?.node)}`;
      });
      throw new Error(`${(e as Error).message}; never up: ${about.join(' | ')}`);
    }
  }

  /** The last lines of an agent's log, when the logs of the kernel (or cluster node) running it are here. */
  private logTail(name: string, node?: string, lines = 8): string {
    const dir = (node !== undefined && this.tk.logDirOf?.(node)) || this.tk.logDir;
    if (!dir) return '(not on this machine)';
    try {
      const text = fs.readFileSync(path.join(dir, `${name}.log`), 'utf8');
      return JSON.stringify(text.trimEnd().split('\n').slice(-lines).join('\n'));
    } catch (e) {
      return `(${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
    }
  }

  /** Until every agent has sent and received at least `min` messages since `counts` (default: ever). */
  waitTraffic(
    timeoutMs = 60_000,
    names = this.names,
    since?: Map<string, { sent: number; got: number }>,
    min = 1,
  ): Promise<boolean> {
    return until(
      () =>
        names.every((n) => {
          const t = this.tracks.get(n);
          const b = since?.get(n) ?? { sent: 0, got: 0 };
          return !!t && t.sent - b.sent >= min && t.got - b.got >= min;
        }),
      timeoutMs,
      'traffic between all agents',
    );
  }

  counts(): Map<string, { sent: number; got: number }> {
    return new Map([...this.tracks.values()].map((t) => [t.name, { sent: t.sent, got: t.got }]));
  }

  /** The collector time at which `name` was back and serving in a life after `epochBefore`. */
  servingAfter(name: string, epochBefore: string): number | undefined {
    const t = this.tracks.get(name);
    if (!t) return undefined;
    const i = t.epochs.indexOf(epochBefore);
    for (const e of t.epochs.slice(i + 1)) {
      const at = t.firstSentAt.get(e);
      if (at !== undefined) return at;
    }
    return undefined;
  }

  currentEpoch(name: string): string | undefined {
    const t = this.tracks.get(name);
    return t?.epochs[t.epochs.length - 1];
  }

  /** Tells every agent to stop sending and waits until each one's current life acknowledged it. */
  async stopTraffic(timeoutMs = 30_000, names = this.names): Promise<void> {
    for (const n of names) await this.command(n, { cmd: 'stop' }).catch(() => {});
    await until(
      () =>
        names.every((n) => {
          const e = this.currentEpoch(n);
          return e !== undefined && this.tracks.get(n)!.stopped.has(e);
        }),
      timeoutMs,
      'every agent stopped sending',
    );
  }

  accounting(): Accounting {
    let delivered = 0;
    const lost: string[] = [];
    for (const k of this.sentKeys) {
      if (this.recvKeys.has(k)) delivered++;
      else lost.push(k);
    }
    let unreported = 0;
    for (const k of this.recvKeys) if (!this.sentKeys.has(k)) unreported++;
    return { sent: this.sentKeys.size, delivered, lost, duplicates: this.duplicates, unreported };
  }

  /**
   * Waits until every message sent was received, or until nothing new arrived for `quietMs` (then the
   * rest is lost). Bounded by `timeoutMs`. Call after stopTraffic().
   */
  async drain(timeoutMs = 30_000, quietMs = 3000): Promise<Accounting> {
    const deadline = Date.now() + timeoutMs;
    let last = -1;
    let lastChange = Date.now();
    for (;;) {
      const a = this.accounting();
      if (a.lost.length === 0) return a;
      if (this.recvKeys.size !== last) {
        last = this.recvKeys.size;
        lastChange = Date.now();
      }
      if (Date.now() - lastChange > quietMs || Date.now() > deadline) return a;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops the loops, the kernel and every agent (idempotent; never throws). */
  close(): Promise<void> {
    if (!this.closed) {
      this.closing = true;
      this.closed = (async () => {
        try {
          await this.tk.stop();
        } catch {
          // Best effort: the kernel stops its agents before anything here can fail.
        }
        await Promise.allSettled(this.loops);
        open.delete(this);
      })();
    }
    return this.closed;
  }
}
