/**
 * Worlds on a real kernel with real sandboxed Python agents (docs/worlds.md): a member's files, HTTP
 * answers, commands and failures come from its world; every chaos event kind is seen by the agent; a
 * snapshot restored into a fresh world gives the same state; the same seed gives the same failures; an
 * agent outside the world is unaffected; only operators and the creator manage a world (audited); bad
 * configs are refused with clear errors; a kernel started again on the data dir keeps its worlds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';

// Replies and agent answers are free-form JSON here.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const AGENT = `
import json, os, sys, time
from clove_sdk import CloveClient

c = CloveClient()
c.connect()
boss = int(os.environ["BOSS"])
me = c.hello()
c.send_message({"type": "up", "name": me["name"], "id": me["agent_id"], "pid": os.getpid()}, to=boss)
while True:
    m = c.wait_message(timeout=30)
    if m is None:
        continue
    cmd = m["message"]
    scope = {"c": c, "os": os, "json": json, "time": time, "result": None}
    try:
        exec(cmd["code"], scope)
        out = {"ok": True, "result": scope["result"]}
    except Exception as e:
        out = {"ok": False, "error": repr(e)}
    c.send_message({"type": "answer", "id": cmd["id"], "out": out}, to=m["from"])
`;

let tk: TestKernel;
let op: CloveClient;
let dataDir: string;
let scripts: string;
let agentPy: string;
let server: http.Server;
let port = 0;
let hits = 0;
const inbox: Any[] = [];
let seq = 0;

beforeAll(async () => {
  dataDir = fs.mkdtempSync('/var/tmp/clove-worlds-');
  fs.chmodSync(dataDir, 0o755);
  tk = await startKernel({ dataDir: path.join(dataDir, 'data') });
  op = await tk.client();
  await op.hello();
  scripts = tempDir('clvw');
  agentPy = path.join(scripts, 'agent.py');
  fs.writeFileSync(agentPy, AGENT);
  // The "internet": its answer changes with every hit, so a replayed recording is told from a real call.
  server = http.createServer((_req, res) => {
    hits++;
    res.setHeader('content-type', 'text/plain');
    res.end(`real answer ${hits}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(async () => {
  await tk?.stop();
  server?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.rmSync(scripts, { recursive: true, force: true });
});

let receiving: Promise<void> | null = null;

/** One RECV at a time on the operator's connection, shared by every waiter. */
function receive(ms: number): Promise<void> {
  receiving ??= op
    .recv({ max: 10, timeoutMs: ms })
    .then((r) => void inbox.push(...r.messages.map((m) => m.message)))
    .finally(() => (receiving = null));
  return receiving;
}

/** The next message from an agent that satisfies `pred`. */
async function next(pred: (m: Any) => boolean, timeoutMs = 30_000): Promise<Any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const i = inbox.findIndex(pred);
    if (i >= 0) return inbox.splice(i, 1)[0];
    const left = deadline - Date.now();
    if (left <= 0) throw new Error('timed out waiting for an agent');
    await receive(Math.min(left, 2000));
  }
}

interface Agent {
  name: string;
  id: number;
  pid: number;
}

const NET = () => ({ network: [`127.0.0.1:${port}`], http_methods: ['GET', 'POST'] });

async function spawnAgent(name: string, extra: Record<string, unknown> = {}): Promise<Agent> {
  const s = await op.spawn({ name, script: agentPy, env: { BOSS: String(op.agentId) }, ...extra } as Any);
  const up = await next((m) => m.type === 'up' && m.name === name);
  return { name, id: s.id, pid: up.pid };
}

/** Runs Python in the agent (`c` is its client); returns what the code put in `result`. */
async function py(a: Agent, code: string, timeoutMs = 30_000): Promise<Any> {
  const id = ++seq;
  await op.send(a.name, { id, code });
  const r = await next((m) => m.type === 'answer' && m.id === id, timeoutMs);
  if (!r.out.ok) throw new Error(`${a.name}: ${r.out.error}`);
  return r.out.result;
}

