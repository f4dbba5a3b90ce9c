import { describe, expect, it } from 'vitest';
import { PostOffice, QueuedBytes, type Mail } from './mailboxes.js';
import { NativePostOffice, createNativeMail } from './native-mail.js';
import { MailboxFullError, NameTakenError, InvalidRequestError, QuotaExceededError } from '../core/errors.js';
import { DEFAULT_BUDGETS, type Budgets } from '../core/budgets.js';
import { loadNative } from '../sandbox/native.js';

const texts = (ms: { json: string }[]) => ms.map((m) => JSON.parse(m.json));

/** One implementation under test: a post office with these budgets and kernel limit, and its queued bytes. */
interface Office {
  po: Mail;
  queued(): number;
}
type Make = (budgets: (id: number) => Budgets, limit: number) => Office;

const makeJs: Make = (budgets, limit) => {
  const total = new QueuedBytes(limit);
  return { po: new PostOffice(budgets, total), queued: () => total.used };
};

const makeNative: Make = (budgets, limit) => {
  const store = new (loadNative().MailStore)({
    queuedBytesLimit: limit,
    maxReplyBytes: 8 << 20,
    maxDepth: 64,
  });
  return { po: new NativePostOffice(store, budgets), queued: () => store.queuedBytes() };
};

// Hono-style conformance: the same cases against PostOffice and NativePostOffice.
describe.each([
  ['PostOffice', makeJs],
  ['NativePostOffice', makeNative],
] as const)('%s', (_name, make) => {
  /** A post office whose mailboxes hold `messages` messages (and the default bytes). */
  function office(messages: number): Mail {
    const b = { ...DEFAULT_BUDGETS, mailbox_messages: messages };
    return make(() => b, 1 << 30).po;
  }

  it('leases are per connection: acknowledged by its next take, requeued at the head when it goes away', () => {
    const po = office(100);
    const dead = {};
    const next = {};
    for (const m of ['a', 'b', 'c']) po.deliver(1, 2, 'sender', JSON.stringify(m));
    expect(texts(po.take(1, 2, dead, true))).toEqual(['a', 'b']);
    // Another connection of the same agent (the restarted process) takes without acknowledging them.
    expect(texts(po.take(1, 10, next, true))).toEqual(['c']);
    expect(po.requeueLeases(1, dead)).toBe(2);
    expect(texts(po.take(1, 10, next, true))).toEqual(['a', 'b']);
    // `next` acknowledged 'c' by taking again; closing it now requeues only 'a','b'.
    expect(po.requeueLeases(1, next)).toBe(2);
    expect(texts(po.take(1, 10, next))).toEqual(['a', 'b']);
    expect(po.requeueLeases(1, next)).toBe(0);
  });

  it('bounds mailboxes and numbers messages per sender', () => {
    const po = office(2);
    po.deliver(1, 9, 's', JSON.stringify(1));
    po.deliver(1, 9, 's', JSON.stringify(2));
    expect(() => po.deliver(1, 9, 's', JSON.stringify(3))).toThrow(MailboxFullError);
    expect(po.take(1, 10, {}).map((m) => m.seq)).toEqual([1, 2]);
  });

  it('keeps the message text, its sender and name byte for byte', () => {
    const po = office(10);
    const json = '{"a": [1, 2.50, "\\u00e9\u00e9"], "b" : null}';
    const m = po.deliver(1, 7, 'kernel', json);
    expect(m).toMatchObject({ from: 7, from_name: 'kernel', json, bytes: Buffer.byteLength(json), seq: 1 });
    expect(Math.abs(m.sentAt - Date.now())).toBeLessThan(60_000);
    const [got] = po.take(1, 1, {});
    expect(got).toEqual(m);
  });

  it('names: unique, validated, released with their holder', () => {
    const po = office(10);
    po.register(1, 'one');
    po.register(1, 'one');
    expect(() => po.register(2, 'one')).toThrow(NameTakenError);
    try {
      po.register(2, 'one');
    } catch (e) {
      expect((e as NameTakenError).extra).toEqual({ agent_id: 1 });
    }
    expect(() => po.register(2, 'bad name')).toThrow(InvalidRequestError);
    expect(() => po.register(2, 'x'.repeat(65))).toThrow(InvalidRequestError);
    po.register(3, 'three');
    expect(po.named()).toEqual([1, 3]);
    expect(po.nameOf(1)).toBe('one');
    po.release(1);
    expect(po.named()).toEqual([3]);
    po.register(2, 'one');
    expect(po.resolve('one')).toBe(2);
    expect(po.resolve('nobody')).toBeUndefined();
    expect(po.nameOf(1)).toBe('');
  });

  it('bounds mailbox bytes, the sender outbox and the kernel total; bytes come free once received', () => {
    const b = { ...DEFAULT_BUDGETS, mailbox_bytes: 100, outbox_bytes: 150 };
    const { po, queued } = make(() => b, 1 << 20);
    const m40 = JSON.stringify('x'.repeat(38));
    po.deliver(1, 9, 's', m40);
    po.deliver(1, 9, 's', m40);
    let err: unknown;
    try {
      po.deliver(1, 9, 's', m40);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MailboxFullError);
    expect((err as MailboxFullError).message).toBe(
      `mailbox of agent 1 is full (2 messages, 80 bytes; limits ${b.mailbox_messages} messages, 100 bytes)`,
    );
    expect((err as MailboxFullError).extra).toEqual({
      delivered_to: 0,
      messages: 2,
      bytes: 80,
      limit_messages: b.mailbox_messages,
      limit_bytes: 100,
    });
    po.deliver(2, 9, 's', m40);
    // 120 of 150 queued by sender 9: the next 40 would pass its outbox budget.
    let quota: unknown;
    try {
      po.deliver(3, 9, 's', m40);
    } catch (e) {
      quota = e;
    }
    expect(quota).toBeInstanceOf(QuotaExceededError);
    expect((quota as QuotaExceededError).message).toMatch(/budget outbox_bytes: 120 of 150/);
    expect(queued()).toBe(120);
    expect(po.take(1, 10, {}).length).toBe(2);
    expect(queued()).toBe(40);
    po.deliver(3, 9, 's', m40);
    po.release(2);
    po.release(3);
    expect(queued()).toBe(0);
    const small = make(() => DEFAULT_BUDGETS, 50).po;
    expect(() => small.deliver(1, 9, 's', m40 + m40)).toThrow(/kernel_queued_bytes: 0 of 50/);
  });

  it('an operator outbox (Infinity) is unbounded', () => {
    const b = { ...DEFAULT_BUDGETS, outbox_bytes: Number.POSITIVE_INFINITY };
    const { po } = make(() => b, 1 << 20);
    for (let i = 0; i < 20; i++) po.deliver(i + 1, 9, 's', JSON.stringify('z'.repeat(1000)));
    expect(po.size(20)).toBe(1);
  });

  it('a lease holds its bytes until acknowledged; a take stops at the byte limit but always takes one', () => {
    const { po, queued } = make(() => DEFAULT_BUDGETS, 1 << 20);
    for (let i = 0; i < 5; i++) po.deliver(1, 2, 's', JSON.stringify('y'.repeat(98)));
    const holder = {};
    expect(po.take(1, 10, holder, true, 250).length).toBe(2);
    expect(po.bytes(1)).toBe(500);
    expect(po.take(1, 10, holder, true, 50).length).toBe(1);
    expect(po.bytes(1)).toBe(300);
    expect(queued()).toBe(300);
    expect(po.size(1)).toBe(2);
  });

  it('names: REGISTER is bounded by the names budget, the first name excepted; unregister frees one', () => {
    const po = office(10);
    po.register(1, 'spawn-name');
    po.register(1, 'extra-1', 2);
    po.register(1, 'extra-2', 2);
    expect(() => po.register(1, 'extra-3', 2)).toThrow(QuotaExceededError);
    expect(() => po.register(1, 'extra-3', 2)).toThrow(/budget names: 2 of 2/);
    expect(po.unregister(1, 'extra-1')).toBe(true);
    expect(po.unregister(1, 'extra-1')).toBe(false);
    po.register(1, 'extra-3', 2);
    expect(po.resolve('extra-1')).toBeUndefined();
    po.register(1, 'extra-4', Number.POSITIVE_INFINITY);
  });

  it('wait: wakes on a delivery and on requeued leases; times out otherwise', async () => {
    const po = office(10);
    const signal = new AbortController().signal;
    const woke = po.wait(1, 60_000, signal);
    po.deliver(1, 2, 's', '1');
    await woke;
    const h = {};
    expect(po.take(1, 10, h, true).length).toBe(1);
    const again = po.wait(1, 60_000, signal);
    expect(po.requeueLeases(1, h)).toBe(1);
    await again;
    expect(po.size(1)).toBe(1);
    po.take(1, 10, {});
    await po.wait(1, 10, signal);
    const ac = new AbortController();
    const aborted = po.wait(1, 60_000, ac.signal);
    ac.abort();
    await aborted;
  });
});

