/**
 * NativePostOffice: PostOffice's API (the `Mail` interface) over the addon's MailStore, the store the
 * fast path's reactor serves SEND / SEND_BATCH / RECV / BROADCAST from (docs/fastpath.md). The kernel's
 * services use it when the fast path is on, so that both paths share one set of mailboxes, names,
 * budgets and leases. Refusals come back from the store as values and are thrown here as the errors
 * PostOffice throws, with the same text and fields.
 */
import type { NativeMailStore, NativeMessage, NativeRefusal, CloveNative } from '../../native/index.js';
import type { Budgets } from '../core/budgets.js';
import { overBudget } from '../core/budgets.js';
import { InvalidRequestError, MailboxFullError, NameTakenError } from '../core/errors.js';
import { Waiters } from '../core/waiters.js';
import { NAME_RE, QueuedBytes, type Mail, type Message } from './mailboxes.js';

/**
 * Holder numbers given to JavaScript objects start here, clear of the reactor's connection ids (small
 * integers), which `bindHolder` maps a connection's objects to.
 */
const FIRST_JS_HOLDER = 2 ** 40;

function toMessage(m: NativeMessage): Message {
  return { from: m.from, from_name: m.fromName, json: m.json, bytes: m.bytes, seq: m.seq, sentAt: m.sentAt };
}

function isRefusal(r: NativeMessage | NativeRefusal): r is NativeRefusal {
  return (r as NativeRefusal).refused !== undefined;
}

export class NativePostOffice implements Mail {
  private readonly holders = new WeakMap<object, number>();
  private nextHolder = FIRST_JS_HOLDER;
  /** The budgets object last pushed to the store per id (principals replace it when budgets change). */
  private readonly pushed = new Map<number, Budgets>();
  private readonly waiters = new Map<number, Waiters<void>>();

  constructor(
    readonly store: NativeMailStore,
    private readonly budgetsOf: (id: number) => Budgets,
  ) {
    // Deliveries made by the reactor thread wake the JavaScript waiters of the ids they reached.
    store.onMail((ids) => {
      for (const id of ids) this.waiters.get(id)?.wakeAll();
    });
  }

  /** Makes `obj` (e.g. a reactor connection's close signal) the same lease holder as connection `conn`. */
  bindHolder(obj: object, conn: number): void {
    this.holders.set(obj, conn);
  }

  private holder(obj: object): number {
    let h = this.holders.get(obj);
    if (h === undefined) {
      h = this.nextHolder++;
      this.holders.set(obj, h);
    }
    return h;
  }

  /** Pushes `id`'s budgets to the store when it has none or they changed since. */
  private budgets(id: number, force = false): void {
    const b = this.budgetsOf(id);
    if (!force && this.pushed.get(id) === b) return;
    this.store.setBudgets(id, {
      mailboxMessages: b.mailbox_messages,
      mailboxBytes: b.mailbox_bytes,
      outboxBytes: b.outbox_bytes,
    });
    this.pushed.set(id, b);
  }

  /** Tells the store `id`'s budgets again (the kernel calls it when a principal's budgets change). */
  refreshBudgets(id: number): void {
    this.budgets(id, true);
  }

  /** Whether the fast path may deliver to `id` (an agent alive for the kernel, or an open client). */
  setReachable(id: number, reachable: boolean): void {
    this.store.setReachable(id, reachable);
  }

  /** What the fast path completed for `id` (counted in the store). */
  stats(id: number): { syscalls: number; sent: number; received: number; lastActiveMs: number } {
    return this.store.stats(id);
  }

  size(id: number): number {
    return this.store.size(id);
  }

  bytes(id: number): number {
    return this.store.bytes(id);
  }

  queuedBytes(): number {
    return this.store.queuedBytes();
  }

  deliver(to: number, from: number, fromName: string, json: string): Message {
    this.budgets(to);
    this.budgets(from);
    let r = this.store.deliver(to, from, json, fromName);
    if (isRefusal(r) && r.refused === 'no_budgets') {
      // The store forgot them (a release): tell it again.
      this.budgets(to, true);
      this.budgets(from, true);
      r = this.store.deliver(to, from, json, fromName);
    }
    if (isRefusal(r)) this.refuse(to, r);
    this.waiters.get(to)?.wakeAll();
    return toMessage(r);
  }

