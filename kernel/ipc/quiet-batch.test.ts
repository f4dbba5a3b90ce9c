/**
 * SEND_BATCH `results: "none"` against a real kernel, on both paths: a batch whose every item is queued
 * gets no frame at all (the next frame is the next request's reply); one with refusals gets one
 * SEND_REFUSED (0x27) in place of its reply, in order among the replies, with its `ref`; a request the
 * kernel cannot take as a whole is refused the same way (an agent's refusals are audited as ever:
 * kernel/syscalls/ipc/ipc.test.ts); a payload that is not a
 * JSON object still gets an ordinary reply (the kernel cannot read `results` from it). The SDK's side:
 * `sendBatch(…, {results: "none"})` resolves with its `ref` and `onRefused` hears what was refused.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { rawClient } from '../../harness/raw-client.js';
import { Op } from '../../protocol/index.js';
import { EncodedMessage, type CloveClient } from '../../sdk/typescript/client.js';
import type { SendRefused } from '../../sdk/typescript/types.js';
import { nativeAvailable } from '../sandbox/native.js';
import type { NativePostOffice } from './native-mail.js';

let tk: TestKernel | undefined;
afterEach(async () => {
  await tk?.stop();
  tk = undefined;
});

/** A raw client that has said HELLO (its id known), with nothing received yet. */
async function helloed(socketPath: string) {
  const c = await rawClient(socketPath);
  c.write(Op.HELLO, {});
  await until(() => c.frames.length === 1, 10_000, 'HELLO reply');
  const id = c.frames[0].agentId;
  c.frames.length = 0;
  return { ...c, id };
}

async function named(k: TestKernel, name: string): Promise<{ c: CloveClient; id: number }> {
  const c = await k.client();
  return { c, id: (await c.register(name)).agent_id };
}

const paths = [
  ['TypeScript path', false],
  ...(nativeAvailable() ? ([['fast path', true]] as const) : []),
] as const;

