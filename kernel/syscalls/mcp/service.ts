/**
 * The kernel as an MCP client (docs/mcp.md): one connection per server the operator declared, made with
 * the official SDK (`@modelcontextprotocol/sdk`, loaded on first use so that a kernel without servers
 * never loads it), started when first needed, and started again with backoff when it fails. Behind the
 * handlers: who may list and call which tool (`permissions.mcp`), the `mcp_calls` quota, calls in flight
 * (per caller, per server), timeouts, result sizes, and an audit entry for every call.
 */
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import type { ArgsOf, McpServerStatus, McpTool, Replies } from '../../../protocol/index.js';
import {
  InvalidRequestError,
  KernelError,
  mcpGranted,
  mcpServerGranted,
  NotFoundError,
  PermissionDeniedError,
  QuotaExceededError,
  TooLargeError,
  UpstreamFailedError,
  type Caller,
  type Services,
  type SyscallContext,
} from '../../core/family.js';
import type { McpConfig, ServerConfig } from './config.js';

type ListReply = Replies['MCP_LIST_TOOLS'];
type CallReply = Replies['MCP_CALL'];
type State = McpServerStatus['state'];

/** Backoff between starts of a failing server: 500 ms doubling to 30 s. */
const BACKOFF_INITIAL_MS = 500;
const BACKOFF_MAX_MS = 30_000;
/** Failures in a row after which the kernel stops starting a server on its own (a call starts it again). */
const MAX_AUTO_RESTARTS = 5;
/** A connection that lived this long was healthy: its loss starts the backoff afresh. */
const HEALTHY_MS = 60_000;
/** Tools kept per server (pages of tools/list read at most). */
const MAX_TOOLS = 1000;
const MAX_PAGES = 20;
/** Bytes of a server's stderr kept to explain why it failed. */
const STDERR_TAIL = 2048;

/** The SDK's parts the kernel uses, imported once, on first use. */
interface Sdk {
  Client: typeof import('@modelcontextprotocol/sdk/client/index.js').Client;
  StdioClientTransport: typeof import('@modelcontextprotocol/sdk/client/stdio.js').StdioClientTransport;
  StreamableHTTPClientTransport: typeof import('@modelcontextprotocol/sdk/client/streamableHttp.js').StreamableHTTPClientTransport;
  McpError: typeof import('@modelcontextprotocol/sdk/types.js').McpError;
  ErrorCode: typeof import('@modelcontextprotocol/sdk/types.js').ErrorCode;
}
let sdkLoaded: Promise<Sdk> | undefined;
function loadSdk(): Promise<Sdk> {
  sdkLoaded ??= Promise.all([
    import('@modelcontextprotocol/sdk/client/index.js'),
    import('@modelcontextprotocol/sdk/client/stdio.js'),
    import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
    import('@modelcontextprotocol/sdk/types.js'),
  ]).then(([c, s, h, t]) => ({
    Client: c.Client,
    StdioClientTransport: s.StdioClientTransport,
    StreamableHTTPClientTransport: h.StreamableHTTPClientTransport,
    McpError: t.McpError,
    ErrorCode: t.ErrorCode,
  }));
  return sdkLoaded;
}

/** Statuses whose responses carry no body (a Response cannot be built around one). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

/**
 * fetch for an HTTP server: every response body is cut off (the stream errors) past `limit` bytes, so a
 * server cannot make the kernel buffer without bound; the SDK sees a failed response.
 */
function boundedFetch(limit: number): (url: string | URL, init?: RequestInit) => Promise<Response> {
  return async (url, init) => {
    const res = await fetch(url, init);
    if (!res.body || NULL_BODY.has(res.status)) return res;
    let seen = 0;
    const body = res.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, ctl) {
          seen += chunk.byteLength;
          if (seen > limit) ctl.error(new Error(`response of the MCP server larger than ${limit} bytes`));
          else ctl.enqueue(chunk);
        },
      }),
    );
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

/**
 * One declared server and the kernel's connection to it. States: idle (never started) → starting →
 * ready; a failed start or a lost connection → backoff (started again on a timer, 500 ms doubling to
 * 30 s) or, after MAX_AUTO_RESTARTS failures in a row, failed (the next call starts it again).
 */
