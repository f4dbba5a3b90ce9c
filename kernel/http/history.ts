/**
 * The events `GET /api/v1/events?since=` pages through: every event published on this kernel, numbered
 * from 1 as the API saw it; the newest kept, at most `capacity` events and `maxBytes` of them (custom
 * events may carry large data), the oldest going first. The kernel's event bus keeps no history: each
 * subscriber's queue is its own.
 */
export interface ApiEvent {
  seq: number;
  type: string;
  data: Record<string, unknown>;
  source_agent_id: number;
  timestamp: number;
}

export class EventHistory {
  private readonly ring: { ev: ApiEvent; bytes: number }[] = [];
  private seq = 0;
  private bytes = 0;

  constructor(
    private readonly capacity = 1000,
    private readonly maxBytes = 8 * 1024 * 1024,
  ) {}

  /** Numbers and keeps an event (one larger than `maxBytes` is numbered but not kept); returns it. */
  add(type: string, data: Record<string, unknown>, source: number): ApiEvent {
    const ev: ApiEvent = { seq: ++this.seq, type, data, source_agent_id: source, timestamp: Date.now() };
    const bytes = Buffer.byteLength(JSON.stringify(data)) + 100;
    if (bytes > this.maxBytes) return ev;
    this.ring.push({ ev, bytes });
    this.bytes += bytes;
    while (this.ring.length > this.capacity || this.bytes > this.maxBytes)
      this.bytes -= this.ring.shift()!.bytes;
    return ev;
  }

  /** The events after `since` (oldest first, at most `limit`), the newest seq there is, the oldest kept. */
  since(since: number, limit: number): { events: ApiEvent[]; last_seq: number; oldest_seq: number } {
    const from = this.ring.findIndex((e) => e.ev.seq > since);
    const events = from < 0 ? [] : this.ring.slice(from, from + limit).map((e) => e.ev);
    return { events, last_seq: this.seq, oldest_seq: this.ring[0]?.ev.seq ?? this.seq + 1 };
  }

  /** Bytes held (an estimate: the events' data as JSON). */
  get size(): { events: number; bytes: number } {
    return { events: this.ring.length, bytes: this.bytes };
  }
}
