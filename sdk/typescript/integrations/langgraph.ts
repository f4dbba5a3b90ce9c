/**
 * LangGraph.js on Clove (issue 16): a chat model whose calls are the kernel's THINK (`ChatClove`), the
 * kernel's syscalls as LangChain tools (`cloveTools`), and a checkpointer on the kernel's state store
 * (`CloveSaver`), so that a graph run as a Clove agent and killed resumes where it was after its restart.
 *
 * This is the only module of the SDK that imports @langchain/*. It is an entry of its own, never
 * re-exported by `client.ts`: a program that imports only the client loads no framework.
 */
import {
  BaseChatModel,
  type BaseChatModelCallOptions,
  type BaseChatModelParams,
  type BindToolsInput,
} from '@langchain/core/language_models/chat_models';
import type { BaseLanguageModelInput } from '@langchain/core/language_models/base';
import {
  AIMessage,
  AIMessageChunk,
  type BaseMessage,
  type InvalidToolCall,
  type ToolCall,
  type ToolMessage,
} from '@langchain/core/messages';
import { ChatGenerationChunk, type ChatResult } from '@langchain/core/outputs';
import type { CallbackManagerForLLMRun } from '@langchain/core/callbacks/manager';
import type { Runnable, RunnableConfig } from '@langchain/core/runnables';
import { tool, type StructuredToolInterface } from '@langchain/core/tools';
import { convertToOpenAIFunction, isLangChainTool } from '@langchain/core/utils/function_calling';
import {
  BaseCheckpointSaver,
  WRITES_IDX_MAP,
  compareWritesSortKeys,
  copyCheckpoint,
  getCheckpointId,
  writesSortKey,
  type ChannelVersions,
  type Checkpoint,
  type CheckpointListOptions,
  type CheckpointMetadata,
  type CheckpointPendingWrite,
  type CheckpointTuple,
  type PendingWrite,
  type SerializerProtocol,
} from '@langchain/langgraph-checkpoint';
import { z } from 'zod';
import { CloveClient, KernelError, type ChatMessage, type ClientOptions } from '../client.js';
import type { Replies, Requests } from '../../../protocol/index.js';

// ---------------------------------------------------------------------------------------------------
// The kernel's side of THINK, as this module sends and reads it

/** A function the model may call: THINK's `tools` item. */
export interface ThinkTool {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

type ThinkRequest = Requests['THINK'];
type ThinkReply = Replies['THINK'];
/** THINK's `tool_choice`: let the model choose, forbid tools, require one, or name the one to call. */
export type ThinkToolChoice = NonNullable<ThinkRequest['tool_choice']>;

/** A connection to the kernel made when first needed: the one given, else one to `socketPath` / $CLOVE_SOCKET. */
class LazyClient {
  private pending?: Promise<CloveClient>;

  constructor(
    private readonly given: CloveClient | undefined,
    private readonly options: ClientOptions,
  ) {}