const J = JSON.stringify;
const agentsOf = (r: Any): Any[] => (Array.isArray(r) ? r : r.agents);
const read = (a: Agent, p: string) => py(a, `result = c.read_file(${J(p)}, check=False)`);
const write = (a: Agent, p: string, content: string) =>
  py(a, `result = c.write_file(${J(p)}, ${J(content)}, check=False)`);
const get = (a: Agent, url: string) =>
  py(a, `result = c.call_json(0x50, {"url": ${J(url)}, "timeout": 10}, check=False)`);
const sh = (a: Agent, command: string) => py(a, `result = c.exec(${J(command)}, check=False)`);

/** The error code of a call that must fail. */
async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
}

async function create(config: Record<string, unknown>, name = 'w'): Promise<string> {
  return (await op.worldCreate({ name, config } as Any)).world_id;
}

describe('an agent in a world', () => {
  let world: string;
  let a: Agent;
  let outside: Agent;
  beforeAll(async () => {
    world = await create(
      {
        virtual_filesystem: {
          initial_files: { '/data/in.txt': 'hello', '/etc/app.conf': { content: 'k=v', mode: 'r' } },
          readonly_patterns: ['/etc/**'],
          writable_patterns: ['/out/**'],
        },
        limits: { max_file_bytes: 100, max_files: 10 },
        network: {
          mode: 'mock',
          mock_responses: {
            'https://api.example.com/users': { status: 200, body: '[1,2]', headers: { 'X-Mock': 'yes' } },
            'https://api.example.com/*': 'any api',
          },
          default_response: { status: 404, body: 'nothing here' },
          allowed_domains: [`127.0.0.1:${port}`],
        },
        exec: { mock_commands: { 'git status*': { stdout: 'clean\n', exit_code: 0 } }, unmatched: 'refuse' },
      },
      'Test World',
    );
    expect(world).toMatch(/^test-world-\d{4}$/);
    [a, outside] = await Promise.all([
      spawnAgent('w-member', { world, permissions: NET() }),
      spawnAgent('w-outside', { permissions: NET() }),
    ]);
  });

  it('reads its files from the world and writes where the world allows, within its bounds', async () => {
    expect(await read(a, '/data/in.txt')).toMatchObject({
      success: true,
      content: 'hello',
      size: 5,
      world,
      virtual: true,
    });
    expect(await read(a, '/data/./x/../in.txt')).toMatchObject({ content: 'hello' });
    expect(await read(a, '/data/missing')).toMatchObject({ success: false, code: 'not_found', world });
    expect(await write(a, '/out/report.txt', 'done')).toMatchObject({
      success: true,
      bytes_written: 4,
      created: true,
    });
    expect(await read(a, '/out/report.txt')).toMatchObject({ content: 'done', virtual: true });
    // read-only by mode and by readonly_patterns (the reference stored them but never enforced them)
    expect(await write(a, '/etc/app.conf', 'x')).toMatchObject({
      success: false,
      code: 'io_error',
      errno: 'EROFS',
    });
    expect(await write(a, '/etc/new.conf', 'x')).toMatchObject({
      success: false,
      code: 'io_error',
      errno: 'EROFS',
    });
    expect(await write(a, '/elsewhere.txt', 'x')).toMatchObject({
      success: false,
      code: 'permission_denied',
    });
    expect(await write(a, '/out/big', 'x'.repeat(101))).toMatchObject({
      success: false,
      code: 'io_error',
      errno: 'EFBIG',
    });
    // the real file system never saw any of it
    expect(fs.existsSync('/out/report.txt')).toBe(false);
    const st = (await op.worldState({ world_id: world })).state as Any;
    expect(st.vfs_metrics).toMatchObject({ file_count: 3, write_count: 1 });
    expect(st.agents).toEqual([a.id]);
  });

  it('gets its HTTP answers from the mocks: exact URL first, then patterns, then the default', async () => {
    expect(await get(a, 'https://api.example.com/users')).toMatchObject({
      success: true,
      status_code: 200,
      body: '[1,2]',
      headers: { 'x-mock': 'yes' },
      mocked: true,
      world,
    });
    expect(await get(a, 'https://api.example.com/other')).toMatchObject({
      status_code: 200,
      body: 'any api',
    });
    expect(await get(a, 'https://unknown.example.org/')).toMatchObject({
      status_code: 404,
      body: 'nothing here',
    });
    // an allowed domain passes through, under the agent's own HTTP rights
    const real = await get(a, `http://127.0.0.1:${port}/`);
    expect(real).toMatchObject({ success: true, status_code: 200, world });
    expect(real.body).toMatch(/^real answer/);
    expect(real.mocked).toBeUndefined();
  });

  it('runs mocked commands and refuses the others (exec.unmatched: refuse)', async () => {
    expect(await sh(a, 'git status --short')).toMatchObject({
      success: true,
      stdout: 'clean\n',
      exit_code: 0,
      mocked: true,
      world,
    });
    expect(await sh(a, 'rm -rf /tmp/x')).toMatchObject({ success: false, code: 'permission_denied' });
  });

  it('leaves an agent outside the world unaffected', async () => {
    expect(await read(outside, '/data/in.txt')).toMatchObject({ success: false, code: 'not_found' });
    expect((await read(outside, '/data/in.txt')).world).toBeUndefined();
    const r = await get(outside, 'https://api.example.com/users');
    expect(r.mocked).toBeUndefined();
    expect(
      r.success === false || r.code === 'permission_denied' || r.status_code !== 200 || r.body !== '[1,2]',
    ).toBe(true);
    expect((await sh(outside, 'true')).mocked).toBeUndefined();
    await op.worldEvent({ world_id: world, event_type: 'disk_fail' });
    expect(await write(outside, 'fine.txt', 'ok')).toMatchObject({ success: true });
    expect(await read(a, '/data/in.txt')).toMatchObject({ success: false, code: 'io_error', errno: 'EIO' });
    await op.worldEvent({ world_id: world, event_type: 'clear' });
    expect(await read(a, '/data/in.txt')).toMatchObject({ success: true });
  });

  it('keeps its world across its own restart, and leaves it when it exits for good', async () => {
    await op.restart(a.id);
    await next((m) => m.type === 'up' && m.name === a.name);
    expect(await read(a, '/data/in.txt')).toMatchObject({ content: 'hello', world });
    await op.kill(a.id);
    await until(
      async () => ((await op.worldState({ world_id: world })).state as Any).agent_count === 0,
      20_000,
    );
    expect(((await op.worldState({ world_id: world })).state as Any).members).toEqual([]);
    expect((await op.worldDestroy({ world_id: world })).success).toBe(true);
  });
});

