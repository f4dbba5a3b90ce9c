/**
 * The PUSH_BINARY (0x26) envelope: messages pushed to a connection that asked for HELLO
 * `push.format: "binary"`, laid out so that a client reaches each message's bytes without a JSON parse (as
 * a NATS client hands over a message's data). Little-endian:
 *
 *   u32 count
 *   count × { u32 from, u32 age_ms, u64 seq, u32 name_len, u32 message_len, name (UTF-8), message }
 *
 * `message` is the message's JSON text as the kernel queued it: the bytes RECV's reply would carry. The
 * kernel's TypeScript path encodes with encodePushBinary; the fast path's reactor writes the same bytes
 * (native/src/fast/ops.cc); clients decode with decodePushBinary. protocol/vectors/frames.json
 * (`push_binary`) holds the shared vectors.
 */
/** Bytes of one message's fixed head. */
export const PUSH_BINARY_HEAD = 24;

/** One message to encode: RECV's fields, the message as its JSON text. */
export interface PushBinaryItem {
  from: number;
  from_name: string;
  age_ms: number;
  seq: number;
  json: string;
}

/** The payload of a PUSH_BINARY frame for `items`, in order. */
export function encodePushBinary(items: readonly PushBinaryItem[]): Buffer {
  let size = 4;
  const lens: number[] = [];
  for (const m of items) {
    const n = Buffer.byteLength(m.from_name, 'utf8');
    const j = Buffer.byteLength(m.json, 'utf8');
    lens.push(n, j);
    size += PUSH_BINARY_HEAD + n + j;
  }
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  out.writeUInt32LE(items.length, o);
  o += 4;
  items.forEach((m, i) => {
    out.writeUInt32LE(m.from >>> 0, o);
    out.writeUInt32LE(Math.max(0, Math.min(m.age_ms, 0xffff_ffff)) >>> 0, o + 4);
    out.writeUInt32LE(m.seq % 0x1_0000_0000, o + 8);
    out.writeUInt32LE(Math.floor(m.seq / 0x1_0000_0000), o + 12);
    out.writeUInt32LE(lens[2 * i]!, o + 16);
    out.writeUInt32LE(lens[2 * i + 1]!, o + 20);
    o += PUSH_BINARY_HEAD;
    o += out.write(m.from_name, o, 'utf8');
    o += out.write(m.json, o, 'utf8');
  });
  return out;
}

export type PushBinaryErrorKind = 'truncated' | 'trailing_bytes';

/** A PUSH_BINARY payload that does not hold what its count and heads announce. */
export class PushBinaryError extends Error {
  constructor(
    readonly kind: PushBinaryErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'PushBinaryError';
  }
}

const UNPARSED: unique symbol = Symbol('unparsed');

/**
 * One message of a PUSH_BINARY frame. `bytes` is the message's JSON text as queued (a view into the frame,
 * no copy); `message` and `from_name` are decoded on first access, so a consumer that only looks at the
 * bytes parses nothing. JSON.stringify gives RECV's fields.
 */
export class PushedBinaryMessage {
  // ES private fields: not enumerable, so a spread or a log of the message shows only RECV's fields.
  #buf: Buffer;
  #nameAt: number;
  #nameLen: number;
  #msgLen: number;
  #name: string | undefined;
  #parsed: unknown = UNPARSED;

  constructor(
    readonly from: number,
    readonly age_ms: number,
    readonly seq: number,
    buf: Buffer,
    nameAt: number,
    nameLen: number,
    msgLen: number,
  ) {
    this.#buf = buf;
    this.#nameAt = nameAt;
    this.#nameLen = nameLen;
    this.#msgLen = msgLen;
  }

  /** The sender's name ("" when it has none). */
  get from_name(): string {
    return (this.#name ??= this.#buf.toString('utf8', this.#nameAt, this.#nameAt + this.#nameLen));
  }

  /** The message's JSON text as queued, the bytes RECV's reply would carry (a view into the frame). */
  get bytes(): Buffer {
    const at = this.#nameAt + this.#nameLen;
    return this.#buf.subarray(at, at + this.#msgLen);
  }

  /** The message, parsed from `bytes` once, on first access. */
  get message(): unknown {
    if (this.#parsed === UNPARSED) {
      const at = this.#nameAt + this.#nameLen;
      this.#parsed = JSON.parse(this.#buf.toString('utf8', at, at + this.#msgLen));
    }
    return this.#parsed;
  }

  /** RECV's fields (what JSON.stringify writes). */
  toJSON(): { from: number; from_name: string; message: unknown; age_ms: number; seq: number } {
    return {
      from: this.from,
      from_name: this.from_name,
      message: this.message,
      age_ms: this.age_ms,
      seq: this.seq,
    };
  }
}

/**
 * The messages of a PUSH_BINARY payload, in order. Every length is checked against the payload before
 * anything is yielded: a payload that ends early, or holds bytes past its last item, throws PushBinaryError.
 */
export function decodePushBinary(payload: Buffer): PushedBinaryMessage[] {
  if (payload.length < 4)
    throw new PushBinaryError('truncated', 'PUSH_BINARY payload shorter than its count');
  const count = payload.readUInt32LE(0);
  const out: PushedBinaryMessage[] = [];
  let o = 4;
  for (let i = 0; i < count; i++) {
    if (payload.length - o < PUSH_BINARY_HEAD)
      throw new PushBinaryError(
        'truncated',
        `PUSH_BINARY payload ends inside the head of message ${i} of ${count}`,
      );
    const nameLen = payload.readUInt32LE(o + 16);
    const msgLen = payload.readUInt32LE(o + 20);
    const at = o + PUSH_BINARY_HEAD;
    if (payload.length - at < nameLen + msgLen)
      throw new PushBinaryError('truncated', `PUSH_BINARY payload ends inside message ${i} of ${count}`);
    out.push(
      new PushedBinaryMessage(
        payload.readUInt32LE(o),
        payload.readUInt32LE(o + 4),
        payload.readUInt32LE(o + 8) + payload.readUInt32LE(o + 12) * 0x1_0000_0000,
        payload,
        at,
        nameLen,
        msgLen,
      ),
    );
    o = at + nameLen + msgLen;
  }
  if (o !== payload.length)
    throw new PushBinaryError(
      'trailing_bytes',
      `PUSH_BINARY payload has ${payload.length - o} bytes after its last message`,
    );
  return out;
}
