/**
 * THINK, THINK_STREAM and LLM_REPORT behind the handlers: rights and quotas, the choice of provider, the
 * fair scheduler, the call, and the accounting from the provider's own usage figures. A streamed THINK
 * is admitted and counted exactly as THINK is; only its answer travels differently (streams.ts).
 *
 * Quotas (`llm` in the caller's rights, 0 = unlimited): before a call, `calls_made` (plus the caller's
 * calls already admitted) must be below `max_calls`, and `tokens_used` plus what is admitted plus this
 * call's estimate (its input at ~4 characters a token, plus its `max_tokens`) must not pass
 * `max_tokens`. After it, `calls_made` and `tokens_used` grow by what the provider reported.
 *
 * The resource quotas `llm_calls`/`llm_tokens` (kernel/quotas, SET_QUOTA) are counted beside them, per
 * identity and per service, from the same provider figures (LLM_REPORT never counts there): a call must
 * pass both; a reached `deny` quota refuses the call before a provider is asked.
 */
import {
  UpstreamFailedError,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
  QuotaExceededError,
  type Caller,
  type KernelError,
  type Permissions,
  type Services,
  type SyscallContext,
} from '../../core/family.js';
import type { ArgsOf, Replies } from '../../../protocol/index.js';
import { serves, type LlmConfig, type ProviderConfig } from './config.js';
import {
  callProvider,
  normalizeFinish,
  ProviderError,
  type CallProgress,
  type ChatTurn,
  type Delta,
  type LlmRequest,
  type LlmResult,
  type ToolCall,
  type ToolDecl,
} from './providers.js';
import { CancelledError, FairScheduler } from './scheduler.js';
import { ThinkStreams, type NextReply } from './streams.js';

export type ThinkRequest = ArgsOf['THINK'];
export type ThinkResult = Replies['THINK'];
export type ReportResult = Replies['LLM_REPORT'];

/** The longest a THINK_STREAM_NEXT waits in the kernel (a larger `wait_ms` is cut to it). */
export const MAX_NEXT_WAIT_MS = 60_000;

/** A call past its checks: the provider, the call in its neutral shape, and the estimate admitted. */
interface Prepared {
  p: ProviderConfig;
  llmReq: LlmRequest;
  estimate: { input: number; total: number };
  rights: Permissions;
}

/** What a THINK needs of its caller: who it is, and when to give up (the connection closing). */
export interface ThinkCall {
  caller: Caller;
  signal: AbortSignal;
  /** The connection's blocking wait (the watchdog counts it as activity); absent: a plain await. */
  park?: SyscallContext['park'];
}

const IMAGE_TOKENS = 1000;
const MIME = /^image\/[a-z0-9.+-]+$/i;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/** Roughly a token per 4 characters: the estimate admitted before the call. */
const tokensOf = (chars: number): number => Math.ceil(chars / 4);

interface Usage {
  calls: number;
  tokens: number;
}

export class LlmService {
  private readonly scheduler: FairScheduler;
  private readonly byName = new Map<string, ProviderConfig>();
  /** Calls admitted and not finished, and their estimated tokens, per caller. */
  private readonly admitted = new Map<number, Usage>();
  /** Self-reported usage (LLM_REPORT) per caller, this kernel run (callers gone for good are purged). */
  private readonly selfReported = new Map<number, Usage>();
  /** Secrets that must never appear in a reply (keys, extra headers). */
  private readonly secrets: string[];
  private readonly streams: ThinkStreams;
  /** Connections whose closing already drops their (client) caller's streams. */
  private readonly hooked = new WeakSet<AbortSignal>();
  private readonly untap: () => void;

