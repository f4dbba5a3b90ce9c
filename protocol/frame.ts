/**
 * Framing of the Clove wire protocol: a packed 17-byte little-endian header followed by the payload.
 *
 *   offset 0  u32  magic        0x41474E54 (bytes 54 4E 47 41)
 *   offset 4  u32  agent_id     ignored on input; the kernel writes the connection's id on output
 *   offset 8  u8   opcode
 *   offset 9  u64  payload_size
 *   offset 17 ...  payload      UTF-8, JSON for almost every opcode
 */
import { DEFAULT_MAX_PAYLOAD, HEADER_SIZE, MAGIC } from './generated.js';

export interface Frame {
  agentId: number;
  opcode: number;
  payload: Buffer;
}

/** Encodes one frame; `payload` may be a Buffer, a string (sent as UTF-8) or a value sent as JSON. */
export function encodeFrame(agentId: number, opcode: number, payload: Buffer | string | unknown): Buffer {
  let out: Buffer;
  if (Buffer.isBuffer(payload)) {
    out = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
    payload.copy(out, HEADER_SIZE);
  } else {
    // Encoded straight into the frame: no intermediate buffer of the payload to allocate and copy.
    const text = typeof payload === 'string' ? payload : JSON.stringify(payload ?? null);
    out = Buffer.allocUnsafe(HEADER_SIZE + Buffer.byteLength(text, 'utf8'));
    out.write(text, HEADER_SIZE, 'utf8');
  }
  writeHeader(out, agentId, opcode);
  return out;
}

/** The header in front of a frame whose payload fills the rest of `out` (u64 size as two u32: no BigInt). */
function writeHeader(out: Buffer, agentId: number, opcode: number): void {
  const size = out.length - HEADER_SIZE;
  out.writeUInt32LE(MAGIC, 0);
  out.writeUInt32LE(agentId >>> 0, 4);
  out.writeUInt8(opcode & 0xff, 8);
  out.writeUInt32LE(size % 0x1_0000_0000, 9);
  out.writeUInt32LE(Math.floor(size / 0x1_0000_0000), 13);
}

/**
 * One frame whose payload is JSON text pieces and bytes (EncodedMessage's) joined, made in one buffer: the
 * payload is copied once, into the frame. Copied with TypedArray `set`: Buffer#copy's argument handling
 * cost more than the copy of a 1 KiB message.
 */
export function encodeFrameParts(
  agentId: number,
  opcode: number,
  parts: readonly (string | Buffer)[],
): Buffer {
  let n = HEADER_SIZE;
  for (const p of parts) n += typeof p === 'string' ? Buffer.byteLength(p, 'utf8') : p.length;
  const out = Buffer.allocUnsafe(n);
  let o = HEADER_SIZE;
  for (const p of parts) {
    if (typeof p === 'string') o += out.write(p, o, 'utf8');
    else {
      out.set(p, o);
      o += p.length;
    }
  }
  writeHeader(out, agentId, opcode);
  return out;
}

export type FrameErrorKind = 'bad_magic' | 'payload_too_large';

/** A framing error: the stream cannot be trusted past this point and must be closed. */
export class FrameError extends Error {
  constructor(
    readonly kind: FrameErrorKind,
    message: string,
    /** The opcode of the offending header, when the header was readable. */
    readonly opcode: number | null,
    readonly agentId: number,
  ) {
    super(message);
    this.name = 'FrameError';
  }
}

/**
 * Streaming decoder: feed it chunks as they arrive; it yields every complete frame, keeps at most one
 * partial frame (never more than HEADER_SIZE + maxPayload bytes), and throws FrameError on a bad magic or
 * an oversized size field, after which it refuses further input.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Bytes the partial frame held needs in all (header read), or 0 when its header is incomplete. */
  private need = 0;
  private failed_: FrameError | null = null;

  constructor(readonly maxPayload: number = DEFAULT_MAX_PAYLOAD) {
    if (!Number.isSafeInteger(maxPayload) || maxPayload < 0)
      throw new RangeError('maxPayload must be a non-negative integer');
  }

  /** True once the stream went bad; nothing more is decoded. */
  get failed(): boolean {
    return this.failed_ !== null;
  }

  /** Bytes currently held for an incomplete frame. */
  get pending(): number {
    return this.buffered;
  }

  /**
   * Adds a chunk; returns the frames it completed and, if the stream went bad, the error (frames before
   * the bad header are still returned). After an error every later push returns that error again.
   * A frame larger than a read arrives in many chunks: they are only held until the last one, then
   * joined once (joining at every chunk would copy a large frame once per chunk).
   */
  push(chunk: Buffer): { frames: Frame[]; error: FrameError | null } {
    if (this.failed_) return { frames: [], error: this.failed_ };
    if (chunk.length === 0) return { frames: [], error: null };
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const frames: Frame[] = [];
    if (this.buffered < this.need) return { frames, error: null };
    let buf = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.buffered);
    let off = 0;
    this.need = 0;
    while (buf.length - off >= HEADER_SIZE) {
      const magic = buf.readUInt32LE(off);
      const agentId = buf.readUInt32LE(off + 4);
      const opcode = buf.readUInt8(off + 8);
      if (magic !== MAGIC) {
        return this.fail(
          frames,
          new FrameError('bad_magic', `bad magic 0x${magic.toString(16).padStart(8, '0')}`, null, agentId),
        );
      }
      // u64 as two u32 (no BigInt per frame): exact up to 2^53, and any high word past that is too large.
      const high = buf.readUInt32LE(off + 13);
      const size = high >= 0x20_0000 ? Infinity : high * 0x1_0000_0000 + buf.readUInt32LE(off + 9);
      if (size > this.maxPayload) {
        return this.fail(
          frames,
          new FrameError(
            'payload_too_large',
            `payload of ${buf.readBigUInt64LE(off + 9)} bytes exceeds the limit of ${this.maxPayload}`,
            opcode,
            agentId,
          ),
        );
      }
      const total = HEADER_SIZE + size;
      if (buf.length - off < total) {
        this.need = total;
        break;
      }
      frames.push({ agentId, opcode, payload: buf.subarray(off + HEADER_SIZE, off + total) });
      off += total;
    }
    if (off === buf.length) {
      this.chunks = [];
      this.buffered = 0;
    } else {
      // Copy the tail so that a small partial frame does not pin a large chunk in memory.
      buf = Buffer.from(buf.subarray(off));
      this.chunks = [buf];
      this.buffered = buf.length;
    }
    return { frames, error: null };
  }

  private fail(frames: Frame[], err: FrameError): { frames: Frame[]; error: FrameError } {
    this.failed_ = err;
    this.chunks = [];
    this.buffered = 0;
    this.need = 0;
    return { frames, error: err };
  }
}
