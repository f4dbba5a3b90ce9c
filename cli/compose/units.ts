/**
 * Sizes and durations as people write them in clove.yaml (`512M`, `1G`, `30s`, `1h30m`, `250ms`), turned into
 * the wire's units (bytes, milliseconds). The patterns are shared with the JSON Schema so that an editor and
 * the loader accept exactly the same strings.
 */

/** A size: a number with an optional binary unit (k/K = 1024, M, G, T), optionally followed by B or iB. */
export const SIZE_PATTERN = '^[0-9]+(\\.[0-9]+)?\\s*([kKmMgGtT]([iI]?[bB])?|[bB])?$';
/** A duration: one or more number+unit parts (`1h30m`, `250ms`), or a plain number in the field's unit. */
export const DURATION_PATTERN = '^([0-9]+(\\.[0-9]+)?|([0-9]+(\\.[0-9]+)?(ms|s|m|h|d))+)$';

const SIZE_RE = new RegExp(SIZE_PATTERN);
const DURATION_RE = new RegExp(DURATION_PATTERN);
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Bytes of a size such as `512M`, `1G`, `64k`, `1.5GiB` or a plain number of bytes; throws RangeError. */
export function parseSize(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0)
      throw new RangeError(`must be a size like 512M (got ${JSON.stringify(v)})`);
    return Math.round(v);
  }
  const s = v.trim();
  if (!SIZE_RE.test(s)) throw new RangeError(`must be a size like 512M (got ${JSON.stringify(v)})`);
  const m = /^([0-9.]+)\s*([a-zA-Z]*)$/.exec(s)!;
  const unit = m[2].toLowerCase().replace(/i?b$/, '') || (m[2].toLowerCase() === 'b' ? 'b' : '');
  return Math.round(Number(m[1]) * SIZE_UNITS[unit]);
}

/**
 * Milliseconds of a duration such as `30s`, `5m`, `1h30m`, `250ms`; a plain number (or numeric string) is in
 * `unitOfNumbers`. Throws RangeError.
 */
export function parseDuration(v: string | number, unitOfNumbers: 'ms' | 's'): number {
  const scale = unitOfNumbers === 's' ? 1000 : 1;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) {
      throw new RangeError(`must be a duration like 30s (got ${JSON.stringify(v)})`);
    }
    return Math.round(v * scale);
  }
  const s = v.trim();
  if (!DURATION_RE.test(s)) throw new RangeError(`must be a duration like 30s (got ${JSON.stringify(v)})`);
  if (/^[0-9.]+$/.test(s)) return Math.round(Number(s) * scale);
  let ms = 0;
  for (const part of s.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g))
    ms += Number(part[1]) * DURATION_UNITS[part[2]];
  return Math.round(ms);
}
