/**
 * The LangGraph.js adapter against a real kernel whose LLM provider is a scripted OpenAI-compatible stub
 * (below): ChatClove's THINKs reach the stub and come back as LangChain messages with the kernel's token
 * counts, Clove tools really run in the kernel, CloveSaver round-trips checkpoints through the state
 * store, and a graph run as a real Clove agent and SIGKILLed mid-run resumes from its checkpoint.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { AIMessage, HumanMessage, SystemMessage, ToolMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { Annotation, END, START, StateGraph, emptyCheckpoint } from '@langchain/langgraph';
import { createReactAgent } from '@langchain/langgraph/prebuilt';
import { z } from 'zod';
import { REPO_ROOT, startKernel, tempDir, until, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../client.js';
import { ChatClove, CloveSaver, CloveToolError, cloveTools } from './langgraph.js';

// ---------------------------------------------------------------------------------------------------
// A scripted OpenAI-compatible provider: /v1/chat/completions, streamed (SSE) or not, usage 11 + 7.

interface StubMessage {
  role: string;
  content: unknown;
  tool_calls?: unknown;
  tool_call_id?: string;
}
interface StubRequest {
  body: Record<string, unknown>;
  messages: StubMessage[];
  stream: boolean;
  /** The kernel hung up before the answer was complete. */
  aborted: boolean;
}
interface StubAnswer {
  content?: string;
  tool_calls?: { id?: string; name: string; arguments: unknown }[];
  /** Streamed: the rest of the answer is sent once this settles, after the first piece. */
  gate?: Promise<void>;
}
const USAGE = { prompt_tokens: 11, completion_tokens: 7, total_tokens: 18 };

/** The text of a request's whole conversation (to find what the stub was told). */
const said = (r: StubRequest): string =>
  r.messages.map((m) => (typeof m.content === 'string' ? m.content : JSON.stringify(m.content))).join('\n');

class ProviderStub {
  readonly requests: StubRequest[] = [];
  responder: (r: StubRequest) => StubAnswer = () => ({ content: 'ok' });
  private server?: http.Server;
  private readonly sockets = new Set<Socket>();

