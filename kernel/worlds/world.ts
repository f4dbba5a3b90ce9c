/**
 * One world (docs/worlds.md, reference §3.11): its virtual file system, its network mock and recordings,
 * its EXEC mocks, its chaos (one seeded PRNG, active events) and its counters. Pure state and decisions:
 * what a member's call gets. The service (service.ts) owns membership, persistence, timers and effects
 * on processes; the files, http and exec families call in through it.
 */
import path from 'node:path';
import picomatch from 'picomatch';
import { xoroshiro128plus, xoroshiro128plusFromState } from 'pure-rand/generator/xoroshiro128plus';
import { uniformFloat64 } from 'pure-rand/distribution/uniformFloat64';
import type { JumpableRandomGenerator } from 'pure-rand/types/JumpableRandomGenerator';
import type { WorldConfig } from '../../protocol/index.js';
import { InvalidRequestError } from '../core/errors.js';

export const CHAOS_EVENTS = [
  'disk_full',
  'disk_fail',
  'network_partition',
  'slow_io',
  'latency_spike',
  'packet_loss',
  'agent_crash',
  'resource_pressure',
] as const;
export type ChaosEvent = (typeof CHAOS_EVENTS)[number];

export interface VFile {
  /** The bytes (stored and snapshotted as base64, or text when they are UTF-8). */
  content: Buffer;
  mode: 'rw' | 'r';
  created_at: number;
  modified_at: number;
}

export interface MockResponse {
  status: number;
  body: string;
  latency_ms: number;
  headers: Record<string, string>;
}

export interface ExecMock {
  stdout: string;
  stderr: string;
  exit_code: number;
  latency_ms: number;
}

export interface Recording {
  method: string;
  url: string;
  status: number;
  body: string;
  headers: Record<string, string>;
  body_encoding?: 'utf8' | 'base64';
}

export interface ChaosRule {
  type: 'file_read_fail' | 'file_write_fail' | 'network_timeout' | 'network_fail' | 'exec_fail';
  pattern: string;
  probability: number;
}

export interface ActiveEvent {
  id: number;
  type: ChaosEvent;
  params: Record<string, unknown>;
  started_at: number;
  /** Unix ms; null: until cleared. */
  expires_at: number | null;
}

export interface Limits {
  max_file_bytes: number;
  max_total_bytes: number;
  max_files: number;
}

/** Counters reported by WORLD_STATE (reference §3.11 metrics objects, plus exec). */
export interface Counters {
  syscall_count: number;
  read_count: number;
  write_count: number;
  bytes_read: number;
  bytes_written: number;
  requests_intercepted: number;
  requests_passed_through: number;
  requests_failed: number;
  exec_mocked: number;
  exec_passed_through: number;
  failures_injected: number;
  latency_injected: number;
}

/** What a world is made of, as stored (SQLite) and snapshotted. */
export interface WorldDoc {
  id: string;
  name: string;
  description: string;
  creator: string;
  config: WorldConfig;
  seed: number;
  rng_state: number[];
  files: Record<string, { content: string; mode: 'rw' | 'r'; created_at: number; modified_at: number }>;
  recorded: Recording[];
  active_events: ActiveEvent[];
  next_event_id: number;
  counters: Counters;
}

const ZERO: Counters = {
  syscall_count: 0,
  read_count: 0,
  write_count: 0,
  bytes_read: 0,
  bytes_written: 0,
  requests_intercepted: 0,
  requests_passed_through: 0,
  requests_failed: 0,
  exec_mocked: 0,
  exec_passed_through: 0,
  failures_injected: 0,
  latency_injected: 0,
};

/** Normalises a VFS path: absolute from `/` (relative paths start there), `.`, `..` and `//` resolved. */
export function vpath(p: string): string {
  return path.posix.resolve('/', p);
}

type Matcher = (s: string) => boolean;

/** VFS globs (§3.11): `*` no-slash run, `**` anything, `?` one char; case-insensitive, whole path. */
function vfsGlob(patterns: readonly string[]): Matcher {
  if (!patterns.length) return () => false;
  return picomatch(patterns as string[], { nocase: true, dot: true });
}

/** URL, command and chaos patterns: `*` = anything, everything else literal; case-insensitive. */
export function starPattern(pattern: string): Matcher {
  const re = new RegExp(
    '^' +
      pattern
        .split('*')
        .map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('.*') +
      '$',
    'is',
  );
  return (s) => re.test(s);
}

