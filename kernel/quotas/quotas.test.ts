/**
 * Resource quotas on a real kernel (docs/protocol.md "Quotas"): real Python agents, real EXEC, a fake
 * LLM provider (kernel/syscalls/llm/fake-providers.ts) the kernel calls over HTTP, a local HTTP server,
 * real CPU and memory read by the kernel's sampler, SQLite persistence across a kernel restart. Every
 * quota is hit, and the test sees the QUOTA_EXCEEDED event and the enforcement.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import { CloveClient, KernelError } from '../../sdk/typescript/client.js';
import { Op, type KernelEvent } from '../../protocol/index.js';
import { FakeProvider, USAGE } from '../syscalls/llm/fake-providers.js';
import { PROVIDERS_ENV } from '../syscalls/llm/config.js';

const AGENT = path.join(import.meta.dirname, 'testdata', 'quota_agent.py');
const LONG = 60_000;

let tk: TestKernel;
let op: CloveClient;
let events: CloveClient;
let me: number;
let server: http.Server;
let port: number;
const fake = new FakeProvider('openai');
let confDir: string;
const savedEnv = process.env[PROVIDERS_ENV];
const seen: KernelEvent[] = [];

type Reply = Record<string, unknown>;

async function reply<T>(p: Promise<T>): Promise<Reply> {
  try {
    return (await p) as unknown as Reply;
  } catch (e) {
    if (e instanceof KernelError) return e.reply;
    throw e;
  }
}

/** Spawns a quota agent that reports to the operator client; waits until it is up. */
async function spawnAgent(name: string, extra: Record<string, unknown> = {}): Promise<number> {
  const r = await op.spawn({
    name,
    script: AGENT,
    env: { REPORT_TO: String(me) },
    permissions: {
      exec: ['*'],
      can_spawn: true,
      network: [`127.0.0.1:${port}`],
      http_methods: ['GET', 'POST'],
    },
    ...extra,
  } as never);
  await next((m) => m.type === 'up' && (m.hello as { agent_id?: number })?.agent_id === r.id);
  return r.id;
}

/** One command to an agent; its answer. */
async function ask(name: string, cmd: Record<string, unknown>): Promise<Reply> {
  await op.send(name, cmd);
  const m = await next((x) => x.type === 'answer' && x.to_cmd === cmd.cmd);
  return m.out as Reply;
}

/** The next message to the operator client that matches (a late answer of an earlier test is skipped). */
async function next(match: (m: Reply) => boolean): Promise<Reply> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const r = await op.recv({ max: 1, timeoutMs: 5_000 });
    const m = r.messages[0]?.message as Reply | undefined;
    if (m && match(m)) return m;
  }
  throw new Error('no matching message within 30 s');
}

const call = (name: string, opcode: number, payload: Record<string, unknown>) =>
  ask(name, { cmd: 'call', op: opcode, payload });

/** Waits for a QUOTA_EXCEEDED event matching `m` (events are collected by one subscriber). */
async function quotaEvent(m: Record<string, unknown>): Promise<Record<string, unknown>> {
  const match = (e: KernelEvent) =>
    e.type === 'QUOTA_EXCEEDED' && Object.entries(m).every(([k, v]) => e.data[k] === v);
  return until(
    async () => {
      const r = await events.pollEvents({ max: 100, timeoutMs: 200 });
      seen.push(...r.events);
      return seen.find(match)?.data;
    },
    LONG,
    `QUOTA_EXCEEDED ${JSON.stringify(m)}`,
  );
}

const stateOf = async (id: number) => (await op.list()).find((a) => a.id === id)?.state;

beforeAll(async () => {
  const url = await fake.start();
  confDir = tempDir('clvq');
  const file = path.join(confDir, 'providers.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      default_provider: 'oa',
      providers: [
        {
          name: 'oa',
          kind: 'openai',
          base_url: url,
          api_key: 'sk-quota-test-key',
          default_model: 'gpt-test',
        },
      ],
    }),
    { mode: 0o600 },
  );
  process.env[PROVIDERS_ENV] = file;
  server = http.createServer((req, res) => {
    const n = Number(new URL(req.url!, 'http://x').searchParams.get('n') ?? '100');
    req.resume();
    req.on('end', () => res.end(Buffer.alloc(n, 'q')));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
  tk = await startKernel();
  op = await tk.client();
  me = (await op.hello()).agent_id;
  events = await tk.client();
  await events.subscribe(['QUOTA_EXCEEDED']);
}, LONG);

