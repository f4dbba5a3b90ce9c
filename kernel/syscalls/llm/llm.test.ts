/**
 * THINK and LLM_REPORT against a real kernel, with local fake providers of each kind (fake-providers.ts)
 * configured the way an operator does it: a 0600 JSON file named by CLOVE_LLM_PROVIDERS.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../../harness/kernel.js';
import { CloveClient, KernelError } from '../../../sdk/typescript/client.js';
import { encodeFrame, FrameDecoder, Op } from '../../../protocol/index.js';
import { FakeProvider, USAGE, type FakeKind } from './fake-providers.js';
import { loadConfig, PROVIDERS_ENV } from './config.js';

const AGENT = path.join(import.meta.dirname, 'testdata', 'think_agent.py');
const KEY_ENV = 'CLOVE_TEST_LLM_KEY';
const ENV_KEY = 'sk-env-0123456789-abcdefSECRET';
const KEYS = {
  plain: 'sk-plain-literal-key-123',
  anthropic: 'sk-ant-secret-456456',
  gemini: 'gm-secret-789789789',
};

const fakes: Record<FakeKind, FakeProvider> = {
  openai: new FakeProvider('openai'),
  anthropic: new FakeProvider('anthropic'),
  gemini: new FakeProvider('gemini'),
};
let tk: TestKernel;
let op: CloveClient;
let confDir: string;
const savedEnv = { [PROVIDERS_ENV]: process.env[PROVIDERS_ENV], [KEY_ENV]: process.env[KEY_ENV] };

/** A reply, success or error, as the object the kernel sent. */
async function think(c: CloveClient, req: Record<string, unknown>): Promise<Record<string, unknown>> {
  try {
    return (await c.think(req as never)) as unknown as Record<string, unknown>;
  } catch (e) {
    if (e instanceof KernelError) return e.reply;
    throw e;
  }
}

async function report(c: CloveClient, tokens: number): Promise<Record<string, unknown>> {
  try {
    return (await c.llmReport({ tokens })) as unknown as Record<string, unknown>;
  } catch (e) {
    if (e instanceof KernelError) return e.reply;
    throw e;
  }
}

/** A fresh operator connection (its own principal, so its own rights, quota and queue). */
async function client(): Promise<CloveClient> {
  return tk.client();
}

async function spawnAgent(name: string): Promise<number> {
  const me = (await op.hello()).agent_id;
  const r = await op.spawn({ name, script: AGENT, env: { REPORT_TO: String(me) } });
  const up = await op.recv({ max: 1, timeoutMs: 15_000 });
  expect(up.count).toBe(1);
  expect((up.messages[0].message as { type: string }).type).toBe('up');
  return r.id;
}

async function ask(agent: string, cmd: Record<string, unknown>, timeoutMs = 30_000) {
  await op.send(agent, cmd);
  const r = await op.recv({ max: 1, timeoutMs });
  expect(r.count).toBe(1);
  return (r.messages[0].message as { out: Record<string, unknown> }).out;
}

/** One THINK on a raw connection of its own; returns the socket (to close it) and its first reply. */
async function rawThink(req: Record<string, unknown>) {
  const s = net.connect(tk.socketPath);
  await new Promise((r) => s.once('connect', r));
  const d = new FrameDecoder();
  s.on('error', () => {});
  const reply = new Promise<Record<string, unknown>>((resolve) =>
    s.on('data', (chunk) => {
      const f = d.push(chunk).frames[0];
      if (f) resolve(JSON.parse(f.payload.toString()) as Record<string, unknown>);
    }),
  );
  s.write(encodeFrame(0, Op.THINK, req));
  return { socket: s, reply };
}

