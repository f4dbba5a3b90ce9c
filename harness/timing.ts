/** Small timing helpers: percentiles, summaries, a seeded PRNG, sleeping. */

/** The p-th percentile (0–100) of `values` by linear interpolation between closest ranks; NaN if empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 1) return s[0];
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (s.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return s[lo] + (s[hi] - s[lo]) * (rank - lo);
}

export interface Summary {
  count: number;
  min: number | null;
  p50: number | null;
  p95: number | null;
  max: number | null;
  mean: number | null;
}

/** count/min/p50/p95/max/mean, rounded to whole units; nulls when there are no values. */
export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) return { count: 0, min: null, p50: null, p95: null, max: null, mean: null };
  const r = (x: number) => Math.round(x);
  return {
    count: values.length,
    min: r(Math.min(...values)),
    p50: r(percentile(values, 50)),
    p95: r(percentile(values, 95)),
    max: r(Math.max(...values)),
    mean: r(values.reduce((a, b) => a + b, 0) / values.length),
  };
}

/**
 * mulberry32 (Tommy Ettinger, public domain): a tiny 32-bit seeded PRNG, good enough to pick chaos
 * victims reproducibly. Returns floats in [0, 1).
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `k` distinct items of `items`, chosen with `rand` (partial Fisher–Yates). */
export function sample<T>(items: readonly T[], k: number, rand: () => number): T[] {
  const a = [...items];
  const n = Math.min(k, a.length);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rand() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Milliseconds since `t0` (a Date.now() value), formatted like "12.3 s". */
export function since(t0: number): string {
  return `${((Date.now() - t0) / 1000).toFixed(1)} s`;
}