function mockOf(v: string | Partial<MockResponse>, status = 200, body = ''): MockResponse {
  if (typeof v === 'string') return { status, body: v, latency_ms: 0, headers: {} };
  return {
    status: v.status ?? status,
    body: v.body ?? body,
    latency_ms: v.latency_ms ?? 0,
    headers: { ...(v.headers ?? {}) },
  };
}

/** The host (and host:port) of a URL, or undefined for a URL that does not parse. */
function hostOf(url: string): { host: string; hostname: string } | undefined {
  try {
    const u = new URL(url);
    return { host: u.host.toLowerCase(), hostname: u.hostname.toLowerCase() };
  } catch {
    return undefined;
  }
}

/**
 * A world. Everything random comes from `rng` (seeded, its state saved with the world), drawn only for
 * a probability strictly between 0 and 1, so that the same seed and the same calls give the same
 * failures.
 */
export class World {
  readonly id: string;
  readonly name: string;
  readonly description: string;
  readonly creator: string;
  readonly config: WorldConfig;
  readonly seed: number;
  readonly limits: Limits;
  readonly files = new Map<string, VFile>();
  recorded: Recording[] = [];
  activeEvents: ActiveEvent[] = [];
  nextEventId = 1;
  counters: Counters;
  private rng: JumpableRandomGenerator;
  private readonly readonly_: Matcher;
  private readonly writable: Matcher;
  private readonly hasWritable: boolean;
  private readonly intercept: Matcher;
  readonly vfsEnabled: boolean;
  private readonly exactMocks = new Map<string, MockResponse>();
  private readonly patternMocks: { match: Matcher; key: string; res: MockResponse }[] = [];
  private readonly execMocks: { match: Matcher; key: string; res: ExecMock }[] = [];
  readonly rules: (ChaosRule & { match: Matcher })[];

  constructor(doc: WorldDoc) {
    this.id = doc.id;
    this.name = doc.name;
    this.description = doc.description;
    this.creator = doc.creator;
    this.config = doc.config;
    this.seed = doc.seed;
    this.rng = doc.rng_state.length ? xoroshiro128plusFromState(doc.rng_state) : xoroshiro128plus(doc.seed);
    const c = doc.config;
    this.limits = {
      max_file_bytes: c.limits?.max_file_bytes ?? 1024 * 1024,
      max_total_bytes: c.limits?.max_total_bytes ?? 16 * 1024 * 1024,
      max_files: c.limits?.max_files ?? 1000,
    };
    const v = c.virtual_filesystem ?? {};
    this.readonly_ = vfsGlob(v.readonly_patterns ?? []);
    this.writable = vfsGlob(v.writable_patterns ?? []);
    this.hasWritable = (v.writable_patterns ?? []).length > 0;
    const configured =
      Object.keys(v.initial_files ?? {}).length > 0 ||
      (v.readonly_patterns ?? []).length > 0 ||
      (v.writable_patterns ?? []).length > 0 ||
      (v.intercept_patterns ?? []).length > 0;
    this.vfsEnabled = configured;
    this.intercept = vfsGlob(v.intercept_patterns?.length ? v.intercept_patterns : configured ? ['/**'] : []);
    for (const [k, r] of Object.entries(c.network?.mock_responses ?? {})) {
      const res = mockOf(r);
      if (k.includes('*')) this.patternMocks.push({ match: starPattern(k), key: k, res });
      else this.exactMocks.set(k.toLowerCase(), res);
    }
    for (const [k, r] of Object.entries(c.exec?.mock_commands ?? {})) {
      const res: ExecMock =
        typeof r === 'string'
          ? { stdout: r, stderr: '', exit_code: 0, latency_ms: 0 }
          : {
              stdout: r.stdout ?? '',
              stderr: r.stderr ?? '',
              exit_code: r.exit_code ?? 0,
              latency_ms: r.latency_ms ?? 0,
            };
      this.execMocks.push({ match: starPattern(k), key: k, res });
    }
    this.rules = (c.chaos?.rules ?? []).map((r) => {
      const pattern = r.path_pattern ?? r.url_pattern ?? r.command_pattern ?? '*';
      return { type: r.type, pattern, probability: r.probability ?? 1, match: starPattern(pattern) };
    });
    for (const [p, f] of Object.entries(doc.files))
      this.files.set(p, {
        content: Buffer.from(f.content, 'base64'),
        mode: f.mode,
        created_at: f.created_at,
        modified_at: f.modified_at,
      });
    this.recorded = doc.recorded.map((r) => ({ ...r }));
    this.activeEvents = doc.active_events.map((e) => ({ ...e, params: { ...e.params } }));
    this.nextEventId = doc.next_event_id;
    this.counters = { ...ZERO, ...doc.counters };
  }

