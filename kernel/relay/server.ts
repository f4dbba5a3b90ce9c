/**
 * The relay (docs/relay.md): kernels behind NAT dial out to it over a WebSocket (`/tunnel`, a machine
 * token each); users call its HTTP API with a user token, and the calls for one machine are carried over
 * that machine's tunnel to its kernel's API app. Hono serves the HTTP routes; `ws` takes the upgrades
 * (tunnels, streams, remote wire-protocol sessions) itself, so that tokens are checked before any
 * WebSocket exists.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { serve } from '@hono/node-server';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Logger } from 'pino';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import {
  CLOSE_REPLACED,
  CLOSE_REVOKED,
  HEARTBEAT_MS,
  LIMITS,
  type ChannelKind,
  type HeaderPairs,
  type KernelMessage,
  type RelayMessage,
} from './messages.js';
import { TokenStore, type TokenEntry } from './tokens.js';

export interface RelayOptions {
  host: string;
  /** 0: any free port (tests). */
  port: number;
  /** Tokens live here (tokens.json, 0600). */
  dataDir: string;
  /** How long a forwarded request may take before the user gets 504. */
  requestTimeoutMs?: number;
  /** Mounts the dashboard's static files at `/` (kernel/http/static.ts), when it is built. */
  mountStatic?: (app: Hono) => void;
  log: Logger;
}

/** What the relay remembers of a machine whose kernel was connected at some point since it started. */
interface Seen {
  connectedAt: number;
  lastSeen: number;
  version: string | null;
  agents: number | null;
}

interface Pending {
  resolve(r: Response): void;
  timer: NodeJS.Timeout;
}

/** A user's WebSocket channel to one kernel (a stream or a remote session). */
interface Channel {
  ws: WebSocket;
  kind: ChannelKind;
}

/** Headers a user's request keeps on its way to the kernel (the kernel adds its own authorization). */
const FORWARD_REQUEST_HEADERS = new Set(['content-type', 'accept', 'accept-encoding']);
/** Headers of the kernel's response that must not be copied (the relay frames the body itself). */
const HOP_BY_HOP = new Set([
  'content-length',
  'transfer-encoding',
  'connection',
  'keep-alive',
  'content-encoding',
]);

/** JSON error body in the API's shape; codes are the contract's where one fits. */
function fail(c: Context, status: number, error: string, message: string): Response {
  return c.json({ error, message }, status as never);
}

/**
 * Reads and drops the rest of a refused body (at most 16 MiB), so that the client, still writing, reads
 * the 413 instead of a reset connection.
 */
async function discard(req: Request): Promise<void> {
  const reader = req.body?.getReader();
  if (!reader) return;
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || (n += value.byteLength) > 16 << 20) break;
    }
  } catch {
    // the client went away
  } finally {
    reader.releaseLock();
  }
}

/** The token a request carries: `Authorization: Bearer`, or a browser WebSocket's `bearer.<token>` subprotocol. */
function presentedToken(headers: http.IncomingHttpHeaders | Headers): string | undefined {
  const get = (k: string): string | undefined => {
    if (headers instanceof Headers) return headers.get(k) ?? undefined;
    const v = headers[k];
    return Array.isArray(v) ? v[0] : v;
  };
  const auth = get('authorization');
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const protocols = get('sec-websocket-protocol');
  for (const p of (protocols ?? '').split(',')) {
    const t = p.trim();
    if (t.startsWith('bearer.')) return t.slice(7);
  }
  return undefined;
}

/** One kernel's live tunnel: its pending requests and the users' channels through it. */
class MachineSession {
  readonly connectedAt = Date.now();
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  readonly channels = new Map<number, Channel>();
  private alive = true;
  private readonly heartbeat: NodeJS.Timeout;
  private missed = 0;

