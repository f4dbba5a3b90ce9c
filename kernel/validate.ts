/**
 * Field readers for JSON payloads. Each names the field and the expected type in its error, so a
 * client with a wrong payload learns exactly what to fix; none of them ever throws anything but
 * InvalidRequestError.
 */
import { InvalidRequestError } from './errors.js';

export type Payload = Record<string, unknown>;

/** Parses a payload as a JSON object; an empty payload is `{}` (the public SDK always sends an object). */
export function parseObject(buf: Buffer): Payload {
  if (buf.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(buf.toString('utf8'));
  } catch (e) {
    throw new InvalidRequestError(`invalid request: payload is not valid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidRequestError('invalid request: payload must be a JSON object');
  }
  return v as Payload;
}

function bad(field: string, want: string, got: unknown): never {
  const kind = got === null ? 'null' : Array.isArray(got) ? 'array' : typeof got;
  throw new InvalidRequestError(`invalid request: field '${field}' must be ${want}, got ${kind}`);
}

export function optString(p: Payload, field: string): string | undefined {
  const v = p[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') bad(field, 'a string', v);
  return v;
}

export function reqString(p: Payload, field: string): string {
  const v = optString(p, field);
  if (v === undefined || v === '') throw new InvalidRequestError(`${field} required`);
  return v;
}

export function optBool(p: Payload, field: string): boolean | undefined {
  const v = p[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') bad(field, 'a boolean', v);
  return v;
}

export function optNumber(
  p: Payload,
  field: string,
  opts: { min?: number; max?: number; integer?: boolean } = {},
): number | undefined {
  const v = p[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) bad(field, 'a number', v);
  if (opts.integer && !Number.isInteger(v)) bad(field, 'an integer', v);
  if (opts.min !== undefined && v < opts.min)
    throw new InvalidRequestError(`invalid request: field '${field}' must be >= ${opts.min}`);
  if (opts.max !== undefined && v > opts.max)
    throw new InvalidRequestError(`invalid request: field '${field}' must be <= ${opts.max}`);
  return v;
}

export function optInt(
  p: Payload,
  field: string,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  return optNumber(p, field, { min, max, integer: true });
}

export function optStringArray(p: Payload, field: string): string[] | undefined {
  const v = p[field];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) bad(field, 'an array of strings', v);
  return v as string[];
}

export function optObject(p: Payload, field: string): Payload | undefined {
  const v = p[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) bad(field, 'an object', v);
  return v as Payload;
}

export function optStringMap(p: Payload, field: string): Record<string, string> | undefined {
  const o = optObject(p, field);
  if (!o) return undefined;
  for (const [k, v] of Object.entries(o)) if (typeof v !== 'string') bad(`${field}.${k}`, 'a string', v);
  return o as Record<string, string>;
}

/** A target named by `id` or `name` (id wins), as KILL/PAUSE/RESUME take it. */
export function target(p: Payload): { id?: number; name?: string } {
  const id = optInt(p, 'id', 0, 0xffffffff);
  const name = optString(p, 'name');
  if (!id && !name) throw new InvalidRequestError('invalid request: id or name required');
  return id ? { id } : { name };
}
