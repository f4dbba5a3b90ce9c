import { describe, expect, it } from 'vitest';
import { checkDepth } from './validate.js';
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
