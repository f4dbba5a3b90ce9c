/**
 * Request validation against the contract's JSON Schemas (protocol/families/*.json), compiled ahead of
 * time by protocol/generate.mjs into protocol/validators.ts (no compilation on the event loop: see
 * there). Defaults written in the contract are filled in, so a handler gets its request complete and
 * typed (`ArgsOf[op]`). Every failure is an InvalidRequestError that names the field and what it must
 * be, so a client with a wrong payload learns exactly what to fix.
 */
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { SCHEMA_DEFS, type OpName } from '../../protocol/index.js';
import * as generated from '../../protocol/validators.js';
import { InvalidRequestError } from './errors.js';

export type Payload = Record<string, unknown>;

/** One generated validation function per opcode that has a JSON request. */
const VALIDATORS = generated as unknown as Partial<Record<OpName, ValidateFunction>>;

/** Compiles `$defs` checks (validateDef: rare, off the request path) with the validators' options. */
let ajv: Ajv2020 | undefined;
function defsAjv(): Ajv2020 {
  if (!ajv) {
    ajv = new Ajv2020(generated.AJV_OPTIONS);
    ajv.addSchema(SCHEMA_DEFS);
  }
  return ajv;
}

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

/**
 * Refuses JSON nested deeper than `max` levels by scanning the raw bytes, before JSON.parse sees them:
 * a 400 KB `[[[[…` would otherwise cost the event loop ~100 ms to parse, and fail later, when a reply
 * carrying it is encoded. Brackets inside strings do not count; JSON.parse still checks the syntax.
 */
export function checkDepth(buf: Buffer, max: number): void {
  let depth = 0;
  for (let i = 0; i < buf.length; i++) {
    const c = buf[i];
    if (c === 0x22) {
      // Jump to the closing quote (native indexOf: long strings cost next to nothing); a quote preceded
      // by an odd number of backslashes is escaped.
      let j = i;
      for (;;) {
        j = buf.indexOf(0x22, j + 1);
        if (j < 0) return; // unterminated: JSON.parse will say so
        let k = j - 1;
        while (buf[k] === 0x5c) k--;
        if ((j - 1 - k) % 2 === 0) break;
      }
      i = j;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max)
        throw new InvalidRequestError(`invalid request: payload nested deeper than ${max} levels`, {
          max_depth: max,
        });
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
}

/** Checks `payload` against the request schema of `op` and fills in its defaults (in place). */
export function validateRequest(op: OpName, payload: Payload): void {
  const validate = VALIDATORS[op];
  if (!validate) return;
  if (!validate(payload)) throw new InvalidRequestError(describe(validate.errors?.[0], payload));
}

function kindOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

const A: Record<string, string> = {
  string: 'a string',
  number: 'a number',
  integer: 'an integer',
  boolean: 'a boolean',
  object: 'an object',
  array: 'an array',
  null: 'null',
};

/** One ajv error as a sentence: `invalid request: field 'limits.memory' must be >= 4194304`. */
function describe(e: ErrorObject | null | undefined, payload: Payload): string {
  if (!e) return 'invalid request';
  const parts = e.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
  let value: unknown = payload;
  for (const p of parts) value = (value as Record<string, unknown> | undefined)?.[p];
  const field = parts.join('.');
  const p = e.params as Record<string, unknown>;
  let what: string;
  switch (e.keyword) {
    case 'type': {
      const types = String(p.type).split(',');
      // An integer field given something that is not a number at all is "not a number".
      const want =
        types.length === 1 && types[0] === 'integer' && typeof value !== 'number' ? ['number'] : types;
      what = `must be ${want.map((t) => A[t] ?? t).join(' or ')}, got ${kindOf(value)}`;
      break;
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      what = `must be ${p.comparison} ${p.limit}`;
      break;
    case 'enum':
      what = `must be one of ${(p.allowedValues as unknown[]).join(', ')}`;
      break;
    case 'pattern':
      what = `must match ${p.pattern}`;
      break;
    case 'const':
      what = `must be ${JSON.stringify(p.allowedValue)}`;
      break;
    case 'required':
      return `invalid request: field '${[...parts, p.missingProperty].join('.')}' is required`;
    default:
      what = e.message ?? 'is invalid';
  }
  return field ? `invalid request: field '${field}' ${what}` : `invalid request: payload ${what}`;
}

const compiledDefs = new Map<string, ValidateFunction>();

/**
 * Checks `value` against one of the contract's `$defs` (e.g. a world's config inside a snapshot, which
 * no request schema covers); `field` names where it came from in the error.
 */
export function validateDef(def: string, value: unknown, field: string): void {
  let validate = compiledDefs.get(def);
  if (!validate) {
    validate = defsAjv().compile({ $ref: `clove#/$defs/${def}` });
    compiledDefs.set(def, validate);
  }
  if (!validate(value)) {
    const d = describe(validate.errors?.[0], value as Payload);
    throw new InvalidRequestError(
      d
        .replace("field '", `field '${field}.`)
        .replace('invalid request: payload', `invalid request: field '${field}'`),
    );
  }
}
