/**
 * Tool turns, tool_choice and streamed THINK (THINK_STREAM, _NEXT, _CANCEL) against a real kernel, with
 * local fake providers of each kind (fake-providers.ts) configured as an operator does it. The pieces as
 * each provider streams them are checked on `callProvider` itself, where no wait can merge them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../../harness/kernel.js';
import { CloveClient, KernelError } from '../../../sdk/typescript/client.js';
import { Op, type ThinkDelta } from '../../../protocol/index.js';
import { FakeProvider, USAGE, type FakeKind } from './fake-providers.js';
import { parseConfig, PROVIDERS_ENV } from './config.js';
import { callProvider, KERNEL_CALL_ID, type Delta, type LlmRequest } from './providers.js';

const AGENT = path.join(import.meta.dirname, 'testdata', 'think_agent.py');
const MAX_STREAMS = 3;

const fakes: Record<FakeKind, FakeProvider> = {
  openai: new FakeProvider('openai'),
  anthropic: new FakeProvider('anthropic'),
  gemini: new FakeProvider('gemini'),
};
const url = {} as Record<FakeKind, string>;
let tk: TestKernel;
let op: CloveClient;
let confDir: string;

const TOOLS = [
  {
    name: 'get_weather',
    description: 'the weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } } },
  },
  {
    name: 'get_time',
    description: 'the time in a city',
    parameters: { type: 'object', properties: { city: { type: 'string' } } },
  },
];

const PROVIDERS: [string, FakeKind, boolean][] = [
  ['oa', 'openai', true],
  ['oa-plain', 'openai', false],
  ['an', 'anthropic', true],
  ['an-plain', 'anthropic', false],
  ['gm', 'gemini', true],
  ['gm-plain', 'gemini', false],
];

type Any = Record<string, unknown>;

/** A reply, success or error, as the object the kernel sent. */
async function call(c: CloveClient, opName: keyof typeof Op, req: Any): Promise<Any> {
  try {
    return await c.call<Any>(Op[opName], req);
  } catch (e) {
    if (e instanceof KernelError) return e.reply;
    throw e;
  }
}

/** The provider requests (of one kind) whose body mentions `marker`, oldest first. */
function bodies(kind: FakeKind, marker: string): Any[] {
  return fakes[kind].seen.filter((r) => JSON.stringify(r.body).includes(marker)).map((r) => r.body);
}

/** The answer the pieces make: the text, and each call (id, name, arguments) by its index. */
function assemble(deltas: ThinkDelta[]): { content: string; calls: Any[] } {
  let content = '';
  const calls: { id?: string; name: string; arguments: string }[] = [];
  for (const d of deltas) {
    if (d.content !== undefined) content += d.content;
    if (d.tool_call) {
      const t = (calls[d.tool_call.index] ??= { name: '', arguments: '' });
      if (d.tool_call.id) t.id = d.tool_call.id;
      if (d.tool_call.name) t.name += d.tool_call.name;
      if (d.tool_call.arguments) t.arguments += d.tool_call.arguments;
    }
  }
  return { content, calls: calls.map((c) => ({ ...c, arguments: JSON.parse(c.arguments) as unknown })) };
}

/** Every NEXT of a stream until its end or its error: the pieces, and the last reply. */
async function drainRaw(c: CloveClient, streamId: number): Promise<{ deltas: ThinkDelta[]; last: Any }> {
  const deltas: ThinkDelta[] = [];
  for (;;) {
    const r = await call(c, 'THINK_STREAM_NEXT', { stream_id: streamId, wait_ms: 10_000 });
    if (r.success !== true) return { deltas, last: r };
    deltas.push(...(r.deltas as ThinkDelta[]));
    if (r.done) return { deltas, last: r };
  }
}

async function spawnAgent(name: string): Promise<number> {
  const me = (await op.hello()).agent_id;
  const r = await op.spawn({ name, script: AGENT, env: { REPORT_TO: String(me) } });
  const up = await op.recv({ max: 1, timeoutMs: 15_000 });
  expect(up.count).toBe(1);
  expect((up.messages[0].message as { type: string }).type).toBe('up');
  return r.id;
}

async function ask(agent: string, cmd: Any): Promise<Any> {
  await op.send(agent, cmd);
  const r = await op.recv({ max: 1, timeoutMs: 30_000 });
  expect(r.count).toBe(1);
  return (r.messages[0].message as { out: Any }).out;
}

