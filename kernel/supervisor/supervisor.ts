/**
 * The supervisor: owns every agent's lifecycle and drives it through the table in machine.ts. It knows
 * nothing of sockets or mailboxes; the kernel learns what happens through the hooks.
 */
import fs from 'node:fs';
import { SpawnFailedError, InvalidStateError, KernelError } from '../core/errors.js';
import type { AgentLogs } from './logs.js';
import { type Action, type Event, type State, transition, isRefusal } from './machine.js';
import type { AgentProcess, ExitInfo, IsolationReport, SpawnSpec, Spawner } from '../sandbox/types.js';
import { StandbyPool, type SpareInfo, type StandbyInfo } from './standby.js';

/** How long after a restart the agent's next warm standby is prepared (see apply()). */
const STANDBY_REFILL_DELAY_MS = 200;
/** How long an agent's bookkeeping may wait for its promoted standby's first call (see later()). */
const PROMOTION_QUIET_MS = 5;

export type RestartPolicyName = 'never' | 'on-failure' | 'always';

export interface RestartPolicy {
  policy: RestartPolicyName;
  maxRestarts: number;
  windowMs: number;
  backoffInitialMs: number;
  backoffMultiplier: number;
  backoffMaxMs: number;
  minUptimeMs: number;
  watchdogMs: number;
}

export const DEFAULT_POLICY: RestartPolicy = {
  policy: 'never',
  maxRestarts: 5,
  windowMs: 300_000,
  backoffInitialMs: 100,
  backoffMultiplier: 2,
  backoffMaxMs: 30_000,
  minUptimeMs: 1000,
  watchdogMs: 0,
};

/**
 * An agent as the supervisor keeps it: what its spawner gets each time it starts it (SpawnSpec, less
 * the per-start log fd), plus who spawned it, its restart policy and the spawner.
 */
export interface AgentDef extends Omit<SpawnSpec, 'agentId' | 'logFd'> {
  id: number;
  /** Its persistent identity `<name>#<serial>` (kernel/agents/registry.ts); opaque to the supervisor. */
  identity: string;
  parentId: number;
  policy: RestartPolicy;
  /** The spawner that starts it (the sandbox runtime's). */
  spawner: Spawner;
  /** Free-form labels (SPAWN `labels`; `clove up` sets `clove.project`, `clove.service`, …); opaque here. */
  labels: Record<string, string>;
  /** SPAWN `durable` (docs/durable.md): its processes run in the journaled step `@run`; opaque here. */
  durable?: boolean;
  /** SPAWN `standby` (docs/supervision.md "Warm standby"): 1 keeps a parked process ready (standby.ts). */
  standby?: number;
  /** SPAWN `spare: false` (docs/supervision.md "Spare sandbox"): no spare sandbox for this agent. */
  spare?: boolean;
}

export interface AgentRecord {
  readonly def: AgentDef;
  state: State;
  pid: number;
  proc: AgentProcess | null;
  isolation: IsolationReport | null;
  /** Restarts over the agent's whole life. */
  restarts: number;
  consecutiveFailures: number;
  /** Times of the restarts inside the current intensity window. */
  restartTimes: number[];
  startedAt: number;
  /** When its current process said HELLO (0: not yet): `ready` in LIST, `condition: healthy` in clove.yaml. */
  helloAt: number;
  lastExit: ExitInfo | null;
  lastBeat: number;
  /** Its process was started by a dead kernel and re-adopted by this one (until it is restarted). */
  readopted?: boolean;
  /** Calls of this agent parked in a blocking wait (RECV, POLL_EVENTS): it is waiting, not silent. */
  parked: number;
  killedBy: number | null;
  graceMs: number;
  timers: {
    uptime?: NodeJS.Timeout;
    watchdog?: NodeJS.Timeout;
    grace?: NodeJS.Timeout;
    backoff?: NodeJS.Timeout;
  };
  /** Bookkeeping held back while its standby is being promoted (Supervisor.later), in order. */
  held?: { fns: (() => void)[]; timer: NodeJS.Timeout; served: boolean };
  /**
   * Its earlier processes whose exit was handled when their program ended (a restart, see attach) and
   * whose sandboxes are still being torn down: a start meanwhile takes a cgroup leaf of its own.
   */
  tearingDown?: Set<AgentProcess>;
}

