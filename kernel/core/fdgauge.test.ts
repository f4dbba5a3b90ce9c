import fs from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FdGauge } from './server.js';

/** Calls that listed /proc/self/fd (the gauge's count) while `fn` ran. */
function listings(fn: () => void): number {
  const spy = vi.spyOn(fs, 'readdirSync');
  try {
    fn();
    return spy.mock.calls.filter(([p]) => p === '/proc/self/fd').length;
  } finally {
    spy.mockRestore();
  }
}

describe('FdGauge (descriptors kept for operators)', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('counts on first use, then answers from its estimate and recounts a stale count after the accept', () => {
    vi.useFakeTimers();
    const g = new FdGauge();
    // The first answer has nothing to estimate from: counted now.
    expect(listings(() => expect(g.left(16)).toBeGreaterThan(16))).toBe(1);
    // Fresh: the estimate, no listing.
    expect(listings(() => g.left(16))).toBe(0);
    // Stale (over a second) and far from the limit: answered at once, counted shortly after.
    vi.advanceTimersByTime(1500);
    expect(listings(() => g.left(16))).toBe(0);
    expect(listings(() => g.left(16))).toBe(0); // one recount pending, not one per accept
    expect(listings(() => vi.advanceTimersByTime(50))).toBe(1);
    expect(listings(() => g.left(16))).toBe(0);
  });

  it('counts at once when the estimate is near the limit', () => {
    vi.useFakeTimers();
    const g = new FdGauge();
    g.left(16);
    vi.advanceTimersByTime(1500);
    // A reserve larger than what is left puts the estimate "near": no accept goes by on a stale count.
    const reserve = g.limit;
    expect(listings(() => expect(g.left(reserve)).toBeLessThan(reserve))).toBe(1);
  });
});
