/**
 * The HTTP API against a real kernel (`http` option, port 0) with real agents: auth, every REST route,
 * errors, the WebSocket stream, /metrics parsed by Python's prometheus_client, the OpenAPI document.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import pino from 'pino';
import { createApi, type EventTap } from './api.js';
import { HttpService } from './service.js';
import { ROUTES, openApiDocument } from './openapi.js';

/** A Python agent: sends SENDS messages to itself, then takes whatever arrives, forever. */
const CHATTER = `
import os
from clove_sdk import connect
c = connect()
name = os.environ["CLOVE_AGENT_NAME"]
for i in range(int(os.environ.get("SENDS", "0"))):
    c.send_message({"i": i}, to_name=name)
print("chatter up", flush=True)
while True:
    c.recv_messages(max_messages=100, timeout=1.0)
`;

interface Http {
  url: string;
  token: string;
  req(method: string, p: string, body?: unknown, headers?: Record<string, string>): Promise<Response>;
  json<T = Record<string, unknown>>(
    method: string,
    p: string,
    body?: unknown,
  ): Promise<{ status: number; body: T }>;
}

function http(k: TestKernel): Http {
  const url = k.kernel.httpUrl!;
  const token = fs.readFileSync(path.join(k.dataDir, 'http-token'), 'utf8').trim();
  const req = (method: string, p: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(url + p, {
      method,
      headers: { authorization: `Bearer ${token}`, ...headers },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    });
  return {
    url,
    token,
    req,
    json: async (method, p, body) => {
      const r = await req(method, p, body);
      return { status: r.status, body: await r.json() };
    },
  };
}

type Samples = Record<string, { labels: Record<string, string>; value: number }[]>;

/** /metrics as Python's prometheus_client parser reads it: samples by name (no regex parsing here). */
function parseMetrics(text: string): Samples {
  const py = [
    'import json, sys',
    'from prometheus_client.parser import text_string_to_metric_families',
    'out = {}',
    'for fam in text_string_to_metric_families(sys.stdin.read()):',
    '    for s in fam.samples:',
    // NaN is a legal sample (prom-client's event-loop lag before its first sample); JSON has none.
    '        out.setdefault(s.name, []).append({"labels": s.labels, "value": s.value if s.value == s.value else None})',
    'print(json.dumps(out))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', py], { input: text, encoding: 'utf8' }));
}

const sample = (s: Samples, name: string, labels: Record<string, string> = {}) =>
  s[name]?.find((x) => Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;

async function scrape(h: Http): Promise<Samples> {
  const r = await h.req('GET', '/metrics');
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
  return parseMetrics(await r.text());
}

/** A stream client: every message it got, in order. */
function stream(h: Http, protocols: string[] = ['clove', `bearer.${h.token}`]) {
  const ws = new WebSocket(`${h.url.replace(/^http/, 'ws')}/api/v1/stream`, protocols);
  const got: { type: string; [k: string]: unknown }[] = [];
  ws.on('message', (d) => got.push(JSON.parse(String(d))));
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
    ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)));
  });
  return { ws, got, opened };
}

