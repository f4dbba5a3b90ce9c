/**
 * Messages stay byte-exact end to end on both paths (issue 12 §2): whatever spacing, number forms and
 * escapes the sender wrote, the receiver gets that text (a pushed message's `bytes`, RECV's reply), for
 * SEND, SEND_BATCH and BROADCAST, whether the reactor served the call or JavaScript did (the TypeScript
 * path, or a fast-path batch with a refused item, which JavaScript serves whole).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { rawClient } from '../../harness/raw-client.js';
import { Op } from '../../protocol/index.js';
import type { CloveClient, PushedMessage } from '../../sdk/typescript/client.js';
import { nativeAvailable } from '../sandbox/native.js';
import { messageTexts } from './message-text.js';

let tk: TestKernel | undefined;
afterEach(async () => {
  await tk?.stop();
  tk = undefined;
});

/** Texts a client may write for the same values as JSON.stringify would, and some it would not. */
const ODD = [
  '{"a" : 1.0, "b":[ 1 ,2 ], "c" :{ }}',
  '"\\u00e9t\\u00e9 \\/ \u2028"',
  '1e3',
  '-0',
  '[ ]',
  '"plain"',
  '12345678901234567890123',
];

async function pushedBytes(c: CloveClient, n: number): Promise<string[]> {
  const out: string[] = [];
  for await (const m of c.messages() as AsyncIterable<PushedMessage>) {
    out.push(m.bytes!.toString('utf8'));
    if (out.length === n) break;
  }
  return out;
}

const paths = [
  ['TypeScript path', false],
  ...(nativeAvailable() ? ([['fast path', true]] as const) : []),
] as const;

describe.skipIf(!nativeAvailable())('messageTexts', () => {
  it("finds each message's text as written, and gives up on what JSON.parse would read otherwise", () => {
    const one = Buffer.from('{ "to" : 5, "message" :  {"a" : [1.50, "x"]}  , "z": 1}');
    expect(messageTexts(one, false)).toEqual(['{"a" : [1.50, "x"]}']);
    expect(messageTexts(Buffer.from('{"to": 5}'), false)).toEqual([undefined]);
    const batch = Buffer.from(
      '{"messages": [ {"to":1,"message": 2.0 }, {"to":2}, {"message":"é\\n"} ], "results":"none"}',
    );
    expect(messageTexts(batch, true)).toEqual(['2.0', undefined, '"é\\n"']);
    // JSON.parse takes the last of two keys: not guessed at, the caller encodes the parsed value.
    expect(messageTexts(Buffer.from('{"message": 1, "message": 2}'), false)).toBeNull();
    expect(messageTexts(Buffer.from('{"messages": [1]}'), true)).toBeNull();
    expect(messageTexts(Buffer.from('{"to": 1}'), true)).toBeNull();
  });
});

describe.each(paths)('messages keep their text on the %s', (_name, fastPath) => {
  it('SEND, SEND_BATCH (all delivered, and with a refused item) and BROADCAST', async () => {
    tk = await startKernel({ fastPath });
    const b = await tk.client();
    const bId = (await b.register('text-b')).agent_id;
    const a = await rawClient(tk.socketPath);
    for (const t of ODD) a.write(Op.SEND, `{"to" : ${bId}, "message" : ${t} }`);
    a.write(
      Op.SEND_BATCH,
      `{"messages":[${ODD.map((t) => `{ "to_name":"text-b", "message":${t}\n}`).join(',')}]}`,
    );
    // A refused item: on the fast path JavaScript serves this whole batch.
    a.write(
      Op.SEND_BATCH,
      `{"messages":[{"to_name":"nobody-text","message":0},${ODD.map((t) => `{"to":${bId},"message":${t}}`).join(',')}]}`,
    );
    a.write(Op.BROADCAST, `{"message" : ${ODD[0]} }`);
    await until(() => a.frames.length === ODD.length + 3, 10_000, 'the replies');
    expect(a.frames.every((f) => !JSON.parse(f.payload.toString()).error)).toBe(true);
    const got = await pushedBytes(b, ODD.length * 3 + 1);
    expect(got).toEqual([...ODD, ...ODD, ...ODD, ODD[0]]);
    // RECV's reply carries the same text (a client that does not take pushes).
    const c = await tk.client();
    const cId = (await c.register('text-c')).agent_id;
    a.write(Op.SEND, `{"to":${cId},"message":${ODD[0]}}`);
    await until(() => a.frames.length === ODD.length + 4, 10_000, 'the last reply');
    const raw = await c.raw(Op.RECV, { max: 1 });
    expect(raw.toString()).toContain(`"message":${ODD[0]}`);
    a.s.destroy();
  });
});