  constructor(
    readonly machine: string,
    readonly tokenId: string,
    readonly ws: WebSocket,
    private readonly seen: Seen,
    private readonly timeoutMs: number,
    private readonly log: Logger,
    private readonly onGone: (s: MachineSession) => void,
  ) {
    ws.on('message', (data, binary) => {
      // A kernel that sends nonsense (a bug, another version) loses that message, not the relay.
      try {
        this.onMessage(data, binary);
      } catch (e) {
        log.warn({ machine, err: (e as Error).message }, 'tunnel: a message the relay cannot use (ignored)');
      }
    });
    ws.on('pong', () => this.touch());
    ws.on('close', (code) => this.gone(code));
    ws.on('error', (e) => log.warn({ machine, err: e.message }, 'tunnel error'));
    // A dead kernel (power cut, no FIN) is found by its silence: three pings without an answer.
    this.heartbeat = setInterval(() => {
      if (++this.missed > 3) {
        log.warn({ machine }, 'tunnel silent for 3 heartbeats: dropping it');
        ws.terminate();
        return;
      }
      ws.ping();
    }, HEARTBEAT_MS);
    this.heartbeat.unref();
    this.send({ t: 'welcome', machine });
  }

  get open(): boolean {
    return this.alive && this.ws.readyState === WebSocket.OPEN;
  }

  private touch(): void {
    this.missed = 0;
    this.seen.lastSeen = Date.now();
  }

  send(m: RelayMessage): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(m));
  }

  /** True while the tunnel's socket has room: a slow kernel is not sent more work. */
  hasRoom(): boolean {
    return this.ws.bufferedAmount < LIMITS.tunnelHighWater;
  }

  /**
   * Forwards one HTTP request; resolves with the kernel's response, or a 503/504 of the relay's own.
   * Bounded: at most LIMITS.pendingRequests in flight, none while the tunnel's send queue is full.
   */
  request(method: string, path: string, headers: HeaderPairs, body: Buffer | null): Promise<Response> {
    const json = (status: number, error: string, message: string) =>
      Response.json({ error, message }, { status });
    if (!this.open)
      return Promise.resolve(json(503, 'upstream_failed', `machine ${this.machine} is not connected`));
    if (this.pending.size >= LIMITS.pendingRequests || !this.hasRoom())
      return Promise.resolve(
        json(503, 'quota_exceeded', `too many requests in flight to machine ${this.machine}; try again`),
      );
    const id = this.nextId++;
    return new Promise<Response>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        this.send({ t: 'cancel', id });
        resolve(
          json(504, 'upstream_failed', `machine ${this.machine} did not answer within ${this.timeoutMs} ms`),
        );
      }, this.timeoutMs);
      this.pending.set(id, { resolve, timer });
      this.send({
        t: 'req',
        id,
        method,
        path,
        headers,
        ...(body && body.length ? { body: body.toString('base64') } : {}),
      });
    });
  }

  /** Opens a channel for a user's WebSocket (a stream or a remote session); false when over the bound. */
  openChannel(ws: WebSocket, kind: ChannelKind, user: string): boolean {
    if (!this.open || this.channels.size >= LIMITS.channels || !this.hasRoom()) return false;
    const id = this.nextId++;
    this.channels.set(id, { ws, kind });
    this.send({ t: 'open', id, kind, user });
    ws.on('message', (data: RawData, binary: boolean) => {
      if (!this.hasRoom()) {
        // The kernel reads slower than the user writes: the user is cut off, the relay holds nothing.
        this.closeChannel(id, 1013, 'the kernel is not keeping up');
        return;
      }
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
      this.send(
        binary
          ? { t: 'data', id, data: buf.toString('base64'), binary: true }
          : { t: 'data', id, data: buf.toString('utf8') },
      );
    });
    ws.on('close', () => {
      if (this.channels.delete(id)) this.send({ t: 'close', id });
    });
    ws.on('error', () => ws.terminate());
    return true;
  }

  /** Closes a channel from the relay's side: the user's socket, and the kernel's end of it. */
  private closeChannel(id: number, code: number, reason: string): void {
    const ch = this.channels.get(id);
    if (!ch) return;
    this.channels.delete(id);
    this.send({ t: 'close', id, code, reason });
    ch.ws.close(code, reason);
  }

  private onMessage(data: RawData, binary: boolean): void {
    this.touch();
    if (binary) return;
    let m: KernelMessage;
    try {
      m = JSON.parse(data.toString()) as KernelMessage;
    } catch {
      this.log.warn({ machine: this.machine }, 'tunnel: a message that is not JSON (ignored)');
      return;
    }
    switch (m.t) {
      case 'hello':
        this.seen.version = String(m.version);
        this.seen.agents = Number(m.agents);
        break;
      case 'status':
        this.seen.agents = Number(m.agents);
        break;
      case 'res': {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        p.resolve(this.response(m));
        break;
      }
      case 'data': {
        const ch = this.channels.get(m.id);
        if (!ch) return;
        if (ch.ws.bufferedAmount > LIMITS.userHighWater) {
          this.closeChannel(m.id, 1013, 'too slow: messages were piling up');
          return;
        }
        if (m.binary) ch.ws.send(Buffer.from(m.data, 'base64'), { binary: true });
        else ch.ws.send(m.data);
        break;
      }
      case 'close': {
        const ch = this.channels.get(m.id);
        if (!ch) return;
        this.channels.delete(m.id);
        ch.ws.close(m.code && m.code >= 1000 && m.code < 5000 ? m.code : 1000, m.reason ?? '');
        break;
      }
      default:
        break;
    }
  }

  /** The user's response from a kernel's `res`; a malformed one is a 502, never a request left hanging. */
  private response(m: Extract<KernelMessage, { t: 'res' }>): Response {
    try {
      const headers = new Headers();
      for (const [k, v] of m.headers ?? []) if (!HOP_BY_HOP.has(k.toLowerCase())) headers.append(k, v);
      const body = m.body ? Buffer.from(m.body, 'base64') : null;
      const noBody = m.status === 204 || m.status === 304;
      return new Response(noBody ? null : body, { status: m.status, headers });
    } catch (e) {
      this.log.warn({ machine: this.machine, err: (e as Error).message }, 'tunnel: a malformed response');
      return Response.json(
        { error: 'upstream_failed', message: `machine ${this.machine} sent a malformed response` },
        { status: 502 },
      );
    }
  }

  /** Ends the session (replaced, revoked, relay stopping). */
  close(code: number, reason: string): void {
    this.ws.close(code, reason);
    // A kernel that does not answer the close is not waited for.
    setTimeout(() => this.ws.terminate(), 2000).unref();
    this.gone(code);
  }

  private gone(code: number): void {
    if (!this.alive) return;
    this.alive = false;
    clearInterval(this.heartbeat);
    for (const [, p] of this.pending) {
      clearTimeout(p.timer);
      p.resolve(
        Response.json(
          { error: 'upstream_failed', message: `the tunnel to machine ${this.machine} closed (${code})` },
          { status: 502 },
        ),
      );
    }
    this.pending.clear();
    for (const [, ch] of this.channels) ch.ws.close(1001, 'the kernel went away');
    this.channels.clear();
    this.onGone(this);
  }
}

