/**
 * Streamed THINKs (THINK_STREAM, THINK_STREAM_NEXT, THINK_STREAM_CANCEL): the pieces of an answer wait
 * here, per stream, until their caller takes them. A stream belongs to the identity that opened it (any
 * other caller is told `not_found`); one identity has at most `maxPerOwner` streams open. The buffer
 * holds no more than the answer itself (adjacent pieces are merged, and the answer is cut at the
 * provider call's own bound), and a stream goes when its end has been taken, when it is cancelled, when
 * nobody has asked for it for `idleMs`, or when its owner is gone (dropOwner). A stream that goes before
 * its call finished aborts the call (the kernel hangs up on the provider).
 */
import { NotFoundError, QuotaExceededError } from '../../core/family.js';
import type { Replies } from '../../../protocol/index.js';
import type { Delta } from './providers.js';

type ThinkResult = Replies['THINK'];
export type NextReply = Replies['THINK_STREAM_NEXT'];

/** Runs the stream's call: `signal` aborts it, `onDelta` hears its pieces. */
export type StartCall = (signal: AbortSignal, onDelta: (d: Delta) => void) => Promise<ThinkResult>;

/** How a parked THINK_STREAM_NEXT waits (the caller's `park`: watchdog activity, the connection closing). */
export type Park = (
  ready: () => boolean,
  wait: (ms: number, signal: AbortSignal) => Promise<unknown>,
  timeoutMs: number,
) => Promise<void>;

export interface StreamOptions {
  maxPerOwner: number;
  idleMs: number;
}

interface Stream {
  id: number;
  owner: number;
  deltas: Delta[];
  state: 'running' | 'done' | 'failed';
  result?: ThinkResult;
  error?: unknown;
  /** Aborts the provider call (cancel, idle, the owner gone). */
  ctl: AbortController;
  /** THINK_STREAM_NEXT calls parked on it, each woken when a piece or the end comes. */
  wakers: Set<() => void>;
  parked: number;
  timer: NodeJS.Timeout;
  gone: boolean;
}

export class ThinkStreams {
  private readonly streams = new Map<number, Stream>();
  private readonly byOwner = new Map<number, Set<Stream>>();
  private nextId = 1;

  constructor(private readonly o: StreamOptions) {}

  /** Refuses (quota_exceeded, budget `llm_streams`) when `owner` has as many streams open as it may. */
  checkRoom(owner: number): void {
    const open = this.byOwner.get(owner)?.size ?? 0;
    if (open >= this.o.maxPerOwner)
      throw new QuotaExceededError(
        `quota exceeded: THINK streams open (budget llm_streams: ${open} of ${this.o.maxPerOwner}); take a stream to its end or cancel it`,
        { budget: 'llm_streams', used: open, limit: this.o.maxPerOwner },
      );
  }

  /** Opens a stream for `owner` and starts its call; returns the stream's id at once. */
  open(owner: number, start: StartCall): number {
    this.checkRoom(owner);
    const s: Stream = {
      id: this.nextId++,
      owner,
      deltas: [],
      state: 'running',
      ctl: new AbortController(),
      wakers: new Set(),
      parked: 0,
      timer: setTimeout(() => this.idle(s), this.o.idleMs),
      gone: false,
    };
    s.timer.unref();
    this.streams.set(s.id, s);
    let mine = this.byOwner.get(owner);
    if (!mine) this.byOwner.set(owner, (mine = new Set()));
    mine.add(s);
    start(s.ctl.signal, (d) => this.push(s, d)).then(
      (result) => this.end(s, 'done', result),
      (e: unknown) => this.end(s, 'failed', undefined, e),
    );
    return s.id;
  }

