/**
 * The kernel's syscalls against a real kernel, real sockets and real Python agents.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startKernel, until, type TestKernel } from '../harness/kernel.js';
import {
  CloveClient,
  InvalidRequestError,
  InvalidStateError,
  MailboxFullError,
  NameTakenError,
  NotFoundError,
  NotSupportedError,
} from '../sdk/typescript/client.js';
import { encodeFrame, FrameDecoder, Op } from '../protocol/index.js';

const probe = path.join(import.meta.dirname, 'testdata', 'probe_agent.py');
let tk: TestKernel;
let op: CloveClient;

beforeAll(async () => {
  tk = await startKernel({ mailboxSize: 8 });
  op = await tk.client();
});
afterAll(async () => tk?.stop());

/** Spawns a probe agent reporting to `to` and returns its spawn reply and first report. */
async function spawnProbe(to: CloveClient, name: string, extra: Record<string, unknown> = {}) {
  const me = (await to.hello()).agent_id;
  const env = { REPORT_TO: String(me), ...((extra.env as Record<string, string>) ?? {}) };
  const r = await to.spawn({ name, script: probe, ...extra, env });
  const up = await to.recv({ max: 1, timeoutMs: 10_000 });
  expect(up.count).toBe(1);
  return { spawn: r, up: up.messages[0].message as { type: string; hello: Record<string, unknown> } };
}

async function ask(c: CloveClient, agent: string, cmd: Record<string, unknown>) {
  await c.send(agent, cmd);
  const r = await c.recv({ max: 1, timeoutMs: 10_000 });
  expect(r.count).toBe(1);
  return (r.messages[0].message as { out: Record<string, unknown> }).out;
}

async function rawCall(socketPath: string, headerId: number, op: number, payload: unknown) {
  const s = net.connect(socketPath);
  await new Promise((r) => s.once('connect', r));
  const d = new FrameDecoder();
  const reply = new Promise<{ agentId: number; body: unknown }>((resolve) =>
    s.on('data', (chunk) => {
      const f = d.push(chunk).frames[0];
      if (f) resolve({ agentId: f.agentId, body: JSON.parse(f.payload.toString()) });
    }),
  );
  s.write(encodeFrame(headerId, op, payload));
  const r = await reply;
  s.destroy();
  return r;
}

