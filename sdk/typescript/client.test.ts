/**
 * TypeScript SDK behaviour that the conformance suite does not cover: injected transports, timeouts,
 * reconnection across a kernel restart, pipelining, typed errors.
 */
import { afterEach, describe, expect, it } from 'vitest';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { startKernel, startKernelProcess, tempDir, type KernelProcess } from '../../harness/kernel.js';
import {
  CloveClient,
  EncodedMessage,
  ConnectionClosedError,
  ProtocolError,
  TimeoutError,
  PermissionDeniedError,
  kernelError,
} from './client.js';
import { encodeFrame, FrameDecoder, Op } from '../../protocol/index.js';

const procs: KernelProcess[] = [];
afterEach(async () => {
  for (const p of procs.splice(0)) await p.stop('SIGKILL');
});

/** A socket and data dir for a kernel and its successor; start() starts one there (plain processes). */
function restartable(): { sock: string; start: () => Promise<KernelProcess> } {
  const dir = tempDir();
  const sock = path.join(dir, 'k.sock');
  const data = path.join(dir, 'd');
  return {
    sock,
    start: async () => {
      const k = await startKernelProcess({ socketPath: sock, dataDir: data, extra: ['--sandbox', 'off'] });
      procs.push(k);
      return k;
    },
  };
}

/** SENDs `message` to `name` once the name is known again (its SDK reconnects within half a second). */
async function sendOnceBack(c: CloveClient, name: string, message: unknown): Promise<void> {
  for (let i = 0; ; i++) {
    const sent = await c.send(name, message).catch((e: Error) => e);
    if (!(sent instanceof Error)) return;
    if (i > 50) throw sent;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A fake kernel: the test decides what comes back. */
function fakeTransport(onWrite: (chunk: Buffer, reply: (b: Buffer) => void) => void) {
  return async () => {
    const d = new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        onWrite(chunk as Buffer, (b) => d.push(b));
        cb();
      },
    });
    return d;
  };
}