  constructor(
    private readonly cfg: LlmConfig,
    private readonly services: Services,
  ) {
    for (const p of cfg.providers) this.byName.set(p.name, p);
    this.scheduler = new FairScheduler({
      maxConcurrency: cfg.maxConcurrency,
      maxQueuePerOwner: cfg.maxQueuePerAgent,
      laneCap: (lane) => this.byName.get(lane)?.maxConcurrency ?? 1,
    });
    this.secrets = cfg.providers
      .flatMap((p) => [p.apiKey ?? '', ...Object.values(p.headers)])
      .filter((s) => s.length >= 6)
      .sort((a, b) => b.length - a.length);
    this.streams = new ThinkStreams({ maxPerOwner: cfg.maxStreamsPerAgent, idleMs: cfg.streamIdleMs });
    // An agent's streams end with its process (an exit before a restart too): nobody will read them.
    this.untap = services.events.tap((type, data) => {
      if (type === 'AGENT_EXITED' && typeof data.agent_id === 'number') this.streams.dropOwner(data.agent_id);
    });
  }

  close(): void {
    this.untap();
    this.streams.close();
    this.scheduler.close();
  }

  stats(): ReturnType<FairScheduler['stats']> {
    return this.scheduler.stats();
  }

  /** One THINK, start to finish; the reply, or a KernelError. Reusable for `async: true` (the lead's). */
  async think(call: ThinkCall, req: ThinkRequest): Promise<ThinkResult> {
    const id = call.caller.id;
    const prep = this.prepare(call.caller, req);
    const held = this.admit(id, prep.rights, prep.estimate);
    return this.execute(id, prep, held, call.signal, undefined, (pending) => this.wait(call, pending));
  }

  /**
   * THINK_STREAM: the checks and admission of THINK, then the call goes on in the background and its
   * stream's id is the reply, at once. Everything THINK would refuse before calling a provider is
   * refused here, as THINK refuses it (and audited by the dispatcher as any refusal is).
   */
  thinkStream(ctx: SyscallContext, req: ThinkRequest): Replies['THINK_STREAM'] {
    const { caller } = ctx;
    if (req.async)
      throw new InvalidRequestError(
        'invalid request: THINK_STREAM has no async form (its reply is already immediate)',
      );
    const prep = this.prepare(caller, req);
    this.streams.checkRoom(caller.id);
    this.scheduler.checkRoom(caller.id);
    const held = this.admit(caller.id, prep.rights, prep.estimate);
    const streamId = this.streams.open(caller.id, (signal, onDelta) =>
      this.journaledStream(ctx, req, held, onDelta, (onPiece) =>
        this.execute(caller.id, prep, held, signal, onPiece),
      ),
    );
    // A client's identity is its connection: its streams go with it. An agent's outlive a connection
    // (any of its connections may read them) and go when the agent ends (the AGENT_EXITED tap).
    if (caller.role !== 'agent' && !this.hooked.has(ctx.signal)) {
      this.hooked.add(ctx.signal);
      ctx.onClose(() => this.streams.dropOwner(caller.id));
    }
    return { success: true, stream_id: streamId, provider: prep.p.name };
  }

  /**
   * A stream's call, through the journal (docs/durable.md): outside a step it is just `live`. Inside one,
   * the whole answer — its pieces as they came, and THINK's reply — is the step's entry, journaled when
   * the call completes; a replay gives the same pieces (same boundaries) and the same reply without a
   * provider call or a charge. A call that failed or was cut short is not journaled (made again).
   */
  private async journaledStream(
    ctx: SyscallContext,
    req: ThinkRequest,
    held: Usage,
    onDelta: (d: Delta) => void,
    live: (onPiece: (d: Delta) => void) => Promise<ThinkResult>,
  ): Promise<ThinkResult> {
    let ran = false;
    let out: unknown;
    try {
      out = await this.services.journal.run(ctx, 'THINK_STREAM', req, async () => {
        ran = true;
        const deltas: Delta[] = [];
        const result = await live((d) => {
          deltas.push(d);
          onDelta(d);
        });
        return { success: true, deltas, result };
      });
    } catch (e) {
      // Refused by the journal (a divergence, a full journal) before anything was called.
      if (!ran) this.release(ctx.caller.id, held);
      throw e;
    }
    if (ran || !Buffer.isBuffer(out)) return (out as { result: ThinkResult }).result;
    // Answered from the journal: nothing was called, nothing is held any more.
    this.release(ctx.caller.id, held);
    const journaled = JSON.parse(out.toString('utf8')) as { deltas: Delta[]; result: ThinkResult };
    for (const d of journaled.deltas) onDelta(d);
    return journaled.result;
  }