describe('identity', () => {
  it('an operator is told its role and id', async () => {
    const h = await op.hello();
    expect(h.role).toBe('operator');
    expect(h.agent_id).toBe(op.agentId);
    expect(h.protocol_version).toBe(1);
  });

  it('a spawned agent connects as itself: same id as SPAWN returned, its name, role agent', async () => {
    const { spawn, up } = await spawnProbe(op, 'ident-1');
    expect(up.hello.role).toBe('agent');
    expect(up.hello.agent_id).toBe(spawn.id);
    expect(up.hello.name).toBe('ident-1');
  });

  it('the id written in a header is ignored: a client cannot act as another agent', async () => {
    const { spawn } = await spawnProbe(op, 'victim');
    const other = await tk.client();
    await other.register('watcher');
    // An operator-socket client forges the victim's id in the header.
    const r = await rawCall(tk.socketPath, spawn.id, Op.SEND, { to_name: 'watcher', message: 'forged?' });
    expect(r.agentId).not.toBe(spawn.id);
    const got = await other.recv({ max: 1, timeoutMs: 5000 });
    expect(got.messages[0].from).toBe(r.agentId);
    expect(got.messages[0].from).not.toBe(spawn.id);
    // An agent forges another agent's id: it is still itself, with its own rights.
    const { spawn: forger } = await spawnProbe(op, 'forger');
    const out = await ask(op, 'forger', {
      cmd: 'raw',
      op: Op.KILL,
      payload: { name: 'victim' },
      header_id: spawn.id,
    });
    expect(out.header_agent_id).toBe(forger.id);
    expect((out.reply as { code: string }).code).toBe('permission_denied');
    expect((await op.list()).find((a) => a.name === 'victim')!.state).toBe('RUNNING');
  });

  it('refuses a connection on the agent socket from a process that is not an agent', async () => {
    const s = net.connect(tk.kernel.agentSocketPath);
    const closed = await new Promise<boolean>((resolve) => {
      s.on('error', () => {});
      s.on('close', () => resolve(true));
      s.on('connect', () => s.write(encodeFrame(0, Op.HELLO, {})));
      s.on('data', () => resolve(false));
    });
    expect(closed).toBe(true);
  });

  it('the operator socket is mode 0600 and the agent socket 0666 in a 0711 directory', () => {
    expect(fs.statSync(tk.socketPath).mode & 0o777).toBe(0o600);
    expect(fs.statSync(tk.kernel.agentSocketPath).mode & 0o777).toBe(0o666);
    expect(fs.statSync(path.dirname(tk.kernel.agentSocketPath)).mode & 0o777).toBe(0o711);
    // A data dir the kernel made itself lets other uids pass (its logs/ inside stays 0700).
    const dataDir = path.dirname(path.dirname(tk.kernel.agentSocketPath));
    expect(fs.statSync(dataDir).mode & 0o777).toBe(0o711);
    expect(fs.statSync(path.join(dataDir, 'logs')).mode & 0o777).toBe(0o700);
  });

  it('an agent cannot raise its own rights, nor spawn without can_spawn', async () => {
    await spawnProbe(op, 'climber');
    const setSelf = await ask(op, 'climber', {
      cmd: 'call',
      op: Op.SET_PERMS,
      payload: { level: 'unrestricted' },
    });
    expect(setSelf.code).toBe('permission_denied');
    const spawn = await ask(op, 'climber', { cmd: 'call', op: Op.SPAWN, payload: { script: probe } });
    expect(spawn.code).toBe('permission_denied');
    const perms = await ask(op, 'climber', { cmd: 'call', op: Op.GET_PERMS, payload: {} });
    expect((perms.permissions as { can_spawn: boolean }).can_spawn).toBe(false);
  });

  it('an agent may narrow its own rights, never widen them again; GET_PERMS names the level', async () => {
    await spawnProbe(op, 'modest');
    const before = await ask(op, 'modest', { cmd: 'call', op: Op.GET_PERMS, payload: {} });
    expect(before.level).toBe('standard');
    const down = await ask(op, 'modest', { cmd: 'call', op: Op.SET_PERMS, payload: { level: 'readonly' } });
    expect(down.success).toBe(true);
    const after = await ask(op, 'modest', { cmd: 'call', op: Op.GET_PERMS, payload: {} });
    expect(after).toMatchObject({ level: 'readonly', permissions: { can_write: false } });
    const up = await ask(op, 'modest', { cmd: 'call', op: Op.SET_PERMS, payload: { level: 'standard' } });
    expect(up.code).toBe('permission_denied');
  });

  it('an agent with can_spawn controls its children but cannot give them more than it has', async () => {
    await spawnProbe(op, 'parent', { permissions: { can_spawn: true } });
    const tooMuch = await ask(op, 'parent', {
      cmd: 'call',
      op: Op.SPAWN,
      payload: { script: probe, name: 'child-x', permissions: 'unrestricted' },
    });
    expect(tooMuch.code).toBe('permission_denied');
    const ok = await ask(op, 'parent', {
      cmd: 'call',
      op: Op.SPAWN,
      payload: { script: probe, name: 'child-1' },
    });
    expect(ok.success).toBe(true);
    const killed = await ask(op, 'parent', { cmd: 'call', op: Op.KILL, payload: { name: 'child-1' } });
    expect(killed.killed).toBe(true);
    const notMine = await ask(op, 'parent', { cmd: 'call', op: Op.KILL, payload: { name: 'ident-1' } });
    expect(notMine.code).toBe('permission_denied');
  });

  it("as root, every agent runs as a uid of its own and cannot read another agent's files", async () => {
    // A data dir outside /tmp (a private /tmp would hide it anyway), searchable by everybody.
    const dataDir = fs.mkdtempSync('/var/tmp/clv-uid-');
    fs.chmodSync(dataDir, 0o711);
    const k = await startKernel({ dataDir });
    try {
      const o = await k.client();
      const a = await spawnProbe(o, 'uid-a');
      await spawnProbe(o, 'uid-b');
      const wa = await ask(o, 'uid-a', { cmd: 'whoami' });
      const wb = await ask(o, 'uid-b', { cmd: 'whoami' });
      if (process.getuid?.() !== 0) return;
      expect(wa.uid).toBe(200_000 + a.spawn.id);
      expect(wa.uid).not.toBe(wb.uid);
      const secret = path.join(wa.cwd as string, 'secret.txt');
      expect((await ask(o, 'uid-a', { cmd: 'write', path: secret, text: 'mine' })).ok).toBe(true);
      expect((await ask(o, 'uid-a', { cmd: 'read', path: secret })).text).toBe('mine');
      // Two walls: the data dir is masked in every agent's view (b does not even see a's directory)…
      const stolen = await ask(o, 'uid-b', { cmd: 'read', path: secret });
      expect(stolen).toMatchObject({ ok: false, errno: 2 }); // ENOENT
      for (const f of ['state.db', 'logs/uid-a.log'])
        expect(await ask(o, 'uid-b', { cmd: 'read', path: path.join(dataDir, f) }), f).toMatchObject({
          ok: false,
          errno: 2,
        });
      // … and on the host a's directory and file belong to a's uid alone.
      expect(fs.statSync(wa.cwd as string)).toMatchObject({ uid: wa.uid });
      expect(fs.statSync(wa.cwd as string).mode & 0o077).toBe(0);
      expect(fs.statSync(secret).uid).toBe(wa.uid);
    } finally {
      await k.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('agents get a minimal environment, never the kernel secrets', async () => {
    process.env.CLOVE_TEST_SECRET = 'hunter2';
    try {
      await spawnProbe(op, 'envy', { env: { EXTRA: 'yes' } });
      const env = await ask(op, 'envy', { cmd: 'env' });
      expect(env.CLOVE_TEST_SECRET).toBeUndefined();
      expect(env.EXTRA).toBe('yes');
      expect(env.CLOVE_AGENT_NAME).toBe('envy');
      expect(env.CLOVE_SOCKET).toBe(tk.kernel.agentSocketPath);
      expect(Object.keys(env).sort()).toEqual(
        expect.arrayContaining(['CLOVE_AGENT_ID', 'HOME', 'LANG', 'PATH', 'PYTHONPATH', 'NODE_PATH']),
      );
    } finally {
      delete process.env.CLOVE_TEST_SECRET;
    }
    await expect(op.spawn({ script: probe, env: { CLOVE_AGENT_ID: '1' } })).rejects.toThrow(
      InvalidRequestError,
    );
  });
});

describe('lifecycle', () => {
  it('pauses and resumes a real process, and kills a paused one', async () => {
    const { spawn } = await spawnProbe(op, 'sleepy');
    await op.pause('sleepy');
    expect((await op.list()).find((a) => a.name === 'sleepy')!.state).toBe('PAUSED');
    // A paused agent makes no progress: a question gets no answer until it is resumed.
    await op.send('sleepy', { cmd: 'hello' });
    expect((await op.recv({ max: 1, timeoutMs: 700 })).count).toBe(0);
    await expect(op.pause('sleepy')).rejects.toThrow(InvalidStateError);
    await op.resume('sleepy');
    const answer = await op.recv({ max: 1, timeoutMs: 10_000 });
    expect((answer.messages[0].message as { to_cmd: string }).to_cmd).toBe('hello');
    await op.pause('sleepy');
    const r = await op.kill('sleepy', { grace_ms: 2000 });
    expect(r.killed).toBe(true);
    expect(fs.existsSync(`/proc/${spawn.pid}`)).toBe(false);
    expect((await op.list()).find((a) => a.name === 'sleepy')).toBeUndefined();
  });

  it('reports exit codes, writes per-agent logs, and refuses bad spawns clearly', async () => {
    const ev = await tk.client();
    await ev.subscribe(['AGENT_EXITED', 'AGENT_SPAWNED']);
    await spawnProbe(op, 'quitter');
    await op.send('quitter', { cmd: 'exit', code: 3 });
    const e = await until(async () => {
      const p = await ev.pollEvents({ timeoutMs: 2000 });
      return p.events.find((x) => x.type === 'AGENT_EXITED' && x.data.name === 'quitter');
    });
    expect(e.data.exit_code).toBe(3);
    const log = fs.readFileSync(path.join(tk.dataDir, 'logs', 'quitter.log'), 'utf8');
    expect(log).toMatch(/agent exited: exit code 3/);
    await expect(op.spawn({ script: '/nonexistent.py' })).rejects.toThrow(/not found/);
    await expect(
      op.spawn({ name: 'quitter2', script: probe, restart_policy: 'sometimes' as never }),
    ).rejects.toThrow(InvalidRequestError);
    await expect(op.spawn({ name: 'ident-1', script: probe })).rejects.toThrow(NameTakenError);
    await expect(op.kill('nobody')).rejects.toThrow(NotFoundError);
  });
});

describe('IPC', () => {
  it('delivers in order, blocks a RECV until a message arrives, and times out cleanly', async () => {
    const a = await tk.client();
    const b = await tk.client();
    await b.register('bee');
    const waiting = b.recv({ max: 10, timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 100));
    await a.send('bee', { n: 1 });
    await a.send('bee', { n: 2 });
    const first = await waiting;
    expect(first.messages[0].message).toEqual({ n: 1 });
    const rest = await b.recv();
    expect([...first.messages, ...rest.messages].map((m) => m.message)).toEqual([{ n: 1 }, { n: 2 }]);
    expect(rest.messages.at(-1)!.seq).toBeGreaterThan(first.messages[0].seq);
    const t0 = Date.now();
    const empty = await b.recv({ timeoutMs: 300 });
    expect(empty.count).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it('a full mailbox is an error to the sender, and nothing is dropped', async () => {
    const a = await tk.client();
    const b = await tk.client();
    await b.register('full');
    for (let i = 0; i < 8; i++) await a.send('full', i);
    await expect(a.send('full', 8)).rejects.toThrow(MailboxFullError);
    const r = await b.recv({ max: 100 });
    expect(r.messages.map((m) => m.message)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('a poison message (JSON 200,000 levels deep) is refused at SEND; its neighbours arrive', async () => {
    const a = await tk.client();
    const b = await tk.client();
    await b.register('poison-target');
    await a.send('poison-target', 'before');
    const deep = '['.repeat(200_000) + ']'.repeat(200_000);
    const raw = await a.raw(Op.SEND, `{"to_name":"poison-target","message":${deep}}`);
    expect(JSON.parse(raw.toString())).toMatchObject({ success: false, code: 'invalid_request' });
    await a.send('poison-target', 'after');
    const r = await b.recv({ max: 10, timeoutMs: 1000 });
    expect(r.messages.map((m) => m.message)).toEqual(['before', 'after']);
  });

  it('releases a client name when it disconnects, and fails sends to it', async () => {
    const a = await tk.client();
    await a.register('ephemeral');
    await expect(op.register('ephemeral')).rejects.toThrow(NameTakenError);
    a.close();
    await until(async () => {
      try {
        await op.send('ephemeral', 1);
        return false;
      } catch (e) {
        return e instanceof NotFoundError;
      }
    });
  });

  it('broadcasts to named ids only, excluding the sender unless asked', async () => {
    const a = await tk.client();
    const b = await tk.client();
    await a.register('bc-a');
    await b.register('bc-b');
    const r = await a.broadcast({ hi: 1 });
    expect(r.delivered_count).toBeGreaterThanOrEqual(1);
    expect((await b.recv()).messages.some((m) => (m.message as { hi: number }).hi === 1)).toBe(true);
    // Probe agents answer the broadcast; what must not come back is the sender's own message.
    expect((await a.recv({ max: 100 })).messages.filter((m) => m.from === a.agentId)).toEqual([]);
  });

  it('rejects wrong payloads with a clear error', async () => {
    await expect(op.send('x', 1).then(() => op.call(Op.SEND, { to: 'three' }))).rejects.toThrow(
      /must be a number|not found/,
    );
    await expect(op.call(Op.SEND, { to: 'three' })).rejects.toThrow(/field 'to' must be a number/);
    await expect(op.call(Op.SEND, {})).rejects.toThrow(/target agent required/);
    await expect(op.call(Op.RECV, { max: -1 })).rejects.toThrow(InvalidRequestError);
    await expect(op.call(Op.ASYNC_POLL, {})).rejects.toThrow(NotSupportedError);
    await expect(op.call(0x13, {})).rejects.toThrow(/unknown opcode 0x13/);
  });
});

describe('state store', () => {
  it('stores, fetches, lists and deletes, with scopes', async () => {
    await op.store('cfg', { a: 1 });
    expect(await op.fetch('cfg')).toMatchObject({ exists: true, value: { a: 1 }, scope: 'global' });
    await op.store('mine', 42, { scope: 'agent' });
    expect((await op.keys('')).keys).toEqual(expect.arrayContaining(['cfg', 'mine']));
    const other = await tk.client();
    expect((await other.fetch('cfg')).value).toEqual({ a: 1 });
    expect((await op.delete('cfg')).deleted).toBe(true);
    expect((await op.fetch('cfg')).exists).toBe(false);
    await expect(op.store('', 1)).rejects.toThrow(/key is required/);
    await expect(op.store('k', 1, { scope: 'planet' as never })).rejects.toThrow(InvalidRequestError);
  });

  it("an agent cannot overwrite or delete another's global key, nor read its agent keys", async () => {
    await spawnProbe(op, 'writer');
    await spawnProbe(op, 'thief');
    const w = await ask(op, 'writer', { cmd: 'call', op: Op.STORE, payload: { key: 'owned', value: 1 } });
    expect(w.success).toBe(true);
    const p = await ask(op, 'writer', {
      cmd: 'call',
      op: Op.STORE,
      payload: { key: 'secret', value: 's', scope: 'agent' },
    });
    expect(p.success).toBe(true);
    const over = await ask(op, 'thief', { cmd: 'call', op: Op.STORE, payload: { key: 'owned', value: 2 } });
    expect(over.code).toBe('permission_denied');
    const del = await ask(op, 'thief', { cmd: 'call', op: Op.DELETE, payload: { key: 'owned' } });
    expect(del.code).toBe('permission_denied');
    const peek = await ask(op, 'thief', { cmd: 'call', op: Op.FETCH, payload: { key: 'secret' } });
    expect(peek.exists).toBe(false);
    const read = await ask(op, 'thief', { cmd: 'call', op: Op.FETCH, payload: { key: 'owned' } });
    expect(read.value).toBe(1);
  });

  it('expires keys after their TTL', async () => {
    await op.store('short', 'x', { ttl: 0.2 });
    expect((await op.fetch('short')).exists).toBe(true);
    await new Promise((r) => setTimeout(r, 250));
    expect((await op.fetch('short')).exists).toBe(false);
    expect((await op.keys('sho')).keys).not.toContain('short');
    await expect(op.store('neg', 1, { ttl: -1 })).rejects.toThrow(/ttl/);
  });
});

describe('events', () => {
  it('delivers custom events to subscribers by name, and never forges kernel events', async () => {
    const sub = await tk.client();
    await sub.subscribe(['job.done']);
    const e = await op.emit('job.done', { id: 7 });
    expect(e.delivered_to).toBe(1);
    const forged = await op.emit('AGENT_EXITED', { name: 'x' });
    expect(forged.event).toBe('AGENT_EXITED');
    const p = await sub.pollEvents({ timeoutMs: 1000 });
    expect(p.events).toHaveLength(1);
    expect(p.events[0]).toMatchObject({
      type: 'CUSTOM',
      data: { id: 7, custom_type: 'job.done' },
      source_agent_id: op.agentId,
    });
    expect((await sub.unsubscribe('all')).unsubscribed).toEqual(['job.done']);
    await expect(sub.subscribe([])).rejects.toThrow(/No events specified/);
  });
});

describe('pipelining', () => {
  it('answers many pipelined calls in order', async () => {
    const calls = Array.from({ length: 500 }, (_, i) => op.echo(`m${i}`));
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 500 }, (_, i) => `m${i}`));
  });
});
