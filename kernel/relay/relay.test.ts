/**
 * The relay and the tunnel against real parts: a relay on a real port, real kernels dialling it over
 * real WebSockets, the kernel's real API app behind the tunnel, real agents (docs/relay.md).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { WebSocket } from 'ws';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import { CloveClient, TunnelFailedError } from '../../sdk/typescript/client.js';
import { encodeFrame, FrameDecoder, Op, type Frame } from '../../protocol/index.js';
import { Relay } from './server.js';
import { TokenStore } from './tokens.js';
import { backoffMs, tunnelUrl } from '../tunnel/client.js';

const probe = path.join(import.meta.dirname, '..', 'testdata', 'probe_agent.py');
const log = pino({ level: 'silent' });

let dir: string;
let relay: Relay;
let port: number;
let tk: TestKernel;
let op: CloveClient;
const tok: Record<string, string> = {};

async function startRelay(p = 0): Promise<Relay> {
  const r = new Relay({
    host: '127.0.0.1',
    port: p,
    dataDir: path.join(dir, 'relay'),
    log,
    requestTimeoutMs: 20_000,
  });
  port = await r.start();
  return r;
}

function api(pathname: string, token = tok.alice, init: RequestInit = {}): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}${pathname}`, {
    ...init,
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      ...(init.headers ?? {}),
    },
  });
}

/** A wire-protocol session through the relay: frames out, frames back in order. */
async function remoteSession(token: string, machine = 'm1') {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/machines/${machine}/agent`, {
    headers: { authorization: `Bearer ${token}` },
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_q, r) => reject(new Error(`status ${r.statusCode}`)));
  });
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (m: Buffer) => {
    frames.push(...decoder.push(m).frames);
    for (const w of waiters.splice(0)) w();
  });
  return {
    ws,
    async call(opcode: number, payload: unknown, headerId = 0) {
      ws.send(encodeFrame(headerId, opcode, payload));
      await until(() => frames.length > 0, 15_000, 'a reply through the relay');
      const f = frames.shift()!;
      return { agentId: f.agentId, opcode: f.opcode, body: JSON.parse(f.payload.toString()) };
    },
    close: () => ws.close(),
  };
}

beforeAll(async () => {
  dir = tempDir('rly');
  const store = new TokenStore(path.join(dir, 'relay'));
  tok.m1 = store.add('machine', 'm1').token;
  tok.m2 = store.add('machine', 'm2').token;
  tok.alice = store.add('user', 'alice').token;
  tok.bob = store.add('user', 'bob', ['m2']).token;
  relay = await startRelay();
  tk = await startKernel();
  op = await tk.client();
  await op.tunnelConfig({ reconnect_interval: 1 });
  await op.tunnelConnect({ relay_url: `ws://127.0.0.1:${port}`, machine_id: 'm1', token: tok.m1 });
}, 60_000);

