/**
 * Replay: a recording's requests issued again, in their recorded order, against this kernel, each reply
 * compared with the recorded one (docs/protocol.md "Record and replay").
 *
 * - **Who calls.** Every recorded caller gets a stand-in: a fresh principal of the recorded role (an
 *   agent's with its own identity, so its agent-scope keys are its own), made reachable like a client,
 *   holding the recorded agent's name when the name is free here (always so in a fresh kernel). The
 *   stand-ins are created before the first entry (a message may be sent to an agent before its first
 *   call) and forgotten afterwards: names, mailbox, subscriptions, rights, agent-scope keys. Nothing is
 *   spawned and no live agent is addressed by id.
 * - **How.** Each request goes through the dispatcher's whole path as its stand-in
 *   (FamilyEnv.dispatchAs): validation, handler, observers, denials audited. Recorded ids of recorded
 *   callers are rewritten to their stand-ins' ids; a request that addresses an id outside the recording
 *   is skipped. RECV and POLL_EVENTS never wait: entries are in the order the calls finished, so what a
 *   recorded RECV got was sent by an earlier entry.
 * - **What is skipped**: calls that would start or signal processes or reach outside the kernel (SPAWN,
 *   KILL, PAUSE, RESUME, EXEC, HTTP, THINK, READ, WRITE…): only the families whose effects live in the
 *   kernel (core, ipc, state, events, perms) are replayed.
 * - **Comparing.** Both replies are parsed and compared field by field, except volatile fields
 *   (VOLATILE: times, ages, pids, sequence numbers, paths and versions of the kernel, error texts — the
 *   error `code` is compared) and ids: an id field whose recorded value is a recorded caller must be its
 *   stand-in's id, any other id is ignored (ids are allocated per kernel); a recorded caller's `name`
 *   and `from_name` must be its stand-in's (operators' and clients' labels hold their ids). Message
 *   bodies, stored values and event data are compared literally.
 * - **Never blocks the event loop**: the loop yields (setImmediate) every few milliseconds of work.
 */
import type { ReplayMismatch } from '../../../protocol/index.js';
import { Op, type OpName } from '../../../protocol/index.js';
import { InvalidRequestError, type Caller, type FamilyEnv, type Services } from '../../core/family.js';
import type { RecordingEntry } from './recorder.js';

type Principal = Omit<Caller, 'perms'>;
type Role = Principal['role'];
export type ReplayState = 'idle' | 'running' | 'paused' | 'completed' | 'error';

/** The families whose effects live inside the kernel: their calls are replayed, all others skipped. */
export const REPLAYED: ReadonlySet<string> = new Set([
  'NOOP',
  'HELLO',
  'EXIT',
  'HEARTBEAT',
  'REGISTER',
  'SEND',
  'SEND_BATCH',
  'RECV',
  'BROADCAST',
  'STORE',
  'FETCH',
  'DELETE',
  'KEYS',
  'SUBSCRIBE',
  'UNSUBSCRIBE',
  'POLL_EVENTS',
  'EMIT',
  'GET_PERMS',
  'SET_PERMS',
]);

/** Reply fields that differ from one run (or kernel) to the next: never compared. */
export const VOLATILE: ReadonlySet<string> = new Set([
  'timestamp',
  'age_ms',
  'seq',
  'pid',
  'uptime',
  'uptime_ms',
  'started_at',
  'sequence_id',
  'duration_us',
  'request_id',
  'kernel_version',
  'data_dir',
  'agent_socket',
  'sandbox',
  'error',
]);

/** Reply fields holding a principal's id: compared through the recorded-id → stand-in map. */
const ID_FIELDS: ReadonlySet<string> = new Set(['agent_id', 'id', 'from', 'source', 'parent_id']);
/** Fields holding what callers sent (message bodies, stored values, event data): compared literally. */
const USER_DATA: ReadonlySet<string> = new Set(['message', 'value', 'data']);

/** Mismatches reported in detail (all are counted). */
export const MISMATCH_DETAILS = 20;
/** An expected or replayed reply in a mismatch is cut at this many characters. */
const CUT = 2000;
/** The most entries (and bytes of payloads and responses) a replay holds, chunks included. */
export const REPLAY_MAX_ENTRIES = 1_000_000;
export const REPLAY_MAX_BYTES = 256 * 1024 * 1024;
/** The most recorded callers (stand-ins) one replay creates. */
export const MAX_CALLERS = 10_000;
/** The loop yields to the event loop after this much work. */
const SLICE_MS = 4;

/** One entry of a recording, checked and resolved (opcode → name). */
export interface ReplayEntry {
  index: number;
  sequenceId: number;
  agentId: number;
  agentName: string;
  role: Role;
  op: OpName;
  opcode: number;
  payload: string;
  response: string;
}