afterAll(async () => {
  await tk?.stop();
  await fake.close();
  server?.close();
  if (savedEnv === undefined) delete process.env[PROVIDERS_ENV];
  else process.env[PROVIDERS_ENV] = savedEnv;
  fs.rmSync(confDir, { recursive: true, force: true });
});

describe('counted quotas (deny)', () => {
  it(
    'exec_count: at the limit the next EXEC is refused, other syscalls still work, raising it lifts the deny',
    async () => {
      const id = await spawnAgent('q-exec', { quotas: { exec_count: { limit: 2 } } });
      for (let i = 0; i < 2; i++)
        expect((await call('q-exec', Op.EXEC, { command: 'true' })).success).toBe(true);
      const ev = await quotaEvent({ agent_id: id, quota: 'exec_count' });
      expect(ev).toMatchObject({ name: 'q-exec', used: 2, limit: 2, policy: 'deny' });
      const refused = await call('q-exec', Op.EXEC, { command: 'true' });
      expect(refused).toMatchObject({
        success: false,
        code: 'quota_exceeded',
        quota: 'exec_count',
        used: 2,
        limit: 2,
      });
      // What does not count against it works.
      expect((await call('q-exec', Op.STORE, { key: 'k', value: 1 })).success).toBe(true);
      const q = await op.getQuota({ name: 'q-exec' });
      expect(q.quotas?.exec_count).toEqual({ limit: 2, policy: 'deny', used: 2, exceeded: true });
      expect(q.usage?.exec_count).toBe(2);
      // Metrics show the usage too.
      expect((await op.agentMetrics(id)).metrics.quotas.exec_count).toEqual({
        used: 2,
        limit: 2,
        policy: 'deny',
        exceeded: true,
      });
      // The crossing is audited (RESOURCE).
      const audit = await op.getAuditLog({ category: 'RESOURCE', limit: 100 });
      expect(JSON.stringify(audit)).toContain('QUOTA_EXCEEDED');
      await op.setQuota({ name: 'q-exec', quotas: { exec_count: { limit: 3 } } });
      expect((await call('q-exec', Op.EXEC, { command: 'true' })).success).toBe(true);
      expect(await call('q-exec', Op.EXEC, { command: 'true' })).toMatchObject({ code: 'quota_exceeded' });
      await op.kill('q-exec');
    },
    LONG,
  );

  it(
    'llm_calls: the call past the limit never reaches the provider',
    async () => {
      const id = await spawnAgent('q-llm', { quotas: { llm_calls: { limit: 2 } } });
      const before = fake.seen.length;
      for (let i = 0; i < 2; i++)
        expect((await call('q-llm', Op.THINK, { prompt: `hi ${i}` })).success).toBe(true);
      await quotaEvent({ agent_id: id, quota: 'llm_calls' });
      expect(await call('q-llm', Op.THINK, { prompt: 'one more' })).toMatchObject({
        success: false,
        code: 'quota_exceeded',
        quota: 'llm_calls',
      });
      expect(fake.seen.length - before).toBe(2);
      // LLM_REPORT (self-reported) never counts against the resource quotas.
      await call('q-llm', Op.LLM_REPORT, { tokens: 1000 });
      expect((await op.getQuota({ agent_id: id })).usage?.llm_tokens).toBe(2 * USAGE.openai.total);
      await op.kill('q-llm');
    },
    LONG,
  );

  it(
    'llm_tokens: provider-reported tokens are charged; the call after the crossing is refused',
    async () => {
      const id = await spawnAgent('q-tok', { quotas: { llm_tokens: { limit: USAGE.openai.total + 1 } } });
      expect((await call('q-tok', Op.THINK, { prompt: 'a' })).success).toBe(true);
      expect((await call('q-tok', Op.THINK, { prompt: 'b' })).success).toBe(true);
      const ev = await quotaEvent({ agent_id: id, quota: 'llm_tokens' });
      expect(ev.used).toBe(2 * USAGE.openai.total);
      expect(await call('q-tok', Op.THINK, { prompt: 'c' })).toMatchObject({ code: 'quota_exceeded' });
      await op.kill('q-tok');
    },
    LONG,
  );

  it(
    'network_bytes: a response is cut where the quota ends; then HTTP is refused',
    async () => {
      const id = await spawnAgent('q-net', { quotas: { network_bytes: { limit: 3000 } } });
      const first = await call('q-net', Op.HTTP, { url: `http://127.0.0.1:${port}/?n=500` });
      expect(first).toMatchObject({ success: true, status_code: 200, truncated: false });
      const big = await call('q-net', Op.HTTP, { url: `http://127.0.0.1:${port}/?n=20000` });
      expect(big).toMatchObject({ success: true, truncated: true });
      expect((big.body as string).length).toBeLessThan(3000);
      const ev = await quotaEvent({ agent_id: id, quota: 'network_bytes' });
      expect(ev.used as number).toBeGreaterThanOrEqual(3000);
      expect(await call('q-net', Op.HTTP, { url: `http://127.0.0.1:${port}/?n=1` })).toMatchObject({
        success: false,
        code: 'quota_exceeded',
        quota: 'network_bytes',
      });
      await op.kill('q-net');
    },
    LONG,
  );
});