export class ServerLink {
  state: State = 'idle';
  /** Connections made again after a failure. */
  restarts = 0;
  tools: Tool[] = [];
  lastError: string | undefined;
  inFlight = 0;
  private failures = 0;
  private everConnected = false;
  private connectedAt = 0;
  private retryAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private client: Client | undefined;
  /** Starts finished (successfully or not): a caller that saw one fail since it came gives up. */
  private attempts = 0;
  private waiters: (() => void)[] = [];
  private stderrTail = '';
  private closed = false;

  constructor(
    readonly cfg: ServerConfig,
    private readonly o: { version: string; log: Services['log'] },
  ) {}

  get name(): string {
    return this.cfg.name;
  }

  status(): McpServerStatus {
    return {
      name: this.name,
      transport: this.cfg.transport,
      state: this.state,
      restarts: this.restarts,
      ...(this.state === 'ready' || this.everConnected ? { tools: this.tools.length } : {}),
      ...(this.state === 'backoff' ? { retry_in_ms: Math.max(0, this.retryAt - Date.now()) } : {}),
      ...(this.lastError && this.state !== 'ready' ? { error: this.redact(this.lastError) } : {}),
    };
  }

  /**
   * The connected client: at once when ready; else the server is started (idle, failed) or its
   * restart waited for (starting, backoff) until `deadline`. Throws upstream_failed when a start made
   * while waiting failed, or the deadline passed.
   */
  async connected(deadline: number, signal: AbortSignal): Promise<Client> {
    const seen = this.attempts;
    for (;;) {
      if (this.closed) throw this.error('the kernel is stopping', 'closed');
      if (this.state === 'ready' && this.client) return this.client;
      if (this.attempts > seen) throw this.error(`cannot be started: ${this.lastError}`, 'start');
      if (this.state === 'idle' || this.state === 'failed') this.begin();
      const left = deadline - Date.now();
      if (left <= 0 || signal.aborted) {
        const why =
          this.state === 'backoff'
            ? `is restarting after a failure (${this.lastError}); next attempt in ${Math.max(0, this.retryAt - Date.now())} ms`
            : 'did not start in time';
        throw this.error(why, 'timeout');
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, left);
        function done() {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        }
        signal.addEventListener('abort', done, { once: true });
        this.waiters.push(done);
      });
    }
  }

  /** Calls one tool; the result as the server gave it, or a KernelError saying what went wrong. */
  async call(
    tool: string,
    args: Record<string, unknown>,
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<CallToolResult> {
    const deadline = Date.now() + timeoutMs;
    const client = await this.connected(deadline, signal);
    if (!this.tools.some((t) => t.name === tool)) {
      await this.refresh(client, deadline);
      if (!this.tools.some((t) => t.name === tool))
        throw new NotFoundError(`MCP server '${this.name}' has no tool '${tool}'`, {
          server: this.name,
          tool,
        });
    }
    const { McpError, ErrorCode } = await loadSdk();
    // A signal of this call's own: the SDK never removes the listener it adds to the one it is given, and
    // the caller's (its connection's) lives on.
    const own = new AbortController();
    const abort = () => own.abort();
    signal.addEventListener('abort', abort, { once: true });
    try {
      const r = await client.callTool({ name: tool, arguments: args }, undefined, {
        timeout: Math.max(1, deadline - Date.now()),
        signal: own.signal,
      });
      this.failures = 0;
      // A server of the 2024-10-07 protocol answers `toolResult`: its value as one text block.
      if ('toolResult' in r)
        return { content: [{ type: 'text', text: JSON.stringify(r.toolResult) }], isError: false };
      return r as CallToolResult;
    } catch (e) {
      if (e instanceof KernelError) throw e;
      const extra = { server: this.name, tool };
      if (e instanceof McpError) {
        if (e.code === ErrorCode.RequestTimeout)
          throw this.error(`did not answer '${tool}' within ${timeoutMs} ms`, 'timeout', extra);
        if (e.code === ErrorCode.ConnectionClosed)
          throw this.error(
            `closed the connection during '${tool}'${this.lastError ? ` (${this.lastError})` : ''}`,
            'closed',
            extra,
          );
        if (e.code === ErrorCode.InvalidParams)
          throw new InvalidRequestError(
            this.redact(
              `invalid request: MCP server '${this.name}' refused the call of '${tool}': ${e.message}`,
            ),
            { ...extra, mcp_code: e.code },
          );
        throw this.error(`failed '${tool}': ${e.message}`, 'error', { ...extra, mcp_code: e.code });
      }
      if (signal.aborted)
        throw this.error(`call of '${tool}' cancelled: the caller went away`, 'closed', extra);
      throw this.error(`failed '${tool}': ${(e as Error).message}`, 'error', extra);
    } finally {
      signal.removeEventListener('abort', abort);
    }
  }

  /** Stops the connection (its process, for a stdio server) for good: the kernel is stopping. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.notify();
    const c = this.client;
    this.client = undefined;
    await c?.close().catch(() => {});
  }

  private error(why: string, reason: string, extra: Record<string, unknown> = {}): UpstreamFailedError {
    return new UpstreamFailedError(this.redact(`MCP server '${this.name}' ${why}`), {
      server: this.name,
      reason,
      ...extra,
    });
  }

  /** The text with every configured secret (headers', environment values) replaced: replies reach agents. */
  private redact(text: string): string {
    const c = this.cfg;
    const secrets = Object.values(c.transport === 'http' ? c.headers : c.env)
      .flatMap((v) => [v, ...v.split(/\s+/)])
      .filter((v) => v.length >= 6)
      .sort((a, b) => b.length - a.length);
    let out = text;
    for (const v of secrets) out = out.split(v).join('[redacted]');
    return out;
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private setState(s: State): void {
    this.state = s;
    this.notify();
  }

  /** Starts the server unless it is starting already. */
  private begin(): void {
    if (this.state === 'starting' || this.closed) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.setState('starting');
    void this.start();
  }

  private transportFor(sdk: Sdk) {
    const c = this.cfg;
    if (c.transport === 'http')
      return new sdk.StreamableHTTPClientTransport(new URL(c.url), {
        requestInit: { headers: c.headers },
        fetch: boundedFetch(c.maxResultBytes * 2 + 1024 * 1024),
      });
    const t = new sdk.StdioClientTransport({
      command: c.command,
      args: c.args,
      env: c.env,
      ...(c.cwd ? { cwd: c.cwd } : {}),
      stderr: 'pipe',
      // One JSON-RPC message may be at most this large; a larger one closes the connection.
      maxBufferSize: c.maxResultBytes * 2 + 1024 * 1024,
    });
    this.stderrTail = '';
    t.stderr?.on('data', (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString('utf8')).slice(-STDERR_TAIL);
    });
    return t;
  }

  /** Connects (handshake and tool list, within `startup_timeout_ms`); a failure schedules the next try. */
  private async start(): Promise<void> {
    let client: Client | undefined;
    try {
      const sdk = await loadSdk();
      client = new sdk.Client(
        { name: 'clove-kernel', version: this.o.version },
        {
          capabilities: {},
          listChanged: {
            tools: {
              onChanged: (err, tools) => {
                if (!err && tools && this.client === client) this.tools = tools.slice(0, MAX_TOOLS);
              },
            },
          },
        },
      );
      const c = client;
      c.onclose = () => {
        if (this.client === c) this.lost('the connection was lost');
      };
      c.onerror = (e) => {
        this.lastError = e.message;
      };
      const deadline = Date.now() + this.cfg.startupTimeoutMs;
      await c.connect(this.transportFor(sdk), { timeout: this.cfg.startupTimeoutMs });
      await this.refresh(c, deadline);
    } catch (e) {
      const c = client;
      client = undefined;
      await c?.close().catch(() => {});
      this.failed(this.describe(e));
      return;
    } finally {
      this.attempts++;
    }
    if (this.closed) {
      await client.close().catch(() => {});
      return;
    }
    if (this.everConnected) this.restarts++;
    this.everConnected = true;
    this.connectedAt = Date.now();
    this.client = client;
    this.lastError = undefined;
    this.o.log.info(
      { mcp_server: this.name, tools: this.tools.length, restarts: this.restarts },
      'MCP server connected',
    );
    this.setState('ready');
  }

  /** Reads the server's tools (every page, up to MAX_TOOLS) into the cache. */
  private async refresh(client: Client, deadline: number): Promise<void> {
    const tools: Tool[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_PAGES && tools.length < MAX_TOOLS; page++) {
      const r = await client.listTools(cursor ? { cursor } : {}, {
        timeout: Math.max(1, deadline - Date.now()),
      });
      tools.push(...r.tools);
      cursor = r.nextCursor;
      if (!cursor) break;
    }
    this.tools = tools.slice(0, MAX_TOOLS);
  }

  /** A failure's text, with what the server last wrote on stderr (why a process would not start). */
  private describe(e: unknown): string {
    const msg = (e as Error)?.message ?? String(e);
    const tail = this.stderrTail.trim().split('\n').slice(-3).join(' | ');
    return tail ? `${msg}; stderr: ${tail}` : msg;
  }

  /** The live connection went away (the process died, the server hung up). */
  private lost(why: string): void {
    if (this.closed) return;
    const c = this.client;
    this.client = undefined;
    void c?.close().catch(() => {});
    if (Date.now() - this.connectedAt >= HEALTHY_MS) this.failures = 0;
    this.o.log.warn({ mcp_server: this.name, err: this.describe(new Error(why)) }, 'MCP server lost');
    this.failed(this.describe(new Error(why)));
  }

  /** After a failure: backoff and a timer to start again, or `failed` once it failed too often in a row. */
  private failed(why: string): void {
    this.lastError = why;
    this.failures++;
    if (this.closed) return;
    if (this.failures > MAX_AUTO_RESTARTS) {
      this.o.log.error(
        { mcp_server: this.name, err: why },
        'MCP server keeps failing: not started again until called',
      );
      this.setState('failed');
      return;
    }
    const delay = Math.min(BACKOFF_INITIAL_MS * 2 ** (this.failures - 1), BACKOFF_MAX_MS);
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.begin(), delay);
    this.timer.unref();
    this.setState('backoff');
  }
}