export interface SupervisorHooks {
  /** A kernel event about an agent (AGENT_SPAWNED, AGENT_EXITED, …). */
  event(type: string, data: Record<string, unknown>, source: number): void;
  /** A process of the agent was started (its first or a restart); `agent.pid` is its host pid. */
  started?(agent: AgentRecord): void;
  /** The agent's process (and with it its whole process tree) is gone; it may be restarted. */
  exited(agent: AgentRecord): void;
  /**
   * The agent released its names, mailbox, subscriptions: it is gone for good when it has also left the
   * table (`get(id)` is undefined); an escalated agent stays listed (FAILED) until it is killed or replaced.
   */
  release(agent: AgentRecord): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void;
}

export class Supervisor {
  private agents = new Map<number, AgentRecord>();
  private byPid = new Map<number, AgentRecord>();
  /** The listed agents by name, oldest first (an escalated agent and its replacement may share one for a moment). */
  private byName = new Map<string, AgentRecord[]>();
  private inFlight = new Set<Promise<unknown>>();
  private exitWaiters = new Map<number, (() => void)[]>();
  /** Waiters for an agent's next start (RESTART with `wait`): resolved when it is RUNNING, STOPPED or FAILED. */
  private startWaiters = new Map<number, (() => void)[]>();
  /** Set by shutdown(): nothing is restarted any more. */
  private stopping = false;
  /** Warm standbys of the agents that asked for one (standby.ts). */
  private readonly standbys: StandbyPool;

  constructor(
    private readonly logs: AgentLogs,
    private readonly hooks: SupervisorHooks,
    /** `spareSandboxes: false` (`--no-spare-sandboxes`): restarts spawn a new sandbox (standby.ts). */
    options: { spareSandboxes?: boolean } = {},
  ) {
    this.standbys = new StandbyPool(logs, hooks, options.spareSandboxes !== false);
  }

  /** LIST `spare` of an agent (undefined: it keeps no spare sandbox). */
  spareOf(a: AgentRecord): SpareInfo | undefined {
    return this.standbys.spare(a);
  }

  /** LIST `standby` of an agent (undefined: it did not ask for one). */
  standbyOf(a: AgentRecord): StandbyInfo | undefined {
    return this.standbys.info(a);
  }

  get(id: number): AgentRecord | undefined {
    return this.agents.get(id);
  }

  list(): AgentRecord[] {
    return [...this.agents.values()];
  }

  /** The oldest listed agent named `name`, without a scan of the table (SPAWN asks it each time). */
  named(name: string): AgentRecord | undefined {
    return this.byName.get(name)?.[0];
  }

  /** Lists `a` (its id, its name). */
  private enter(a: AgentRecord): void {
    this.agents.set(a.def.id, a);
    const same = this.byName.get(a.def.name);
    if (same) same.push(a);
    else this.byName.set(a.def.name, [a]);
  }

  /** Takes `a` off the table (its id, its name). */
  private leave(a: AgentRecord): void {
    this.agents.delete(a.def.id);
    const same = this.byName.get(a.def.name)?.filter((x) => x !== a);
    if (same?.length) this.byName.set(a.def.name, same);
    else this.byName.delete(a.def.name);
  }

  /** True once shutdown() began: agents stop because the kernel does, not because they ended. */
  get shuttingDown(): boolean {
    return this.stopping;
  }

  pidOwner(pid: number): AgentRecord | undefined {
    const a = this.byPid.get(pid);
    if (a) return a;
    // A warm standby connects while parked: it is its agent's already (the sandbox says so by cgroup).
    const id = this.standbys.ownerOf(pid);
    return id === undefined ? undefined : this.agents.get(id);
  }

  /** True when `pid` is (a process of) the agent's warm standby, parked or being promoted. */
  isStandbyPid(a: AgentRecord, pid: number): boolean {
    return this.standbys.isStandbyPid(a.def.id, pid);
  }

  /** Resolves once every spawn under way has settled (so a just-started agent's pid is known). */
  async spawnsSettled(): Promise<void> {
    while (this.inFlight.size) await Promise.allSettled([...this.inFlight]);
  }

