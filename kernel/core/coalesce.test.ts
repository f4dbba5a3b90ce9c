/**
 * Coalesced writes (issue 12 step 0): the replies to the frames of one read leave in a few writev calls
 * (one per 64 KiB), not one write syscall each, in request order; a reply produced later (a parked RECV)
 * still leaves at once. Counted with this process's write syscalls (/proc/self/io `syscw`): the kernel
 * and the client run here.
 */
import fs from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { encodeFrame, FrameDecoder, Op, type Frame } from '../../protocol/index.js';

let tk: TestKernel | undefined;
afterEach(async () => {
  await tk?.stop();
  tk = undefined;
});

const syscw = (): number => Number(/syscw:\s*(\d+)/.exec(fs.readFileSync('/proc/self/io', 'utf8'))![1]);

describe('coalesced replies', () => {
  it('answers 10,000 pipelined NOOPs in order with far fewer write syscalls than replies', async () => {
    tk = await startKernel();
    const s = net.connect(tk.socketPath);
    await new Promise((r, j) => s.once('connect', r).once('error', j));
    const dec = new FrameDecoder(1 << 30);
    const frames: Frame[] = [];
    s.on('data', (c: Buffer) => frames.push(...dec.push(c).frames));
    const N = 10_000;
    const all = Buffer.concat(Array.from({ length: N }, (_, i) => encodeFrame(0, Op.NOOP, `n${i}`)));
    const before = syscw();
    s.write(all);
    await until(() => frames.length >= N, 60_000, 'all replies');
    const writes = syscw() - before;
    expect(frames.map((f) => f.payload.toString())).toEqual(Array.from({ length: N }, (_, i) => `n${i}`));
    // ~130 KiB of replies: a few writev calls, the client's one write and the kernel's log included
    // (about 12 here; one write per reply, as before, gave about 300: Node batches only what waits).
    expect(writes).toBeLessThan(100);
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