/** A reply that differed from the recorded one (the contract's `ReplayMismatch`). */
export type Mismatch = ReplayMismatch;

/** Parses REPLAY_START's `recording_data` (a string or JSON: an array of entries, or `{entries}`). */
export function importRecording(data: unknown, first: number): ReplayEntry[] {
  const fail = (why: string) => new InvalidRequestError(`Failed to import recording data: ${why}`);
  let v = data;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      throw fail('not JSON');
    }
  }
  if (v && typeof v === 'object' && !Array.isArray(v) && Array.isArray((v as { entries?: unknown }).entries))
    v = (v as { entries: unknown[] }).entries;
  if (!Array.isArray(v)) throw fail('expected a JSON array of entries');
  return v.map((raw, i): ReplayEntry => {
    const e = raw as Partial<RecordingEntry> | null;
    if (!e || typeof e !== 'object' || Array.isArray(e)) throw fail(`entry ${i} is not an object`);
    let op: OpName | undefined;
    if (typeof e.opcode_name === 'string' && e.opcode_name in Op) op = e.opcode_name as OpName;
    else if (typeof e.opcode === 'number') op = (Object.keys(Op) as OpName[]).find((n) => Op[n] === e.opcode);
    if (!op) throw fail(`entry ${i}: unknown opcode ${JSON.stringify(e.opcode_name ?? e.opcode)}`);
    if (!Number.isInteger(e.agent_id) || (e.agent_id as number) < 0)
      throw fail(`entry ${i}: agent_id must be an integer >= 0`);
    if (typeof e.payload !== 'string' || typeof e.response !== 'string')
      throw fail(`entry ${i}: payload and response must be strings`);
    const role: Role = e.role === 'operator' || e.role === 'client' ? e.role : 'agent';
    return {
      index: first + i,
      sequenceId: Number.isInteger(e.sequence_id) ? (e.sequence_id as number) : first + i + 1,
      agentId: e.agent_id as number,
      agentName: typeof e.agent_name === 'string' ? e.agent_name : '',
      role,
      op,
      opcode: Op[op],
      payload: e.payload,
      response: e.response,
    };
  });
}

/** The entries of a recording kept in this kernel, as a replay takes them. */
export function fromRecording(list: readonly RecordingEntry[]): ReplayEntry[] {
  return importRecording(list, 0);
}

export function entryBytes(e: ReplayEntry): number {
  return e.payload.length + e.response.length;
}

interface StandIn {
  principal: Principal;
  abort: AbortController;
  /** Whether it holds the recorded name here (a SEND by that name reaches it by itself). */
  named: boolean;
}

export interface ReplayStatus {
  state: ReplayState;
  total_entries: number;
  current_entry: number;
  entries_replayed: number;
  entries_skipped: number;
  progress_percent: number;
  mismatches: number;
  mismatch_details: Mismatch[];
  skipped_ops: Record<string, number>;
  last_error?: string;
}

type Dispatch = NonNullable<FamilyEnv['dispatchAs']>;

/** One replay run. */
export class Replay {
  state: ReplayState = 'idle';
  private current = 0;
  private replayed = 0;
  private skipped = 0;
  private mismatches = 0;
  private readonly details: Mismatch[] = [];
  private readonly skippedOps: Record<string, number> = {};
  private lastError = '';
  private readonly abort = new AbortController();
  /** recorded caller id → its stand-in */
  private readonly standIns = new Map<number, StandIn>();
  /** the stand-ins' ids */
  private readonly ids = new Set<number>();
  /** recorded agent name → recorded id */
  private readonly byName = new Map<string, number>();
  /** a recorded caller's name → its stand-in's (an operator's or client's label holds its id) */
  private readonly labels = new Map<string, string>();
  private done: Promise<void> = Promise.resolve();

  constructor(
    private readonly entries: ReplayEntry[],
    private readonly services: Services,
    private readonly dispatch: Dispatch,
    private readonly serial: number,
  ) {}

  /** Whether `id` is one of this replay's stand-ins. */
  owns(id: number): boolean {
    return this.ids.has(id);
  }

  /** Starts the run in the background (after the current turn of the event loop). */
  start(onEnd: (r: Replay) => void): void {
    this.state = 'running';
    this.done = new Promise<void>((resolve) => setImmediate(resolve))
      .then(() => this.run())
      .finally(() => onEnd(this));
  }

