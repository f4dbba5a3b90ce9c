/**
 * Mailboxes and names. A mailbox belongs to an id (an agent keeps its id, and so its mailbox, across
 * restarts); it is bounded, and a full one refuses the message instead of dropping anything.
 */
import { MailboxFullError, NameTakenError, InvalidRequestError } from '../core/errors.js';
import { Waiters } from '../core/waiters.js';

export interface Message {
  from: number;
  from_name: string;
  message: unknown;
  /** Per-sender sequence number, strictly increasing. */
  seq: number;
  sentAt: number;
}

interface Mailbox {
  queue: Message[];
  head: number;
  /**
   * Messages handed out under a lease, by the connection that took them: acknowledged by that
   * connection's next take, put back at the head of the mailbox when it closes first.
   */
  leases: Map<object, Message[]>;
  waiters: Waiters<void>;
}

export const NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

export class PostOffice {
  private boxes = new Map<number, Mailbox>();
  private nameToId = new Map<string, number>();
  private idToNames = new Map<number, string[]>();
  private seqs = new Map<number, number>();

  constructor(private readonly capacity: number) {}

  private box(id: number): Mailbox {
    let b = this.boxes.get(id);
    if (!b) {
      b = { queue: [], head: 0, leases: new Map(), waiters: new Waiters() };
      this.boxes.set(id, b);
    }
    return b;
  }

  size(id: number): number {
    const b = this.boxes.get(id);
    return b ? b.queue.length - b.head : 0;
  }

  /** Queues a message for `to`; throws MailboxFullError (and queues nothing) at the bound. */
  deliver(to: number, from: number, fromName: string, message: unknown): Message {
    const b = this.box(to);
    if (b.queue.length - b.head >= this.capacity) {
      throw new MailboxFullError(`mailbox of agent ${to} is full (${this.capacity} messages)`, {
        delivered_to: 0,
      });
    }
    const seq = (this.seqs.get(from) ?? 0) + 1;
    this.seqs.set(from, seq);
    const m: Message = { from, from_name: fromName, message, seq, sentAt: Date.now() };
    b.queue.push(m);
    b.waiters.wakeAll();
    return m;
  }

  /**
   * Takes up to `max` messages for `holder` (a connection). A take acknowledges the holder's previous
   * lease; with `lease`, what this take returns stays leased to the holder until its next take, so that
   * `requeueLeases` can redeliver it if the holder goes away first (the agent crashed).
   */
  take(id: number, max: number, holder: object, lease = false): Message[] {
    const b = this.boxes.get(id);
    if (!b) return [];
    b.leases.delete(holder);
    const n = Math.min(max, b.queue.length - b.head);
    const out = b.queue.slice(b.head, b.head + n);
    b.head += n;
    // Compact lazily so that taking is O(n) in what is taken, not in what is queued.
    if (b.head > 1024 && b.head * 2 > b.queue.length) {
      b.queue = b.queue.slice(b.head);
      b.head = 0;
    } else if (b.head === b.queue.length) {
      b.queue = [];
      b.head = 0;
    }
    if (lease && out.length) b.leases.set(holder, out);
    return out;
  }

  /** Puts what `holder` took under a lease and never acknowledged back at the head of the mailbox. */
  requeueLeases(id: number, holder: object): number {
    const b = this.boxes.get(id);
    const leased = b?.leases.get(holder);
    if (!b || !leased) return 0;
    b.leases.delete(holder);
    b.queue = [...leased, ...b.queue.slice(b.head)];
    b.head = 0;
    b.waiters.wakeAll();
    return leased.length;
  }

  wait(id: number, ms: number, signal: AbortSignal): Promise<void> {
    return this.box(id).waiters.wait(ms, signal);
  }

  /** Binds `name` to `id`; re-registering one's own name succeeds. */
  register(id: number, name: string): void {
    if (!NAME_RE.test(name))
      throw new InvalidRequestError(`invalid request: name must match ${NAME_RE.source}`);
    const holder = this.nameToId.get(name);
    if (holder !== undefined && holder !== id)
      throw new NameTakenError('name already registered', { agent_id: holder });
    if (holder === id) return;
    this.nameToId.set(name, id);
    const names = this.idToNames.get(id) ?? [];
    names.push(name);
    this.idToNames.set(id, names);
  }

  resolve(name: string): number | undefined {
    return this.nameToId.get(name);
  }

  /** The display name of an id: its first registered name (an agent's spawn name), or "". */
  nameOf(id: number): string {
    return this.idToNames.get(id)?.[0] ?? '';
  }

  /** Every id holding at least one name (the audience of BROADCAST). */
  named(): number[] {
    return [...this.idToNames.keys()];
  }

  /** Forgets everything of an id that is gone for good: names, mailbox, waiters. */
  release(id: number): void {
    for (const n of this.idToNames.get(id) ?? []) this.nameToId.delete(n);
    this.idToNames.delete(id);
    const b = this.boxes.get(id);
    if (b) b.waiters.wakeAll();
    this.boxes.delete(id);
    this.seqs.delete(id);
  }
}