  /** Starts a new agent. A first start that fails is an error to the caller, not a restart loop. */
  async create(def: AgentDef): Promise<AgentRecord> {
    const a = this.record(def);
    this.enter(a);
    try {
      await this.launch(a);
    } catch (e) {
      this.leave(a);
      this.logs.forget(def.name);
      throw e;
    }
    this.feed(a, 'started');
    return a;
  }

  /**
   * Lists an agent whose process already runs — started by a dead kernel, re-adopted by this one
   * (docs/restart.md) — as RUNNING since `startedAt`, exactly as if this supervisor had started it: from
   * here on its exit is handled by its restart policy.
   */
  adopt(def: AgentDef, proc: AgentProcess, startedAt: number): AgentRecord {
    const a = this.record(def);
    this.enter(a);
    this.attach(a, proc);
    a.startedAt = startedAt;
    a.readopted = true;
    this.logs.note(def.name, `agent re-adopted by a new kernel: pid ${proc.pid}`);
    this.feed(a, 'started');
    return a;
  }

  private record(def: AgentDef): AgentRecord {
    return {
      def,
      state: 'STARTING',
      pid: 0,
      proc: null,
      isolation: null,
      restarts: 0,
      consecutiveFailures: 0,
      restartTimes: [],
      startedAt: 0,
      helloAt: 0,
      lastExit: null,
      lastBeat: 0,
      parked: 0,
      killedBy: null,
      graceMs: 5000,
      timers: {},
    };
  }

  private async launch(a: AgentRecord): Promise<void> {
    const d = a.def;
    // A parked standby is promoted in place of a new process (a restart all the same: counted, backoff kept).
    const warm = this.standbys.take(a);
    if (warm) {
      if (warm.kind === 'interpreter') this.note(a, `promoting the warm standby (pid ${warm.proc.pid})`);
      this.attach(a, warm.proc);
      return;
    }
    let fd: number;
    try {
      fd = this.logs.open(d.name);
    } catch (e) {
      throw new SpawnFailedError(`failed to open log file for ${d.name}: ${(e as Error).message}`);
    }
    // The previous process's sandbox may still be going (its exit was handled when its program ended):
    // its cgroup leaf is not free yet, so this one gets a leaf of its own (`<name>_<id>_r<restarts>`).
    const instance = a.tearingDown?.size ? { instance: `r${a.restarts}` } : {};
    const p = d.spawner.spawn({ ...d, agentId: d.id, logFd: fd, ...instance });
    this.inFlight.add(p);
    let proc: AgentProcess;
    try {
      proc = await p;
    } catch (e) {
      // Whatever the spawner throws (a sandbox error naming the syscall, EMFILE, …) is a spawn failure.
      throw e instanceof KernelError
        ? e
        : new SpawnFailedError(`failed to spawn agent ${d.name}: ${(e as Error).message}`);
    } finally {
      this.inFlight.delete(p);
      fs.closeSync(fd);
    }
    this.attach(a, proc);
  }

  /** `proc` is the agent's process from now on (a start, or a re-adoption). */
  private attach(a: AgentRecord, proc: AgentProcess): void {
    a.readopted = false;
    a.proc = proc;
    a.pid = proc.pid;
    a.isolation = proc.isolation;
    a.startedAt = Date.now();
    a.helloAt = 0;
    a.lastBeat = a.startedAt;
    this.byPid.set(proc.pid, a);
    proc.onExit((info) => this.exited(a, proc, info));
    proc.onEnded?.((info) => {
      // The agent's program ended and its sandbox is being torn down (0.3-1 ms with a PID namespace and
      // cgroups): an exit answered by a restart (its warm standby's promotion, or a new process) is
      // handled now, the teardown finishes on its own; anything else waits for it (onExit).
      if (!this.promotes(a, info) && !this.restartsAtEnd(a, info)) return;
      (a.tearingDown ??= new Set()).add(proc);
      proc.onExit(() => a.tearingDown?.delete(proc));
      this.exited(a, proc, info);
    });
    this.hooks.started?.(a);
  }

