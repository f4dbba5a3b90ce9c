import { Ajv2020 } from 'ajv/dist/2020.js';
import { describe, expect, it } from 'vitest';
import { REQUEST_SCHEMAS, SCHEMA_DEFS, type OpName } from '../../protocol/index.js';
import * as generated from '../../protocol/validators.js';
import { AJV_OPTIONS } from '../../protocol/validators.js';
import { checkDepth, validateRequest, type Payload } from './validate.js';
import { InvalidRequestError } from './errors.js';

const depthOk = (v: unknown, max: number) => {
  try {
    checkDepth(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)), max);
    return true;
  } catch (e) {
    expect(e).toBeInstanceOf(InvalidRequestError);
    return false;
  }
};

describe('checkDepth (on the raw bytes, before JSON.parse)', () => {
  it('counts objects and arrays, not brackets inside strings or after escaped quotes', () => {
    expect(depthOk({ a: [[1]] }, 3)).toBe(true);
    expect(depthOk({ a: [[[1]]] }, 3)).toBe(false);
    expect(depthOk({ s: '[[[[[[[[{{{{{{' }, 1)).toBe(true);
    expect(depthOk({ s: 'quote " then [[[[[', t: '\\' }, 1)).toBe(true);
    expect(depthOk({ s: '\\"[[[[' }, 1)).toBe(true);
    expect(depthOk(`{"m":${'['.repeat(200_000)}${']'.repeat(200_000)}}`, 64)).toBe(false);
  });
});

describe('validateRequest (protocol/validators.ts, compiled ahead of time)', () => {
  // The generated code must judge every request as the contract's schemas compiled at run time would.
  const ajv = new Ajv2020(AJV_OPTIONS);
  ajv.addSchema(SCHEMA_DEFS);
  const ops = Object.keys(REQUEST_SCHEMAS) as OpName[];
  const judged = (op: OpName, payload: Payload) => {
    try {
      validateRequest(op, payload);
      return { ok: true, payload };
    } catch (e) {
      expect(e).toBeInstanceOf(InvalidRequestError);
      return { ok: false, error: (e as Error).message, payload };
    }
  };
  const byAjv = (op: OpName, payload: Payload) => {
    const v = ajv.compile(REQUEST_SCHEMAS[op]!);
    const ok = v(payload);
    return { ok, error: ok ? undefined : v.errors?.[0], payload };
  };

  it('has a validator for every opcode with a JSON request', () => {
    expect(ops.length).toBeGreaterThan(50);
    for (const op of ops) expect(typeof (generated as Record<string, unknown>)[op], op).toBe('function');
  });

  it('accepts, refuses and fills in defaults as the schemas compiled at run time do', () => {
    for (const op of ops) {
      const props = Object.keys(
        (REQUEST_SCHEMAS[op] as { properties?: object }).properties ??
          (SCHEMA_DEFS.$defs as Record<string, { properties?: object }>)[
            String((REQUEST_SCHEMAS[op] as { $ref?: string }).$ref)
              .split('/')
              .pop()!
          ]?.properties ??
          {},
      );
      const samples: Payload[] = [{}, { unknown_field: 1 }];
      for (const p of props) samples.push({ [p]: {} }, { [p]: 'x' }, { [p]: 7 }, { [p]: [] });
      for (const s of samples) {
        const mine = judged(op, structuredClone(s));
        const theirs = byAjv(op, structuredClone(s));
        expect(mine.ok, `${op} ${JSON.stringify(s)}`).toBe(theirs.ok);
        expect(mine.payload, `${op} ${JSON.stringify(s)}: defaults`).toEqual(theirs.payload);
        if (!theirs.ok) expect(mine.error, op).toMatch(/^invalid request/);
      }
    }
  });

  it('names the field and what it must be', () => {
    expect(() => validateRequest('SEND', { to: 'x', message: 1 })).toThrow(/field 'to' must be/);
    expect(() => validateRequest('SEND_BATCH', {})).toThrow("field 'messages' is required");
    const p: Payload = { message: 'hi', to: 3 };
    validateRequest('SEND', p);
    expect(p).toMatchObject({ message: 'hi', to: 3 });
  });
});
