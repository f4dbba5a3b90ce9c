/**
 * Durable execution (docs/durable.md): journaled steps. A caller opens a step with a key of its own
 * (STEP_BEGIN); while it is open on its connection, every call of a journaled opcode (the contract's
 * `journaled`: THINK, HTTP, EXEC) passes through `run`, which the dispatcher wraps around the handler:
 *
 * - call n of the step, when the journal holds a call n with the same request hash, is answered with the
 *   reply the journal holds (the bytes sent the first time), without running the handler: no provider,
 *   network or shell is reached and nothing is charged against quotas; each is audited (RESOURCE
 *   STEP_REPLAYED);
 * - a call n whose request differs from the journal's call n is a divergence: refused with
 *   `journal_diverged` (nothing done, the step stays at n), or with `on_divergence: truncate` the
 *   journal is cut at n and the call goes live;
 * - a call beyond the journal's end runs live; the reply it returned is appended as call n. An error
 *   reply is never journaled and takes no position (a retry of the same call takes the same position),
 *   nor is a reply finished after the caller's connection closed (the call was cut short: EXEC killed
 *   its command, THINK and HTTP were cancelled; the caller never saw it).
 *
 * Whose journal: an agent's identity (`<name>#<serial>`, the same across its restarts and the
 * kernel's; never another agent's, so no agent can read or replay another's journal), or `operator`
 * (every operator connection); clients have no identity that outlives their connection and are refused.
 * Steps nest on a connection (the innermost takes the calls); one key is open on one connection at a
 * time. A durable agent (SPAWN `durable`) has one more step, `@run`, shared by all connections of its
 * current process and taking every journaled call made outside an explicit step: it restarts at
 * position 0 with each process, is forgotten when a process ends on its own with exit code 0, and
 * truncates on divergence (an agent that knows nothing of journals cannot handle `journal_diverged`).
 * Journaled calls of one step run one after another, in the order they reached the kernel.
 */
import crypto from 'node:crypto';
import type { Logger } from 'pino';
import type { ArgsOf, OpName, Replies } from '../../protocol/index.js';
import type { AuditLog } from '../audit/log.js';
import { overBudget } from '../core/budgets.js';
import type { Caller, SyscallContext } from '../core/context.js';
import {
  InvalidRequestError,
  InvalidStateError,
  JournalDivergedError,
  NotFoundError,
  PermissionDeniedError,
} from '../core/errors.js';
import { JournalStore, STEP_OVERHEAD, type StepRow } from './store.js';

/** The implicit step of a durable agent's process. */
export const RUN_KEY = '@run';
/** Steps open at once on one connection. */
export const MAX_DEPTH = 16;
/** Steps STEP_STATUS lists. */
const LIST_MAX = 1000;

export interface JournalDeps {
  /** `<data-dir>/state.db`. */
  dbPath: string;
  durability: 'normal' | 'full';
  /** A principal's `journal_bytes` budget (Infinity: unlimited). */
  budget(id: number): number;
  /** A live agent by id or name: its id and identity (operators' STEP_STATUS / STEP_CLEAR `agent_id`, `name`). */
  agent(target: { id?: number; name?: string }): { id: number; identity: string } | undefined;
  audit: AuditLog;
  log: Logger;
}

/** An opening of a step: where its calls are in the journal. */
interface Cursor {
  owner: string;
  key: string;
  /** Journaled calls made in this opening (replayed or live): the next is position + 1. */
  position: number;
  replayed: number;
  live: number;
  onDivergence: 'error' | 'truncate';
  /** The last journaled call of this opening: the next waits for it. */
  tail: Promise<unknown>;
}

type Reply = unknown;

/** A JSON value as text with object keys sorted: the same request always hashes the same. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object' && !Buffer.isBuffer(v)) {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .filter((k) => o[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** The hash a journal compares: the opcode and the validated request (defaults filled in). */
export function requestHash(op: string, req: unknown): string {
  return crypto
    .createHash('sha256')
    .update(`${op}\n${canonical(req)}`)
    .digest('hex');
}

/** A reply as the text the journal keeps (and sends again, byte for byte). */
function replyText(reply: Reply): string {
  if (Buffer.isBuffer(reply)) return reply.toString('utf8');
  if (typeof reply === 'string') return reply;
  return JSON.stringify(reply ?? null);
}

