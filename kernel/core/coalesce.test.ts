/**
 * Coalesced writes (issue 12 step 0): the replies to the frames of one read leave in a few writev calls
 * (one per 64 KiB), not one write syscall each, in request order; a reply produced later (a parked RECV)
 * still leaves at once. Counted at the kernel's side of the connection (the kernel runs in this process).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { encodeFrame, FrameDecoder, Op, type Frame } from '../../protocol/index.js';

let tk: TestKernel | undefined;
afterEach(async () => {
  await tk?.stop();
  tk = undefined;
});

describe('coalesced replies', () => {
  it('answers 10,000 pipelined NOOPs in order, the replies of each read in one or two writes', async () => {
    tk = await startKernel();
    const s = net.connect(tk.socketPath);
    await new Promise((r, j) => s.once('connect', r).once('error', j));
    // The kernel's side of the connection, counted at the stream: each read it got (push) and each write
    // it made (_write / _writev: one libuv write request, one syscall unless the socket is full). How the
    // client's one big write is cut into reads depends on the load; one writev per read (per 64 KiB of
    // replies) does not.
    type Counted = {
      push(...a: unknown[]): boolean;
      _write(...a: unknown[]): void;
      _writev(...a: unknown[]): void;
    };
    const proto = net.Socket.prototype as unknown as Counted;
    const orig = { push: proto.push, _write: proto._write, _writev: proto._writev };
    let reads = 0;
    let writes = 0;
    proto.push = function (this: net.Socket, ...a: unknown[]) {
      if (this !== s && a[0] !== null) reads++;
      return orig.push.apply(this, a);
    };
    proto._write = function (this: net.Socket, ...a: unknown[]) {
      if (this !== s) writes++;
      return orig._write.apply(this, a);
    };
    proto._writev = function (this: net.Socket, ...a: unknown[]) {
      if (this !== s) writes++;
      return orig._writev.apply(this, a);
    };
    const dec = new FrameDecoder(1 << 30);
    const frames: Frame[] = [];
    s.on('data', (c: Buffer) => frames.push(...dec.push(c).frames));
    const N = 10_000;
    const all = Buffer.concat(Array.from({ length: N }, (_, i) => encodeFrame(0, Op.NOOP, `n${i}`)));
    try {
      s.write(all);
      await until(() => frames.length >= N, 60_000, 'all replies');
    } finally {
      Object.assign(proto, orig);
    }
    expect(frames.map((f) => f.payload.toString())).toEqual(Array.from({ length: N }, (_, i) => `n${i}`));
    // One write per reply would be 10,000 (Node's own batching of what waits gave about 300 writes); here
    // about 4 reads gave 2 writes.
    expect(reads).toBeGreaterThan(0);
    expect(writes).toBeLessThanOrEqual(2 * reads + 5);
    expect(writes).toBeLessThan(N / 5);
    s.destroy();
  }, 90_000);

  it('a parked RECV is answered as soon as its message arrives, behind nothing', async () => {
    tk = await startKernel();
    const a = await tk.client();
    const b = await tk.client();
    const bId = (await b.hello()).agent_id;
    const parked = b.recv({ max: 1, timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 100));
    await a.send(bId, 'now');
    expect((await parked).messages.map((m) => m.message)).toEqual(['now']);
  });
});
