/**
 * The fast path's message path end to end (docs/fastpath.md, issue 12 step 5): a real kernel with
 * `fastPath: true`, real clients and agents. Calls the reactor completes are counted in the native store
 * (NativePostOffice.stats), which is how these tests know a call was served without JavaScript; the
 * kernel's rules must hold on that path exactly as on the TypeScript one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, until, type TestKernel } from '../../harness/kernel.js';
import { KernelError, type CloveClient } from '../../sdk/typescript/client.js';
import { nativeAvailable } from '../sandbox/native.js';
import type { NativePostOffice } from './native-mail.js';

function mailOf(tk: TestKernel): NativePostOffice {
  return (tk.kernel as unknown as { nativeMail: NativePostOffice }).nativeMail;
}

/** The start of the test agents: a raw protocol client (stdlib only) that has said HELLO. */
const RAW_CLIENT = `
import json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.connect(os.environ["CLOVE_SOCKET"])
def call(op, obj):
    b = json.dumps(obj).encode()
    s.sendall(struct.pack("<IIBQ", 0x41474E54, 0, op, len(b)) + b)
    h = b""
    while len(h) < 17: h += s.recv(17 - len(h))
    n = struct.unpack("<Q", h[9:17])[0]; p = b""
    while len(p) < n: p += s.recv(n - len(p))
    return json.loads(p)
call(0xFE, {})
`;

/**
 * A Python agent that takes one message under a lease and dies before acknowledging it (first run), then
 * (restarted) takes it again and tells its sender.
 */
const LEASER = `${RAW_CLIENT}MARK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "leaser.mark")
r = call(0x21, {"max": 1, "wait": True, "timeout_ms": 60000, "lease": True})
if not os.path.exists(MARK):
    open(MARK, "w").close()
    os._exit(3)
m = r["messages"][0]
call(0x20, {"to": m["from"], "message": {"again": m["message"]}})
while True:
    call(0x21, {"max": 1, "wait": True, "timeout_ms": 60000, "lease": True})
`;

/**
 * A Python agent that echoes every message back to its sender by id, through blocking RECVs under a lease
 * (a message taken by a process that is killed before its next RECV is delivered again).
 */
const ECHO = `${RAW_CLIENT}while True:
    r = call(0x21, {"max": 100, "wait": True, "timeout_ms": 60000, "lease": True})
    for m in r["messages"]:
        call(0x20, {"to": m["from"], "message": {"echo": m["message"], "seq": m["seq"]}})
`;