describe('measured quotas (pause, kill)', () => {
  it(
    'memory: an agent allocating past its quota is killed for good',
    async () => {
      const id = await spawnAgent('q-mem', {
        quotas: { memory: { limit: 48 * 1024 * 1024 } },
        restart_policy: 'always',
      });
      // No wait for the answer: the sampler may stop the agent before it writes one (a loaded machine).
      await op.send('q-mem', { cmd: 'alloc', mb: 96 });
      const ev = await quotaEvent({ agent_id: id, quota: 'memory' });
      expect(ev.policy).toBe('kill');
      await until(async () => (await stateOf(id)) === undefined, LONG, 'q-mem gone');
    },
    LONG,
  );

  it(
    'memory with policy pause: the agent is PAUSED and stays so until RESUME',
    async () => {
      const id = await spawnAgent('q-memp', {
        quotas: { memory: { limit: 48 * 1024 * 1024, policy: 'pause' } },
      });
      // No wait for the answer: the sampler may stop the agent before it writes one (a loaded machine).
      await op.send('q-memp', { cmd: 'alloc', mb: 96 });
      await quotaEvent({ agent_id: id, quota: 'memory', policy: 'pause' });
      await until(async () => (await stateOf(id)) === 'PAUSED', LONG, 'q-memp paused');
      await op.resume('q-memp');
      expect(await stateOf(id)).toBe('RUNNING');
      await op.kill('q-memp');
    },
    LONG,
  );

  it(
    'cpu_time: a busy agent is killed at its quota',
    async () => {
      const id = await spawnAgent('q-cpu', { quotas: { cpu_time: { limit: 400 } } });
      await ask('q-cpu', { cmd: 'burn' });
      const ev = await quotaEvent({ agent_id: id, quota: 'cpu_time' });
      expect(ev.used as number).toBeGreaterThanOrEqual(400);
      await until(async () => (await stateOf(id)) === undefined, LONG, 'q-cpu gone');
    },
    LONG,
  );

  it(
    'cpu_time with policy pause: the busy agent is PAUSED',
    async () => {
      const id = await spawnAgent('q-cpup', { quotas: { cpu_time: { limit: 400, policy: 'pause' } } });
      await ask('q-cpup', { cmd: 'burn' });
      await quotaEvent({ agent_id: id, quota: 'cpu_time', policy: 'pause' });
      await until(async () => (await stateOf(id)) === 'PAUSED', LONG, 'q-cpup paused');
      await op.kill('q-cpup');
    },
    LONG,
  );

  it(
    'cpu_time is summed across restarts of the identity',
    async () => {
      const id = await spawnAgent('q-cpur', { restart_policy: 'always' });
      await ask('q-cpur', { cmd: 'burn' });
      const cpu = async () => (await op.getQuota({ agent_id: id })).usage!.cpu_time;
      const before = await until(async () => ((await cpu()) >= 300 ? await cpu() : 0), LONG, 'cpu counted');
      await op.restart('q-cpur');
      await next((m) => m.type === 'up');
      // The new process (a new cgroup, a counter from 0) adds to what the old one used: over several
      // sampler periods the usage never falls back below it.
      for (let i = 0; i < 12; i++) {
        expect(await cpu()).toBeGreaterThanOrEqual(before);
        await new Promise((r) => setTimeout(r, 250));
      }
      await op.kill('q-cpur');
    },
    LONG,
  );

  it(
    'wall_time: killed once its time since the first start is up',
    async () => {
      const id = await spawnAgent('q-wall', { quotas: { wall_time: { limit: 1500 } } });
      await quotaEvent({ agent_id: id, quota: 'wall_time', policy: 'kill' });
      await until(async () => (await stateOf(id)) === undefined, LONG, 'q-wall gone');
    },
    LONG,
  );

  it(
    'deny is refused for a measured quota',
    async () => {
      const id = await spawnAgent('q-bad');
      const r = await reply(op.setQuota({ agent_id: id, quotas: { memory: { limit: 1, policy: 'deny' } } }));
      expect(r.code).toBe('invalid_request');
      await op.kill('q-bad');
    },
    LONG,
  );
});