describe('NativePostOffice', () => {
  it('wakes its waiters for deliveries made outside JavaScript (onMail)', async () => {
    const store = new (loadNative().MailStore)({
      queuedBytesLimit: 1 << 20,
      maxReplyBytes: 1 << 20,
      maxDepth: 64,
    });
    const po = new NativePostOffice(store, () => DEFAULT_BUDGETS);
    po.deliver(1, 2, 's', '0');
    po.take(1, 10, {});
    const woke = po.wait(1, 120_000, new AbortController().signal);
    // Straight into the store, as the reactor does: only onMail can tell the waiter.
    store.deliver(1, 2, '"direct"');
    await woke;
    expect(texts(po.take(1, 10, {}))).toEqual(['direct']);
  });

  it('maps a bound object to the reactor connection number as its lease holder', () => {
    const store = new (loadNative().MailStore)({
      queuedBytesLimit: 1 << 20,
      maxReplyBytes: 1 << 20,
      maxDepth: 64,
    });
    const po = new NativePostOffice(store, () => DEFAULT_BUDGETS);
    const signal = new AbortController().signal;
    po.bindHolder(signal, 7);
    po.deliver(1, 2, 's', '"a"');
    expect(po.take(1, 10, signal, true).length).toBe(1);
    // The reactor's connection 7 closing requeues what the JavaScript side took for it.
    expect(store.requeueLeases(1, 7)).toBe(1);
    expect(po.size(1)).toBe(1);
  });

  it('re-tells the store the budgets after a release, and when they change', () => {
    const store = new (loadNative().MailStore)({
      queuedBytesLimit: 1 << 20,
      maxReplyBytes: 1 << 20,
      maxDepth: 64,
    });
    let b: Budgets = { ...DEFAULT_BUDGETS, mailbox_messages: 1 };
    const po = new NativePostOffice(store, () => b);
    po.deliver(1, 2, 's', '1');
    expect(() => po.deliver(1, 2, 's', '2')).toThrow(MailboxFullError);
    b = { ...b, mailbox_messages: 2 };
    po.deliver(1, 2, 's', '2');
    po.release(1);
    po.release(2);
    po.deliver(1, 2, 's', '3');
    expect(po.size(1)).toBe(1);
  });

  it("createNativeMail: events count the store's message bytes against the same kernel limit", () => {
    const { mail, eventBytes, store } = createNativeMail(loadNative(), {
      budgetsOf: () => DEFAULT_BUDGETS,
      queuedBytesLimit: 100,
      maxReplyBytes: 1 << 20,
      maxDepth: 64,
    });
    mail.deliver(1, 2, 's', JSON.stringify('m'.repeat(58)));
    expect(store.queuedBytes()).toBe(60);
    expect(eventBytes.fits(40)).toBe(true);
    expect(eventBytes.fits(41)).toBe(false);
    expect(() => eventBytes.take(41, 'event queues')).toThrow(/kernel_queued_bytes: 60 of 100/);
    eventBytes.take(30, 'event queues');
    expect(eventBytes.used).toBe(30);
    mail.take(1, 10, {});
    expect(eventBytes.fits(70)).toBe(true);
  });
});