  /**
   * THINK_STREAM_NEXT: what is buffered, waiting up to `waitMs` for something when nothing is. The reply
   * that says `done` carries THINK's reply and ends the stream; a failed call is thrown (THINK's error),
   * once the pieces that came before the failure have been taken.
   */
  async next(owner: number, id: number, waitMs: number, park: Park, closed: AbortSignal): Promise<NextReply> {
    const s = this.mine(owner, id);
    const ready = (): boolean => s.gone || s.deltas.length > 0 || s.state !== 'running';
    if (!ready() && waitMs > 0) {
      s.parked++;
      try {
        await park(ready, (ms, signal) => this.sleep(s, ms, signal), waitMs);
      } finally {
        s.parked--;
        s.timer.refresh();
      }
    }
    // The connection closed while waiting: the reply goes nowhere, so nothing is taken.
    if (closed.aborted) return { success: true, deltas: [], done: false };
    if (s.gone)
      throw new NotFoundError(
        `THINK stream ${id} ended while this call waited (cancelled, dropped, or its end taken by another call)`,
      );
    s.timer.refresh();
    const deltas = s.deltas.splice(0);
    if (s.state === 'failed' && !deltas.length) {
      this.drop(s);
      throw s.error;
    }
    if (s.state === 'done') {
      this.drop(s);
      return { success: true, deltas, done: true, result: s.result! };
    }
    return { success: true, deltas, done: false };
  }

  /** THINK_STREAM_CANCEL: ends the stream, aborting its call if it is still waiting or running. */
  cancel(owner: number, id: number): { success: true; cancelled: boolean } {
    const s = this.mine(owner, id);
    const running = s.state === 'running';
    this.drop(s);
    return { success: true, cancelled: running };
  }

  /** Drops every stream of an identity that is gone (an agent that ended, a client's closed connection). */
  dropOwner(owner: number): void {
    for (const s of [...(this.byOwner.get(owner) ?? [])]) this.drop(s);
  }

  close(): void {
    for (const s of [...this.streams.values()]) this.drop(s);
  }

  // -------------------------------------------------------------------------------------------------

  /** The caller's stream `id`; anybody else's is as unknown as one that never was. */
  private mine(owner: number, id: number): Stream {
    const s = this.streams.get(id);
    if (!s || s.owner !== owner)
      throw new NotFoundError(
        `no THINK stream ${id} of this caller (finished, cancelled, idle too long, or never opened)`,
      );
    return s;
  }

  /** Buffers a piece: a piece of text after text, or of a call's arguments after the same call's, extends it. */
  private push(s: Stream, d: Delta): void {
    if (s.gone) return;
    const last = s.deltas[s.deltas.length - 1];
    if (last && 'content' in d && 'content' in last) last.content += d.content;
    else if (
      last &&
      'tool_call' in d &&
      'tool_call' in last &&
      last.tool_call.index === d.tool_call.index &&
      d.tool_call.id === undefined &&
      d.tool_call.name === undefined
    )
      last.tool_call.arguments = (last.tool_call.arguments ?? '') + (d.tool_call.arguments ?? '');
    else s.deltas.push('content' in d ? { content: d.content } : { tool_call: { ...d.tool_call } });
    this.wake(s);
  }

  private end(s: Stream, state: 'done' | 'failed', result?: ThinkResult, error?: unknown): void {
    if (s.gone) return;
    s.state = state;
    s.result = result;
    s.error = error;
    this.wake(s);
  }

  private sleep(s: Stream, ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        s.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      s.wakers.add(done);
    });
  }

  private wake(s: Stream): void {
    for (const w of [...s.wakers]) w();
  }

  /** Nobody asked for the stream for `idleMs`: dropped, unless a THINK_STREAM_NEXT is waiting on it. */
  private idle(s: Stream): void {
    if (s.gone) return;
    if (s.parked > 0) s.timer.refresh();
    else this.drop(s);
  }

  private drop(s: Stream): void {
    if (s.gone) return;
    s.gone = true;
    clearTimeout(s.timer);
    this.streams.delete(s.id);
    const mine = this.byOwner.get(s.owner);
    mine?.delete(s);
    if (mine && !mine.size) this.byOwner.delete(s.owner);
    s.deltas = [];
    // Still running: the scheduler takes a waiting call out of its queue, or aborts a running one.
    if (s.state === 'running') s.ctl.abort();
    this.wake(s);
  }
}