describe.skipIf(!nativeAvailable())('fast path: messages served by the reactor', () => {
  let tk: TestKernel;
  let dir: string;
  beforeAll(async () => {
    tk = await startKernel({ fastPath: true });
    dir = fs.mkdtempSync('/tmp/clove-fast-');
    fs.chmodSync(dir, 0o755);
    fs.writeFileSync(path.join(dir, 'echo.py'), ECHO);
  });
  afterAll(async () => {
    await tk?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function named(name: string): Promise<{ c: CloveClient; id: number }> {
    const c = await tk.client();
    const r = await c.register(name);
    return { c, id: r.agent_id };
  }

  it('SEND, SEND_BATCH and RECV between clients are completed natively, byte for byte', async () => {
    const a = await named('fp-a');
    const b = await named('fp-b');
    const before = mailOf(tk).stats(a.id);
    const odd = {
      s: 'é\u2028"\\\u0000',
      n: Number.MAX_SAFE_INTEGER,
      big: 1e300,
      f: 1.5e-7,
      deep: [[[{ x: null }]]],
    };
    expect(await a.c.send('fp-b', odd)).toMatchObject({ success: true, delivered_to: b.id });
    const batch = await a.c.sendBatch([
      { to: b.id, message: 1 },
      { to_name: 'fp-b', message: 'two' },
    ]);
    expect(batch).toMatchObject({ delivered_count: 2, failed_count: 0 });
    const got = await b.c.recv({ max: 10 });
    expect(got.messages.map((m) => m.message)).toEqual([odd, 1, 'two']);
    expect(got.messages.every((m) => m.from === a.id && m.from_name === 'fp-a')).toBe(true);
    const after = mailOf(tk).stats(a.id);
    // Two calls of the sender (SEND, SEND_BATCH) and three messages, counted by the native store.
    expect(after.syscalls - before.syscalls).toBe(2);
    expect(after.sent - before.sent).toBe(3);
    expect(mailOf(tk).stats(b.id).received).toBeGreaterThanOrEqual(3);
  });

  it('a refusal goes to JavaScript: the same error as the TypeScript path, and nothing queued', async () => {
    const a = await named('fp-r');
    const err = await a.c.send('nobody-here', { x: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(KernelError);
    expect((err as KernelError).code).toBe('not_found');
    const partial = await a.c.sendBatch([{ to_name: 'fp-r', message: 1 }, { to_name: 'nobody-here' }]);
    expect(partial.delivered_count).toBe(1);
    expect(partial.results[1]).toMatchObject({ code: 'not_found' });
    expect((await a.c.recv({ max: 10 })).messages.map((m) => m.message)).toEqual([1]);
  });

  it('a blocking RECV parked in the reactor is woken by a SEND from another connection', async () => {
    const a = await named('fp-w1');
    const b = await named('fp-w2');
    const waiting = b.c.recv({ max: 5, wait: true, timeoutMs: 20_000 });
    await new Promise((r) => setTimeout(r, 100));
    await a.c.send('fp-w2', 'wake');
    expect((await waiting).messages.map((m) => m.message)).toEqual(['wake']);
    // And a wait that times out answers empty.
    expect((await b.c.recv({ max: 5, wait: true, timeoutMs: 50 })).count).toBe(0);
  });

  it('pushed messages arrive without RECV; a client that did not opt in is never pushed to', async () => {
    const a = await named('fp-p1');
    const b = await named('fp-p2');
    const it = b.c.messages();
    await a.c.send('fp-p2', { n: 1 });
    await a.c.sendBatch([
      { to_name: 'fp-p2', message: { n: 2 } },
      { to_name: 'fp-p2', message: { n: 3 } },
    ]);
    const seen: unknown[] = [];
    for (let i = 0; i < 3; i++) seen.push(((await it.next()).value as { message: unknown }).message);
    expect(seen).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    // `a` never asked: a message to it waits in its mailbox and a NOOP is answered as usual.
    await b.c.send('fp-p1', 'for RECV');
    expect(await a.c.echo('x')).toBe('x');
    expect((await a.c.recv({ max: 1 })).messages[0].message).toBe('for RECV');
  });

  it('a message taken under a lease comes back when the agent dies before acknowledging it', async () => {
    const op = await named('fp-lease-op');
    const dir2 = fs.mkdtempSync('/tmp/clove-fast-lease-');
    fs.chmodSync(dir2, 0o777);
    fs.writeFileSync(path.join(dir2, 'leaser.py'), LEASER);
    try {
      const s = await op.c.spawn({
        name: 'fp-leaser',
        script: path.join(dir2, 'leaser.py'),
        restart_policy: 'always',
        sandboxed: false,
      });
      await until(async () => (await op.c.list()).find((x) => x.id === s.id)?.ready === true, 30_000);
      const it = op.c.messages();
      await op.c.send('fp-leaser', 'precious');
      expect(((await it.next()).value as { message: unknown }).message).toEqual({ again: 'precious' });
      expect(fs.existsSync(path.join(dir2, 'leaser.mark'))).toBe(true);
      await op.c.kill('fp-leaser', { grace_ms: 0, wait: true });
    } finally {
      fs.rmSync(dir2, { recursive: true, force: true });
    }
  });

  it('an agent echoes through the reactor; its mailbox survives its restart', async () => {
    const op = await named('fp-op');
    const spawned = await op.c.spawn({
      name: 'fp-echo',
      script: path.join(dir, 'echo.py'),
      restart_policy: 'always',
    });
    await until(async () => (await op.c.list()).find((x) => x.id === spawned.id)?.ready === true, 30_000);
    const it = op.c.messages();
    await op.c.send('fp-echo', 'ping-1');
    expect(((await it.next()).value as { message: unknown }).message).toMatchObject({ echo: 'ping-1' });
    // The agent's own calls were served natively (its SEND back, its RECVs).
    expect(mailOf(tk).stats(spawned.id).sent).toBeGreaterThanOrEqual(1);
    // Killed: a message sent while it dies and restarts waits in its mailbox (or comes back from the dead
    // process's lease) and is answered by the new process.
    const pid = (await op.c.list()).find((x) => x.id === spawned.id)!.pid!;
    process.kill(pid, 'SIGKILL');
    await op.c.send('fp-echo', 'ping-2');
    // At least once: 'ping-1' may come again first (its lease was held by the parked RECV that died).
    let echoed: unknown;
    do echoed = ((await it.next()).value as { message: { echo: unknown } }).message.echo;
    while (echoed === 'ping-1');
    expect(echoed).toBe('ping-2');
    await op.c.kill('fp-echo', { grace_ms: 0 });
  });

  it('an agent that is stopped is not reachable on the fast path either', async () => {
    const op = await named('fp-op2');
    const s = await op.c.spawn({ name: 'fp-gone', script: path.join(dir, 'echo.py') });
    await until(async () => (await op.c.list()).find((x) => x.id === s.id)?.ready === true, 30_000);
    await op.c.kill('fp-gone', { grace_ms: 0, wait: true });
    const err = await op.c.send(s.id, 'late').catch((e: unknown) => e);
    expect((err as KernelError).code).toBe('not_found');
  });

  it('while a recording runs, every call goes to JavaScript (observers see them all)', async () => {
    const op = await tk.client();
    const a = await named('fp-rec');
    await op.syscall('RECORD_START', {});
    const before = mailOf(tk).stats(a.id).syscalls;
    await a.c.send('fp-rec', 'seen');
    await a.c.recv({ max: 1 });
    expect(mailOf(tk).stats(a.id).syscalls).toBe(before);
    await op.syscall('RECORD_STOP', {});
    await a.c.send('fp-rec', 'fast again');
    expect(mailOf(tk).stats(a.id).syscalls).toBe(before + 1);
  });
});
