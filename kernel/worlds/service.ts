/**
 * The worlds service (docs/worlds.md): every world of the kernel, who is in which (by agent identity,
 * so membership survives an agent's restarts and the kernel's), persisted in the kernel's SQLite file;
 * chaos events with their timers and their effects on members' processes; and the entry points the
 * files, http and exec families call first for a member (`read`, `write`, `http`, `exec`). Nothing here
 * waits on the event loop: latency is a timer, a crash is a signal, pressure is a cgroup write.
 */
import crypto from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { ArgsOf, KernelEventType, Replies, WorldConfig } from '../../protocol/index.js';
import type { Caller } from '../core/context.js';
import {
  InvalidRequestError,
  InvalidStateError,
  IoError,
  NotFoundError,
  PermissionDeniedError,
  TooLargeError,
} from '../core/errors.js';
import { validateDef } from '../core/validate.js';
import { openDatabase } from '../state/sqlite.js';
import { CHAOS_EVENTS, type ActiveEvent, type ChaosEvent, vpath, World, type WorldDoc } from './world.js';

type HttpResult = Replies['HTTP'];
type ExecResult = Replies['EXEC'];

/** What the service needs of the agents (kernel.ts wires the agents service and the sandbox in). */
export interface WorldDeps {
  dbPath: string;
  durability: 'normal' | 'full';
  /** Live agents: id, identity and host pid. */
  agents(): { id: number; identity: string; pid: number }[];
  identityOf(id: number): string | undefined;
  /** Whether `caller` may act on agent `id` (operators; an agent on its descendants): KILL's rule. */
  mayControl(caller: Caller, id: number): boolean;
  publish(type: KernelEventType, data: Record<string, unknown>, source: number): void;
  /**
   * Lowers an agent's cgroup memory/CPU for resource_pressure; returns the undo, or undefined when the
   * agent has no cgroup to lower (its world calls are slowed instead).
   */
  pressure?(id: number, p: { memoryHighBytes: number; cpuPercent: number }): (() => void) | undefined;
  log: Logger;
}

/** Bytes of recorded responses a world keeps (the oldest go first). */
const MAX_RECORDED_BYTES = 8 * 1024 * 1024;
/** Extra latency of each world call of a member under resource_pressure without a cgroup. */
const PRESSURE_SLOWDOWN_MS = 200;

/** Which events a WORLD_EVENT may inject, and their defaults. */
const DEFAULTS: Record<ChaosEvent, Record<string, number>> = {
  disk_full: { probability: 1 },
  disk_fail: { probability: 1 },
  network_partition: { probability: 1 },
  slow_io: { latency_ms: 1000, probability: 1 },
  latency_spike: { latency_ms: 500, probability: 1 },
  packet_loss: { probability: 0.3 },
  agent_crash: { count: 1 },
  resource_pressure: {
    memory_high_bytes: 64 * 1024 * 1024,
    cpu_max_percent: 10,
    latency_ms: PRESSURE_SLOWDOWN_MS,
  },
};

/** The world id of a name (reference §3.11): lower-cased, `[a-z0-9_-]`, spaces → `-`, ≤ 32, `-NNNN`. */
function idBase(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/ /g, '-')
    .replace(/[^a-z0-9_-]/g, '')
    .slice(0, 32);
  return s || 'world';
}

/** Who created a world, as stored: an agent's identity, `operator`, or one client connection. */
function creatorOf(caller: Caller): string {
  if (caller.role === 'operator') return 'operator';
  if (caller.role === 'agent') return `agent:${caller.identity ?? caller.name}`;
  return `client:${caller.id}`;
}