function providersFile(dir: string, extra: Any = {}): string {
  const file = path.join(dir, `providers-${Math.random().toString(36).slice(2)}.json`);
  const p = (name: string, kind: FakeKind, stream: boolean, more: Any = {}) => ({
    name,
    kind,
    base_url: url[kind],
    api_key: 'k-test-123456',
    default_model: `${name}-model`,
    stream,
    ...more,
  });
  fs.writeFileSync(
    file,
    JSON.stringify({
      default_provider: 'oa',
      max_concurrency: 16,
      max_streams_per_agent: MAX_STREAMS,
      ...extra,
      providers: [
        ...PROVIDERS.map(([name, kind, stream]) => p(name, kind, stream)),
        p('slow', 'openai', true, { max_concurrency: 1 }),
      ],
    }),
    { mode: 0o600 },
  );
  return file;
}

/** A kernel in this process reading `file` as its providers (the family reads it while the kernel starts). */
async function kernelWith(file: string): Promise<TestKernel> {
  const saved = process.env[PROVIDERS_ENV];
  process.env[PROVIDERS_ENV] = file;
  try {
    return await startKernel({ logLevel: 'silent' });
  } finally {
    if (saved === undefined) delete process.env[PROVIDERS_ENV];
    else process.env[PROVIDERS_ENV] = saved;
  }
}

beforeAll(async () => {
  for (const k of Object.keys(fakes) as FakeKind[]) url[k] = await fakes[k].start();
  confDir = tempDir('clvstr');
  tk = await kernelWith(providersFile(confDir));
  op = await tk.client();
});

afterAll(async () => {
  await tk?.stop();
  for (const f of Object.values(fakes)) await f.close();
  if (confDir) fs.rmSync(confDir, { recursive: true, force: true });
});

