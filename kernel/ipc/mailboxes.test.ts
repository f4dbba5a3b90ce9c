import { describe, expect, it } from 'vitest';
import { PostOffice } from './mailboxes.js';
import { MailboxFullError, NameTakenError, InvalidRequestError } from '../core/errors.js';

const texts = (ms: { message: unknown }[]) => ms.map((m) => m.message);

describe('PostOffice', () => {
  it('leases are per connection: acknowledged by its next take, requeued at the head when it goes away', () => {
    const po = new PostOffice(100);
    const dead = {};
    const next = {};
    for (const m of ['a', 'b', 'c']) po.deliver(1, 2, 'sender', m);
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
    const po = new PostOffice(2);
    po.deliver(1, 9, 's', 1);
    po.deliver(1, 9, 's', 2);
    expect(() => po.deliver(1, 9, 's', 3)).toThrow(MailboxFullError);
    expect(po.take(1, 10, {}).map((m) => m.seq)).toEqual([1, 2]);
  });

  it('names: unique, validated, released with their holder', () => {
    const po = new PostOffice(10);
    po.register(1, 'one');
    po.register(1, 'one');
    expect(() => po.register(2, 'one')).toThrow(NameTakenError);
    expect(() => po.register(2, 'bad name')).toThrow(InvalidRequestError);
    po.release(1);
    po.register(2, 'one');
    expect(po.resolve('one')).toBe(2);
  });
});