export class Journal {
  private readonly store: JournalStore;
  /** Explicit steps open on each connection (keyed by its close signal), innermost last. */
  private readonly stacks = new WeakMap<AbortSignal, Cursor[]>();
  /** Explicit steps open anywhere: `owner \0 key` → its cursor (one connection at a time). */
  private readonly open = new Map<string, Cursor>();
  /** The `@run` step of each durable agent's current process, by identity. */
  private readonly runs = new Map<string, Cursor>();

  constructor(private readonly deps: JournalDeps) {
    this.store = new JournalStore({ path: deps.dbPath, durability: deps.durability });
  }

  close(): void {
    this.store.close();
  }

  // ---- the dispatcher's hook ----

  /**
   * Runs one call of a journaled opcode: `call()` (the handler) at once when no step takes the call,
   * else in its step's order, answered from the journal or made live and journaled. Throws (the
   * dispatcher turns it into the error reply) a divergence, an async call, a full journal.
   */
  run(ctx: SyscallContext, op: OpName, req: unknown, call: () => Reply | Promise<Reply>): Reply {
    const cursor = this.cursorOf(ctx);
    if (!cursor) return call();
    if ((req as { async?: unknown }).async === true)
      throw new InvalidRequestError(
        `invalid request: ${op} with async: true cannot be journaled; inside step '${cursor.key}' make the call without async`,
      );
    const next = cursor.tail.then(() => this.journaled(cursor, ctx, op, req, call));
    cursor.tail = next.catch(() => undefined);
    return next;
  }

  private cursorOf(ctx: SyscallContext): Cursor | undefined {
    const stack = this.stacks.get(ctx.signal);
    if (stack?.length) return stack[stack.length - 1];
    const c = ctx.caller;
    return c.role === 'agent' && c.identity ? this.runs.get(c.identity) : undefined;
  }

  private async journaled(
    cursor: Cursor,
    ctx: SyscallContext,
    op: OpName,
    req: unknown,
    call: () => Reply | Promise<Reply>,
  ): Promise<Reply> {
    const { owner, key } = cursor;
    const hash = requestHash(op, req);
    const pos = cursor.position + 1;
    const held = this.store.entry(owner, key, pos);
    if (held) {
      if (held.op === op && held.hash === hash) {
        cursor.position = pos;
        cursor.replayed++;
        this.deps.audit.record({
          category: 'RESOURCE',
          event_type: 'STEP_REPLAYED',
          agent_id: ctx.caller.id,
          agent_name: ctx.caller.name,
          success: true,
          details: { syscall: op, owner, key, position: pos },
        });
        return Buffer.from(held.reply, 'utf8');
      }
      const what =
        held.op === op
          ? `${op} with another request than the journal's`
          : `${op} where the journal has ${held.op}`;
      if (cursor.onDivergence === 'error')
        throw new JournalDivergedError(
          `journal diverged: call ${pos} of step '${key}' is ${what}; nothing was done (open the step with fresh or on_divergence: truncate, or STEP_CLEAR it)`,
          { key, position: pos, journaled_op: held.op, op },
        );
      this.store.truncate(owner, key, pos);
      this.deps.audit.record({
        category: 'RESOURCE',
        event_type: 'STEP_TRUNCATED',
        agent_id: ctx.caller.id,
        agent_name: ctx.caller.name,
        success: true,
        details: { syscall: op, owner, key, position: pos, journaled_op: held.op },
      });
      this.deps.log.info(
        { owner, key, position: pos, op, journaled_op: held.op },
        'journal diverged: truncated',
      );
    }
    this.checkBudget(ctx.caller.id, owner, 0);
    const reply = await call();
    // Cut short by the connection closing (EXEC killed its command): the caller never saw it.
    if (ctx.signal.aborted) return reply;
    try {
      this.store.append(owner, key, pos, op, hash, replyText(reply));
      cursor.position = pos;
      cursor.live++;
    } catch (e) {
      // The call happened and its reply goes out; only a later replay will make it again.
      this.deps.log.error({ owner, key, position: pos, err: (e as Error).message }, 'cannot journal a call');
    }
    return reply;
  }

  /** Refuses to take more journal for `owner` when it holds its budget already (`adding` more). */
  private checkBudget(callerId: number, owner: string, adding: number): void {
    const limit = this.deps.budget(callerId);
    if (!Number.isFinite(limit)) return;
    const used = this.store.totals(owner).bytes;
    if (used + adding > limit || (adding === 0 && used >= limit))
      overBudget('journal_bytes', used, limit, `the journal of ${owner} is full`);
  }