export class Relay {
  readonly tokens: TokenStore;
  readonly app: Hono;
  private server?: http.Server;
  /** Tunnels (large messages: response bodies) and users' channels (one wire frame at most). */
  private readonly tunnels: WebSocketServer;
  private readonly users: WebSocketServer;
  private readonly sessions = new Map<string, MachineSession>();
  private readonly seen = new Map<string, Seen>();
  private readonly sockets = new Set<Duplex>();
  private revokeTimer?: NodeJS.Timeout;
  private readonly timeoutMs: number;

  constructor(private readonly o: RelayOptions) {
    this.tokens = new TokenStore(o.dataDir);
    this.timeoutMs = o.requestTimeoutMs ?? 30_000;
    this.tunnels = new WebSocketServer({ noServer: true, maxPayload: LIMITS.tunnelMessage });
    this.users = new WebSocketServer({
      noServer: true,
      maxPayload: LIMITS.userMessage,
      // Browsers send `clove` and `bearer.<token>`; the answer names only `clove`, never the token.
      handleProtocols: (protocols) => (protocols.has('clove') ? 'clove' : false),
    });
    this.app = this.routes();
  }

  /** The machines a token may reach (a user token's scope), or null for a token that is no user's. */
  private scope(entry: TokenEntry | undefined): ((machine: string) => boolean) | null {
    if (!entry || entry.kind !== 'user') return null;
    return (m) => !entry.machines || entry.machines.includes(m);
  }

