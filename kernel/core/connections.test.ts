/**
 * Connections that must not take the kernel down (issue 9): half-closed clients still get their
 * replies, a client mid-way through an oversized frame is cut off at once, an agent cannot hold more
 * connections than its `connections` budget, and file descriptors are kept for operators so that an
 * agent that opens every connection it can is still killed by an operator.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  REPO_ROOT,
  startKernel,
  tempDir,
  until,
  waitForSocket,
  type TestKernel,
} from '../../harness/kernel.js';
import { CloveClient } from '../../sdk/typescript/client.js';
import { encodeFrame, FrameDecoder, MAGIC, Op } from '../../protocol/index.js';

interface Raw {
  sock: net.Socket;
  replies: { op: number; body: string; at: number }[];
  /** Resolves when the kernel ended its side ('end') or the socket closed. */
  ended: Promise<number>;
  closed: Promise<number>;
  /** Resolves with the next reply (waits for it). */
  next(): Promise<{ op: number; body: string; at: number }>;
}

/** A raw client on `file`: collects reply frames and when the kernel ended and closed the stream. */
async function raw(file: string): Promise<Raw> {
  const sock = net.connect(file);
  await new Promise((r, j) => sock.once('connect', r).once('error', j));
  const d = new FrameDecoder(2 ** 40);
  const replies: Raw['replies'] = [];
  let waiting: (() => void)[] = [];
  let taken = 0;
  sock.on('error', () => {});
  sock.on('data', (c) => {
    for (const f of d.push(c).frames)
      replies.push({ op: f.opcode, body: f.payload.toString(), at: Date.now() });
    for (const w of waiting) w();
    waiting = [];
  });
  const closed = new Promise<number>((r) => sock.once('close', () => r(Date.now())));
  const ended = Promise.race([new Promise<number>((r) => sock.once('end', () => r(Date.now()))), closed]);
  return {
    sock,
    replies,
    ended,
    closed,
    async next() {
      while (replies.length <= taken) await new Promise<void>((r) => waiting.push(r));
      return replies[taken++];
    },
  };
}

function json(r: { body: string }): Record<string, unknown> {
  return JSON.parse(r.body) as Record<string, unknown>;
}

