/**
 * Push delivery (HELLO `push`, PUSH 0x24) against a real kernel: opted-in clients get messages and events
 * without RECV, in order, exactly once; other clients never see an unsolicited frame; a client that does
 * not read pauses delivery and the rest stays in its mailbox.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { rawClient } from '../../harness/raw-client.js';
import { decodePushBinary, encodeFrame, Op } from '../../protocol/index.js';
import { EncodedMessage, type CloveClient, type PushedMessage } from '../../sdk/typescript/client.js';
import type { PostOffice } from './mailboxes.js';

let tk: TestKernel | undefined;
afterEach(async () => {
  await tk?.stop();
  tk = undefined;
});

const post = (k: TestKernel): PostOffice => (k.kernel as unknown as { post: PostOffice }).post;

async function take<T>(it: AsyncIterator<T>, n: number): Promise<T[]> {
  const out: T[] = [];
  while (out.length < n) {
    const r = await it.next();
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

describe('push delivery', () => {
  it('pushes messages to an opted-in client in order, taking them from the mailbox exactly once', async () => {
    tk = await startKernel();
    const a = await tk.client();
    const b: CloveClient = await tk.client();
    const bId = (await b.hello()).agent_id;
    const it = b.messages()[Symbol.asyncIterator]();
    const first = it.next(); // opts in
    await until(async () => (await b.hello()).push?.messages, 10_000, 'push on');
    for (let i = 0; i < 200; i++) await a.send(bId, { i });
    const got = [await first, ...(await take(it, 199)).map((value) => ({ value, done: false }))];
    const msgs = got.map((r) => r.value as PushedMessage);
    expect(msgs.map((m) => (m.message as { i: number }).i)).toEqual([...Array(200).keys()]);
    expect(msgs.every((m, i) => m.seq > (msgs[i - 1]?.seq ?? 0) && !('kind' in m))).toBe(true);
    expect(msgs[0].from).toBe(a.agentId);
    // Taken, not copied: nothing is left for RECV.
    expect(post(tk).size(bId)).toBe(0);
    expect((await b.recv({ max: 10 })).count).toBe(0);
  });

  it('messageBatches() yields what arrived as arrays, in order; a messages() loop left early keeps the rest', async () => {
    tk = await startKernel();
    const a = await tk.client();
    const b = await tk.client();
    const bId = (await b.hello()).agent_id;
    await b.setPush({ messages: true });
    const sent = await a.sendBatch(Array.from({ length: 300 }, (_, i) => ({ to: bId, message: { i } })));
    expect(sent.delivered_count).toBe(300);
    const got: number[] = [];
    for await (const m of b.messages()) {
      got.push((m.message as { i: number }).i);
      if (got.length === 10) break;
    }
    const sizes: number[] = [];
    for await (const batch of b.messageBatches()) {
      sizes.push(batch.length);
      got.push(...batch.map((m) => (m.message as { i: number }).i));
      if (got.length >= 300) break;
    }
    expect(got).toEqual([...Array(300).keys()]);
    // What the first loop took from a pushed frame but did not yield came first, with what followed.
    expect(sizes[0]).toBeGreaterThan(1);
    expect(post(tk).size(bId)).toBe(0);
  });

  it('never sends an unsolicited frame to a client that did not opt in; RECV works as before', async () => {
    tk = await startKernel();
    const a = await tk.client();
    const r = await rawClient(tk.socketPath);
    const hello = await r.call(Op.HELLO, {});
    expect(hello.push).toEqual({ messages: false, events: false });
    expect((hello.features as { push: boolean }).push).toBe(true);
    await r.call(Op.SUBSCRIBE, { event_types: ['CUSTOM'] });
    for (let i = 0; i < 20; i++) await a.send(hello.agent_id as number, { i });
    await a.emit('CUSTOM', { x: 1 });
    const recv = await r.call(Op.RECV, { max: 100 });
    expect(recv.count).toBe(20);
    const ev = await r.call(Op.POLL_EVENTS, { max: 10 });
    expect(ev.count).toBe(1);
    expect(r.frames.map((f) => f.opcode)).toEqual([Op.HELLO, Op.SUBSCRIBE, Op.RECV, Op.POLL_EVENTS]);
    // A client that sends PUSH is told what it is for.
    // (Its reply carries the PUSH opcode: this client opted in to nothing, so it is the only one.)
    r.s.write(encodeFrame(0, Op.PUSH, {}));
    const f = await until(() => r.frames[4], 20_000, 'the reply to PUSH');
    const refused = JSON.parse(f.payload.toString()) as Record<string, unknown>;
    expect(refused).toMatchObject({ success: false, code: 'invalid_request' });
    expect(String(refused.error)).toMatch(/HELLO/);
    r.s.destroy();
  });

  it('pushes subscribed events, and stops pushing when HELLO turns push off', async () => {
    tk = await startKernel();
    const a = await tk.client();
    const b = await tk.client();
    const bId = (await b.hello()).agent_id;
    await b.subscribe(['CUSTOM']);
    const it = b.events()[Symbol.asyncIterator]();
    const first = it.next();
    await until(async () => (await b.hello()).push?.events, 10_000, 'push on');
    for (let i = 0; i < 5; i++) await a.emit('CUSTOM', { i });
    const evs = [(await first).value!, ...(await take(it, 4))];
    expect(evs.map((e) => e.data.i)).toEqual([0, 1, 2, 3, 4]);
    expect(evs[0]).toMatchObject({ type: 'CUSTOM', source_agent_id: a.agentId });
    // Off: messages stay in the mailbox for RECV.
    expect((await b.setPush({})).push).toEqual({ messages: false, events: false });
    await a.send(bId, 'kept');
    expect((await b.recv({ max: 10 })).messages.map((m) => m.message)).toEqual(['kept']);
  });

  it('an SDK iterator that is not consumed holds a bounded number of pushes; the rest waits in the kernel', async () => {
    const N = 10_000;
    tk = await startKernel({ mailboxSize: 2 * N });
    const a = await tk.client();
    const b = await tk.client();
    const bId = (await b.hello()).agent_id;
    const it = b.messages()[Symbol.asyncIterator]();
    const first = it.next();
    await until(
      async () => (await post(tk!).size(bId)) === 0 && (await b.hello()).push?.messages,
      10_000,
      'push on',
    );
    // 1 KiB each: 10 MB in all, far more than the client's 4,096 held pushes, the socket buffers and the
    // kernel's 1 MiB push window together, however fast the kernel pushes.
    const pad = 'x'.repeat(1000);
    for (let i = 0; i < N; i += 500)
      await Promise.all(Array.from({ length: 500 }, (_, j) => a.send(bId, { i: i + j, pad })));
    // The client stops reading at 4,096 held pushes (plus the rest of the chunk it was reading); the
    // kernel then stops at its push window.
    const held = (b as unknown as { pushed: { message: { held: number } } }).pushed.message.held;
    expect(held).toBeLessThanOrEqual(4096 + 2000);
    expect(post(tk).size(bId)).toBeGreaterThan(0);
    const all = [(await first).value!, ...(await take(it, N - 1))];
    expect(all.map((m) => (m.message as { i: number }).i)).toEqual([...Array(N).keys()]);
    expect(post(tk).size(bId)).toBe(0);
  }, 120_000);

  it('a client that does not read pauses delivery: the rest stays in its mailbox, budgets hold', async () => {
    const N = 10_000;
    tk = await startKernel({ mailboxSize: 2 * N, budgets: { mailbox_bytes: 64 << 20 } });
    const a = await tk.client();
    const r = await rawClient(tk.socketPath);
    const hello = await r.call(Op.HELLO, { push: { messages: true } });
    const id = hello.agent_id as number;
    r.s.pause(); // reads nothing from now on
    const body = 'x'.repeat(1024);
    for (let i = 0; i < N; i += 500)
      await Promise.all(Array.from({ length: 500 }, (_, j) => a.send(id, { i: i + j, body })));
    // At most what fits the push window (1 MiB) and the socket buffers left the mailbox.
    const held = post(tk).size(id);
    expect(held).toBeGreaterThan(N - 3000);
    expect(post(tk).bytes(id)).toBeLessThanOrEqual(64 << 20);
    // Reading again: everything arrives, in order, once.
    r.s.resume();
    await until(() => r.frames.filter((f) => f.opcode === Op.PUSH).length >= N, 60_000, 'all pushes');
    const is = r.frames
      .filter((f) => f.opcode === Op.PUSH)
      .map((f) => (JSON.parse(f.payload.toString()) as { message: { i: number } }).message.i);
    expect(is).toEqual([...Array(N).keys()]);
    expect(post(tk).size(id)).toBe(0);
    r.s.destroy();
  }, 120_000);
});

describe.each([
  ['TypeScript path', false],
  ['fast path', true],
])('push.batch on the %s', (_name, fastPath) => {
  it('what the mailbox holds arrives in one PUSH frame, RECV items under "messages", in order, taken once', async () => {
    tk = await startKernel({ fastPath });
    const a = await tk.client();
    const r = await rawClient(tk.socketPath);
    const id = (await r.call(Op.HELLO, {})).agent_id as number;
    const sent = await a.sendBatch(Array.from({ length: 50 }, (_, i) => ({ to: id, message: { i } })));
    expect(sent.delivered_count).toBe(50);
    const hello = await r.call(Op.HELLO, { push: { messages: true, batch: true } });
    expect(hello.push).toEqual({ messages: true, events: false, batch: true });
    const pushed = (): {
      kind: string;
      messages: { message: { i: number }; seq: number }[];
      count: number;
    }[] => r.frames.filter((f) => f.opcode === Op.PUSH).map((f) => JSON.parse(f.payload.toString()));
    await until(() => pushed().length === 1, 20_000, 'one batched push');
    const [frame] = pushed();
    expect(frame!.kind).toBe('messages');
    expect(frame!.count).toBe(50);
    expect(frame!.messages.map((m) => m.message.i)).toEqual([...Array(50).keys()]);
    expect(frame!.messages.every((m) => !('kind' in m) && m.seq > 0)).toBe(true);
    await a.send(id, { i: 50 });
    await until(() => pushed().length === 2, 20_000, 'the next push');
    expect(pushed()[1]).toMatchObject({ kind: 'messages', count: 1, messages: [{ message: { i: 50 } }] });
    expect((await r.call(Op.RECV, { max: 10 })).count).toBe(0);
  });
});

describe.each([
  ['TypeScript path', false],
  ['fast path', true],
])('push.format "binary" on the %s', (_name, fastPath) => {
  it('messages arrive as PUSH_BINARY frames, bytes as sent, in order, taken once; events stay PUSH JSON', async () => {
    tk = await startKernel({ fastPath });
    const a = await tk.client();
    const aId = (await a.hello()).agent_id;
    const r = await rawClient(tk.socketPath);
    const id = (await r.call(Op.HELLO, {})).agent_id as number;
    // Sent before opting in (waiting in the mailbox) and after; the last with text past ASCII.
    const texts = [...Array.from({ length: 30 }, (_, i) => `{"i":${i}}`), '{"i":30,"é":"ü€"}'];
    for (const t of texts.slice(0, 20)) await a.send(id, new EncodedMessage(JSON.parse(t)));
    await r.call(Op.SUBSCRIBE, { event_types: ['CUSTOM'] });
    const hello = await r.call(Op.HELLO, {
      push: { messages: true, events: true, batch: true, format: 'binary' },
    });
    expect(hello.push).toEqual({ messages: true, events: true, batch: true, format: 'binary' });
    for (const t of texts.slice(20)) await a.send(id, new EncodedMessage(JSON.parse(t)));
    await a.emit('CUSTOM', { x: 1 });
    const binary = () =>
      r.frames.filter((f) => f.opcode === Op.PUSH_BINARY).flatMap((f) => decodePushBinary(f.payload));
    await until(() => binary().length === texts.length, 20_000, 'every message pushed');
    const got = binary();
    expect(got.map((m) => m.bytes.toString('utf8'))).toEqual(texts);
    expect(got.map((m) => m.seq)).toEqual(texts.map((_, i) => i + 1));
    expect(got.every((m) => m.from === aId)).toBe(true);
    // The first frame carried what waited in the mailbox, several to a frame.
    expect(decodePushBinary(r.frames.find((f) => f.opcode === Op.PUSH_BINARY)!.payload).length).toBe(20);
    await until(() => r.frames.some((f) => f.opcode === Op.PUSH), 20_000, 'the event pushed');
    const event = JSON.parse(r.frames.find((f) => f.opcode === Op.PUSH)!.payload.toString()) as {
      kind: string;
    };
    expect(event).toMatchObject({ kind: 'event', type: 'CUSTOM' });
    expect((await r.call(Op.RECV, { max: 10 })).count).toBe(0);
    // Without batch: one message to a frame.
    await r.call(Op.HELLO, { push: { messages: true, format: 'binary' } });
    for (let i = 0; i < 3; i++) await a.send(id, { j: i });
    await until(() => binary().length === texts.length + 3, 20_000, 'three more');
    expect(
      r.frames
        .filter((f) => f.opcode === Op.PUSH_BINARY)
        .slice(-3)
        .map((f) => f.payload.readUInt32LE(0)),
    ).toEqual([1, 1, 1]);
    // Turned off: the reply says so, and nothing more is pushed.
    expect((await r.call(Op.HELLO, { push: {} })).push).toEqual({ messages: false, events: false });
    r.s.destroy();
  });

  it('a client may not send PUSH_BINARY, and a bad format is refused', async () => {
    tk = await startKernel({ fastPath });
    const r = await rawClient(tk.socketPath);
    await r.call(Op.HELLO, {});
    // Its refusal comes back under its opcode (which call() takes for a push): read it by hand.
    r.s.write(encodeFrame(0, Op.PUSH_BINARY, Buffer.from([0, 0, 0, 0])));
    const refusal = await until(
      () => r.frames.find((f) => f.opcode === Op.PUSH_BINARY),
      20_000,
      'the refusal',
    );
    expect(JSON.parse(refusal.payload.toString())).toMatchObject({ success: false, code: 'invalid_request' });
    const bad = await r.call(Op.HELLO, { push: { messages: true, format: 'msgpack' } });
    expect(bad).toMatchObject({ success: false, code: 'invalid_request' });
    expect((await r.call(Op.HELLO, {})).push).toEqual({ messages: false, events: false });
    r.s.destroy();
  });

  it('the SDK asks for the binary envelope: messages() yields bytes as sent, message parsed on reading', async () => {
    tk = await startKernel({ fastPath });
    const a = await tk.client();
    const b: CloveClient = await tk.client();
    const bId = (await b.hello()).agent_id;
    const it = b.messages()[Symbol.asyncIterator]();
    const first = it.next();
    await until(async () => (await b.hello()).push?.format === 'binary', 10_000, 'binary push on');
    await a.send(bId, { é: [1, 2, 3] });
    await a.send(bId, 'two');
    const m1 = (await first).value as PushedMessage;
    const m2 = (await it.next()).value as PushedMessage;
    expect(m1.bytes?.toString()).toBe('{"é":[1,2,3]}');
    expect(m1.message).toEqual({ é: [1, 2, 3] });
    expect([m2.message, m2.bytes?.toString(), m2.seq]).toEqual(['two', '"two"', 2]);
    await it.return?.(undefined);
  });
});
