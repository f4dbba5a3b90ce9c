/**
 * Calls made with `async: true` (EXEC, HTTP, THINK): the kernel accepts at once with a request id, runs
 * the call, and keeps its reply until the caller takes it with ASYNC_RESULTS. What one principal may
 * have running or waiting is its `async_requests` budget; a principal gone for good loses its results.
 */
import { overBudget } from './budgets.js';
import { errorReply, InvalidRequestError } from './errors.js';
import { Waiters } from './waiters.js';

export interface AsyncResult {
  request_id: number;
  opcode: number;
  opcode_name: string;
  /** The JSON text of the reply the call would have given synchronously. */
  json: string;
}

interface Slot {
  /** Aborted when the principal is gone for good: what it still runs is cancelled. */
  gone: AbortController;
  nextId: number;
  running: Set<number>;
  done: AsyncResult[];
  waiters: Waiters<void>;
}

export class AsyncCalls {
  private slots = new Map<number, Slot>();

  constructor(
    private readonly limitOf: (id: number) => number,
    /** Told of every failed call (the kernel audits the denials among them, as the dispatcher does). */
    private readonly failed: (
      caller: { id: number; name: string; role: string },
      op: string,
      reply: Record<string, unknown>,
    ) => void = () => {},
  ) {}

  private slot(id: number): Slot {
    let s = this.slots.get(id);
    if (!s) {
      s = { gone: new AbortController(), nextId: 1, running: new Set(), done: [], waiters: new Waiters() };
      this.slots.set(id, s);
    }
    return s;
  }

  /**
   * Starts `run` for principal `id` and returns its request id at once (the caller's own when it gave a
   * non-zero one that is not in use). Over the principal's budget: quota_exceeded, nothing started.
   */
  start(
    caller: { id: number; name: string; role: string },
    op: { code: number; name: string },
    requested: number | undefined,
    run: (signal: AbortSignal) => Promise<unknown>,
  ): number {
    const id = caller.id;
    const s = this.slot(id);
    const limit = this.limitOf(id);
    const used = s.running.size + s.done.length;
    if (used >= limit)
      overBudget('async_requests', used, limit, 'too many async calls running or not yet taken');
    let rid = requested ?? 0;
    if (rid && (s.running.has(rid) || s.done.some((r) => r.request_id === rid)))
      throw new InvalidRequestError(`invalid request: request_id ${rid} is already in use`);
    if (!rid) {
      while (s.running.has(s.nextId) || s.done.some((r) => r.request_id === s.nextId)) s.nextId++;
      rid = s.nextId++;
    }
    s.running.add(rid);
    const finish = (reply: unknown) => {
      if (this.slots.get(id) !== s) return; // its principal is gone
      s.running.delete(rid);
      s.done.push({ request_id: rid, opcode: op.code, opcode_name: op.name, json: JSON.stringify(reply) });
      s.waiters.wakeAll();
    };
    run(s.gone.signal).then(finish, (e: unknown) => {
      const reply = errorReply(e);
      this.failed(caller, op.name, reply);
      finish(reply);
    });
    return rid;
  }

  /** Takes up to `max` finished results. */
  take(id: number, max: number): AsyncResult[] {
    const s = this.slots.get(id);
    return s ? s.done.splice(0, max) : [];
  }

  pending(id: number): number {
    return this.slots.get(id)?.running.size ?? 0;
  }

  ready(id: number): number {
    return this.slots.get(id)?.done.length ?? 0;
  }

  wait(id: number, ms: number, signal: AbortSignal): Promise<void> {
    return this.slot(id).waiters.wait(ms, signal);
  }

  /** Forgets a principal gone for good: what it still runs finishes unseen. */
  drop(id: number): void {
    const s = this.slots.get(id);
    if (!s) return;
    s.gone.abort();
    s.waiters.wakeAll();
    this.slots.delete(id);
  }
}
