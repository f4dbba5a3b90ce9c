import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeFrame, encodeFrameParts, FrameDecoder, type Frame } from './frame.js';
import { HEADER_SIZE, MAGIC } from './generated.js';

interface Vector {
  name: string;
  hex: string;
  frames: { agent_id: number; opcode: number; payload?: string; payload_hex?: string }[];
  error?: string;
  encode?: boolean;
  max_payload?: number;
}

const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'vectors/frames.json');
const doc = JSON.parse(fs.readFileSync(file, 'utf8')) as {
  magic: number;
  header_size: number;
  vectors: Vector[];
};

function decodeAll(v: Vector, chunkSize: number): { frames: Frame[]; error: string | null } {
  const d = new FrameDecoder(v.max_payload ?? 1048576);
  const bytes = Buffer.from(v.hex, 'hex');
  const frames: Frame[] = [];
  let error: string | null = null;
  for (let i = 0; i < bytes.length && !error; i += chunkSize) {
    const r = d.push(bytes.subarray(i, i + chunkSize));
    frames.push(...r.frames);
    if (r.error) error = r.error.kind;
  }
  return { frames, error };
}

describe('wire vectors (protocol/vectors/frames.json)', () => {
  it('agrees on the constants', () => {
    expect(doc.magic).toBe(MAGIC);
    expect(doc.header_size).toBe(HEADER_SIZE);
  });

  for (const v of doc.vectors) {
    for (const chunk of [Number.MAX_SAFE_INTEGER, 1, 7]) {
      it(`${v.name} (chunks of ${chunk === Number.MAX_SAFE_INTEGER ? 'all' : chunk})`, () => {
        const { frames, error } = decodeAll(v, chunk);
        expect(error).toBe(v.error ?? null);
        expect(
          frames.map((f) => ({ agent_id: f.agentId, opcode: f.opcode, payload: f.payload.toString('hex') })),
        ).toEqual(
          v.frames.map((f) => ({
            agent_id: f.agent_id,
            opcode: f.opcode,
            payload: f.payload_hex ?? Buffer.from(f.payload ?? '', 'utf8').toString('hex'),
          })),
        );
      });
    }
    if (v.encode) {
      it(`encodes ${v.name} byte for byte`, () => {
        const f = v.frames[0];
        const payload = f.payload_hex
          ? Buffer.from(f.payload_hex, 'hex')
          : Buffer.from(f.payload ?? '', 'utf8');
        expect(encodeFrame(f.agent_id, f.opcode, payload).toString('hex')).toBe(v.hex);
        // The same bytes made from pieces, as the SDK's EncodedMessage paths make them.
        const cut = Math.floor(payload.length / 2);
        const parts = [payload.subarray(0, cut), payload.subarray(cut)];
        expect(encodeFrameParts(f.agent_id, f.opcode, parts).toString('hex')).toBe(v.hex);
      });
    }
  }
});

describe('FrameDecoder', () => {
  it('never holds more than one partial frame', () => {
    const d = new FrameDecoder(1024);
    const big = encodeFrame(1, 0, Buffer.alloc(1000));
    for (let i = 0; i < 50; i++) d.push(big);
    d.push(big.subarray(0, 500));
    expect(d.pending).toBe(500);
  });

  it('a frame larger than a read is joined once, at its last chunk, with the frames around it intact', () => {
    const d = new FrameDecoder(1 << 22);
    const big = Buffer.alloc(1 << 20, 'é');
    const stream = Buffer.concat([
      encodeFrame(1, 2, 'before'),
      encodeFrame(1, 3, big.toString()),
      encodeFrame(1, 4, { after: true }),
    ]);
    const frames: Frame[] = [];
    let joins = 0;
    const concat = Buffer.concat;
    Buffer.concat = ((list: readonly Uint8Array[], n?: number) => {
      joins++;
      return concat(list, n);
    }) as typeof Buffer.concat;
    try {
      for (let i = 0; i < stream.length; i += 65536) {
        const r = d.push(stream.subarray(i, i + 65536));
        expect(r.error).toBeNull();
        frames.push(...r.frames);
      }
    } finally {
      Buffer.concat = concat;
    }
    expect(frames.map((f) => f.opcode)).toEqual([2, 3, 4]);
    expect(frames[1].payload.equals(Buffer.from(big.toString()))).toBe(true);
    expect(JSON.parse(frames[2].payload.toString())).toEqual({ after: true });
    expect(d.pending).toBe(0);
    // 33 reads: the header's read and the last one join; the 31 between are only held.
    expect(joins).toBeLessThanOrEqual(2);
  });

  it('keeps reporting the error after a bad frame', () => {
    const d = new FrameDecoder();
    expect(d.push(Buffer.alloc(17, 0xff)).error?.kind).toBe('bad_magic');
    expect(d.push(encodeFrame(0, 0, '')).error?.kind).toBe('bad_magic');
    expect(d.failed).toBe(true);
  });

  it('reads a size past 2^32 exactly (both halves of the u64), and waits for it under a larger limit', () => {
    const h = Buffer.alloc(HEADER_SIZE);
    h.writeUInt32LE(MAGIC, 0);
    h.writeUInt8(0x20, 8);
    h.writeBigUInt64LE(2n ** 32n + 5n, 9);
    const r = new FrameDecoder(2 ** 33).push(h);
    expect(r).toEqual({ frames: [], error: null });
    const over = new FrameDecoder(2 ** 32).push(h);
    expect(over.error?.kind).toBe('payload_too_large');
    expect(over.error?.message).toContain(`payload of ${2 ** 32 + 5} bytes`);
  });

  it('makes one frame of text and byte pieces, UTF-8 counted in bytes', () => {
    const f = encodeFrameParts(7, 0x25, ['{"m":"é', Buffer.from('€"'), '}']);
    expect(f).toEqual(encodeFrame(7, 0x25, '{"m":"é€"}'));
  });

  it('encodes JSON values and strings', () => {
    const f = new FrameDecoder().push(encodeFrame(3, 0x12, { a: 1 })).frames[0];
    expect(JSON.parse(f.payload.toString())).toEqual({ a: 1 });
    expect(new FrameDecoder().push(encodeFrame(3, 0, 'hi')).frames[0].payload.toString()).toBe('hi');
  });

  it('rejects a bad limit', () => {
    expect(() => new FrameDecoder(-1)).toThrow(RangeError);
  });
});
