import { describe, expect, it } from 'vitest';
import { ReadGate } from './gate.js';

const tick = () => new Promise((r) => setImmediate(r));

describe('ReadGate', () => {
  it('runs a caller’s reads two at a time and the kernel’s within its bytes, in order', async () => {
    const gate = new ReadGate(100, 2);
    const sig = new AbortController().signal;
    const started: string[] = [];
    const take = (who: string, caller: number, bytes: number) =>
      gate.acquire(caller, bytes, sig).then((release) => {
        started.push(who);
        return release;
      });
    const a1 = take('a1', 1, 10);
    const a2 = take('a2', 1, 10);
    void take('a3', 1, 10);
    const b1 = take('b1', 2, 70);
    void take('c1', 3, 20);
    await tick();
    // a3 waits for one of a's reads; c1 for bytes (10 + 10 + 70 + 20 > 100).
    expect(started).toEqual(['a1', 'a2', 'b1']);
    (await a1)();
    await tick();
    expect(started).toEqual(['a1', 'a2', 'b1', 'a3']);
    (await b1)();
    await tick();
    expect(started).toEqual(['a1', 'a2', 'b1', 'a3', 'c1']);
    (await a2)();
    expect(gate.usage()).toEqual({ bytes: 30, waiting: 0 });
  });

  it('a waiter whose connection closes leaves the queue', async () => {
    const gate = new ReadGate(10, 1);
    const first = await gate.acquire(1, 10, new AbortController().signal);
    const ac = new AbortController();
    const waiting = gate.acquire(2, 10, ac.signal);
    ac.abort();
    await expect(waiting).rejects.toThrow(/closed/);
    expect(gate.usage()).toEqual({ bytes: 10, waiting: 0 });
    first();
    first();
    expect(gate.usage().bytes).toBe(0);
  });
});