  /**
   * True when this exit of the agent's process is answered at once by promoting its parked standby (a
   * warm standby, or a spare sandbox).
   */
  private promotes(a: AgentRecord, info: ExitInfo): boolean {
    return (
      a.consecutiveFailures === 0 &&
      (a.state === 'RUNNING' || a.state === 'PAUSED') &&
      this.standbys.ready(a) &&
      this.classify(a, info) === 'exit_restart'
    );
  }

  /**
   * True when this exit of the agent's process starts it again (its policy, or RESTART asked for): such
   * an exit need not wait for the old sandbox's teardown (the new process gets its own cgroup leaf).
   */
  private restartsAtEnd(a: AgentRecord, info: ExitInfo): boolean {
    if (this.stopping) return false;
    if (a.state === 'RESTARTING') return true;
    return (a.state === 'RUNNING' || a.state === 'PAUSED') && this.classify(a, info) === 'exit_restart';
  }

  private exited(a: AgentRecord, proc: AgentProcess, info: ExitInfo): void {
    if (a.proc !== proc) return;
    // Warm standby: an exit that restarts at once wakes the standby first, so that its interpreter runs
    // the script while the kernel does the bookkeeping below; it is adopted in this same tick (launch).
    if (this.promotes(a, info)) {
      this.standbys.wake(a);
      this.hold(a);
      proc.replaced?.();
    }
    this.byPid.delete(proc.pid);
    a.proc = null;
    a.lastExit = info;
    this.hooks.exited(a);
    this.note(a, `agent exited: ${describeExit(info)} after ${Date.now() - a.startedAt} ms`);
    this.feed(a, this.classify(a, info));
    for (const w of this.exitWaiters.get(a.def.id)?.splice(0) ?? []) w();
  }

  /** Turns an exit into exit_restart / exit_final / exit_escalate, by policy and restart intensity. */
  private classify(a: AgentRecord, info: ExitInfo): Event {
    if (a.state === 'STOPPING' || a.state === 'RESTARTING' || this.stopping) return 'exit_final';
    const p = a.def.policy;
    const failed = info.signal !== null || info.code !== 0 || info.reason !== 'exit';
    const restart = p.policy === 'always' || (p.policy === 'on-failure' && failed);
    if (!restart) return 'exit_final';
    const now = Date.now();
    a.restartTimes = a.restartTimes.filter((t) => now - t < p.windowMs);
    if (a.restartTimes.length >= p.maxRestarts) return 'exit_escalate';
    return 'exit_restart';
  }

  kill(id: number, by: number, graceMs?: number): AgentRecord {
    const a = this.must(id);
    a.killedBy = by;
    if (graceMs !== undefined) a.graceMs = graceMs;
    this.request(a, 'kill');
    return a;
  }

  /** RESTART: stops the process like KILL (SIGTERM, SIGKILL after the grace period), then starts it again. */
  restart(id: number, by: number, graceMs?: number): AgentRecord {
    const a = this.must(id);
    if (graceMs !== undefined) a.graceMs = graceMs;
    this.request(a, 'restart');
    this.hooks.log('info', 'agent restart requested', { agent: a.def.name, by });
    return a;
  }

  pause(id: number): AgentRecord {
    const a = this.must(id);
    this.request(a, 'pause');
    return a;
  }

  resume(id: number): AgentRecord {
    const a = this.must(id);
    this.request(a, 'resume');
    return a;
  }

  /** A connection of the agent's process `pid` reached end of file: it may be ending (AgentProcess.peerEnded). */
  peerEnded(id: number, pid: number): void {
    this.agents.get(id)?.proc?.peerEnded?.(pid);
  }

  /** A liveness signal from the agent (HEARTBEAT, or any syscall when a watchdog is set). */
  heartbeat(id: number): void {
    const a = this.agents.get(id);
    if (!a) return;
    a.lastBeat = Date.now();
    // The promoted standby's first call: its bookkeeping runs once this call has been answered.
    if (a.held && !a.held.served) {
      a.held.served = true;
      setImmediate(() => this.catchUp(a));
    }
  }