  /** Stops the run (kernel shutdown) and waits until its stand-ins are gone. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.done;
  }

  status(): ReplayStatus {
    const total = this.entries.length;
    return {
      state: this.state,
      total_entries: total,
      current_entry: this.current,
      entries_replayed: this.replayed,
      entries_skipped: this.skipped,
      progress_percent: total ? Math.floor((this.current * 100) / total) : this.state === 'idle' ? 0 : 100,
      mismatches: this.mismatches,
      mismatch_details: this.details,
      skipped_ops: this.skippedOps,
      ...(this.lastError ? { last_error: this.lastError } : {}),
    };
  }

  private async run(): Promise<void> {
    try {
      const callers = new Set(this.entries.map((e) => e.agentId));
      if (callers.size > MAX_CALLERS)
        throw new Error(`the recording has ${callers.size} callers; a replay takes at most ${MAX_CALLERS}`);
      for (const e of this.entries) this.standIn(e);
      let slice = performance.now();
      for (const e of this.entries) {
        if (this.abort.signal.aborted) throw new Error('replay stopped: the kernel is shutting down');
        await this.step(e);
        this.current++;
        if (performance.now() - slice > SLICE_MS) {
          await new Promise((r) => setImmediate(r));
          slice = performance.now();
        }
      }
      this.state = 'completed';
    } catch (e) {
      this.state = 'error';
      this.lastError = e instanceof Error ? e.message : String(e);
    } finally {
      this.release();
    }
  }

  /** The stand-in of a recorded caller, created on first sight. */
  private standIn(e: ReplayEntry): StandIn {
    const have = this.standIns.get(e.agentId);
    if (have) return have;
    const { principals, mail, agents } = this.services;
    const id = principals.allocate();
    // Agents keep their name; operators and clients are labelled `<role>-<id>` as the kernel labels them.
    const name = e.role === 'agent' ? e.agentName || `agent_${e.agentId}` : `${e.role}-${id}`;
    // A stand-in is reachable like a client (SEND, BROADCAST find it) and has a client's (or an
    // operator's) rights and budgets.
    principals.clientOpened({ id, role: e.role === 'operator' ? 'operator' : 'client', name });
    const principal: Principal = {
      id,
      role: e.role,
      name,
      ...(e.role === 'agent' ? { identity: `replay${this.serial}.${name}#${e.agentId}` } : {}),
    };
    let named = false;
    if (e.role === 'agent' && mail.resolve(name) === undefined) {
      try {
        agents.mayRegister({ ...principal, perms: principals.rights(id)! }, name);
        mail.register(id, name);
        named = true;
      } catch {
        /* reserved or invalid here: the stand-in goes nameless (SENDs by the name are rewritten) */
      }
    }
    if (e.role === 'agent' && e.agentName) this.byName.set(e.agentName, e.agentId);
    if (e.agentName) this.labels.set(e.agentName, name);
    const s: StandIn = { principal, abort: new AbortController(), named };
    this.standIns.set(e.agentId, s);
    this.ids.add(id);
    return s;
  }

  /** Forgets every stand-in, as the kernel forgets a client that is gone for good. */
  private release(): void {
    const { principals, mail, events, store } = this.services;
    for (const s of this.standIns.values()) {
      s.abort.abort(); // leases go back, blocking waits end
      mail.release(s.principal.id);
      events.drop(s.principal.id);
      principals.forget(s.principal.id);
      if (s.principal.identity) {
        try {
          store.dropAgentNamespace(s.principal.identity);
        } catch {
          /* the store is closing */
        }
      }
    }
  }

  private skip(e: ReplayEntry): void {
    this.skipped++;
    this.skippedOps[e.op] = (this.skippedOps[e.op] ?? 0) + 1;
  }

  private async step(e: ReplayEntry): Promise<void> {
    if (!REPLAYED.has(e.op)) return this.skip(e);
    const payload = this.request(e);
    if (!payload) return this.skip(e);
    const s = this.standIns.get(e.agentId)!;
    const reply = await this.dispatch(s.principal, e.op, payload, s.abort.signal);
    this.replayed++;
    const got = Buffer.isBuffer(reply)
      ? reply.toString('utf8')
      : typeof reply === 'string'
        ? reply
        : JSON.stringify(reply);
    const path = this.compare(e, got);
    if (path === null) return;
    this.mismatches++;
    if (this.details.length < MISMATCH_DETAILS)
      this.details.push({
        index: e.index,
        sequence_id: e.sequenceId,
        agent_id: e.agentId,
        opcode: e.opcode,
        opcode_name: e.op,
        path,
        expected: e.response.slice(0, CUT),
        got: got.slice(0, CUT),
      });
  }