afterAll(async () => {
  await tk?.stop();
  await relay?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('tokens', () => {
  it('are stored hashed in a 0600 file, verified, listed and revoked', () => {
    const d = tempDir('rtk');
    const s = new TokenStore(d);
    const { token, entry } = s.add('user', 'carol', ['m1', 'm2']);
    const text = fs.readFileSync(s.file, 'utf8');
    expect(text).not.toContain(token);
    expect(text).toContain(entry.hash);
    expect(fs.statSync(s.file).mode & 0o777).toBe(0o600);
    expect(s.verify(token)?.name).toBe('carol');
    expect(s.verify(`${token}x`)).toBeUndefined();
    expect(s.list().map((e) => e.machines)).toEqual([['m1', 'm2']]);
    // Another process (the CLI) revokes it: this store sees it at once.
    expect(new TokenStore(d).revoke('user:carol')).toBe(1);
    expect(s.verify(token)).toBeUndefined();
    expect(() => s.add('machine', '../etc')).toThrow(/not a valid name/);
    fs.rmSync(d, { recursive: true, force: true });
  });

  it('backoff doubles from the configured interval, capped, with jitter; URLs get /tunnel', () => {
    expect(backoffMs(1, 0, () => 0.999)).toBeLessThanOrEqual(1000);
    expect(backoffMs(1, 0, () => 0)).toBe(500);
    expect(backoffMs(1, 3, () => 0)).toBe(4000);
    expect(backoffMs(5, 30, () => 0.999)).toBeLessThanOrEqual(60_000);
    expect(backoffMs(120, 5, () => 0.999)).toBeLessThanOrEqual(120_000);
    expect(tunnelUrl('https://relay.example')).toBe('wss://relay.example/tunnel');
    expect(tunnelUrl('ws://h:1/custom')).toBe('ws://h:1/custom');
    expect(() => tunnelUrl('ftp://x')).toThrow(/scheme/);
  });
});

describe('a kernel behind the tunnel', () => {
  it('is listed by the relay with its version and agent count', async () => {
    const r = await api('/api/v1/machines');
    expect(r.status).toBe(200);
    const { machines } = (await r.json()) as { machines: Record<string, unknown>[] };
    const m1 = machines.find((m) => m.id === 'm1')!;
    expect(m1).toMatchObject({ connected: true, version: expect.any(String), agents: 0 });
    expect(machines.find((m) => m.id === 'm2')).toMatchObject({ connected: false, connected_at: null });
    const st = await op.tunnelStatus();
    expect(st).toMatchObject({
      connected: true,
      state: 'connected',
      machine_id: 'm1',
      remote_agent_count: 0,
    });
    expect(JSON.stringify(st)).not.toContain(tok.m1);
  });

  it('is steered through the REST API: spawn, list, restart (the pid changes), kill', async () => {
    const spawned = await api('/api/v1/machines/m1/agents', tok.alice, {
      method: 'POST',
      body: JSON.stringify({ name: 'steered', script: probe, restart_policy: 'never' }),
    });
    expect(spawned.status).toBe(201);
    const { id, pid } = (await spawned.json()) as { id: number; pid: number };
    const rows = (await (await api('/api/v1/machines/m1/agents')).json()) as { id: number; pid: number }[];
    expect(rows.find((a) => a.id === id)?.pid).toBe(pid);
    const restarted = await api(`/api/v1/machines/m1/agents/${id}/restart`, tok.alice, { method: 'POST' });
    expect(restarted.status).toBe(200);
    const after = await until(
      async () => {
        const all = (await (await api('/api/v1/machines/m1/agents')).json()) as {
          id: number;
          pid: number;
          state: string;
        }[];
        const a = all.find((x) => x.id === id);
        return a && a.pid !== pid && a.pid > 0 ? a : null;
      },
      20_000,
      'the new pid',
    );
    expect(after.pid).not.toBe(pid);
    // The kernel's own errors come back as they are.
    const missing = await api('/api/v1/machines/m1/agents/999999/kill', tok.alice, { method: 'POST' });
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toBe('not_found');
    expect((await api(`/api/v1/machines/m1/agents/${id}/kill`, tok.alice, { method: 'POST' })).status).toBe(
      200,
    );
  }, 60_000);

  it('streams events and metrics through the relay', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/machines/m1/stream`, [
      'clove',
      `bearer.${tok.alice}`,
    ]);
    const got: { type: string }[] = [];
    ws.on('message', (m) => got.push(JSON.parse(m.toString())));
    await new Promise((r) => ws.once('open', r));
    expect(ws.protocol).toBe('clove');
    await until(() => got.some((m) => m.type === 'metrics'), 15_000, 'a metrics message');
    ws.close();
  });

  it('refuses wrong, revoked, out-of-scope and machine tokens', async () => {
    expect((await api('/api/v1/machines', 'clove_u_nope')).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${port}/api/v1/machines`)).status).toBe(401);
    // A machine token is not a user's.
    expect((await api('/api/v1/machines', tok.m1)).status).toBe(403);
    // bob may reach m2 only.
    expect((await api('/api/v1/machines/m1/agents', tok.bob)).status).toBe(403);
    const bobs = (await (await api('/api/v1/machines', tok.bob)).json()) as { machines: { id: string }[] };
    expect(bobs.machines.map((m) => m.id)).toEqual(['m2']);
    await expect(remoteSession(tok.bob, 'm1')).rejects.toThrow(/403/);
    // Unknown and unconnected machines.
    expect((await api('/api/v1/machines/nowhere/agents')).status).toBe(404);
    expect((await api('/api/v1/machines/m2/agents')).status).toBe(503);
    // A revoked user token stops working at once.
    const store = new TokenStore(path.join(dir, 'relay'));
    const eve = store.add('user', 'eve').token;
    expect((await api('/api/v1/machines', eve)).status).toBe(200);
    store.revoke('user:eve');
    expect((await api('/api/v1/machines', eve)).status).toBe(401);
    expect((await healthz()).status).toBe(200);
  });

  it("refuses a kernel dialling with another machine's token, or a wrong one (tunnel_failed)", async () => {
    const other = await startKernel();
    try {
      const c = await other.client();
      const url = `ws://127.0.0.1:${port}`;
      await expect(c.tunnelConnect({ relay_url: url, machine_id: 'm1', token: tok.m2 })).rejects.toThrow(
        TunnelFailedError,
      );
      await expect(
        c.tunnelConnect({ relay_url: url, machine_id: 'm2', token: 'clove_m_wrong' }),
      ).rejects.toThrow(/refused.*401/);
      expect(await c.tunnelStatus()).toMatchObject({ connected: false, state: 'stopped' });
      // m1 is still served by the first kernel.
      expect(relay.connected()).toEqual(['m1']);
    } finally {
      await other.stop();
    }
  }, 30_000);
});