/** A local port nothing listens on. */
async function closedPort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  const url = {
    openai: await fakes.openai.start(),
    anthropic: await fakes.anthropic.start(),
    gemini: await fakes.gemini.start(),
  };
  confDir = tempDir('clvllm');
  const file = path.join(confDir, 'providers.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      default_provider: 'oa',
      max_concurrency: 4,
      max_queue_per_agent: 16,
      providers: [
        {
          name: 'oa',
          kind: 'openai',
          base_url: url.openai,
          api_key_env: KEY_ENV,
          default_model: 'gpt-test',
          models: ['gpt-*'],
        },
        {
          name: 'oa-plain',
          kind: 'openai',
          base_url: url.openai,
          api_key: KEYS.plain,
          default_model: 'plain-model',
          stream: false,
        },
        {
          name: 'an',
          kind: 'anthropic',
          base_url: url.anthropic,
          api_key: KEYS.anthropic,
          default_model: 'claude-test',
          models: ['claude-*'],
        },
        {
          name: 'an-plain',
          kind: 'anthropic',
          base_url: url.anthropic,
          api_key: KEYS.anthropic,
          default_model: 'claude-plain',
          stream: false,
        },
        {
          name: 'gm',
          kind: 'gemini',
          base_url: url.gemini,
          api_key: KEYS.gemini,
          default_model: 'gemini-test',
          models: ['gemini-*'],
        },
        {
          name: 'gm-plain',
          kind: 'gemini',
          base_url: url.gemini,
          api_key: KEYS.gemini,
          default_model: 'gemini-plain',
          stream: false,
        },
        {
          name: 'slow',
          kind: 'openai',
          base_url: url.openai,
          api_key_env: KEY_ENV,
          default_model: 'slow-model',
          max_concurrency: 1,
        },
        {
          name: 'flaky',
          kind: 'openai',
          base_url: url.openai,
          api_key_env: KEY_ENV,
          default_model: 'flaky-model',
          timeout_ms: 500,
        },
        {
          name: 'dead',
          kind: 'openai',
          base_url: `http://127.0.0.1:${await closedPort()}/v1`,
          api_key_env: KEY_ENV,
          default_model: 'x',
        },
      ],
    }),
    { mode: 0o600 },
  );
  // startKernel runs in this process: the family reads the configuration (and the key's variable) while
  // the kernel starts. The key stays in this process's environment, so that a leak into agents shows.
  process.env[PROVIDERS_ENV] = file;
  process.env[KEY_ENV] = ENV_KEY;
  try {
    tk = await startKernel({ logLevel: 'silent' });
  } finally {
    delete process.env[PROVIDERS_ENV];
    if (savedEnv[PROVIDERS_ENV] !== undefined) process.env[PROVIDERS_ENV] = savedEnv[PROVIDERS_ENV];
  }
  op = await tk.client();
});

afterAll(async () => {
  await tk?.stop();
  if (savedEnv[KEY_ENV] === undefined) delete process.env[KEY_ENV];
  else process.env[KEY_ENV] = savedEnv[KEY_ENV];
  for (const f of Object.values(fakes)) await f.close();
  if (confDir) fs.rmSync(confDir, { recursive: true, force: true });
});

