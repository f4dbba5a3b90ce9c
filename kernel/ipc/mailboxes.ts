/**
 * Mailboxes and names. A mailbox belongs to an id (an agent keeps its id, and so its mailbox, across
 * restarts). Every message is held as its JSON text, counted in bytes three ways — against the
 * recipient's mailbox budget, the sender's outbox budget and the kernel-wide queued-bytes limit — so the
 * kernel's memory is bounded by design; a message over any bound is refused (nothing is dropped).
 */
import type { Budgets } from '../core/budgets.js';
import { overBudget } from '../core/budgets.js';
import { MailboxFullError, NameTakenError, InvalidRequestError } from '../core/errors.js';
import { Waiters } from '../core/waiters.js';
import { NAME_PATTERN } from '../../protocol/index.js';

export interface Message {
  from: number;
  from_name: string;
  /** The message as JSON text (what RECV puts in its reply, byte for byte). */
  json: string;
  /** UTF-8 bytes of `json`: what the message costs. */
  bytes: number;
  /** Per-sender sequence number, strictly increasing. */
  seq: number;
  sentAt: number;
}

interface Mailbox {
  queue: Message[];
  head: number;
  /** Bytes held for this id: queued messages and messages taken under a lease not yet acknowledged. */
  bytes: number;
  /**
   * Messages handed out under a lease, by the connection that took them: acknowledged by that
   * connection's next take, put back at the head of the mailbox when it closes first.
   */
  leases: Map<object, Message[]>;
  waiters: Waiters<void>;
}

/** Bytes of messages and events held by the whole kernel, against one limit. */
export class QueuedBytes {
  used = 0;
  constructor(readonly limit: number) {}

  /** Takes `n` bytes or throws quota_exceeded (nothing taken). */
  take(n: number, what: string): void {
    if (this.used + n > this.limit) overBudget('kernel_queued_bytes', this.used, this.limit, what);
    this.used += n;
  }