  /** Throws the error PostOffice.deliver throws for the same refusal. */
  private refuse(to: number, r: NativeRefusal): never {
    switch (r.refused) {
      case 'mailbox_full':
        throw new MailboxFullError(
          `mailbox of agent ${to} is full (${r.used} messages, ${r.bytes} bytes; limits ${r.limit} messages, ${r.limitBytes} bytes)`,
          {
            delivered_to: 0,
            messages: r.used,
            bytes: r.bytes,
            limit_messages: r.limit,
            limit_bytes: r.limitBytes,
          },
        );
      case 'outbox_bytes':
        overBudget('outbox_bytes', r.used, r.limit, 'messages you queued are not yet received');
      // falls through: overBudget throws
      case 'kernel_queued_bytes':
        overBudget('kernel_queued_bytes', r.used, r.limit, 'the kernel holds its limit of queued messages');
      // falls through
      default:
        throw new Error(`mail store refused a delivery to ${to}: ${r.refused}`);
    }
  }

  take(
    id: number,
    max: number,
    holder: object,
    lease = false,
    maxBytes = Number.POSITIVE_INFINITY,
  ): Message[] {
    return this.store.take(id, max, this.holder(holder), lease, maxBytes).map(toMessage);
  }

  requeueLeases(id: number, holder: object): number {
    const h = this.holders.get(holder);
    if (h === undefined) return 0;
    const n = this.store.requeueLeases(id, h);
    if (n) this.waiters.get(id)?.wakeAll();
    return n;
  }

  /** Sleeps until `id`'s mailbox gains messages (from either path), `ms` passes or `signal` aborts. */
  async wait(id: number, ms: number, signal: AbortSignal): Promise<void> {
    let w = this.waiters.get(id);
    if (!w) {
      w = new Waiters<void>();
      this.waiters.set(id, w);
      this.store.watch(id, true);
    }
    try {
      // A delivery by the reactor before `watch` took effect would not be reported: look once more.
      if (this.store.size(id) > 0) return;
      await w.wait(ms, signal);
    } finally {
      if (w.size === 0 && this.waiters.get(id) === w) {
        this.waiters.delete(id);
        this.store.watch(id, false);
      }
    }
  }

  register(id: number, name: string, maxExtra?: number): void {
    const r = this.store.register(id, name, maxExtra ?? -1);
    if (r === '') return;
    if (r === 'invalid') throw new InvalidRequestError(`invalid request: name must match ${NAME_RE.source}`);
    const [kind, a, b] = r.split(':');
    if (kind === 'taken') throw new NameTakenError('name already registered', { agent_id: Number(a) });
    overBudget('names', Number(a), Number(b), 'too many names');
  }

  unregister(id: number, name: string): boolean {
    return this.store.unregister(id, name);
  }

  resolve(name: string): number | undefined {
    const id = this.store.resolve(name);
    return id < 0 ? undefined : id;
  }

  nameOf(id: number): string {
    return this.store.nameOf(id);
  }

  named(): number[] {
    return this.store.named();
  }

  release(id: number): void {
    this.store.release(id);
    this.pushed.delete(id);
    this.waiters.get(id)?.wakeAll();
  }
}

/**
 * The kernel-wide bytes of events (EventBus) when messages live in the native store: the store's queued
 * bytes count against the same limit. (The store checks only its own bytes against the limit: events
 * are not seen by the fast path.)
 */
export class SharedQueuedBytes extends QueuedBytes {
  constructor(
    limit: number,
    private readonly mail: NativePostOffice,
  ) {
    super(limit);
  }

  override take(n: number, what: string): void {
    const messages = this.mail.queuedBytes();
    this.used += messages;
    try {
      super.take(n, what);
    } finally {
      this.used -= messages;
    }
  }

  override fits(n: number): boolean {
    return this.used + this.mail.queuedBytes() + n <= this.limit;
  }
}

/** What kernel.ts builds with the fast path on: the store, the post office over it, events' byte counter. */
export function createNativeMail(
  native: CloveNative,
  o: {
    budgetsOf: (id: number) => Budgets;
    queuedBytesLimit: number;
    maxReplyBytes: number;
    maxDepth: number;
    /** A clustered kernel: BROADCAST goes to JavaScript (it reaches the other nodes from there). */
    broadcastToJs?: boolean;
  },
): { store: NativeMailStore; mail: NativePostOffice; eventBytes: SharedQueuedBytes } {
  const store = new native.MailStore({
    queuedBytesLimit: o.queuedBytesLimit,
    maxReplyBytes: o.maxReplyBytes,
    maxDepth: o.maxDepth,
    ...(o.broadcastToJs ? { broadcastToJs: true } : {}),
  });
  const mail = new NativePostOffice(store, o.budgetsOf);
  return { store, mail, eventBytes: new SharedQueuedBytes(o.queuedBytesLimit, mail) };
}
