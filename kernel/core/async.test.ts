import { describe, expect, it } from 'vitest';
import { AsyncCalls } from './async.js';
import { QuotaExceededError, InvalidRequestError } from './errors.js';

const op = { code: 0x02, name: 'EXEC' };
const tick = () => new Promise((r) => setTimeout(r, 0));

describe('AsyncCalls', () => {
  it('accepts at once, keeps the reply (or the error) until taken, within the budget', async () => {
    const calls = new AsyncCalls(() => 2);
    let release!: (v: unknown) => void;
    const a = calls.start(
      { id: 7, name: 'a7', role: 'agent' },
      op,
      undefined,
      () => new Promise((r) => (release = r)),
    );
    const b = calls.start({ id: 7, name: 'a7', role: 'agent' }, op, 42, () =>
      Promise.reject(new InvalidRequestError('bad')),
    );
    expect([a, b]).toEqual([1, 42]);
    expect(() => calls.start({ id: 7, name: 'a7', role: 'agent' }, op, undefined, async () => 1)).toThrow(
      QuotaExceededError,
    );
    await tick();
    expect(calls.pending(7)).toBe(1);
    release({ success: true, stdout: 'hi' });
    await tick();
    const got = calls.take(7, 10);
    expect(got.map((r) => [r.request_id, JSON.parse(r.json)])).toEqual([
      [42, { success: false, error: 'bad', code: 'invalid_request' }],
      [1, { success: true, stdout: 'hi' }],
    ]);
    expect(() => calls.start({ id: 7, name: 'a7', role: 'agent' }, op, 5, async () => 1)).not.toThrow();
    expect(() => calls.start({ id: 7, name: 'a7', role: 'agent' }, op, 5, async () => 1)).toThrow(
      /already in use/,
    );
  });

  it('a principal gone for good loses what it still runs', async () => {
    const calls = new AsyncCalls(() => 10);
    calls.start({ id: 3, name: 'a3', role: 'agent' }, op, undefined, async () => ({ success: true }));
    calls.drop(3);
    await tick();
    expect(calls.take(3, 10)).toEqual([]);
  });
});