describe('THINK with each provider kind', () => {
  const cases: [string, FakeKind, boolean, string][] = [
    ['oa', 'openai', true, 'fake-gpt'],
    ['oa-plain', 'openai', false, 'fake-gpt'],
    ['an', 'anthropic', true, 'fake-claude'],
    ['an-plain', 'anthropic', false, 'fake-claude'],
    ['gm', 'gemini', true, 'fake-gemini'],
    ['gm-plain', 'gemini', false, 'fake-gemini'],
  ];
  for (const [provider, kind, stream, model] of cases) {
    it(`${provider} (${kind}, ${stream ? 'streamed' : 'one body'}): content and the provider's exact token counts`, async () => {
      const marker = `hello ${provider} world`;
      const r = await think(op, {
        prompt: marker,
        provider,
        system_instruction: 'be brief',
        temperature: 0.5,
        max_tokens: 50,
      });
      expect(r).toEqual({
        success: true,
        content: `echo:${marker}`,
        tokens: USAGE[kind].total,
        input_tokens: USAGE[kind].input,
        output_tokens: USAGE[kind].output,
        provider,
        model,
        finish_reason: 'stop',
      });
      const seen = fakes[kind].matching(marker);
      expect(seen).toHaveLength(1);
      const { body, headers, path: p } = seen[0];
      expect(seen[0].stream).toBe(stream);
      if (kind === 'openai') {
        expect(p).toBe('/v1/chat/completions');
        expect(body).toMatchObject({ max_tokens: 50, temperature: 0.5 });
        expect((body.messages as unknown[])[0]).toEqual({ role: 'system', content: 'be brief' });
        if (stream) expect(body.stream_options).toEqual({ include_usage: true });
        expect(headers.authorization).toBe(`Bearer ${provider === 'oa' ? ENV_KEY : KEYS.plain}`);
      } else if (kind === 'anthropic') {
        expect(p).toBe('/v1/messages');
        expect(body).toMatchObject({
          model: provider === 'an' ? 'claude-test' : 'claude-plain',
          max_tokens: 50,
          system: 'be brief',
          stream,
        });
        expect(headers['x-api-key']).toBe(KEYS.anthropic);
        expect(headers['anthropic-version']).toBe('2023-06-01');
      } else {
        const m = provider === 'gm' ? 'gemini-test' : 'gemini-plain';
        expect(p).toBe(
          stream
            ? `/v1beta/models/${m}:streamGenerateContent?alt=sse`
            : `/v1beta/models/${m}:generateContent`,
        );
        expect(body).toMatchObject({
          systemInstruction: { parts: [{ text: 'be brief' }] },
          generationConfig: { maxOutputTokens: 50, temperature: 0.5 },
        });
        expect(headers['x-goog-api-key']).toBe(KEYS.gemini);
      }
    });
  }

  it('history, an image and tools reach each provider in its own shape; tool calls come back', async () => {
    const tools = [
      {
        name: 'get_weather',
        description: 'the weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string' } } },
      },
    ];
    for (const [provider, kind] of [
      ['oa', 'openai'],
      ['oa-plain', 'openai'],
      ['an', 'anthropic'],
      ['an-plain', 'anthropic'],
      ['gm', 'gemini'],
      ['gm-plain', 'gemini'],
    ] as const) {
      const marker = `tool please ${provider}`;
      const r = await think(op, {
        provider,
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'hello' },
        ],
        prompt: marker,
        image: { data: 'aGVsbG8=', mime_type: 'image/png' },
        tools,
        thinking_level: 'LOW',
        max_tokens: 2048,
      });
      expect(r, provider).toMatchObject({
        success: true,
        tool_calls: [{ name: 'get_weather', arguments: { city: 'Paris' } }],
        finish_reason: 'tool_calls',
        tokens: USAGE[kind].total,
      });
      const body = fakes[kind].matching(marker)[0].body;
      if (kind === 'openai') {
        const msgs = body.messages as { role: string; content: unknown }[];
        expect(msgs.map((m) => m.role)).toEqual(['user', 'assistant', 'user']);
        expect(msgs[2].content).toEqual([
          { type: 'text', text: marker },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,aGVsbG8=' } },
        ]);
        expect(body.tools).toEqual([{ type: 'function', function: tools[0] }]);
        expect(body.reasoning_effort).toBe('low');
      } else if (kind === 'anthropic') {
        const msgs = body.messages as { role: string; content: unknown }[];
        expect(msgs[2].content).toEqual([
          { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'aGVsbG8=' } },
          { type: 'text', text: marker },
        ]);
        expect(body.tools).toEqual([
          { name: 'get_weather', description: 'the weather in a city', input_schema: tools[0].parameters },
        ]);
        expect(body.thinking).toEqual({ type: 'enabled', budget_tokens: 1024 });
      } else {
        const contents = body.contents as { role: string; parts: unknown[] }[];
        expect(contents.map((c) => c.role)).toEqual(['user', 'model', 'user']);
        expect(contents[2].parts).toEqual([
          { inlineData: { mimeType: 'image/png', data: 'aGVsbG8=' } },
          { text: marker },
        ]);
        expect(body.tools).toEqual([{ functionDeclarations: tools }]);
        expect((body.generationConfig as Record<string, unknown>).thinkingConfig).toEqual({
          thinkingBudget: 1024,
        });
      }
    }
  });

  it('a model is routed to the provider serving it; a provider or model nobody has is not_found', async () => {
    const r = await think(op, { prompt: 'route me', model: 'claude-special' });
    expect(r).toMatchObject({ success: true, provider: 'an' });
    expect(fakes.anthropic.matching('route me')[0].body.model).toBe('claude-special');
    expect(await think(op, { prompt: 'x', provider: 'nope' })).toMatchObject({
      success: false,
      code: 'not_found',
    });
    expect(await think(op, { prompt: 'x', provider: 'an', model: 'gpt-4' })).toMatchObject({
      success: false,
      code: 'not_found',
    });
    // Not in any `models` list: the default provider (whose list does not have it either) refuses.
    expect(await think(op, { prompt: 'x', model: 'llama-3' })).toMatchObject({
      success: false,
      code: 'not_found',
    });
  });

  it('refuses requests it cannot serve, with clear codes', async () => {
    expect(await think(op, {})).toMatchObject({
      success: false,
      code: 'invalid_request',
      error: expect.stringMatching(/prompt or messages/),
    });
    expect(await think(op, { prompt: 'x', image: { data: '!!!' } })).toMatchObject({
      code: 'invalid_request',
    });
    expect(
      await think(op, { prompt: 'x', image: { data: 'aGVsbG8=', mime_type: 'text/html' } }),
    ).toMatchObject({ code: 'invalid_request' });
    expect(await think(op, { prompt: 'x', tools: [{ description: 'no name' }] })).toMatchObject({
      code: 'invalid_request',
    });
    // async: true is accepted at once (its result comes with ASYNC_RESULTS: kernel/syscalls/async).
    expect(await think(op, { prompt: 'x', async: true })).toMatchObject({
      success: true,
      async: true,
      status: 'accepted',
    });
    const denied = await client();
    await denied.setPerms(denied.agentId, { can_think: false });
    expect(await think(denied, { prompt: 'x' })).toMatchObject({ success: false, code: 'permission_denied' });
  });

  it('an answer far longer than max_tokens allows is cut, and the provider hung up on', async () => {
    const r = await think(op, { prompt: 'long story', max_tokens: 50 });
    expect(r).toMatchObject({ success: true, finish_reason: 'length', usage_estimated: true });
    expect((r.content as string).length).toBeLessThanOrEqual(50 * 32 + 1024);
    await until(
      () => fakes.openai.matching('long story')[0]?.aborted,
      5000,
      'the provider to see the hang-up',
    );
  });
});