  // ---- whose journal ----

  /** The caller's own journal. */
  private ownerOf(caller: Caller): string {
    if (caller.role === 'operator') return 'operator';
    if (caller.role === 'agent' && caller.identity) return caller.identity;
    throw new PermissionDeniedError(
      'Permission denied: journaled steps belong to an agent identity or the operator; a client has no identity that outlives its connection',
    );
  }

  /** The journal STEP_STATUS / STEP_CLEAR address: the caller's own, or (operators) an agent's. */
  private target(
    caller: Caller,
    req: { agent_id?: number; name?: string },
    what: string,
  ): { owner: string; id: number } {
    if (!req.agent_id && !req.name) return { owner: this.ownerOf(caller), id: caller.id };
    const a = this.deps.agent(req.agent_id ? { id: req.agent_id } : { name: req.name });
    if (a && caller.role === 'agent' && a.identity === caller.identity)
      return { owner: a.identity, id: a.id };
    if (caller.role !== 'operator')
      throw new PermissionDeniedError(
        `Permission denied: only an operator may ${what} another agent's journal`,
      );
    if (!a) throw new NotFoundError(`no such agent: ${req.agent_id ?? req.name}`);
    return { owner: a.identity, id: a.id };
  }

  private isOpen(owner: string, key: string): boolean {
    return this.open.has(`${owner}\0${key}`) || (key === RUN_KEY && this.runs.has(owner));
  }

  // ---- the journal family ----

  begin(ctx: SyscallContext, req: ArgsOf['STEP_BEGIN']): Replies['STEP_BEGIN'] {
    const owner = this.ownerOf(ctx.caller);
    if (ctx.transport.kind === 'http' || ctx.transport.kind === 'replay')
      throw new InvalidStateError(
        `a step is opened on a connection of its own; ${ctx.transport.kind} calls have none`,
      );
    const { key } = req;
    const id = `${owner}\0${key}`;
    const stack = this.stacks.get(ctx.signal) ?? [];
    if (this.open.has(id))
      throw new InvalidStateError(
        `step '${key}' of ${owner} is already open on ${stack.some((c) => c.key === key) ? 'this connection' : 'another connection'}`,
      );
    if (stack.length >= MAX_DEPTH)
      throw new InvalidStateError(`steps nest at most ${MAX_DEPTH} deep on one connection`);
    const before = req.fresh ? undefined : this.store.step(owner, key);
    if (!before) this.checkBudget(ctx.caller.id, owner, STEP_OVERHEAD);
    const row = this.store.open(owner, key, req.fresh);
    const cursor: Cursor = {
      owner,
      key,
      position: 0,
      replayed: 0,
      live: 0,
      onDivergence: req.on_divergence,
      tail: Promise.resolve(),
    };
    if (!stack.length) {
      this.stacks.set(ctx.signal, stack);
      // Its steps close with the connection (their journals stay, in progress unless ended).
      ctx.onClose(() => this.closeSite(ctx.signal));
    }
    stack.push(cursor);
    this.open.set(id, cursor);
    return {
      success: true,
      key,
      state: row.entries === 0 ? 'new' : row.state === 'completed' ? 'completed' : 'in_progress',
      entries: row.entries,
      depth: stack.length,
    };
  }

  private closeSite(site: AbortSignal): void {
    for (const c of this.stacks.get(site) ?? []) this.open.delete(`${c.owner}\0${c.key}`);
    this.stacks.delete(site);
  }

  async end(ctx: SyscallContext, req: ArgsOf['STEP_END']): Promise<Replies['STEP_END']> {
    const owner = this.ownerOf(ctx.caller);
    const stack = this.stacks.get(ctx.signal);
    const top = stack?.[stack.length - 1];
    if (!top) throw new InvalidStateError('no step is open on this connection');
    if (req.key !== undefined && req.key !== top.key)
      throw new InvalidStateError(`the innermost open step is '${top.key}', not '${req.key}'`);
    await top.tail;
    stack!.pop();
    this.open.delete(`${owner}\0${top.key}`);
    const base = { success: true as const, key: top.key, replayed: top.replayed, live: top.live };
    if (req.clear) {
      this.store.clear(owner, top.key);
      return { ...base, state: 'cleared', entries: 0 };
    }
    if (req.complete) {
      // A completed step is what this opening made of it: calls journaled beyond it are stale.
      const row = this.store.step(owner, top.key);
      if (row && row.entries > top.position) this.store.truncate(owner, top.key, top.position + 1);
    }
    this.store.mark(owner, top.key, req.complete ? 'completed' : 'in_progress');
    const row = this.store.step(owner, top.key);
    return { ...base, state: req.complete ? 'completed' : 'in_progress', entries: row?.entries ?? 0 };
  }