describe('service quotas', () => {
  it(
    'two agents of one service share its quota: their sum crosses it',
    async () => {
      const labels = (n: number) => ({
        'clove.project': 'qp',
        'clove.service': 'w',
        'clove.replica': String(n),
      });
      const a = await spawnAgent('w-1', { labels: labels(1) });
      const b = await spawnAgent('w-2', { labels: labels(2) });
      await op.setQuota({ service: { project: 'qp', service: 'w' }, quotas: { exec_count: { limit: 3 } } });
      expect((await call('w-1', Op.EXEC, { command: 'true' })).success).toBe(true);
      expect((await call('w-2', Op.EXEC, { command: 'true' })).success).toBe(true);
      expect((await call('w-1', Op.EXEC, { command: 'true' })).success).toBe(true);
      const ev = await quotaEvent({ quota: 'exec_count', name: 'w-1' });
      expect(ev).toMatchObject({ used: 3, limit: 3, service: { project: 'qp', service: 'w' } });
      expect(await call('w-2', Op.EXEC, { command: 'true' })).toMatchObject({ code: 'quota_exceeded' });
      const s = await op.getQuota({ service: { project: 'qp', service: 'w' } });
      expect(s.usage?.exec_count).toBe(3);
      expect(new Set(s.agent_ids)).toEqual(new Set([a, b]));
      const one = await op.getQuota({ agent_id: b });
      expect(one.service_quotas?.exec_count).toMatchObject({ used: 3, exceeded: true });
      // A service quota with policy pause pauses every agent of the service.
      await op.setQuota({
        service: { project: 'qp', service: 'w' },
        quotas: { llm_calls: { limit: 1, policy: 'pause' } },
      });
      // w-2 is paused before its answer can leave: nothing is awaited from it.
      await op.send('w-2', { cmd: 'call', op: Op.THINK, payload: { prompt: 'x' } });
      await quotaEvent({ quota: 'llm_calls', name: 'w-2', policy: 'pause' });
      await until(
        async () => (await stateOf(a)) === 'PAUSED' && (await stateOf(b)) === 'PAUSED',
        LONG,
        'both paused',
      );
      await op.kill('w-1');
      await op.kill('w-2');
    },
    LONG,
  );
});

