/**
 * The kernel's end of the tunnel (docs/relay.md): dials the relay's `/tunnel` WebSocket with a machine
 * token, keeps it up (reconnects with exponential backoff and jitter, survives the relay restarting),
 * and serves what comes through it: HTTP requests into the kernel's API app (`app.fetch`), stream
 * subscriptions, and remote wire-protocol sessions (RelayTransport). Built once by kernel.ts; the tunnel
 * family steers it.
 */
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import {
  CLOSE_REPLACED,
  CLOSE_REVOKED,
  HEARTBEAT_MS,
  LIMITS,
  TUNNEL_PROTOCOL,
  type HeaderPairs,
  type KernelMessage,
  type RelayMessage,
} from '../relay/messages.js';
import type { RelayTransport, RemoteSession } from './transport.js';

/** The kernel's HTTP API as the tunnel uses it (kernel/http: createApi's app and its stream). */
export interface TunnelApi {
  fetch(req: Request): Response | Promise<Response>;
  /** Subscribes to the stream's messages (JSON texts); returns the unsubscribe. */
  subscribe?(send: (message: string) => void): () => void;
  /** The API's bearer token, added to every forwarded request (the relay's users are operators here). */
  token?: string;
}

export interface TunnelSettings {
  relayUrl: string | null;
  machineId: string | null;
  token: string | null;
  /** Seconds: the base of the reconnect backoff. */
  reconnectInterval: number;
}

export type TunnelState = 'idle' | 'connecting' | 'connected' | 'waiting' | 'stopped';

export interface TunnelDeps {
  log: Logger;
  version: string;
  /** Agents supervised here (the relay's fleet view). */
  agents(): number;
  /** The kernel's API (built on first use when the kernel has no `--http`); undefined: 503. */
  api(): Promise<TunnelApi | undefined>;
  remotes: RelayTransport;
}

/** Thrown by connect(): the relay could not be reached, or refused the token. */
export class TunnelConnectError extends Error {
  constructor(
    message: string,
    readonly reason: 'unreachable' | 'refused' | 'timeout',
  ) {
    super(message);
  }
}

/** OPEN (the ws module itself is loaded only when the kernel first dials). */
const OPEN = 1;

/** How long TUNNEL_CONNECT waits for the relay's welcome. */
const CONNECT_TIMEOUT_MS = 10_000;
/** The longest reconnect delay (unless the configured interval is longer). */
const MAX_BACKOFF_MS = 60_000;
/** A session that lasted this long resets the backoff. */
const STABLE_MS = 30_000;
/** How often the kernel tells the relay its agent count. */
const STATUS_MS = 5_000;

/** A relay URL as the tunnel dials it: ws(s)://host[:port]/tunnel by default. */
export function tunnelUrl(relay: string): string {
  let u: URL;
  try {
    u = new URL(relay);
  } catch {
    throw new Error(`relay_url "${relay}" is not a URL`);
  }
  const scheme = { 'ws:': 'ws:', 'wss:': 'wss:', 'http:': 'ws:', 'https:': 'wss:' }[u.protocol];
  if (!scheme) throw new Error(`relay_url "${relay}": the scheme must be ws, wss, http or https`);
  u.protocol = scheme;
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/tunnel';
  return u.toString();
}

/**
 * The delay before reconnect attempt `failures` (0-based): base × 2^failures, capped, times a jitter
 * factor in [0.5, 1) so that kernels cut off together do not come back together.
 */
export function backoffMs(baseS: number, failures: number, random = Math.random): number {
  const base = Math.max(1, baseS) * 1000;
  const cap = Math.max(MAX_BACKOFF_MS, base);
  return Math.round(Math.min(cap, base * 2 ** Math.min(failures, 20)) * (0.5 + random() / 2));
}

export class TunnelClient {
  private settings: TunnelSettings = { relayUrl: null, machineId: null, token: null, reconnectInterval: 5 };
  private state: TunnelState = 'idle';
  private ws: WebSocket | null = null;
  /** Bumped whenever the client is stopped or restarted: callbacks of an older socket do nothing. */
  private generation = 0;
  private failures = 0;
  private reconnects = 0;
  private sessions = 0;
  private connectedAt: number | null = null;
  private lastError: string | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private statusTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private lastHeard = 0;
  /** Requests being served: aborted when the relay cancels them or the tunnel drops. */
  private readonly requests = new Map<number, AbortController>();
  /** Stream subscriptions and remote sessions by channel id. */
  private readonly channels = new Map<number, { close(): void; input?(d: Buffer): void }>();
  /** Waiting for the first welcome of connect(). */
  private first: { resolve(): void; reject(e: TunnelConnectError): void } | null = null;

  constructor(private readonly d: TunnelDeps) {}