describe('CloveClient', () => {
  it('uses an injected transport and maps replies and errors', async () => {
    const c = await CloveClient.connect({
      transport: fakeTransport((chunk, reply) => {
        const op = chunk.readUInt8(8);
        if (op === Op.HELLO) reply(encodeFrame(42, op, { success: true, role: 'operator', agent_id: 42 }));
        else reply(encodeFrame(42, op, { success: false, error: 'nope', code: 'permission_denied' }));
      }),
    });
    expect((await c.hello()).agent_id).toBe(42);
    expect(c.agentId).toBe(42);
    await expect(c.kill('x')).rejects.toBeInstanceOf(PermissionDeniedError);
    c.close();
  });

  it('tells pushes from replies by opcode: replies stay matched to their calls, pushes go to the iterators', async () => {
    let pushes = 0;
    const c = await CloveClient.connect({
      transport: fakeTransport((chunk, reply) => {
        const op = chunk.readUInt8(8);
        // Before every reply, a pushed message and a pushed event.
        reply(
          encodeFrame(7, Op.PUSH, {
            kind: 'message',
            from: 1,
            from_name: 'a',
            message: pushes,
            age_ms: 0,
            seq: ++pushes,
          }),
        );
        reply(
          encodeFrame(7, Op.PUSH, {
            kind: 'event',
            type: 'CUSTOM',
            data: { n: pushes },
            source_agent_id: 1,
            timestamp: 0,
          }),
        );
        reply(
          encodeFrame(
            7,
            op,
            op === Op.HELLO
              ? { success: true, agent_id: 7, push: { messages: true, events: false } }
              : { success: true, n: pushes },
          ),
        );
      }),
    });
    const msgs = c.messages()[Symbol.asyncIterator]();
    const evs = c.events()[Symbol.asyncIterator]();
    const m0 = await msgs.next(); // opts in (HELLO push), which itself came after one push of each
    expect(m0.value).toMatchObject({ message: 0, seq: 1 });
    expect(m0.value).not.toHaveProperty('kind');
    expect((await c.call<{ n: number }>(Op.HEARTBEAT)).n).toBeGreaterThan(0);
    expect((await msgs.next()).value?.seq).toBe(2); // pushed before HEARTBEAT's reply
    expect((await evs.next()).value).toMatchObject({ type: 'CUSTOM', data: { n: 1 } });
    c.close();
    // After close, what was already received is still handed out, then the iteration ends.
    let left = 0;
    while (!(await msgs.next()).done) left++;
    expect(left).toBe(1);
  });

  it('times out a call that gets no reply and fails what was in flight', async () => {
    const c = await CloveClient.connect({
      transport: fakeTransport(() => {}),
      timeoutMs: 100,
      reconnect: false,
    });
    await expect(c.hello()).rejects.toBeInstanceOf(TimeoutError);
    await expect(c.hello()).rejects.toBeInstanceOf(ConnectionClosedError);
  });

  it('rejects a reply stream that is not frames', async () => {
    const c = await CloveClient.connect({
      transport: fakeTransport((_c, reply) => reply(Buffer.alloc(20, 0x41))),
      reconnect: false,
    });
    await expect(c.hello()).rejects.toBeInstanceOf(ProtocolError);
  });

  it('reconnectWindowMs 0: calls in flight at a kernel crash fail at once, later calls reconnect', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'k.sock');
    const k1 = await startKernelProcess({ socketPath: sock, dataDir: path.join(dir, 'd') });
    procs.push(k1);
    const c = await CloveClient.connect({ socketPath: sock, reconnectAttempts: 50, reconnectWindowMs: 0 });
    const first = (await c.hello()).agent_id;
    const waiting = c.recv({ timeoutMs: 10_000 });
    k1.child.kill('SIGKILL');
    await expect(waiting).rejects.toBeInstanceOf(ConnectionClosedError);
    // Until the old kernel is reaped, its last threads may still hold the listening socket.
    await k1.exited;
    const k2 = await startKernelProcess({ socketPath: sock, dataDir: path.join(dir, 'd') });
    procs.push(k2);
    const h = await c.hello();
    expect(h.success).toBe(true);
    expect(h.agent_id).toBeGreaterThanOrEqual(1);
    expect(first).toBeGreaterThanOrEqual(1);
    c.close();
  });

  it('a kernel restart within the window: calls in flight and calls made meanwhile are answered, in order, without an error', async () => {
    const { sock, start } = restartable();
    const k1 = await start();
    const c = await CloveClient.connect({ socketPath: sock });
    const reconnected: number[] = [];
    c.onReconnect(() => reconnected.push(Date.now()));
    await c.hello();
    await c.register('waiter');
    await c.subscribe(['tick']);
    // A blocking RECV in flight when the kernel dies, and calls made while no kernel runs.
    const waiting = c.recv({ max: 1, timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    k1.child.kill('SIGKILL');
    await k1.exited;
    const meanwhile = [c.echo('a'), c.echo('b'), c.echo('c')];
    await new Promise((r) => setTimeout(r, 300));
    await start();
    // Its name is its own again on the new kernel (made again by the SDK): a message to it is received
    // by the RECV that was re-sent (the calls made meanwhile are answered after it: replies are ordered).
    const other = await CloveClient.connect({ socketPath: sock });
    await sendOnceBack(other, 'waiter', { after: 'restart' });
    const got = await waiting;
    expect(got.messages.map((m) => m.message)).toEqual([{ after: 'restart' }]);
    expect(await Promise.all(meanwhile)).toEqual(['a', 'b', 'c']);
    expect(reconnected.length).toBeGreaterThanOrEqual(1);
    // And its subscriptions: an event emitted now reaches it.
    await other.emit('tick', { n: 1 });
    const ev = await c.pollEvents({ max: 10, timeoutMs: 5000 });
    expect(ev.events.map((e) => (e.data as { n?: number }).n)).toContain(1);
    other.close();
    c.close();
  });

  it('a kernel that does not come back within the window: the kept calls fail with ConnectionClosedError', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'k.sock');
    const k1 = await startKernelProcess({
      socketPath: sock,
      dataDir: path.join(dir, 'd'),
      extra: ['--sandbox', 'off'],
    });
    procs.push(k1);
    const c = await CloveClient.connect({ socketPath: sock, reconnectWindowMs: 1000 });
    await c.hello();
    const waiting = c.recv({ max: 1, timeoutMs: 20_000 });
    const t0 = Date.now();
    k1.child.kill('SIGKILL');
    const err = await waiting.then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ConnectionClosedError);
    expect((err as Error).message).toMatch(/within 1000 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    c.close();
  });

  it('a push iterator keeps yielding across a kernel restart, with no call from the program', async () => {
    const { sock, start } = restartable();
    const k1 = await start();
    const c = await CloveClient.connect({ socketPath: sock });
    await c.register('listener');
    const it = c.messages()[Symbol.asyncIterator]();
    const first = it.next();
    const o1 = await CloveClient.connect({ socketPath: sock });
    await o1.send('listener', { n: 1 });
    expect((await first).value?.message).toEqual({ n: 1 });
    o1.close();
    const second = it.next();
    k1.child.kill('SIGKILL');
    await k1.exited;
    await start();
    // The listener's name is its own again once its client reconnected (by itself), with push asked again.
    const o2 = await CloveClient.connect({ socketPath: sock });
    await sendOnceBack(o2, 'listener', { n: 2 });
    expect((await second).value?.message).toEqual({ n: 2 });
    o2.close();
    c.close();
  });

  it('an agent its kernel started waits on its first connect for a kernel that is not listening yet', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 'k.sock');
    const saved = { s: process.env.CLOVE_SOCKET, id: process.env.CLOVE_AGENT_ID };
    const restore = (k: string, v: string | undefined): void => {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    };
    try {
      // Not started by a kernel: a refused first connect fails at once, as before.
      delete process.env.CLOVE_AGENT_ID;
      const t0 = Date.now();
      await expect(CloveClient.connect({ socketPath: sock })).rejects.toThrow(/cannot connect/);
      expect(Date.now() - t0).toBeLessThan(1000);
      // Started by a kernel (its CLOVE_AGENT_ID and CLOVE_SOCKET): the first call waits until a kernel listens.
      process.env.CLOVE_SOCKET = sock;
      process.env.CLOVE_AGENT_ID = '7';
      const c = new CloveClient();
      const answered = c.echo('first');
      const t1 = Date.now();
      await new Promise((r) => setTimeout(r, 500));
      procs.push(
        await startKernelProcess({
          socketPath: sock,
          dataDir: path.join(dir, 'd'),
          extra: ['--sandbox', 'off'],
        }),
      );
      expect(await answered).toBe('first');
      expect(Date.now() - t1).toBeGreaterThanOrEqual(450);
      c.close();
      // Another socket than the kernel's, or a window of 0: not waited for.
      await expect(CloveClient.connect({ socketPath: `${sock}.other` })).rejects.toThrow(/cannot connect/);
      procs.pop()!.child.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 100));
      // A kernel that never comes: the first call fails after the window, saying so.
      const t2 = Date.now();
      await expect(new CloveClient({ reconnectWindowMs: 600 }).echo('x')).rejects.toThrow(
        /no kernel listened within 600 ms/,
      );
      expect(Date.now() - t2).toBeGreaterThanOrEqual(550);
      // A path that cannot be a socket (ENOTDIR) is not waited for.
      await expect(
        CloveClient.connect({ socketPath: '/proc/version/x', waitForKernel: true }),
      ).rejects.toThrow(/ENOTDIR/);
    } finally {
      restore('CLOVE_SOCKET', saved.s);
      restore('CLOVE_AGENT_ID', saved.id);
    }
  });

  it('a connection that drops again before it answered what a reconnect asked for does not shift the replies', async () => {
    let n = 0;
    const transport = async () => {
      const k = ++n;
      const dec = new FrameDecoder();
      const d: Duplex = new Duplex({
        read() {},
        write(chunk, _enc, cb) {
          cb();
          for (const f of dec.push(chunk as Buffer).frames) {
            // 1: answers HELLO, then goes away under a NOOP; 2: goes away at once; 3: answers everything.
            if (k === 2 || (k === 1 && f.opcode === Op.NOOP)) {
              setImmediate(() => d.destroy());
              return;
            }
            const body = f.opcode === Op.NOOP ? f.payload : { success: true, role: 'client', agent_id: 7 };
            setImmediate(() => d.push(encodeFrame(7, f.opcode, body)));
          }
        },
      });
      return d;
    };
    const c = await CloveClient.connect({ transport, reconnectDelayMs: 5, reconnectWindowMs: 5000 });
    await c.hello();
    expect(await c.echo('kept through two drops')).toBe('kept through two drops');
    expect(n).toBe(3);
    c.close();
  });

  it('pipelined calls of one tick (written together) are answered in order; a big frame among them arrives whole', async () => {
    const tk = await startKernel({ mailboxSize: 4096 });
    try {
      const c = await tk.client();
      const me = (await c.hello()).agent_id;
      // Near the 1 MiB frame limit, not ASCII-only: a frame cut or joined wrongly would not compare equal.
      const big = Buffer.from('é'.repeat(450_000) + 'tail');
      const batch = Array.from({ length: 4096 }, (_, i) => ({ to: me, message: i }));
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 300; i++) {
        calls.push(c.echo(`small-${i}`));
        if (i === 100) calls.push(c.echo(big));
        if (i === 200) calls.push(c.sendBatch(batch));
      }
      const out = await Promise.all(calls);
      const echoes = out.filter((x): x is string => typeof x === 'string');
      expect(echoes.filter((x) => x.startsWith('small-'))).toEqual(
        Array.from({ length: 300 }, (_, i) => `small-${i}`),
      );
      expect(echoes.find((x) => x.endsWith('tail')) === big.toString()).toBe(true);
      expect(out[202]).toMatchObject({ success: true, delivered_count: 4096, failed_count: 0 });
      const got: unknown[] = [];
      while (got.length < 4096) got.push(...(await c.recv({ max: 4096 })).messages.map((m) => m.message));
      expect(got).toEqual(batch.map((m) => m.message));
      // Calls of later ticks are not held back by the ones before.
      expect(await c.echo('after')).toBe('after');
    } finally {
      await tk.stop();
    }
  }, 60_000);

  it('builds the error class of each code', () => {
    expect(kernelError({ success: false, error: 'x', code: 'permission_denied' })).toBeInstanceOf(
      PermissionDeniedError,
    );
    expect(kernelError({ success: false, error: 'x', code: 'brand_new' }).code).toBe('brand_new');
  });

  it('an EncodedMessage goes on the wire byte for byte as its value would (SEND, SEND_BATCH, mixed items)', async () => {
    const frames: Buffer[] = [];
    const c = await CloveClient.connect({
      transport: fakeTransport((chunk, reply) => {
        frames.push(Buffer.from(chunk));
        reply(encodeFrame(9, chunk.readUInt8(8), { success: true }));
      }),
    });
    const values = [{ a: [1, 'é\u2028"'], b: null }, 'x'.repeat(300), 0, [true], '\ud83d\ude00'];
    const sent = async (enc: boolean) => {
      frames.length = 0;
      const m = (v: unknown) => (enc ? new EncodedMessage(v) : v);
      await c.send(7, m(values[0]));
      await c.send('peer', m(values[1]));
      await c.sendBatch(
        [
          { to: 3, message: m(values[0]) },
          { to: 3, message: values[2] }, // a plain one among them
          { toName: 'peer', message: m(values[3]) },
          { to_name: 'peer', message: m(values[4]) },
          { to_name: 'peer' },
          { to: 3, message: () => 1 }, // a value JSON.stringify leaves out
          { to: 4, to_name: 'both', message: m(values[1]) },
        ],
        { results: 'refused' },
      );
      await c.sendBatch([{ to: 5, message: m(values[2]) }]);
      // The same target as the call before, then a batch whose first item has no message.
      await c.sendBatch([
        { to: 5, message: m(values[0]) },
        { to: 5, message: m(values[1]) },
      ]);
      await c.sendBatch([{ to: 5 }, { to: 6, message: m(values[2]) }, { to: 5, message: m(values[3]) }]);
      return frames.map((f) => f.toString('hex'));
    };
    expect(await sent(true)).toEqual(await sent(false));
    expect(new EncodedMessage('abc').byteLength).toBe(5);
    expect(() => new EncodedMessage(undefined)).toThrow(TypeError);
    c.close();
  });

  for (const fastPath of [false, true]) {
    it(`EncodedMessages arrive as their values through a real kernel (${fastPath ? 'fast path' : 'TypeScript path'})`, async () => {
      const tk = await startKernel({ fastPath });
      try {
        const a = await tk.client();
        const b = await tk.client();
        await b.register('enc-peer');
        const value = { n: 1, s: 'é"\\', list: [1.5, null] };
        const once = new EncodedMessage(value);
        await a.send('enc-peer', once);
        const r = await a.sendBatch(
          [
            { to_name: 'enc-peer', message: once },
            { to_name: 'nobody-here', message: once },
            { to_name: 'enc-peer', message: once },
          ],
          { results: 'refused' },
        );
        expect(r.delivered_count).toBe(2);
        expect(r.results).toEqual([expect.objectContaining({ index: 1, code: 'not_found' })]);
        const got = await b.recv({ max: 10 });
        expect(got.messages.map((m) => m.message)).toEqual([value, value, value]);
      } finally {
        await tk.stop();
      }
    });
  }
});