  async start(): Promise<string> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/v1`;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((r) => this.server?.close(r));
  }

  /** Requests whose conversation contains `marker`. */
  matching(marker: string): StubRequest[] {
    return this.requests.filter((r) => said(r).includes(marker));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = JSON.parse(Buffer.concat(chunks).toString() || '{}') as Record<string, unknown>;
    const r: StubRequest = {
      body,
      messages: (body.messages ?? []) as StubMessage[],
      stream: body.stream === true,
      aborted: false,
    };
    this.requests.push(r);
    res.on('close', () => {
      if (!res.writableFinished) r.aborted = true;
    });
    const a = this.responder(r);
    const calls = (a.tool_calls ?? []).map((c, i) => ({
      id: c.id ?? `call_${this.requests.length}_${i}`,
      type: 'function',
      function: { name: c.name, arguments: JSON.stringify(c.arguments) },
    }));
    const finish = calls.length ? 'tool_calls' : 'stop';
    if (!r.stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          model: 'stub-model',
          choices: [
            {
              index: 0,
              message: {
                role: 'assistant',
                content: a.content ?? '',
                ...(calls.length ? { tool_calls: calls } : {}),
              },
              finish_reason: finish,
            },
          ],
          usage: USAGE,
        }),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const send = (o: Record<string, unknown>): boolean =>
      res.write(`data: ${JSON.stringify({ model: 'stub-model', ...o })}\n\n`);
    // The content a few characters at a time, each tool call in two pieces (its arguments cut in half).
    const pieces = (a.content ?? '').match(/.{1,4}/gs) ?? [];
    for (const [i, piece] of pieces.entries()) {
      send({ choices: [{ index: 0, delta: { content: piece } }] });
      if (i === 0 && a.gate) await a.gate;
    }
    calls.forEach((c, index) => {
      const args = c.function.arguments;
      const half = Math.ceil(args.length / 2);
      send({
        choices: [
          {
            index: 0,
            delta: {
              tool_calls: [
                {
                  index,
                  id: c.id,
                  type: 'function',
                  function: { name: c.function.name, arguments: args.slice(0, half) },
                },
              ],
            },
          },
        ],
      });
      send({
        choices: [
          { index: 0, delta: { tool_calls: [{ index, function: { arguments: args.slice(half) } }] } },
        ],
      });
    });
    send({ choices: [{ index: 0, delta: {}, finish_reason: finish }] });
    send({ choices: [], usage: USAGE });
    res.end('data: [DONE]\n\n');
  }
}

// ---------------------------------------------------------------------------------------------------

const AGENT = path.join(REPO_ROOT, 'sdk', 'typescript', 'integrations', 'testdata', 'langgraph_agent.mjs');
const DIST = path.join(REPO_ROOT, 'dist', 'sdk', 'typescript', 'integrations', 'langgraph.js');

const stub = new ProviderStub();
let tk: TestKernel;
let op: CloveClient;
let opId: number;
let dataRoot: string;

beforeAll(async () => {
  const url = await stub.start();
  dataRoot = tempDir('clvlg');
  const dataDir = path.join(dataRoot, 'data');
  fs.mkdirSync(dataDir, { mode: 0o755 });
  fs.writeFileSync(
    path.join(dataDir, 'llm.json'),
    JSON.stringify({
      providers: [{ name: 'stub', kind: 'openai', base_url: url, default_model: 'stub-model' }],
    }),
    { mode: 0o600 },
  );
  tk = await startKernel({ dataDir });
  op = await tk.client();
  opId = (await op.hello()).agent_id;
});

afterAll(async () => {
  await tk?.stop();
  await stub.close();
  fs.rmSync(dataRoot, { recursive: true, force: true });
});

/** The LLM counters the kernel keeps for a principal (its `llm` rights). */
async function llmUsage(
  c: CloveClient,
  agentId?: number,
): Promise<{ tokens_used: number; calls_made: number }> {
  const r = await c.getPerms(agentId);
  return (r.permissions as { llm: { tokens_used: number; calls_made: number } }).llm;
}

/** Reports from agents, in the order they came, taken from the operator's mailbox. */
const reports: Record<string, unknown>[] = [];

/**
 * Takes the agents' reports from the operator's mailbox into `reports` until `check` finds what it
 * looks for in them (or the deadline passes).
 */
async function awaitReports<T>(
  check: (all: Record<string, unknown>[]) => T | undefined,
  what: string,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = check(reports);
    if (found !== undefined) return found;
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no report ${what}; got ${JSON.stringify(reports).slice(-2000)}`);
    const r = await op.recv({ max: 10, timeoutMs: Math.min(left, 5000) });
    for (const m of r.messages) {
      const msg = m.message as Record<string, unknown>;
      if (msg.event === 'error') throw new Error(`the agent failed: ${String(msg.error)}`);
      reports.push(msg);
    }
  }
}

/** The first report matching `pred`. */
const report = (pred: (r: Record<string, unknown>) => boolean, what: string) =>
  awaitReports((all) => all.find(pred), what);