  /** Whether `n` more bytes fit. */
  fits(n: number): boolean {
    return this.used + n <= this.limit;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

export const NAME_RE = new RegExp(NAME_PATTERN);

/**
 * Whether an agent in `state` may be sent to: running, paused or being restarted (its mailbox waits for
 * it), not FAILED or STOPPED. The ipc family and the fast path's reachability both ask this.
 */
export function reachableState(state: string): boolean {
  return state !== 'FAILED' && state !== 'STOPPED';
}

/**
 * A taken message's fields as RECV replies and PUSH frames carry them (without braces: a PUSH puts
 * `"kind"` in front). Its stored JSON text is spliced in: nothing is parsed or encoded again.
 */
export function messageFields(m: Message, now: number): string {
  return `"from":${m.from},"from_name":${JSON.stringify(m.from_name)},"message":${m.json},"age_ms":${now - m.sentAt},"seq":${m.seq}`;
}

/**
 * The mailboxes and names the kernel's services use: PostOffice (JavaScript) or, with the fast path,
 * NativePostOffice (kernel/ipc/native-mail.ts) over the addon's store shared with the reactor.
 * `holder` is whoever takes under a lease (a connection's close signal, a pusher).
 */
export interface Mail {
  size(id: number): number;
  bytes(id: number): number;
  deliver(to: number, from: number, fromName: string, json: string): Message;
  take(id: number, max: number, holder: object, lease?: boolean, maxBytes?: number): Message[];
  requeueLeases(id: number, holder: object): number;
  wait(id: number, ms: number, signal: AbortSignal): Promise<void>;
  register(id: number, name: string, maxExtra?: number): void;
  unregister(id: number, name: string): boolean;
  resolve(name: string): number | undefined;
  nameOf(id: number): string;
  named(): number[];
  release(id: number): void;
}

export class PostOffice implements Mail {
  private boxes = new Map<number, Mailbox>();
  private nameToId = new Map<string, number>();
  private idToNames = new Map<number, string[]>();
  private seqs = new Map<number, number>();
  /** Bytes each sender has queued in mailboxes and not yet seen received. */
  private outbox = new Map<number, number>();

  constructor(
    private readonly budgetsOf: (id: number) => Budgets,
    private readonly memory: QueuedBytes,
  ) {}

  private box(id: number): Mailbox {
    let b = this.boxes.get(id);
    if (!b) {
      b = { queue: [], head: 0, bytes: 0, leases: new Map(), waiters: new Waiters() };
      this.boxes.set(id, b);
    }
    return b;
  }

  size(id: number): number {
    const b = this.boxes.get(id);
    return b ? b.queue.length - b.head : 0;
  }

  /** Bytes held in `id`'s mailbox (queued and leased). */
  bytes(id: number): number {
    return this.boxes.get(id)?.bytes ?? 0;
  }

  /**
   * Queues a message (its JSON text) for `to`. Refused, with nothing queued, when `to`'s mailbox is at
   * its message or byte budget (mailbox_full), the sender's outbox budget is spent, or the kernel holds
   * its limit of queued bytes (quota_exceeded).
   */
  deliver(to: number, from: number, fromName: string, json: string): Message {
    const bytes = Buffer.byteLength(json);
    const b = this.box(to);
    const dest = this.budgetsOf(to);
    const queued = b.queue.length - b.head;
    if (queued >= dest.mailbox_messages || b.bytes + bytes > dest.mailbox_bytes) {
      throw new MailboxFullError(
        `mailbox of agent ${to} is full (${queued} messages, ${b.bytes} bytes; limits ${dest.mailbox_messages} messages, ${dest.mailbox_bytes} bytes)`,
        {
          delivered_to: 0,
          messages: queued,
          bytes: b.bytes,
          limit_messages: dest.mailbox_messages,
          limit_bytes: dest.mailbox_bytes,
        },
      );
    }
    const sent = this.outbox.get(from) ?? 0;
    const limit = this.budgetsOf(from).outbox_bytes;
    if (sent + bytes > limit)
      overBudget('outbox_bytes', sent, limit, 'messages you queued are not yet received');
    this.memory.take(bytes, 'the kernel holds its limit of queued messages');
    this.outbox.set(from, sent + bytes);
    const seq = (this.seqs.get(from) ?? 0) + 1;
    this.seqs.set(from, seq);
    const m: Message = { from, from_name: fromName, json, bytes, seq, sentAt: Date.now() };
    b.queue.push(m);
    b.bytes += bytes;
    b.waiters.wakeAll();
    return m;
  }

  /** A message leaves the kernel (received and acknowledged, or its mailbox is gone): its bytes come free. */
  private settle(b: Mailbox, ms: Message[]): void {
    for (const m of ms) {
      b.bytes -= m.bytes;
      this.memory.give(m.bytes);
      const left = (this.outbox.get(m.from) ?? 0) - m.bytes;
      if (left > 0) this.outbox.set(m.from, left);
      else this.outbox.delete(m.from);
    }
  }

  /**
   * Takes up to `max` messages, and no more than `maxBytes` of them (but always the first), for `holder`
   * (a connection). A take acknowledges the holder's previous lease; with `lease`, what this take
   * returns stays leased to the holder until its next take, so that `requeueLeases` can redeliver it if
   * the holder goes away first (the agent crashed).
   */
  take(
    id: number,
    max: number,
    holder: object,
    lease = false,
    maxBytes = Number.POSITIVE_INFINITY,
  ): Message[] {
    const b = this.boxes.get(id);
    if (!b) return [];
    const acked = b.leases.get(holder);
    if (acked) {
      b.leases.delete(holder);
      this.settle(b, acked);
    }
    let n = 0;
    let bytes = 0;
    const available = b.queue.length - b.head;
    while (n < Math.min(max, available)) {
      const m = b.queue[b.head + n];
      if (n > 0 && bytes + m.bytes > maxBytes) break;
      bytes += m.bytes;
      n++;
    }
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
    else this.settle(b, out);
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

  /**
   * Binds `name` to `id`; re-registering one's own name succeeds. `maxExtra` bounds the names an id holds
   * besides its first (an agent's spawn name): REGISTER passes the caller's `names` budget.
   */
  register(id: number, name: string, maxExtra?: number): void {
    if (!NAME_RE.test(name))
      throw new InvalidRequestError(`invalid request: name must match ${NAME_RE.source}`);
    const holder = this.nameToId.get(name);
    if (holder !== undefined && holder !== id)
      throw new NameTakenError('name already registered', { agent_id: holder });
    if (holder === id) return;
    const names = this.idToNames.get(id) ?? [];
    if (maxExtra !== undefined && names.length >= maxExtra + 1)
      overBudget('names', Math.max(0, names.length - 1), maxExtra, 'too many names');
    this.nameToId.set(name, id);
    names.push(name);
    this.idToNames.set(id, names);
  }

  /** Removes one name of `id` (the caller never removes an agent's spawn name); false when it holds none such. */
  unregister(id: number, name: string): boolean {
    const names = this.idToNames.get(id);
    const i = names ? names.indexOf(name) : -1;
    if (!names || i < 0) return false;
    names.splice(i, 1);
    this.nameToId.delete(name);
    return true;
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

  /** Forgets everything of an id that is gone for good: names, mailbox (its bytes come free), waiters. */
  release(id: number): void {
    for (const n of this.idToNames.get(id) ?? []) this.nameToId.delete(n);
    this.idToNames.delete(id);
    const b = this.boxes.get(id);
    if (b) {
      this.settle(b, b.queue.slice(b.head));
      for (const leased of b.leases.values()) this.settle(b, leased);
      b.waiters.wakeAll();
    }
    this.boxes.delete(id);
    this.seqs.delete(id);
  }
}