describe('record, then replay', () => {
  it('records real answers under the agent’s rights and a mock world answers from the recordings', async () => {
    const world = await create({ network: { mode: 'record' } }, 'rec');
    const a = await spawnAgent('w-recorder', { world, permissions: NET() });
    const first = await get(a, `http://127.0.0.1:${port}/page`);
    expect(first).toMatchObject({ success: true, recorded: true, world });
    // passthrough stays within the agent's own HTTP policy
    expect(await get(a, 'http://127.0.0.2:1/')).toMatchObject({ success: false, code: 'permission_denied' });
    const snap = (await op.worldSnapshot({ world_id: world })).snapshot as Any;
    expect(snap.network.recorded).toHaveLength(1);
    snap.config.network.mode = 'mock';
    await op.worldLeave({ agent_id: a.id });
    const replay = (await op.worldRestore({ snapshot: snap, new_world_id: 'replay-1' })).world_id;
    expect(replay).toBe('replay-1');
    await op.worldJoin({ world_id: replay, agent_id: a.id });
    const before = hits;
    expect(await get(a, `http://127.0.0.1:${port}/page`)).toMatchObject({
      body: first.body,
      mocked: true,
      source: 'recording',
    });
    expect(hits).toBe(before);
    await op.kill(a.id);
  });
});

