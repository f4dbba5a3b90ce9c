/**
 * The recorder: while on, every finished syscall of the selected callers becomes an entry with its
 * request and its reply (clove-wire-reference.md §3.15 entry fields), in the order the calls finished.
 * It is fed by the dispatcher's observers (FamilyEnv.observe) and costs one Set lookup per syscall while
 * off. Bounded: past `max_entries` entries or `max_bytes` bytes of payloads and responses, later calls are
 * dropped and counted (a recording keeps its beginning: a replay needs the state its later calls built on).
 */
import type { RecordingEntry } from '../../../protocol/index.js';
import { Op } from '../../../protocol/index.js';
import type { SyscallRecord } from '../../core/family.js';

/** One recorded call (the contract's `RecordingEntry`, protocol/families/record.json). */
export type { RecordingEntry };

export interface RecordingConfig {
  include_think: boolean;
  include_http: boolean;
  include_exec: boolean;
  max_entries: number;
  max_bytes: number;
  filter_agents: number[];
  filter_names: string[];
}

/**
 * Never recorded, whatever the configuration: reads that change nothing (the reference's list) and the
 * recording and replay controls themselves.
 */
export const NEVER_RECORDED: ReadonlySet<string> = new Set([
  'LIST',
  'GET_PERMS',
  'KEYS',
  'POLL_EVENTS',
  'METRICS_SYSTEM',
  'METRICS_AGENT',
  'METRICS_ALL_AGENTS',
  'METRICS_CGROUP',
  'GET_AUDIT_LOG',
  'TUNNEL_STATUS',
  'TUNNEL_LIST_REMOTES',
  'WORLD_LIST',
  'WORLD_STATE',
  'RECORD_START',
  'RECORD_STOP',
  'RECORD_STATUS',
  'REPLAY_START',
  'REPLAY_STATUS',
]);

/** Recorded only when the configuration includes them. */
const OPTIONAL: Record<string, 'include_think' | 'include_http' | 'include_exec'> = {
  THINK: 'include_think',
  THINK_STREAM: 'include_think',
  THINK_STREAM_NEXT: 'include_think',
  THINK_STREAM_CANCEL: 'include_think',
  LLM_REPORT: 'include_think',
  HTTP: 'include_http',
  EXEC: 'include_exec',
};

/** What an entry holds beyond its payload and response (for the byte bound). */
const ENTRY_OVERHEAD = 160;

/** A request or reply as the text an entry keeps. */
export function asText(v: unknown): string {
  if (Buffer.isBuffer(v)) return v.toString('utf8');
  if (typeof v === 'string') return v;
  return JSON.stringify(v) ?? 'null';
}

export const DEFAULT_RECORDING: Readonly<RecordingConfig> = Object.freeze({
  include_think: false,
  include_http: false,
  include_exec: false,
  max_entries: 50_000,
  max_bytes: 64 * 1024 * 1024,
  filter_agents: [],
  filter_names: [],
});

export class Recorder {
  private on = false;
  private cfg: RecordingConfig = { ...DEFAULT_RECORDING };
  private ids = new Set<number>();
  private names = new Set<string>();
  private list: RecordingEntry[] = [];
  private held = 0;
  private dropped = 0;
  private seq = 0;

  /** `ignore(id)`: callers never recorded (the replay's stand-ins). */
  constructor(private readonly ignore: (id: number) => boolean) {}

  get recording(): boolean {
    return this.on;
  }

  get config(): Readonly<RecordingConfig> {
    return this.cfg;
  }

  get entries(): readonly RecordingEntry[] {
    return this.list;
  }

  get bytes(): number {
    return this.held;
  }

  get entriesDropped(): number {
    return this.dropped;
  }

  get lastSequenceId(): number {
    return this.seq;
  }

  /** Starts a new recording (the previous one is discarded, the sequence starts again at 1). */
  start(cfg: RecordingConfig): void {
    this.cfg = { ...cfg, filter_agents: [...cfg.filter_agents], filter_names: [...cfg.filter_names] };
    this.ids = new Set(cfg.filter_agents);
    this.names = new Set(cfg.filter_names);
    this.list = [];
    this.held = 0;
    this.dropped = 0;
    this.seq = 0;
    this.on = true;
  }

  stop(): void {
    this.on = false;
  }

  /** A dispatcher observer. */
  observe(r: SyscallRecord): void {
    if (!this.on || NEVER_RECORDED.has(r.op)) return;
    const optional = OPTIONAL[r.op];
    if (optional && !this.cfg[optional]) return;
    const c = r.caller;
    if (this.ignore(c.id)) return;
    if ((this.ids.size || this.names.size) && !this.ids.has(c.id) && !this.names.has(c.name)) return;
    if (this.list.length >= this.cfg.max_entries) {
      this.dropped++;
      return;
    }
    const payload = asText(r.request);
    const response = asText(r.reply);
    const size = payload.length + response.length + ENTRY_OVERHEAD;
    if (this.held + size > this.cfg.max_bytes) {
      this.dropped++;
      return;
    }
    this.held += size;
    this.list.push({
      sequence_id: ++this.seq,
      timestamp: new Date().toISOString(),
      agent_id: c.id,
      agent_name: c.name,
      role: c.role,
      opcode: Op[r.op],
      opcode_name: r.op,
      payload,
      response,
      duration_us: r.durationUs,
      success: r.success,
    });
  }

  /** The first `limit` entries with sequence_id > `since`. */
  page(since: number, limit: number): RecordingEntry[] {
    // sequence ids are 1..n in order: entry i has sequence_id i + 1
    return this.list.slice(since, since + limit);
  }
}
