/** The fair scheduler alone: order, caps, bounds and cancellation, with calls the test finishes by hand. */
import { describe, expect, it } from 'vitest';
import { CancelledError, FairScheduler } from './scheduler.js';

function harness(o: { max?: number; queue?: number; lanes?: Record<string, number> } = {}) {
  const s = new FairScheduler({
    maxConcurrency: o.max ?? 1,
    maxQueuePerOwner: o.queue ?? 100,
    laneCap: (l) => o.lanes?.[l] ?? Infinity,
  });
  const started: string[] = [];
  const finish = new Map<string, () => void>();
  const aborted: string[] = [];
  const submit = (owner: number, tag: string, lane = 'p', signal = new AbortController().signal) =>
    s.submit(owner, lane, signal, (sig) => {
      started.push(tag);
      sig.addEventListener('abort', () => aborted.push(tag));
      return new Promise<string>((resolve, reject) => {
        finish.set(tag, () => resolve(tag));
        sig.addEventListener('abort', () => reject(sig.reason));
      });
    });
  const done = async (tag: string) => {
    finish.get(tag)!();
    await new Promise((r) => setImmediate(r));
  };
  return { s, started, aborted, submit, done };
}

describe('FairScheduler', () => {
  it('serves owners round-robin: a flood from one delays another by at most the running call', async () => {
    const h = harness();
    const a = Array.from({ length: 10 }, (_, i) => h.submit(1, `a${i}`));
    await h.done('a0');
    const b = h.submit(2, 'b0');
    await h.done('a1');
    expect(h.started).toEqual(['a0', 'a1', 'b0']);
    const c = [h.submit(3, 'c0'), h.submit(3, 'c1')];
    await h.done('b0');
    await h.done('c0');
    await h.done('a2');
    await h.done('c1');
    expect(h.started).toEqual(['a0', 'a1', 'b0', 'c0', 'a2', 'c1', 'a3']);
    for (let i = 3; i < 10; i++) await h.done(`a${i}`);
    await expect(Promise.all([...a, b, ...c])).resolves.toHaveLength(13);
    expect(h.s.stats()).toEqual({ running: 0, queued: 0, owners: 0 });
  });

  it('keeps the global cap and each lane cap; a full lane does not block another lane', async () => {
    const h = harness({ max: 3, lanes: { slow: 1 } });
    void h.submit(1, 's1', 'slow');
    void h.submit(1, 's2', 'slow');
    void h.submit(1, 'f1', 'fast');
    void h.submit(2, 's3', 'slow');
    void h.submit(2, 'f2', 'fast');
    void h.submit(2, 'f3', 'fast');
    await new Promise((r) => setImmediate(r));
    // s2 waits for the slow lane; f1 behind it in owner 1's queue runs meanwhile.
    expect(h.started).toEqual(['s1', 'f1', 'f2']);
    expect(h.s.stats()).toMatchObject({ running: 3, queued: 3 });
    await h.done('f2');
    expect(h.started).toEqual(['s1', 'f1', 'f2', 'f3']);
    // The slow lane frees: owner 1 (served before owner 2's f3) goes first.
    await h.done('s1');
    expect(h.started.at(-1)).toBe('s2');
    await h.done('s2');
    expect(h.started.at(-1)).toBe('s3');
  });

  it('bounds each owner queue with quota_exceeded (budget llm_queue)', async () => {
    const h = harness({ queue: 2 });
    void h.submit(1, 'x0'); // running
    void h.submit(1, 'x1');
    void h.submit(1, 'x2');
    await expect(h.submit(1, 'x3')).rejects.toMatchObject({
      code: 'quota_exceeded',
      extra: { budget: 'llm_queue' },
    });
    // Another owner has its own queue.
    void h.submit(2, 'y0');
  });

  it('a call whose signal aborts leaves the queue, or is aborted while running', async () => {
    const h = harness();
    const run = new AbortController();
    const queued = new AbortController();
    const r = h.submit(1, 'r', 'p', run.signal);
    const q = h.submit(2, 'q', 'p', queued.signal);
    const later = h.submit(3, 'later');
    queued.abort();
    await expect(q).rejects.toBeInstanceOf(CancelledError);
    run.abort();
    await expect(r).rejects.toBeInstanceOf(CancelledError);
    expect(h.aborted).toEqual(['r']);
    await new Promise((res) => setImmediate(res));
    expect(h.started).toEqual(['r', 'later']);
    await h.done('later');
    await expect(later).resolves.toBe('later');
  });

  it('close() rejects what waits and aborts what runs', async () => {
    const h = harness();
    const r = h.submit(1, 'r');
    const q = h.submit(2, 'q');
    h.s.close();
    await expect(q).rejects.toBeInstanceOf(CancelledError);
    await expect(r).rejects.toBeInstanceOf(CancelledError);
    await expect(h.submit(3, 'z')).rejects.toBeInstanceOf(CancelledError);
  });
});