  /** THINK_STREAM_NEXT: the caller's stream's pieces, waited for in the kernel (parked) up to `waitMs`. */
  streamNext(ctx: SyscallContext, streamId: number, waitMs: number): Promise<NextReply> {
    return this.streams.next(
      ctx.caller.id,
      streamId,
      Math.min(waitMs, MAX_NEXT_WAIT_MS),
      (ready, wait, ms) => ctx.park(ready, wait, ms),
      ctx.signal,
    );
  }

  /** THINK_STREAM_CANCEL: the caller's stream ends; a call still waiting or running is aborted. */
  streamCancel(caller: Caller, streamId: number): Replies['THINK_STREAM_CANCEL'] {
    return this.streams.cancel(caller.id, streamId);
  }

  /** LLM_REPORT: the caller's own account of a call made outside the kernel. Counted, never trusted. */
  report(caller: Caller, tokens: number): ReportResult {
    const { principals } = this.services;
    const rights = principals.rights(caller.id) ?? caller.perms;
    const q = rights.llm;
    // As the public kernel did: whether the quota allowed it is decided before recording, and the
    // tokens are recorded either way (they were spent).
    const overCalls = q.max_calls > 0 && q.calls_made >= q.max_calls;
    const over = overCalls || (q.max_tokens > 0 && q.tokens_used + tokens > q.max_tokens);
    const before = `tokens_used ${q.tokens_used} of ${q.max_tokens}, calls_made ${q.calls_made} of ${q.max_calls}`;
    this.record(caller.id, 1, tokens, true);
    const now = principals.rights(caller.id) ?? rights;
    const extra = {
      tokens,
      self_reported: true,
      tokens_used: now.llm.tokens_used,
      self_reported_tokens: this.selfReported.get(caller.id)?.tokens ?? tokens,
    };
    if (!rights.can_think)
      throw new PermissionDeniedError('Permission denied: LLM calls not allowed (can_think)', {
        ...extra,
        quota_exceeded: false,
      });
    if (over)
      throw new QuotaExceededError(
        `quota exceeded: LLM quota (before this report: ${before}); recorded anyway`,
        {
          ...extra,
          quota_exceeded: true,
          budget: overCalls ? 'llm.max_calls' : 'llm.max_tokens',
        },
      );
    return { success: true, quota_exceeded: false, ...extra } as ReportResult;
  }

  // -------------------------------------------------------------------------------------------------

  /** What every call passes before anything is held: the right to think, a provider, a valid request, the resource quotas. */
  private prepare(caller: Caller, req: ThinkRequest): Prepared {
    const rights = this.services.principals.rights(caller.id) ?? caller.perms;
    if (!rights.can_think)
      throw new PermissionDeniedError('Permission denied: LLM calls not allowed (can_think)');
    const p = this.provider(req);
    const llmReq = this.request(p, req);
    const estimate = this.estimate(llmReq);
    // Resource quotas (docs/protocol.md "Quotas"): a reached deny quota refuses before any provider call.
    this.services.quotas.check(caller.id, 'llm_calls');
    this.services.quotas.check(caller.id, 'llm_tokens');
    return { p, llmReq, estimate, rights };
  }

  /**
   * Runs an admitted call through the fair scheduler and counts it, once: the provider's usage when it
   * answered, the estimate of what it spent when it failed after it began answering. `wait` is how the
   * caller waits (THINK parks); `onDelta` hears the answer's pieces (THINK_STREAM).
   */
  private async execute(
    id: number,
    { p, llmReq, estimate }: Prepared,
    held: Usage,
    signal: AbortSignal,
    onDelta?: (d: Delta) => void,
    wait?: (pending: Promise<LlmResult>) => Promise<LlmResult>,
  ): Promise<ThinkResult> {
    const progress: CallProgress = { started: false, outputChars: 0 };
    let result: LlmResult | undefined;
    try {
      const pending = this.scheduler.submit(id, p.name, signal, (s) =>
        callProvider(p, llmReq, s, this.cfg.maxContentBytes, progress, onDelta),
      );
      result = await (wait ? wait(pending) : pending);
    } catch (e) {
      // Tokens the provider may have spent on an answer nobody saw are charged as estimated.
      if (progress.started) this.record(id, 1, estimate.input + tokensOf(progress.outputChars), false);
      throw this.failure(p, e);
    } finally {
      this.release(id, held);
    }
    return this.reply(id, p, llmReq, result, estimate.input);
  }

