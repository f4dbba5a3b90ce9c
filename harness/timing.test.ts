import { describe, expect, it } from 'vitest';
import { mulberry32, percentile, sample, summarize } from './timing.js';

describe('timing helpers', () => {
  it('percentiles interpolate between ranks', () => {
    expect(percentile([], 50)).toBeNaN();
    expect(percentile([5], 95)).toBe(5);
    expect(percentile([1, 2, 3, 4], 50)).toBe(2.5);
    expect(percentile([10, 0, 5], 100)).toBe(10);
    expect(summarize([3, 1, 2])).toMatchObject({ count: 3, min: 1, p50: 2, max: 3 });
    expect(summarize([]).p50).toBeNull();
  });

  it('the seeded PRNG and sampling are reproducible', () => {
    const a = sample(['a', 'b', 'c', 'd', 'e'], 3, mulberry32(42));
    expect(sample(['a', 'b', 'c', 'd', 'e'], 3, mulberry32(42))).toEqual(a);
    expect(new Set(a).size).toBe(3);
    const r = mulberry32(1);
    for (let i = 0; i < 1000; i++) {
      const x = r();
      expect(x >= 0 && x < 1).toBe(true);
    }
  });
});
