/**
 * The fast path's IO layer end to end (docs/fastpath.md, Rules 2, 7, 8, 9): a real kernel with
 * `fastPath: true`, real Unix sockets, every connection owned by the reactor thread. What must hold is
 * what holds without it: replies in request order, half-close answered then closed, framing errors
 * answered once then closed, a client that does not read held to bounded memory, shutdown never hangs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { encodeFrame, FrameDecoder, MAGIC, Op, type Frame } from '../../protocol/index.js';
import { nativeAvailable } from '../sandbox/native.js';
import type { Connection } from './connection.js';
import type { FastPath } from './native-socket.js';

interface Raw {
  sock: net.Socket;
  frames: Frame[];
  closed: Promise<void>;
  ended: Promise<void>;
  /** Resolves once `n` reply frames arrived. */
  replies(n: number): Promise<Frame[]>;
}

async function raw(file: string, read = true, allowHalfOpen = false): Promise<Raw> {
  const sock = net.connect({ path: file, allowHalfOpen });
  await new Promise((r, j) => sock.once('connect', r).once('error', j));
  const d = new FrameDecoder(2 ** 40);
  const frames: Frame[] = [];
  sock.on('error', () => {});
  if (read) sock.on('data', (c) => frames.push(...d.push(c).frames));
  else sock.pause();
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  const ended = Promise.race([new Promise<void>((r) => sock.once('end', () => r())), closed]);
  return {
    sock,
    frames,
    closed,
    ended,
    replies: async (n) => {
      await until(() => frames.length >= n || sock.destroyed, 30_000);
      return frames;
    },
  };
}

function fastPathOf(tk: TestKernel): FastPath {
  return (tk.kernel as unknown as { fastPath: FastPath }).fastPath;
}

const native = nativeAvailable();