  /** A new world's document from a validated config: the initial files checked against the limits. */
  static fresh(id: string, creator: string, config: WorldConfig, seed: number, now: number): WorldDoc {
    const files: WorldDoc['files'] = {};
    const limits = {
      max_file_bytes: config.limits?.max_file_bytes ?? 1024 * 1024,
      max_total_bytes: config.limits?.max_total_bytes ?? 16 * 1024 * 1024,
      max_files: config.limits?.max_files ?? 1000,
    };
    let total = 0;
    for (const [raw, f] of Object.entries(config.virtual_filesystem?.initial_files ?? {})) {
      const p = vpath(raw);
      const content = Buffer.from(typeof f === 'string' ? f : f.content, 'utf8');
      if (content.length > limits.max_file_bytes)
        throw new InvalidRequestError(
          `invalid request: initial file ${p} is ${content.length} bytes (limits.max_file_bytes ${limits.max_file_bytes})`,
        );
      total += content.length;
      files[p] = {
        content: content.toString('base64'),
        mode: typeof f === 'string' ? 'rw' : (f.mode ?? 'rw'),
        created_at: now,
        modified_at: now,
      };
    }
    if (Object.keys(files).length > limits.max_files)
      throw new InvalidRequestError(
        `invalid request: ${Object.keys(files).length} initial files (limits.max_files ${limits.max_files})`,
      );
    if (total > limits.max_total_bytes)
      throw new InvalidRequestError(
        `invalid request: initial files hold ${total} bytes (limits.max_total_bytes ${limits.max_total_bytes})`,
      );
    const chaos = config.chaos?.latency;
    if (chaos && (chaos.min_ms ?? 0) > (chaos.max_ms ?? 0))
      throw new InvalidRequestError(
        'invalid request: chaos.latency.min_ms is more than chaos.latency.max_ms',
      );
    return {
      id,
      name: config.name ?? id,
      description: config.description ?? '',
      creator,
      config,
      seed,
      rng_state: [],
      files,
      recorded: [],
      active_events: [],
      next_event_id: 1,
      counters: { ...ZERO },
    };
  }

  /** The world as stored and snapshotted. */
  doc(): WorldDoc {
    const files: WorldDoc['files'] = {};
    for (const [p, f] of this.files)
      files[p] = {
        content: f.content.toString('base64'),
        mode: f.mode,
        created_at: f.created_at,
        modified_at: f.modified_at,
      };
    return {
      id: this.id,
      name: this.name,
      description: this.description,
      creator: this.creator,
      config: this.config,
      seed: this.seed,
      rng_state: [...this.rng.getState()],
      files,
      recorded: this.recorded.map((r) => ({ ...r })),
      active_events: this.activeEvents.map((e) => ({ ...e, params: { ...e.params } })),
      next_event_id: this.nextEventId,
      counters: { ...this.counters },
    };
  }

  // ---- randomness ----

  /** True with probability `p`; the PRNG is drawn only when 0 < p < 1. */
  chance(p: number): boolean {
    if (!(p > 0)) return false;
    if (p >= 1) return true;
    return uniformFloat64(this.rng) < p;
  }

  /** An integer in [min, max], from the PRNG (no draw when min = max). */
  between(min: number, max: number): number {
    if (max <= min) return min;
    return min + Math.floor(uniformFloat64(this.rng) * (max - min + 1));
  }

  // ---- the VFS ----

  /** Whether the world serves this (normalised) path. */
  intercepts(p: string): boolean {
    return this.vfsEnabled && this.intercept(p);
  }

  /** Why a member may not write `p` (undefined: it may). */
  writeRefusal(p: string, exists: boolean): string | undefined {
    const f = this.files.get(p);
    if (f?.mode === 'r') return `Virtual filesystem write denied: ${p} is read-only`;
    if (this.readonly_(p)) return `Virtual filesystem write denied: ${p} matches readonly_patterns`;
    if (!exists && this.hasWritable && !this.writable(p))
      return `Virtual filesystem write denied: ${p} matches no writable_patterns`;
    return undefined;
  }

  totalBytes(): number {
    let n = 0;
    for (const f of this.files.values()) n += f.content.length;
    return n;
  }

  // ---- the network mock ----