/** Sleeps `ms` on a timer (never blocking the loop); rejects nothing: an abort just ends the wait. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function num(p: Record<string, unknown>, k: string, d: number, min: number, max: number): number {
  const v = p[k];
  if (v === undefined) return d;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)
    throw new InvalidRequestError(
      `invalid request: field 'params.${k}' must be a number from ${min} to ${max}`,
    );
  return v;
}

const READ_FILLER = { content: '', size: 0 };
const WRITE_FILLER = { bytes_written: 0 };
const EXEC_FILLER = { stdout: '', stderr: '', exit_code: -1 };

export class WorldService {
  private readonly worlds = new Map<string, World>();
  /** identity → world id. */
  private readonly members = new Map<string, string>();
  private readonly db: Database.Database;
  private counter = 0;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Undo of a resource_pressure event's cgroup changes, and the ids it slows instead: event id → … */
  private readonly pressures = new Map<number, { undo: (() => void)[]; slowed: Set<number> }>();
  private readonly dirty = new Set<string>();
  private flushTimer?: NodeJS.Timeout;
  private readonly q: Record<string, Database.Statement>;

  constructor(private readonly d: WorldDeps) {
    this.db = openDatabase(d.dbPath, d.durability);
    this.db.exec(`CREATE TABLE IF NOT EXISTS worlds (id TEXT PRIMARY KEY, doc TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS world_members (identity TEXT PRIMARY KEY, world_id TEXT NOT NULL);`);
    this.q = {
      save: this.db.prepare('INSERT OR REPLACE INTO worlds (id, doc) VALUES (?, ?)'),
      drop: this.db.prepare('DELETE FROM worlds WHERE id = ?'),
      join: this.db.prepare('INSERT OR REPLACE INTO world_members (identity, world_id) VALUES (?, ?)'),
      leave: this.db.prepare('DELETE FROM world_members WHERE identity = ?'),
      leaveAll: this.db.prepare('DELETE FROM world_members WHERE world_id = ?'),
    };
    for (const row of this.db.prepare('SELECT doc FROM worlds').all() as { doc: string }[]) {
      try {
        const w = new World(JSON.parse(row.doc) as WorldDoc);
        this.worlds.set(w.id, w);
        this.counter = Math.max(this.counter, Number(/-(\d+)$/.exec(w.id)?.[1] ?? 0));
        this.rearm(w);
      } catch (e) {
        d.log.error({ err: (e as Error).message }, 'cannot load a stored world; it is left out');
      }
    }
    for (const r of this.db.prepare('SELECT identity, world_id FROM world_members').all() as {
      identity: string;
      world_id: string;
    }[])
      if (this.worlds.has(r.world_id)) this.members.set(r.identity, r.world_id);
  }

  // ---- membership ----

  /** The world an agent is in (by its identity), if any. */
  of(agentId: number): World | undefined {
    if (this.members.size === 0) return undefined;
    const identity = this.d.identityOf(agentId);
    const id = identity ? this.members.get(identity) : undefined;
    return id ? this.worlds.get(id) : undefined;
  }

  /** Live agent ids of a world's members. */
  memberIds(w: World): number[] {
    return this.d
      .agents()
      .filter((a) => this.members.get(a.identity) === w.id)
      .map((a) => a.id)
      .sort((a, b) => a - b);
  }

  private memberIdentities(w: World): string[] {
    return [...this.members].filter(([, id]) => id === w.id).map(([i]) => i);
  }

  private get(worldId: string | undefined): World {
    if (!worldId) throw new InvalidRequestError('world_id required');
    const w = this.worlds.get(worldId);
    if (!w) throw new NotFoundError(`World not found: ${worldId}`);
    return w;
  }

  /** Operators and the world's creator may destroy it, inject chaos, snapshot it (hole 20). */
  private mayManage(caller: Caller, w: World, what: string): void {
    if (caller.role === 'operator' || creatorOf(caller) === w.creator) return;
    throw new PermissionDeniedError(
      `Permission denied: only an operator or the world's creator may ${what} world ${w.id}`,
    );
  }

  /** Puts an identity in a world (a SPAWN `world`, WORLD_JOIN). */
  place(identity: string, worldId: string): void {
    const w = this.get(worldId);
    const cur = this.members.get(identity);
    if (cur && cur !== w.id) throw new InvalidStateError(`already in world ${cur}; WORLD_LEAVE first`);
    this.members.set(identity, w.id);
    this.q.join.run(identity, w.id);
  }

  /** Checks a SPAWN `world` before the agent starts (the world must exist). */
  check(worldId: string): void {
    this.get(worldId);
  }

  /** An agent's identity ended (it exited for good): it leaves its world. */
  identityEnded(identity: string): void {
    if (!this.members.delete(identity)) return;
    this.q.leave.run(identity);
  }

  // ---- the syscalls ----

  create(caller: Caller, req: ArgsOf['WORLD_CREATE']): Replies['WORLD_CREATE'] {
    const config: WorldConfig = req.config ?? {};
    const name = config.name ?? req.name ?? 'unnamed';
    const id = `${idBase(name)}-${String(++this.counter).padStart(4, '0')}`;
    const seed = config.seed ?? crypto.randomInt(0, 2 ** 32 - 1);
    const doc = World.fresh(id, creatorOf(caller), { ...config, name }, seed, Date.now());
    const w = new World(doc);
    this.worlds.set(id, w);
    this.save(w);
    this.d.log.info({ world: id, by: caller.id }, 'world created');
    return { success: true, world_id: id, name, seed };
  }

  destroy(caller: Caller, req: ArgsOf['WORLD_DESTROY']): Replies['WORLD_DESTROY'] {
    const w = this.get(req.world_id);
    this.mayManage(caller, w, 'destroy');
    const ids = this.memberIdentities(w);
    if (ids.length && !req.force)
      throw new InvalidStateError(`world ${w.id} has ${ids.length} member(s); use force to destroy it`, {
        members: this.memberIds(w),
      });
    for (const e of [...w.activeEvents]) this.endEvent(w, e, 'cleared');
    for (const i of ids) this.members.delete(i);
    this.db.transaction(() => {
      this.q.leaveAll.run(w.id);
      this.q.drop.run(w.id);
    })();
    this.worlds.delete(w.id);
    this.dirty.delete(w.id);
    this.d.log.info({ world: w.id, by: caller.id }, 'world destroyed');
    return { success: true, world_id: w.id, members_removed: ids.length };
  }

  list(): Replies['WORLD_LIST'] {
    const worlds = [...this.worlds.values()].map((w) => ({
      id: w.id,
      name: w.name,
      description: w.description,
      creator: w.creator,
      agent_count: this.memberIds(w).length,
      syscall_count: w.counters.syscall_count,
      vfs_enabled: w.vfsEnabled,
      network_mock_enabled: w.networkMode !== 'passthrough' || w.mockCount > 0,
      chaos_enabled: w.chaosEnabled,
      seed: w.seed,
    }));
    return { success: true, worlds, count: worlds.length };
  }

  join(caller: Caller, req: ArgsOf['WORLD_JOIN']): Replies['WORLD_JOIN'] {
    const w = this.get(req.world_id);
    const agentId = this.subject(caller, req.agent_id);
    const identity = this.d.identityOf(agentId);
    if (!identity) throw new NotFoundError(`agent not found: ${agentId}`);
    this.place(identity, w.id);
    return { success: true, world_id: w.id, agent_id: agentId };
  }

  leave(caller: Caller, req: ArgsOf['WORLD_LEAVE']): Replies['WORLD_LEAVE'] {
    const agentId = this.subject(caller, req.agent_id);
    const identity = this.d.identityOf(agentId);
    const wid = identity ? this.members.get(identity) : undefined;
    if (!identity || !wid) throw new InvalidStateError('Not in any world');
    this.identityEnded(identity);
    return { success: true, world_id: wid };
  }

  /** The agent a JOIN/LEAVE is about: the caller, or (operators only) `agent_id`. */
  private subject(caller: Caller, agentId: number | undefined): number {
    if (agentId !== undefined && agentId !== caller.id) {
      if (caller.role !== 'operator')
        throw new PermissionDeniedError('Permission denied: only an operator may move another agent');
      return agentId;
    }
    if (caller.role !== 'agent')
      throw new InvalidRequestError('invalid request: only agents are in worlds (operators name agent_id)');
    return caller.id;
  }

  state(req: ArgsOf['WORLD_STATE']): Replies['WORLD_STATE'] {
    const w = this.get(req.world_id);
    const members = this.memberIds(w);
    return {
      success: true,
      state: {
        ...w.metrics(members),
        members: this.memberIdentities(w).map((identity) => ({
          identity,
          agent_id: this.d.agents().find((a) => a.identity === identity)?.id ?? null,
        })),
      },
    };
  }

  event(caller: Caller, req: ArgsOf['WORLD_EVENT']): Replies['WORLD_EVENT'] {
    const w = this.get(req.world_id);
    if (!req.event_type) throw new InvalidRequestError('event_type required');
    this.mayManage(caller, w, 'inject chaos into');
    const type = req.event_type;
    const params = { ...(req.params ?? {}) };
    if (type === 'clear' || req.clear) {
      if (type !== 'clear' && !(CHAOS_EVENTS as readonly string[]).includes(type))
        throw new InvalidRequestError(`invalid request: unknown chaos event ${type}`);
      const gone = w.activeEvents.filter(
        (e) =>
          (type === 'clear' || e.type === type) &&
          (params.event_id === undefined || e.id === params.event_id),
      );
      for (const e of gone) this.endEvent(w, e, 'cleared');
      this.save(w);
      return { success: true, world_id: w.id, event_type: type, event_id: 0, cleared: gone.length };
    }
    if (!(CHAOS_EVENTS as readonly string[]).includes(type))
      throw new InvalidRequestError(
        `invalid request: unknown chaos event ${type} (one of ${CHAOS_EVENTS.join(', ')}, clear)`,
      );
    const t = type as ChaosEvent;
    const p: Record<string, unknown> = { ...DEFAULTS[t], ...params };
    num(p, 'probability', 1, 0, 1);
    num(p, 'latency_ms', 0, 0, 600_000);
    const duration = num(p, 'duration_ms', 0, 0, 7 * 24 * 3600_000);
    const members = this.memberIds(w);
    if (t === 'agent_crash') return this.crash(caller, w, p, members);
    const now = Date.now();
    const e: ActiveEvent = {
      id: w.nextEventId++,
      type: t,
      params: p,
      started_at: now,
      expires_at: duration > 0 ? now + duration : null,
    };
    w.activeEvents.push(e);
    let applied: { agent_id: number; how: 'cgroup' | 'slowed' }[] | undefined;
    if (t === 'resource_pressure') {
      const mem = num(p, 'memory_high_bytes', 0, 4 * 1024 * 1024, 2 ** 50);
      const cpu = num(p, 'cpu_max_percent', 0, 1, 100);
      const undo: (() => void)[] = [];
      const slowed = new Set<number>();
      applied = [];
      for (const id of members) {
        // As agent_crash: a creator that is not an operator presses only its own descendants.
        if (!this.d.mayControl(caller, id)) continue;
        let u: (() => void) | undefined;
        try {
          u = this.d.pressure?.(id, { memoryHighBytes: mem, cpuPercent: cpu });
        } catch (err) {
          this.d.log.warn({ world: w.id, agent: id, err: (err as Error).message }, 'cannot lower the cgroup');
        }
        if (u) undo.push(u);
        else slowed.add(id);
        applied.push({ agent_id: id, how: u ? 'cgroup' : 'slowed' });
      }
      this.pressures.set(e.id, { undo, slowed });
    }
    this.arm(w, e);
    this.save(w);
    this.announce(w, e, 'started', members);
    return {
      success: true,
      world_id: w.id,
      event_type: t,
      event_id: e.id,
      ...(e.expires_at ? { expires_at: e.expires_at } : {}),
      ...(applied ? { applied } : {}),
    };
  }

  /** agent_crash: SIGKILL of `target` or of `count` members drawn from the world's PRNG. */
  private crash(
    caller: Caller,
    w: World,
    p: Record<string, unknown>,
    members: number[],
  ): Replies['WORLD_EVENT'] {
    const live = this.d.agents().filter((a) => members.includes(a.id) && a.pid > 0);
    let victims: typeof live;
    if (p.target !== undefined) {
      const v = live.find((a) => a.id === p.target);
      if (!v)
        throw new InvalidRequestError(`invalid request: agent ${String(p.target)} is not a running member`);
      if (!this.d.mayControl(caller, v.id))
        throw new PermissionDeniedError(
          `Permission denied: agent_crash of agent ${v.id}, which is not yours`,
        );
      victims = [v];
    } else {
      // A creator that is not an operator crashes only its own descendants (KILL's rule).
      const pool = live.filter((a) => this.d.mayControl(caller, a.id));
      const n = Math.min(num(p, 'count', 1, 1, 1000), pool.length);
      victims = [];
      for (let i = 0; i < n; i++) victims.push(pool.splice(w.between(0, pool.length - 1), 1)[0]);
    }
    if (!victims.length) throw new InvalidStateError(`world ${w.id} has no running member to crash`);
    const e: ActiveEvent = {
      id: w.nextEventId++,
      type: 'agent_crash',
      params: p,
      started_at: Date.now(),
      expires_at: null,
    };
    for (const v of victims) {
      try {
        process.kill(v.pid, 'SIGKILL');
      } catch (err) {
        this.d.log.warn(
          { world: w.id, agent: v.id, err: (err as Error).message },
          'agent_crash: kill failed',
        );
      }
    }
    w.counters.failures_injected += victims.length;
    this.save(w);
    this.announce(w, e, 'struck', members, { affected: victims.map((v) => v.id) });
    return {
      success: true,
      world_id: w.id,
      event_type: 'agent_crash',
      event_id: 0,
      affected: victims.map((v) => v.id),
    };
  }

  private announce(
    w: World,
    e: ActiveEvent,
    phase: string,
    members = this.memberIds(w),
    extra: Record<string, unknown> = {},
  ): void {
    this.d.publish(
      'WORLD_CHAOS',
      { world_id: w.id, event_type: e.type, event_id: e.id, phase, params: e.params, members, ...extra },
      0,
    );
  }

  /** The timer that ends a lasting event at its expiry (unref'd: never keeps the kernel up). */
  private arm(w: World, e: ActiveEvent): void {
    if (e.expires_at === null) return;
    const t = setTimeout(
      () => {
        this.endEvent(w, e, 'expired');
        this.save(w);
      },
      Math.max(0, e.expires_at - Date.now()),
    );
    t.unref();
    this.timers.set(`${w.id}/${e.id}`, t);
  }

  /** A loaded world's lasting events: timers again (pressure is not re-applied after a restart). */
  private rearm(w: World): void {
    for (const e of w.activeEvents) this.arm(w, e);
  }

  private endEvent(w: World, e: ActiveEvent, phase: 'expired' | 'cleared'): void {
    const i = w.activeEvents.indexOf(e);
    if (i < 0) return;
    w.activeEvents.splice(i, 1);
    clearTimeout(this.timers.get(`${w.id}/${e.id}`));
    this.timers.delete(`${w.id}/${e.id}`);
    const pr = this.pressures.get(e.id);
    if (pr) {
      for (const u of pr.undo) {
        try {
          u();
        } catch (err) {
          this.d.log.warn({ world: w.id, err: (err as Error).message }, 'cannot restore a cgroup');
        }
      }
      this.pressures.delete(e.id);
    }
    this.announce(w, e, phase);
  }

  snapshot(caller: Caller, req: ArgsOf['WORLD_SNAPSHOT']): Replies['WORLD_SNAPSHOT'] {
    const w = this.get(req.world_id);
    this.mayManage(caller, w, 'snapshot');
    const doc = w.doc();
    const c = w.config;
    const files: Record<string, Record<string, unknown>> = {};
    for (const [p, f] of Object.entries(doc.files)) {
      const bytes = Buffer.from(f.content, 'base64');
      files[p] = {
        content: isUtf8(bytes) ? bytes.toString('utf8') : f.content,
        ...(isUtf8(bytes) ? {} : { encoding: 'base64' }),
        mode: f.mode,
        created_at: f.created_at,
        modified_at: f.modified_at,
      };
    }
    const members = this.memberIdentities(w);
    const live = this.d.agents();
    return {
      success: true,
      snapshot: {
        version: 1,
        id: w.id,
        name: w.name,
        description: w.description,
        config: c,
        vfs: {
          files,
          readonly_patterns: c.virtual_filesystem?.readonly_patterns ?? [],
          writable_patterns: c.virtual_filesystem?.writable_patterns ?? [],
          intercept_patterns: c.virtual_filesystem?.intercept_patterns ?? [],
        },
        network: {
          mode: w.networkMode,
          fail_unmatched: c.network?.fail_unmatched ?? false,
          mock_responses: c.network?.mock_responses ?? {},
          ...(c.network?.default_response ? { default_response: c.network.default_response } : {}),
          allowed_domains: c.network?.allowed_domains ?? [],
          recorded: doc.recorded,
        },
        chaos: {
          enabled: w.chaosEnabled,
          failure_rate: c.chaos?.failure_rate ?? 0,
          latency: { min_ms: c.chaos?.latency?.min_ms ?? 0, max_ms: c.chaos?.latency?.max_ms ?? 0 },
          rules: w.rules.map((r) => ({ type: r.type, pattern: r.pattern, probability: r.probability })),
          active_events: doc.active_events,
          next_event_id: doc.next_event_id,
          seed: doc.seed,
          rng_state: doc.rng_state,
        },
        counters: doc.counters,
        agents: this.memberIds(w),
        members: members.map((identity) => ({
          identity,
          agent_id: live.find((a) => a.identity === identity)?.id ?? null,
        })),
        snapshot_time: Date.now(),
      },
    };
  }

  restore(caller: Caller, req: ArgsOf['WORLD_RESTORE']): Replies['WORLD_RESTORE'] {
    const s = req.snapshot as Record<string, unknown> | undefined;
    if (!s || Object.keys(s).length === 0) throw new InvalidRequestError('snapshot required');
    const config = (s.config ?? {}) as WorldConfig;
    validateDef('WorldConfig', config, 'snapshot.config');
    const name = String(s.name ?? 'restored');
    let id = req.new_world_id;
    if (id) {
      if (!/^[a-z0-9_-]{1,64}$/.test(id))
        throw new InvalidRequestError("invalid request: field 'new_world_id' must match ^[a-z0-9_-]{1,64}$");
      if (this.worlds.has(id)) throw new InvalidStateError(`world ${id} exists`);
    } else id = `${idBase(name)}-${String(++this.counter).padStart(4, '0')}`;
    const chaos = (s.chaos ?? {}) as Record<string, unknown>;
    const vfs = (s.vfs ?? {}) as { files?: Record<string, Record<string, unknown>> };
    const net = (s.network ?? {}) as { recorded?: unknown };
    const seed = Number.isInteger(chaos.seed) ? (chaos.seed as number) : (config.seed ?? 0);
    const doc = World.fresh(id, creatorOf(caller), { ...config, name }, seed, Date.now());
    doc.files = {};
    const limits = new World(doc).limits;
    let total = 0;
    for (const [p, f] of Object.entries(vfs.files ?? {})) {
      if (typeof f?.content !== 'string')
        throw new InvalidRequestError(`invalid request: snapshot file ${p} has no content`);
      const bytes = Buffer.from(f.content, f.encoding === 'base64' ? 'base64' : 'utf8');
      total += bytes.length;
      if (bytes.length > limits.max_file_bytes || total > limits.max_total_bytes)
        throw new InvalidRequestError(`invalid request: snapshot files exceed the world's limits (${p})`);
      doc.files[vpath(p)] = {
        content: bytes.toString('base64'),
        mode: f.mode === 'r' ? 'r' : 'rw',
        created_at: Number(f.created_at ?? Date.now()),
        modified_at: Number(f.modified_at ?? Date.now()),
      };
    }
    if (Object.keys(doc.files).length > limits.max_files)
      throw new InvalidRequestError("invalid request: snapshot files exceed the world's max_files");
    if (Array.isArray(net.recorded))
      doc.recorded = (net.recorded as Record<string, unknown>[])
        .filter((r) => r && typeof r.url === 'string')
        .map((r) => ({
          method: String(r.method ?? 'GET'),
          url: String(r.url),
          status: Number(r.status ?? 200),
          body: String(r.body ?? ''),
          headers: (r.headers ?? {}) as Record<string, string>,
          ...(r.body_encoding === 'base64' ? { body_encoding: 'base64' as const } : {}),
        }));
    if (Array.isArray(chaos.rng_state) && chaos.rng_state.every((n) => Number.isInteger(n)))
      doc.rng_state = chaos.rng_state as number[];
    const now = Date.now();
    if (Array.isArray(chaos.active_events))
      doc.active_events = (chaos.active_events as Record<string, unknown>[])
        .filter(
          (e) =>
            e && (CHAOS_EVENTS as readonly string[]).includes(String(e.type)) && e.type !== 'agent_crash',
        )
        .filter((e) => e.expires_at == null || Number(e.expires_at) > now)
        .map((e, i) => ({
          id: Number(e.id ?? i + 1),
          type: e.type as ChaosEvent,
          params: (e.params ?? {}) as Record<string, unknown>,
          started_at: Number(e.started_at ?? now),
          expires_at: e.expires_at == null ? null : Number(e.expires_at),
        }));
    doc.next_event_id = Math.max(
      Number(chaos.next_event_id ?? 1),
      ...doc.active_events.map((e) => e.id + 1),
      1,
    );
    if (s.counters && typeof s.counters === 'object')
      doc.counters = { ...doc.counters, ...(s.counters as object) };
    const w = new World(doc);
    // Members come back only if they exist now and are in no other world; only an operator brings back
    // agents other than itself (never ghosts, never another agent moved by a non-operator).
    const live = this.d.agents();
    const restored: number[] = [];
    const dropped: string[] = [];
    const listed = Array.isArray(s.members)
      ? (s.members as { identity?: string; agent_id?: number }[]).map((m) => ({
          identity: m.identity,
          id: m.agent_id,
        }))
      : Array.isArray(s.agents)
        ? (s.agents as number[]).map((id) => ({ identity: undefined, id }))
        : [];
    const take: string[] = [];
    for (const m of listed) {
      const a = m.identity ? live.find((x) => x.identity === m.identity) : live.find((x) => x.id === m.id);
      const label = m.identity ?? `#${String(m.id)}`;
      const allowed = caller.role === 'operator' || (a && a.id === caller.id);
      if (!a || !allowed || this.members.has(a.identity)) dropped.push(label);
      else {
        take.push(a.identity);
        restored.push(a.id);
      }
    }
    this.worlds.set(w.id, w);
    this.save(w);
    for (const i of take) this.place(i, w.id);
    this.rearm(w);
    this.d.log.info({ world: w.id, by: caller.id, members: restored }, 'world restored');
    return { success: true, world_id: w.id, members_restored: restored, members_dropped: dropped };
  }

  // ---- a member's calls ----

  /** Latency and failure of the active events and of resource pressure for one call. */
  private async slow(w: World, agentId: number, kinds: ChaosEvent[], signal?: AbortSignal): Promise<void> {
    let ms = 0;
    for (const e of w.activeEvents) {
      if (kinds.includes(e.type) && w.chance(Number(e.params.probability ?? 1)))
        ms += Number(e.params.latency_ms ?? 0);
      if (e.type === 'resource_pressure' && this.pressures.get(e.id)?.slowed.has(agentId))
        ms += Number(e.params.latency_ms ?? PRESSURE_SLOWDOWN_MS);
    }
    if (ms > 0) {
      w.counters.latency_injected += ms;
      await sleep(ms, signal);
    }
  }

  private struck(w: World, e: ChaosEvent): boolean {
    return w.active(e).some((x) => w.chance(Number(x.params.probability ?? 1)));
  }

  private touch(w: World): void {
    w.counters.syscall_count++;
    this.later(w);
  }

  /** READ of a member: chaos first (every path), then the VFS for a path it serves; else undefined. */
  async read(
    caller: Caller,
    req: ArgsOf['READ'],
    signal?: AbortSignal,
  ): Promise<Replies['READ'] | undefined> {
    const w = this.of(caller.id);
    if (!w) return undefined;
    if (!req.path) throw new InvalidRequestError('path required', READ_FILLER);
    const p = vpath(req.path);
    const F = { ...READ_FILLER, world: w.id };
    this.touch(w);
    await this.slow(w, caller.id, ['slow_io'], signal);
    if (this.struck(w, 'disk_fail') || w.ruleStrikes('file_read_fail', p) || w.randomFailure()) {
      w.counters.failures_injected++;
      throw new IoError(`${p}: Simulated read failure (chaos): input/output error`, {
        ...F,
        errno: 'EIO',
        chaos: true,
      });
    }
    if (!w.intercepts(p)) return undefined;
    const f = w.files.get(p);
    if (!f) throw new NotFoundError(`not found: ${p} (File not found in virtual filesystem)`, F);
    const start = Math.min(req.offset ?? 0, f.content.length);
    const end = req.length === undefined ? f.content.length : Math.min(f.content.length, start + req.length);
    const data = f.content.subarray(start, end);
    if (data.length > req.max_bytes)
      throw new TooLargeError(
        `file too large: ${p} (${f.content.length} bytes; max_bytes ${req.max_bytes})`,
        {
          ...F,
          file_size: f.content.length,
          limit: req.max_bytes,
        },
      );
    w.counters.read_count++;
    w.counters.bytes_read += data.length;
    const base = {
      success: true as const,
      size: data.length,
      file_size: f.content.length,
      world: w.id,
      virtual: true,
    };
    if (req.encoding === 'auto' && isUtf8(data)) return { ...base, content: data.toString('utf8') };
    return { ...base, content: data.toString('base64'), encoding: 'base64' as const };
  }

  /** WRITE of a member: chaos first (every path), then the VFS for a path it serves; else undefined. */
  async write(
    caller: Caller,
    req: ArgsOf['WRITE'],
    signal?: AbortSignal,
  ): Promise<Replies['WRITE'] | undefined> {
    const w = this.of(caller.id);
    if (!w) return undefined;
    if (!req.path) throw new InvalidRequestError('path required', WRITE_FILLER);
    const p = vpath(req.path);
    const F = { ...WRITE_FILLER, world: w.id };
    this.touch(w);
    await this.slow(w, caller.id, ['slow_io'], signal);
    if (this.struck(w, 'disk_full')) {
      w.counters.failures_injected++;
      throw new IoError(`${p}: no space left on device (chaos: disk_full)`, {
        ...F,
        errno: 'ENOSPC',
        chaos: true,
      });
    }
    if (this.struck(w, 'disk_fail') || w.ruleStrikes('file_write_fail', p) || w.randomFailure()) {
      w.counters.failures_injected++;
      throw new IoError(`${p}: Simulated write failure (chaos): input/output error`, {
        ...F,
        errno: 'EIO',
        chaos: true,
      });
    }
    if (!w.intercepts(p)) return undefined;
    if (req.path.endsWith('/') || p === '/')
      throw new InvalidRequestError('invalid request: path names a directory', F);
    const old = w.files.get(p);
    const refusal = w.writeRefusal(p, old !== undefined);
    if (refusal) {
      if (old || !refusal.includes('writable_patterns'))
        throw new IoError(`${p}: read-only file system (${refusal})`, { ...F, errno: 'EROFS' });
      throw new PermissionDeniedError(`Permission denied: ${refusal}`, F);
    }
    let data: Buffer;
    if (req.encoding === 'base64') {
      if (req.content.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(req.content))
        throw new InvalidRequestError('invalid request: content is not valid base64', F);
      data = Buffer.from(req.content, 'base64');
    } else data = Buffer.from(req.content, 'utf8');
    const next = req.mode === 'append' && old ? Buffer.concat([old.content, data]) : data;
    if (next.length > w.limits.max_file_bytes)
      throw new IoError(
        `${p}: file too large (${next.length} bytes; world limit ${w.limits.max_file_bytes})`,
        {
          ...F,
          errno: 'EFBIG',
        },
      );
    if (!old && w.files.size >= w.limits.max_files)
      throw new IoError(`${p}: no space left on device (world limit of ${w.limits.max_files} files)`, {
        ...F,
        errno: 'ENOSPC',
      });
    if (w.totalBytes() - (old?.content.length ?? 0) + next.length > w.limits.max_total_bytes)
      throw new IoError(`${p}: no space left on device (world limit of ${w.limits.max_total_bytes} bytes)`, {
        ...F,
        errno: 'ENOSPC',
      });
    const now = Date.now();
    w.files.set(p, {
      content: next,
      mode: old?.mode ?? 'rw',
      created_at: old?.created_at ?? now,
      modified_at: now,
    });
    w.counters.write_count++;
    w.counters.bytes_written += data.length;
    this.save(w);
    return { success: true, bytes_written: data.length, created: !old, world: w.id, virtual: true };
  }

  /**
   * HTTP of a member: chaos (partition, loss, latency), then a mock rule, a recording (mock mode), or the
   * real request through `real` — the http family's own client under the caller's own HTTP rights.
   */
  async http(
    caller: Caller,
    req: ArgsOf['HTTP'],
    real: () => Promise<HttpResult>,
    signal?: AbortSignal,
  ): Promise<HttpResult | undefined> {
    const w = this.of(caller.id);
    if (!w) return undefined;
    if (!req.url) throw new InvalidRequestError('URL required');
    let u: URL;
    try {
      u = new URL(req.url);
    } catch {
      throw new InvalidRequestError(`invalid request: not a URL: ${req.url}`);
    }
    const url = u.href;
    const method = (req.method ?? 'GET').toUpperCase();
    this.touch(w);
    const fail = (failure: 'connect' | 'timeout', why: string): HttpResult => {
      w.counters.failures_injected++;
      w.counters.requests_failed++;
      return {
        success: false,
        error: `HTTP request to ${u.host} failed: ${why}`,
        code: 'upstream_failed',
        failure,
        status_code: 0,
        body: '',
        final_url: url,
        redirects: 0,
        world: w.id,
        chaos: true,
      } as HttpResult;
    };
    await this.slow(w, caller.id, ['slow_io', 'latency_spike'], signal);
    const extra = w.configLatency();
    if (this.struck(w, 'network_partition'))
      return fail('connect', 'Simulated network failure (chaos: network_partition): network unreachable');
    if (this.struck(w, 'packet_loss'))
      return fail('timeout', 'Simulated packet loss (chaos: packet_loss): timed out');
    if (w.ruleStrikes('network_timeout', url))
      return fail('timeout', 'Simulated timeout (chaos: network_timeout)');
    if (w.ruleStrikes('network_fail', url) || w.randomFailure())
      return fail('connect', 'Simulated network failure (chaos)');
    const mocked = (
      r: {
        status: number;
        body: string;
        headers: Record<string, string>;
        latency_ms?: number;
        body_encoding?: 'utf8' | 'base64';
      },
      how: string,
    ) =>
      sleep((r.latency_ms ?? 0) + extra, signal).then((): HttpResult => {
        w.counters.requests_intercepted++;
        if (extra) w.counters.latency_injected += extra;
        return {
          success: true,
          status_code: r.status,
          ok: r.status >= 200 && r.status < 300,
          headers: Object.fromEntries(Object.entries(r.headers).map(([k, v]) => [k.toLowerCase(), v])),
          body: r.body,
          ...(r.body_encoding === 'base64' ? { body_encoding: 'base64' as const } : {}),
          final_url: url,
          redirects: 0,
          world: w.id,
          mocked: true,
          source: how,
        } as HttpResult;
      });
    const rule = w.mockFor(url);
    if (rule) return mocked(rule, 'mock');
    const mode = w.networkMode;
    if (mode === 'mock' && !w.allowedThrough(url)) {
      const rec = w.recordingFor(method, url);
      if (rec) return mocked(rec, 'recording');
      return mocked(w.unmatched(url), 'default');
    }
    await sleep(extra, signal);
    const r = await real();
    w.counters.requests_passed_through++;
    if (!r.success) w.counters.requests_failed++;
    if (mode === 'record' && r.success && !r.truncated) {
      w.recorded.push({
        method,
        url,
        status: r.status_code,
        body: r.body,
        headers: r.headers ?? {},
        ...(r.body_encoding === 'base64' ? { body_encoding: 'base64' as const } : {}),
      });
      let bytes = w.recorded.reduce((n, x) => n + x.body.length, 0);
      while (bytes > MAX_RECORDED_BYTES && w.recorded.length > 1) bytes -= w.recorded.shift()!.body.length;
      this.save(w);
    }
    return { ...r, world: w.id, recorded: mode === 'record' } as HttpResult;
  }

  /** EXEC of a member: chaos, then a mock by command pattern, else the real EXEC or a refusal. */
  async exec(
    caller: Caller,
    req: ArgsOf['EXEC'],
    real: () => Promise<ExecResult>,
    signal?: AbortSignal,
  ): Promise<ExecResult | undefined> {
    const w = this.of(caller.id);
    if (!w) return undefined;
    const command = req.command ?? req.argv?.join(' ');
    if (!command) throw new InvalidRequestError('command required', EXEC_FILLER);
    this.touch(w);
    await this.slow(w, caller.id, ['slow_io'], signal);
    if (w.ruleStrikes('exec_fail', command) || w.randomFailure()) {
      w.counters.failures_injected++;
      return {
        success: false,
        stdout: '',
        stderr: 'Simulated command failure (chaos)\n',
        output: 'Simulated command failure (chaos)\n',
        exit_code: 1,
        duration_ms: 0,
        world: w.id,
        chaos: true,
      } as ExecResult;
    }
    const m = w.execMockFor(command);
    if (m) {
      await sleep(m.latency_ms, signal);
      w.counters.exec_mocked++;
      return {
        success: m.exit_code === 0,
        stdout: m.stdout,
        stderr: m.stderr,
        output: m.stdout + m.stderr,
        exit_code: m.exit_code,
        duration_ms: m.latency_ms,
        world: w.id,
        mocked: true,
      } as ExecResult;
    }
    if (w.execUnmatched === 'refuse')
      throw new PermissionDeniedError(
        `Permission denied: command not mocked in world ${w.id} (exec.unmatched: refuse): ${command.slice(0, 200)}`,
        EXEC_FILLER,
      );
    w.counters.exec_passed_through++;
    const r = await real();
    return { ...r, world: w.id } as ExecResult;
  }

  // ---- persistence ----

  /** Writes a world now (its files, recordings, events changed). */
  private save(w: World): void {
    this.dirty.delete(w.id);
    this.q.save.run(w.id, JSON.stringify(w.doc()));
  }

  /** Counters and the PRNG's state are written within a second, not on every call. */
  private later(w: World): void {
    this.dirty.add(w.id);
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => this.flush(), 1000);
    this.flushTimer.unref();
  }

  private flush(): void {
    this.flushTimer = undefined;
    for (const id of [...this.dirty]) {
      const w = this.worlds.get(id);
      if (w) this.save(w);
    }
    this.dirty.clear();
  }

  close(): void {
    clearTimeout(this.flushTimer);
    try {
      this.flush();
    } catch (e) {
      this.d.log.error({ err: (e as Error).message }, 'cannot save the worlds');
    }
    for (const t of this.timers.values()) clearTimeout(t);
    for (const p of this.pressures.values()) for (const u of p.undo) u();
    this.db.close();
  }
}