describe('ChatClove', () => {
  it('turns a conversation into a THINK and the reply into an AIMessage with the kernel’s token counts', async () => {
    const c = await tk.client();
    stub.responder = () => ({ content: 'the sky is blue' });
    const model = new ChatClove({ client: c, temperature: 0.5, maxTokens: 99 });
    const before = stub.requests.length;
    const reply = await model.invoke([new SystemMessage('be brief'), new HumanMessage('chat: what colour?')]);
    expect(reply.content).toBe('the sky is blue');
    expect(reply.usage_metadata).toEqual({ input_tokens: 11, output_tokens: 7, total_tokens: 18 });
    expect(reply.response_metadata).toMatchObject({
      model_name: 'stub-model',
      provider: 'stub',
      finish_reason: 'stop',
    });
    const seen = stub.requests.slice(before);
    expect(seen).toHaveLength(1);
    expect(seen[0].messages).toEqual([
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'chat: what colour?' },
    ]);
    expect(seen[0].body).toMatchObject({ model: 'stub-model', temperature: 0.5, max_tokens: 99 });
    // The kernel counted the provider's figures against this connection's own quota.
    expect(await llmUsage(c)).toMatchObject({ tokens_used: 18, calls_made: 1 });
  });

  it('bindTools sends the tools as THINK tools and gives back tool calls with their arguments', async () => {
    const weather = tool(async ({ city }) => `sunny in ${city}`, {
      name: 'get_weather',
      description: 'the weather of a city',
      schema: z.object({ city: z.string() }),
    });
    stub.responder = () => ({
      tool_calls: [{ id: 'call_w', name: 'get_weather', arguments: { city: 'Paris' } }],
    });
    const model = new ChatClove({ client: op }).bindTools([weather]);
    const before = stub.requests.length;
    const reply = await model.invoke([new HumanMessage('bind: weather?')]);
    expect(reply.tool_calls).toEqual([
      { id: 'call_w', name: 'get_weather', args: { city: 'Paris' }, type: 'tool_call' },
    ]);
    expect(reply.response_metadata.finish_reason).toBe('tool_calls');
    const tools = stub.requests[before].body.tools as { function: Record<string, unknown> }[];
    expect(tools).toHaveLength(1);
    expect(tools[0].function).toMatchObject({
      name: 'get_weather',
      description: 'the weather of a city',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    });
  });

  it('gives earlier tool calls and their results back to the model', async () => {
    stub.responder = () => ({ content: 'done' });
    const before = stub.requests.length;
    await new ChatClove({ client: op }).invoke([
      new HumanMessage('history: weather?'),
      new AIMessage({
        content: '',
        tool_calls: [{ id: 'call_9', name: 'get_weather', args: { city: 'Oslo' } }],
      }),
      new ToolMessage({ content: 'snow in Oslo', tool_call_id: 'call_9', name: 'get_weather' }),
    ]);
    // The provider got them in its own shape: the assistant's call, and the tool turn answering it.
    expect(stub.requests[before].messages).toEqual([
      { role: 'user', content: 'history: weather?' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'call_9', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_9', content: 'snow in Oslo' },
    ]);
  });

  it('passes tool_choice on: any is required, a name is that tool', async () => {
    const weather = {
      name: 'get_weather',
      description: 'weather',
      parameters: { type: 'object', properties: {} },
    };
    stub.responder = () => ({ tool_calls: [{ name: 'get_weather', arguments: {} }] });
    const before = stub.requests.length;
    await new ChatClove({ client: op }).bindTools([weather], { tool_choice: 'any' }).invoke('choice: 1');
    await new ChatClove({ client: op })
      .bindTools([weather], { tool_choice: 'get_weather' })
      .invoke('choice: 2');
    const [any, named] = stub.requests.slice(before);
    expect(any.body.tool_choice).toBe('required');
    expect(named.body.tool_choice).toEqual({ type: 'function', function: { name: 'get_weather' } });
  });

  it('streams the answer in pieces; together they are the whole message, with the kernel’s counts', async () => {
    // The provider sends its first piece and holds the rest until the test has that piece as a chunk.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    stub.responder = () => ({ content: 'the quick brown fox', gate });
    const before = stub.requests.length;
    const chunks = [];
    for await (const c of await new ChatClove({ client: op }).stream('stream: fox?')) {
      chunks.push(c);
      if (chunks.length === 1) release();
    }
    expect(stub.requests[before].stream).toBe(true);
    expect(chunks[0].content).toBe('the ');
    const text = chunks.filter((c) => c.content !== '');
    expect(text.length).toBeGreaterThan(1);
    expect(text.map((c) => c.content).join('')).toBe('the quick brown fox');
    const whole = chunks.reduce((a, b) => a.concat(b));
    expect(whole.content).toBe('the quick brown fox');
    expect(whole.usage_metadata).toMatchObject({ input_tokens: 11, output_tokens: 7, total_tokens: 18 });
    expect(whole.response_metadata).toMatchObject({ finish_reason: 'stop', model_name: 'stub-model' });
  });

  it('leaving a stream early cancels it in the kernel, which hangs up on the provider', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    stub.responder = () => ({ content: 'never finished, this one', gate });
    const before = stub.requests.length;
    for await (const c of await new ChatClove({ client: op }).stream('stream-cancel: go')) {
      expect(c.content).toBe('neve');
      break;
    }
    await until(() => stub.requests[before]?.aborted, 10_000, 'the provider call to be aborted');
    release();
  });

  it('streams tool calls: their pieces add up to the call, with its id and arguments', async () => {
    stub.responder = () => ({
      content: 'looking',
      tool_calls: [
        { id: 'call_a', name: 'get_weather', arguments: { city: 'Paris' } },
        { name: 'get_weather', arguments: { city: 'Rome' } },
      ],
    });
    const weather = {
      name: 'get_weather',
      description: 'weather',
      parameters: { type: 'object', properties: {} },
    };
    const chunks = [];
    for await (const c of await new ChatClove({ client: op }).bindTools([weather]).stream('stream-tools: 2'))
      chunks.push(c);
    expect(chunks.some((c) => c.tool_call_chunks?.length)).toBe(true);
    const whole = chunks.reduce((a, b) => a.concat(b));
    expect(whole.content).toBe('looking');
    expect(whole.tool_calls).toMatchObject([
      { id: 'call_a', name: 'get_weather', args: { city: 'Paris' } },
      { name: 'get_weather', args: { city: 'Rome' } },
    ]);
    // The stub gave the second call an id too (call_<n>_1); every call has one, as THINK's reply.
    expect(whole.tool_calls?.[1].id).toMatch(/^call_\d+_1$/);
    expect(whole.response_metadata.finish_reason).toBe('tool_calls');
  });

  it('tool arguments that are not a JSON object are an invalid tool call', async () => {
    stub.responder = () => ({
      tool_calls: [{ id: 'call_bad', name: 'get_weather', arguments: 'Paris, please' }],
    });
    const reply = await new ChatClove({ client: op }).invoke('bad-args: weather?');
    expect(reply.tool_calls).toEqual([]);
    expect(reply.invalid_tool_calls).toMatchObject([
      { id: 'call_bad', name: 'get_weather', args: 'Paris, please' },
    ]);
  });

  it('refuses stop sequences, which THINK does not have', async () => {
    const before = stub.requests.length;
    await expect(new ChatClove({ client: op }).invoke('stop: hi', { stop: ['\n'] })).rejects.toThrow(
      /no stop sequences/,
    );
    expect(stub.requests.length).toBe(before);
  });

  it('a refusal of the kernel is the call’s error', async () => {
    await expect(new ChatClove({ client: op, provider: 'nope' }).invoke('refuse: hi')).rejects.toThrow(
      /no LLM provider named 'nope'/,
    );
  });
});