  /**
   * Runs an agent's bookkeeping (lifecycle events with their audit rows, log notes, the registry's record
   * of its pid) now or, while its warm standby is being promoted, once the promoted process's first call
   * has been answered (PROMOTION_QUIET_MS at most), in the order asked. On a 2-core machine the ~1 ms of
   * synchronous SQLite and file writes an exit and a start cost would otherwise stand between the new
   * process and its first reply. What routes calls (the process, its pid, names, journal) never waits.
   */
  later(a: AgentRecord, fn: () => void): void {
    if (a.held) a.held.fns.push(fn);
    else fn();
  }

  /** Holds `a`'s bookkeeping from now on (a promotion: see later()). */
  private hold(a: AgentRecord): void {
    a.held ??= { fns: [], timer: setTimeout(() => this.catchUp(a), PROMOTION_QUIET_MS), served: false };
  }

  /** Runs what later() held back for `a`, in order; one that throws does not stop the others. */
  private catchUp(a: AgentRecord): void {
    const h = a.held;
    if (!h) return;
    a.held = undefined;
    clearTimeout(h.timer);
    for (const fn of h.fns) {
      try {
        fn();
      } catch (e) {
        this.hooks.log('error', 'agent bookkeeping failed', {
          agent: a.def.name,
          error: (e as Error).message,
        });
      }
    }
  }

  /** Does what later() held back for `a`, then stops its timers: it is released, or the kernel stops. */
  private quiesce(a: AgentRecord): void {
    this.catchUp(a);
    for (const k of Object.keys(a.timers) as (keyof AgentRecord['timers'])[]) clearTimeout(a.timers[k]);
  }

  /** An event about `a`, through later(). */
  private event(a: AgentRecord, type: string, data: Record<string, unknown>): void {
    this.later(a, () => this.hooks.event(type, data, 0));
  }

  /** A line in `a`'s log, through later(). */
  private note(a: AgentRecord, line: string): void {
    this.later(a, () => this.logs.note(a.def.name, line));
  }

  /**
   * A call of the agent parked in a blocking wait (+1) or returned (-1). Time parked is not silence:
   * the watchdog counts the agent alive while any call is parked, and from its return on.
   */
  parked(id: number, delta: 1 | -1): void {
    const a = this.agents.get(id);
    if (!a) return;
    a.parked = Math.max(0, a.parked + delta);
    a.lastBeat = Date.now();
  }