describe('chaos', () => {
  let world: string;
  let a: Agent;
  let events: CloveClient;
  beforeAll(async () => {
    world = await create(
      {
        virtual_filesystem: { initial_files: { '/f.txt': 'data' } },
        network: { mode: 'mock', mock_responses: { 'https://svc.test/*': 'ok' } },
      },
      'chaos',
    );
    a = await spawnAgent('w-chaos', { world, permissions: NET(), restart_policy: 'always' });
    await py(a, 'c.subscribe(["WORLD_CHAOS"]); result = True');
    events = await tk.client();
    await events.subscribe(['WORLD_CHAOS']);
  });

  /** The agent's next WORLD_CHAOS event of a kind (polled by the agent itself). */
  const seen = (type: string, phase = 'started') =>
    py(
      a,
      `
deadline = time.time() + 20
result = None
while result is None and time.time() < deadline:
    for e in c.poll_events(timeout=2)["events"]:
        if e["type"] == "WORLD_CHAOS" and e["data"]["event_type"] == ${J(type)} and e["data"]["phase"] == ${J(phase)}:
            result = e["data"]
`,
    );

  it('disk_full: writes fail with ENOSPC, then the event expires', async () => {
    const r = await op.worldEvent({
      world_id: world,
      event_type: 'disk_full',
      params: { duration_ms: 1500 },
    });
    expect(r.expires_at).toBeGreaterThan(Date.now() - 1000);
    expect(await seen('disk_full')).toMatchObject({ world_id: world, members: [a.id] });
    expect(await write(a, '/g.txt', 'x')).toMatchObject({ code: 'io_error', errno: 'ENOSPC', chaos: true });
    expect(await read(a, '/f.txt')).toMatchObject({ success: true });
    expect(await seen('disk_full', 'expired')).toMatchObject({ world_id: world });
    expect(await write(a, '/g.txt', 'x')).toMatchObject({ success: true });
  });

  it('disk_fail: reads and writes fail with EIO until cleared', async () => {
    await op.worldEvent({ world_id: world, event_type: 'disk_fail' });
    expect(await seen('disk_fail')).toBeTruthy();
    expect(await read(a, '/f.txt')).toMatchObject({ code: 'io_error', errno: 'EIO' });
    expect(await write(a, '/g.txt', 'x')).toMatchObject({ code: 'io_error', errno: 'EIO' });
    expect(
      await op.worldEvent({ world_id: world, event_type: 'disk_fail', clear: true } as Any),
    ).toMatchObject({
      cleared: 1,
    });
    expect(await seen('disk_fail', 'cleared')).toBeTruthy();
    expect(await read(a, '/f.txt')).toMatchObject({ success: true });
  });

  it('network_partition and packet_loss: HTTP fails as a real unreachable or lost server does', async () => {
    await op.worldEvent({ world_id: world, event_type: 'network_partition' });
    expect(await seen('network_partition')).toBeTruthy();
    expect(await get(a, 'https://svc.test/a')).toMatchObject({
      success: false,
      code: 'upstream_failed',
      failure: 'connect',
      status_code: 0,
    });
    await op.worldEvent({ world_id: world, event_type: 'clear' });
    await op.worldEvent({ world_id: world, event_type: 'packet_loss', params: { probability: 1 } });
    expect(await seen('packet_loss')).toBeTruthy();
    expect(await get(a, 'https://svc.test/a')).toMatchObject({ code: 'upstream_failed', failure: 'timeout' });
    await op.worldEvent({ world_id: world, event_type: 'clear' });
    expect(await get(a, 'https://svc.test/a')).toMatchObject({ success: true, body: 'ok' });
  });

  it('slow_io and latency_spike: calls wait on timers (latency_ms honoured), the kernel stays responsive', async () => {
    const before = ((await op.worldState({ world_id: world })).state as Any).chaos_metrics.latency_injected;
    await op.worldEvent({ world_id: world, event_type: 'slow_io', params: { latency_ms: 700 } });
    await op.worldEvent({ world_id: world, event_type: 'latency_spike', params: { latency_ms: 400 } });
    expect(await seen('slow_io')).toMatchObject({ params: { latency_ms: 700 } });
    const t = await py(a, 't0 = time.monotonic(); c.read_file("/f.txt"); result = time.monotonic() - t0');
    expect(t).toBeGreaterThanOrEqual(0.65);
    // while a member's HTTP call waits 1.1 s, the kernel answers others
    const slow = py(
      a,
      't0 = time.monotonic(); c.call_json(0x50, {"url": "https://svc.test/x"}); result = time.monotonic() - t0',
    );
    expect((await op.worldList()).success).toBe(true);
    expect(await slow).toBeGreaterThanOrEqual(1.05);
    const after = ((await op.worldState({ world_id: world })).state as Any).chaos_metrics.latency_injected;
    expect(after - before).toBeGreaterThanOrEqual(700 + 1100);
    await op.worldEvent({ world_id: world, event_type: 'clear' });
  });

  it('agent_crash: a member is SIGKILLed and restarted by its policy, still in its world', async () => {
    const restarts = () =>
      agentsOf(await_list).find((x: Any) => x.id === a.id)?.restarts as number | undefined;
    let await_list = await op.list();
    const before = restarts() ?? 0;
    const r = await op.worldEvent({ world_id: world, event_type: 'agent_crash' });
    expect(r.affected).toEqual([a.id]);
    await next((m) => m.type === 'up' && m.name === a.name);
    await_list = await op.list();
    expect(restarts()).toBe(before + 1);
    expect(await read(a, '/f.txt')).toMatchObject({ world, virtual: true });
    const ev = await until(async () => {
      const p = await events.pollEvents({ max: 100 });
      return (p.events as Any[]).find((e) => e.data.event_type === 'agent_crash');
    }, 10_000);
    expect(ev.data).toMatchObject({ phase: 'struck', affected: [a.id] });
    await py(a, 'c.subscribe(["WORLD_CHAOS"]); result = True');
  });

  it('resource_pressure: the member’s cgroup is lowered, or its calls slowed, for the duration', async () => {
    const r = (await op.worldEvent({
      world_id: world,
      event_type: 'resource_pressure',
      params: {
        duration_ms: 60_000,
        memory_high_bytes: 64 * 1024 * 1024,
        cpu_max_percent: 20,
        latency_ms: 300,
      },
    })) as Any;
    expect(r.applied).toHaveLength(1);
    expect(await seen('resource_pressure')).toMatchObject({ members: [a.id] });
    const quota = async () => ((await op.agentMetrics(a.id)) as Any).metrics?.cgroup?.cpu?.quota_usec;
    if (r.applied[0].how === 'slowed') {
      const t = await py(a, 't0 = time.monotonic(); c.read_file("/f.txt"); result = time.monotonic() - t0');
      expect(t).toBeGreaterThanOrEqual(0.28);
    } else {
      expect(r.applied[0].how).toBe('cgroup');
      expect(await quota()).toBe(20_000);
    }
    await op.worldEvent({ world_id: world, event_type: 'clear' });
    expect(await seen('resource_pressure', 'cleared')).toBeTruthy();
    if (r.applied[0].how === 'cgroup') expect(await quota()).not.toBe(20_000);
  });
});