  private provider(req: ThinkRequest): ProviderConfig {
    const cfg = this.cfg;
    if (!cfg.providers.length)
      throw new NotFoundError(
        cfg.error ??
          'no LLM provider configured (the operator sets CLOVE_LLM_PROVIDERS or writes <data-dir>/llm.json)',
      );
    if (req.provider) {
      const p = this.byName.get(req.provider);
      if (!p) throw new NotFoundError(`no LLM provider named '${req.provider}'`);
      if (req.model && p.models.length && !serves(p, req.model))
        throw new NotFoundError(`LLM provider '${p.name}' does not serve model '${req.model}'`);
      return p;
    }
    if (req.model) {
      const p = cfg.providers.find((x) => serves(x, req.model!));
      if (p) return p;
    }
    const p = this.byName.get(cfg.defaultProvider!)!;
    if (req.model && p.models.length && !serves(p, req.model))
      throw new NotFoundError(`no LLM provider serves model '${req.model}'`);
    return p;
  }

  /** The provider-neutral call for a THINK request (its checks are the ones a schema cannot make). */
  private request(p: ProviderConfig, req: ThinkRequest): LlmRequest {
    const turns = chatTurns(req.messages ?? []);
    let image: ChatTurn['image'];
    if (req.image) {
      const mimeType = req.image.mime_type || 'image/jpeg';
      if (!MIME.test(mimeType))
        throw new InvalidRequestError(`invalid request: image.mime_type '${mimeType}' is not an image type`);
      const data = req.image.data.replace(/\s+/g, '');
      if (!data || !BASE64.test(data))
        throw new InvalidRequestError('invalid request: image.data must be base64');
      image = { data, mimeType };
    }
    if (req.prompt || image)
      turns.push({ role: 'user', content: req.prompt ?? '', ...(image ? { image } : {}) });
    if (!turns.some((t) => t.role !== 'system'))
      throw new InvalidRequestError('invalid request: prompt or messages required');
    const tools = (req.tools ?? []).flatMap(toolDecls);
    const choice = req.tool_choice;
    if (choice && choice !== 'auto' && choice !== 'none' && !tools.length)
      throw new InvalidRequestError(
        `invalid request: tool_choice ${JSON.stringify(choice)} needs tools to choose from`,
      );
    if (choice && typeof choice === 'object' && !tools.some((t) => t.name === choice.name))
      throw new InvalidRequestError(
        `invalid request: tool_choice names '${choice.name}', which is not in tools`,
      );
    return {
      model: req.model || p.defaultModel,
      ...(req.system_instruction ? { system: req.system_instruction } : {}),
      turns,
      maxTokens: req.max_tokens || p.maxTokens,
      ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
      ...(req.thinking_level ? { thinkingLevel: req.thinking_level } : {}),
      tools,
      ...(choice ? { toolChoice: choice } : {}),
    };
  }

  private estimate(r: LlmRequest): { input: number; total: number } {
    let chars = (r.system ?? '').length + JSON.stringify(r.tools).length;
    let images = 0;
    for (const t of r.turns) {
      chars += t.content.length;
      if (t.toolCalls) chars += JSON.stringify(t.toolCalls).length;
      if (t.image) images++;
    }
    const input = tokensOf(chars) + images * IMAGE_TOKENS;
    return { input, total: input + r.maxTokens };
  }

