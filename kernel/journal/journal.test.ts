/**
 * Journaled steps (docs/durable.md) on a real kernel: real sandboxed agents (testdata/journal_agent.py)
 * make THINK, HTTP and EXEC calls inside steps, a local OpenAI-compatible fake provider counts what
 * reaches it, and agents are restarted (RESTART, a crash, a kernel restart on the same data dir) to
 * show which calls are answered from the journal and which are made again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import { CloveClient, KernelError } from '../../sdk/typescript/client.js';
import { Op, type OpName } from '../../protocol/index.js';
import { FakeProvider } from '../syscalls/llm/fake-providers.js';

const AGENT = path.join(import.meta.dirname, 'testdata', 'journal_agent.py');

const fake = new FakeProvider('openai');
let providerUrl: string;
let tk: TestKernel;
let op: CloveClient;

/** Where a counting HTTP server listens, and what it saw. */
let web: http.Server;
let webPort = 0;
const webHits: string[] = [];

/** Writes `<dataDir>/llm.json` (0600) pointing THINK at the fake provider. */
function writeLlmConfig(dataDir: string): void {
  fs.mkdirSync(dataDir, { recursive: true });
  fs.writeFileSync(
    path.join(dataDir, 'llm.json'),
    JSON.stringify({
      default_provider: 'fake',
      providers: [
        {
          name: 'fake',
          kind: 'openai',
          base_url: providerUrl,
          api_key: 'sk-journal-test',
          default_model: 'm1',
        },
      ],
    }),
    { mode: 0o600 },
  );
}

/** An error reply as the object the kernel sent, or the reply. */
async function reply<R>(p: Promise<R>): Promise<Record<string, unknown>> {
  try {
    return (await p) as unknown as Record<string, unknown>;
  } catch (e) {
    if (e instanceof KernelError) return e.reply;
    throw e;
  }
}

/** One agent and the operator connection that drives it (its messages come back there only). */
class Driven {
  constructor(
    readonly name: string,
    readonly c: CloveClient,
    readonly id: number,
  ) {}

  /** Waits for the agent's `up` (after a start or a restart). */
  async up(): Promise<void> {
    const r = await this.c.recv({ max: 1, timeoutMs: 30_000 });
    expect(r.count, `${this.name} said up`).toBe(1);
    expect((r.messages[0].message as { type: string }).type).toBe('up');
  }

  /** The agent makes one syscall (on its main connection, or its second) and answers with the reply. */
  async call(name: OpName, payload: Record<string, unknown> = {}, second = false) {
    await this.c.send(this.name, { cmd: second ? 'call2' : 'call', op: Op[name], payload });
    const r = await this.c.recv({ max: 1, timeoutMs: 30_000 });
    expect(r.count, `${this.name} answered ${name}`).toBe(1);
    return (r.messages[0].message as { out: Record<string, unknown> }).out;
  }

  async cmd(cmd: Record<string, unknown>) {
    await this.c.send(this.name, cmd);
    const r = await this.c.recv({ max: 1, timeoutMs: 30_000 });
    expect(r.count).toBe(1);
    return (r.messages[0].message as { out: Record<string, unknown> }).out;
  }
}

async function spawn(k: TestKernel, name: string, extra: Record<string, unknown> = {}): Promise<Driven> {
  const c = await k.client();
  const me = (await c.hello()).agent_id;
  const r = await op.spawn({ name, script: AGENT, env: { REPORT_TO: String(me) }, ...extra });
  const d = new Driven(name, c, r.id);
  await d.up();
  return d;
}

const think = (prompt: string) => ({ prompt, max_tokens: 64 });