describe('reproducibility', () => {
  const config = (seed: number) => ({
    seed,
    virtual_filesystem: { initial_files: { '/x': '1' } },
    chaos: { enabled: true, rules: [{ type: 'file_read_fail', path_pattern: '/x', probability: 0.5 }] },
  });
  const run = (a: Agent) =>
    py(a, 'result = "".join("." if c.read_file("/x", check=False)["success"] else "F" for _ in range(40))');

  it('the same seed gives the same sequence of failures twice', async () => {
    const a = await spawnAgent('w-seed');
    const w1 = await create(config(42), 'seed');
    await op.worldJoin({ world_id: w1, agent_id: a.id });
    const first = await run(a);
    await op.worldLeave({ agent_id: a.id });
    const w2 = await create(config(42), 'seed');
    await op.worldJoin({ world_id: w2, agent_id: a.id });
    const second = await run(a);
    expect(first).toMatch(/F/);
    expect(first).toMatch(/\./);
    expect(second).toBe(first);
    expect(((await op.worldState({ world_id: w2 })).state as Any).seed).toBe(42);
    // a default seed is random and reported, so that a run can be replayed
    const w3 = await create({ chaos: { enabled: true } }, 'seedless');
    expect(typeof ((await op.worldState({ world_id: w3 })).state as Any).seed).toBe('number');
    await op.kill(a.id);
  });

  it('a snapshot restored into a fresh world gives the same state, members mapped back without ghosts', async () => {
    const w = await create(config(7), 'snap');
    const a = await spawnAgent('w-snap', { world: w });
    await write(a, '/made.txt', 'made in the world');
    await op.worldEvent({ world_id: w, event_type: 'latency_spike', params: { latency_ms: 1 } });
    await run(a);
    const s1 = (await op.worldSnapshot({ world_id: w })).snapshot as Any;
    // the agent is in w: restoring cannot take it (one world per agent) and it is reported dropped
    const r1 = await op.worldRestore({ snapshot: s1 });
    expect(r1).toMatchObject({ members_restored: [], members_dropped: [expect.stringMatching(/^w-snap#/)] });
    const s2 = (await op.worldSnapshot({ world_id: r1.world_id })).snapshot as Any;
    const same = (s: Any) => ({
      ...s,
      id: 0,
      name: 0,
      snapshot_time: 0,
      members: 0,
      agents: 0,
      config: { ...s.config, name: 0 },
    });
    expect(same(s2)).toEqual(same(s1));
    // from here both worlds draw the same failures
    await op.worldLeave({ agent_id: a.id });
    await op.worldJoin({ world_id: w, agent_id: a.id });
    const x = await run(a);
    await op.worldLeave({ agent_id: a.id });
    await op.worldJoin({ world_id: r1.world_id, agent_id: a.id });
    expect(await run(a)).toBe(x);
    // a member that is gone is not brought back as a ghost: the restored world can be destroyed
    await op.kill(a.id);
    const r2 = await op.worldRestore({ snapshot: s1 });
    expect(r2.members_restored).toEqual([]);
    expect((await op.worldDestroy({ world_id: r2.world_id })).success).toBe(true);
  });
});

describe('who may do what', () => {
  it('only operators and the creator destroy, inject or snapshot; denials are audited', async () => {
    const owner = await spawnAgent('w-owner');
    const other = await spawnAgent('w-other');
    const created = await py(owner, 'result = c.world_create("mine", {"chaos": {"enabled": True}})');
    const w = created.world_id;
    for (const call of [
      `c.world_event(${J(w)}, "disk_fail", check=False)`,
      `c.world_destroy(${J(w)}, True, check=False)`,
      `c.world_snapshot(${J(w)}, check=False)`,
      `c.world_join(${J(w)}, ${owner.id}, check=False)`,
    ])
      expect(await py(other, `result = ${call}`)).toMatchObject({
        success: false,
        code: 'permission_denied',
      });
    const audit = await op.getAuditLog({ limit: 200 } as Any);
    const denials = (audit.entries as Any[]).filter(
      (e) => e.agent_id === other.id && String(JSON.stringify(e)).includes('WORLD_'),
    );
    expect(denials.length).toBeGreaterThanOrEqual(4);
    expect(await py(owner, `result = c.world_event(${J(w)}, "disk_fail", check=False)`)).toMatchObject({
      success: true,
    });
    // the creator's chaos reaches only agents it may control: not one an operator put in its world
    await op.worldJoin({ world_id: w, agent_id: other.id });
    expect(await py(owner, `result = c.world_event(${J(w)}, "agent_crash", check=False)`)).toMatchObject({
      code: 'invalid_state',
    });
    expect(
      await py(owner, `result = c.world_event(${J(w)}, "agent_crash", {"target": ${other.id}}, check=False)`),
    ).toMatchObject({ code: 'permission_denied' });
    expect(await py(other, 'result = c.world_leave(check=False)')).toMatchObject({ success: true });
    expect(await py(owner, `result = c.world_destroy(${J(w)}, check=False)`)).toMatchObject({
      success: true,
    });
    expect(await code(op.worldState({ world_id: w }))).toBe('not_found');
    // an agent joins a world itself, and leaves it
    const w2 = await create({}, 'open');
    expect(await py(other, `result = c.world_join(${J(w2)}, check=False)`)).toMatchObject({ success: true });
    expect(await py(other, 'result = c.world_join("no-such-world", check=False)')).toMatchObject({
      code: 'not_found',
    });
    expect(await py(other, 'result = c.world_leave(check=False)')).toMatchObject({
      success: true,
      world_id: w2,
    });
    expect(await py(other, 'result = c.world_leave(check=False)')).toMatchObject({ code: 'invalid_state' });
    await Promise.all([op.kill(owner.id), op.kill(other.id)]);
  });
});

describe('bad input', () => {
  it('refuses bad configs, events and snapshots with errors that name what is wrong', async () => {
    const bad = async (config: unknown) => {
      try {
        await op.worldCreate({ name: 'bad', config } as Any);
      } catch (e) {
        return `${(e as Any).code}: ${(e as Error).message}`;
      }
      return 'accepted';
    };
    expect(await bad({ virtual_filesytem: {} })).toMatch(/^invalid_request: .*config/);
    expect(await bad({ network: { mock_responses: { 'http://x/': { status: '200' } } } })).toMatch(
      /invalid_request/,
    );
    expect(await bad({ network: { mode: 'live' } })).toMatch(/invalid_request: .*network\.mode.*one of/);
    expect(await bad({ chaos: { failure_rate: 2 } })).toMatch(/invalid_request: .*failure_rate/);
    expect(await bad({ chaos: { latency: { min_ms: 10, max_ms: 5 } } })).toMatch(/min_ms/);
    expect(
      await bad({ limits: { max_file_bytes: 3 }, virtual_filesystem: { initial_files: { '/a': 'abcd' } } }),
    ).toMatch(/max_file_bytes/);
    const w = await create({}, 'ok');
    expect(await code(op.worldEvent({ world_id: w, event_type: 'meteor' }))).toBe('invalid_request');
    expect(
      await code(op.worldEvent({ world_id: w, event_type: 'slow_io', params: { latency_ms: -1 } })),
    ).toBe('invalid_request');
    expect(await code(op.worldEvent({ world_id: w, event_type: 'agent_crash' }))).toBe('invalid_state');
    expect(await code(op.worldState({} as Any))).toBe('invalid_request');
    expect(await code(op.worldRestore({ snapshot: {} }))).toBe('invalid_request');
    expect(await code(op.worldRestore({ snapshot: { config: { chaos: { enabled: 'yes' } } } }))).toBe(
      'invalid_request',
    );
    expect(await code(op.worldRestore({ snapshot: { name: 'x' }, new_world_id: w }))).toBe('invalid_state');
    expect(await code(op.worldJoin({ world_id: w }))).toBe('invalid_request');
    // a SPAWN into a world that does not exist starts nothing
    expect(await code(op.spawn({ name: 'w-nowhere', script: agentPy, world: 'nope-0001' } as Any))).toBe(
      'not_found',
    );
    expect(agentsOf(await op.list()).some((x: Any) => x.name === 'w-nowhere')).toBe(false);
    // and the kernel is fine
    expect((await op.worldList()).success).toBe(true);
  });
});

describe('a kernel started again on the same data dir', () => {
  it('keeps its worlds, their files, events, seed and members', async () => {
    const dir = tempDir('clvwr');
    fs.chmodSync(dir, 0o755);
    const k1 = await startKernel({ dataDir: path.join(dir, 'data') });
    const c1 = await k1.client();
    const w = (
      await c1.worldCreate({
        name: 'durable',
        config: { seed: 9, virtual_filesystem: { initial_files: { '/keep': 'me' } } },
      } as Any)
    ).world_id;
    await c1.worldEvent({ world_id: w, event_type: 'disk_full' });
    await c1.spawn({
      name: 'w-durable',
      command: ['/bin/sleep', '600'],
      sandboxed: false,
      restart_policy: 'always',
      world: w,
    } as Any);
    await k1.stop().catch(() => undefined);
    const k2 = await startKernel({ dataDir: path.join(dir, 'data') });
    try {
      const c2 = await k2.client();
      const st = await until(async () => {
        const s = (await c2.worldState({ world_id: w })).state as Any;
        return s.agent_count === 1 ? s : undefined;
      }, 20_000);
      expect(st).toMatchObject({
        seed: 9,
        vfs_metrics: { file_count: 1 },
        chaos_metrics: { active_event_count: 1 },
      });
      const w2 = (await c2.worldCreate({ name: 'durable' } as Any)).world_id;
      expect(w2).not.toBe(w);
    } finally {
      await k2.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