  get(): Promise<CloveClient> {
    if (this.given) return Promise.resolve(this.given);
    this.pending ??= CloveClient.connect(this.options);
    return this.pending;
  }
}

// ---------------------------------------------------------------------------------------------------
// ChatClove

export interface ChatCloveParams extends BaseChatModelParams {
  /** The connection to use (an agent's own); default: a new one to `socketPath`, else $CLOVE_SOCKET. */
  client?: CloveClient;
  socketPath?: string;
  /** THINK's `model` (default: the provider's `default_model`) and `provider` (the operator's names). */
  model?: string;
  provider?: string;
  temperature?: number;
  maxTokens?: number;
  thinkingLevel?: 'LOW' | 'MEDIUM' | 'HIGH';
}

export interface ChatCloveCallOptions extends BaseChatModelCallOptions {
  /** Set by `bindTools`: the functions the model may call, in THINK's shape. */
  tools?: ThinkTool[];
}

/** The text of a message's content: a string, or the `text` parts of a list of content blocks. */
function textOf(content: BaseMessage['content'], what: string): string {
  if (typeof content === 'string') return content;
  const parts: string[] = [];
  for (const block of content as unknown[]) {
    if (typeof block === 'string') parts.push(block);
    else if (block && typeof block === 'object') {
      const b = block as { type?: unknown; text?: unknown };
      if ((b.type === 'text' || b.type === undefined) && typeof b.text === 'string') parts.push(b.text);
      // Tool calls travel in `tool_calls`; a provider's copy of them in the content is not text.
      else if (b.type === 'tool_use' || b.type === 'tool_call' || b.type === 'functionCall') continue;
      else
        throw new Error(`ChatClove: ${what} has a content block of type ${String(b.type)}; THINK takes text`);
    }
  }
  return parts.join('');
}

/**
 * LangChain messages as THINK's conversation: system, user and assistant turns, an assistant's tool
 * calls (`tool_calls`) and tool results (`tool` turns answering a call by its id).
 */
export function toThinkMessages(messages: BaseMessage[]): ChatMessage[] {
  return messages.map((m, i): ChatMessage => {
    const what = `message ${i} (${m.type})`;
    switch (m.type) {
      case 'system':
        return { role: 'system', content: textOf(m.content, what) };
      case 'human':
        return { role: 'user', content: textOf(m.content, what) };
      case 'ai': {
        const calls = (m as AIMessage).tool_calls ?? [];
        return {
          role: 'assistant',
          content: textOf(m.content, what),
          ...(calls.length
            ? {
                tool_calls: calls.map((c) => ({
                  ...(c.id ? { id: c.id } : {}),
                  name: c.name,
                  arguments: c.args,
                })),
              }
            : {}),
        };
      }
      case 'tool': {
        const t = m as ToolMessage;
        if (!t.tool_call_id)
          throw new Error(`ChatClove: ${what} answers no tool call (tool_call_id is empty)`);
        return {
          role: 'tool',
          content: textOf(m.content, what),
          tool_call_id: t.tool_call_id,
          ...(m.name ? { name: m.name } : {}),
        };
      }
      default:
        throw new Error(`ChatClove: ${what}: THINK takes system, human, ai and tool messages`);
    }
  });
}

/**
 * A tool given to `bindTools` in THINK's shape: a LangChain tool (its zod or JSON schema), OpenAI's
 * `{type: "function", function}`, or `{name, description, parameters}` (`input_schema` too).
 */
export function toThinkTool(t: BindToolsInput): ThinkTool {
  const f = (
    isLangChainTool(t)
      ? convertToOpenAIFunction(t)
      : (t as { type?: unknown }).type === 'function' && (t as { function?: unknown }).function
        ? (t as { function: unknown }).function
        : t
  ) as { name?: unknown; description?: unknown; parameters?: unknown; input_schema?: unknown };
  if (typeof f.name !== 'string' || !f.name)
    throw new Error(`ChatClove.bindTools: a tool without a name: ${JSON.stringify(t).slice(0, 200)}`);
  const parameters = f.parameters ?? f.input_schema ?? { type: 'object', properties: {} };
  if (!parameters || typeof parameters !== 'object' || Array.isArray(parameters))
    throw new Error(`ChatClove.bindTools: tool ${f.name}: parameters must be a JSON schema object`);
  return {
    name: f.name,
    ...(typeof f.description === 'string' && f.description ? { description: f.description } : {}),
    parameters: parameters as Record<string, unknown>,
  };
}

/** LangChain's `tool_choice` (`auto`, `any`, `none`, `required`, a tool's name, OpenAI's object) as THINK's. */
export function toThinkToolChoice(c: unknown): ThinkToolChoice | undefined {
  if (c === undefined || c === null) return undefined;
  if (c === 'auto' || c === 'none' || c === 'required') return c;
  if (c === 'any') return 'required';
  if (typeof c === 'string') return { name: c };
  const o = c as { name?: unknown; function?: { name?: unknown } };
  const name = typeof o.name === 'string' ? o.name : o.function?.name;
  if (typeof name === 'string') return { name };
  throw new Error(
    `ChatClove: tool_choice ${JSON.stringify(c)} is not auto, none, required, any or a tool's name`,
  );
}

let callSerial = 0;

/** The kernel's reply as LangChain's AI message: text, tool calls, usage as the kernel counted it. */
export function toAIMessage(reply: ThinkReply): AIMessage {
  const toolCalls: ToolCall[] = [];
  const invalid: InvalidToolCall[] = [];
  for (const c of reply.tool_calls ?? []) {
    // LangChain pairs results with calls by id. The kernel gives every call one; an older kernel may not.
    const id = c.id ?? `clove_call_${process.pid}_${++callSerial}`;
    const args = c.arguments;
    if (args && typeof args === 'object' && !Array.isArray(args))
      toolCalls.push({ id, name: c.name, args: args as Record<string, unknown>, type: 'tool_call' });
    else
      invalid.push({
        id,
        name: c.name,
        args: typeof args === 'string' ? args : JSON.stringify(args),
        error: 'the arguments the model gave are not a JSON object',
        type: 'invalid_tool_call',
      });
  }
  const input = reply.input_tokens ?? 0;
  const output = reply.output_tokens ?? Math.max(0, reply.tokens - input);
  return new AIMessage({
    content: reply.content,
    tool_calls: toolCalls,
    invalid_tool_calls: invalid,
    usage_metadata: { input_tokens: input, output_tokens: output, total_tokens: reply.tokens },
    response_metadata: {
      model_provider: 'clove',
      ...(reply.model ? { model_name: reply.model } : {}),
      ...(reply.provider ? { provider: reply.provider } : {}),
      ...(reply.finish_reason ? { finish_reason: reply.finish_reason } : {}),
      ...(reply.usage_estimated ? { usage_estimated: true } : {}),
    },
  });
}

/**
 * A LangChain chat model whose every call is the kernel's THINK: the kernel holds the operator's
 * provider keys, schedules the call fairly, counts its tokens against the agent's quota and audits it.
 * The model never sees a key; an agent without `can_think` gets `permission_denied` as the error.
 */
export class ChatClove extends BaseChatModel<ChatCloveCallOptions> {
  model?: string;
  provider?: string;
  temperature?: number;
  maxTokens?: number;
  thinkingLevel?: 'LOW' | 'MEDIUM' | 'HIGH';
  private readonly conn: LazyClient;

