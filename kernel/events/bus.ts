/**
 * Publish/subscribe for kernel and custom events. Delivery copies each event into every subscriber's
 * queue at publish time; queues are bounded and count what they drop (oldest first), and a subscriber
 * may wait for the next event instead of polling.
 */
import { Waiters } from '../core/waiters.js';

export const KERNEL_EVENTS = [
  'AGENT_SPAWNED',
  'AGENT_EXITED',
  'AGENT_RESTARTING',
  'AGENT_ESCALATED',
  'AGENT_PAUSED',
  'AGENT_RESUMED',
  'STATE_CHANGED',
  'CUSTOM',
] as const;
export type KernelEventType = (typeof KERNEL_EVENTS)[number];

export interface KernelEvent {
  type: KernelEventType;
  data: Record<string, unknown>;
  source_agent_id: number;
  timestamp: number;
}

interface Subscriber {
  /** Kernel event types, `CUSTOM` (every custom event), custom names (`custom_type`), or `*`. */
  topics: Set<string>;
  queue: KernelEvent[];
  dropped: number;
  waiters: Waiters<void>;
}

export class EventBus {
  private subs = new Map<number, Subscriber>();

  constructor(private readonly queueSize: number) {}

  private sub(id: number): Subscriber {
    let s = this.subs.get(id);
    if (!s) {
      s = { topics: new Set(), queue: [], dropped: 0, waiters: new Waiters() };
      this.subs.set(id, s);
    }
    return s;
  }

  subscribe(id: number, topics: string[]): void {
    const s = this.sub(id);
    for (const t of topics) s.topics.add(t);
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

  /** Publishes an event; returns how many subscribers received it. */
  publish(type: KernelEventType, data: Record<string, unknown>, source: number): number {
    const ev: KernelEvent = { type, data, source_agent_id: source, timestamp: Date.now() };
    const custom = type === 'CUSTOM' && typeof data.custom_type === 'string' ? data.custom_type : null;
    let n = 0;
    for (const s of this.subs.values()) {
      if (!(s.topics.has('*') || s.topics.has(type) || (custom !== null && s.topics.has(custom)))) continue;
      if (s.queue.length >= this.queueSize) {
        s.queue.shift();
        s.dropped++;
      }
      s.queue.push(ev);
      s.waiters.wakeAll();
      n++;
    }
    return n;
  }

  /** Takes up to `max` queued events and the count dropped since the last poll. */
  poll(id: number, max: number): { events: KernelEvent[]; dropped: number } {
    const s = this.subs.get(id);
    if (!s) return { events: [], dropped: 0 };
    const events = s.queue.splice(0, max);
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

  /** Forgets a subscriber for good (its owner is gone). */
  drop(id: number): void {
    const s = this.subs.get(id);
    if (!s) return;
    s.waiters.wakeAll();
    this.subs.delete(id);
  }
}