  /** The request to issue for `e`, its recorded ids rewritten; null when it must be skipped. */
  private request(e: ReplayEntry): Buffer | null {
    let req: unknown;
    try {
      req = JSON.parse(e.payload);
    } catch {
      return Buffer.from(e.payload, 'utf8'); // raw (NOOP, EXIT), or a request that was not JSON
    }
    if (!req || typeof req !== 'object' || Array.isArray(req)) return Buffer.from(e.payload, 'utf8');
    const r = req as Record<string, unknown>;
    switch (e.op) {
      case 'SEND': {
        const sent = parse(e.response) as { success?: unknown; delivered_to?: unknown } | undefined;
        if (!this.retarget(r, sent?.success === true ? sent.delivered_to : undefined)) return null;
        break;
      }
      case 'SEND_BATCH': {
        // Replayed only when every item is: a batch is one call, and its reply is compared whole.
        const sent = parse(e.response) as { results?: unknown[] } | undefined;
        const items = Array.isArray(r.messages) ? (r.messages as unknown[]) : [];
        for (const [i, item] of items.entries()) {
          if (!item || typeof item !== 'object') continue;
          const res = sent?.results?.[i] as { delivered_to?: unknown } | undefined;
          if (!this.retarget(item as Record<string, unknown>, res?.delivered_to)) return null;
        }
        break;
      }
      case 'GET_PERMS':
      case 'SET_PERMS':
        if (!this.mapId(r, 'agent_id')) return null;
        break;
      case 'RECV':
      case 'POLL_EVENTS':
        r.wait = false;
        break;
    }
    return Buffer.from(JSON.stringify(r), 'utf8');
  }

  /** Rewrites a recorded id in `r[field]` to its stand-in's; false when it is somebody outside the recording. */
  private mapId(r: Record<string, unknown>, field: string): boolean {
    const v = r[field];
    if (typeof v !== 'number' || v <= 0) return true;
    const s = this.standIns.get(v);
    if (!s) return false; // an id outside the recording means somebody else here
    r[field] = s.principal.id;
    return true;
  }

  /**
   * Points a recorded SEND target (`to` / `to_name` of a SEND or of one SEND_BATCH item) at the stand-in
   * it was recorded against; false when it reached somebody outside the recording (`deliveredTo`: where
   * the recording says it was delivered, if it was), which is not reproducible here.
   */
  private retarget(r: Record<string, unknown>, deliveredTo: unknown): boolean {
    if (typeof deliveredTo === 'number' && !this.standIns.has(deliveredTo)) return false;
    if (typeof r.to === 'number' && r.to > 0) return this.mapId(r, 'to');
    if (typeof r.to_name === 'string') {
      const rec = this.byName.get(r.to_name);
      const s = rec !== undefined ? this.standIns.get(rec) : undefined;
      if (s && !s.named) r.to = s.principal.id;
      else if (!s) {
        const holder = this.services.mail.resolve(r.to_name);
        if (holder !== undefined && !this.owns(holder)) return false;
      }
    }
    return true;
  }

  /** null when the replayed reply matches the recorded one; else the path of the first difference. */
  private compare(e: ReplayEntry, got: string): string | null {
    const exp = parse(e.response);
    const now = parse(got);
    if (exp === undefined || now === undefined) return e.response === got ? null : '';
    return this.diff(e.op, exp, now, '', undefined, false);
  }

  private diff(
    op: OpName,
    exp: unknown,
    got: unknown,
    path: string,
    key: string | undefined,
    user: boolean,
  ): string | null {
    if (!user && key !== undefined) {
      if (VOLATILE.has(key)) return null;
      if (
        (ID_FIELDS.has(key) || (key === 'delivered_to' && (op === 'SEND' || op === 'SEND_BATCH'))) &&
        typeof exp === 'number'
      ) {
        const s = this.standIns.get(exp);
        if (!s) return null; // somebody outside the recording: its id is this kernel's business
        return got === s.principal.id ? null : path;
      }
      if (key === 'name' && typeof exp === 'string' && this.labels.has(exp))
        return got === this.labels.get(exp) ? null : path;
      if (key === 'from_name' && typeof exp === 'string' && this.byName.has(exp)) {
        const s = this.standIns.get(this.byName.get(exp)!)!;
        return got === (s.named ? exp : '') ? null : path;
      }
    }
    const inUser = user || (key !== undefined && USER_DATA.has(key));
    if (Array.isArray(exp)) {
      if (!Array.isArray(got) || got.length !== exp.length) return path;
      for (let i = 0; i < exp.length; i++) {
        const d = this.diff(op, exp[i], got[i], `${path}[${i}]`, undefined, inUser);
        if (d !== null) return d;
      }
      return null;
    }
    if (exp !== null && typeof exp === 'object') {
      if (got === null || typeof got !== 'object' || Array.isArray(got)) return path;
      const a = exp as Record<string, unknown>;
      const b = got as Record<string, unknown>;
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
        const d = this.diff(op, a[k], b[k], path ? `${path}.${k}` : k, k, inUser);
        if (d !== null) return d;
      }
      return null;
    }
    return exp === got ? null : path;
  }
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