/** MCP_LIST_TOOLS and MCP_CALL behind the handlers. */
export class McpService {
  private readonly links = new Map<string, ServerLink>();
  private readonly perCaller = new Map<number, number>();

  constructor(
    private readonly cfg: McpConfig,
    private readonly services: Services,
  ) {
    for (const s of cfg.servers)
      this.links.set(s.name, new ServerLink(s, { version: services.kernel.version, log: services.log }));
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.links.values()].map((l) => l.close()));
  }

  /** The servers `caller` may see: operators every one, others those named by a grant. */
  private visible(caller: Caller): ServerLink[] {
    return [...this.links.values()].filter(
      (l) => caller.role === 'operator' || mcpServerGranted(caller.perms.mcp, l.name),
    );
  }

  /** Why there is no such server (the configuration's error, when the file is not used). */
  private missing(server: string): NotFoundError {
    const why = this.cfg.error ? `: ${this.cfg.error}` : this.cfg.source ? '' : ' (no mcp.json)';
    return new NotFoundError(`no MCP server '${server}'${why}`, { server });
  }

  /**
   * The link named `server`, as `caller` may reach it: to anybody but an operator an undeclared server
   * and one not granted look alike (permission_denied) unless a grant names it.
   */
  private linkFor(caller: Caller, server: string, tool?: string): ServerLink {
    const link = this.links.get(server);
    const operator = caller.role === 'operator';
    const granted =
      operator ||
      (tool === undefined
        ? mcpServerGranted(caller.perms.mcp, server)
        : mcpGranted(caller.perms.mcp, server, tool));
    if (!granted) {
      const what = tool === undefined ? `MCP server '${server}'` : `MCP tool '${server}/${tool}'`;
      throw new PermissionDeniedError(`Permission denied: ${what} is not granted (permissions.mcp)`, {
        server,
        ...(tool !== undefined ? { tool } : {}),
      });
    }
    if (!link) throw this.missing(server);
    return link;
  }

  async list(ctx: SyscallContext, req: ArgsOf['MCP_LIST_TOOLS']): Promise<ListReply> {
    const { caller } = ctx;
    const links = req.server !== undefined ? [this.linkFor(caller, req.server)] : this.visible(caller);
    // Servers start in parallel; one that cannot start is reported in its status, not as the reply.
    const deadline = (l: ServerLink) => Date.now() + l.cfg.startupTimeoutMs;
    await parked(
      ctx,
      Promise.allSettled(links.map((l) => l.connected(deadline(l), ctx.signal))),
      Math.max(0, ...links.map((l) => l.cfg.startupTimeoutMs)) + 5000,
    );
    const tools: McpTool[] = [];
    for (const l of links) {
      if (l.state !== 'ready') continue;
      for (const t of l.tools) {
        if (caller.role !== 'operator' && !mcpGranted(caller.perms.mcp, l.name, t.name)) continue;
        tools.push({
          server: l.name,
          name: t.name,
          ...(t.title ? { title: t.title } : {}),
          ...(t.description ? { description: t.description } : {}),
          input_schema: t.inputSchema as Record<string, unknown>,
          ...(t.outputSchema ? { output_schema: t.outputSchema as Record<string, unknown> } : {}),
          ...(t.annotations ? { annotations: t.annotations as Record<string, unknown> } : {}),
        });
      }
    }
    return {
      success: true,
      tools,
      servers: links.map((l) => l.status()),
      ...(this.cfg.error ? { error: this.cfg.error } : {}),
    };
  }

  async call(ctx: SyscallContext, req: ArgsOf['MCP_CALL']): Promise<CallReply> {
    const { caller } = ctx;
    const { quotas, audit } = this.services;
    const link = this.linkFor(caller, req.server, req.tool);
    quotas.check(caller.id, 'mcp_calls');
    this.admit(caller, link);
    quotas.charge(caller.id, 'mcp_calls', 1);
    const started = Date.now();
    const timeoutMs =
      req.timeout_ms > 0 && req.timeout_ms < link.cfg.timeoutMs ? req.timeout_ms : link.cfg.timeoutMs;
    const record = (success: boolean, details: Record<string, unknown>) =>
      audit.record({
        category: 'SECURITY',
        event_type: 'MCP_CALL',
        agent_id: caller.id,
        agent_name: caller.name,
        success,
        details: {
          server: link.name,
          tool: req.tool,
          duration_ms: Date.now() - started,
          arguments_bytes: Buffer.byteLength(JSON.stringify(req.arguments)),
          ...details,
        },
      });
    try {
      const r = await parked(
        ctx,
        link.call(req.tool, req.arguments, timeoutMs, ctx.signal),
        timeoutMs + 5000,
      );
      const size = Buffer.byteLength(JSON.stringify(r));
      if (size > link.cfg.maxResultBytes)
        throw new TooLargeError(
          `the result of MCP tool '${link.name}/${req.tool}' is ${size} bytes, more than the server's max_result_bytes (${link.cfg.maxResultBytes})`,
          { server: link.name, tool: req.tool, limit: link.cfg.maxResultBytes, size },
        );
      const isError = r.isError === true;
      record(true, { outcome: isError ? 'tool_error' : 'ok', result_bytes: size });
      return {
        success: true,
        server: link.name,
        tool: req.tool,
        content: (r.content ?? []) as Record<string, unknown>[],
        ...(r.structuredContent ? { structured_content: r.structuredContent } : {}),
        is_error: isError,
        duration_ms: Date.now() - started,
      };
    } catch (e) {
      const code = e instanceof KernelError ? e.code : 'internal';
      record(false, { outcome: code, error: (e as Error).message });
      throw e;
    } finally {
      this.release(caller, link);
    }
  }

  /** Counts a call in flight: at most `max_calls_per_caller` per caller, `max_concurrency` per server. */
  private admit(caller: Caller, link: ServerLink): void {
    if (link.inFlight >= link.cfg.maxConcurrency)
      throw new QuotaExceededError(
        `too many calls running on MCP server '${link.name}' (at most ${link.cfg.maxConcurrency}); try again`,
        {
          budget: 'mcp_server_in_flight',
          used: link.inFlight,
          limit: link.cfg.maxConcurrency,
          server: link.name,
        },
      );
    const mine = this.perCaller.get(caller.id) ?? 0;
    if (caller.role !== 'operator' && mine >= this.cfg.maxPerCaller)
      throw new QuotaExceededError(
        `too many MCP calls in flight (at most ${this.cfg.maxPerCaller} at once)`,
        {
          budget: 'mcp_in_flight',
          used: mine,
          limit: this.cfg.maxPerCaller,
        },
      );
    this.perCaller.set(caller.id, mine + 1);
    link.inFlight++;
  }

  private release(caller: Caller, link: ServerLink): void {
    link.inFlight--;
    const left = (this.perCaller.get(caller.id) ?? 1) - 1;
    if (left > 0) this.perCaller.set(caller.id, left);
    else this.perCaller.delete(caller.id);
  }
}

/** Awaits `p` parked (the watchdog counts the wait as the caller's activity), at most `maxMs`. */
async function parked<T>(ctx: SyscallContext, p: Promise<T>, maxMs: number): Promise<T> {
  let done = false;
  const settled = p.then(
    () => void (done = true),
    () => void (done = true),
  );
  // `p` settles by itself (its own timeout, or the caller's signal): the wait is just that.
  await ctx.park(
    () => done,
    () => settled,
    maxMs,
  );
  return p;
}
