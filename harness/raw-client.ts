/**
 * A client on a bare socket, for tests that must see the wire as it is: frames written exactly as given
 * (a payload as a string or Buffer is sent as those bytes, anything else as its JSON), every frame received
 * kept in order, unsolicited ones (PUSH, PUSH_BINARY, SEND_REFUSED) included. Not the SDK: nothing is
 * matched, retried or decoded for the test.
 */
import net from 'node:net';
import { encodeFrame, FrameDecoder, Op, type Frame } from '../protocol/index.js';
import { until } from './kernel.js';

/** The opcodes the kernel sends unasked; `call` skips them when it counts replies. */
const UNSOLICITED = new Set<number>([Op.PUSH, Op.PUSH_BINARY, Op.SEND_REFUSED]);

export interface RawClient {
  readonly s: net.Socket;
  /** Every frame received, in order. */
  readonly frames: Frame[];
  write(op: number, payload: unknown): void;
  /** Writes one request and waits for its reply (the next frame that is not unsolicited); JSON-decoded. */
  call(op: number, payload: unknown): Promise<Record<string, unknown>>;
  json(f: Frame): Record<string, unknown>;
}

export async function rawClient(socketPath: string): Promise<RawClient> {
  const s = net.connect(socketPath);
  await new Promise((r, j) => s.once('connect', r).once('error', j));
  const dec = new FrameDecoder(1 << 30);
  const frames: Frame[] = [];
  s.on('data', (c: Buffer) => frames.push(...dec.push(c).frames));
  const write = (op: number, payload: unknown): void =>
    void s.write(encodeFrame(0, op, typeof payload === 'string' ? Buffer.from(payload) : payload));
  const json = (f: Frame): Record<string, unknown> =>
    JSON.parse(f.payload.toString()) as Record<string, unknown>;
  let replies = 0;
  const call = async (op: number, payload: unknown): Promise<Record<string, unknown>> => {
    const want = ++replies;
    write(op, payload);
    const f = await until(
      () => frames.filter((x) => !UNSOLICITED.has(x.opcode))[want - 1],
      20_000,
      'a reply',
    );
    return json(f);
  };
  return { s, frames, write, call, json };
}