describe.each(paths)('SEND_BATCH results "none" on the %s', (_name, fastPath) => {
  it('a batch whose every item is queued is not answered: the next frame is the next reply', async () => {
    tk = await startKernel({ fastPath });
    const dest = await named(tk, 'quiet-dest');
    const a = await helloed(tk.socketPath);
    const statsBefore = fastPath
      ? (tk.kernel as unknown as { nativeMail: NativePostOffice }).nativeMail.stats(a.id)
      : undefined;
    for (let i = 0; i < 100; i++)
      a.write(Op.SEND_BATCH, {
        messages: [
          { to: dest.id, message: { i } },
          { to_name: 'quiet-dest', message: 'x'.repeat(i) },
        ],
        results: 'none',
        ref: i,
      });
    a.write(Op.HELLO, {});
    await until(() => a.frames.length >= 1, 10_000, 'the HELLO reply');
    // Give a stray frame time to arrive before saying there is none.
    await new Promise((r) => setTimeout(r, 100));
    expect(a.frames.map((f) => f.opcode)).toEqual([Op.HELLO]);
    const got = await dest.c.recv({ max: 1000 });
    expect(got.count).toBe(200);
    expect(got.messages.map((m) => m.message).slice(0, 4)).toEqual([{ i: 0 }, '', { i: 1 }, 'x']);
    if (statsBefore) {
      // Served by the reactor: its store counted the 100 calls (and the HELLO went to JavaScript).
      const after = (tk.kernel as unknown as { nativeMail: NativePostOffice }).nativeMail.stats(a.id);
      expect(after.syscalls - statsBefore.syscalls).toBe(100);
      expect(after.sent - statsBefore.sent).toBe(200);
    }
    a.s.destroy();
  });

  it('refused items come back as one SEND_REFUSED with the ref, in order among the replies', async () => {
    tk = await startKernel({ fastPath });
    const dest = await named(tk, 'quiet-partial');
    const a = await helloed(tk.socketPath);
    a.write(Op.SEND_BATCH, {
      messages: [
        { to: dest.id, message: 1 },
        { to_name: 'nobody-quiet', message: 2 },
        { to_name: 'quiet-partial', message: 3 },
        { message: 4 },
      ],
      results: 'none',
      ref: 7,
    });
    a.write(Op.SEND_BATCH, { messages: [{ to: dest.id, message: 5 }], results: 'none', ref: 8 });
    a.write(Op.HELLO, {});
    await until(() => a.frames.length >= 2, 10_000, 'SEND_REFUSED and the HELLO reply');
    await new Promise((r) => setTimeout(r, 100));
    expect(a.frames.map((f) => f.opcode)).toEqual([Op.SEND_REFUSED, Op.HELLO]);
    expect(a.frames[0].agentId).toBe(a.id);
    const refusal = a.json(a.frames[0]);
    expect(refusal).toMatchObject({ ref: 7, success: true, delivered_count: 2, failed_count: 2 });
    expect(refusal.results).toEqual([
      { index: 1, error: 'target agent not found: nobody-quiet', code: 'not_found' },
      { index: 3, error: 'target agent required (to or to_name)', code: 'invalid_request' },
    ]);
    expect((await dest.c.recv({ max: 10 })).messages.map((m) => m.message)).toEqual([1, 3, 5]);
    a.s.destroy();
  });

  it('a request refused as a whole is a SEND_REFUSED too; a payload that is not an object gets a reply', async () => {
    tk = await startKernel({ fastPath });
    const dest = await named(tk, 'quiet-whole');
    const a = await helloed(tk.socketPath);
    a.write(Op.SEND_BATCH, { messages: [], results: 'none', ref: 1 });
    a.write(Op.SEND_BATCH, { messages: [{ to: dest.id, message: 'no' }, 5], results: 'none', ref: 2 });
    // A ref of the wrong type refuses the batch (on the fast path too), and cannot be echoed.
    a.write(Op.SEND_BATCH, { messages: [{ to: dest.id, message: 'no' }], results: 'none', ref: -1 });
    a.write(Op.SEND_BATCH, { messages: [{ to: dest.id, message: 'no' }], results: 'none', ref: 'x' });
    a.write(Op.SEND_BATCH, [{ to: dest.id, message: 'no' }]);
    // A client never sends SEND_REFUSED.
    a.write(Op.SEND_REFUSED, { ref: 1 });
    await until(() => a.frames.length >= 6, 10_000, 'six answers');
    await new Promise((r) => setTimeout(r, 100));
    expect(a.frames.map((f) => f.opcode)).toEqual([
      Op.SEND_REFUSED,
      Op.SEND_REFUSED,
      Op.SEND_REFUSED,
      Op.SEND_REFUSED,
      Op.SEND_BATCH,
      Op.SEND_REFUSED,
    ]);
    const bodies = a.frames.map(a.json);
    expect(bodies.slice(0, 4).map((b) => [b.ref, b.success, b.code])).toEqual([
      [1, false, 'invalid_request'],
      [2, false, 'invalid_request'],
      [null, false, 'invalid_request'],
      [null, false, 'invalid_request'],
    ]);
    expect(bodies[4]).toMatchObject({ success: false, code: 'invalid_request' });
    expect(bodies[4]).not.toHaveProperty('ref');
    expect(bodies[5]).toMatchObject({ success: false, code: 'invalid_request' });
    expect(String(bodies[5].error)).toMatch(/never by a client/);
    expect((await dest.c.recv({ max: 10 })).count).toBe(0);
    a.s.destroy();
  });

  it('with log_syscalls on (every call in JavaScript) the batch is still unanswered, and recorded', async () => {
    tk = await startKernel({ fastPath });
    const dest = await named(tk, 'quiet-logged');
    await dest.c.call(Op.SET_AUDIT_CONFIG, { log_syscalls: true });
    const a = await helloed(tk.socketPath);
    a.write(Op.SEND_BATCH, { messages: [{ to: dest.id, message: 'logged' }], results: 'none', ref: 3 });
    a.write(Op.HELLO, {});
    await until(() => a.frames.length >= 1, 10_000, 'the HELLO reply');
    await new Promise((r) => setTimeout(r, 100));
    expect(a.frames.map((f) => f.opcode)).toEqual([Op.HELLO]);
    expect((await dest.c.recv({ max: 10 })).messages.map((m) => m.message)).toEqual(['logged']);
    // The observers saw the reply the batch did not get.
    const log = await dest.c.getAuditLog({ category: 'SYSCALL', agent_id: a.id, limit: 100 });
    const entry = (log.entries as { details: Record<string, unknown> }[]).find(
      (e) => e.details.syscall === 'SEND_BATCH',
    );
    expect(entry).toMatchObject({ success: true, details: { syscall: 'SEND_BATCH' } });
    a.s.destroy();
  });

  it('the SDK: sendBatch resolves with a ref, onRefused hears the refusals, replies keep their order', async () => {
    tk = await startKernel({ fastPath });
    const dest = await named(tk, 'quiet-sdk');
    const c = await tk.client();
    const refusals: SendRefused[] = [];
    c.onRefused((r) => refusals.push(r));
    const body = new EncodedMessage({ hello: 'world' });
    const sent = await Promise.all([
      c.sendBatch([{ to: dest.id, message: body }], { results: 'none' }),
      c.send(dest.id, 'between'),
      c.sendBatch(
        [
          { toName: 'quiet-sdk', message: 'plain' },
          { toName: 'nobody-sdk', message: 'lost' },
        ],
        { results: 'none' },
      ),
      c.sendBatch(
        [
          { to: dest.id, message: body },
          { toName: 'nobody-sdk-2', message: body },
        ],
        {
          results: 'none',
        },
      ),
      c.hello(),
    ]);
    expect(sent[0]).toEqual({ ref: 1 });
    expect(sent[1]).toMatchObject({ success: true, delivered_to: dest.id });
    expect(sent[2]).toEqual({ ref: 2 });
    expect(sent[3]).toEqual({ ref: 3 });
    await until(() => refusals.length === 2, 10_000, 'two refusals');
    expect(refusals).toEqual([
      {
        ref: 2,
        success: true,
        delivered_count: 1,
        failed_count: 1,
        results: [{ index: 1, error: 'target agent not found: nobody-sdk', code: 'not_found' }],
      },
      {
        ref: 3,
        success: true,
        delivered_count: 1,
        failed_count: 1,
        results: [{ index: 1, error: 'target agent not found: nobody-sdk-2', code: 'not_found' }],
      },
    ]);
    const got = await dest.c.recv({ max: 10 });
    expect(got.messages.map((m) => m.message)).toEqual([
      { hello: 'world' },
      'between',
      'plain',
      { hello: 'world' },
    ]);
    // The connection is in step: a call after it all gets its own reply.
    expect((await c.hello()).agent_id).toBe(c.agentId);
  });

  it('the SDK keeps refusals until a handler is registered; a removed handler hears no more', async () => {
    tk = await startKernel({ fastPath });
    const c = await tk.client();
    for (let i = 0; i < 3; i++)
      await c.sendBatch([{ toName: `nobody-kept-${i}`, message: i }], { results: 'none' });
    await c.hello(); // the refusals came before this reply
    const first: SendRefused[] = [];
    const off = c.onRefused((r) => first.push(r));
    expect(first.map((r) => [r.ref, r.failed_count])).toEqual([
      [1, 1],
      [2, 1],
      [3, 1],
    ]);
    off();
    await c.sendBatch([{ toName: 'nobody-kept-3', message: 3 }], { results: 'none' });
    await c.hello();
    expect(first).toHaveLength(3);
    const second: SendRefused[] = [];
    c.onRefused((r) => second.push(r));
    expect(second.map((r) => r.ref)).toEqual([4]);
  });
});
