/**
 * Publish/subscribe for kernel and custom events. Delivery copies each event (its JSON text, encoded
 * once) into every subscriber's queue at publish time; a queue is bounded in events and bytes by its
 * owner's budgets and the kernel-wide queued-bytes limit, and drops its oldest events to make room,
 * counting them (POLL_EVENTS reports `dropped`): a slow subscriber never holds up a publisher. A
 * subscriber may wait for the next event instead of polling.
 */
import { KERNEL_EVENTS, type KernelEventType } from '../../protocol/index.js';
import { overBudget, type Budgets } from '../core/budgets.js';
import { Waiters } from '../core/waiters.js';
import type { QueuedBytes } from '../ipc/mailboxes.js';

export { KERNEL_EVENTS };
export type { KernelEventType };

const KERNEL_TYPES: ReadonlySet<string> = new Set(KERNEL_EVENTS.filter((t) => t !== 'CUSTOM'));

/** True for the event types only the kernel publishes (agents may not emit them, even as custom names). */
export function isKernelEvent(name: string): boolean {
  return KERNEL_TYPES.has(name);
}

/** One queued event: its JSON text, as POLL_EVENTS puts it in the reply. */
export interface QueuedEvent {
  json: string;
  bytes: number;
}

interface Subscriber {
  /** Kernel event types, `CUSTOM` (every custom event), custom names (`custom_type`), or `*`. */
  topics: Set<string>;
  queue: QueuedEvent[];
  bytes: number;
  dropped: number;
  waiters: Waiters<void>;
}

/** Sees every event published on this kernel (a cluster re-publishes them to the other nodes). */
export type EventTap = (type: KernelEventType, data: Record<string, unknown>, source: number) => void;

export class EventBus {
  private subs = new Map<number, Subscriber>();
  private readonly taps: EventTap[] = [];

  constructor(
    private readonly budgetsOf: (id: number) => Budgets,
    private readonly memory: QueuedBytes,
  ) {}

  private sub(id: number): Subscriber {
    let s = this.subs.get(id);
    if (!s) {
      s = { topics: new Set(), queue: [], bytes: 0, dropped: 0, waiters: new Waiters() };
      this.subs.set(id, s);
    }
    return s;
  }

  /** Adds topics, within the subscriber's `subscriptions` budget (quota_exceeded, nothing added). */
  subscribe(id: number, topics: string[]): void {
    const s = this.sub(id);
    const fresh = new Set(topics.filter((t) => !s.topics.has(t)));
    const limit = this.budgetsOf(id).subscriptions;
    if (s.topics.size + fresh.size > limit)
      overBudget('subscriptions', s.topics.size, limit, 'too many topics');
    for (const t of fresh) s.topics.add(t);
  }

  /** Removes topics (all of them when `topics` is null); returns the topics actually removed. */
  unsubscribe(id: number, topics: string[] | null): string[] {
    const s = this.subs.get(id);
    if (!s) return [];
    const removed = topics === null ? [...s.topics] : topics.filter((t) => s.topics.has(t));
    for (const t of removed) s.topics.delete(t);
    return removed;
  }

  topics(id: number): string[] {
    return [...(this.subs.get(id)?.topics ?? [])];
  }

  /**
   * Publishes an event; returns how many subscribers received it. A custom event reaches subscribers of
   * `CUSTOM`, `*` and its own name, never those of a kernel event type.
   */
  publish(type: KernelEventType, data: Record<string, unknown>, source: number): number {
    for (const t of this.taps) t(type, data, source);
    return this.fanOut(type, data, source);
  }

  /**
   * Publishes an event another node published (kernel/cluster/cluster.ts): to local subscribers only,
   * never to the taps, so that it is not sent back out.
   */
  publishRemote(type: KernelEventType, data: Record<string, unknown>, source: number): number {
    return this.fanOut(type, data, source);
  }

  /** Calls `fn` with every event published on this kernel (not with events from other nodes). */
  tap(fn: EventTap): () => void {
    this.taps.push(fn);
    return () => {
      const i = this.taps.indexOf(fn);
      if (i >= 0) this.taps.splice(i, 1);
    };
  }

  private fanOut(type: KernelEventType, data: Record<string, unknown>, source: number): number {
    const custom = type === 'CUSTOM' && typeof data.custom_type === 'string' ? data.custom_type : null;
    let ev: QueuedEvent | null = null;
    let n = 0;
    for (const [id, s] of this.subs) {
      const wanted =
        s.topics.has('*') ||
        s.topics.has(type) ||
        (custom !== null && !KERNEL_TYPES.has(custom) && s.topics.has(custom));
      if (!wanted) continue;
      ev ??= encode(type, data, source);
      if (this.enqueue(id, s, ev)) n++;
    }
    return n;
  }

  /** Queues `ev` for one subscriber, dropping its oldest events (counted) until it fits; false if it never can. */
  private enqueue(id: number, s: Subscriber, ev: QueuedEvent): boolean {
    const b = this.budgetsOf(id);
    if (ev.bytes > b.event_queue_bytes) {
      s.dropped++;
      return false;
    }
    while (
      s.queue.length &&
      (s.queue.length >= b.event_queue_events ||
        s.bytes + ev.bytes > b.event_queue_bytes ||
        !this.memory.fits(ev.bytes))
    ) {
      const old = s.queue.shift()!;
      s.bytes -= old.bytes;
      this.memory.give(old.bytes);
      s.dropped++;
    }
    if (!this.memory.fits(ev.bytes)) {
      s.dropped++;
      return false;
    }
    this.memory.take(ev.bytes, 'event queues');
    s.queue.push(ev);
    s.bytes += ev.bytes;
    s.waiters.wakeAll();
    return true;
  }

  /**
   * Takes up to `max` queued events, no more than `maxBytes` of them (but always the first), and the
   * count dropped since the last poll.
   */
  poll(
    id: number,
    max: number,
    maxBytes = Number.POSITIVE_INFINITY,
  ): { events: QueuedEvent[]; dropped: number } {
    const s = this.subs.get(id);
    if (!s) return { events: [], dropped: 0 };
    let n = 0;
    let bytes = 0;
    while (n < Math.min(max, s.queue.length)) {
      const e = s.queue[n];
      if (n > 0 && bytes + e.bytes > maxBytes) break;
      bytes += e.bytes;
      n++;
    }
    const events = s.queue.splice(0, n);
    s.bytes -= bytes;
    this.memory.give(bytes);
    const dropped = s.dropped;
    s.dropped = 0;
    return { events, dropped };
  }

  pending(id: number): number {
    return this.subs.get(id)?.queue.length ?? 0;
  }

  /** Resolves when an event is queued for `id` or after `ms`; `signal` cancels the wait. */
  wait(id: number, ms: number, signal: AbortSignal): Promise<void> {
    return this.sub(id).waiters.wait(ms, signal);
  }

  /** Forgets a subscriber for good (its owner is gone); its queued bytes come free. */
  drop(id: number): void {
    const s = this.subs.get(id);
    if (!s) return;
    this.memory.give(s.bytes);
    s.waiters.wakeAll();
    this.subs.delete(id);
  }
}

function encode(type: string, data: Record<string, unknown>, source: number): QueuedEvent {
  const json = JSON.stringify({ type, data, source_agent_id: source, timestamp: Date.now() });
  return { json, bytes: Buffer.byteLength(json) };
}