  private routes(): Hono {
    const app = new Hono();
    app.get('/healthz', (c) => c.json({ ok: true }));
    // Every /api route needs a user token; machine tokens only open tunnels.
    app.use('/api/*', async (c, next) => {
      const token = presentedToken(c.req.raw.headers);
      const entry = token ? this.tokens.verify(token) : undefined;
      if (!entry) return c.json({ error: 'unauthorized' }, 401);
      if (entry.kind !== 'user')
        return fail(c, 403, 'permission_denied', 'a machine token cannot call the API; use a user token');
      c.set('user' as never, entry as never);
      await next();
    });
    app.get('/api/v1/machines', (c) => {
      const user = c.get('user' as never) as TokenEntry;
      const allowed = this.scope(user)!;
      const names = new Set<string>();
      for (const e of this.tokens.list()) if (e.kind === 'machine') names.add(e.name);
      for (const m of this.sessions.keys()) names.add(m);
      const machines = [...names]
        .filter(allowed)
        .sort()
        .map((id) => {
          const s = this.seen.get(id);
          const live = this.sessions.get(id)?.open ?? false;
          return {
            id,
            connected: live,
            connected_at: live && s ? new Date(s.connectedAt).toISOString() : null,
            last_seen: s ? new Date(s.lastSeen).toISOString() : null,
            agents: s?.agents ?? null,
            version: s?.version ?? null,
          };
        });
      return c.json({ machines });
    });
    app.all(
      '/api/v1/machines/:machine/*',
      bodyLimit({
        maxSize: LIMITS.requestBody,
        onError: async (c) => {
          await discard(c.req.raw);
          return fail(c, 413, 'too_large', `request body larger than ${LIMITS.requestBody} bytes`);
        },
      }),
      async (c) => {
        const machine = c.req.param('machine');
        const user = c.get('user' as never) as TokenEntry;
        if (!this.scope(user)!(machine))
          return fail(c, 403, 'permission_denied', `user ${user.name} may not reach machine ${machine}`);
        const session = this.sessions.get(machine);
        if (!session?.open) {
          const known = this.tokens.list().some((e) => e.kind === 'machine' && e.name === machine);
          return known
            ? fail(c, 503, 'upstream_failed', `machine ${machine} is not connected`)
            : fail(c, 404, 'not_found', `no machine ${machine}`);
        }
        const url = new URL(c.req.url);
        const prefix = `/api/v1/machines/${encodeURIComponent(machine)}`;
        const rest = url.pathname.slice(prefix.length);
        const headers: HeaderPairs = [];
        c.req.raw.headers.forEach((v, k) => {
          if (FORWARD_REQUEST_HEADERS.has(k)) headers.push([k, v]);
        });
        const method = c.req.method;
        const body = method === 'GET' || method === 'HEAD' ? null : Buffer.from(await c.req.arrayBuffer());
        return session.request(method, `/api/v1${rest}${url.search}`, headers, body);
      },
    );
    this.o.mountStatic?.(app);
    return app;
  }