describe('keys', () => {
  it('the key is sent to the provider, never in a reply or an agent environment', async () => {
    await spawnAgent('keyprobe');
    const ok = await ask('keyprobe', { cmd: 'think', payload: { prompt: 'agent hello', provider: 'oa' } });
    expect(ok).toMatchObject({ success: true, content: 'echo:agent hello', tokens: USAGE.openai.total });
    expect(fakes.openai.matching('agent hello')[0].headers.authorization).toBe(`Bearer ${ENV_KEY}`);
    // The fake's error body quotes the key it got: the kernel's reply must not.
    for (const provider of ['oa', 'oa-plain', 'an', 'gm']) {
      const bad = await ask('keyprobe', { cmd: 'think', payload: { prompt: 'status:500 leak?', provider } });
      expect(bad).toMatchObject({ success: false, code: 'upstream_failed', reason: 'http', status: 500 });
      expect(bad.error).toMatch(/HTTP 500: upstream exploded \(key was \[redacted\]\)/);
      const text = JSON.stringify(bad);
      for (const k of [ENV_KEY, ...Object.values(KEYS)]) expect(text).not.toContain(k);
    }
    const env = await ask('keyprobe', { cmd: 'env' });
    const all = JSON.stringify(env);
    for (const k of [ENV_KEY, ...Object.values(KEYS), KEY_ENV, PROVIDERS_ENV]) expect(all).not.toContain(k);
  });
});

interface FloodResult {
  conn: number;
  i: number;
  success: boolean;
  code: string | null;
  budget: string | null;
  content: string | null;
}

/** Has the agent flood THINKs (C connections × N pipelined frames) and returns what each got. */
async function flood(agent: string, conns: number, perConn: number, payload: Record<string, unknown>) {
  await op.send(agent, { cmd: 'flood', conns, per_conn: perConn, payload });
  return async () => {
    const r = await op.recv({ max: 1, timeoutMs: 60_000 });
    expect(r.count).toBe(1);
    return (r.messages[0].message as { out: { results: FloodResult[] } }).out.results;
  };
}

