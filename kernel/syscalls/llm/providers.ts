/**
 * The three provider APIs the kernel speaks, and one call to a provider: the request in the provider's
 * shape, its answer (streamed where the provider streams) consumed and bounded, its usage figures read.
 *
 * - `openai`: POST `<base>/chat/completions` (OpenAI, vLLM, llama.cpp's server, Ollama, Gemini's
 *   OpenAI-compatible endpoint), streamed as SSE with `stream_options.include_usage`.
 * - `anthropic`: POST `<base>/v1/messages` (Messages API), streamed as SSE events.
 * - `gemini`: POST `<base>/models/<model>:streamGenerateContent?alt=sse` (or `:generateContent`).
 */
import crypto from 'node:crypto';
import type { ProviderConfig } from './config.js';
import { MalformedError, readCapped, readHead, sseEvents } from './sse.js';
import { CancelledError } from './scheduler.js';

export interface ChatTurn {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  image?: { data: string; mimeType: string };
  /** An assistant turn: the calls the model made (each with an id). */
  toolCalls?: ToolCall[];
  /** A tool turn: the id of the call it answers, and that tool's name. */
  toolCallId?: string;
  name?: string;
}

/** Whether and which tools the model must call: THINK's `tool_choice`. */
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string };

/** One piece of an answer as it streams in: THINK_STREAM_NEXT's `deltas` items. */
export type Delta =
  { content: string } | { tool_call: { index: number; id?: string; name?: string; arguments?: string } };

export interface ToolDecl {
  name: string;
  description?: string;
  parameters?: Record<string, unknown>;
}

export interface ToolCall {
  id?: string;
  name: string;
  arguments: unknown;
}

/** One call, provider-neutral (the service builds it from a THINK request). */
export interface LlmRequest {
  model: string;
  system?: string;
  turns: ChatTurn[];
  maxTokens: number;
  temperature?: number;
  thinkingLevel?: 'LOW' | 'MEDIUM' | 'HIGH';
  tools: ToolDecl[];
  toolChoice?: ToolChoice;
}

export interface LlmResult {
  content: string;
  inputTokens?: number;
  outputTokens?: number;
  totalTokens?: number;
  model?: string;
  finishReason?: string;
  toolCalls: ToolCall[];
}

/** What became of a call so far: whether the provider started answering, and how much it said. */
export interface CallProgress {
  started: boolean;
  outputChars: number;
}

export type FailureReason = 'http' | 'timeout' | 'network' | 'malformed';

/** The provider could not be used: its HTTP status, a timeout, the network, or an answer that makes no sense. */
export class ProviderError extends Error {
  constructor(
    message: string,
    readonly reason: FailureReason,
    readonly status = 0,
  ) {
    super(message);
    this.name = 'ProviderError';
  }
}

export const THINKING_BUDGET = { LOW: 1024, MEDIUM: 4096, HIGH: 8192 } as const;

/** A generous bound on the bytes of one token: an answer far longer than its max_tokens is cut. */
const BYTES_PER_TOKEN_BOUND = 32;
const MAX_EVENT_BYTES = 4 * 1024 * 1024;
const MAX_BODY_BYTES = 16 * 1024 * 1024;
const ERROR_HEAD_BYTES = 8 * 1024;

// ---------------------------------------------------------------------------------------------------
// The answer, as it comes in

function count(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? Math.round(v) : undefined;
}

const obj = (v: unknown): Record<string, unknown> =>
  v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const text = (v: unknown): string => (typeof v === 'string' ? v : '');