  /** Starts listening; resolves with the port (useful with port 0). */
  async start(): Promise<number> {
    const server = serve({
      fetch: this.app.fetch,
      hostname: this.o.host,
      port: this.o.port,
    }) as http.Server;
    this.server = server;
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      if (server.listening) return resolve();
      server.once('listening', () => resolve());
      server.once('error', reject);
    });
    // `token revoke` beside a live relay: its sessions go within a couple of seconds.
    this.revokeTimer = setInterval(() => this.dropRevoked(), 2000);
    this.revokeTimer.unref();
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : this.o.port;
    this.o.log.info({ host: this.o.host, port, data_dir: this.o.dataDir }, 'clove relay listening');
    return port;
  }

  /** Closes tunnels whose machine token was revoked. */
  private dropRevoked(): void {
    try {
      this.tokens.reload();
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'cannot read the token file');
      return;
    }
    for (const s of this.sessions.values())
      if (!this.tokens.has(s.tokenId)) {
        this.o.log.warn({ machine: s.machine }, 'machine token revoked: closing its tunnel');
        s.close(CLOSE_REVOKED, 'token revoked');
      }
  }

  /** Refuses an upgrade with a plain HTTP answer (before any WebSocket exists). */
  private refuse(socket: Duplex, status: number, error: string, message: string): void {
    const body = JSON.stringify({ error, message });
    socket.end(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const url = new URL(req.url ?? '/', 'http://relay');
    const token = presentedToken(req.headers);
    let entry: TokenEntry | undefined;
    try {
      entry = token ? this.tokens.verify(token) : undefined;
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'cannot read the token file');
    }
    if (!entry) return this.refuse(socket, 401, 'unauthorized', 'a valid token is required');
    if (url.pathname === '/tunnel') {
      const machine = String(req.headers['x-clove-machine'] ?? '');
      if (entry.kind !== 'machine')
        return this.refuse(socket, 403, 'permission_denied', 'a user token cannot open a tunnel');
      if (machine !== entry.name)
        return this.refuse(
          socket,
          403,
          'permission_denied',
          `this token belongs to machine ${entry.name}, not ${machine || '(none)'}`,
        );
      this.tunnels.handleUpgrade(req, socket, head, (ws) => this.tunnelOpened(machine, entry!, ws));
      return;
    }
    const m = /^\/api\/v1\/machines\/([^/]+)\/(stream|agent)$/.exec(url.pathname);
    if (!m) return this.refuse(socket, 404, 'not_found', `no WebSocket endpoint ${url.pathname}`);
    const machine = decodeURIComponent(m[1]!);
    const kind = m[2] === 'stream' ? 'stream' : 'agent';
    const allowed = this.scope(entry);
    if (!allowed) return this.refuse(socket, 403, 'permission_denied', 'a machine token cannot call the API');
    if (!allowed(machine))
      return this.refuse(
        socket,
        403,
        'permission_denied',
        `user ${entry.name} may not reach machine ${machine}`,
      );
    const session = this.sessions.get(machine);
    if (!session?.open)
      return this.refuse(socket, 503, 'upstream_failed', `machine ${machine} is not connected`);
    this.users.handleUpgrade(req, socket, head, (ws) => {
      if (!session.openChannel(ws, kind, entry!.name))
        ws.close(1013, `machine ${machine} has too many open channels or is not keeping up`);
    });
  }

  /**
   * A kernel's tunnel is up. One live session per machine: the newer one wins (a kernel that restarted
   * after a network cut is back at once, without waiting for the old session's heartbeat to fail), and
   * the older is closed with CLOSE_REPLACED, which tells its kernel not to dial again (no flapping
   * between two kernels that share a token).
   */
  private tunnelOpened(machine: string, entry: TokenEntry, ws: WebSocket): void {
    const old = this.sessions.get(machine);
    if (old) {
      this.o.log.warn({ machine }, 'a new tunnel replaces the live one of the same machine');
      this.sessions.delete(machine);
      old.close(CLOSE_REPLACED, 'replaced by a newer session of the same machine');
    }
    const seen: Seen = { connectedAt: Date.now(), lastSeen: Date.now(), version: null, agents: null };
    this.seen.set(machine, seen);
    const s = new MachineSession(machine, entry.id, ws, seen, this.timeoutMs, this.o.log, (gone) => {
      if (this.sessions.get(machine) === gone) this.sessions.delete(machine);
      this.o.log.info({ machine }, 'tunnel closed');
    });
    this.sessions.set(machine, s);
    this.o.log.info({ machine }, 'tunnel open');
  }

  /** Machines with a live tunnel (tests, logs). */
  connected(): string[] {
    return [...this.sessions.values()].filter((s) => s.open).map((s) => s.machine);
  }

  async close(): Promise<void> {
    clearInterval(this.revokeTimer);
    for (const s of [...this.sessions.values()]) s.close(1001, 'relay stopping');
    this.tunnels.close();
    this.users.close();
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
    });
  }
}