describe('fair scheduling', () => {
  it("a flood of 50 THINKs from one agent does not starve another's one", async () => {
    const SERVICE_MS = 150;
    await spawnAgent('flooder');
    const results = await flood('flooder', 10, 5, { provider: 'slow', prompt: `sleep:${SERVICE_MS}` });
    // The flood is under way: one call running, the other connections' calls waiting in the kernel.
    await until(() => fakes.openai.matching(' A-').length >= 1, 10_000, 'the flood to start');
    await sleep(SERVICE_MS);
    const b = await client();
    const sentAt = Date.now();
    const r = await think(b, { provider: 'slow', prompt: `sleep:${SERVICE_MS} B-alone` });
    const waited = Date.now() - sentAt;
    expect(r).toMatchObject({ success: true, content: `echo:sleep:${SERVICE_MS} B-alone` });
    const bStart = fakes.openai.matching('B-alone')[0].at;
    const aBetween = fakes.openai.matching(' A-').filter((x) => x.at >= sentAt && x.at < bStart).length;
    // B is served next: after at most the call running when it arrived (not after 50, nor 10).
    expect(aBetween).toBeLessThanOrEqual(1);
    expect(waited).toBeLessThan(SERVICE_MS * 2 + 300);
    const got = await results();
    expect(got).toHaveLength(50);
    expect(got.every((x) => x.success)).toBe(true);
    // Replies come in request order on each connection.
    for (const x of got) expect(x.content).toBe(`echo:sleep:${SERVICE_MS} A-${x.conn}-${x.i}`);
    // The provider's cap (1) held: the slow provider's calls never overlapped.
    const slow = fakes.openai.seen.filter((x) => x.body.model === 'slow-model').sort((x, y) => x.at - y.at);
    for (let k = 1; k < slow.length; k++) expect(slow[k].at).toBeGreaterThanOrEqual(slow[k - 1].doneAt!);
  }, 60_000);

  it("an agent's waiting THINKs are bounded (quota_exceeded, budget llm_queue)", async () => {
    await spawnAgent('queuer');
    // 24 connections at once against a provider that serves one at a time: 1 runs, 16 wait, the rest are refused.
    const results = await (await flood('queuer', 24, 1, { provider: 'slow', prompt: 'sleep:400 Q' }))();
    const refused = results.filter((x) => !x.success);
    expect(refused.length).toBeGreaterThan(0);
    for (const x of refused) expect(x).toMatchObject({ code: 'quota_exceeded', budget: 'llm_queue' });
    expect(results.filter((x) => x.success).length).toBeGreaterThanOrEqual(17);
  }, 60_000);
});

describe('quotas', () => {
  it('llm.max_calls refuses once reached, counting the calls made', async () => {
    const c = await client();
    await c.setPerms(c.agentId, { llm: { max_calls: 2 } });
    expect(await think(c, { prompt: 'one' })).toMatchObject({ success: true });
    expect(await think(c, { prompt: 'two' })).toMatchObject({ success: true });
    expect(await think(c, { prompt: 'three' })).toMatchObject({
      success: false,
      code: 'quota_exceeded',
      budget: 'llm.max_calls',
      used: 2,
      limit: 2,
    });
    expect(fakes.openai.seen.filter((x) => x.prompt === 'three')).toHaveLength(0);
    const perms = (await c.getPerms()).permissions!;
    expect(perms.llm).toMatchObject({ calls_made: 2, tokens_used: 2 * USAGE.openai.total });
  });

  it('llm.max_tokens refuses a call whose estimate would pass it, counting the real usage', async () => {
    const c = await client();
    await c.setPerms(c.agentId, { llm: { max_tokens: 60 } });
    // Each call is admitted with ~1 input token + max_tokens 10, and costs 18 as the provider counts.
    for (let i = 0; i < 3; i++)
      expect(await think(c, { prompt: 'hi', max_tokens: 10 })).toMatchObject({ success: true });
    expect(await think(c, { prompt: 'hi', max_tokens: 10 })).toMatchObject({
      success: false,
      code: 'quota_exceeded',
      budget: 'llm.max_tokens',
      used: 54,
      limit: 60,
    });
    // A max_tokens the quota cannot cover is refused before anything is sent.
    const d = await client();
    await d.setPerms(d.agentId, { llm: { max_tokens: 100 } });
    expect(await think(d, { prompt: 'too big' })).toMatchObject({
      code: 'quota_exceeded',
      budget: 'llm.max_tokens',
    });
    expect(fakes.openai.matching('too big')).toHaveLength(0);
    expect((await c.getPerms()).permissions!.llm).toMatchObject({ calls_made: 3, tokens_used: 54 });
  });

  it('LLM_REPORT counts self-reported tokens against the quota, marked as such', async () => {
    const c = await client();
    await c.setPerms(c.agentId, { llm: { max_tokens: 100 } });
    expect(await report(c, 40)).toEqual({
      success: true,
      tokens: 40,
      quota_exceeded: false,
      self_reported: true,
      tokens_used: 40,
      self_reported_tokens: 40,
    });
    expect(await think(c, { prompt: 'mixed', max_tokens: 10 })).toMatchObject({ success: true, tokens: 18 });
    expect(await report(c, 30)).toMatchObject({ success: true, tokens_used: 88, self_reported_tokens: 70 });
    // Over the quota: refused, and recorded anyway (the tokens were spent).
    expect(await report(c, 20)).toMatchObject({
      success: false,
      code: 'quota_exceeded',
      quota_exceeded: true,
      self_reported: true,
      tokens_used: 108,
      self_reported_tokens: 90,
    });
    expect((await c.getPerms()).permissions!.llm).toMatchObject({ calls_made: 4, tokens_used: 108 });
    expect(await think(c, { prompt: 'no more', max_tokens: 1 })).toMatchObject({ code: 'quota_exceeded' });
  });
});