  /** Waits until the agent's current process has exited (or returns at once if it has none). */
  waitExit(id: number): Promise<void> {
    const a = this.agents.get(id);
    if (!a || !a.proc) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.exitWaiters.get(id) ?? [];
      list.push(resolve);
      this.exitWaiters.set(id, list);
    });
  }

  private must(id: number): AgentRecord {
    const a = this.agents.get(id);
    if (!a) throw new InvalidStateError(`agent ${id} is not running`);
    return a;
  }

  /** A request from a client: a refused cell is an error reply. */
  private request(a: AgentRecord, ev: Event): void {
    const cell = transition(a.state, ev);
    if (isRefusal(cell)) throw new InvalidStateError(cell.refused, { agent_id: a.def.id });
    this.apply(a, ev, cell.next, cell.actions);
  }

  /** An internal event (exit, timer): a refused cell means the event is stale and is ignored. */
  private feed(a: AgentRecord, ev: Event): void {
    const cell = transition(a.state, ev);
    if (isRefusal(cell)) return;
    this.apply(a, ev, cell.next, cell.actions);
  }

  private apply(a: AgentRecord, ev: Event, next: State, actions: Action[]): void {
    a.state = next;
    for (const act of actions) this.run(a, act, ev);
    // Warm standby: one is prepared whenever the agent runs, and goes when the agent is being stopped.
    // After a restart the next one waits a little: preparing it is work on the event loop (the spawn's
    // checks, cgroup and mount plan) that would delay the first calls of the process just promoted, and
    // an exit is answered by a promotion only once the agent has been up for a while anyway (backoff).
    // A spare sandbox likewise, for the agents that may be restarted (standby.ts).
    if (a.state === 'RUNNING' && ev === 'started')
      this.standbys.prepare(a, a.restarts > 0 ? STANDBY_REFILL_DELAY_MS : 0);
    else if (a.state === 'STOPPING' || a.state === 'STOPPED' || a.state === 'FAILED')
      this.standbys.discard(a.def.id);
    if (a.state === 'RUNNING' || a.state === 'STOPPED' || a.state === 'FAILED')
      for (const w of this.startWaiters.get(a.def.id)?.splice(0) ?? []) w();
  }

  /** Waits until the agent is running again, or has stopped or failed (resolves at once when it is running). */
  waitStarted(id: number): Promise<void> {
    const a = this.agents.get(id);
    if (!a || a.state === 'RUNNING' || a.state === 'STOPPED' || a.state === 'FAILED')
      return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.startWaiters.get(id) ?? [];
      list.push(resolve);
      this.startWaiters.set(id, list);
    });
  }

  private run(a: AgentRecord, act: Action, ev: Event): void {
    const d = a.def;
    const t = a.timers;
    switch (act) {
      case 'arm_timers':
        // A fired timer is dropped: 10,000 long-running agents would each keep theirs (~200 bytes) for ever.
        t.uptime = setTimeout(() => {
          t.uptime = undefined;
          this.feed(a, 'uptime_reached');
        }, d.policy.minUptimeMs);
        this.armWatchdog(a);
        return;
      case 'arm_watchdog':
        a.lastBeat = Date.now();
        this.armWatchdog(a);
        return;
      case 'disarm_watchdog':
        clearTimeout(t.watchdog);
        t.watchdog = undefined;
        return;
      case 'disarm_timers':
        for (const k of ['uptime', 'watchdog', 'grace'] as const) {
          clearTimeout(t[k]);
          t[k] = undefined;
        }
        return;
      case 'sigterm':
        a.proc?.signal('SIGTERM');
        return;
      case 'sigkill':
        if (ev === 'watchdog_expired') {
          this.hooks.log('warn', 'watchdog expired: killing agent', {
            agent: d.name,
            watchdog_ms: d.policy.watchdogMs,
          });
          this.note(a, `watchdog: no heartbeat for ${d.policy.watchdogMs} ms, killing`);
        }
        a.proc?.signal('SIGKILL');
        return;
      case 'sigstop':
        a.proc?.signal('SIGSTOP');
        return;
      case 'sigcont':
        a.proc?.signal('SIGCONT');
        return;
      case 'arm_grace':
        t.grace = setTimeout(() => this.feed(a, 'grace_elapsed'), a.graceMs);
        return;
      case 'schedule_restart': {
        const p = d.policy;
        const delay =
          a.consecutiveFailures === 0
            ? 0
            : Math.min(
                p.backoffInitialMs * Math.pow(p.backoffMultiplier, a.consecutiveFailures - 1),
                p.backoffMaxMs,
              );
        a.consecutiveFailures++;
        a.restarts++;
        a.restartTimes.push(Date.now());
        this.event(a, 'AGENT_RESTARTING', {
          agent_id: d.id,
          agent_name: d.name,
          restart_count: a.restarts,
          delay_ms: delay,
          ...exitFields(a.lastExit),
        });
        this.note(a, `restarting in ${delay} ms (restart ${a.restarts})`);
        if (delay === 0) queueMicrotask(() => this.feed(a, 'backoff_elapsed'));
        else t.backoff = setTimeout(() => this.feed(a, 'backoff_elapsed'), delay);
        return;
      }
      case 'count_restart':
        a.restarts++;
        a.consecutiveFailures = 0;
        this.event(a, 'AGENT_RESTARTING', {
          agent_id: d.id,
          agent_name: d.name,
          restart_count: a.restarts,
          delay_ms: 0,
          requested: true,
          ...exitFields(a.lastExit),
        });
        this.note(a, `restarting as asked (restart ${a.restarts})`);
        return;
      case 'cancel_restart':
        clearTimeout(t.backoff);
        t.backoff = undefined;
        return;
      case 'start':
        this.launch(a).then(
          () => this.feed(a, 'started'),
          (e: Error) => {
            this.hooks.log('error', 'restart failed', { agent: d.name, error: e.message });
            this.note(a, `restart failed: ${e.message}`);
            a.lastExit = { code: null, signal: null, reason: 'exit' };
            this.feed(a, this.classify(a, { code: 127, signal: null, reason: 'exit' }));
          },
        );
        return;
      case 'reset_failures':
        a.consecutiveFailures = 0;
        return;
      case 'escalate':
        this.event(a, 'AGENT_ESCALATED', {
          agent_id: d.id,
          agent_name: d.name,
          restart_count: a.restarts,
          ...exitFields(a.lastExit),
        });
        this.hooks.log('error', 'agent escalated: restart intensity exceeded', {
          agent: d.name,
          max_restarts: d.policy.maxRestarts,
          restart_window_ms: d.policy.windowMs,
        });
        this.note(
          a,
          `escalated: ${d.policy.maxRestarts} restarts within ${d.policy.windowMs} ms; not restarting`,
        );
        this.hooks.release(a);
        return;
      case 'release':
        this.quiesce(a); // its log is closed below: what was held back goes first
        this.leave(a);
        this.logs.forget(d.name);
        this.hooks.release(a);
        return;
      case 'emit_started':
        this.event(a, 'AGENT_SPAWNED', {
          agent_id: d.id,
          name: d.name,
          pid: a.pid,
          parent_id: d.parentId,
          restart_count: a.restarts,
          // Not started: a process a dead kernel started, re-adopted by this one (docs/restart.md).
          ...(a.readopted ? { readopted: true } : {}),
        });
        return;
      case 'emit_exited':
        this.event(a, 'AGENT_EXITED', {
          agent_id: d.id,
          name: d.name,
          ...exitFields(a.lastExit),
          ...(a.killedBy !== null ? { killed_by: a.killedBy } : {}),
        });
        return;
      case 'emit_paused':
        this.event(a, 'AGENT_PAUSED', { agent_id: d.id, name: d.name });
        return;
      case 'emit_resumed':
        this.event(a, 'AGENT_RESUMED', { agent_id: d.id, name: d.name });
        return;
    }
  }

  private armWatchdog(a: AgentRecord): void {
    const ms = a.def.policy.watchdogMs;
    if (ms <= 0) return;
    clearTimeout(a.timers.watchdog);
    const check = (): void => {
      if (a.parked > 0) a.lastBeat = Date.now();
      const idle = Date.now() - a.lastBeat;
      if (idle >= ms) this.feed(a, 'watchdog_expired');
      else a.timers.watchdog = setTimeout(check, ms - idle);
    };
    a.timers.watchdog = setTimeout(check, ms);
  }

  /** Stops every agent (SIGTERM, SIGKILL after the grace period) and waits until all are gone. */
  /**
   * A hand-over to the next kernel (docs/restart.md): nothing is restarted or signalled any more, spawns
   * under way settle, every timer stops; the agents keep running for the next kernel to re-adopt.
   */
  async detach(): Promise<void> {
    this.stopping = true;
    // Parked standbys are this kernel's own (the next one prepares its own for the agents it re-adopts).
    await Promise.all([this.spawnsSettled(), this.standbys.close()]);
    // The next kernel reads what this one recorded (the agents' pids): nothing may stay held back.
    for (const a of this.list()) this.quiesce(a);
  }

  async shutdown(graceMs: number): Promise<void> {
    this.stopping = true;
    const waits: Promise<void>[] = [];
    for (const a of this.list()) {
      a.graceMs = graceMs;
      if (a.proc) waits.push(this.waitExit(a.def.id));
      try {
        this.kill(a.def.id, 0, graceMs);
      } catch {
        // Already stopping or stopped.
      }
    }
    await this.spawnsSettled();
    await Promise.all([...waits, this.standbys.close()]);
    for (const a of this.list()) this.quiesce(a);
  }
}

function exitFields(e: ExitInfo | null): Record<string, unknown> {
  return { exit_code: e?.code ?? null, signal: e?.signal ?? null, reason: e?.reason ?? null };
}

export function describeExit(e: ExitInfo): string {
  if (e.reason === 'oom') return 'killed by the OOM killer (memory limit)';
  if (e.reason === 'unknown') return 'ended (status unknown: started by an earlier kernel)';
  if (e.reason === 'pids') return `died at the pids limit (${e.signal ?? `exit ${e.code}`})`;
  if (e.signal) return `killed by ${e.signal}`;
  return `exit code ${e.code}`;
}