describe('Clove tools', () => {
  it('a ReAct agent calls a Clove tool that runs in the kernel; the model sees its result', async () => {
    const c = await tk.client();
    stub.responder = (r) =>
      r.messages.some((m) => m.role === 'tool')
        ? { content: 'stored it' }
        : {
            tool_calls: [
              {
                id: 'call_s',
                name: 'clove_store',
                arguments: { key: 'lg/answer', value: { n: 42 }, scope: 'global' },
              },
            ],
          };
    const before = stub.requests.length;
    const agent = createReactAgent({
      llm: new ChatClove({ client: c }),
      tools: cloveTools({ client: c }),
      checkpointSaver: new CloveSaver({ client: c, prefix: 'lgreact' }),
    });
    const thread = { configurable: { thread_id: 'react-1' } };
    const out = await agent.invoke(
      { messages: [{ role: 'user', content: 'react-local: store 42' }] },
      thread,
    );
    // It ran in the kernel: another connection reads what the tool stored.
    expect((await op.fetch('lg/answer', 'global')).value).toEqual({ n: 42 });
    expect(out.messages.map((m) => m.type)).toEqual(['human', 'ai', 'tool', 'ai']);
    expect(out.messages[3].content).toBe('stored it');
    const seen = stub.requests.slice(before);
    expect(seen).toHaveLength(2);
    // All eight tools were offered; the second THINK carried the tool's result.
    expect((seen[0].body.tools as { function: { name: string } }[]).map((t) => t.function.name)).toEqual(
      ['send', 'recv', 'store', 'fetch', 'http', 'exec', 'read', 'write'].map((n) => `clove_${n}`),
    );
    expect(said(seen[1])).toContain('"key":"lg/answer"');
    expect(await llmUsage(c)).toMatchObject({ tokens_used: 36, calls_made: 2 });
    // The conversation is in the store: the thread's state, read back on another connection.
    const saved = await new CloveSaver({ client: await tk.client(), prefix: 'lgreact' }).getTuple(thread);
    expect((saved?.checkpoint.channel_values.messages as unknown[]).length).toBe(4);
  });

  it('a ReAct agent streams the model’s tokens (streamMode messages) through THINK_STREAM', async () => {
    stub.responder = (r) =>
      r.messages.some((m) => m.role === 'tool')
        ? { content: 'the value is 42' }
        : { tool_calls: [{ name: 'clove_fetch', arguments: { key: 'lg/answer', scope: 'global' } }] };
    const before = stub.requests.length;
    const agent = createReactAgent({
      llm: new ChatClove({ client: op }),
      tools: cloveTools({ client: op, only: ['fetch'] }),
    });
    const pieces: { content: string; node: unknown }[] = [];
    const stream = await agent.stream(
      { messages: [{ role: 'user', content: 'react-stream: what is stored?' }] },
      { streamMode: 'messages' },
    );
    for await (const [chunk, meta] of stream)
      if (chunk.type === 'ai' && typeof chunk.content === 'string' && chunk.content)
        pieces.push({ content: chunk.content, node: (meta as { langgraph_node?: unknown }).langgraph_node });
    expect(pieces.map((p) => p.content).join('')).toBe('the value is 42');
    expect(new Set(pieces.map((p) => p.node))).toEqual(new Set(['agent']));
    // Both model calls were streamed THINKs; the second carried the fetched value.
    const seen = stub.requests.slice(before);
    expect(seen.map((r) => r.stream)).toEqual([true, true]);
    expect(said(seen[1])).toContain('"value":{"n":42}');
  });

  it('a refusal of the kernel is the tool’s error', async () => {
    const [read] = cloveTools({ client: op, only: ['read'] });
    const err = await read.invoke({ path: '/nonexistent/clove-lg' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CloveToolError);
    expect(err).toMatchObject({ tool: 'clove_read', code: 'not_found' });
  });

  it('refuses to make a tool it does not know', () => {
    expect(() => cloveTools({ only: ['nope' as never] })).toThrow(/no tool named nope/);
  });
});

describe('CloveSaver', () => {
  it('round-trips checkpoints and writes through the state store', async () => {
    const saver = new CloveSaver({ client: op, prefix: 'lgtest' });
    const cp1 = { ...emptyCheckpoint(), channel_values: { steps: ['a'] }, channel_versions: { steps: 1 } };
    const cfg1 = await saver.put(
      { configurable: { thread_id: 't/1' } },
      cp1,
      { source: 'input', step: -1, parents: {} },
      {},
    );
    expect(cfg1.configurable).toEqual({ thread_id: 't/1', checkpoint_ns: '', checkpoint_id: cp1.id });
    await saver.putWrites(
      cfg1,
      [
        ['steps', ['b']],
        ['__error__', 'boom'],
      ],
      'task-1',
      'p1',
    );
    // A retried task's regular write does not replace the first; a special write (error) is replaced.
    await saver.putWrites(
      cfg1,
      [
        ['steps', ['again']],
        ['__error__', 'boom 2'],
      ],
      'task-1',
      'p1',
    );
    const cp2 = {
      ...emptyCheckpoint(),
      channel_values: { steps: ['a', 'b'] },
      channel_versions: { steps: 2 },
    };
    const cfg2 = await saver.put(cfg1, cp2, { source: 'loop', step: 0, parents: {} }, {});

    // A new saver on another connection sees the same (nothing is held in memory).
    const other = new CloveSaver({ client: await tk.client(), prefix: 'lgtest' });
    const latest = await other.getTuple({ configurable: { thread_id: 't/1' } });
    expect(latest?.checkpoint.channel_values).toEqual({ steps: ['a', 'b'] });
    expect(latest?.parentConfig?.configurable?.checkpoint_id).toBe(cp1.id);
    expect(latest?.config).toEqual(cfg2);
    const first = await other.getTuple(cfg1);
    expect(first?.metadata).toMatchObject({ source: 'input', step: -1 });
    expect(first?.pendingWrites).toEqual([
      ['task-1', '__error__', 'boom 2'],
      ['task-1', 'steps', ['b']],
    ]);
    const listed = [];
    for await (const t of other.list({ configurable: { thread_id: 't/1' } })) listed.push(t.checkpoint.id);
    expect(listed).toEqual([cp2.id, cp1.id]);
    const filtered = [];
    for await (const t of other.list({ configurable: { thread_id: 't/1' } }, { filter: { source: 'input' } }))
      filtered.push(t.checkpoint.id);
    expect(filtered).toEqual([cp1.id]);
    const before = [];
    for await (const t of other.list({ configurable: { thread_id: 't/1' } }, { before: cfg2, limit: 5 }))
      before.push(t.checkpoint.id);
    expect(before).toEqual([cp1.id]);

    await other.deleteThread('t/1');
    expect(await saver.getTuple({ configurable: { thread_id: 't/1' } })).toBeUndefined();
    expect((await op.keys('lgtest/')).keys).toEqual([]);
  });

  it('stores a checkpoint larger than a frame in parts', async () => {
    const saver = new CloveSaver({ client: op, prefix: 'lgbig' });
    const big = 'x'.repeat(3 * 1024 * 1024);
    const cp = { ...emptyCheckpoint(), channel_values: { doc: big }, channel_versions: { doc: 1 } };
    const cfg = await saver.put(
      { configurable: { thread_id: 'big' } },
      cp,
      { source: 'input', step: -1, parents: {} },
      {},
    );
    const back = await new CloveSaver({ client: await tk.client(), prefix: 'lgbig' }).getTuple(cfg);
    expect((back?.checkpoint.channel_values.doc as string).length).toBe(big.length);
    expect((await op.keys('lgbig/')).keys.length).toBeGreaterThan(3);
    await saver.deleteThread('big');
    expect((await op.keys('lgbig/')).keys).toEqual([]);
  });

  it('lets a new graph on a new connection continue a thread', async () => {
    const State = Annotation.Root({ n: Annotation<number>({ reducer: (a, b) => a + b, default: () => 0 }) });
    const build = (c: CloveClient) =>
      new StateGraph(State)
        .addNode('inc', () => ({ n: 1 }))
        .addEdge(START, 'inc')
        .addEdge('inc', END)
        .compile({ checkpointer: new CloveSaver({ client: c, prefix: 'lgcount' }) });
    const cfg = { configurable: { thread_id: 'counter' } };
    expect((await build(op).invoke({ n: 10 }, cfg)).n).toBe(11);
    const again = build(await tk.client());
    expect((await again.getState(cfg)).values.n).toBe(11);
    expect((await again.invoke({ n: 0 }, cfg)).n).toBe(12);
  });

  it('in agent scope, is not misled by a global key of the same name', async () => {
    const saver = new CloveSaver({ client: op, prefix: 'lgscope' });
    const cp = { ...emptyCheckpoint(), channel_values: { mine: true } };
    await saver.put({ configurable: { thread_id: 's' } }, cp, { source: 'input', step: -1, parents: {} }, {});
    // A newer id, stored by someone in the shared namespace: KEYS lists it, FETCH in agent scope does not.
    await op.store(`lgscope/s//c/${'f'.repeat(36)}`, { record: {} }, { scope: 'global' });
    const got = await saver.getTuple({ configurable: { thread_id: 's' } });
    expect(got?.checkpoint.id).toBe(cp.id);
    await op.delete(`lgscope/s//c/${'f'.repeat(36)}`, 'global');
    await saver.deleteThread('s');
  });

  it('refuses a checkpoint without a thread', async () => {
    await expect(
      new CloveSaver({ client: op }).put(
        { configurable: {} },
        emptyCheckpoint(),
        { source: 'input', step: -1, parents: {} },
        {},
      ),
    ).rejects.toThrow(/thread_id is missing/);
  });
});

describe('the SDK without the adapter', () => {
  /** Imports a compiled module in a fresh node whose resolver refuses every @langchain/* import. */
  function importRefusingLangchain(file: string): { status: number | null; stderr: string } {
    const hook = `export async function resolve(s, c, next) {
      if (s.startsWith('@langchain/')) throw new Error('imported ' + s);
      return next(s, c);
    }`;
    const code = `import { register } from 'node:module';
      register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}));
      await import(${JSON.stringify(pathToFileURL(file).href)});`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: r.status, stderr: r.stderr };
  }

  it('the client imports no @langchain package; the adapter does', () => {
    if (!fs.existsSync(DIST)) throw new Error(`${DIST} is missing: run npm run build first`);
    expect(importRefusingLangchain(path.join(REPO_ROOT, 'dist', 'sdk', 'typescript', 'client.js'))).toEqual({
      status: 0,
      stderr: '',
    });
    const adapter = importRefusingLangchain(DIST);
    expect(adapter.status).not.toBe(0);
    expect(adapter.stderr).toContain('imported @langchain/');
  });
});