  /** Admits a call against the quota, holding its estimate until it ends (concurrent calls cannot overshoot). */
  private admit(id: number, rights: Permissions, estimate: { total: number }): Usage {
    const q = rights.llm;
    const held = this.admitted.get(id) ?? { calls: 0, tokens: 0 };
    if (q.max_calls > 0 && q.calls_made + held.calls >= q.max_calls)
      throw new QuotaExceededError(
        `quota exceeded: LLM calls (budget llm.max_calls: ${q.calls_made + held.calls} of ${q.max_calls})`,
        { budget: 'llm.max_calls', used: q.calls_made + held.calls, limit: q.max_calls },
      );
    if (q.max_tokens > 0 && q.tokens_used + held.tokens + estimate.total > q.max_tokens)
      throw new QuotaExceededError(
        `quota exceeded: LLM tokens (budget llm.max_tokens: ${q.tokens_used + held.tokens} used or held + ${estimate.total} estimated for this call > ${q.max_tokens}; ask for fewer max_tokens)`,
        {
          budget: 'llm.max_tokens',
          used: q.tokens_used + held.tokens,
          limit: q.max_tokens,
          estimate: estimate.total,
        },
      );
    held.calls++;
    held.tokens += estimate.total;
    this.admitted.set(id, held);
    return { calls: 1, tokens: estimate.total };
  }

  private release(id: number, u: Usage): void {
    const held = this.admitted.get(id);
    if (!held) return;
    held.calls -= u.calls;
    held.tokens -= u.tokens;
    if (held.calls <= 0) this.admitted.delete(id);
  }

  /** Counts usage in the caller's rights, in place, and persists them (an agent's quota outlives a kernel restart). */
  private record(id: number, calls: number, tokens: number, selfReported: boolean): void {
    const { principals } = this.services;
    // The resource quotas count only what the kernel saw the provider spend, never a self-report.
    if (!selfReported) {
      this.services.quotas.charge(id, 'llm_calls', calls);
      this.services.quotas.charge(id, 'llm_tokens', tokens);
    }
    const rights = principals.rights(id);
    if (!rights) return; // the caller is gone for good
    rights.llm.calls_made += calls;
    rights.llm.tokens_used += tokens;
    if (selfReported) {
      if (!this.selfReported.has(id) && this.selfReported.size >= 1024)
        for (const other of this.selfReported.keys())
          if (!principals.hasRights(other)) this.selfReported.delete(other);
      const s = this.selfReported.get(id) ?? { calls: 0, tokens: 0 };
      s.calls += calls;
      s.tokens += tokens;
      this.selfReported.set(id, s);
    }
    principals.setRights(id, rights);
  }

  /** Waits for the scheduled call in the kernel: parked (watchdog activity), given up when the connection closes. */
  private async wait(call: ThinkCall, pending: Promise<LlmResult>): Promise<LlmResult> {
    let settled = false;
    const done = pending.then(
      () => (settled = true),
      () => (settled = true),
    );
    if (call.park)
      await call.park(
        () => settled,
        (_ms, signal) =>
          new Promise<void>((resolve) => {
            const onAbort = (): void => resolve();
            signal.addEventListener('abort', onAbort, { once: true });
            void done.then(() => {
              signal.removeEventListener('abort', onAbort);
              resolve();
            });
          }),
        Number.MAX_SAFE_INTEGER,
      );
    // Closed while parked: the scheduler cancels the call (queued or running); this reply goes nowhere.
    return pending;
  }

  private reply(
    id: number,
    p: ProviderConfig,
    r: LlmRequest,
    res: LlmResult,
    inputEstimate: number,
  ): ThinkResult {
    let input = res.inputTokens;
    let output = res.outputTokens;
    const estimated = input === undefined && output === undefined && res.totalTokens === undefined;
    if (estimated) {
      input = inputEstimate;
      output = tokensOf(res.content.length + JSON.stringify(res.toolCalls).length - 2);
    }
    input ??= 0;
    output ??= Math.max(0, (res.totalTokens ?? 0) - input);
    const tokens = Math.max(res.totalTokens ?? 0, input + output);
    this.record(id, 1, tokens, false);
    const finish = normalizeFinish(res.finishReason ?? 'stop');
    return {
      success: true,
      content: res.content,
      tokens,
      input_tokens: input,
      output_tokens: output,
      provider: p.name,
      model: res.model ?? r.model,
      // Gemini says STOP when it called a tool; the reply says tool_calls, as OpenAI and Anthropic do.
      finish_reason: res.toolCalls.length && finish === 'stop' ? 'tool_calls' : finish,
      ...(res.toolCalls.length ? { tool_calls: res.toolCalls } : {}),
      ...(estimated ? { usage_estimated: true } : {}),
    };
  }