function parseArgs(s: string): unknown {
  if (s === '') return {};
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

/** Ids the kernel gives calls a provider left without one (Gemini, some OpenAI-compatible servers). */
export const KERNEL_CALL_ID = 'clove_call_';
const newCallId = (): string => KERNEL_CALL_ID + crypto.randomBytes(8).toString('hex');

/** Tool-call arguments as JSON text (OpenAI's wire form, and a delta's). */
function argsText(a: unknown): string {
  return typeof a === 'string' ? a : JSON.stringify(a ?? {});
}

/** Tool-call arguments as an object (Anthropic's `input`, Gemini's `args`): JSON text is parsed. */
function argsObject(a: unknown): Record<string, unknown> {
  const v = typeof a === 'string' ? parseArgs(a) : a;
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

interface ToolSlot {
  index: number;
  id?: string;
  name: string;
  args: string;
  value?: unknown;
}

/** A piece of a tool call as a provider sends it: any of its id, (part of its) name, argument text, or whole arguments. */
interface ToolPiece {
  id?: string;
  name?: string;
  args?: string;
  value?: unknown;
}

class Answer {
  private readonly parts: string[] = [];
  bytes = 0;
  chars = 0;
  input?: number;
  output?: number;
  total?: number;
  model?: string;
  finish?: string;
  /** Tool calls by the provider's index, their arguments as text until the end. */
  readonly tools = new Map<string, ToolSlot>();

  /** `onDelta`: told of every piece as it comes (a streamed answer only; see `callProvider`). */
  constructor(
    private readonly progress: CallProgress,
    private readonly onDelta?: (d: Delta) => void,
  ) {}

  add(t: string): void {
    if (!t) return;
    this.parts.push(t);
    this.bytes += Buffer.byteLength(t);
    this.chars += t.length;
    this.progress.outputChars += t.length;
    this.onDelta?.({ content: t });
  }

  /** Adds a piece to the tool call the provider keys `key` (its index, or a block's). */
  tool(key: string, piece: ToolPiece): void {
    let t = this.tools.get(key);
    if (!t) this.tools.set(key, (t = { index: this.tools.size, name: '', args: '' }));
    if (piece.id) t.id = piece.id;
    if (piece.name) t.name += piece.name;
    let args = piece.args ?? '';
    if (args) t.args += args;
    if (piece.value !== undefined) {
      t.value = piece.value;
      args = argsText(piece.value);
    }
    // Arguments count towards the answer's size: a model cannot stream an unbounded call.
    this.bytes += Buffer.byteLength(args);
    this.progress.outputChars += args.length;
    if (!this.onDelta || (!piece.id && !piece.name && !args)) return;
    this.onDelta({
      tool_call: {
        index: t.index,
        ...(piece.id ? { id: piece.id } : {}),
        ...(piece.name ? { name: piece.name } : {}),
        ...(args ? { arguments: args } : {}),
      },
    });
  }

  result(): LlmResult {
    return {
      content: this.parts.join(''),
      ...(this.input !== undefined ? { inputTokens: this.input } : {}),
      ...(this.output !== undefined ? { outputTokens: this.output } : {}),
      ...(this.total !== undefined ? { totalTokens: this.total } : {}),
      ...(this.model ? { model: this.model } : {}),
      ...(this.finish ? { finishReason: this.finish } : {}),
      toolCalls: [...this.tools.values()]
        .filter((t) => t.name)
        .map((t) => ({
          // Every call gets an id, so that a tool turn can answer it whatever the provider.
          id: (t.id ??= newCallId()),
          name: t.name,
          arguments: t.value !== undefined ? t.value : parseArgs(t.args),
        })),
    };
  }
}

/** The provider's word for why it stopped, in the words of the reply (`stop`, `length`, …). */
export function normalizeFinish(reason: string): string {
  switch (reason) {
    case 'stop':
    case 'end_turn':
    case 'stop_sequence':
    case 'STOP':
      return 'stop';
    case 'length':
    case 'max_tokens':
    case 'MAX_TOKENS':
      return 'length';
    case 'tool_calls':
    case 'function_call':
    case 'tool_use':
      return 'tool_calls';
    case 'content_filter':
    case 'refusal':
    case 'SAFETY':
    case 'RECITATION':
    case 'BLOCKLIST':
    case 'PROHIBITED_CONTENT':
    case 'SPII':
      return 'content_filter';
    default:
      return reason.toLowerCase();
  }
}

/** An error object inside a 200 answer (some servers report failures mid-stream). */
function inlineError(o: Record<string, unknown>): void {
  if (o.error === undefined || o.error === null) return;
  const e = obj(o.error);
  const msg = text(e.message) || text(o.error) || 'error in the answer';
  throw new ProviderError(msg, 'http');
}

// ---------------------------------------------------------------------------------------------------
// openai: /chat/completions

function openaiBody(p: ProviderConfig, r: LlmRequest, stream: boolean): Record<string, unknown> {
  const messages: Record<string, unknown>[] = [];
  if (r.system) messages.push({ role: 'system', content: r.system });
  for (const t of r.turns) {
    if (t.role === 'tool') messages.push({ role: 'tool', tool_call_id: t.toolCallId, content: t.content });
    else if (t.toolCalls?.length)
      messages.push({
        role: 'assistant',
        content: t.content || null,
        tool_calls: t.toolCalls.map((c) => ({
          id: c.id,
          type: 'function',
          function: { name: c.name, arguments: argsText(c.arguments) },
        })),
      });
    else if (t.image)
      messages.push({
        role: t.role,
        content: [
          ...(t.content ? [{ type: 'text', text: t.content }] : []),
          { type: 'image_url', image_url: { url: `data:${t.image.mimeType};base64,${t.image.data}` } },
        ],
      });
    else messages.push({ role: t.role, content: t.content });
  }
  return {
    model: r.model,
    messages,
    [p.maxTokensParam]: r.maxTokens,
    ...(r.temperature !== undefined ? { temperature: r.temperature } : {}),
    ...(r.thinkingLevel ? { reasoning_effort: r.thinkingLevel.toLowerCase() } : {}),
    ...(r.tools.length
      ? {
          tools: r.tools.map((t) => ({
            type: 'function',
            function: {
              name: t.name,
              ...(t.description ? { description: t.description } : {}),
              parameters: t.parameters ?? { type: 'object', properties: {} },
            },
          })),
          ...(r.toolChoice
            ? {
                tool_choice:
                  typeof r.toolChoice === 'string'
                    ? r.toolChoice
                    : { type: 'function', function: { name: r.toolChoice.name } },
              }
            : {}),
        }
      : {}),
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : { stream: false }),
  };
}

function openaiApply(a: Answer, o: Record<string, unknown>, streaming: boolean): void {
  inlineError(o);
  if (typeof o.model === 'string') a.model = o.model;
  const usage = obj(o.usage);
  a.input = count(usage.prompt_tokens) ?? a.input;
  a.output = count(usage.completion_tokens) ?? a.output;
  a.total = count(usage.total_tokens) ?? a.total;
  const choice = obj(arr(o.choices)[0]);
  const m = obj(streaming ? choice.delta : choice.message);
  a.add(text(m.content));
  arr(m.tool_calls).forEach((tc, i) => {
    const c = obj(tc);
    const f = obj(c.function);
    a.tool(String(streaming ? (count(c.index) ?? i) : i), {
      ...(typeof c.id === 'string' ? { id: c.id } : {}),
      ...(typeof f.name === 'string' ? { name: f.name } : {}),
      ...(typeof f.arguments === 'string'
        ? { args: f.arguments }
        : f.arguments !== undefined
          ? { value: f.arguments }
          : {}),
    });
  });
  if (typeof choice.finish_reason === 'string') a.finish = choice.finish_reason;
}

// ---------------------------------------------------------------------------------------------------
// anthropic: /v1/messages

/** One turn as Anthropic content blocks: a tool turn is a `tool_result`, an assistant's calls `tool_use`. */
function anthropicBlocks(t: ChatTurn): Record<string, unknown>[] {
  if (t.role === 'tool') return [{ type: 'tool_result', tool_use_id: t.toolCallId, content: t.content }];
  if (t.toolCalls?.length)
    return [
      ...(t.content ? [{ type: 'text', text: t.content }] : []),
      ...t.toolCalls.map((c) => ({
        type: 'tool_use',
        id: c.id,
        name: c.name,
        input: argsObject(c.arguments),
      })),
    ];
  if (t.image)
    return [
      { type: 'image', source: { type: 'base64', media_type: t.image.mimeType, data: t.image.data } },
      ...(t.content ? [{ type: 'text', text: t.content }] : []),
    ];
  return [{ type: 'text', text: t.content }];
}

/**
 * Turns as Anthropic messages: tool results travel in a user message, and consecutive turns of one role
 * are one message (the API wants every result of an assistant's calls in the user message after it).
 */
function anthropicMessages(turns: ChatTurn[]): Record<string, unknown>[] {
  const out: { role: string; content: Record<string, unknown>[] }[] = [];
  for (const t of turns) {
    if (t.role === 'system') continue;
    const role = t.role === 'assistant' ? 'assistant' : 'user';
    const last = out[out.length - 1];
    if (last?.role === role) last.content.push(...anthropicBlocks(t));
    else out.push({ role, content: anthropicBlocks(t) });
  }
  // A message of one text block is sent as plain text, as before tools came in.
  return out.map((m) =>
    m.content.length === 1 && m.content[0].type === 'text' ? { role: m.role, content: m.content[0].text } : m,
  );
}

function anthropicChoice(c: ToolChoice): Record<string, unknown> {
  if (typeof c !== 'string') return { type: 'tool', name: c.name };
  return { type: c === 'required' ? 'any' : c };
}

function anthropicBody(r: LlmRequest, stream: boolean): Record<string, unknown> {
  const system = [r.system, ...r.turns.filter((t) => t.role === 'system').map((t) => t.content)]
    .filter(Boolean)
    .join('\n\n');
  const messages = anthropicMessages(r.turns);
  // Extended thinking needs 1024 <= budget < max_tokens, and no temperature of the caller's.
  const budget = r.thinkingLevel ? Math.min(THINKING_BUDGET[r.thinkingLevel], r.maxTokens - 1) : 0;
  const thinking = budget >= 1024;
  return {
    model: r.model,
    max_tokens: r.maxTokens,
    ...(system ? { system } : {}),
    messages,
    ...(r.temperature !== undefined && !thinking ? { temperature: r.temperature } : {}),
    ...(thinking ? { thinking: { type: 'enabled', budget_tokens: budget } } : {}),
    ...(r.tools.length
      ? {
          tools: r.tools.map((t) => ({
            name: t.name,
            ...(t.description ? { description: t.description } : {}),
            input_schema: t.parameters ?? { type: 'object', properties: {} },
          })),
          ...(r.toolChoice ? { tool_choice: anthropicChoice(r.toolChoice) } : {}),
        }
      : {}),
    stream,
  };
}

function anthropicUsage(a: Answer, u: Record<string, unknown>): void {
  const input = count(u.input_tokens);
  if (input !== undefined)
    a.input = input + (count(u.cache_creation_input_tokens) ?? 0) + (count(u.cache_read_input_tokens) ?? 0);
  a.output = count(u.output_tokens) ?? a.output;
}

/** A whole (non-streamed) message. */
function anthropicMessage(a: Answer, m: Record<string, unknown>): void {
  if (m.type === 'error') inlineError(m);
  if (typeof m.model === 'string') a.model = m.model;
  anthropicUsage(a, obj(m.usage));
  arr(m.content).forEach((b, i) => {
    const block = obj(b);
    if (block.type === 'text') a.add(text(block.text));
    else if (block.type === 'tool_use')
      a.tool(String(i), { id: text(block.id), name: text(block.name), value: block.input ?? {} });
  });
  if (typeof m.stop_reason === 'string') a.finish = m.stop_reason;
}

/** One streamed event (`message_start`, `content_block_*`, `message_delta`, `error`, …). */
function anthropicEvent(a: Answer, type: string, o: Record<string, unknown>): boolean {
  switch (o.type ?? type) {
    case 'message_start': {
      const m = obj(o.message);
      if (typeof m.model === 'string') a.model = m.model;
      anthropicUsage(a, obj(m.usage));
      return false;
    }
    case 'content_block_start': {
      const b = obj(o.content_block);
      if (b.type === 'text') a.add(text(b.text));
      else if (b.type === 'tool_use') a.tool(String(o.index), { id: text(b.id), name: text(b.name) });
      return false;
    }
    case 'content_block_delta': {
      const d = obj(o.delta);
      if (d.type === 'text_delta') a.add(text(d.text));
      else if (d.type === 'input_json_delta') a.tool(String(o.index), { args: text(d.partial_json) });
      return false;
    }
    case 'message_delta': {
      const d = obj(o.delta);
      if (typeof d.stop_reason === 'string') a.finish = d.stop_reason;
      anthropicUsage(a, obj(o.usage));
      return false;
    }
    case 'message_stop':
      return true;
    case 'error':
      inlineError(o);
      throw new ProviderError('error event in the stream', 'http');
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------------------------------
// gemini: generateContent

/** A call id Gemini gave (sent back with the call and its response); ids the kernel made are not sent. */
const geminiId = (id: string | undefined): Record<string, string> =>
  id && !id.startsWith(KERNEL_CALL_ID) ? { id } : {};

/** A tool turn's content as a `functionResponse.response` object: its JSON object, else `{output: text}`. */
function geminiResponse(content: string): Record<string, unknown> {
  const v = parseArgs(content);
  return v && typeof v === 'object' && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : { output: content };
}

/** One turn as Gemini parts: a tool turn is a `functionResponse`, an assistant's calls `functionCall`s. */
function geminiParts(t: ChatTurn): Record<string, unknown>[] {
  if (t.role === 'tool')
    return [
      {
        functionResponse: {
          name: t.name ?? '',
          response: geminiResponse(t.content),
          ...geminiId(t.toolCallId),
        },
      },
    ];
  if (t.toolCalls?.length)
    return [
      ...(t.content ? [{ text: t.content }] : []),
      ...t.toolCalls.map((c) => ({
        functionCall: { name: c.name, args: argsObject(c.arguments), ...geminiId(c.id) },
      })),
    ];
  return [
    ...(t.image ? [{ inlineData: { mimeType: t.image.mimeType, data: t.image.data } }] : []),
    ...(t.content || !t.image ? [{ text: t.content }] : []),
  ];
}

function geminiChoice(c: ToolChoice): Record<string, unknown> {
  if (typeof c !== 'string') return { mode: 'ANY', allowedFunctionNames: [c.name] };
  return { mode: c === 'required' ? 'ANY' : c.toUpperCase() };
}

function geminiBody(r: LlmRequest): Record<string, unknown> {
  const system = [r.system, ...r.turns.filter((t) => t.role === 'system').map((t) => t.content)]
    .filter(Boolean)
    .join('\n\n');
  // Consecutive turns of one role are one content (all the responses to a turn's calls together).
  const contents: { role: string; parts: Record<string, unknown>[] }[] = [];
  for (const t of r.turns) {
    if (t.role === 'system') continue;
    const role = t.role === 'assistant' ? 'model' : 'user';
    const last = contents[contents.length - 1];
    if (last?.role === role) last.parts.push(...geminiParts(t));
    else contents.push({ role, parts: geminiParts(t) });
  }
  return {
    contents,
    ...(system ? { systemInstruction: { parts: [{ text: system }] } } : {}),
    generationConfig: {
      maxOutputTokens: r.maxTokens,
      ...(r.temperature !== undefined ? { temperature: r.temperature } : {}),
      ...(r.thinkingLevel ? { thinkingConfig: { thinkingBudget: THINKING_BUDGET[r.thinkingLevel] } } : {}),
    },
    ...(r.tools.length
      ? {
          tools: [
            {
              functionDeclarations: r.tools.map((t) => ({
                name: t.name,
                ...(t.description ? { description: t.description } : {}),
                ...(t.parameters ? { parameters: t.parameters } : {}),
              })),
            },
          ],
          ...(r.toolChoice ? { toolConfig: { functionCallingConfig: geminiChoice(r.toolChoice) } } : {}),
        }
      : {}),
  };
}

/** One GenerateContentResponse (a whole answer, or one streamed chunk of it). */
function geminiApply(a: Answer, o: Record<string, unknown>): void {
  inlineError(o);
  if (typeof o.modelVersion === 'string') a.model = o.modelVersion;
  const u = obj(o.usageMetadata);
  const prompt = count(u.promptTokenCount);
  if (prompt !== undefined) a.input = prompt + (count(u.toolUsePromptTokenCount) ?? 0);
  const out = count(u.candidatesTokenCount);
  const thoughts = count(u.thoughtsTokenCount);
  if (out !== undefined || thoughts !== undefined) a.output = (out ?? 0) + (thoughts ?? 0);
  a.total = count(u.totalTokenCount) ?? a.total;
  const cand = obj(arr(o.candidates)[0]);
  for (const part of arr(obj(cand.content).parts)) {
    const p = obj(part);
    if (typeof p.text === 'string' && !p.thought) a.add(p.text);
    if (p.functionCall) {
      // Gemini sends each call whole; one the provider left without an id gets the kernel's now, so
      // that a stream's first piece of it already carries the id the reply will.
      const f = obj(p.functionCall);
      a.tool(String(a.tools.size), {
        id: text(f.id) || newCallId(),
        name: text(f.name),
        value: f.args ?? {},
      });
    }
  }
  if (typeof cand.finishReason === 'string') a.finish = cand.finishReason;
  const block = obj(o.promptFeedback).blockReason;
  if (!arr(o.candidates).length && typeof block === 'string') a.finish = 'SAFETY';
}

// ---------------------------------------------------------------------------------------------------
// One call

interface Wire {
  url: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

function wire(p: ProviderConfig, r: LlmRequest): Wire {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...p.headers };
  if (p.stream) headers.accept = 'text/event-stream';
  switch (p.kind) {
    case 'openai':
      if (p.apiKey) headers.authorization = `Bearer ${p.apiKey}`;
      return { url: `${p.baseUrl}/chat/completions`, headers, body: openaiBody(p, r, p.stream) };
    case 'anthropic':
      if (p.apiKey) headers['x-api-key'] = p.apiKey;
      headers['anthropic-version'] ??= '2023-06-01';
      return { url: `${p.baseUrl}/v1/messages`, headers, body: anthropicBody(r, p.stream) };
    case 'gemini': {
      // The key goes in a header, never in the URL (URLs end up in logs).
      if (p.apiKey) headers['x-goog-api-key'] = p.apiKey;
      const model = encodeURIComponent(r.model.replace(/^models\//, ''));
      const method = p.stream ? 'streamGenerateContent?alt=sse' : 'generateContent';
      return { url: `${p.baseUrl}/models/${model}:${method}`, headers, body: geminiBody(r) };
    }
  }
}

/** The human part of a provider's error body (`error.message` in all three APIs). */
function errorText(body: string): string {
  try {
    const o = JSON.parse(body) as unknown;
    const first = Array.isArray(o) ? o[0] : o;
    const e = obj(obj(first).error);
    const msg = text(e.message) || text(obj(first).error) || text(obj(first).message);
    if (msg) return msg;
  } catch {
    // not JSON: the text itself
  }
  return body.trim();
}

function parseJson(data: string, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(data);
  } catch {
    throw new MalformedError(`${what} is not JSON`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v))
    throw new MalformedError(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** A whole answer as the deltas a stream would have given: its text in one piece, each call whole. */
function wholeDeltas(res: LlmResult, onDelta: (d: Delta) => void): void {
  if (res.content) onDelta({ content: res.content });
  res.toolCalls.forEach((c, index) =>
    onDelta({ tool_call: { index, id: c.id, name: c.name, arguments: argsText(c.arguments) } }),
  );
}

/**
 * Calls the provider and returns its whole answer. The stream is consumed as it comes (nothing but the
 * answer's text is kept) and cut once the text passes `maxContentBytes` (or far more than `maxTokens`
 * could produce). Throws ProviderError (timeout after `p.timeoutMs`, HTTP status, network, malformed)
 * or CancelledError when `signal` aborts. `onDelta` hears the answer's pieces as they arrive (a provider
 * that does not stream: the whole answer at the end, as one piece of text and each call whole).
 */
export async function callProvider(
  p: ProviderConfig,
  r: LlmRequest,
  signal: AbortSignal,
  maxContentBytes: number,
  progress: CallProgress,
  onDelta?: (d: Delta) => void,
): Promise<LlmResult> {
  const ctl = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    ctl.abort();
  }, p.timeoutMs);
  const onAbort = (): void => ctl.abort();
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  const cap = Math.min(maxContentBytes, r.maxTokens * BYTES_PER_TOKEN_BOUND);
  try {
    const w = wire(p, r);
    const res = await fetch(w.url, {
      method: 'POST',
      headers: w.headers,
      body: JSON.stringify(w.body),
      signal: ctl.signal,
      // A redirect would carry the key's header to wherever it points.
      redirect: 'error',
    });
    if (!res.ok) {
      const head = await readHead(res.body, ERROR_HEAD_BYTES).catch(() => '');
      throw new ProviderError(
        `HTTP ${res.status}${errorText(head) ? `: ${errorText(head)}` : ''}`,
        'http',
        res.status,
      );
    }
    progress.started = true;
    const type = res.headers.get('content-type') ?? '';
    if (type.includes('text/event-stream')) {
      const a = new Answer(progress, onDelta);
      for await (const ev of sseEvents(res.body!, MAX_EVENT_BYTES)) {
        if (p.kind === 'openai' && ev.data.trim() === '[DONE]') break;
        const o = parseJson(ev.data, 'a stream event');
        if (p.kind === 'openai') openaiApply(a, o, true);
        else if (p.kind === 'gemini') geminiApply(a, o);
        else if (anthropicEvent(a, ev.event, o)) break;
        if (a.bytes > cap) {
          a.finish = 'length';
          ctl.abort(); // the rest is not wanted: the provider stops generating
          break;
        }
      }
      return a.result();
    }
    // Not streamed (`stream: false`, or a server that ignores it): one JSON body.
    const a = new Answer(progress);
    const o = parseJson(await readCapped(res.body, MAX_BODY_BYTES), 'the reply');
    if (p.kind === 'openai') openaiApply(a, o, false);
    else if (p.kind === 'gemini') geminiApply(a, o);
    else anthropicMessage(a, o);
    const whole = a.result();
    if (onDelta) wholeDeltas(whole, onDelta);
    return whole;
  } catch (e) {
    if (timedOut) throw new ProviderError(`no complete answer within ${p.timeoutMs} ms`, 'timeout');
    if (signal.aborted) throw new CancelledError();
    if (e instanceof ProviderError) throw e;
    if (e instanceof MalformedError) throw new ProviderError(e.message, 'malformed');
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    throw new ProviderError(
      `unreachable: ${cause?.code ?? cause?.message ?? (e as Error).message}`,
      'network',
    );
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}