describe('tool turns, for each provider kind', () => {
  for (const [provider, kind] of PROVIDERS) {
    it(`${provider}: two calls and their results round trip, in ${kind}'s own shape`, async () => {
      const marker = `two tools round ${provider}`;
      const first = await op.think({ provider, prompt: marker, tools: TOOLS, tool_choice: 'required' });
      expect(first).toMatchObject({
        success: true,
        finish_reason: 'tool_calls',
        tokens: USAGE[kind].total,
        tool_calls: [
          { name: 'get_weather', arguments: { city: 'Paris' } },
          { name: 'get_time', arguments: { city: 'Paris' } },
        ],
      });
      const calls = first.tool_calls!;
      // Every call has an id: the provider's, or (Gemini gives none) one the kernel made.
      const ids = calls.map((c) => c.id!);
      if (kind === 'gemini') for (const id of ids) expect(id.startsWith(KERNEL_CALL_ID)).toBe(true);
      else expect(ids).toEqual(kind === 'openai' ? ['call_1', 'call_2'] : ['toolu_1', 'toolu_2']);

      const second = await op.think({
        provider,
        tools: TOOLS,
        messages: [
          { role: 'user', content: marker },
          { role: 'assistant', content: first.content, tool_calls: calls },
          { role: 'tool', tool_call_id: ids[0], content: '{"temp":21}' },
          { role: 'tool', tool_call_id: ids[1], content: '14:00' },
        ],
      });
      expect(second).toMatchObject({ success: true, finish_reason: 'stop', tokens: USAGE[kind].total });
      expect(second.tool_calls).toBeUndefined();
      expect(second.content).toBe(
        kind === 'gemini'
          ? 'tool said: get_weather={"temp":21} | get_time={"output":"14:00"}'
          : `tool said: ${ids[0]}={"temp":21} | ${ids[1]}=14:00`,
      );

      const [askBody, answerBody] = bodies(kind, marker);
      if (kind === 'openai') {
        expect(askBody.tool_choice).toBe('required');
        expect(answerBody.messages).toEqual([
          { role: 'user', content: marker },
          {
            role: 'assistant',
            content: first.content,
            tool_calls: [
              {
                id: 'call_1',
                type: 'function',
                function: { name: 'get_weather', arguments: '{"city":"Paris"}' },
              },
              {
                id: 'call_2',
                type: 'function',
                function: { name: 'get_time', arguments: '{"city":"Paris"}' },
              },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', content: '{"temp":21}' },
          { role: 'tool', tool_call_id: 'call_2', content: '14:00' },
        ]);
      } else if (kind === 'anthropic') {
        expect(askBody.tool_choice).toEqual({ type: 'any' });
        // The results of one assistant turn's calls travel together, in the user message after it.
        expect(answerBody.messages).toEqual([
          { role: 'user', content: marker },
          {
            role: 'assistant',
            content: [
              { type: 'text', text: first.content },
              { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } },
              { type: 'tool_use', id: 'toolu_2', name: 'get_time', input: { city: 'Paris' } },
            ],
          },
          {
            role: 'user',
            content: [
              { type: 'tool_result', tool_use_id: 'toolu_1', content: '{"temp":21}' },
              { type: 'tool_result', tool_use_id: 'toolu_2', content: '14:00' },
            ],
          },
        ]);
      } else {
        expect(askBody.toolConfig).toEqual({ functionCallingConfig: { mode: 'ANY' } });
        // The ids the kernel made are not Gemini's: they are not sent; the tool's name is found from the call.
        expect(answerBody.contents).toEqual([
          { role: 'user', parts: [{ text: marker }] },
          {
            role: 'model',
            parts: [
              { text: first.content },
              { functionCall: { name: 'get_weather', args: { city: 'Paris' } } },
              { functionCall: { name: 'get_time', args: { city: 'Paris' } } },
            ],
          },
          {
            role: 'user',
            parts: [
              { functionResponse: { name: 'get_weather', response: { temp: 21 } } },
              { functionResponse: { name: 'get_time', response: { output: '14:00' } } },
            ],
          },
        ]);
      }
    });
  }

  it('tool_choice reaches each kind in its own words', async () => {
    const want: Record<FakeKind, unknown[]> = {
      openai: ['auto', 'none', 'required', { type: 'function', function: { name: 'get_time' } }],
      anthropic: [{ type: 'auto' }, { type: 'none' }, { type: 'any' }, { type: 'tool', name: 'get_time' }],
      gemini: [
        { functionCallingConfig: { mode: 'AUTO' } },
        { functionCallingConfig: { mode: 'NONE' } },
        { functionCallingConfig: { mode: 'ANY' } },
        { functionCallingConfig: { mode: 'ANY', allowedFunctionNames: ['get_time'] } },
      ],
    };
    const choices = ['auto', 'none', 'required', { name: 'get_time' }] as const;
    for (const [provider, kind] of [
      ['oa', 'openai'],
      ['an', 'anthropic'],
      ['gm', 'gemini'],
    ] as const)
      for (const [i, tool_choice] of choices.entries()) {
        const marker = `choice ${i} ${provider}`;
        expect(await op.think({ provider, prompt: marker, tools: TOOLS, tool_choice })).toMatchObject({
          success: true,
        });
        const body = bodies(kind, marker)[0];
        expect(kind === 'gemini' ? body.toolConfig : body.tool_choice, `${provider} ${i}`).toEqual(
          want[kind][i],
        );
      }
    // No tools: `auto` and `none` say nothing to the provider.
    expect(await op.think({ prompt: 'choice without tools', tool_choice: 'none' })).toMatchObject({
      success: true,
    });
    expect(bodies('openai', 'choice without tools')[0].tool_choice).toBeUndefined();
  });

  it('tool turns and choices that cannot be served are refused with clear errors', async () => {
    const bad = async (req: Any, text: RegExp) => {
      const r = await call(op, 'THINK', req);
      expect(r, JSON.stringify(req)).toMatchObject({ success: false, code: 'invalid_request' });
      expect(r.error).toMatch(text);
      const s = await call(op, 'THINK_STREAM', req);
      expect(s, `stream ${JSON.stringify(req)}`).toMatchObject({ success: false, code: 'invalid_request' });
    };
    await bad(
      { messages: [{ role: 'tool', content: 'x' }] },
      /messages\[0\]: a tool turn needs tool_call_id/,
    );
    await bad(
      {
        messages: [
          { role: 'user', content: 'x', tool_calls: [{ id: 'a', name: 'get_time', arguments: {} }] },
        ],
      },
      /only an assistant turn has tool_calls/,
    );
    await bad(
      {
        messages: [
          { role: 'user', content: 'x' },
          { role: 'assistant', content: '', tool_calls: [{ name: 'get_time', arguments: {} }] },
        ],
      },
      /tool_calls\[0\]: id is required/,
    );
    await bad({ prompt: 'x', tool_choice: 'required' }, /needs tools/);
    await bad({ prompt: 'x', tools: TOOLS, tool_choice: { name: 'nope' } }, /'nope', which is not in tools/);
    await bad({ prompt: 'x', tool_choice: 'sometimes' }, /tool_choice/);
    await bad({ messages: [{ role: 'robot', content: 'x' }] }, /role/);
    expect(await call(op, 'THINK_STREAM', { prompt: 'x', async: true })).toMatchObject({
      code: 'invalid_request',
      error: expect.stringMatching(/no async form/),
    });
  });
});

describe('the pieces as each provider streams them (callProvider)', () => {
  const req: LlmRequest = {
    model: 'm',
    turns: [{ role: 'user', content: 'two tools pieces' }],
    maxTokens: 100,
    tools: TOOLS,
  };
  const half = ['two tool', 's pieces']; // the fake's prompt cut in half
  const run = async (kind: FakeKind, stream: boolean) => {
    const p = parseConfig(
      { providers: [{ name: 'x', kind, base_url: url[kind], default_model: 'm', stream }] },
      null,
    ).providers[0];
    const deltas: Delta[] = [];
    const progress = { started: false, outputChars: 0 };
    const result = await callProvider(p, req, new AbortController().signal, 1 << 20, progress, (d) =>
      deltas.push(d),
    );
    return { deltas, result };
  };

  it('openai: text in pieces, each call in pieces (id and name first)', async () => {
    const { deltas, result } = await run('openai', true);
    expect(deltas).toEqual([
      { content: 'echo:' },
      { content: half[0] },
      { content: half[1] },
      { tool_call: { index: 0, id: 'call_1', name: 'get_weather', arguments: '{"ci' } },
      { tool_call: { index: 0, arguments: 'ty":"Paris"}' } },
      { tool_call: { index: 1, id: 'call_2', name: 'get_time', arguments: '{"ci' } },
      { tool_call: { index: 1, arguments: 'ty":"Paris"}' } },
    ]);
    expect(assemble(deltas as ThinkDelta[])).toEqual({ content: result.content, calls: result.toolCalls });
  });

  it('anthropic: text deltas, then each tool_use block and its input in pieces', async () => {
    const { deltas, result } = await run('anthropic', true);
    expect(deltas).toEqual([
      { content: 'echo:' },
      { content: half[0] },
      { content: half[1] },
      { tool_call: { index: 0, id: 'toolu_1', name: 'get_weather' } },
      { tool_call: { index: 0, arguments: '{"city":' } },
      { tool_call: { index: 0, arguments: '"Paris"}' } },
      { tool_call: { index: 1, id: 'toolu_2', name: 'get_time' } },
      { tool_call: { index: 1, arguments: '{"city":' } },
      { tool_call: { index: 1, arguments: '"Paris"}' } },
    ]);
    expect(assemble(deltas as ThinkDelta[])).toEqual({ content: result.content, calls: result.toolCalls });
  });

  it('gemini: text in pieces (thoughts left out), each call whole with the id it will have', async () => {
    const { deltas, result } = await run('gemini', true);
    const [a, b] = result.toolCalls.map((c) => c.id);
    expect(deltas).toEqual([
      { content: 'echo:' },
      { content: half[0] },
      { content: half[1] },
      { tool_call: { index: 0, id: a, name: 'get_weather', arguments: '{"city":"Paris"}' } },
      { tool_call: { index: 1, id: b, name: 'get_time', arguments: '{"city":"Paris"}' } },
    ]);
    expect(assemble(deltas as ThinkDelta[])).toEqual({ content: result.content, calls: result.toolCalls });
  });

  for (const kind of ['openai', 'anthropic', 'gemini'] as const)
    it(`${kind}, not streamed: the whole text in one piece, each call whole`, async () => {
      const { deltas, result } = await run(kind, false);
      expect(deltas).toEqual([
        { content: 'echo:two tools pieces' },
        ...result.toolCalls.map((c, index) => ({
          tool_call: { index, id: c.id, name: c.name, arguments: '{"city":"Paris"}' },
        })),
      ]);
    });
});

describe('THINK_STREAM', () => {
  for (const [provider, kind, streamed] of PROVIDERS)
    it(`${provider} (${streamed ? 'streamed' : 'one body'}): the pieces make THINK's answer`, async () => {
      const marker = `two tools stream ${provider}`;
      const s = op.thinkStream({ provider, prompt: marker, tools: TOOLS });
      const deltas: ThinkDelta[] = [];
      for await (const d of s) deltas.push(d);
      const result = await s.result;
      const think = await op.think({ provider, prompt: marker, tools: TOOLS });
      expect(result).toMatchObject({
        success: true,
        content: think.content,
        tokens: USAGE[kind].total,
        input_tokens: USAGE[kind].input,
        output_tokens: USAGE[kind].output,
        finish_reason: 'tool_calls',
        provider,
      });
      expect(assemble(deltas)).toEqual({ content: result.content, calls: result.tool_calls });
      expect(result.tool_calls!.map((c) => [c.name, c.arguments])).toEqual(
        think.tool_calls!.map((c) => [c.name, c.arguments]),
      );
      if (kind !== 'gemini') expect(result.tool_calls).toEqual(think.tool_calls);
      // The stream's call is the one THINK makes, streamed from the provider when it streams.
      const [streamedBody, thinkBody] = bodies(kind, marker);
      expect(streamedBody).toEqual(thinkBody);
      if (!streamed) expect(deltas.filter((d) => d.content !== undefined)).toHaveLength(1);
    });

  it('tokens are counted once, as THINK counts them; the quota admits a stream as it admits THINK', async () => {
    const c = await tk.client();
    const { stream_id: id } = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
      prompt: 'count me once',
    });
    const { deltas, last } = await drainRaw(c, id);
    expect(last).toMatchObject({ success: true, done: true, result: { tokens: USAGE.openai.total } });
    expect(assemble(deltas).content).toBe('echo:count me once');
    // The end was taken: the stream is gone, and asking again counts nothing.
    expect(await call(c, 'THINK_STREAM_NEXT', { stream_id: id })).toMatchObject({ code: 'not_found' });
    expect((await c.getPerms()).permissions!.llm).toMatchObject({
      calls_made: 1,
      tokens_used: USAGE.openai.total,
    });
    await c.setPerms(c.agentId, { llm: { max_calls: 1 } });
    expect(await call(c, 'THINK_STREAM', { prompt: 'one too many' })).toMatchObject({
      code: 'quota_exceeded',
      budget: 'llm.max_calls',
    });
    expect(fakes.openai.matching('one too many')).toHaveLength(0);
    const denied = await tk.client();
    await denied.setPerms(denied.agentId, { can_think: false });
    expect(await call(denied, 'THINK_STREAM', { prompt: 'x' })).toMatchObject({ code: 'permission_denied' });
  });

  it('cancel aborts the provider request (and what it spent is charged as estimated)', async () => {
    const c = await tk.client();
    const { stream_id: id } = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
      prompt: 'drip cancel-me-raw',
    });
    // Under way: a first piece came.
    for (;;) {
      const r = await c.thinkStreamNext(id, 10_000);
      expect(r.done).toBe(false);
      if (r.deltas.length) break;
    }
    expect(await c.thinkStreamCancel(id)).toEqual({ success: true, cancelled: true });
    await until(
      () => fakes.openai.matching('cancel-me-raw')[0]?.aborted,
      10_000,
      'the provider to see the hang-up',
    );
    expect(await call(c, 'THINK_STREAM_NEXT', { stream_id: id })).toMatchObject({ code: 'not_found' });
    expect(await call(c, 'THINK_STREAM_CANCEL', { stream_id: id })).toMatchObject({ code: 'not_found' });
    const llm = (await c.getPerms()).permissions!.llm;
    expect(llm.calls_made).toBe(1);
    expect(llm.tokens_used).toBeGreaterThan(0);

    // The SDK: leaving the loop early cancels the stream.
    const s = c.thinkStream({ prompt: 'drip cancel-me-sdk' });
    for await (const d of s) {
      expect(d.content).toBeDefined();
      break;
    }
    await until(
      () => fakes.openai.matching('cancel-me-sdk')[0]?.aborted,
      10_000,
      'the provider to see the SDK hang up',
    );
    await expect(s.result).rejects.toThrow(/cancelled/);
  });

  it('a call still waiting for the scheduler leaves its queue when cancelled: the provider never sees it', async () => {
    const c = await tk.client();
    const blocker = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
      provider: 'slow',
      prompt: 'hang queue-blocker',
    });
    await until(() => fakes.openai.matching('queue-blocker').length, 5000, 'the blocker to run');
    const queued = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
      provider: 'slow',
      prompt: 'queued-never-sent',
    });
    expect(await c.thinkStreamCancel(queued.stream_id)).toEqual({ success: true, cancelled: true });
    expect(await c.thinkStreamCancel(blocker.stream_id)).toEqual({ success: true, cancelled: true });
    await until(() => fakes.openai.matching('queue-blocker')[0].aborted, 5000, 'the blocker hung up');
    // The slot is free again, and the cancelled call never reached the provider.
    expect(await op.think({ provider: 'slow', prompt: 'after queue cancel' })).toMatchObject({
      success: true,
    });
    expect(fakes.openai.matching('queued-never-sent')).toHaveLength(0);
    const llm = (await c.getPerms()).permissions!.llm;
    expect(llm.calls_made).toBe(0); // neither provider call began answering: nothing was spent
  });

  it("a stream is its maker's only: another agent gets not_found (audited); an agent's streams end with it", async () => {
    const mine = await op.call<{ stream_id: number }>(Op.THINK_STREAM, { prompt: 'hang op-owned' });
    const agentId = await spawnAgent('peeker');
    for (const [opName, payload] of [
      [Op.THINK_STREAM_NEXT, { stream_id: mine.stream_id, wait_ms: 0 }],
      [Op.THINK_STREAM_CANCEL, { stream_id: mine.stream_id }],
    ] as const)
      expect(await ask('peeker', { cmd: 'call', op: opName, payload })).toMatchObject({
        success: false,
        code: 'not_found',
      });
    const refused = await until(
      async () => {
        const log = await op.getAuditLog({ category: 'SECURITY', agent_id: agentId });
        const e = log.entries.filter((x) => x.event_type === 'REQUEST_REFUSED');
        return e.length >= 2 ? e : null;
      },
      10_000,
      'the refusals in the audit log',
    );
    expect(refused.map((e) => e.details.syscall).sort()).toEqual([
      'THINK_STREAM_CANCEL',
      'THINK_STREAM_NEXT',
    ]);
    // Still the operator's, untouched.
    expect(await op.thinkStreamNext(mine.stream_id, 0)).toEqual({ success: true, deltas: [], done: false });
    expect(fakes.openai.matching('op-owned')[0].aborted).toBe(false);
    expect(await op.thinkStreamCancel(mine.stream_id)).toMatchObject({ cancelled: true });

    // The agent's own stream: the operator cannot read it either; it goes when the agent exits.
    const theirs = await ask('peeker', {
      cmd: 'call',
      op: Op.THINK_STREAM,
      payload: { prompt: 'hang agent-owned' },
    });
    expect(theirs).toMatchObject({ success: true, stream_id: expect.any(Number) });
    expect(await call(op, 'THINK_STREAM_NEXT', { stream_id: theirs.stream_id, wait_ms: 0 })).toMatchObject({
      code: 'not_found',
    });
    await until(() => fakes.openai.matching('agent-owned').length, 5000, 'the agent stream to run');
    await ask('peeker', { cmd: 'exit' });
    await until(
      () => fakes.openai.matching('agent-owned')[0].aborted,
      10_000,
      "the agent's call to be aborted when it exited",
    );
  }, 60_000);

  it(`at most ${MAX_STREAMS} streams per caller; a client's streams go with its connection`, async () => {
    const c = await tk.client();
    const ids: number[] = [];
    for (let i = 0; i < MAX_STREAMS; i++)
      ids.push(
        (await c.call<{ stream_id: number }>(Op.THINK_STREAM, { prompt: `hang bound-${i}` })).stream_id,
      );
    expect(await call(c, 'THINK_STREAM', { prompt: 'hang bound-over' })).toMatchObject({
      success: false,
      code: 'quota_exceeded',
      budget: 'llm_streams',
      used: MAX_STREAMS,
      limit: MAX_STREAMS,
    });
    expect(fakes.openai.matching('bound-over')).toHaveLength(0);
    // Another caller has its own.
    const other = await tk.client();
    const theirs = await other.call<{ stream_id: number }>(Op.THINK_STREAM, { prompt: 'hang bound-other' });
    await other.thinkStreamCancel(theirs.stream_id);
    // A stream that ends frees its place.
    await c.thinkStreamCancel(ids.pop()!);
    ids.push(
      (await c.call<{ stream_id: number }>(Op.THINK_STREAM, { prompt: 'hang bound-again' })).stream_id,
    );
    await until(() => fakes.openai.matching('bound-again').length, 5000, 'the new stream to run');
    c.close();
    await until(
      () => fakes.openai.seen.filter((r) => /bound-(\d|again)/.test(r.prompt)).every((r) => r.aborted),
      10_000,
      "the closed client's calls to be aborted",
    );
  });

  it('a provider failure mid-stream surfaces in NEXT, after the pieces that came before it', async () => {
    const c = await tk.client();
    for (const provider of ['oa', 'an', 'gm']) {
      const { stream_id: id } = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
        provider,
        prompt: `midfail ${provider}`,
      });
      const { deltas, last } = await drainRaw(c, id);
      expect(assemble(deltas).content, provider).toBe('half an answer');
      expect(last, provider).toMatchObject({
        success: false,
        code: 'upstream_failed',
        reason: 'http',
        provider,
      });
      expect(last.error).toMatch(/overloaded mid-stream/);
      expect(await call(c, 'THINK_STREAM_NEXT', { stream_id: id })).toMatchObject({ code: 'not_found' });
    }
    // Before any piece: THINK's error, as THINK gives it.
    const { stream_id: id } = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
      prompt: 'status:503 s',
    });
    expect((await drainRaw(c, id)).last).toMatchObject({ code: 'upstream_failed', status: 503 });
    // Each failed call that began answering is charged (as estimated), once.
    expect((await c.getPerms()).permissions!.llm.calls_made).toBe(3);
    // The SDK throws it to the loop, after the pieces.
    const s = c.thinkStream({ prompt: 'midfail sdk' });
    const got: ThinkDelta[] = [];
    await expect(
      (async () => {
        for await (const d of s) got.push(d);
      })(),
    ).rejects.toMatchObject({ code: 'upstream_failed' });
    expect(assemble(got).content).toBe('half an answer');
    await expect(s.result).rejects.toMatchObject({ code: 'upstream_failed' });
  });

  it('NEXT with wait_ms 0 answers at once; an unknown stream is not_found', async () => {
    const { stream_id: id } = await op.call<{ stream_id: number }>(Op.THINK_STREAM, { prompt: 'hang zero' });
    expect(await op.thinkStreamNext(id, 0)).toEqual({ success: true, deltas: [], done: false });
    await op.thinkStreamCancel(id);
    expect(await call(op, 'THINK_STREAM_NEXT', { stream_id: 999_999 })).toMatchObject({
      code: 'not_found',
      error: expect.stringMatching(/no THINK stream 999999/),
    });
  });

  it('the kernel keeps serving other connections while a NEXT waits', async () => {
    const c = await tk.client();
    const { stream_id: id } = await c.call<{ stream_id: number }>(Op.THINK_STREAM, { prompt: 'hang parked' });
    const parked = c.thinkStreamNext(id, 60_000);
    expect(await op.think({ prompt: 'meanwhile' })).toMatchObject({ content: 'echo:meanwhile' });
    // A cancel from the same identity on another path is impossible for a client (its identity is its
    // connection); closing the connection wakes the parked NEXT and drops the stream.
    c.close();
    await expect(parked).rejects.toThrow();
    await until(() => fakes.openai.matching('hang parked')[0]?.aborted, 10_000, 'the parked stream dropped');
  });
});

describe('idle streams', () => {
  it('a stream nobody asks for is dropped, its call aborted', async () => {
    const k = await kernelWith(providersFile(confDir, { stream_idle_ms: 300 }));
    try {
      const c = await k.client();
      const { stream_id: id } = await c.call<{ stream_id: number }>(Op.THINK_STREAM, {
        prompt: 'hang idle-me',
      });
      // A waiting NEXT is not idleness: the stream outlives the idle time while one waits.
      expect(await c.thinkStreamNext(id, 1000)).toEqual({ success: true, deltas: [], done: false });
      await until(() => fakes.openai.matching('idle-me')[0].aborted, 10_000, 'the idle stream to be dropped');
      expect(await call(c, 'THINK_STREAM_NEXT', { stream_id: id })).toMatchObject({ code: 'not_found' });
    } finally {
      await k.stop();
    }
  });
});