  status(ctx: SyscallContext, req: ArgsOf['STEP_STATUS']): Replies['STEP_STATUS'] {
    const { owner, id } = this.target(ctx.caller, req, 'read');
    const rows: StepRow[] =
      req.key !== undefined
        ? [this.store.step(owner, req.key)].filter((r): r is StepRow => r !== undefined)
        : this.store.steps(owner, LIST_MAX);
    const mine = new Map((this.stacks.get(ctx.signal) ?? []).map((c) => [`${c.owner}\0${c.key}`, c]));
    const run =
      ctx.caller.role === 'agent' && ctx.caller.identity === owner ? this.runs.get(owner) : undefined;
    const totals = this.store.totals(owner);
    const limit = this.deps.budget(id);
    return {
      success: true,
      owner,
      steps: rows.map((r) => {
        const here = mine.get(`${owner}\0${r.key}`) ?? (r.key === RUN_KEY ? run : undefined);
        return { ...r, open: this.isOpen(owner, r.key), ...(here ? { position: here.position } : {}) };
      }),
      entries: totals.entries,
      bytes: totals.bytes,
      limit: Number.isFinite(limit) ? limit : null,
    };
  }

  clear(ctx: SyscallContext, req: ArgsOf['STEP_CLEAR']): Replies['STEP_CLEAR'] {
    const { owner } = this.target(ctx.caller, req, 'clear');
    const n = this.store.clear(owner, req.key);
    // A step open now goes on from an empty journal.
    const cursors = [...this.open.values(), ...this.runs.values()];
    for (const c of cursors)
      if (c.owner === owner && (req.key === undefined || c.key === req.key)) c.position = 0;
    if (owner !== this.ownerOf(ctx.caller))
      this.deps.audit.record({
        category: 'SECURITY',
        event_type: 'JOURNAL_CLEARED',
        agent_id: ctx.caller.id,
        agent_name: ctx.caller.name,
        success: true,
        details: { owner, key: req.key ?? null, steps: n.steps, entries: n.entries },
      });
    return { success: true, owner, cleared: n.steps, entries: n.entries };
  }

  // ---- agents' lives (kernel.ts wires these to the supervisor and the identity registry) ----

  /** A process of an agent started: a durable one runs in `@run` from position 0. */
  processStarted(identity: string, durable: boolean): void {
    this.runs.delete(identity);
    if (!durable) return;
    try {
      this.store.open(identity, RUN_KEY, false);
    } catch (e) {
      // Its calls then go unjournaled this run (the agent runs regardless): said loudly.
      this.deps.log.error(
        { identity, err: (e as Error).message },
        'cannot open the run journal of a durable agent',
      );
      return;
    }
    this.runs.set(identity, {
      owner: identity,
      key: RUN_KEY,
      position: 0,
      replayed: 0,
      live: 0,
      onDivergence: 'truncate',
      tail: Promise.resolve(),
    });
  }

  /** A process of an agent ended; `finished`: on its own, exit code 0 (its `@run` journal is done with). */
  processExited(identity: string, finished: boolean): void {
    if (!this.runs.delete(identity) || !finished) return;
    try {
      this.store.clear(identity, RUN_KEY);
    } catch (e) {
      this.deps.log.error({ identity, err: (e as Error).message }, 'cannot forget a finished run journal');
    }
  }

  /** An identity ended for good: its journal goes. */
  identityEnded(identity: string): void {
    this.runs.delete(identity);
    try {
      this.store.clear(identity);
    } catch (e) {
      this.deps.log.error(
        { identity, err: (e as Error).message },
        'cannot drop the journal of an ended identity',
      );
    }
  }

  /** Drops the journals of identities that are not live (one ended while a kernel was dying). */
  sweep(live: Iterable<string>): number {
    const keep = new Set(live);
    let n = 0;
    for (const owner of this.store.owners())
      if (owner !== 'operator' && !keep.has(owner)) n += this.store.clear(owner).steps;
    return n;
  }
}
