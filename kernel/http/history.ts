/**
 * The events `GET /api/v1/events?since=` pages through: every event published on this kernel, numbered
 * from 1 as the API saw it, the newest `capacity` kept (the kernel's event bus keeps no history: each
 * subscriber's queue is its own).
 */
export interface ApiEvent {
  seq: number;
  type: string;
  data: Record<string, unknown>;
  source_agent_id: number;
  timestamp: number;
}

export class EventHistory {
  private readonly ring: ApiEvent[] = [];
  private seq = 0;

  constructor(private readonly capacity = 1000) {}

  /** Numbers and keeps an event; returns it. */
  add(type: string, data: Record<string, unknown>, source: number): ApiEvent {
    const ev: ApiEvent = { seq: ++this.seq, type, data, source_agent_id: source, timestamp: Date.now() };
    this.ring.push(ev);
    if (this.ring.length > this.capacity) this.ring.shift();
    return ev;
  }

  /** The events after `since` (oldest first, at most `limit`), and the newest seq there is. */
  since(since: number, limit: number): { events: ApiEvent[]; last_seq: number; oldest_seq: number } {
    const from = this.ring.findIndex((e) => e.seq > since);
    const events = from < 0 ? [] : this.ring.slice(from, from + limit);
    return { events, last_seq: this.seq, oldest_seq: this.ring[0]?.seq ?? this.seq + 1 };
  }
}
