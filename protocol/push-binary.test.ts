/**
 * The PUSH_BINARY envelope (protocol/push-binary.ts) against the shared vectors (protocol/vectors/frames.json
 * `push_binary`, made with Python's struct module): decoding, encoding byte for byte, and the errors.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodePushBinary, encodePushBinary, PushBinaryError, PushedBinaryMessage } from './push-binary.js';

interface PushVector {
  name: string;
  hex: string;
  messages?: { from: number; from_name: string; age_ms: number; seq: number; message: string }[];
  error?: string;
  encode?: boolean;
}

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'vectors/frames.json');
const vectors = (JSON.parse(fs.readFileSync(file, 'utf8')) as { push_binary: PushVector[] }).push_binary;

describe('PUSH_BINARY vectors (protocol/vectors/frames.json push_binary)', () => {
  it('has vectors of both kinds', () => {
    expect(vectors.filter((v) => v.messages).length).toBeGreaterThan(0);
    expect(vectors.filter((v) => v.error).length).toBeGreaterThan(0);
  });

  for (const v of vectors) {
    const payload = Buffer.from(v.hex, 'hex');
    if (v.error) {
      it(`refuses ${v.name} (${v.error})`, () => {
        let caught: unknown;
        try {
          decodePushBinary(payload);
        } catch (e) {
          caught = e;
        }
        expect(caught).toBeInstanceOf(PushBinaryError);
        expect((caught as PushBinaryError).kind).toBe(v.error);
      });
      continue;
    }
    it(`decodes ${v.name}`, () => {
      const got = decodePushBinary(payload);
      expect(
        got.map((m) => ({
          from: m.from,
          from_name: m.from_name,
          age_ms: m.age_ms,
          seq: m.seq,
          message: m.bytes.toString('utf8'),
        })),
      ).toEqual(v.messages);
      expect(got.map((m) => m.message)).toEqual(v.messages!.map((m) => JSON.parse(m.message)));
    });
    if (v.encode) {
      it(`encodes ${v.name} byte for byte`, () => {
        const items = v.messages!.map(({ message, ...m }) => ({ ...m, json: message }));
        expect(encodePushBinary(items).toString('hex')).toBe(v.hex);
      });
    }
  }
});

describe('PushedBinaryMessage', () => {
  const [m] = decodePushBinary(
    encodePushBinary([{ from: 3, from_name: 'a', age_ms: 1, seq: 9, json: '{ "x" : [1,  2] }' }]),
  );

  it('hands over the bytes as sent and parses them only when read, once', () => {
    expect(m!.bytes.toString()).toBe('{ "x" : [1,  2] }');
    const first = m!.message;
    expect(first).toEqual({ x: [1, 2] });
    expect(m!.message).toBe(first);
  });

  it("shows RECV's fields to JSON.stringify and a spread, not its frame", () => {
    expect(JSON.parse(JSON.stringify(m))).toEqual({
      from: 3,
      from_name: 'a',
      message: { x: [1, 2] },
      age_ms: 1,
      seq: 9,
    });
    expect(Object.keys({ ...m })).toEqual(['from', 'age_ms', 'seq']);
    expect(m).toBeInstanceOf(PushedBinaryMessage);
  });

  it('a message whose bytes are not JSON throws only when read', () => {
    const [bad] = decodePushBinary(
      encodePushBinary([{ from: 1, from_name: '', age_ms: 0, seq: 1, json: '{' }]),
    );
    expect(bad!.bytes.toString()).toBe('{');
    expect(() => bad!.message).toThrow(SyntaxError);
  });
});