describe('a graph run as a Clove agent', () => {
  beforeAll(() => {
    if (!fs.existsSync(DIST)) throw new Error(`${DIST} is missing: run npm run build first`);
  });

  it('runs a ReAct agent whose tools run in its sandbox; a refused syscall is a failed tool result', async () => {
    stub.responder = (r) =>
      r.messages.some((m) => m.role === 'tool')
        ? { content: 'all done' }
        : {
            tool_calls: [
              { id: 'call_x', name: 'clove_exec', arguments: { command: 'echo clove-$((6*7))' } },
              { id: 'call_h', name: 'clove_http', arguments: { url: 'http://127.0.0.1:9/' } },
            ],
          };
    const before = stub.requests.length;
    const a = await op.spawn({
      name: 'lg-react',
      script: AGENT,
      env: { REPORT_TO: String(opId), MODE: 'react' },
    });
    const done = (await report((r) => r.event === 'react-done', 'react-done')) as {
      messages: { type: string; content: string; status?: string; usage?: { total_tokens: number } }[];
    };
    expect(done.messages.map((m) => m.type)).toEqual(['human', 'ai', 'tool', 'tool', 'ai']);
    const [, first, exec, httpResult, last] = done.messages;
    expect(first.usage?.total_tokens).toBe(18);
    expect(exec.content).toContain('clove-42');
    expect(httpResult.status).toBe('error');
    expect(httpResult.content).toMatch(/clove_http: the kernel refused \(permission_denied\)/);
    expect(last.content).toBe('all done');
    // The model saw both results: the command's output and the refusal.
    const seen = stub.requests.slice(before);
    expect(seen).toHaveLength(2);
    expect(said(seen[1])).toContain('clove-42');
    expect(said(seen[1])).toContain('permission_denied');
    // The kernel counted the agent's tokens and audited the denial.
    expect(await llmUsage(op, a.id)).toMatchObject({ tokens_used: 36, calls_made: 2 });
    const audit = await op.getAuditLog({ category: 'SECURITY', agent_id: a.id, limit: 50 });
    expect(
      audit.entries.some((e) => e.event_type === 'PERMISSION_DENIED' && JSON.stringify(e).includes('HTTP')),
    ).toBe(true);
    await op.kill('lg-react');
  });

  it('SIGKILLed mid-run, resumes from its checkpoint after the restart without redoing finished steps', async () => {
    stub.responder = () => ({ content: 'go to the moon' });
    reports.length = 0;
    const a = await op.spawn({
      name: 'lg-resume',
      script: AGENT,
      env: { REPORT_TO: String(opId), MODE: 'resume' },
      restart_policy: 'on-failure',
    });
    expect(await report((r) => r.event === 'start', 'start')).toMatchObject({ resumed: false });
    expect(await report((r) => r.event === 'plan', 'plan')).toMatchObject({ content: 'go to the moon' });
    await report((r) => r.event === 'work-start', 'work-start');

    // Killed while `work` waits: `plan` is done and checkpointed, `work` is not.
    const pid = (await op.list()).find((x) => x.id === a.id)!.pid;
    process.kill(pid, 'SIGKILL');
    const restarted = await report((r) => r.event === 'start' && r.resumed === true, 'a resumed start');
    expect(restarted).toMatchObject({ next: ['work'], steps: ['plan'] });
    await awaitReports(
      (all) => (all.filter((r) => r.event === 'work-start').length === 2 ? true : undefined),
      'work to start again',
    );
    await op.send('lg-resume', { go: true });
    const done = await report((r) => r.event === 'done', 'done');
    expect(done.state).toMatchObject({
      topic: 'the moon',
      outline: 'go to the moon',
      steps: ['plan', 'work', 'finish'],
    });

    // `plan` ran once: one report, one THINK, 18 tokens; `work` ran twice (killed once), `finish` once.
    const count = (e: string) => reports.filter((r) => r.event === e).length;
    expect([count('plan'), count('work-start'), count('work-done'), count('finish')]).toEqual([1, 2, 1, 1]);
    expect(stub.matching('resume: plan the moon')).toHaveLength(1);
    const agent = (await op.list()).find((x) => x.name === 'lg-resume');
    expect(agent?.restarts).toBe(1);
    expect(await llmUsage(op, agent!.id)).toMatchObject({ tokens_used: 18, calls_made: 1 });
    await op.kill('lg-resume');
  });
});