  /** A failed call as an error reply: what went wrong with which provider, never a key. */
  private failure(p: ProviderConfig, e: unknown): unknown {
    if (e instanceof CancelledError || e instanceof QuotaExceededError) return e;
    if (!(e instanceof ProviderError)) return e;
    const extra = { provider: p.name, reason: e.reason, ...(e.status ? { status: e.status } : {}) };
    const msg = `LLM provider '${p.name}' failed: ${this.redact(e.message).slice(0, 500)}`;
    let err: KernelError;
    if (e.reason === 'http' && (e.status === 400 || e.status === 413 || e.status === 422))
      err = new InvalidRequestError(msg, extra);
    else if (e.reason === 'http' && e.status === 404) err = new NotFoundError(msg, extra);
    else if (e.reason === 'http' && e.status === 429)
      err = new QuotaExceededError(msg, { ...extra, budget: 'provider_rate_limit' });
    // No wire code says "the upstream service failed" yet: `internal` with `reason` (docs/protocol.md THINK).
    else err = new UpstreamFailedError(msg, extra);
    return err;
  }

  private redact(s: string): string {
    for (const secret of this.secrets) s = s.split(secret).join('[redacted]');
    return s;
  }
}

/**
 * THINK's `messages` as provider-neutral turns, with the checks a schema cannot make: a tool turn names
 * the call it answers (and gets that call's tool name when it gives none: Gemini needs it), only an
 * assistant turn carries calls, and every call has an id (a tool turn must be able to name it).
 */
function chatTurns(messages: NonNullable<ThinkRequest['messages']>): ChatTurn[] {
  const names = new Map<string, string>();
  return messages.map((m, i) => {
    const where = `messages[${i}]`;
    if (m.tool_calls && m.role !== 'assistant')
      throw new InvalidRequestError(`invalid request: ${where}: only an assistant turn has tool_calls`);
    if (m.role === 'tool') {
      if (!m.tool_call_id)
        throw new InvalidRequestError(
          `invalid request: ${where}: a tool turn needs tool_call_id (the id of the call it answers)`,
        );
      const name = m.name || names.get(m.tool_call_id);
      return {
        role: 'tool',
        content: m.content,
        toolCallId: m.tool_call_id,
        ...(name ? { name } : {}),
      } satisfies ChatTurn;
    }
    if (m.role === 'assistant' && m.tool_calls?.length) {
      const toolCalls: ToolCall[] = m.tool_calls.map((c, k) => {
        if (!c.id)
          throw new InvalidRequestError(
            `invalid request: ${where}.tool_calls[${k}]: id is required (THINK's reply gave one)`,
          );
        names.set(c.id, c.name);
        return { id: c.id, name: c.name, arguments: c.arguments };
      });
      return { role: 'assistant', content: m.content, toolCalls } satisfies ChatTurn;
    }
    return { role: m.role, content: m.content } satisfies ChatTurn;
  });
}

/** A THINK `tools` item as function declarations: `{name, description, parameters}`, OpenAI's shape, or Gemini's. */
function toolDecls(t: Record<string, unknown>): ToolDecl[] {
  if (Array.isArray(t.functionDeclarations))
    return t.functionDeclarations.flatMap((f) => toolDecls(f as Record<string, unknown>));
  const f = (
    t.type === 'function' && t.function && typeof t.function === 'object' ? t.function : t
  ) as Record<string, unknown>;
  if (typeof f.name !== 'string' || !f.name)
    throw new InvalidRequestError(
      'invalid request: every tool needs a name (`{name, description, parameters}`)',
    );
  const params = f.parameters ?? f.input_schema;
  if (params !== undefined && (!params || typeof params !== 'object' || Array.isArray(params)))
    throw new InvalidRequestError(
      `invalid request: tool '${f.name}': parameters must be a JSON schema object`,
    );
  return [
    {
      name: f.name,
      ...(typeof f.description === 'string' ? { description: f.description } : {}),
      ...(params ? { parameters: params as Record<string, unknown> } : {}),
    },
  ];
}