describe.runIf(native)('fast path IO (reactor thread)', () => {
  let tk: TestKernel;

  beforeAll(async () => {
    tk = await startKernel({ fastPath: true });
  });
  afterAll(async () => tk?.stop());

  it('adopts connections: the SDK works through the reactor', async () => {
    const c = await tk.client();
    expect((await c.echo('hello')).toString()).toBe('hello');
    expect(fastPathOf(tk).size).toBeGreaterThan(0);
  });

  it('answers pipelined frames in request order', async () => {
    const r = await raw(tk.socketPath);
    const n = 500;
    const out: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      // NOOP echoes; SEND to nobody is refused (a fast opcode that goes to JavaScript): interleaved.
      out.push(
        i % 3 === 2
          ? encodeFrame(0, Op.SEND, { to: 999_999, message: i })
          : encodeFrame(0, Op.NOOP, Buffer.from(String(i))),
      );
    }
    r.sock.write(Buffer.concat(out));
    const got = await r.replies(n);
    expect(got).toHaveLength(n);
    got.forEach((f, i) => {
      if (i % 3 === 2) {
        expect(f.opcode).toBe(Op.SEND);
        expect(JSON.parse(f.payload.toString()).success).toBe(false);
      } else {
        expect(f.opcode).toBe(Op.NOOP);
        expect(f.payload.toString()).toBe(String(i));
      }
    });
    r.sock.destroy();
  });

  it('half-close: what was sent is answered, then the kernel ends its side and closes', async () => {
    const r = await raw(tk.socketPath, true, true);
    const frames = Array.from({ length: 20 }, (_, i) => encodeFrame(0, Op.NOOP, Buffer.from(`h${i}`)));
    r.sock.end(Buffer.concat(frames));
    await r.ended;
    expect(r.frames.map((f) => f.payload.toString())).toEqual(frames.map((_, i) => `h${i}`));
    r.sock.end();
    await r.closed;
  });

  it('bad magic: frames before it are answered, then one bad_frame reply, then close', async () => {
    const r = await raw(tk.socketPath);
    const bad = Buffer.alloc(17, 0x41);
    r.sock.write(Buffer.concat([encodeFrame(0, Op.NOOP, Buffer.from('before')), bad, Buffer.alloc(100)]));
    await r.closed;
    expect(r.frames).toHaveLength(2);
    expect(r.frames[0].payload.toString()).toBe('before');
    const err = JSON.parse(r.frames[1].payload.toString());
    expect(err).toMatchObject({ success: false, code: 'bad_frame' });
    expect(err.error).toMatch(/bad magic/);
  });

  it('payload too large: refused from the header alone, then close', async () => {
    const r = await raw(tk.socketPath);
    const h = Buffer.alloc(17);
    h.writeUInt32LE(MAGIC, 0);
    h.writeUInt8(Op.NOOP, 8);
    h.writeBigUInt64LE(2n ** 40n, 9);
    r.sock.write(h);
    await r.closed;
    expect(r.frames).toHaveLength(1);
    const err = JSON.parse(r.frames[0].payload.toString());
    expect(err).toMatchObject({ success: false, code: 'bad_frame' });
    expect(err.error).toMatch(/exceeds the limit/);
  });

  it('a client that does not read is held to bounded memory, and loses nothing once it reads', async () => {
    const r = await raw(tk.socketPath, false);
    const body = Buffer.alloc(256 * 1024, 0x61);
    const frame = encodeFrame(0, Op.NOOP, body);
    // 64 MiB of replies asked for: far beyond what the kernel may hold (8 MiB unsent, 256 requests).
    const n = 256;
    let written = 0;
    const writeMore = (): void => {
      while (written < n) {
        written++;
        if (!r.sock.write(frame)) break;
      }
      if (written < n) r.sock.once('drain', writeMore);
    };
    writeMore();
    // The kernel serves until 8 MiB of replies wait for the client, then stops reading it: the
    // client's own writes back up long before all of them are taken.
    const server = (tk.kernel as unknown as { server: { connections: Set<Connection> } }).server;
    const mine = (): Connection[] => [...server.connections].filter((c) => c.socket.writableLength > 0);
    await until(() => mine().some((c) => c.socket.writableLength >= 8 * 1024 * 1024), 60_000);
    await until(() => r.sock.writableLength > 0, 30_000);
    expect(written).toBeLessThan(n);
    // What the kernel holds for it is bounded: 8 MiB of unsent replies plus the one that crossed it.
    for (const c of server.connections) expect(c.socket.writableLength).toBeLessThan(9 * 1024 * 1024);
    // Reading everything: every reply arrives, in order and whole.
    const d = new FrameDecoder(2 ** 40);
    let got = 0;
    let ok = true;
    r.sock.on('data', (c) => {
      for (const f of d.push(c).frames) {
        if (f.payload.length !== body.length) ok = false;
        got++;
      }
    });
    r.sock.resume();
    await until(() => got >= n, 120_000);
    expect(got).toBe(n);
    expect(ok).toBe(true);
    r.sock.destroy();
  }, 180_000);

  it('many connections at once', async () => {
    const conns = await Promise.all(Array.from({ length: 200 }, () => raw(tk.socketPath)));
    conns.forEach((r, i) => r.sock.write(encodeFrame(0, Op.NOOP, Buffer.from(`c${i}`))));
    await Promise.all(conns.map((r) => r.replies(1)));
    conns.forEach((r, i) => expect(r.frames[0].payload.toString()).toBe(`c${i}`));
    for (const r of conns) r.sock.destroy();
    await until(() => fastPathOf(tk).size <= 2, 30_000);
  });
});

describe.runIf(native)('fast path shutdown', () => {
  it('a kernel stops with connections open, a parked call and a half-read frame: no hang, no thread left', async () => {
    const threads = (): number =>
      Number(/Threads:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);
    const before = threads();
    const tk = await startKernel({ fastPath: true });
    const conns = await Promise.all(Array.from({ length: 20 }, () => raw(tk.socketPath)));
    const parked = await tk.client();
    const waiting = parked.recv({ wait: true, timeout_ms: 60_000 }).catch((e: Error) => e);
    // Half a frame, never completed.
    conns[0].sock.write(encodeFrame(0, Op.NOOP, Buffer.alloc(1000)).subarray(0, 500));
    await until(() => fastPathOf(tk).size >= 21, 30_000);
    await tk.stop();
    await Promise.all(conns.map((r) => r.closed));
    await waiting;
    expect(fastPathOf(tk).size).toBe(0);
    // The reactor thread is joined by close(): the process has no more threads than before.
    await until(() => threads() <= before, 10_000);
  }, 60_000);
});