describe('HTTP API on a real kernel', () => {
  let k: TestKernel;
  let h: Http;
  let dir: string;
  let chatter: string;

  beforeAll(async () => {
    k = await startKernel({ http: { host: '127.0.0.1', port: 0 } });
    h = http(k);
    dir = tempDir();
    chatter = path.join(dir, 'chatter.py');
    fs.writeFileSync(chatter, CHATTER);
  });
  afterAll(async () => {
    await k?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const spawn = async (body: Record<string, unknown>) => {
    const r = await h.json<{ id: number; pid: number }>('POST', '/api/v1/agents', body);
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    return r.body;
  };

  describe('auth', () => {
    it('writes the token 0600 in the data dir, 64 hex digits', () => {
      const st = fs.statSync(path.join(k.dataDir, 'http-token'));
      expect(st.mode & 0o777).toBe(0o600);
      expect(h.token).toMatch(/^[0-9a-f]{64}$/);
    });

    it('answers /healthz and /readyz without a token', async () => {
      const health = await fetch(`${h.url}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: 'ok' });
      const ready = await fetch(`${h.url}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toEqual({ status: 'ready' });
    });

    it('refuses the API and /metrics without a token or with a wrong one (401 unauthorized)', async () => {
      for (const p of ['/api/v1/agents', '/metrics', '/api/v1/openapi.json', '/api/v1/nothing']) {
        const none = await fetch(h.url + p);
        expect(none.status).toBe(401);
        expect((await none.json()).error).toBe('unauthorized');
        const wrong = await fetch(h.url + p, { headers: { authorization: `Bearer ${'0'.repeat(64)}` } });
        expect(wrong.status).toBe(401);
        const notBearer = await fetch(h.url + p, { headers: { authorization: h.token } });
        expect(notBearer.status).toBe(401);
      }
      const post = await fetch(`${h.url}/api/v1/agents`, { method: 'POST', body: '{"command":["true"]}' });
      expect(post.status).toBe(401);
      // Nothing was spawned by the refused request.
      const list = await h.json<unknown[]>('GET', '/api/v1/agents');
      expect(list.body.every((a) => (a as { name: string }).name !== 'true')).toBe(true);
    });

    it('refuses a stream without the token (401), accepts one with it as a subprotocol or a header', async () => {
      await expect(stream(h, ['clove']).opened).rejects.toThrow(/401/);
      await expect(stream(h, ['clove', 'bearer.nope']).opened).rejects.toThrow(/401/);
      const s = stream(h);
      await s.opened;
      expect(s.ws.protocol).toBe('clove');
      s.ws.close();
      const viaHeader = new WebSocket(`${h.url.replace(/^http/, 'ws')}/api/v1/stream`, {
        headers: { authorization: `Bearer ${h.token}` },
      });
      await new Promise((resolve, reject) => {
        viaHeader.once('open', resolve);
        viaHeader.once('error', reject);
      });
      viaHeader.close();
    });
  });

  describe('agents', () => {
    it('spawns, lists, gets, pauses, resumes, restarts and kills an agent', async () => {
      const sp = await spawn({ command: ['sleep', '1000'], name: 'sleeper', restart_policy: 'always' });
      const list = await h.json<{ id: number; name: string; state: string; pid: number }[]>(
        'GET',
        '/api/v1/agents',
      );
      expect(list.status).toBe(200);
      const row = list.body.find((a) => a.id === sp.id)!;
      expect(row).toMatchObject({ name: 'sleeper', state: 'RUNNING', pid: sp.pid, restarts: 0, node: null });
      for (const f of ['cpu_percent', 'memory_bytes', 'messages_in', 'messages_out', 'mailbox_depth'])
        expect(typeof (row as unknown as Record<string, unknown>)[f]).toBe('number');
      expect(Object.keys((row as unknown as { quotas: object }).quotas)).toContain('cpu_time');

      const byName = await h.json('GET', '/api/v1/agents/sleeper');
      const byId = await h.json('GET', `/api/v1/agents/${sp.id}`);
      expect(byName.body.id).toBe(sp.id);
      expect(byId.body.name).toBe('sleeper');

      expect((await h.json('POST', `/api/v1/agents/${sp.id}/pause`)).body).toMatchObject({ paused: true });
      expect((await h.json('GET', '/api/v1/agents/sleeper')).body.state).toBe('PAUSED');
      // Pausing twice is the contract's invalid_state: 409.
      const again = await h.json('POST', `/api/v1/agents/${sp.id}/resume`);
      expect(again.body).toMatchObject({ resumed: true });
      const twice = await h.json('POST', `/api/v1/agents/${sp.id}/resume`);
      expect(twice.status).toBe(409);
      expect(twice.body.error).toBe('invalid_state');

      const rs = await h.json<{ pid: number }>('POST', '/api/v1/agents/sleeper/restart');
      expect(rs.status).toBe(200);
      expect(rs.body.pid).not.toBe(sp.pid);
      expect((await h.json('GET', '/api/v1/agents/sleeper')).body.restarts).toBe(1);

      const kill = await h.json('POST', `/api/v1/agents/${sp.id}/kill`, { grace_ms: 500 });
      expect(kill.body).toMatchObject({ success: true, killed: true, agent_id: sp.id });
      await until(
        async () => (await h.req('GET', `/api/v1/agents/${sp.id}`)).status === 404,
        20_000,
        'agent gone',
      );
    });

    it("returns an agent's log tail", async () => {
      const sp = await spawn({
        command: ['sh', '-c', 'for i in 1 2 3 4 5; do echo line-$i; done; sleep 1000'],
        name: 'talker',
      });
      const logs = await until(async () => {
        const r = await h.json<{ lines: string[] }>('GET', '/api/v1/agents/talker/logs?tail=2');
        return r.body.lines.includes('line-5') ? r : null;
      });
      expect(logs.status).toBe(200);
      expect(logs.body.lines).toEqual(['line-4', 'line-5']);
      expect(logs.body).toMatchObject({ agent_id: sp.id, name: 'talker' });
      const bad = await h.json('GET', '/api/v1/agents/talker/logs?tail=zero');
      expect(bad.status).toBe(400);
      expect(bad.body.message).toMatch(/tail/);
      await h.req('POST', '/api/v1/agents/talker/kill');
    });

    it('maps errors to the contract codes: unknown agent 404, bad JSON 400, bad body 400 with the schema message', async () => {
      const missing = await h.json('POST', '/api/v1/agents/424242/kill');
      expect(missing.status).toBe(404);
      expect(missing.body).toMatchObject({ error: 'not_found' });
      expect(missing.body.message).toMatch(/424242/);
      expect((await h.json('GET', '/api/v1/agents/nobody')).status).toBe(404);

      const badJson = await h.json('POST', '/api/v1/agents', '{"command": [');
      expect(badJson.status).toBe(400);
      expect(badJson.body.error).toBe('invalid_request');
      expect(badJson.body.message).toMatch(/not valid JSON/);

      const badBody = await h.json('POST', '/api/v1/agents', {
        command: ['sleep', '1'],
        limits: { memory: 5 },
      });
      expect(badBody.status).toBe(400);
      expect(badBody.body).toEqual({
        error: 'invalid_request',
        message: "invalid request: field 'limits.memory' must be >= 4194304",
      });
      const empty = await h.json('POST', '/api/v1/agents', '');
      expect(empty.status).toBe(400);

      const sp = await spawn({ command: ['sleep', '1000'], name: 'victim' });
      const badKill = await h.json('POST', `/api/v1/agents/${sp.id}/kill`, '[1,2]');
      expect(badKill.status).toBe(400);
      expect(badKill.body.message).toMatch(/JSON object/);
      const badGrace = await h.json('POST', `/api/v1/agents/${sp.id}/kill`, { grace_ms: -1 });
      expect(badGrace.status).toBe(400);
      expect(badGrace.body.message).toMatch(/grace_ms/);
      // The refused requests changed nothing: the agent still runs.
      expect((await h.json('GET', `/api/v1/agents/${sp.id}`)).body.state).toBe('RUNNING');
      await h.req('POST', `/api/v1/agents/${sp.id}/kill`);

      const dup = await h.json('POST', '/api/v1/agents', { command: ['sleep', '1000'], name: 'twin' });
      expect(dup.status).toBe(201);
      const dup2 = await h.json('POST', '/api/v1/agents', { command: ['sleep', '1000'], name: 'twin' });
      expect(dup2.status).toBe(409);
      expect(dup2.body.error).toBe('name_taken');
      await h.req('POST', '/api/v1/agents/twin/kill');

      const huge = await h.json('POST', '/api/v1/agents', {
        command: ['sleep', '1'],
        env: { X: 'x'.repeat(2 << 20) },
      });
      expect(huge.status).toBe(413);
      expect(huge.body.error).toBe('too_large');

      const route = await h.json('GET', '/api/v1/nothing');
      expect(route.status).toBe(404);
      expect(route.body.error).toBe('not_found');
      // The kernel is fine after all of it.
      expect((await fetch(`${h.url}/readyz`)).status).toBe(200);
    });
  });

  describe('events and the stream', () => {
    it('pages events by seq', async () => {
      const before = (await h.json<{ last_seq: number }>('GET', '/api/v1/events?limit=1')).body.last_seq;
      await spawn({ command: ['sleep', '1000'], name: 'evented' });
      const after = await until(async () => {
        const r = await h.json<{ events: { seq: number; type: string; data: Record<string, unknown> }[] }>(
          'GET',
          `/api/v1/events?since=${before}`,
        );
        return r.body.events.some((e) => e.type === 'AGENT_SPAWNED' && e.data.name === 'evented')
          ? r.body
          : null;
      });
      expect(after.events[0].seq).toBe(before + 1);
      const seqs = after.events.map((e) => e.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      const one = await h.json<{ events: unknown[] }>('GET', `/api/v1/events?since=${before}&limit=1`);
      expect(one.body.events).toHaveLength(1);
      expect((await h.json('GET', '/api/v1/events?limit=0')).status).toBe(400);
      await h.req('POST', '/api/v1/agents/evented/kill');
    });

    it('sends an event when an agent restarts, and a metrics message every second', async () => {
      const sp = await spawn({ command: ['sleep', '1000'], name: 'streamed', restart_policy: 'always' });
      const s = stream(h);
      await s.opened;
      process.kill(sp.pid, 'SIGKILL');
      const restarting = await until(
        () =>
          s.got.find(
            (m) =>
              m.type === 'event' &&
              (m.event as { type: string }).type === 'AGENT_RESTARTING' &&
              (m.event as { data: { agent_id: number } }).data.agent_id === sp.id,
          ),
        20_000,
        'AGENT_RESTARTING on the stream',
      );
      expect((restarting.event as { seq: number }).seq).toBeGreaterThan(0);
      const metrics = await until(
        () => s.got.filter((m) => m.type === 'metrics').length >= 2 && s.got,
        20_000,
        'two metrics messages',
      );
      const m = metrics.find((x) => x.type === 'metrics')!;
      expect(typeof m.ts).toBe('number');
      expect(m.system).toHaveProperty('cpu');
      expect((m.agents as { name: string }[]).some((a) => a.name === 'streamed')).toBe(true);
      s.ws.close();
      await h.req('POST', `/api/v1/agents/${sp.id}/kill`);
    });

    it('drops a stream client that does not read, never buffering without bound', async () => {
      let emit: EventTap = () => {};
      const api = createApi({
        token: 't',
        call: async () => [],
        tapEvents: (fn) => {
          emit = fn;
          return () => {};
        },
        ready: () => true,
        info: () => ({}),
        streamIntervalMs: 60_000,
      });
      const log = pino({ level: 'silent' });
      const svc = new HttpService({
        api,
        token: 't',
        host: '127.0.0.1',
        port: 0,
        log,
        maxBufferedBytes: 256 * 1024,
      });
      const addr = await svc.listen();
      try {
        const ws = new WebSocket(`ws://127.0.0.1:${addr.port}/api/v1/stream`, ['clove', 'bearer.t']);
        await new Promise((resolve, reject) => {
          ws.once('open', resolve);
          ws.once('error', reject);
        });
        // The client stops reading: its socket's buffers fill, then the server's send buffer grows.
        (ws as unknown as { _socket: { pause(): void } })._socket.pause();
        await until(() => svc.clients === 1, 10_000, 'the server to hold the client');
        const big = 'x'.repeat(64 * 1024);
        for (let i = 0; i < 2000 && svc.clients > 0; i++) {
          emit('CUSTOM', { custom_type: 'flood', big, i }, 0);
          if (i % 50 === 0) await new Promise((r) => setImmediate(r));
        }
        await until(() => svc.clients === 0, 20_000, 'the slow client to be dropped');
        ws.terminate();
      } finally {
        api.close();
        await svc.close();
      }
    });
  });

  describe('system, services and scale', () => {
    it('reports the system and the kernel', async () => {
      const r = await h.json<{ kernel: Record<string, unknown>; system: Record<string, unknown> }>(
        'GET',
        '/api/v1/system',
      );
      expect(r.status).toBe(200);
      expect(r.body.kernel).toMatchObject({ pid: process.pid, fast_path: false });
      expect(r.body.system).toHaveProperty('memory');
    });

    it('groups services by labels and scales them up and down; 409 when no replica is left', async () => {
      const labels = (i: number) => ({
        'clove.project': 'shop',
        'clove.service': 'workers',
        'clove.replica': String(i),
        'clove.config-hash': 'h1',
      });
      await spawn({
        command: ['sleep', '1000'],
        name: 'workers-1',
        labels: labels(1),
        restart_policy: 'always',
      });
      await spawn({
        command: ['sleep', '1000'],
        name: 'workers-2',
        labels: labels(2),
        restart_policy: 'always',
      });
      const svc = async () =>
        (
          await h.json<
            {
              project: string;
              service: string;
              replicas: number;
              agents: { name: string; labels: Record<string, string>; state: string }[];
            }[]
          >('GET', '/api/v1/services')
        ).body.find((s) => s.project === 'shop' && s.service === 'workers');
      expect((await svc())!.replicas).toBe(2);

      const up = await h.json('POST', '/api/v1/services/shop/workers/scale', { replicas: 4 });
      expect(up.status, JSON.stringify(up.body)).toBe(200);
      expect(up.body).toMatchObject({ replicas: 4, started: ['workers-3', 'workers-4'], stopped: [] });
      const four = (await svc())!;
      expect(four.agents.map((a) => a.name).sort()).toEqual([
        'workers-1',
        'workers-2',
        'workers-3',
        'workers-4',
      ]);
      const w4 = four.agents.find((a) => a.name === 'workers-4')!;
      expect(w4.labels).toEqual(labels(4));
      expect(w4.state).toBe('RUNNING');
      expect(
        (await h.json<{ restart_policy: string }>('GET', '/api/v1/agents/workers-4')).body.restart_policy,
      ).toBe('always');

      const down = await h.json('POST', '/api/v1/services/shop/workers/scale', { replicas: 1 });
      expect(down.body).toMatchObject({ started: [], stopped: ['workers-4', 'workers-3', 'workers-2'] });
      await until(
        async () => (await svc())?.agents.every((a) => a.name === 'workers-1'),
        20_000,
        'scaled down',
      );

      const bad = await h.json('POST', '/api/v1/services/shop/workers/scale', { replicas: -1 });
      expect(bad.status).toBe(400);
      expect(bad.body.message).toMatch(/replicas/);

      await h.json('POST', '/api/v1/services/shop/workers/scale', { replicas: 0 });
      await until(async () => !(await svc()), 20_000, 'no replica left');
      const none = await h.json('POST', '/api/v1/services/shop/workers/scale', { replicas: 2 });
      expect(none.status).toBe(409);
      expect(none.body.error).toBe('invalid_state');
      expect(none.body.message).toMatch(/no replica of shop\/workers/);
    });
  });

  describe('/metrics', () => {
    it('exposes agents, restarts, exits, syscalls, latency, cgroup figures and process metrics', async () => {
      const sp = await spawn({ command: ['sleep', '1000'], name: 'metered', restart_policy: 'always' });
      const before = await scrape(h);
      const restarts0 = sample(before, 'clove_agent_restarts_total', { agent: 'metered' }) ?? 0;
      expect(sample(before, 'clove_agents', { state: 'RUNNING' })).toBeGreaterThanOrEqual(1);
      expect(sample(before, 'clove_agent_memory_bytes', { agent: 'metered' })).toBeGreaterThan(0);
      expect(sample(before, 'clove_agent_cpu_seconds_total', { agent: 'metered' })).toBeGreaterThanOrEqual(0);
      expect(sample(before, 'clove_agent_quota_used', { agent: 'metered', quota: 'memory' })).toBeGreaterThan(
        0,
      );
      expect(sample(before, 'clove_kernel_process_resident_memory_bytes')).toBeGreaterThan(0);
      expect(sample(before, 'clove_syscalls_total', { op: 'SPAWN', result: 'ok' })).toBeGreaterThanOrEqual(1);
      expect(
        sample(before, 'clove_syscall_duration_seconds_count', { family: 'lifecycle' }),
      ).toBeGreaterThanOrEqual(1);
      const killed0 = sample(before, 'clove_agent_exits_total', { reason: 'signal', outcome: 'signal' }) ?? 0;

      process.kill(sp.pid, 'SIGKILL');
      const after = await until(
        async () => {
          const s = await scrape(h);
          return (sample(s, 'clove_agent_restarts_total', { agent: 'metered' }) ?? 0) > restarts0 ? s : null;
        },
        20_000,
        'restarts to go up',
      );
      expect(
        sample(after, 'clove_agent_exits_total', { reason: 'signal', outcome: 'signal' }),
      ).toBeGreaterThan(killed0);
      // A refused call is counted with its error code.
      await h.req('POST', '/api/v1/agents/424242/kill');
      await h.req('POST', '/api/v1/agents', { command: ['sleep'], limits: { memory: 1 } });
      const refused = await scrape(h);
      expect(
        sample(refused, 'clove_syscalls_total', { op: 'SPAWN', result: 'invalid_request' }),
      ).toBeGreaterThanOrEqual(1);
      // The API's own reads (every scrape's LIST) are not counted.
      expect(
        sample(refused, 'clove_syscalls_total', { op: 'METRICS_ALL_AGENTS', result: 'ok' }),
      ).toBeUndefined();
      await h.req('POST', '/api/v1/agents/metered/kill');
    });

    it('counts messages in and out (SEND from an agent, SEND from an operator to it)', async () => {
      await spawn({ script: chatter, name: 'chatter', env: { SENDS: '5' } });
      const first = await until(
        async () => {
          const s = await scrape(h);
          return (sample(s, 'clove_agent_messages_received_total', { agent: 'chatter' }) ?? 0) >= 5
            ? s
            : null;
        },
        30_000,
        'chatter to receive its 5',
      );
      expect(sample(first, 'clove_agent_messages_sent_total', { agent: 'chatter' })).toBe(5);
      const c = await k.client();
      for (let i = 0; i < 3; i++) await c.send('chatter', { n: i });
      await until(
        async () => {
          const s = await scrape(h);
          return (sample(s, 'clove_agent_messages_received_total', { agent: 'chatter' }) ?? 0) >= 8;
        },
        30_000,
        'chatter to receive 3 more',
      );
      await h.req('POST', '/api/v1/agents/chatter/kill');
    });
  });

  describe('OpenAPI', () => {
    it('lists every route of the app and only those; ajv compiles every schema in it', async () => {
      const r = await h.json<Record<string, unknown>>('GET', '/api/v1/openapi.json');
      expect(r.status).toBe(200);
      const doc = r.body as {
        openapi: string;
        paths: Record<string, Record<string, unknown>>;
        components: unknown;
      };
      expect(doc.openapi).toBe('3.1.0');
      const api = createApi({
        token: 't',
        call: async () => ({}),
        tapEvents: () => () => {},
        ready: () => true,
        info: () => ({}),
      });
      api.close();
      const inApp = new Set(
        api.app.routes
          .filter((x) => x.method !== 'ALL')
          .map((x) => `${x.method.toLowerCase()} ${x.path.replace(/:([A-Za-z_]+)/g, '{$1}')}`),
      );
      const inDoc = new Set(
        Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`)),
      );
      expect([...inApp].sort()).toEqual([...inDoc].sort());
      expect(ROUTES.length).toBe(inDoc.size);

      const ajv = new Ajv2020({ strict: false, allowUnionTypes: true });
      ajv.addSchema({ $id: 'doc', ...(doc as object) }, 'doc');
      let n = 0;
      for (const [p, ops] of Object.entries(doc.paths))
        for (const [m, op] of Object.entries(ops)) {
          const o = op as {
            requestBody?: unknown;
            responses: Record<string, { content?: Record<string, unknown> }>;
          };
          const ptr = `doc#/paths/${p.replaceAll('~', '~0').replaceAll('/', '~1')}/${m}`;
          if (o.requestBody) {
            ajv.compile({ $ref: `${ptr}/requestBody/content/application~1json/schema` });
            n++;
          }
          for (const [code, res] of Object.entries(o.responses))
            for (const ct of Object.keys(res.content ?? {})) {
              ajv.compile({ $ref: `${ptr}/responses/${code}/content/${ct.replace('/', '~1')}/schema` });
              n++;
            }
        }
      expect(n).toBeGreaterThan(20);
      // The SPAWN route's body is the contract's SPAWN request.
      const spawnBody = (
        doc.paths['/api/v1/agents'].post as {
          requestBody: { content: Record<string, { schema: { properties: object } }> };
        }
      ).requestBody.content['application/json'].schema;
      expect(Object.keys(spawnBody.properties)).toEqual(
        expect.arrayContaining(['script', 'command', 'labels', 'limits']),
      );
      // A real reply validates against its documented schema.
      const rows = await h.json('GET', '/api/v1/agents');
      const validate = ajv.compile({
        $ref: 'doc#/paths/~1api~1v1~1agents/get/responses/200/content/application~1json/schema',
      });
      expect(validate(rows.body), JSON.stringify(validate.errors)).toBe(true);
      expect(openApiDocument()).toBe(openApiDocument());
    });
  });
});

describe('HTTP API on a fast-path kernel', () => {
  it('counts messages the native reactor served', async () => {
    const k = await startKernel({ http: { host: '127.0.0.1', port: 0 }, fastPath: true });
    const dir = tempDir();
    try {
      const h = http(k);
      const script = path.join(dir, 'chatter.py');
      fs.writeFileSync(script, CHATTER);
      const r = await h.json('POST', '/api/v1/agents', { script, name: 'fastchat', env: { SENDS: '7' } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      const s = await until(
        async () => {
          const m = await scrape(h);
          return (sample(m, 'clove_agent_messages_received_total', { agent: 'fastchat' }) ?? 0) >= 7
            ? m
            : null;
        },
        30_000,
        'fastchat to receive its 7',
      );
      expect(sample(s, 'clove_agent_messages_sent_total', { agent: 'fastchat' })).toBe(7);
      // 7 SENDs and at least one RECV, all served by the reactor.
      expect(sample(s, 'clove_agent_syscalls_total', { agent: 'fastchat' })).toBeGreaterThanOrEqual(8);
      const sys = await h.json<{ kernel: { fast_path: boolean } }>('GET', '/api/v1/system');
      expect(sys.body.kernel.fast_path).toBe(true);
      // The reactor's polling, as its own counters say (docs/fastpath.md, "Polling"): every series is
      // there, and each wait that could poll either polled or says why not.
      const polls = k.kernel['fastPath']!.reactor.pollStats();
      const after = await scrape(h);
      const caught = sample(after, 'clove_fast_path_polls_total', { result: 'caught' });
      const missed = sample(after, 'clove_fast_path_polls_total', { result: 'missed' });
      const busy = sample(after, 'clove_fast_path_polls_skipped_total', { reason: 'busy' });
      const backedOff = sample(after, 'clove_fast_path_polls_skipped_total', { reason: 'backed_off' });
      const seconds = sample(after, 'clove_fast_path_poll_seconds_total');
      for (const v of [caught, missed, busy, backedOff, seconds]) expect(v).toBeGreaterThanOrEqual(0);
      expect(caught! + missed! + busy! + backedOff!).toBeGreaterThanOrEqual(
        polls.polls + polls.skipped + polls.backedOff,
      );
      expect(caught! + missed! + busy! + backedOff!).toBeGreaterThan(0);
    } finally {
      await k.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('scale after a kernel restart', () => {
  it('copies the SPAWN request a restored replica was persisted with', async () => {
    const dir = tempDir();
    const opts = {
      http: { host: '127.0.0.1', port: 0 },
      dataDir: path.join(dir, 'data'),
      socketPath: path.join(dir, 'k.sock'),
    };
    const labels = { 'clove.project': 'p', 'clove.service': 'web', 'clove.replica': '1' };
    let k = await startKernel(opts);
    try {
      const r = await http(k).json('POST', '/api/v1/agents', {
        command: ['sleep', '1000'],
        name: 'web-1',
        labels,
        restart_policy: 'always',
      });
      expect(r.status).toBe(201);
      await k.stop();
      k = await startKernel(opts);
      const h = http(k);
      await until(
        async () => (await h.json('GET', '/api/v1/agents/web-1')).body.state === 'RUNNING',
        20_000,
        'web-1 restored',
      );
      const up = await h.json('POST', '/api/v1/services/p/web/scale', { replicas: 2 });
      expect(up.status, JSON.stringify(up.body)).toBe(200);
      expect(up.body.started).toEqual(['web-2']);
      const w2 = await h.json<{ labels: Record<string, string>; restart_policy: string; state: string }>(
        'GET',
        '/api/v1/agents/web-2',
      );
      expect(w2.body).toMatchObject({
        labels: { ...labels, 'clove.replica': '2' },
        restart_policy: 'always',
        state: 'RUNNING',
      });
    } finally {
      await k.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