  /** The mock rule for a URL: exact first, then the patterns in order. */
  mockFor(url: string): MockResponse | undefined {
    const exact = this.exactMocks.get(url.toLowerCase());
    if (exact) return exact;
    return this.patternMocks.find((m) => m.match(url))?.res;
  }

  /** The latest recording of a request, for replay in mock mode. */
  recordingFor(method: string, url: string): Recording | undefined {
    for (let i = this.recorded.length - 1; i >= 0; i--) {
      const r = this.recorded[i];
      if (r.method === method && r.url === url) return r;
    }
    return undefined;
  }

  get mockCount(): number {
    return this.exactMocks.size + this.patternMocks.length;
  }

  get networkMode(): 'passthrough' | 'mock' | 'record' {
    return this.config.network?.mode ?? 'passthrough';
  }

  /** Whether a mock world passes this URL through (its host is in `allowed_domains`). */
  allowedThrough(url: string): boolean {
    const h = hostOf(url);
    if (!h) return false;
    return (this.config.network?.allowed_domains ?? []).some((d) => {
      const x = d.toLowerCase();
      return x === h.host || x === h.hostname || (x.startsWith('*.') && h.hostname.endsWith(x.slice(1)));
    });
  }

  /** The answer to an unmatched URL in a mock world. */
  unmatched(url: string): MockResponse {
    const n = this.config.network;
    if (n?.fail_unmatched)
      return {
        status: 503,
        body: `Network mock: URL not configured in world ${this.id}: ${url}`,
        latency_ms: 0,
        headers: {},
      };
    return mockOf(n?.default_response ?? {}, 404, 'Not Found');
  }

  // ---- EXEC mocks ----

  execMockFor(command: string): ExecMock | undefined {
    return this.execMocks.find((m) => m.match(command))?.res;
  }

  get execUnmatched(): 'real' | 'refuse' {
    return this.config.exec?.unmatched ?? 'real';
  }

  // ---- chaos ----

  get chaosEnabled(): boolean {
    return this.config.chaos?.enabled === true;
  }

  /** The active events of a type (expired ones are removed by the service's timers). */
  active(type: ChaosEvent): ActiveEvent[] {
    return this.activeEvents.filter((e) => e.type === type);
  }

  /** Whether a configured rule of `type` matching `subject` strikes now (one draw per matching rule). */
  ruleStrikes(type: ChaosRule['type'], subject: string): boolean {
    if (!this.chaosEnabled) return false;
    for (const r of this.rules)
      if (r.type === type && r.match(subject) && this.chance(r.probability)) return true;
    return false;
  }

  /** The config's global random failure. */
  randomFailure(): boolean {
    return this.chaosEnabled && this.chance(this.config.chaos?.failure_rate ?? 0);
  }

  /** Extra latency of the config's `chaos.latency` (HTTP only, as in the reference). */
  configLatency(): number {
    const l = this.config.chaos?.latency;
    if (!this.chaosEnabled || !l) return 0;
    return this.between(l.min_ms ?? 0, l.max_ms ?? 0);
  }

  metrics(members: number[]) {
    const c = this.counters;
    return {
      world_id: this.id,
      name: this.name,
      description: this.description,
      creator: this.creator,
      seed: this.seed,
      agent_count: members.length,
      syscall_count: c.syscall_count,
      vfs_metrics: {
        enabled: this.vfsEnabled,
        file_count: this.files.size,
        read_count: c.read_count,
        write_count: c.write_count,
        bytes_read: c.bytes_read,
        bytes_written: c.bytes_written,
        total_size_bytes: this.totalBytes(),
        limits: this.limits,
      },
      network_metrics: {
        mode: this.networkMode,
        mock_count: this.mockCount,
        requests_intercepted: c.requests_intercepted,
        requests_passed_through: c.requests_passed_through,
        requests_failed: c.requests_failed,
        recorded_count: this.recorded.length,
      },
      exec_metrics: {
        mock_count: this.execMocks.length,
        unmatched: this.execUnmatched,
        mocked: c.exec_mocked,
        passed_through: c.exec_passed_through,
      },
      chaos_metrics: {
        enabled: this.chaosEnabled,
        failure_rate: this.config.chaos?.failure_rate ?? 0,
        rule_count: this.rules.length,
        active_event_count: this.activeEvents.length,
        active_events: this.activeEvents.map((e) => ({ ...e })),
        failures_injected: c.failures_injected,
        latency_injected: c.latency_injected,
      },
      agents: members,
    };
  }
}