  static override lc_name(): string {
    return 'ChatClove';
  }

  constructor(fields: ChatCloveParams = {}) {
    super(fields);
    this.model = fields.model;
    this.provider = fields.provider;
    this.temperature = fields.temperature;
    this.maxTokens = fields.maxTokens;
    this.thinkingLevel = fields.thinkingLevel;
    this.conn = new LazyClient(fields.client, fields.socketPath ? { socketPath: fields.socketPath } : {});
  }

  _llmType(): string {
    return 'clove';
  }

  override get callKeys(): string[] {
    return [...super.callKeys, 'tools', 'tool_choice'];
  }

  /** The functions the model may call, sent with every THINK of the returned runnable. */
  override bindTools(
    tools: BindToolsInput[],
    kwargs?: Partial<ChatCloveCallOptions>,
  ): Runnable<BaseLanguageModelInput, AIMessageChunk, ChatCloveCallOptions> {
    return this.withConfig({ tools: tools.map(toThinkTool), ...kwargs } as Partial<ChatCloveCallOptions>);
  }

  /** The THINK request for a conversation and this call's options. */
  thinkRequest(messages: BaseMessage[], options: this['ParsedCallOptions']): ThinkRequest {
    const choice = toThinkToolChoice(options.tool_choice);
    const tools = options.tools ?? [];
    return {
      messages: toThinkMessages(messages),
      ...(this.model ? { model: this.model } : {}),
      ...(this.provider ? { provider: this.provider } : {}),
      ...(this.temperature !== undefined ? { temperature: this.temperature } : {}),
      ...(this.maxTokens !== undefined ? { max_tokens: this.maxTokens } : {}),
      ...(this.thinkingLevel ? { thinking_level: this.thinkingLevel } : {}),
      ...(tools.length ? { tools: tools as unknown as ThinkRequest['tools'] } : {}),
      ...(tools.length && choice ? { tool_choice: choice } : {}),
    };
  }

  async _generate(messages: BaseMessage[], options: this['ParsedCallOptions']): Promise<ChatResult> {
    if (options.stop?.length) throw new Error('ChatClove: THINK has no stop sequences');
    const client = await this.conn.get();
    const reply = await client.think(this.thinkRequest(messages, options));
    const message = toAIMessage(reply);
    return {
      generations: [{ text: reply.content, message }],
      llmOutput: {
        tokenUsage: {
          promptTokens: message.usage_metadata?.input_tokens,
          completionTokens: message.usage_metadata?.output_tokens,
          totalTokens: reply.tokens,
        },
      },
    };
  }

