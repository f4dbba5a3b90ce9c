import { describe, expect, it } from 'vitest';
import { PostOffice, QueuedBytes } from './mailboxes.js';
import { MailboxFullError, NameTakenError, InvalidRequestError, QuotaExceededError } from '../core/errors.js';
import { DEFAULT_BUDGETS } from '../core/budgets.js';

const texts = (ms: { json: string }[]) => ms.map((m) => JSON.parse(m.json));

/** A post office whose mailboxes hold `messages` messages (and the default bytes). */
function office(messages: number): PostOffice {
  const b = { ...DEFAULT_BUDGETS, mailbox_messages: messages };
  return new PostOffice(() => b, new QueuedBytes(1 << 30));
}

describe('PostOffice', () => {
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

  it('names: unique, validated, released with their holder', () => {
    const po = office(10);
    po.register(1, 'one');
    po.register(1, 'one');
    expect(() => po.register(2, 'one')).toThrow(NameTakenError);
    expect(() => po.register(2, 'bad name')).toThrow(InvalidRequestError);
    po.release(1);
    po.register(2, 'one');
    expect(po.resolve('one')).toBe(2);
  });

  it('bounds mailbox bytes, the sender outbox and the kernel total; bytes come free once received', () => {
    const b = { ...DEFAULT_BUDGETS, mailbox_bytes: 100, outbox_bytes: 150 };
    const total = new QueuedBytes(1 << 20);
    const po = new PostOffice(() => b, total);
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
    expect((err as MailboxFullError).extra).toMatchObject({ bytes: 80, limit_bytes: 100, messages: 2 });
    po.deliver(2, 9, 's', m40);
    // 120 of 150 queued by sender 9: the next 40 would pass its outbox budget.
    expect(() => po.deliver(3, 9, 's', m40)).toThrow(QuotaExceededError);
    expect(total.used).toBe(120);
    expect(po.take(1, 10, {}).length).toBe(2);
    expect(total.used).toBe(40);
    po.deliver(3, 9, 's', m40);
    po.release(2);
    po.release(3);
    expect(total.used).toBe(0);
    const small = new PostOffice(() => DEFAULT_BUDGETS, new QueuedBytes(50));
    expect(() => small.deliver(1, 9, 's', m40 + m40)).toThrow(/kernel_queued_bytes/);
  });

  it('a lease holds its bytes until acknowledged; a take stops at the byte limit but always takes one', () => {
    const total = new QueuedBytes(1 << 20);
    const po = new PostOffice(() => DEFAULT_BUDGETS, total);
    for (let i = 0; i < 5; i++) po.deliver(1, 2, 's', JSON.stringify('y'.repeat(98)));
    const holder = {};
    expect(po.take(1, 10, holder, true, 250).length).toBe(2);
    expect(po.bytes(1)).toBe(500);
    expect(po.take(1, 10, holder, true, 50).length).toBe(1);
    expect(po.bytes(1)).toBe(300);
  });

  it('names: REGISTER is bounded by the names budget, the first name excepted; unregister frees one', () => {
    const po = office(10);
    po.register(1, 'spawn-name');
    po.register(1, 'extra-1', 2);
    po.register(1, 'extra-2', 2);
    expect(() => po.register(1, 'extra-3', 2)).toThrow(QuotaExceededError);
    expect(po.unregister(1, 'extra-1')).toBe(true);
    po.register(1, 'extra-3', 2);
    expect(po.resolve('extra-1')).toBeUndefined();
  });
});