/** Descriptors open in this process (client and kernel ends alike, for an in-process kernel). */
function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('half-closed connections', () => {
  let tk: TestKernel;
  let op: CloveClient;

  beforeAll(async () => {
    tk = await startKernel();
    op = await tk.client();
  });
  afterAll(async () => tk?.stop());

  it('a parked RECV of a client that shut down its write side is answered at its timeout', async () => {
    const c = await raw(tk.socketPath);
    const t0 = Date.now();
    c.sock.write(encodeFrame(0, Op.RECV, { wait: true, timeout_ms: 1500 }));
    c.sock.end();
    const r = await c.next();
    expect(r.op).toBe(Op.RECV);
    expect(json(r)).toMatchObject({ success: true, count: 0 });
    expect(r.at - t0).toBeGreaterThanOrEqual(1400);
    // Then the kernel ends its side: the socket closes promptly after the last reply.
    expect((await c.ended) - r.at).toBeLessThan(500);
    await c.closed;
    expect(c.replies).toHaveLength(1);
  });

  it('a parked RECV of a half-closed client gets the message an operator sends it', async () => {
    const c = await raw(tk.socketPath);
    c.sock.write(
      Buffer.concat([
        encodeFrame(0, Op.REGISTER, { name: 'half-closed-1' }),
        encodeFrame(0, Op.RECV, { wait: true, timeout_ms: 10_000 }),
      ]),
    );
    c.sock.end();
    expect(json(await c.next())).toMatchObject({ success: true });
    await new Promise((r) => setTimeout(r, 100)); // the RECV is parked by now
    const t0 = Date.now();
    await op.send('half-closed-1', { hi: 'there' });
    const r = await c.next();
    expect(r.op).toBe(Op.RECV);
    const body = json(r) as { count: number; messages: { message: unknown; from: number }[] };
    expect(body.count).toBe(1);
    expect(body.messages[0].message).toEqual({ hi: 'there' });
    expect(body.messages[0].from).toBe(op.agentId);
    expect(r.at - t0).toBeLessThan(500);
    expect((await c.ended) - r.at).toBeLessThan(500);
    await c.closed;
  });

  it('pipelined requests before the EOF are all answered in order, then the connection closes', async () => {
    const c = await raw(tk.socketPath);
    c.sock.write(
      Buffer.concat([
        encodeFrame(0, Op.NOOP, 'one'),
        encodeFrame(0, Op.POLL_EVENTS, { wait: true, timeout_ms: 300 }),
        encodeFrame(0, Op.NOOP, 'two'),
        // a frame cut off by the EOF is forgotten
        encodeFrame(0, Op.NOOP, 'three').subarray(0, 20),
      ]),
    );
    c.sock.end();
    await c.closed;
    expect(c.replies.map((r) => r.op)).toEqual([Op.NOOP, Op.POLL_EVENTS, Op.NOOP]);
    expect(c.replies[0].body).toBe('one');
    expect(json(c.replies[1])).toMatchObject({ success: true, count: 0 });
    expect(c.replies[2].body).toBe('two');
  });

  it('a half-closed connection with nothing pending is closed at once (no descriptor leaks)', async () => {
    const before = openFds();
    const t0 = Date.now();
    const conns = await Promise.all(Array.from({ length: 50 }, () => raw(tk.socketPath)));
    for (const [i, c] of conns.entries()) {
      if (i % 2) c.sock.write(encodeFrame(0, Op.NOOP, `n${i}`));
      c.sock.end();
    }
    const closedAt = await Promise.all(conns.map((c) => c.closed));
    expect(Math.max(...closedAt) - t0).toBeLessThan(1000);
    for (const [i, c] of conns.entries())
      expect(c.replies.map((r) => r.body)).toEqual(i % 2 ? [`n${i}`] : []);
    // Both ends lived in this process: every one of them is closed again.
    await until(() => openFds() <= before + 2, 2000, 'descriptors to be closed');
  });

  it('a client that goes away entirely while parked is torn down at once (its name is released)', async () => {
    // Closed outright...
    const a = await raw(tk.socketPath);
    a.sock.write(
      Buffer.concat([
        encodeFrame(0, Op.REGISTER, { name: 'gone-1' }),
        encodeFrame(0, Op.RECV, { wait: true, timeout_ms: 20_000 }),
      ]),
    );
    await a.next();
    a.sock.destroy();
    await until(
      () =>
        op.send('gone-1', 'x').then(
          () => false,
          (e: Error) => /not found/i.test(e.message),
        ),
      1000,
      'gone-1 to be released',
    );
    // ...and half-closed first, closed later.
    const b = await raw(tk.socketPath);
    b.sock.write(
      Buffer.concat([
        encodeFrame(0, Op.REGISTER, { name: 'gone-2' }),
        encodeFrame(0, Op.RECV, { wait: true, timeout_ms: 20_000 }),
      ]),
    );
    b.sock.end();
    await b.next();
    await new Promise((r) => setTimeout(r, 300));
    b.sock.destroy();
    const t0 = Date.now();
    await until(
      () =>
        op.send('gone-2', 'x').then(
          () => false,
          (e: Error) => /not found/i.test(e.message),
        ),
      2000,
      'gone-2 to be released',
    );
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});

describe('oversized frames', () => {
  let tk: TestKernel;
  let op: CloveClient;

  beforeAll(async () => {
    tk = await startKernel();
    op = await tk.client();
  });
  afterAll(async () => tk?.stop());

  /** Writes a header announcing 64 MiB, then body chunks until the kernel cuts the stream. */
  async function oversized(c: Raw): Promise<{ cutAfterMs: number; bytes: number }> {
    const h = Buffer.alloc(17);
    h.writeUInt32LE(MAGIC, 0);
    h.writeUInt8(Op.STORE, 8);
    h.writeBigUInt64LE(64n * 1024n * 1024n, 9);
    const t0 = Date.now();
    let bytes = 0;
    let cut = false;
    const done = c.closed.then(() => (cut = true));
    c.sock.write(h);
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    while (!cut && bytes < 64 * 1024 * 1024 && Date.now() - t0 < 5000) {
      const ok = c.sock.write(chunk);
      bytes += chunk.length;
      if (!ok) await Promise.race([new Promise((r) => c.sock.once('drain', r)), done]);
    }
    await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
    return { cutAfterMs: (cut ? await c.closed : Date.now()) - t0, bytes };
  }

  it('a client still writing an oversized body gets bad_frame and is disconnected at once', async () => {
    const c = await raw(tk.socketPath);
    const { cutAfterMs, bytes } = await oversized(c);
    expect(cutAfterMs).toBeLessThan(1000);
    expect(bytes).toBeLessThan(64 * 1024 * 1024);
    expect(c.replies).toHaveLength(1);
    expect(c.replies[0].op).toBe(Op.STORE);
    expect(json(c.replies[0])).toMatchObject({ success: false, code: 'bad_frame' });
    expect(String(json(c.replies[0]).error)).toMatch(/exceeds the limit/);
    expect((await op.hello()).success).toBe(true);
    expect(await op.echo('still here')).toBe('still here');
  });

  it('a parked call does not hold the disconnect back: it is woken, takes nothing, and is answered first', async () => {
    const c = await raw(tk.socketPath);
    c.sock.write(
      Buffer.concat([
        encodeFrame(0, Op.REGISTER, { name: 'oversized-parked' }),
        encodeFrame(0, Op.RECV, { wait: true, timeout_ms: 20_000 }),
      ]),
    );
    await c.next();
    const { cutAfterMs } = await oversized(c);
    expect(cutAfterMs).toBeLessThan(1000);
    expect(c.replies.map((r) => r.op)).toEqual([Op.REGISTER, Op.RECV, Op.STORE]);
    expect(json(c.replies[1])).toMatchObject({ success: true, count: 0 });
    expect(json(c.replies[2])).toMatchObject({ success: false, code: 'bad_frame' });
    expect((await op.list()).length).toBeGreaterThanOrEqual(0);
  });
});

/** A Python agent: opens `N` raw connections, sends HELLO on each, and reports what each got. */
const BUDGET_AGENT = `
import json, os, socket, struct, time

def call(s, op, payload):
    body = json.dumps(payload).encode()
    s.sendall(struct.pack("<IIBQ", 0x41474E54, 0, op, len(body)) + body)
    head = b""
    while len(head) < 17:
        c = s.recv(17 - len(head))
        if not c:
            raise EOFError("closed before a reply")
        head += c
    _, _, opcode, size = struct.unpack("<IIBQ", head)
    data = b""
    while len(data) < size:
        data += s.recv(size - len(data))
    return opcode, json.loads(data)

def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.environ["CLOVE_SOCKET"])
    return s

socks = [connect() for _ in range(int(os.environ["N"]))]
results = []
for s in socks:
    try:
        opcode, r = call(s, 0xFE, {})
        results.append({"opcode": opcode, "reply": r})
    except Exception as e:
        results.append({"exception": repr(e)})
served = [s for s, r in zip(socks, results) if r.get("reply", {}).get("success")]
# A refused connection is closed by the kernel after its one reply.
closed_after = []
for s, r in zip(socks, results):
    if not r.get("reply", {}).get("success"):
        try:
            closed_after.append(s.recv(1) == b"")
        except OSError:
            closed_after.append(True)
# Refused connections never counted: closing one served connection makes room for exactly one more.
served.pop().close()
time.sleep(0.2)
extra = []
for _ in range(2):
    s = connect()
    try:
        extra.append(call(s, 0xFE, {})[1])
    except Exception as e:
        extra.append({"exception": repr(e)})
    served.append(s)
call(served[0], 0x20, {"to": int(os.environ["REPORT_TO"]), "message": {"results": results, "closed_after": closed_after, "extra": extra}})
while True:
    time.sleep(1)
`;

describe('connections budget', () => {
  let tk: TestKernel;
  let op: CloveClient;
  let dir: string;

  beforeAll(async () => {
    tk = await startKernel();
    op = await tk.client();
    dir = tempDir();
    fs.writeFileSync(path.join(dir, 'budget_agent.py'), BUDGET_AGENT, { mode: 0o644 });
  });
  afterAll(async () => {
    await tk?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an agent beyond its connections budget gets quota_exceeded on its first request; operators still kill it', async () => {
    const me = (await op.hello()).agent_id;
    const s = await op.spawn({
      name: 'greedy',
      script: path.join(dir, 'budget_agent.py'),
      env: { REPORT_TO: String(me), N: '10' },
      budgets: { connections: 4 },
    });
    const got = await op.recv({ max: 1, timeoutMs: 20_000 });
    expect(got.count).toBe(1);
    const rep = got.messages[0].message as {
      results: { opcode?: number; reply?: Record<string, unknown>; exception?: string }[];
      closed_after: boolean[];
      extra: Record<string, unknown>[];
    };
    const ok = rep.results.filter((r) => r.reply?.success === true);
    const refused = rep.results.filter((r) => r.reply?.success === false);
    expect(ok).toHaveLength(4);
    for (const r of ok) expect(r.reply).toMatchObject({ role: 'agent', agent_id: s.id });
    expect(refused).toHaveLength(6);
    for (const r of refused) {
      expect(r.opcode).toBe(Op.HELLO);
      expect(r.reply).toEqual({
        success: false,
        error: 'quota exceeded: too many connections (budget connections: 4 of 4)',
        code: 'quota_exceeded',
        budget: 'connections',
        used: 4,
        limit: 4,
      });
    }
    expect(rep.closed_after).toEqual([true, true, true, true, true, true]);
    // One served connection closed: one new one is served, the next refused again.
    expect(rep.extra[0]).toMatchObject({ success: true, agent_id: s.id });
    expect(rep.extra[1]).toMatchObject({ success: false, code: 'quota_exceeded', used: 4, limit: 4 });
    // An operator connects and kills it.
    const op2 = await tk.client();
    const t0 = Date.now();
    expect((await op2.kill(s.id, { grace_ms: 500 })).success).toBe(true);
    expect(Date.now() - t0).toBeLessThan(1000);
    await until(
      async () => (await op2.list()).find((a) => a.id === s.id)?.state !== 'RUNNING',
      5000,
      'greedy to stop',
    );
  });
});

/** A Python agent: opens connections (HELLO on each) for as long as the kernel accepts them, reports, then keeps trying. */
const FLOOD_AGENT = `
import json, os, socket, struct, time
from clove_sdk import CloveClient

def hello(s):
    s.sendall(struct.pack("<IIBQ", 0x41474E54, 0, 0xFE, 2) + b"{}")
    head = b""
    while len(head) < 17:
        c = s.recv(17 - len(head))
        if not c:
            raise EOFError("refused")
        head += c
    size = struct.unpack("<IIBQ", head)[3]
    data = b""
    while len(data) < size:
        data += s.recv(size - len(data))
    return json.loads(data)

c = CloveClient()
c.connect()
held, refused, streak = [], 0, 0
reported = False
while True:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(os.environ["CLOVE_SOCKET"])
        if hello(s).get("success"):
            held.append(s)
            streak = 0
            continue
        s.close()
    except OSError as e:
        s.close()
        if e.errno == 24:  # EMFILE: the agent's own limit
            break
    except EOFError:
        s.close()
    refused += 1
    streak += 1
    if streak >= 20 and not reported:
        c.send_message({"held": len(held), "refused": refused}, to=int(os.environ["REPORT_TO"]))
        reported = True
    time.sleep(0.01)
c.send_message({"held": len(held), "refused": refused, "emfile": True}, to=int(os.environ["REPORT_TO"]))
while True:
    time.sleep(1)
`;

describe('file descriptors kept for operators', () => {
  it('an agent that opens every connection it can cannot keep an operator out', async () => {
    const dir = tempDir();
    const socketPath = path.join(dir, 'clove.sock');
    const dataDir = path.join(dir, 'data');
    fs.writeFileSync(path.join(dir, 'flood_agent.py'), FLOOD_AGENT, { mode: 0o644 });
    const child = spawn(
      'prlimit',
      [
        '--nofile=600:600',
        process.execPath,
        path.join(REPO_ROOT, 'bin', 'clove.js'),
        '--socket',
        socketPath,
        'kernel',
        '--data-dir',
        dataDir,
        '--log-level',
        'warn',
        // The native sandbox gives agents 1024 descriptors, more than this hard limit allows (EPERM).
        '--sandbox',
        'off',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const clients: CloveClient[] = [];
    let passed = false;
    try {
      await waitForSocket(socketPath, 15_000, exited);
      const limits = fs.readFileSync(`/proc/${child.pid}/limits`, 'utf8');
      expect(limits).toMatch(/Max open files\s+600\s+600/);
      const op = await CloveClient.connect({ socketPath });
      clients.push(op);
      const me = (await op.hello()).agent_id;
      const s = await op.spawn({
        name: 'flood',
        script: path.join(dir, 'flood_agent.py'),
        env: { REPORT_TO: String(me) },
        budgets: { connections: 5000 },
      });
      const got = await op.recv({ max: 1, timeoutMs: 30_000 });
      expect(got.count).toBe(1);
      const rep = got.messages[0].message as { held: number; refused: number; emfile?: boolean };
      // It held what the kernel could spare (600 minus the reserve of 256 minus the kernel's own) and no more.
      expect(rep.emfile).toBeUndefined();
      expect(rep.held).toBeGreaterThan(100);
      expect(rep.held).toBeLessThan(600 - 256);
      expect(rep.refused).toBeGreaterThanOrEqual(20);
      // The agent keeps hammering; an operator still gets in, sees it and kills it.
      const t0 = Date.now();
      const op2 = await CloveClient.connect({ socketPath });
      clients.push(op2);
      const connectedIn = Date.now() - t0;
      expect(connectedIn).toBeLessThan(1000);
      const agents = await op2.list();
      expect(agents.find((a) => a.id === s.id)?.state).toBe('RUNNING');
      const t1 = Date.now();
      expect((await op2.kill(s.id, { grace_ms: 500 })).success).toBe(true);
      expect(Date.now() - t1).toBeLessThan(1000);
      await until(
        async () => (await op2.list()).find((a) => a.id === s.id)?.state !== 'RUNNING',
        5000,
        'flood to stop',
      );
      expect(stderr).toMatch(/file descriptors low/);
      // Its connections went with it: the kernel is back to a handful of descriptors.
      await until(() => fs.readdirSync(`/proc/${child.pid}/fd`).length < 150, 5000, 'descriptors back');
      expect((await op2.hello()).success).toBe(true);
      passed = true;
    } catch (e) {
      (e as Error).message += `\n--- kernel stderr (tail) ---\n${stderr.slice(-3000)}`;
      throw e;
    } finally {
      for (const c of clients) c.close();
      if (child.exitCode === null) child.kill('SIGTERM');
      const code = await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      if (passed) expect(code).toBe(0);
    }
  }, 60_000);
});