describe('rights', () => {
  it(
    'an agent reads its own quota, cannot raise or remove it, and gives a child no looser one',
    async () => {
      const id = await spawnAgent('q-par', { quotas: { exec_count: { limit: 5 } } });
      const own = await call('q-par', Op.GET_QUOTA, {});
      expect(own).toMatchObject({ success: true, agent_id: id, quotas: { exec_count: { limit: 5 } } });
      expect(
        await call('q-par', Op.SET_QUOTA, { agent_id: id, quotas: { exec_count: { limit: 50 } } }),
      ).toMatchObject({ code: 'permission_denied' });
      expect(await call('q-par', Op.SET_QUOTA, { agent_id: id, quotas: { exec_count: null } })).toMatchObject(
        {
          code: 'permission_denied',
        },
      );
      expect(await call('q-par', Op.GET_QUOTA, { all: true })).toMatchObject({ code: 'permission_denied' });
      // A child asked with a looser quota is refused; without one it inherits the parent's.
      const looser = await ask('q-par', {
        cmd: 'spawn',
        payload: { name: 'q-kid', script: AGENT, quotas: { exec_count: { limit: 9 } } },
      });
      expect(looser).toMatchObject({ code: 'permission_denied' });
      const kid = await ask('q-par', { cmd: 'spawn', payload: { name: 'q-kid', script: AGENT } });
      expect(kid.success).toBe(true);
      const kidId = kid.id as number;
      expect((await op.getQuota({ agent_id: kidId })).quotas?.exec_count?.limit).toBe(5);
      // It may tighten its child's quota, never loosen it past its own.
      expect(
        await call('q-par', Op.SET_QUOTA, { agent_id: kidId, quotas: { exec_count: { limit: 2 } } }),
      ).toMatchObject({ success: true, quotas: { exec_count: { limit: 2 } } });
      expect(
        await call('q-par', Op.SET_QUOTA, { agent_id: kidId, quotas: { exec_count: { limit: 6 } } }),
      ).toMatchObject({ code: 'permission_denied' });
      expect(await call('q-par', Op.GET_QUOTA, { agent_id: kidId })).toMatchObject({ success: true });
      // Not its service to set.
      expect(
        await call('q-par', Op.SET_QUOTA, { service: { project: 'x', service: 'y' }, quotas: {} }),
      ).toMatchObject({ code: 'permission_denied' });
      // Every refusal was audited by the dispatcher.
      const audit = JSON.stringify(await op.getAuditLog({ category: 'SECURITY', limit: 200 }));
      expect(audit).toContain('SET_QUOTA');
      await op.kill('q-kid');
      await op.kill('q-par');
    },
    LONG,
  );
});

describe('persistence', () => {
  it('usage and limits survive a kernel restart (same identity, same agent id)', async () => {
    const dir = tempDir('clvqp');
    const dataDir = path.join(dir, 'data');
    let k = await startKernel({ dataDir });
    try {
      let c = await k.client();
      const first = await c.spawn({
        name: 'q-keep',
        script: AGENT,
        restart_policy: 'always',
        permissions: { exec: ['*'] },
        quotas: { exec_count: { limit: 10 } },
      } as never);
      const agentOf = (cl: CloveClient, name: string) =>
        cl.send(name, { cmd: 'call', op: Op.EXEC, payload: { command: 'true' } });
      // The agent answers to whoever sent: the operator client here.
      await until(
        async () => (await c.list()).some((a) => a.name === 'q-keep' && a.state === 'RUNNING'),
        LONG,
      );
      for (let i = 0; i < 3; i++) {
        await agentOf(c, 'q-keep');
        const r = await c.recv({ max: 1, timeoutMs: 30_000 });
        expect((r.messages[0].message as { out: Reply }).out.success).toBe(true);
      }
      const before = await c.getQuota({ name: 'q-keep' });
      expect(before.usage?.exec_count).toBe(3);
      await k.kernel.close();
      fs.rmSync(k.dir, { recursive: true, force: true });
      k = await startKernel({ dataDir });
      c = await k.client();
      await until(async () => (await c.list()).some((a) => a.name === 'q-keep'), LONG, 'q-keep restored');
      const after = await c.getQuota({ name: 'q-keep' });
      expect(after.identity).toBe(before.identity);
      expect(after.agent_id).toBe(first.id); // a restored agent keeps its id (docs/restart.md)
      expect(after.usage?.exec_count).toBe(3);
      expect(after.quotas?.exec_count).toMatchObject({ limit: 10, used: 3 });
      expect(after.usage?.wall_time as number).toBeGreaterThanOrEqual(before.usage?.wall_time as number);
      await c.kill('q-keep');
    } finally {
      await k.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
