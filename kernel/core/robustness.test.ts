/**
 * Hostile input against a real kernel process: garbage, bad magic, oversized size fields, frames cut
 * off by a disconnect, invalid JSON, wrong field types, unknown opcodes, and 1,000 connections opened
 * and dropped. The kernel stays up, keeps serving a well-behaved client, and its memory stays bounded.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import { startKernelProcess, type KernelProcess } from '../../harness/kernel.js';
import { encodeFrame, FrameDecoder, MAGIC, Op } from '../../protocol/index.js';
import type { CloveClient } from '../../sdk/typescript/client.js';

let kp: KernelProcess;
let good: CloveClient;

beforeAll(async () => {
  kp = await startKernelProcess({ extra: ['--log-level', 'error'] });
  good = await kp.client();
});
afterAll(async () => {
  const r = await kp?.stop();
  expect(r?.code).toBe(0);
});

function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]);
}

/** Writes bytes on a fresh connection; resolves with every reply frame and whether the kernel closed it. */
function exchange(
  bytes: Buffer,
  opts: { end?: boolean; waitMs?: number } = {},
): Promise<{ replies: { op: number; body: string }[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(kp.socketPath);
    const d = new FrameDecoder();
    const replies: { op: number; body: string }[] = [];
    let closed = false;
    s.on('error', () => {});
    s.on('connect', () => {
      s.write(bytes);
      if (opts.end) s.end();
    });
    s.on('data', (c) =>
      replies.push(...d.push(c).frames.map((f) => ({ op: f.opcode, body: f.payload.toString() }))),
    );
    s.on('close', () => {
      closed = true;
    });
    setTimeout(() => {
      s.destroy();
      resolve({ replies, closed });
    }, opts.waitMs ?? 300);
  });
}

async function stillServing(): Promise<void> {
  expect((await good.hello()).success).toBe(true);
  expect(await good.echo('ping')).toBe('ping');
}

describe('hostile input', () => {
  it('garbage bytes: one bad_frame reply, then the connection is closed', async () => {
    const r = await exchange(Buffer.from('this is not a clove frame at all, just noise'));
    expect(r.replies).toHaveLength(1);
    expect(JSON.parse(r.replies[0].body)).toMatchObject({ success: false, code: 'bad_frame' });
    expect(r.closed).toBe(true);
    await stillServing();
  });

  it('a valid frame before a bad magic is still answered', async () => {
    const bad = Buffer.alloc(17);
    bad.writeUInt32LE(0xdeadbeef, 0);
    const r = await exchange(Buffer.concat([encodeFrame(0, Op.NOOP, 'first'), bad]));
    expect(r.replies.map((x) => x.body)).toEqual(['first', expect.stringContaining('bad magic')]);
    expect(r.closed).toBe(true);
  });

  it('an oversized size field is refused without buffering it', async () => {
    const h = Buffer.alloc(17);
    h.writeUInt32LE(MAGIC, 0);
    h.writeUInt8(Op.STORE, 8);
    h.writeBigUInt64LE(2n ** 40n, 9);
    const r = await exchange(h);
    expect(r.replies).toHaveLength(1);
    expect(r.replies[0].op).toBe(Op.STORE);
    expect(JSON.parse(r.replies[0].body).error).toMatch(/exceeds the limit/);
    expect(r.closed).toBe(true);
    await stillServing();
  });

  it('a frame cut off by a disconnect is forgotten', async () => {
    const f = encodeFrame(0, Op.STORE, { key: 'cut', value: 'x'.repeat(1000) });
    await exchange(f.subarray(0, 500), { end: true, waitMs: 100 });
    expect((await good.fetch('cut')).exists).toBe(false);
    await stillServing();
  });

  it('invalid JSON, wrong types and unknown opcodes get error replies on a connection that stays open', async () => {
    const frames = Buffer.concat([
      encodeFrame(0, Op.SEND, '{not json'),
      encodeFrame(0, Op.SEND, '[1,2,3]'),
      encodeFrame(0, Op.SPAWN, { script: 42 }),
      encodeFrame(0, Op.KILL, { id: 'seven' }),
      encodeFrame(0, Op.STORE, { key: { nested: true } }),
      encodeFrame(0, Op.RECV, { max: 'all' }),
      encodeFrame(0, Op.SUBSCRIBE, { event_types: 'AGENT_EXITED' }),
      encodeFrame(0, 0x99, { hello: 1 }),
      encodeFrame(0, Op.HELLO, {}),
    ]);
    const r = await exchange(frames, { waitMs: 500 });
    expect(r.closed).toBe(false);
    const bodies = r.replies.map((x) => JSON.parse(x.body));
    expect(bodies.slice(0, 8).map((b) => b.code)).toEqual([
      'invalid_request',
      'invalid_request',
      'invalid_request',
      'invalid_request',
      'invalid_request',
      'invalid_request',
      'invalid_request',
      'unknown_opcode',
    ]);
    expect(bodies[0].error).toMatch(/not valid JSON/);
    expect(bodies[2].error).toMatch(/'script' must be a string/);
    expect(bodies[8].success).toBe(true);
    await stillServing();
  });

  it('opens and drops 1,000 connections with memory bounded', async () => {
    const pid = kp.child.pid!;
    const round = async () => {
      for (let batch = 0; batch < 10; batch++) {
        await Promise.all(
          Array.from({ length: 100 }, (_, i) =>
            exchange(
              Buffer.concat([
                encodeFrame(0, Op.REGISTER, { name: `c${batch}-${i}` }),
                encodeFrame(0, Op.STORE, { key: 'k' }),
              ]).subarray(0, 40 + i),
              {
                waitMs: 20,
              },
            ),
          ),
        );
      }
    };
    await round(); // warm-up: let the heap reach its working size
    const before = rssKiB(pid);
    await round();
    await round();
    const after = rssKiB(pid);
    expect(after - before).toBeLessThan(30 * 1024);
    await stillServing();
    // Every dropped connection's names were released.
    const fresh = await kp.client();
    await expect(fresh.register('c0-0')).resolves.toMatchObject({ success: true });
  }, 60_000);
});