function healthz(): Promise<Response> {
  return fetch(`http://127.0.0.1:${port}/healthz`);
}

describe('remote sessions through the relay (hole 15)', () => {
  it('get a kernel-assigned client identity and cannot act as a local agent; refusals are audited', async () => {
    const me = (await op.hello()).agent_id;
    const spawned = await op.spawn({ name: 'victim', script: probe, env: { REPORT_TO: String(me) } });
    await op.recv({ max: 1, timeoutMs: 15_000 });
    const s = await remoteSession(tok.alice);
    try {
      // The header claims to be the victim: ignored.
      const hello = await s.call(Op.HELLO, {}, spawned.id);
      expect(hello.body).toMatchObject({ role: 'client', name: expect.stringMatching(/^relay:alice#/) });
      const sid = hello.body.agent_id as number;
      expect(sid).not.toBe(spawned.id);
      expect(hello.agentId).toBe(sid);
      // SEND with the victim's id in the header: the message is from the session.
      const sent = await s.call(Op.SEND, { to: me, message: { hi: 1 } }, spawned.id);
      expect(sent.body.success).toBe(true);
      const got = await op.recv({ max: 1, timeoutMs: 10_000 });
      expect(got.messages[0]).toMatchObject({ from: sid, message: { hi: 1 } });
      // KILL of a local agent, TUNNEL_* (re-pointing the kernel): refused, audited.
      const kill = await s.call(Op.KILL, { id: spawned.id }, spawned.id);
      expect(kill.body).toMatchObject({ success: false, code: 'permission_denied' });
      const repoint = await s.call(Op.TUNNEL_CONNECT, {
        relay_url: 'ws://evil.example',
        machine_id: 'm1',
        token: 'x',
      });
      expect(repoint.body).toMatchObject({ success: false, code: 'permission_denied' });
      expect((await s.call(Op.TUNNEL_CONFIG, { relay_url: 'ws://evil.example' })).body.code).toBe(
        'permission_denied',
      );
      expect((await op.tunnelStatus()).relay_url).toBe(`ws://127.0.0.1:${port}`);
      const audit = (await op.getAuditLog({ category: 'SECURITY', limit: 50 })) as unknown as {
        entries: { agent_id: number; details: { syscall?: string } }[];
      };
      const mine = audit.entries.filter((e) => e.agent_id === sid).map((e) => e.details.syscall);
      expect(mine).toEqual(expect.arrayContaining(['KILL', 'TUNNEL_CONNECT', 'TUNNEL_CONFIG']));
      // The victim is untouched; the session is listed for operators.
      expect((await op.list()).find((a) => a.id === spawned.id)?.state).toBe('RUNNING');
      const remotes = await op.tunnelListRemotes();
      expect(remotes.agents).toEqual([
        expect.objectContaining({ agent_id: sid, name: `relay:alice#${sid}`, user: 'alice' }),
      ]);
      expect(remotes.count).toBe(1);
    } finally {
      s.close();
      await op.kill('victim').catch(() => {});
    }
    await until(async () => (await op.tunnelListRemotes()).count === 0, 10_000, 'the session to go');
  }, 60_000);

  it('agents cannot use the tunnel syscalls (permission_denied, audited)', async () => {
    const me = (await op.hello()).agent_id;
    const nosy = await op.spawn({ name: 'nosy', script: probe, env: { REPORT_TO: String(me) } });
    await op.recv({ max: 1, timeoutMs: 15_000 });
    await op.send('nosy', {
      cmd: 'call',
      op: Op.TUNNEL_CONNECT,
      payload: { relay_url: 'ws://evil.example' },
    });
    const r = await op.recv({ max: 1, timeoutMs: 15_000 });
    expect((r.messages[0].message as { out: Record<string, unknown> }).out).toMatchObject({
      success: false,
      code: 'permission_denied',
    });
    const audit = (await op.getAuditLog({ category: 'SECURITY', limit: 50 })) as unknown as {
      entries: { agent_id: number; details: { syscall?: string } }[];
    };
    expect(audit.entries.some((e) => e.agent_id === nosy.id && e.details.syscall === 'TUNNEL_CONNECT')).toBe(
      true,
    );
    await op.kill('nosy');
  }, 30_000);
});

describe('reconnect', () => {
  it('the tunnel survives the relay restarting on the same port and data dir', async () => {
    const before = (await op.tunnelStatus()).reconnects;
    await relay.close();
    await until(async () => (await op.tunnelStatus()).state !== 'connected', 15_000, 'the kernel to notice');
    // A request to a relay that is down fails; the kernel keeps trying in the background.
    await expect(healthz()).rejects.toThrow();
    relay = await startRelay(port);
    await until(async () => (await op.tunnelStatus()).connected, 30_000, 'the kernel to reconnect');
    expect((await op.tunnelStatus()).reconnects).toBe(before + 1);
    const r = await api('/api/v1/machines/m1/agents');
    expect(r.status).toBe(200);
    expect(Array.isArray(await r.json())).toBe(true);
  }, 60_000);

  it("revoking the machine's token closes its tunnel for good; TUNNEL_DISCONNECT and CONNECT again", async () => {
    const store = new TokenStore(path.join(dir, 'relay'));
    const spare = store.add('machine', 'm3').token;
    await op.tunnelConnect({ machine_id: 'm3', token: spare });
    await until(() => relay.connected().includes('m3'), 10_000, 'm3 connected');
    store.revoke('machine:m3');
    await until(async () => (await op.tunnelStatus()).state === 'stopped', 15_000, 'the tunnel to stop');
    expect((await op.tunnelStatus()).last_error).toMatch(/revoked/);
    await op.tunnelConnect({ machine_id: 'm1', token: tok.m1 });
    expect(relay.connected()).toEqual(['m1']);
    await op.tunnelDisconnect();
    await until(() => relay.connected().length === 0, 10_000, 'the relay to see it go');
    expect(await op.tunnelStatus()).toMatchObject({ connected: false, state: 'stopped' });
  }, 60_000);
});

describe('a fast-path kernel (docs/fastpath.md) behind the tunnel', () => {
  it('serves remote sessions in JavaScript with their own identity; messages reach them both ways', async () => {
    const store = new TokenStore(path.join(dir, 'relay'));
    const fastToken = store.add('machine', 'fast').token;
    const fast = await startKernel({ fastPath: true });
    try {
      const c = await fast.client();
      await c.tunnelConnect({ relay_url: `ws://127.0.0.1:${port}`, machine_id: 'fast', token: fastToken });
      const s = await remoteSession(tok.alice, 'fast');
      try {
        const hello = await s.call(Op.HELLO, {});
        const sid = hello.body.agent_id as number;
        expect(hello.body.role).toBe('client');
        expect((await s.call(Op.SEND, { to: (await c.hello()).agent_id, message: 'up' })).body.success).toBe(
          true,
        );
        expect((await c.recv({ max: 1, timeoutMs: 10_000 })).messages[0]).toMatchObject({
          from: sid,
          message: 'up',
        });
        await c.send(sid, 'down');
        const got = await s.call(Op.RECV, { max: 1, timeout_ms: 10_000 });
        expect(got.body.messages[0]).toMatchObject({ message: 'down' });
      } finally {
        s.close();
      }
    } finally {
      await fast.stop();
      store.revoke('machine:fast');
    }
  }, 60_000);
});

describe('limits, with a stand-in kernel on the tunnel', () => {
  it('a silent kernel costs a 504 after the timeout; a big body is 413; a second session replaces the first (4409)', async () => {
    const d = tempDir('rlim');
    const store = new TokenStore(d);
    const machine = store.add('machine', 'slow').token;
    const user = store.add('user', 'u').token;
    const r = new Relay({ host: '127.0.0.1', port: 0, dataDir: d, log, requestTimeoutMs: 300 });
    const p = await r.start();
    /** A fake kernel: dials /tunnel, records what it gets, answers nothing. */
    const dial = async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${p}/tunnel`, {
        headers: { authorization: `Bearer ${machine}`, 'x-clove-machine': 'slow' },
      });
      const got: { t: string; id?: number }[] = [];
      ws.on('message', (m) => got.push(JSON.parse(m.toString())));
      const closed = new Promise<number>((res) => ws.once('close', (code) => res(code)));
      await until(() => got.some((m) => m.t === 'welcome'), 10_000, 'welcome');
      return { ws, got, closed };
    };
    try {
      const k1 = await dial();
      const auth = { authorization: `Bearer ${user}` };
      const slow = await fetch(`http://127.0.0.1:${p}/api/v1/machines/slow/agents`, { headers: auth });
      expect(slow.status).toBe(504);
      expect(((await slow.json()) as { error: string }).error).toBe('upstream_failed');
      // The kernel was asked, then told to stop working on it.
      await until(() => k1.got.some((m) => m.t === 'cancel'), 5_000, 'the cancel');
      const req = k1.got.find((m) => m.t === 'req') as unknown as {
        path: string;
        headers: [string, string][];
      };
      expect(req.path).toBe('/api/v1/agents');
      // The user's token never reaches the kernel.
      expect(JSON.stringify(req.headers)).not.toContain(user);
      const big = await fetch(`http://127.0.0.1:${p}/api/v1/machines/slow/agents`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: 'x'.repeat(2 * 1024 * 1024),
      });
      expect(big.status).toBe(413);
      const k2 = await dial();
      expect(await k1.closed).toBe(4409);
      expect(r.connected()).toEqual(['slow']);
      // A kernel sending nonsense loses those messages; the relay and the tunnel stay up.
      const pending = fetch(`http://127.0.0.1:${p}/api/v1/machines/slow/system`, { headers: auth });
      await until(() => k2.got.some((m) => m.t === 'req'), 5_000, 'the request');
      const id = k2.got.find((m) => m.t === 'req')!.id!;
      k2.ws.send('not json');
      k2.ws.send(JSON.stringify({ t: 'res', id, status: 200, headers: 5, body: 'e30=' }));
      k2.ws.send(JSON.stringify({ t: 'data', id: 'x', data: 7 }));
      expect((await pending).status).toBe(502);
      expect((await fetch(`http://127.0.0.1:${p}/healthz`)).status).toBe(200);
      expect(r.connected()).toEqual(['slow']);
      k2.ws.close();
    } finally {
      await r.close();
      fs.rmSync(d, { recursive: true, force: true });
    }
  }, 30_000);
});