describe('provider failures', () => {
  it('HTTP errors, malformed answers, timeouts and refused connections are clear errors; the kernel keeps serving', async () => {
    const expectFail = async (req: Record<string, unknown>, want: Record<string, unknown>, text: RegExp) => {
      const r = await think(op, req);
      expect(r, JSON.stringify(req)).toMatchObject({ success: false, ...want });
      expect(r.error).toMatch(text);
    };
    await expectFail(
      { prompt: 'status:500' },
      { code: 'upstream_failed', reason: 'http', status: 500, provider: 'oa' },
      /^LLM provider 'oa' failed: HTTP 500/,
    );
    await expectFail(
      { prompt: 'status:503', provider: 'an' },
      { code: 'upstream_failed', status: 503 },
      /HTTP 503/,
    );
    await expectFail({ prompt: 'status:400' }, { code: 'invalid_request', status: 400 }, /HTTP 400/);
    await expectFail(
      { prompt: 'status:404', provider: 'gm' },
      { code: 'not_found', status: 404 },
      /HTTP 404/,
    );
    await expectFail(
      { prompt: 'status:429' },
      { code: 'quota_exceeded', budget: 'provider_rate_limit' },
      /HTTP 429/,
    );
    await expectFail({ prompt: 'status:401' }, { code: 'upstream_failed', status: 401 }, /HTTP 401/);
    for (const provider of ['oa', 'oa-plain', 'an', 'gm'])
      await expectFail(
        { prompt: 'malformed', provider },
        { code: 'upstream_failed', reason: 'malformed' },
        /not JSON/,
      );
    const t0 = Date.now();
    await expectFail(
      { prompt: 'hang', provider: 'flaky' },
      { code: 'upstream_failed', reason: 'timeout' },
      /within 500 ms/,
    );
    expect(Date.now() - t0).toBeLessThan(3000);
    await expectFail(
      { prompt: 'x', provider: 'dead' },
      { code: 'upstream_failed', reason: 'network' },
      /unreachable: ECONNREFUSED/,
    );
    expect(await think(op, { prompt: 'still here' })).toMatchObject({
      success: true,
      content: 'echo:still here',
    });
    expect((await op.hello()).success).toBe(true);
  });
});

