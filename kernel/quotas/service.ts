/**
 * Resource quotas (docs/protocol.md "Quotas"): limits per agent identity (`<name>#<serial>`) and per
 * clove.yaml service (the agents labelled `clove.project` + `clove.service`), usage counted by the
 * kernel — never reported by the agent — and enforced once per crossing: QUOTA_EXCEEDED is published,
 * a RESOURCE audit entry written, then the policy applied (deny: later calls of that kind fail with
 * quota_exceeded; pause: paused like PAUSE; kill: killed for good like KILL).
 *
 * Counted here: llm_calls/llm_tokens (the LLM service charges provider-reported usage), network_bytes
 * (the HTTP family), exec_count (the EXEC family, at admission), mcp_calls (the MCP family, at
 * admission), cpu_time and memory (a 1 s sampler over each agent's cgroup, else its main process),
 * wall_time (since the identity's first start). Limits,
 * counters and first starts live in `<data-dir>/state.db` (tables quota_limits, quota_usage), so they
 * survive agent restarts and kernel restarts; an identity that ends takes its rows with it.
 */
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type {
  AgentQuotaMetrics,
  AgentQuotas,
  QuotaLimit,
  QuotaMeter,
  QuotaPolicy,
  QuotaSet,
  QuotaState,
  QuotaUsage,
  ServiceQuotas,
  ServiceRef,
} from '../../protocol/index.js';
import type { AgentService } from '../agents/agents.js';
import type { AuditLog } from '../audit/log.js';
import type { Caller } from '../core/context.js';
import { InvalidRequestError, PermissionDeniedError, QuotaExceededError } from '../core/errors.js';
import type { KernelEventType } from '../events/bus.js';
import { openDatabase } from '../state/sqlite.js';
import type { AgentRecord } from '../supervisor/supervisor.js';

export const QUOTA_NAMES = [
  'memory',
  'cpu_time',
  'wall_time',
  'llm_calls',
  'llm_tokens',
  'network_bytes',
  'exec_count',
  'mcp_calls',
] as const;
export type QuotaName = (typeof QUOTA_NAMES)[number];

/** Quotas measured by the kernel (not admitted call by call): `deny` means nothing for them. */
const MEASURED: ReadonlySet<QuotaName> = new Set(['memory', 'cpu_time', 'wall_time']);
/** How strict a policy is: a child's quota may be as strict as its parent's or stricter, never looser. */
const STRICTNESS: Record<QuotaPolicy, number> = { deny: 0, pause: 1, kill: 2 };
/** Counters persisted per identity (memory is a current figure, wall_time derives from first_start). */
type Counter = 'cpu_time' | 'llm_calls' | 'llm_tokens' | 'network_bytes' | 'exec_count' | 'mcp_calls';

interface Limit {
  limit: number;
  policy: QuotaPolicy;
}
type Limits = Map<QuotaName, Limit>;

/** What the sampler reads of an agent: CPU (µs, of its current processes) and memory (bytes) now. */
export interface Sample {
  cpuUsec: number;
  memory: number;
  /** Where the CPU counter was read (a cgroup directory, or `pid:<pid>`): a new source is a new counter. */
  source: string;
}

export interface QuotaServiceOptions {
  dbPath: string;
  durability?: 'normal' | 'full';
  agents: AgentService;
  audit: AuditLog;
  publish(type: KernelEventType, data: Record<string, unknown>, source: number): number;
  /** Reads an agent's current CPU and memory (its cgroup, else its main process); undefined: unreadable. */
  sample(a: AgentRecord): Sample | undefined;
  log: Logger;
  /** Sampler period (default 1000 ms). */
  sampleMs?: number;
}

/** An identity's usage: persisted counters, plus what the sampler sees of its current process. */
interface Usage {
  counters: Record<Counter, number>;
  firstStart: number;
  /** CPU ms of processes of this identity that are gone (and of the kernel runs before this one). */
  cpuBase: number;
  /** CPU ms counted from the current counter, where it is read, and its last raw value (ms). */
  cpuCur: number;
  cpuSource: string | undefined;
  cpuRaw: number;
  memory: number;
}

const serviceKey = (s: ServiceRef): string => `${s.project}\u0000${s.service}`;
const serviceOfKey = (k: string): ServiceRef => {
  const [project, service] = k.split('\u0000');
  return { project, service };
};

/** An agent's service from its labels, if it is part of one. */
export function serviceOf(a: AgentRecord): ServiceRef | undefined {
  const labels = a.def.labels;
  const project = labels?.['clove.project'];
  const service = labels?.['clove.service'];
  return project && service ? { project, service } : undefined;
}