  /** Changes the settings the next connection uses (TUNNEL_CONFIG); a live tunnel stays as it is. */
  configure(s: Partial<TunnelSettings>): void {
    if (s.relayUrl !== undefined && s.relayUrl !== null) tunnelUrl(s.relayUrl);
    this.settings = {
      ...this.settings,
      ...Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined)),
    };
  }

  /**
   * Dials the relay now. `wait`: resolves once the relay welcomed this kernel, and rejects (and stops:
   * no retry) when it cannot be reached or refuses the token within CONNECT_TIMEOUT_MS; without `wait`
   * (the kernel's start) it keeps retrying in the background until a session opens or the relay
   * refuses the token.
   */
  async connect(wait: boolean): Promise<void> {
    const { relayUrl, machineId, token } = this.settings;
    if (!relayUrl || !machineId || !token)
      throw new Error('relay_url, machine_id and token are required (given now or by TUNNEL_CONFIG)');
    this.stop();
    this.failures = 0;
    this.sessions = 0;
    const gen = this.generation;
    if (!wait) {
      this.dial(gen);
      return;
    }
    const welcomed = new Promise<void>((resolve, reject) => (this.first = { resolve, reject }));
    const timer = setTimeout(
      () => this.failFirst(gen, new TunnelConnectError(`no answer from ${relayUrl} within 10 s`, 'timeout')),
      CONNECT_TIMEOUT_MS,
    );
    this.dial(gen);
    try {
      await welcomed;
    } finally {
      clearTimeout(timer);
    }
  }

  /** connect()'s first attempt failed: it is reported, and the client stops. */
  private failFirst(gen: number, e: TunnelConnectError): void {
    if (gen !== this.generation || !this.first) return;
    const first = this.first;
    this.first = null;
    this.lastError = e.message;
    this.stop();
    this.state = 'stopped';
    first.reject(e);
  }

  /** Closes the tunnel and stops reconnecting (TUNNEL_DISCONNECT, kernel shutdown). */
  disconnect(): void {
    this.stop();
    this.state = this.settings.relayUrl ? 'stopped' : 'idle';
  }

  private stop(): void {
    this.generation++;
    if (this.first) {
      const f = this.first;
      this.first = null;
      f.reject(new TunnelConnectError('the tunnel was disconnected', 'unreachable'));
    }
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.removeAllListeners();
      ws.on('error', () => {});
      ws.close(1000, 'disconnect');
      setTimeout(() => ws.terminate(), 1000).unref();
    }
    this.sessionEnded();
    this.connectedAt = null;
  }

  status(): {
    connected: boolean;
    relay_url: string | null;
    machine_id: string | null;
    remote_agent_count: number;
    state: TunnelState;
    connected_at: string | null;
    reconnects: number;
    reconnect_interval: number;
    last_error: string | null;
  } {
    return {
      connected: this.state === 'connected',
      relay_url: this.settings.relayUrl,
      machine_id: this.settings.machineId,
      remote_agent_count: this.d.remotes.list().length,
      state: this.state,
      connected_at: this.connectedAt ? new Date(this.connectedAt).toISOString() : null,
      reconnects: this.reconnects,
      reconnect_interval: this.settings.reconnectInterval,
      last_error: this.lastError,
    };
  }

  /** Dials once (the ws module loaded on first use: a kernel that never tunnels never imports it). */
  private dial(gen: number): void {
    this.state = 'connecting';
    import('ws').then(
      ({ WebSocket: Ws }) => {
        if (gen === this.generation) this.open(gen, Ws);
      },
      (e: Error) => this.lost(gen, `cannot load ws: ${e.message}`),
    );
  }

  private open(gen: number, Ws: typeof WebSocket): void {
    const { relayUrl, machineId, token } = this.settings;
    const url = tunnelUrl(relayUrl!);
    const ws = new Ws(url, {
      headers: { authorization: `Bearer ${token}`, 'x-clove-machine': machineId! },
      maxPayload: LIMITS.tunnelMessage,
      handshakeTimeout: CONNECT_TIMEOUT_MS,
    });
    this.ws = ws;
    ws.on('unexpected-response', (_req, res) => {
      // The relay answered the upgrade with an HTTP error: a token problem does not go away by retrying.
      const status = res.statusCode ?? 0;
      res.resume();
      const msg =
        status === 401 || status === 403
          ? `the relay refused machine ${machineId}'s token (${status})`
          : `the relay answered ${status}`;
      ws.terminate();
      if (status === 401 || status === 403) this.refused(gen, msg);
      else this.lost(gen, msg);
    });
    ws.on('error', (e) => this.lost(gen, `cannot reach ${url}: ${e.message}`));
    ws.on('open', () => {
      if (gen !== this.generation) return;
      this.lastHeard = Date.now();
      this.send({ t: 'hello', protocol: TUNNEL_PROTOCOL, version: this.d.version, agents: this.d.agents() });
    });
    ws.on('ping', () => (this.lastHeard = Date.now()));
    ws.on('message', (data, binary) => {
      if (gen !== this.generation) return;
      this.lastHeard = Date.now();
      if (binary) return;
      // A relay that sends nonsense loses that message, not the kernel.
      try {
        this.onMessage(gen, data);
      } catch (e) {
        this.d.log.warn({ err: (e as Error).message }, 'tunnel: a message the kernel cannot use (ignored)');
      }
    });
    ws.on('close', (code, reason) => {
      if (code === CLOSE_REPLACED || code === CLOSE_REVOKED)
        this.refused(gen, `the relay closed the tunnel: ${reason.toString() || code}`);
      else this.lost(gen, `the tunnel closed (${code}${reason.length ? `: ${reason.toString()}` : ''})`);
    });
  }

  /** The relay does not want this kernel (bad, revoked or replaced token): no retry. */
  private refused(gen: number, msg: string): void {
    if (gen !== this.generation) return;
    this.d.log.error({ relay: this.settings.relayUrl, error: msg }, 'tunnel stopped');
    if (this.first) return this.failFirst(gen, new TunnelConnectError(msg, 'refused'));
    this.lastError = msg;
    this.stop();
    this.state = 'stopped';
  }

  /** The tunnel or an attempt failed: try again after the backoff (connect()'s first attempt: fail). */
  private lost(gen: number, msg: string): void {
    if (gen !== this.generation) return;
    if (this.first) return this.failFirst(gen, new TunnelConnectError(msg, 'unreachable'));
    const wasConnected = this.state === 'connected';
    const lasted = this.connectedAt ? Date.now() - this.connectedAt : 0;
    this.lastError = msg;
    this.generation++;
    const ws = this.ws;
    this.ws = null;
    ws?.removeAllListeners();
    ws?.on('error', () => {});
    ws?.terminate();
    this.sessionEnded();
    this.connectedAt = null;
    if (wasConnected && lasted >= STABLE_MS) this.failures = 0;
    const delay = backoffMs(this.settings.reconnectInterval, this.failures++);
    if (wasConnected) this.d.log.warn({ error: msg, retry_ms: delay }, 'tunnel lost: reconnecting');
    else this.d.log.debug({ error: msg, retry_ms: delay }, 'tunnel attempt failed');
    this.state = 'waiting';
    const next = this.generation;
    this.retryTimer = setTimeout(() => this.dial(next), delay);
    this.retryTimer.unref();
  }

  /** What one session held goes with it: requests in flight, streams, remote sessions, timers. */
  private sessionEnded(): void {
    for (const a of this.requests.values()) a.abort();
    this.requests.clear();
    for (const c of [...this.channels.values()]) c.close();
    this.channels.clear();
    this.d.remotes.dropAll();
    if (this.statusTimer) clearInterval(this.statusTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.statusTimer = this.watchdog = null;
  }

  private welcomed(gen: number): void {
    this.state = 'connected';
    this.connectedAt = Date.now();
    if (this.sessions++ > 0) this.reconnects++;
    this.lastError = null;
    this.d.log.info(
      { relay: this.settings.relayUrl, machine: this.settings.machineId },
      'tunnel connected to the relay',
    );
    this.statusTimer = setInterval(() => this.send({ t: 'status', agents: this.d.agents() }), STATUS_MS);
    this.statusTimer.unref();
    // A relay that vanished without a FIN is found by its silence (it pings every HEARTBEAT_MS).
    this.watchdog = setInterval(() => {
      if (Date.now() - this.lastHeard > 3 * HEARTBEAT_MS) this.lost(gen, 'the relay went silent');
    }, HEARTBEAT_MS);
    this.watchdog.unref();
    if (this.first) {
      const f = this.first;
      this.first = null;
      f.resolve();
    }
  }

  private send(m: KernelMessage): void {
    if (this.ws?.readyState === OPEN) this.ws.send(JSON.stringify(m));
  }

  /** True while the tunnel's send queue has room (streams are closed rather than queued beyond). */
  private hasRoom(): boolean {
    return (this.ws?.bufferedAmount ?? 0) < LIMITS.tunnelHighWater;
  }

  private onMessage(gen: number, data: RawData): void {
    let m: RelayMessage;
    try {
      m = JSON.parse(data.toString()) as RelayMessage;
    } catch {
      this.d.log.warn('tunnel: a message that is not JSON (ignored)');
      return;
    }
    switch (m.t) {
      case 'welcome':
        this.welcomed(gen);
        break;
      case 'req':
        void this.serve(m);
        break;
      case 'cancel':
        this.requests.get(m.id)?.abort();
        this.requests.delete(m.id);
        break;
      case 'open':
        this.openChannel(m.id, m.kind, m.user);
        break;
      case 'data':
        this.channels.get(m.id)?.input?.(Buffer.from(m.data, m.binary ? 'base64' : 'utf8'));
        break;
      case 'close': {
        const c = this.channels.get(m.id);
        this.channels.delete(m.id);
        c?.close();
        break;
      }
      default:
        break;
    }
  }

  /** Serves one forwarded HTTP request with the API app; every outcome is answered. */
  private async serve(m: Extract<RelayMessage, { t: 'req' }>): Promise<void> {
    const reply = (status: number, headers: HeaderPairs, body: Buffer) =>
      this.send({ t: 'res', id: m.id, status, headers, body: body.toString('base64') });
    const error = (status: number, code: string, message: string) =>
      reply(
        status,
        [['content-type', 'application/json']],
        Buffer.from(JSON.stringify({ error: code, message })),
      );
    let api: TunnelApi | undefined;
    try {
      api = await this.d.api();
    } catch (e) {
      return error(503, 'internal', `the kernel's API is not available: ${(e as Error).message}`);
    }
    if (!api) return error(503, 'not_supported', 'this kernel has no HTTP API');
    if (!m.path.startsWith('/')) return error(400, 'invalid_request', 'bad path');
    const abort = new AbortController();
    this.requests.set(m.id, abort);
    try {
      const headers = new Headers(m.headers);
      headers.delete('authorization');
      if (api.token) headers.set('authorization', `Bearer ${api.token}`);
      const body = m.body ? Buffer.from(m.body, 'base64') : undefined;
      const res = await api.fetch(
        new Request(`http://clove.tunnel${m.path}`, {
          method: m.method,
          headers,
          ...(body && m.method !== 'GET' && m.method !== 'HEAD' ? { body } : {}),
          signal: abort.signal,
        }),
      );
      const out = await readCapped(res, LIMITS.responseBody);
      if (abort.signal.aborted) return;
      if (!out) return error(502, 'too_large', `the response is larger than ${LIMITS.responseBody} bytes`);
      const pairs: HeaderPairs = [];
      res.headers.forEach((v, k) => pairs.push([k, v]));
      reply(res.status, pairs, out);
    } catch (e) {
      if (!abort.signal.aborted) error(500, 'internal', `the API failed: ${(e as Error).message}`);
    } finally {
      this.requests.delete(m.id);
    }
  }

  /**
   * A user's stream through the relay: a subscriber of the API's stream whose messages go over the
   * tunnel. Registered at once (a close may come before the API is built); dropped, not queued, when
   * the tunnel's send queue is full.
   */
  private async openStream(id: number, closeRemote: (code: number, reason: string) => void): Promise<void> {
    let unsubscribe: (() => void) | null = null;
    let closed = false;
    this.channels.set(id, {
      close: () => {
        closed = true;
        unsubscribe?.();
      },
    });
    const api = await this.d.api().catch(() => undefined);
    if (closed) return;
    if (!api?.subscribe) return closeRemote(1011, 'this kernel has no stream');
    unsubscribe = api.subscribe((message) => {
      if (!this.channels.has(id)) return;
      if (!this.hasRoom()) {
        // The relay (or its link) is slower than the stream: the subscriber goes, not the memory.
        unsubscribe?.();
        closeRemote(1013, 'the tunnel is not keeping up');
        return;
      }
      this.send({ t: 'data', id, data: message });
    });
  }

  private openChannel(id: number, kind: string, user: string): void {
    const closeRemote = (code: number, reason: string) => {
      if (this.channels.delete(id)) this.send({ t: 'close', id, code, reason });
    };
    if (kind === 'stream') {
      void this.openStream(id, closeRemote);
      return;
    }
    if (kind !== 'agent') return this.send({ t: 'close', id, code: 1003, reason: `unknown channel ${kind}` });
    let session: RemoteSession | null = null;
    session = this.d.remotes.open(user, {
      write: (data, done) => {
        if (!this.ws || this.ws.readyState !== OPEN) return done();
        this.ws.send(JSON.stringify({ t: 'data', id, data: data.toString('base64'), binary: true }), () =>
          done(),
        );
      },
      closed: () => closeRemote(1000, 'session closed'),
    });
    if (!session) return this.send({ t: 'close', id, code: 1013, reason: 'the kernel is not accepting' });
    const s = session;
    this.channels.set(id, { close: () => s.end(), input: (d) => s.input(d) });
  }

  /** Kernel shutdown. */
  close(): void {
    this.disconnect();
  }
}

/** A response's body, or null when it is longer than `max` bytes (reading stops there). */
async function readCapped(res: Response, max: number): Promise<Buffer | null> {
  if (!res.body) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let n = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.byteLength;
    if (n > max) {
      await reader.cancel();
      return null;
    }
    chunks.push(Buffer.from(value));
  }
  return Buffer.concat(chunks);
}