describe('cancellation', () => {
  it('a closed connection cancels its queued THINK (the provider never sees it) and its running one', async () => {
    const blocker = think(op, { provider: 'slow', prompt: 'sleep:600 blocker' });
    await until(() => fakes.openai.matching('blocker').length, 5000, 'the blocker to run');
    const queued = await rawThink({ provider: 'slow', prompt: 'cancel-me-queued' });
    await sleep(100);
    queued.socket.destroy();
    expect(await blocker).toMatchObject({ success: true });
    await sleep(300);
    expect(fakes.openai.matching('cancel-me-queued')).toHaveLength(0);
    // Running: the kernel hangs up on the provider.
    const running = await rawThink({ provider: 'slow', prompt: 'hang cancel-me-running' });
    await until(() => fakes.openai.matching('cancel-me-running').length, 5000, 'the call to run');
    running.socket.destroy();
    await until(
      () => fakes.openai.matching('cancel-me-running')[0].aborted,
      5000,
      'the provider to see the hang-up',
    );
    // The slot is free again.
    expect(await think(op, { provider: 'slow', prompt: 'after cancel' })).toMatchObject({ success: true });
  });
});

describe('configuration', () => {
  const write = (dir: string, name: string, content: unknown, mode = 0o600) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, typeof content === 'string' ? content : JSON.stringify(content), { mode });
    fs.chmodSync(f, mode);
    return f;
  };
  const good = {
    providers: [{ name: 'p', kind: 'openai', base_url: 'http://127.0.0.1:9/v1', default_model: 'm' }],
  };

  it('reads <data-dir>/llm.json when CLOVE_LLM_PROVIDERS is not set; none is no providers', () => {
    const dir = tempDir('clvcfg');
    try {
      expect(loadConfig(dir, {})).toMatchObject({ providers: [], source: null });
      expect(loadConfig(dir, {}).error).toBeUndefined();
      write(dir, 'llm.json', good);
      const c = loadConfig(dir, {});
      expect(c).toMatchObject({
        source: path.join(dir, 'llm.json'),
        defaultProvider: 'p',
        maxConcurrency: 4,
      });
      expect(c.providers[0]).toMatchObject({ name: 'p', kind: 'openai', maxTokens: 4096, stream: true });
      expect(c.error).toBeUndefined();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a file others may read or write, or that another uid owns, or that is invalid', () => {
    const dir = tempDir('clvcfg');
    try {
      const env = (f: string, extra: Record<string, string> = {}) => ({ [PROVIDERS_ENV]: f, ...extra });
      const open = write(dir, 'open.json', good, 0o644);
      expect(loadConfig(dir, env(open)).error).toMatch(/mode 644: group and others must have no access/);
      expect(loadConfig(dir, env(open)).providers).toEqual([]);
      if (process.getuid?.() === 0) {
        const theirs = write(dir, 'theirs.json', good);
        fs.chownSync(theirs, 4242, 4242);
        expect(loadConfig(dir, env(theirs)).error).toMatch(/owned by uid 4242/);
      }
      expect(loadConfig(dir, env(path.join(dir, 'missing.json'))).error).toMatch(/cannot be read/);
      expect(loadConfig(dir, env(write(dir, 'bad.json', '{nope'))).error).toMatch(/not JSON/);
      const noKey = write(dir, 'nokey.json', {
        providers: [{ ...good.providers[0], api_key_env: 'CLOVE_NO_SUCH_VAR' }],
      });
      expect(loadConfig(dir, env(noKey)).error).toMatch(/CLOVE_NO_SUCH_VAR, which is not set/);
      const withKey = loadConfig(dir, env(noKey, { CLOVE_NO_SUCH_VAR: 'k-123' }));
      expect(withKey.providers[0].apiKey).toBe('k-123');
      const badKind = write(dir, 'kind.json', { providers: [{ ...good.providers[0], kind: 'cohere' }] });
      expect(loadConfig(dir, env(badKind)).error).toMatch(/kind must be one of openai, anthropic, gemini/);
      const twice = write(dir, 'twice.json', { providers: [good.providers[0], good.providers[0]] });
      expect(loadConfig(dir, env(twice)).error).toMatch(/defined twice/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a kernel without providers answers THINK with not_found, saying how to configure one', async () => {
    const bare = await startKernel({ logLevel: 'silent' });
    try {
      const c = await bare.client();
      expect(await think(c, { prompt: 'x' })).toMatchObject({
        success: false,
        code: 'not_found',
        error: expect.stringMatching(/no LLM provider configured.*CLOVE_LLM_PROVIDERS/),
      });
      expect(await report(c, 5)).toMatchObject({ success: true, self_reported: true, tokens_used: 5 });
    } finally {
      await bare.stop();
    }
  });
});