  /**
   * THINK_STREAM: the answer's pieces as chunks as the provider gives them (text, and tool calls' name
   * and arguments in pieces), then one last chunk with the kernel's counts, the finish reason and the
   * ids of calls the provider gave none for. Concatenated they are `_generate`'s message. Leaving early
   * (or the call's signal) cancels the stream in the kernel, which aborts the provider call.
   */
  override async *_streamResponseChunks(
    messages: BaseMessage[],
    options: this['ParsedCallOptions'],
    runManager?: CallbackManagerForLLMRun,
  ): AsyncGenerator<ChatGenerationChunk> {
    if (options.stop?.length) throw new Error('ChatClove: THINK has no stop sequences');
    const client = await this.conn.get();
    const stream = client.thinkStream(this.thinkRequest(messages, options));
    const withId = new Set<number>();
    for await (const d of stream) {
      options.signal?.throwIfAborted();
      if (d.content) {
        const chunk = new ChatGenerationChunk({
          text: d.content,
          message: new AIMessageChunk({ content: d.content }),
        });
        yield chunk;
        await runManager?.handleLLMNewToken(d.content, undefined, undefined, undefined, undefined, { chunk });
      } else if (d.tool_call) {
        const t = d.tool_call;
        if (t.id) withId.add(t.index);
        yield new ChatGenerationChunk({
          text: '',
          message: new AIMessageChunk({
            content: '',
            tool_call_chunks: [
              { index: t.index, id: t.id, name: t.name, args: t.arguments ?? '', type: 'tool_call_chunk' },
            ],
          }),
        });
      }
    }
    const reply = await stream.result;
    const whole = toAIMessage(reply);
    const ids = (reply.tool_calls ?? []).flatMap((c, index) =>
      c.id && !withId.has(index) ? [{ index, id: c.id, type: 'tool_call_chunk' as const }] : [],
    );
    yield new ChatGenerationChunk({
      text: '',
      message: new AIMessageChunk({
        content: '',
        ...(ids.length ? { tool_call_chunks: ids } : {}),
        usage_metadata: whole.usage_metadata,
        response_metadata: whole.response_metadata,
      }),
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Clove's syscalls as tools

/** A syscall the kernel refused, as the tool's error: LangGraph's ToolNode hands it to the model. */
export class CloveToolError extends Error {
  constructor(
    readonly tool: string,
    readonly code: string,
    readonly reply: Record<string, unknown>,
    message: string,
  ) {
    super(message);
    this.name = 'CloveToolError';
  }
}

/** Runs one syscall for a tool: its reply, or a CloveToolError naming the tool and the kernel's code. */
async function syscall<R>(name: string, run: () => Promise<R>): Promise<R> {
  try {
    return await run();
  } catch (e) {
    if (e instanceof KernelError)
      throw new CloveToolError(
        name,
        e.code,
        e.reply,
        `${name}: the kernel refused (${e.code}): ${e.message}`,
      );
    throw e;
  }
}

const json = (v: unknown): string => JSON.stringify(v);
const SCOPE = z.enum(['global', 'agent', 'session']);

export type CloveToolName = 'send' | 'recv' | 'store' | 'fetch' | 'http' | 'exec' | 'read' | 'write';
export const CLOVE_TOOL_NAMES: readonly CloveToolName[] = [
  'send',
  'recv',
  'store',
  'fetch',
  'http',
  'exec',
  'read',
  'write',
];

export interface CloveToolsOptions {
  /** The connection the tools act through (the agent's own); default a new one to $CLOVE_SOCKET. */
  client?: CloveClient;
  socketPath?: string;
  /** Which tools (default all). */
  only?: readonly CloveToolName[];
  /** Prefix of the tools' names (default `clove_`: `clove_exec`, …). */
  prefix?: string;
}

/**
 * The kernel's syscalls as LangChain tools: messages (send, recv), the state store (store, fetch),
 * HTTP, commands (exec), files (read, write). They act with the rights of the connection's principal
 * (an agent's own); what the kernel refuses is thrown as a CloveToolError, which LangGraph's ToolNode
 * gives back to the model as a failed tool result, and the kernel audits.
 */
export function cloveTools(opts: CloveToolsOptions = {}): StructuredToolInterface[] {
  const conn = new LazyClient(opts.client, opts.socketPath ? { socketPath: opts.socketPath } : {});
  const prefix = opts.prefix ?? 'clove_';
  const only = new Set(opts.only ?? CLOVE_TOOL_NAMES);
  for (const n of only)
    if (!CLOVE_TOOL_NAMES.includes(n))
      throw new Error(`cloveTools: no tool named ${n} (known: ${CLOVE_TOOL_NAMES.join(', ')})`);
  const call = <R>(name: string, fn: (c: CloveClient) => Promise<R>): Promise<R> =>
    syscall(prefix + name, async () => fn(await conn.get()));

  const all: Record<CloveToolName, () => StructuredToolInterface> = {
    send: () =>
      tool(
        async ({ to, message }) =>
          json(await call('send', (c) => c.send(/^\d+$/.test(to) ? Number(to) : to, message ?? {}))),
        {
          name: `${prefix}send`,
          description: 'Send a message (any JSON) to another agent, by its name or numeric id.',
          schema: z.object({
            to: z.string().describe("the agent's name, or its numeric id"),
            message: z.unknown().describe('the message: any JSON value'),
          }),
        },
      ),
    recv: () =>
      tool(
        async ({ max, timeout_ms }) => {
          const r = await call('recv', (c) =>
            c.recv({ max: max ?? 10, ...(timeout_ms ? { timeoutMs: timeout_ms } : {}) }),
          );
          return json(r.messages.map((m) => ({ from: m.from, from_name: m.from_name, message: m.message })));
        },
        {
          name: `${prefix}recv`,
          description:
            'Take messages sent to this agent, waiting up to timeout_ms for one when none is there.',
          schema: z.object({
            max: z.number().int().min(1).max(100).optional().describe('most messages to take (default 10)'),
            timeout_ms: z.number().int().min(0).max(60_000).optional().describe('how long to wait for one'),
          }),
        },
      ),
    store: () =>
      tool(
        async ({ key, value, scope, ttl }) =>
          json(
            await call('store', (c) =>
              c.store(key, value ?? null, { ...(scope ? { scope } : {}), ...(ttl ? { ttl } : {}) }),
            ),
          ),
        {
          name: `${prefix}store`,
          description:
            "Store a value (any JSON) under a key in the kernel's durable store: scope agent (private, kept across restarts), global (shared, default) or session.",
          schema: z.object({
            key: z.string(),
            value: z.unknown().describe('any JSON value'),
            scope: SCOPE.optional(),
            ttl: z.number().positive().optional().describe('seconds until it expires'),
          }),
        },
      ),
    fetch: () =>
      tool(
        async ({ key, scope }) => {
          const r = await call('fetch', (c) => c.fetch(key, scope));
          return json({ exists: r.exists, value: r.value });
        },
        {
          name: `${prefix}fetch`,
          description:
            "Read a key of the kernel's store (agent scope first, then global, unless a scope is given).",
          schema: z.object({ key: z.string(), scope: SCOPE.optional() }),
        },
      ),
    http: () =>
      tool(
        async ({ url, method, headers, body }) => {
          const r = await call('http', (c) =>
            c.http({
              url,
              ...(method ? { method } : {}),
              ...(headers ? { headers } : {}),
              ...(body !== undefined ? { body } : {}),
            }),
          );
          return json({
            status_code: r.status_code,
            headers: r.headers,
            body: r.body,
            ...(r.truncated ? { truncated: true } : {}),
          });
        },
        {
          name: `${prefix}http`,
          description: 'Make an HTTP request through the kernel (its rights decide which hosts and methods).',
          schema: z.object({
            url: z.string(),
            method: z.string().optional().describe('default GET'),
            headers: z.record(z.string(), z.string()).optional(),
            body: z.string().optional(),
          }),
        },
      ),
    exec: () =>
      tool(
        async ({ command, cwd, timeout, stdin }) => {
          const r = await call('exec', (c) =>
            c.exec({
              command,
              ...(cwd ? { cwd } : {}),
              ...(timeout ? { timeout } : {}),
              ...(stdin !== undefined ? { stdin } : {}),
            }),
          );
          return json({
            exit_code: r.exit_code,
            stdout: r.stdout,
            stderr: r.stderr,
            ...(r.timed_out ? { timed_out: true } : {}),
            ...(r.truncated ? { truncated: true } : {}),
          });
        },
        {
          name: `${prefix}exec`,
          description:
            "Run a shell command in this agent's sandbox, in its work directory; gives exit code and output.",
          schema: z.object({
            command: z.string(),
            cwd: z.string().optional(),
            timeout: z.number().positive().optional().describe('seconds (default 30)'),
            stdin: z.string().optional(),
          }),
        },
      ),
    read: () =>
      tool(
        async ({ path }) => {
          const r = await call('read', (c) => c.readFile({ path }));
          return r.encoding === 'base64' ? json({ encoding: 'base64', content: r.content }) : r.content;
        },
        {
          name: `${prefix}read`,
          description: "Read a file (a path relative to this agent's work directory, or absolute).",
          schema: z.object({ path: z.string() }),
        },
      ),
    write: () =>
      tool(
        async ({ path, content, append }) =>
          json(
            await call('write', (c) =>
              c.writeFile({ path, content, ...(append ? { mode: 'append' as const } : {}) }),
            ),
          ),
        {
          name: `${prefix}write`,
          description:
            "Write a text file (relative to this agent's work directory, or absolute); append adds to its end.",
          schema: z.object({ path: z.string(), content: z.string(), append: z.boolean().optional() }),
        },
      ),
  };
  return CLOVE_TOOL_NAMES.filter((n) => only.has(n)).map((n) => all[n]());
}

// ---------------------------------------------------------------------------------------------------
// CloveSaver: checkpoints in the kernel's state store

export interface CloveSaverOptions {
  client?: CloveClient;
  socketPath?: string;
  /**
   * Scope of the keys (default `agent`: private to the agent's identity, kept across its restarts and
   * the kernel's, deleted when the identity ends; `global` outlives it).
   */
  scope?: 'agent' | 'global' | 'session';
  /** First segment of every key (default `langgraph`). */
  prefix?: string;
  serde?: SerializerProtocol;
}

/** A value of the serializer (its type and bytes) as stored: UTF-8 text when it is JSON, else base64. */
interface StoredBlob {
  type: string;
  enc: 'utf8' | 'base64';
  data: string;
}

interface CheckpointRecord {
  parent: string | null;
  checkpoint: StoredBlob;
  metadata: StoredBlob;
}

interface WriteRecord {
  task_id: string;
  task_path: string;
  idx: number;
  channel: string;
  value: StoredBlob;
}

/** What a key holds: the record itself, or the number of parts its JSON text was cut into. */
type Stored<R> = { record: R } | { parts: number };

const enc = encodeURIComponent;
const dec = decodeURIComponent;
/** Room left in a frame for the request around a value (key, scope, JSON quoting). */
const FRAME_MARGIN = 8 * 1024;

/**
 * A LangGraph checkpointer on the kernel's state store (STORE/FETCH/KEYS/DELETE). A checkpoint is
 * committed when STORE replies, which survives `kill -9` of the agent and of the kernel; in agent scope
 * it belongs to the agent's identity, so the same agent restarted by its supervisor finds it and the
 * graph resumes at the step it was in. Keys: `<prefix>/<thread>/<ns>/c/<checkpoint id>` (checkpoints),
 * `…/w/<checkpoint id>/<task id>/<idx>` (pending writes), `…/p/…` (parts of a value larger than a
 * frame). Each key counts against the owner's `state_keys` and `state_bytes` budgets; `deleteThread`
 * gives them back.
 */
export class CloveSaver extends BaseCheckpointSaver {
  readonly scope: 'agent' | 'global' | 'session';
  readonly prefix: string;
  private readonly conn: LazyClient;
  private partSize?: number;

  constructor(opts: CloveSaverOptions = {}) {
    super(opts.serde);
    this.scope = opts.scope ?? 'agent';
    this.prefix = opts.prefix ?? 'langgraph';
    if (!this.prefix || this.prefix.includes('/'))
      throw new Error('CloveSaver: prefix must be non-empty, without /');
    this.conn = new LazyClient(opts.client, opts.socketPath ? { socketPath: opts.socketPath } : {});
  }

  // --- keys and values ------------------------------------------------------------------------------

  private base(thread: string, ns: string): string {
    return `${this.prefix}/${enc(thread)}/${enc(ns)}`;
  }

  /** Every key under `prefix`, in order, following the kernel's pages. */
  private async keys(prefix: string): Promise<string[]> {
    const c = await this.conn.get();
    const out: string[] = [];
    let after: string | undefined;
    for (;;) {
      const r = await c.syscall('KEYS', { prefix, limit: 10_000, ...(after !== undefined ? { after } : {}) });
      out.push(...r.keys);
      if (!r.more || !r.keys.length) return out;
      after = r.keys[r.keys.length - 1];
    }
  }

  /** The bytes of a part: what fits in one request frame (the kernel's `max_payload`, from HELLO). */
  private async maxValueBytes(c: CloveClient): Promise<number> {
    if (this.partSize === undefined) {
      const hello = await c.hello();
      const max = Number((hello.features as { max_payload?: unknown }).max_payload) || 1024 * 1024;
      this.partSize = Math.max(16 * 1024, max - FRAME_MARGIN);
    }
    return this.partSize;
  }

  /**
   * Stores a record under `key`. A record larger than a frame is cut into parts (base64 of its JSON
   * text) stored first, under `<base>/p/<tail>/<i>`; the key itself is written last, so a reader never
   * sees a record whose parts are not all there.
   */
  private async putRecord(base: string, tail: string, record: unknown): Promise<void> {
    const c = await this.conn.get();
    const key = `${base}/${tail}`;
    const text = JSON.stringify({ record });
    const max = await this.maxValueBytes(c);
    const store = async (k: string, value: unknown): Promise<void> => {
      try {
        await c.store(k, value, { scope: this.scope });
      } catch (e) {
        throw new Error(`CloveSaver: STORE ${k} failed: ${(e as Error).message}`, { cause: e });
      }
    };
    if (Buffer.byteLength(text) + Buffer.byteLength(key) <= max) {
      await store(key, { record });
      return;
    }
    const b64 = Buffer.from(text).toString('base64');
    const size = max - Buffer.byteLength(key) - 64;
    const parts = Math.ceil(b64.length / size);
    for (let i = 0; i < parts; i++)
      await store(`${base}/p/${tail}/${i}`, b64.slice(i * size, (i + 1) * size));
    await store(key, { parts });
  }

  /** The record under `key` (undefined when there is none), its parts put together again. */
  private async getRecord<R>(base: string, tail: string): Promise<R | undefined> {
    const c = await this.conn.get();
    const r = await c.fetch(`${base}/${tail}`, this.scope);
    if (!r.exists) return undefined;
    const v = r.value as Stored<R>;
    if ('record' in v) return v.record;
    const parts = await Promise.all(
      Array.from({ length: v.parts }, (_, i) => c.fetch(`${base}/p/${tail}/${i}`, this.scope)),
    );
    const missing = parts.findIndex((p) => !p.exists);
    if (missing >= 0) throw new Error(`CloveSaver: part ${missing} of ${base}/${tail} is missing`);
    const text = Buffer.from(parts.map((p) => p.value as string).join(''), 'base64').toString('utf8');
    return (JSON.parse(text) as { record: R }).record;
  }

  private async blob(value: unknown): Promise<StoredBlob> {
    const [type, bytes] = await this.serde.dumpsTyped(value);
    const buf = Buffer.from(bytes);
    return type === 'json'
      ? { type, enc: 'utf8', data: buf.toString('utf8') }
      : { type, enc: 'base64', data: buf.toString('base64') };
  }

  private unblob(b: StoredBlob): Promise<unknown> {
    return this.serde.loadsTyped(
      b.type,
      b.enc === 'utf8' ? b.data : new Uint8Array(Buffer.from(b.data, 'base64')),
    );
  }

  // --- reading --------------------------------------------------------------------------------------

  /** Checkpoint ids of a thread's namespace, oldest first (uuid6 ids sort by time). */
  private async checkpointIds(base: string): Promise<string[]> {
    const p = `${base}/c/`;
    return (await this.keys(p)).map((k) => k.slice(p.length)).filter((id) => id && !id.includes('/'));
  }

  /** The pending writes of a checkpoint, in the order LangGraph applies them (`writesSortKey`). */
  private async pendingWrites(base: string, id: string): Promise<CheckpointPendingWrite[]> {
    const tails = (await this.keys(`${base}/w/${id}/`)).map((k) => k.slice(base.length + 1));
    const records = (await Promise.all(tails.map((t) => this.getRecord<WriteRecord>(base, t)))).filter(
      (r): r is WriteRecord => r !== undefined,
    );
    records.sort((a, b) =>
      compareWritesSortKeys(
        writesSortKey(a.task_path, a.task_id, a.idx),
        writesSortKey(b.task_path, b.task_id, b.idx),
      ),
    );
    return Promise.all(
      records.map(async (r): Promise<CheckpointPendingWrite> => [
        r.task_id,
        r.channel,
        await this.unblob(r.value),
      ]),
    );
  }

  private async tuple(thread: string, ns: string, id: string): Promise<CheckpointTuple | undefined> {
    const base = this.base(thread, ns);
    const rec = await this.getRecord<CheckpointRecord>(base, `c/${id}`);
    if (!rec) return undefined;
    const [checkpoint, metadata, pendingWrites] = await Promise.all([
      this.unblob(rec.checkpoint) as Promise<Checkpoint>,
      this.unblob(rec.metadata) as Promise<CheckpointMetadata>,
      this.pendingWrites(base, id),
    ]);
    return {
      config: { configurable: { thread_id: thread, checkpoint_ns: ns, checkpoint_id: id } },
      checkpoint,
      metadata,
      pendingWrites,
      ...(rec.parent
        ? {
            parentConfig: {
              configurable: { thread_id: thread, checkpoint_ns: ns, checkpoint_id: rec.parent },
            },
          }
        : {}),
    };
  }

  async getTuple(config: RunnableConfig): Promise<CheckpointTuple | undefined> {
    const thread = config.configurable?.thread_id as string | undefined;
    if (thread === undefined || thread === null) return undefined;
    const ns = (config.configurable?.checkpoint_ns as string | undefined) ?? '';
    const id = getCheckpointId(config);
    if (id) return this.tuple(String(thread), ns, id);
    // The newest checkpoint in this saver's scope. KEYS also lists the shared namespace: a global key
    // of someone else under the same prefix is not one of ours (FETCH in our scope does not find it).
    const ids = await this.checkpointIds(this.base(String(thread), ns));
    for (let i = ids.length - 1; i >= 0; i--) {
      const t = await this.tuple(String(thread), ns, ids[i]);
      if (t) return t;
    }
    return undefined;
  }

  async *list(config: RunnableConfig, options: CheckpointListOptions = {}): AsyncGenerator<CheckpointTuple> {
    const { before, filter } = options;
    let limit = options.limit;
    const thread = config.configurable?.thread_id as string | undefined;
    const wantNs = config.configurable?.checkpoint_ns as string | undefined;
    const wantId = config.configurable?.checkpoint_id as string | undefined;
    const beforeId = before?.configurable?.checkpoint_id as string | undefined;
    // The thread/namespace pairs to look at: one thread's, or every thread's under the prefix.
    const pairs = new Map<string, [string, string]>();
    const scan = thread !== undefined ? `${this.prefix}/${enc(String(thread))}/` : `${this.prefix}/`;
    for (const k of await this.keys(scan)) {
      const seg = k.split('/');
      if (seg.length === 5 && seg[3] === 'c') pairs.set(`${seg[1]}/${seg[2]}`, [dec(seg[1]), dec(seg[2])]);
    }
    for (const [t, ns] of pairs.values()) {
      if (wantNs !== undefined && ns !== wantNs) continue;
      const ids = (await this.checkpointIds(this.base(t, ns))).reverse();
      for (const id of ids) {
        if (wantId && id !== wantId) continue;
        if (beforeId && id >= beforeId) continue;
        const tup = await this.tuple(t, ns, id);
        if (!tup) continue;
        const md = (tup.metadata ?? {}) as Record<string, unknown>;
        if (filter && !Object.entries(filter).every(([k, v]) => md[k] === v)) continue;
        if (limit !== undefined) {
          if (limit <= 0) return;
          limit--;
        }
        yield tup;
      }
    }
  }

  // --- writing --------------------------------------------------------------------------------------

  async put(
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    _newVersions: ChannelVersions,
  ): Promise<RunnableConfig> {
    const thread = config.configurable?.thread_id as string | undefined;
    if (thread === undefined || thread === null)
      throw new Error('CloveSaver: cannot put a checkpoint: configurable.thread_id is missing');
    const ns = (config.configurable?.checkpoint_ns as string | undefined) ?? '';
    const record: CheckpointRecord = {
      parent: (config.configurable?.checkpoint_id as string | undefined) ?? null,
      checkpoint: await this.blob(copyCheckpoint(checkpoint)),
      metadata: await this.blob(metadata),
    };
    await this.putRecord(this.base(String(thread), ns), `c/${checkpoint.id}`, record);
    return { configurable: { thread_id: thread, checkpoint_ns: ns, checkpoint_id: checkpoint.id } };
  }

  /**
   * Stores a task's writes against a checkpoint. As LangGraph's MemorySaver: a write already stored for
   * the same task and index is kept (a retried task does not replace it), special writes (errors,
   * interrupts: negative indexes) replace theirs.
   */
  async putWrites(
    config: RunnableConfig,
    writes: PendingWrite[],
    taskId: string,
    taskPath?: string,
  ): Promise<void> {
    const thread = config.configurable?.thread_id as string | undefined;
    const id = config.configurable?.checkpoint_id as string | undefined;
    if (thread === undefined || thread === null)
      throw new Error('CloveSaver: cannot put writes: configurable.thread_id is missing');
    if (!id) throw new Error('CloveSaver: cannot put writes: configurable.checkpoint_id is missing');
    const ns = (config.configurable?.checkpoint_ns as string | undefined) ?? '';
    const base = this.base(String(thread), ns);
    const taskTail = `w/${id}/${enc(taskId)}/`;
    const existing = new Set(await this.keys(`${base}/${taskTail}`));
    await Promise.all(
      writes.map(async ([channel, value], i) => {
        const idx = WRITES_IDX_MAP[channel] ?? i;
        const tail = `${taskTail}${idx}`;
        if (idx >= 0 && existing.has(`${base}/${tail}`)) return;
        const record: WriteRecord = {
          task_id: taskId,
          task_path: taskPath ?? '',
          idx,
          channel,
          value: await this.blob(value),
        };
        await this.putRecord(base, tail, record);
      }),
    );
  }

  /** Deletes every checkpoint and write of a thread (all namespaces), giving its keys back. */
  async deleteThread(threadId: string): Promise<void> {
    const c = await this.conn.get();
    for (const k of await this.keys(`${this.prefix}/${enc(threadId)}/`)) await c.delete(k, this.scope);
  }
}