beforeAll(async () => {
  providerUrl = await fake.start();
  web = http.createServer((req, res) => {
    webHits.push(req.url ?? '');
    res.end(`hit ${webHits.length}`);
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  webPort = (web.address() as AddressInfo).port;
  const dir = tempDir('clvjr');
  writeLlmConfig(path.join(dir, 'data'));
  tk = await startKernel({ logLevel: 'silent', dataDir: path.join(dir, 'data') });
  op = await tk.client();
}, 60_000);

afterAll(async () => {
  await tk?.stop();
  await fake.close();
  await new Promise((r) => web.close(r));
});

describe('journaled steps', () => {
  it("answers a step's THINK calls from the journal after the agent restarts: no provider call, no quota", async () => {
    const a = await spawn(tk, 'jr-think');
    expect(await a.call('STEP_BEGIN', { key: 'sum:doc-1' })).toMatchObject({
      success: true,
      state: 'new',
      entries: 0,
      depth: 1,
    });
    const first = [await a.call('THINK', think('one')), await a.call('THINK', think('two'))];
    expect(first.map((r) => r.content)).toEqual(['echo:one', 'echo:two']);
    const seen = fake.seen.length;

    await op.restart('jr-think');
    await a.up();
    expect(await a.call('STEP_BEGIN', { key: 'sum:doc-1' })).toMatchObject({
      state: 'in_progress',
      entries: 2,
    });
    const again = [await a.call('THINK', think('one')), await a.call('THINK', think('two'))];
    expect(again).toEqual(first); // byte for byte: the same tokens, model, finish_reason
    expect(fake.seen.length).toBe(seen);
    const third = await a.call('THINK', think('three'));
    expect(third.content).toBe('echo:three');
    expect(fake.seen.length).toBe(seen + 1);
    expect(await a.call('STEP_END', {})).toMatchObject({
      success: true,
      key: 'sum:doc-1',
      state: 'completed',
      entries: 3,
      replayed: 2,
      live: 1,
    });
    // Counted once each: the two replayed calls were not charged again.
    const perms = await op.getPerms(a.id);
    expect(perms.permissions.llm.calls_made).toBe(3);
    const audit = await op.getAuditLog({ category: 'RESOURCE', agent_id: a.id, limit: 100 });
    const replayed = audit.entries.filter((e) => e.event_type === 'STEP_REPLAYED');
    expect(replayed.map((e) => (e.details as { position: number }).position)).toEqual([1, 2]);
    expect(replayed[0].details).toMatchObject({ syscall: 'THINK', key: 'sum:doc-1' });

    // A completed step opened again replays everything.
    expect(await a.call('STEP_BEGIN', { key: 'sum:doc-1' })).toMatchObject({
      state: 'completed',
      entries: 3,
    });
    for (const p of ['one', 'two', 'three']) await a.call('THINK', think(p));
    expect(fake.seen.length).toBe(seen + 1);
    expect(await a.call('STEP_END', {})).toMatchObject({ replayed: 3, live: 0, state: 'completed' });
    await op.kill('jr-think');
  }, 90_000);

  it("answers a step's THINK_STREAM from the journal after the agent restarts: the same pieces and reply, no provider call", async () => {
    const a = await spawn(tk, 'jr-stream');
    /** The agent streams a THINK to its end: its pieces' text and the final reply. */
    const streamAll = async (prompt: string) => {
      const opened = await a.call('THINK_STREAM', think(prompt));
      expect(opened).toMatchObject({ success: true });
      let text = '';
      for (let i = 0; i < 100; i++) {
        const n = await a.call('THINK_STREAM_NEXT', { stream_id: opened.stream_id, wait_ms: 5000 });
        for (const d of n.deltas as { content?: string }[]) text += d.content ?? '';
        if (n.done) return { text, result: n.result as Record<string, unknown> };
      }
      throw new Error('the stream never ended');
    };
    expect(await a.call('STEP_BEGIN', { key: 'stream:1' })).toMatchObject({ state: 'new' });
    const first = await streamAll('one');
    expect(first.text).toBe('echo:one');
    const seen = fake.seen.length;

    await op.restart('jr-stream');
    await a.up();
    expect(await a.call('STEP_BEGIN', { key: 'stream:1' })).toMatchObject({
      state: 'in_progress',
      entries: 1,
    });
    const again = await streamAll('one');
    expect(again).toEqual(first);
    expect(fake.seen.length, 'no provider call for the replayed stream').toBe(seen);
    // Past the journal's end the stream is live again.
    expect((await streamAll('two')).text).toBe('echo:two');
    expect(fake.seen.length).toBe(seen + 1);
    expect(await a.call('STEP_END', {})).toMatchObject({ entries: 2, replayed: 1, live: 1 });
    const perms = await op.getPerms(a.id);
    expect(perms.permissions.llm.calls_made, 'the replay was not charged').toBe(2);
    await op.kill('jr-stream');
  });

  it('refuses a call that differs from the journal (journal_diverged), or truncates there when asked', async () => {
    const a = await spawn(tk, 'jr-div');
    await a.call('STEP_BEGIN', { key: 'plan' });
    await a.call('THINK', think('alpha'));
    await a.call('THINK', think('beta'));
    await a.call('STEP_END', {});
    const seen = fake.seen.length;

    await a.call('STEP_BEGIN', { key: 'plan' });
    expect((await a.call('THINK', think('alpha'))).content).toBe('echo:alpha');
    const div = await a.call('THINK', think('gamma'));
    expect(div).toMatchObject({
      success: false,
      code: 'journal_diverged',
      key: 'plan',
      position: 2,
      journaled_op: 'THINK',
      op: 'THINK',
    });
    expect(fake.seen.length).toBe(seen);
    // The step stays at that position: the journal's call still replays.
    expect((await a.call('THINK', think('beta'))).content).toBe('echo:beta');
    expect(await a.call('EXEC', { command: 'true' })).toMatchObject({ success: true }); // past the end: live
    expect(await a.call('STEP_END', { complete: false })).toMatchObject({ state: 'in_progress', entries: 3 });

    expect(await a.call('STEP_BEGIN', { key: 'plan', on_divergence: 'truncate' })).toMatchObject({
      state: 'in_progress',
      entries: 3,
    });
    await a.call('THINK', think('alpha'));
    expect((await a.call('THINK', think('gamma'))).content).toBe('echo:gamma');
    expect(fake.seen.length).toBe(seen + 1);
    expect(await a.call('STEP_END', {})).toMatchObject({ entries: 2, replayed: 1, live: 1 });
    const status = await a.call('STEP_STATUS', { key: 'plan' });
    expect(status).toMatchObject({ success: true, steps: [{ key: 'plan', state: 'completed', entries: 2 }] });

    // fresh: forget and go live.
    expect(await a.call('STEP_BEGIN', { key: 'plan', fresh: true })).toMatchObject({
      state: 'new',
      entries: 0,
    });
    await a.call('THINK', think('alpha'));
    expect(fake.seen.length).toBe(seen + 2);
    await a.call('STEP_END', { clear: true });
    expect((await a.call('STEP_STATUS', { key: 'plan' })).steps).toEqual([]);
    await op.kill('jr-div');
  }, 90_000);

  it('does not run a journaled EXEC again (its side effect happens once), nor a journaled HTTP request', async () => {
    const a = await spawn(tk, 'jr-exec', {
      permissions: { network: [`127.0.0.1:${webPort}`], http_methods: ['GET'] },
    });
    const url = `http://127.0.0.1:${webPort}/report`;
    const append = { command: 'echo ran >> side-effect.txt; wc -l < side-effect.txt' };
    for (let run = 0; run < 3; run++) {
      await a.call('STEP_BEGIN', { key: 'effects' });
      const e = await a.call('EXEC', append);
      expect(e).toMatchObject({ success: true, exit_code: 0 });
      expect(String(e.stdout).trim()).toBe('1');
      const h = await a.call('HTTP', { url });
      expect(h).toMatchObject({ success: true, status_code: 200, body: 'hit 1' });
      await a.call('STEP_END', {});
      if (run === 1) {
        await op.restart('jr-exec');
        await a.up();
      }
    }
    expect(webHits.filter((u) => u === '/report')).toHaveLength(1);
    const cat = await a.call('EXEC', { command: 'cat side-effect.txt' });
    expect(cat.stdout).toBe('ran\n');
    await op.kill('jr-exec');
  }, 90_000);

  it("keeps an agent's journal its own: another agent can neither read, clear nor replay it", async () => {
    const a = await spawn(tk, 'jr-owner');
    const b = await spawn(tk, 'jr-other');
    await a.call('STEP_BEGIN', { key: 'secret' });
    await a.call('THINK', think('the secret plan'));
    await a.call('STEP_END', {});
    const seen = fake.seen.length;

    for (const req of [{ name: 'jr-owner' }, { agent_id: a.id }]) {
      expect(await b.call('STEP_STATUS', req)).toMatchObject({ success: false, code: 'permission_denied' });
      expect(await b.call('STEP_CLEAR', req)).toMatchObject({ success: false, code: 'permission_denied' });
    }
    // The same key is another journal for b: its call goes to the provider.
    expect(await b.call('STEP_BEGIN', { key: 'secret' })).toMatchObject({ state: 'new', entries: 0 });
    expect((await b.call('THINK', think('the secret plan'))).content).toBe('echo:the secret plan');
    expect(fake.seen.length).toBe(seen + 1);
    await b.call('STEP_END', {});
    const denied = await op.getAuditLog({ category: 'SECURITY', agent_id: b.id, limit: 100 });
    expect(
      denied.entries.filter((e) => e.event_type === 'PERMISSION_DENIED').map((e) => e.details.syscall),
    ).toEqual(['STEP_STATUS', 'STEP_CLEAR', 'STEP_STATUS', 'STEP_CLEAR']);

    // An agent may name itself; an operator may read and clear anyone's (audited).
    expect(await a.call('STEP_STATUS', { name: 'jr-owner' })).toMatchObject({
      success: true,
      owner: 'jr-owner#1',
    });
    const st = await op.stepStatus({ name: 'jr-owner' });
    expect(st).toMatchObject({ owner: 'jr-owner#1', entries: 1, limit: 64 * 1024 * 1024 });
    expect(st.steps).toEqual([expect.objectContaining({ key: 'secret', state: 'completed', open: false })]);
    expect(await op.stepClear({ name: 'jr-owner', key: 'secret' })).toMatchObject({ cleared: 1, entries: 1 });
    const sec = await op.getAuditLog({ category: 'SECURITY', limit: 1000 });
    expect(sec.entries.find((e) => e.event_type === 'JOURNAL_CLEARED')?.details).toMatchObject({
      owner: 'jr-owner#1',
      key: 'secret',
    });
    await op.kill('jr-owner');
    await op.kill('jr-other');
  }, 90_000);

  it('holds steps to their connection: nesting, one key at a time, async refused, closed with the connection', async () => {
    const a = await spawn(tk, 'jr-rules');
    expect(await a.call('STEP_END', {})).toMatchObject({ code: 'invalid_state' });
    await a.call('STEP_BEGIN', { key: 'outer' });
    expect(await a.call('STEP_BEGIN', { key: 'outer' })).toMatchObject({ code: 'invalid_state' });
    expect(await a.call('STEP_BEGIN', { key: 'outer' }, true)).toMatchObject({ code: 'invalid_state' });
    expect(await a.call('STEP_BEGIN', { key: 'inner' })).toMatchObject({ depth: 2 });
    expect(await a.call('STEP_END', { key: 'outer' })).toMatchObject({ code: 'invalid_state' });
    expect(await a.call('THINK', { prompt: 'later', async: true })).toMatchObject({
      code: 'invalid_request',
    });
    await a.call('THINK', think('in inner'));
    expect(await a.call('STEP_END', { key: 'inner' })).toMatchObject({ entries: 1, live: 1 });
    expect(await a.call('STEP_END', { key: 'outer' })).toMatchObject({ entries: 0 });
    // Bad keys and fields are refused by the contract.
    expect(await a.call('STEP_BEGIN', { key: '@run' })).toMatchObject({ code: 'invalid_request' });
    expect(await a.call('STEP_BEGIN', { key: '' })).toMatchObject({ code: 'invalid_request' });
    expect(await a.call('STEP_BEGIN', { key: 'k', on_divergance: 'x' })).toMatchObject({
      code: 'invalid_request',
    });

    // A step open on a connection that closes is closed (left in progress): it can be opened again.
    await a.call('STEP_BEGIN', { key: 'conn2' }, true);
    await a.call('THINK', think('on conn2'), true);
    await a.cmd({ cmd: 'close2' });
    await until(
      async () => (await op.stepStatus({ name: 'jr-rules', key: 'conn2' })).steps[0]?.open === false,
    );
    expect(await a.call('STEP_BEGIN', { key: 'conn2' })).toMatchObject({ state: 'in_progress', entries: 1 });
    await a.call('STEP_END', {});
    await op.kill('jr-rules');
  }, 90_000);

  it('caps the journal at the journal_bytes budget (quota_exceeded, nothing done)', async () => {
    const a = await spawn(tk, 'jr-budget', { budgets: { journal_bytes: 700 } });
    await a.call('STEP_BEGIN', { key: 'big' });
    const seen = fake.seen.length;
    expect(await a.call('THINK', think('fits'))).toMatchObject({ success: true });
    const st = await a.call('STEP_STATUS', {});
    expect(st).toMatchObject({ limit: 700 });
    let over: Record<string, unknown> = {};
    for (let i = 0; i < 5 && over.success !== false; i++) over = await a.call('THINK', think(`more ${i}`));
    expect(over).toMatchObject({
      success: false,
      code: 'quota_exceeded',
      budget: 'journal_bytes',
      limit: 700,
    });
    const made = fake.seen.length - seen;
    const again = await a.call('THINK', think('still over'));
    expect(again).toMatchObject({ code: 'quota_exceeded' });
    expect(fake.seen.length - seen).toBe(made); // refused before the provider
    const res = await op.getAuditLog({ category: 'RESOURCE', agent_id: a.id, limit: 100 });
    expect(res.entries.some((e) => e.event_type === 'QUOTA_EXCEEDED')).toBe(true);
    await a.call('STEP_END', { clear: true });
    await op.kill('jr-budget');
  }, 90_000);

  it('lets an operator journal under `operator` (EXEC on the host replays with its recorded reply)', async () => {
    const c = await tk.client();
    await c.step('op:host', async (b) => {
      expect(b.state).toBe('new');
    });
    const first = await c.step('op:echo', () => c.exec({ command: 'echo operator' }));
    const second = await c.step('op:echo', async (b) => {
      expect(b).toMatchObject({ state: 'completed', entries: 1 });
      return c.exec({ command: 'echo operator' });
    });
    expect(second).toEqual(first);
    expect((await c.stepStatus({ key: 'op:echo' })).owner).toBe('operator');
    // A step whose function throws is left in progress.
    await expect(
      c.step('op:fails', async () => {
        await c.exec({ command: 'echo once' });
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect((await c.stepStatus({ key: 'op:fails' })).steps[0]).toMatchObject({
      state: 'in_progress',
      entries: 1,
    });
    // The connection lost inside a step: the SDK refuses to go on unjournaled on a new one.
    const sock = () => (c as unknown as { sock: { destroy(): void } | null }).sock;
    await expect(
      c.step('op:lost', async () => {
        sock()!.destroy();
        await until(() => sock() === null);
        return c.exec({ command: 'true' });
      }),
    ).rejects.toThrow(/closed inside journaled step/);
    expect((await c.exec({ command: 'true' })).success).toBe(true); // outside the step: reconnected
    expect(await c.stepClear({})).toMatchObject({ owner: 'operator' });
  }, 30_000);

  it('durable: every call of a durable agent is journaled in @run; replayed after a crash, forgotten after exit 0', async () => {
    const a = await spawn(tk, 'jr-durable', {
      durable: true,
      restart_policy: 'always',
      backoff_initial_ms: 0,
    });
    expect((await op.list()).find((x) => x.name === 'jr-durable')?.durable).toBe(true);
    const seen = fake.seen.length;
    const r1 = await a.call('THINK', think('durable one'));
    expect(fake.seen.length).toBe(seen + 1);
    await a.cmd({ cmd: 'exit', code: 3 }); // a crash
    await a.up();
    expect(await a.call('THINK', think('durable one'))).toEqual(r1);
    expect(fake.seen.length).toBe(seen + 1);
    const st = await a.call('STEP_STATUS', { key: '@run' });
    expect(st.steps).toEqual([expect.objectContaining({ key: '@run', entries: 1, open: true, position: 1 })]);
    // An explicit step inside takes its own calls.
    await a.call('STEP_BEGIN', { key: 'inside' });
    await a.call('THINK', think('inside'));
    await a.call('STEP_END', {});
    expect((await a.call('STEP_STATUS', { key: '@run' })).steps).toEqual([
      expect.objectContaining({ entries: 1, position: 1 }),
    ]);
    // It ends on its own with 0: the run is done with; the next process goes live.
    await a.cmd({ cmd: 'exit', code: 0 });
    await a.up();
    await a.call('THINK', think('durable one'));
    expect(fake.seen.length).toBe(seen + 3);
    await op.kill('jr-durable');
  }, 90_000);

  it("drops an agent's journal with its identity", async () => {
    const a = await spawn(tk, 'jr-gone');
    await a.call('STEP_BEGIN', { key: 'k' });
    await a.call('EXEC', { command: 'true' });
    await a.call('STEP_END', {});
    const db = new Database(path.join(tk.dataDir, 'state.db'), { readonly: true });
    const count = () =>
      (
        db.prepare("SELECT count(*) AS n FROM journal_entries WHERE owner LIKE 'jr-gone#%'").get() as {
          n: number;
        }
      ).n;
    try {
      expect(count()).toBe(1);
      await op.kill('jr-gone', { wait: true });
      await until(() => count() === 0, 10_000, 'the journal of the ended identity to go');
      expect(await reply(op.stepStatus({ name: 'jr-gone' }))).toMatchObject({ code: 'not_found' });
    } finally {
      db.close();
    }
  }, 60_000);
});

describe('a journal outlives the kernel', () => {
  it('a durable agent restored by a kernel started again on the same data dir replays its run', async () => {
    const dataDir = path.join(tempDir('clvjk'), 'data');
    writeLlmConfig(dataDir);
    const k1 = await startKernel({ logLevel: 'silent', dataDir });
    const o1 = await k1.client();
    const c1 = await k1.client();
    await o1.spawn({
      name: 'jr-kernel',
      script: AGENT,
      env: { REPORT_TO: String((await c1.hello()).agent_id) },
      durable: true,
      restart_policy: 'on-failure',
    });
    const a1 = new Driven('jr-kernel', c1, 0);
    await a1.up();
    const first = await a1.call('THINK', think('across kernels'));
    const seen = fake.seen.length;
    await k1.kernel.close(); // SIGTERM to the agent: not an end of its own, its run stays
    fs.rmSync(k1.dir, { recursive: true, force: true });

    const k2 = await startKernel({ logLevel: 'silent', dataDir });
    try {
      const c2 = await k2.client();
      const restored = await until(async () => (await c2.list()).find((x) => x.name === 'jr-kernel'));
      expect(restored.durable).toBe(true);
      // Its REPORT_TO is an id of the old kernel (maybe c2's now: its `up` is skipped): driven by name.
      await c2.send('jr-kernel', { cmd: 'call', op: Op.THINK, payload: think('across kernels') });
      const answer = await until(async () => {
        const r = await c2.recv({ max: 1, timeoutMs: 30_000 });
        const m = r.messages[0]?.message as { type: string; out: unknown } | undefined;
        return m?.type === 'answer' ? m : undefined;
      }, 60_000);
      expect(answer.out).toEqual(first);
      expect(fake.seen.length).toBe(seen);
      await c2.kill('jr-kernel');
    } finally {
      await k2.stop();
      fs.rmSync(path.dirname(dataDir), { recursive: true, force: true });
    }
  }, 120_000);
});