export class QuotaService {
  private readonly db: Database.Database;
  private readonly stmts: Record<string, Database.Statement>;
  /** Limits by scope: `a:<identity>` or `s:<project>\0<service>`. */
  private readonly limits = new Map<string, Limits>();
  private readonly usage = new Map<string, Usage>();
  /** Quotas at or over their limit, announced once: `<scope>|<name>`. */
  private readonly crossed = new Set<string>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly o: QuotaServiceOptions) {
    this.db = openDatabase(o.dbPath, o.durability);
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS quota_limits (
        scope TEXT NOT NULL, name TEXT NOT NULL, lim REAL NOT NULL, policy TEXT NOT NULL,
        PRIMARY KEY (scope, name));
      CREATE TABLE IF NOT EXISTS quota_usage (
        identity TEXT NOT NULL, name TEXT NOT NULL, used REAL NOT NULL,
        PRIMARY KEY (identity, name));`);
    this.stmts = {
      setLimit: this.db.prepare(
        'INSERT INTO quota_limits (scope, name, lim, policy) VALUES (?, ?, ?, ?) ON CONFLICT (scope, name) DO UPDATE SET lim = excluded.lim, policy = excluded.policy',
      ),
      delLimit: this.db.prepare('DELETE FROM quota_limits WHERE scope = ? AND name = ?'),
      delScope: this.db.prepare('DELETE FROM quota_limits WHERE scope = ?'),
      setUsed: this.db.prepare(
        'INSERT INTO quota_usage (identity, name, used) VALUES (?, ?, ?) ON CONFLICT (identity, name) DO UPDATE SET used = excluded.used',
      ),
      delUsage: this.db.prepare('DELETE FROM quota_usage WHERE identity = ?'),
    };
    for (const r of this.db.prepare('SELECT scope, name, lim, policy FROM quota_limits').all() as {
      scope: string;
      name: QuotaName;
      lim: number;
      policy: QuotaPolicy;
    }[]) {
      const m = this.limits.get(r.scope) ?? new Map<QuotaName, Limit>();
      m.set(r.name, { limit: r.lim, policy: r.policy });
      this.limits.set(r.scope, m);
    }
    for (const r of this.db.prepare('SELECT identity, name, used FROM quota_usage').all() as {
      identity: string;
      name: string;
      used: number;
    }[]) {
      const u = this.usageOf(r.identity, false);
      if (r.name === 'first_start') u.firstStart = r.used;
      else if (r.name === 'cpu_time') u.cpuBase = r.used;
      else if (r.name in u.counters) u.counters[r.name as Counter] = r.used;
    }
    this.timer = setInterval(() => this.sampleAll(), o.sampleMs ?? 1000);
    this.timer.unref();
  }

  close(): void {
    clearInterval(this.timer);
    if (this.db.open) this.db.close();
  }

  // ---- hooks of the kernel ------------------------------------------------------------------------

  /** Supervisor hook: a process of the agent started; the identity's first start is remembered. */
  started(a: AgentRecord): void {
    this.usageOf(a.def.identity, true);
  }

  /** An identity ended for good: its limits and usage go with it. */
  identityEnded(identity: string): void {
    this.usage.delete(identity);
    this.limits.delete(`a:${identity}`);
    for (const k of [...this.crossed]) if (k.startsWith(`a:${identity}|`)) this.crossed.delete(k);
    try {
      this.stmts.delUsage.run(identity);
      this.stmts.delScope.run(`a:${identity}`);
    } catch (e) {
      this.o.log.warn({ identity, err: (e as Error).message }, 'cannot drop the quotas of an ended identity');
    }
  }

  // ---- counting and enforcement ------------------------------------------------------------------

  /**
   * Admission of a call of kind `name` by agent `id` (nothing for operators and clients): throws
   * quota_exceeded when its own or its service's `deny` quota of that kind is reached.
   */
  check(id: number, name: QuotaName): void {
    const a = this.o.agents.get(id);
    if (!a) return;
    for (const { scope, service } of this.scopesOf(a)) {
      const l = this.limits.get(scope)?.get(name);
      if (!l || l.policy !== 'deny') continue;
      const used = service ? this.serviceUsed(service, name) : this.used(a.def.identity, name);
      if (used >= l.limit)
        throw new QuotaExceededError(
          `quota exceeded: ${name} (${service ? `service ${service.project}/${service.service}` : 'agent'}: ${used} of ${l.limit})`,
          { quota: name, used, limit: l.limit, budget: `quota.${name}`, ...(service ? { service } : {}) },
        );
    }
  }

  /** What agent `id` may still use of `name` before a deny quota stops it (Infinity: no such limit). */
  remaining(id: number, name: QuotaName): number {
    const a = this.o.agents.get(id);
    if (!a) return Number.POSITIVE_INFINITY;
    let left = Number.POSITIVE_INFINITY;
    for (const { scope, service } of this.scopesOf(a)) {
      const l = this.limits.get(scope)?.get(name);
      if (!l || l.policy !== 'deny') continue;
      const used = service ? this.serviceUsed(service, name) : this.used(a.def.identity, name);
      left = Math.min(left, Math.max(0, l.limit - used));
    }
    return left;
  }

  /** Counts `amount` of a counted quota against agent `id`, then enforces what that crossed. */
  charge(id: number, name: Counter, amount: number): void {
    const a = this.o.agents.get(id);
    if (!a || !(amount > 0)) return;
    const u = this.usageOf(a.def.identity, true);
    u.counters[name] += amount;
    this.persist(a.def.identity, name, u.counters[name]);
    this.evaluate(a, [name]);
  }

  /**
   * Every period: CPU and memory of the agents that have a measured quota (their own or their service's),
   * wall time, and what crossed. Agents without one are read only when their usage is asked for
   * (GET_QUOTA, the metrics replies): an idle kernel with thousands of agents reads no cgroup file.
   */
  private sampleAll(): void {
    // No measured quota anywhere (the common case): not even a walk over the agents.
    if (!this.anyMeasured()) return;
    const agents = this.o.agents.list().filter((a) => this.watched(a));
    const cpu: [string, number][] = [];
    for (const a of agents) {
      try {
        const ms = this.sampleOne(a);
        if (ms !== undefined) cpu.push([a.def.identity, ms]);
      } catch (e) {
        this.o.log.warn({ agent: a.def.name, err: (e as Error).message }, 'quota sample failed');
      }
    }
    // One commit for the round, before anything is enforced (the audit log writes to the same file).
    this.persistCpu(cpu);
    for (const a of agents) this.evaluate(a, QUOTA_NAMES);
  }

  /** Whether any scope has a measured quota (memory, cpu_time, wall_time): O(scopes with limits). */
  private anyMeasured(): boolean {
    for (const l of this.limits.values()) for (const n of MEASURED) if (l.has(n)) return true;
    return false;
  }

  /** Whether `a` or its service has a measured quota (memory, cpu_time, wall_time): the sampler reads it. */
  private watched(a: AgentRecord): boolean {
    return this.scopesOf(a).some(({ scope }) => {
      const l = this.limits.get(scope);
      return l !== undefined && [...MEASURED].some((n) => l.has(n));
    });
  }

  /** Brings an agent the sampler skips up to date before its usage is shown. */
  private refresh(agents: AgentRecord[]): void {
    const cpu: [string, number][] = [];
    for (const a of agents) {
      if (this.watched(a)) continue;
      try {
        const ms = this.sampleOne(a);
        if (ms !== undefined) cpu.push([a.def.identity, ms]);
      } catch {
        // shown as last read
      }
    }
    this.persistCpu(cpu);
  }

  private persistCpu(cpu: [string, number][]): void {
    if (!cpu.length) return;
    try {
      this.db.transaction(() => {
        for (const [identity, ms] of cpu) this.stmts.setUsed.run(identity, 'cpu_time', ms);
      })();
    } catch (e) {
      this.o.log.warn({ err: (e as Error).message }, 'cannot persist quota usage');
    }
  }

  /**
   * Reads one agent's CPU and memory; returns its new cpu_time when it grew. A CPU counter is known by
   * where it is read (`Sample.source`): a new source, or a counter that went back (the cgroup was made
   * again for a restart), starts a new one, and what the old one counted is kept in the base.
   */
  private sampleOne(a: AgentRecord): number | undefined {
    const u = this.usageOf(a.def.identity, true);
    const s = a.proc ? this.o.sample(a) : undefined;
    if (!s) {
      u.memory = 0;
      return undefined;
    }
    u.memory = s.memory;
    const raw = s.cpuUsec / 1000;
    if (s.source !== u.cpuSource || raw < u.cpuRaw) {
      u.cpuBase += u.cpuCur;
      u.cpuCur = 0;
      u.cpuSource = s.source;
      u.cpuRaw = 0;
    }
    const grew = raw > u.cpuRaw;
    u.cpuCur += raw - u.cpuRaw;
    u.cpuRaw = raw;
    return grew ? Math.round(u.cpuBase + u.cpuCur) : undefined;
  }

  /** Announces and enforces every quota of `a` (and of its service) among `names` that is newly reached. */
  private evaluate(a: AgentRecord, names: readonly QuotaName[]): void {
    for (const { scope, service } of this.scopesOf(a)) {
      const limits = this.limits.get(scope);
      if (!limits) continue;
      for (const name of names) {
        const l = limits.get(name);
        const key = `${scope}|${name}`;
        if (!l) continue;
        const used = service ? this.serviceUsed(service, name) : this.used(a.def.identity, name);
        if (used < l.limit) {
          this.crossed.delete(key);
          continue;
        }
        if (this.crossed.has(key)) continue;
        this.crossed.add(key);
        this.enforce(a, name, used, l, service);
      }
    }
  }

  /** One crossing: the event, the audit entry, then the policy. */
  private enforce(a: AgentRecord, quota: QuotaName, used: number, l: Limit, service?: ServiceRef): void {
    const data = {
      agent_id: a.def.id,
      name: a.def.name,
      quota,
      used,
      limit: l.limit,
      policy: l.policy,
      ...(service ? { service } : {}),
    };
    this.o.publish('QUOTA_EXCEEDED', data, 0);
    this.o.audit.record({
      category: 'RESOURCE',
      event_type: 'QUOTA_EXCEEDED',
      agent_id: a.def.id,
      agent_name: a.def.name,
      success: false,
      details: data,
    });
    this.o.log.warn(data, 'quota exceeded');
    if (l.policy === 'deny') return;
    const targets = service ? this.agentsOf(service) : [a];
    for (const t of targets) {
      try {
        if (l.policy === 'pause') {
          if (t.state === 'RUNNING') this.o.agents.pause(t);
        } else if (t.state !== 'STOPPED' && t.state !== 'STOPPING') {
          void this.o.agents.kill(KERNEL, t, { wait: false }).catch(() => {});
        }
      } catch (e) {
        this.o.log.warn(
          { agent: t.def.name, policy: l.policy, err: (e as Error).message },
          'quota policy failed',
        );
      }
    }
  }

  // ---- SET_QUOTA / GET_QUOTA ---------------------------------------------------------------------

  /**
   * SET_QUOTA (and SPAWN's `quotas`, with `spawnParent`): checks the caller's rights, validates the set,
   * applies it and enforces anything it makes reached at once. Returns the target's quotas after.
   */
  set(
    caller: Caller,
    target: { agent?: AgentRecord; service?: ServiceRef },
    set: QuotaSet,
  ): Record<string, QuotaState> {
    const parsed = parseSet(set);
    if (caller.role !== 'operator') {
      if (target.service || !target.agent)
        throw new PermissionDeniedError(
          'Permission denied: only an operator may set the quotas of a service',
        );
      if (!this.isDescendant(caller, target.agent))
        throw new PermissionDeniedError(
          `Permission denied: an agent may set quotas only on agents it spawned (not ${target.agent.def.name})`,
        );
      this.notLooser(caller, parsed);
    }
    return this.apply(target, parsed);
  }

  /**
   * SPAWN's `quotas` for a child an agent spawns: no looser than the parent's own, and the parent's own
   * limits are inherited where the request says nothing (a child cannot be a way around its parent's
   * quotas). Checked before the spawn (throws), applied after it (`applySpawn`).
   */
  spawnQuotas(caller: Caller, set: QuotaSet | undefined): Map<QuotaName, Limit | null> {
    const parsed = parseSet(set ?? {});
    if (caller.role !== 'agent') return parsed;
    this.notLooser(caller, parsed);
    const a = this.o.agents.get(caller.id);
    for (const [name, l] of a ? (this.limits.get(`a:${a.def.identity}`) ?? []) : [])
      if (!parsed.has(name)) parsed.set(name, { ...l });
    return parsed;
  }

  /** Applies checked SPAWN quotas to the new agent. */
  applySpawn(id: number, parsed: Map<QuotaName, Limit | null>): void {
    const a = this.o.agents.get(id);
    if (a && parsed.size) this.apply({ agent: a }, parsed);
  }

  private apply(
    target: { agent?: AgentRecord; service?: ServiceRef },
    parsed: Map<QuotaName, Limit | null>,
  ): Record<string, QuotaState> {
    const scope = target.service ? `s:${serviceKey(target.service)}` : `a:${target.agent!.def.identity}`;
    const limits = this.limits.get(scope) ?? new Map<QuotaName, Limit>();
    const tx = this.db.transaction(() => {
      for (const [name, l] of parsed) {
        if (l) this.stmts.setLimit.run(scope, name, l.limit, l.policy);
        else this.stmts.delLimit.run(scope, name);
      }
    });
    tx();
    for (const [name, l] of parsed) {
      // A new limit is a new chance to cross it: a raised deny limit lets calls through again.
      this.crossed.delete(`${scope}|${name}`);
      if (l) limits.set(name, l);
      else limits.delete(name);
    }
    if (limits.size) this.limits.set(scope, limits);
    else this.limits.delete(scope);
    const names = [...parsed.keys()];
    const agents = target.service ? this.agentsOf(target.service) : [target.agent!];
    for (const a of agents) this.evaluate(a, names);
    return target.service
      ? this.states(scope, (n) => this.serviceUsed(target.service!, n))
      : this.states(scope, (n) => this.used(target.agent!.def.identity, n));
  }

  /** GET_QUOTA for an agent. */
  agentQuotas(a: AgentRecord): AgentQuotas {
    const id = a.def.identity;
    const service = serviceOf(a);
    this.refresh(service ? this.agentsOf(service) : [a]);
    const out: AgentQuotas = {
      agent_id: a.def.id,
      name: a.def.name,
      identity: id,
      ...(service ? { service } : {}),
      quotas: this.states(`a:${id}`, (n) => this.used(id, n)),
      usage: this.usageObject((n) => this.used(id, n)),
    };
    if (service)
      out.service_quotas = this.states(`s:${serviceKey(service)}`, (n) => this.serviceUsed(service, n));
    return out;
  }

  /** GET_QUOTA for a service. */
  serviceQuotas(service: ServiceRef): ServiceQuotas {
    this.refresh(this.agentsOf(service));
    return {
      service,
      quotas: this.states(`s:${serviceKey(service)}`, (n) => this.serviceUsed(service, n)),
      usage: this.usageObject((n) => this.serviceUsed(service, n)),
      agent_ids: this.agentsOf(service).map((a) => a.def.id),
    };
  }

  /** Every service that has quotas or live agents (GET_QUOTA `all`). */
  allServices(): ServiceQuotas[] {
    const keys = new Set<string>();
    for (const scope of this.limits.keys()) if (scope.startsWith('s:')) keys.add(scope.slice(2));
    for (const a of this.o.agents.list()) {
      const s = serviceOf(a);
      if (s) keys.add(serviceKey(s));
    }
    return [...keys].map((k) => this.serviceQuotas(serviceOfKey(k)));
  }

  /** An agent's quotas as the metrics replies show them: every quota's usage, its limit when it has one. */
  metricsFor(a: AgentRecord): AgentQuotaMetrics {
    this.refresh([a]);
    const limits = this.limits.get(`a:${a.def.identity}`);
    const out: Record<string, QuotaMeter> = {};
    for (const n of QUOTA_NAMES) {
      const used = this.used(a.def.identity, n);
      const l = limits?.get(n);
      out[n] = l ? { used, limit: l.limit, policy: l.policy, exceeded: used >= l.limit } : { used };
    }
    return out as unknown as AgentQuotaMetrics;
  }

  /** Whether `caller` may read `a`'s quotas: operators, itself, its ancestors. */
  mayRead(caller: Caller, a: AgentRecord): boolean {
    return caller.id === a.def.id || this.o.agents.mayControl(caller, a);
  }

  // ---- internals ---------------------------------------------------------------------------------

  private isDescendant(caller: Caller, a: AgentRecord): boolean {
    return a.def.id !== caller.id && this.o.agents.mayControl(caller, a);
  }

  /** Refuses a set that removes, raises or softens a limit the calling agent has itself. */
  private notLooser(caller: Caller, parsed: Map<QuotaName, Limit | null>): void {
    const own = this.o.agents.get(caller.id);
    const mine = own ? this.limits.get(`a:${own.def.identity}`) : undefined;
    if (!mine) return;
    for (const [name, l] of parsed) {
      const m = mine.get(name);
      if (!m) continue;
      if (!l)
        throw new PermissionDeniedError(
          `Permission denied: cannot remove the ${name} quota (you have one yourself: ${m.limit})`,
        );
      if (l.limit > m.limit)
        throw new PermissionDeniedError(
          `Permission denied: ${name} quota ${l.limit} is above your own (${m.limit})`,
        );
      if (STRICTNESS[l.policy] < STRICTNESS[m.policy])
        throw new PermissionDeniedError(
          `Permission denied: ${name} policy ${l.policy} is looser than your own (${m.policy})`,
        );
    }
  }

  private scopesOf(a: AgentRecord): { scope: string; service?: ServiceRef }[] {
    const out: { scope: string; service?: ServiceRef }[] = [{ scope: `a:${a.def.identity}` }];
    const s = serviceOf(a);
    if (s) out.push({ scope: `s:${serviceKey(s)}`, service: s });
    return out;
  }

  private agentsOf(s: ServiceRef): AgentRecord[] {
    return this.o.agents.list().filter((a) => {
      const t = serviceOf(a);
      return t?.project === s.project && t.service === s.service;
    });
  }

  private used(identity: string, name: QuotaName): number {
    const u = this.usage.get(identity);
    if (!u) return 0;
    switch (name) {
      case 'memory':
        return u.memory;
      case 'cpu_time':
        return Math.round(u.cpuBase + u.cpuCur);
      case 'wall_time':
        return u.firstStart ? Math.max(0, Date.now() - u.firstStart) : 0;
      default:
        return u.counters[name];
    }
  }

  /** A service's usage: the sum over its live agents (wall_time: the longest of them). */
  private serviceUsed(s: ServiceRef, name: QuotaName): number {
    const agents = this.agentsOf(s);
    if (name === 'wall_time') return Math.max(0, ...agents.map((a) => this.used(a.def.identity, name)));
    return agents.reduce((n, a) => n + this.used(a.def.identity, name), 0);
  }

  private usageObject(used: (n: QuotaName) => number): QuotaUsage {
    return Object.fromEntries(QUOTA_NAMES.map((n) => [n, used(n)])) as unknown as QuotaUsage;
  }

  private states(scope: string, used: (n: QuotaName) => number): Record<string, QuotaState> {
    const out: Record<string, QuotaState> = {};
    for (const [name, l] of this.limits.get(scope) ?? []) {
      const u = used(name);
      out[name] = { limit: l.limit, policy: l.policy, used: u, exceeded: u >= l.limit };
    }
    return out;
  }

  private usageOf(identity: string, live: boolean): Usage {
    let u = this.usage.get(identity);
    if (!u) {
      u = {
        counters: { cpu_time: 0, llm_calls: 0, llm_tokens: 0, network_bytes: 0, exec_count: 0, mcp_calls: 0 },
        firstStart: 0,
        cpuBase: 0,
        cpuCur: 0,
        cpuSource: undefined,
        cpuRaw: 0,
        memory: 0,
      };
      this.usage.set(identity, u);
    }
    if (live && !u.firstStart) {
      u.firstStart = Date.now();
      this.persist(identity, 'first_start', u.firstStart);
    }
    return u;
  }

  private persist(identity: string, name: string, value: number): void {
    try {
      this.stmts.setUsed.run(identity, name, value);
    } catch (e) {
      this.o.log.warn({ identity, quota: name, err: (e as Error).message }, 'cannot persist quota usage');
    }
  }
}

/** The kernel itself as the one who kills an agent over its quota (KILL's `killed_by` 0). */
const KERNEL = { id: 0, role: 'operator', name: 'kernel' } as unknown as Caller;

/** A QuotaSet from the wire, with default policies; `deny` on a measured quota is invalid_request. */
export function parseSet(set: QuotaSet): Map<QuotaName, Limit | null> {
  const out = new Map<QuotaName, Limit | null>();
  for (const [name, v] of Object.entries(set)) {
    if (!(QUOTA_NAMES as readonly string[]).includes(name))
      throw new InvalidRequestError(
        `invalid request: unknown quota ${name} (one of ${QUOTA_NAMES.join(', ')})`,
      );
    const n = name as QuotaName;
    if (v === null) {
      out.set(n, null);
      continue;
    }
    const q = v as QuotaLimit;
    if (!Number.isFinite(q.limit) || q.limit < 0)
      throw new InvalidRequestError(`invalid request: quota ${name}: limit must be a number ≥ 0`);
    const policy = q.policy ?? (MEASURED.has(n) ? 'kill' : 'deny');
    if (policy === 'deny' && MEASURED.has(n))
      throw new InvalidRequestError(
        `invalid request: quota ${name}: policy deny is not possible for a measured quota (use pause or kill)`,
      );
    out.set(n, { limit: q.limit, policy });
  }
  return out;
}
