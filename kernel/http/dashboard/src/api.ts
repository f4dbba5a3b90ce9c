/**
 * The dashboard's only way to the kernel: the REST surface of docs/http.md and its WebSocket stream,
 * relative to a base (`api/v1` on a kernel, `api/v1/machines/<machine>` on a relay). Paths are
 * resolved against the page's own URL so that a proxy may serve the dashboard under any prefix.
 */

export interface QuotaMeter {
  used: number;
  limit?: number;
  policy?: string;
  exceeded?: boolean;
}

/** One row of GET /agents and of the stream's metrics messages. */
export interface AgentRow {
  id: number;
  name: string;
  state: string;
  pid: number;
  node?: string;
  restarts: number;
  labels?: Record<string, string>;
  cpu_percent?: number | null;
  memory_bytes?: number | null;
  messages_in?: number;
  messages_out?: number;
  mailbox_depth?: number;
  quotas?: Record<string, QuotaMeter> | null;
}

export interface KernelEvent {
  seq?: number;
  type: string;
  data?: Record<string, unknown>;
  source_agent_id?: number;
  timestamp: number;
}

export interface SystemInfo {
  cpu?: { percent?: number; count?: number };
  memory?: { total?: number; used?: number; percent?: number };
  [k: string]: unknown;
}

export interface ServiceRow {
  project: string;
  service: string;
  replicas: number;
  agents?: unknown[];
}

export interface Machine {
  id: string;
  connected: boolean;
  agents?: number;
  [k: string]: unknown;
}

export type StreamMessage =
  | { type: 'event'; event: KernelEvent }
  | { type: 'metrics'; ts: number; system?: SystemInfo; agents: AgentRow[] };

/** A refusal by the API, with the contract's error code when it gave one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  /** The token is missing, wrong or revoked (a 403 is a refusal of one call, not of the token). */
  get unauthorized(): boolean {
    return this.status === 401;
  }
}

/** The page's directory: what every API path is relative to. */
export function pageRoot(): URL {
  return new URL('.', location.href);
}

/** Unwraps `{key: [...]}` or a bare array: tolerant of both list shapes. */
export function listOf<T>(body: unknown, key: string): T[] {
  if (Array.isArray(body)) return body as T[];
  const inner = (body as Record<string, unknown> | null)?.[key];
  return Array.isArray(inner) ? (inner as T[]) : [];
}

export class Api {
  constructor(
    readonly base: string,
    private readonly token: string,
  ) {}

  url(p: string): URL {
    return new URL(`${this.base}/${p.replace(/^\//, '')}`, pageRoot());
  }

  /** One JSON call; a non-2xx answer becomes an ApiError naming the call. */
  async call<T>(method: string, p: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.url(p), {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', `${method} ${p}: ${(e as Error).message}`);
    }
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!res.ok) {
      const err = (parsed ?? {}) as { error?: string; message?: string };
      throw new ApiError(
        res.status,
        err.error ?? `http_${res.status}`,
        `${method} ${p}: ${err.message ?? err.error ?? res.statusText}`,
      );
    }
    return parsed as T;
  }

  agents(): Promise<AgentRow[]> {
    return this.call<unknown>('GET', 'agents').then((b) => listOf<AgentRow>(b, 'agents'));
  }
  /** The newest `limit` events, oldest first: GET events pages forward from `since`, so ask where it ends. */
  async events(limit = 100): Promise<KernelEvent[]> {
    const head = await this.call<{ last_seq?: number } | unknown[]>('GET', 'events?limit=1');
    const last = Array.isArray(head) ? 0 : (head?.last_seq ?? 0);
    const since = Math.max(0, last - limit);
    return this.call<unknown>('GET', `events?since=${since}&limit=${limit}`).then((b) =>
      listOf<KernelEvent>(b, 'events'),
    );
  }
  services(): Promise<ServiceRow[]> {
    return this.call<unknown>('GET', 'services').then((b) => listOf<ServiceRow>(b, 'services'));
  }
  logs(id: number, tail: number, signal?: AbortSignal): Promise<string[]> {
    return this.call<{ lines?: string[] }>('GET', `agents/${id}/logs?tail=${tail}`, undefined, signal).then(
      (b) => b?.lines ?? [],
    );
  }
  act(id: number, verb: 'kill' | 'restart' | 'pause' | 'resume'): Promise<unknown> {
    return this.call('POST', `agents/${id}/${verb}`, {});
  }
  scale(project: string, service: string, replicas: number): Promise<unknown> {
    const p = `services/${encodeURIComponent(project)}/${encodeURIComponent(service)}/scale`;
    return this.call('POST', p, { replicas });
  }
}

/** GET api/v1/machines: the machine list when a relay serves the page, null on a kernel. */
export async function probeFleet(token: string): Promise<Machine[] | null> {
  const fleet = new Api('api/v1', token);
  try {
    const body = await fleet.call<unknown>('GET', 'machines');
    return listOf<Record<string, unknown>>(body, 'machines').map((m) => ({
      ...m,
      id: String(m.id ?? m.name ?? m.machine ?? '?'),
      connected: Boolean(m.connected),
      agents: typeof m.agents === 'number' ? m.agents : undefined,
    }));
  } catch (e) {
    // 401: wrong token; 403: a token that may not use the API (a relay's machine token); 0: unreachable.
    if (e instanceof ApiError && (e.unauthorized || e.status === 403 || e.status === 0)) throw e;
    return null;
  }
}

export type StreamStatus = 'connecting' | 'open' | 'reconnecting' | 'closed';

/**
 * The WebSocket stream with reconnect: exponential backoff with jitter (0.5 s doubling to 10 s), reset
 * once a connection has delivered a message. The token travels as a subprotocol (`bearer.<token>`)
 * because a browser cannot set headers on a WebSocket.
 */
export class Stream {
  private ws: WebSocket | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private delay = 500;
  private stopped = false;
  private lastMessage = 0;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  /** How many times the connection has dropped. */
  drops = 0;

  constructor(
    private readonly api: Api,
    private readonly token: string,
    private readonly onMessage: (m: StreamMessage) => void,
    private readonly onStatus: (s: StreamStatus) => void,
  ) {}

  start(): void {
    this.stopped = false;
    // A metrics message comes every second: a connection silent for 10 s is dead even if TCP has not
    // noticed (a relay or a proxy that went away), so drop it and dial again.
    this.watchdog = setInterval(() => {
      const ws = this.ws;
      if (ws && ws.readyState === WebSocket.OPEN && Date.now() - this.lastMessage > 10_000) this.drop(ws);
    }, 2000);
    this.open();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, 'bye');
    this.onStatus('closed');
  }

  private open(): void {
    const url = this.api.url('stream');
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    this.onStatus(this.drops ? 'reconnecting' : 'connecting');
    let ws: WebSocket;
    try {
      ws = new WebSocket(url, ['clove', `bearer.${this.token}`]);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastMessage = Date.now();
      this.onStatus('open');
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.lastMessage = Date.now();
      this.delay = 500;
      let msg: StreamMessage;
      try {
        msg = JSON.parse(String(ev.data)) as StreamMessage;
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws === ws && !this.stopped) this.drop(ws);
    };
  }

  private drop(ws: WebSocket): void {
    this.ws = null;
    ws.close();
    this.drops++;
    this.retry();
  }

  private retry(): void {
    if (this.stopped) return;
    this.onStatus('reconnecting');
    const wait = this.delay * (0.75 + Math.random() * 0.5);
    this.delay = Math.min(this.delay * 2, 10_000);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.open();
    }, wait);
  }
}
