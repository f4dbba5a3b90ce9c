/**
 * The kernel's HTTP API (docs/http.md): a Hono app, fetch-style (`app.fetch(Request) → Response`), so
 * that one app serves the local listener (kernel/http/service.ts) and the requests the relay forwards
 * through its tunnel. REST verbs run the operator's syscalls through the dispatcher (`deps.call`, which
 * is `Dispatcher.dispatchAs` as the API's operator principal): rights, audit and the cluster router
 * apply exactly as on the socket. The stream's messages go to whoever subscribes (`api.subscribe`): the
 * WebSocket server here, or the relay's tunnel.
 */
import fs from 'node:fs';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { AgentInfo, AgentMetrics, OpName, SystemMetrics } from '../../protocol/index.js';
import { ApiError } from './errors.js';
import { EventHistory, type ApiEvent } from './history.js';
import { openApiDocument } from './openapi.js';
import { bearerOf, tokenMatches } from './token.js';

/** A kernel event as the event bus's taps see it. */
export type EventTap = (type: string, data: Record<string, unknown>, source: number) => void;

/** What the API needs of the kernel (kernel.ts builds it; a test or the relay may build another). */
export interface ApiDeps {
  /** The bearer token every route but /healthz, /readyz and the dashboard's files asks for. */
  token: string;
  /** Runs a syscall as the API's operator principal; resolves to its reply, throws ApiError on an error reply. */
  call(op: OpName, payload: Buffer | object, signal?: AbortSignal): Promise<unknown>;
  /**
   * The same for the API's own reads (the agents' rows, the system's figures: every stream tick and
   * scrape makes them); a principal of its own so that /metrics does not count its own scrapes.
   * Default: `call`.
   */
  read?: ApiDeps['call'];
  /** Subscribes to every event published on this kernel; returns the unsubscribe. */
  tapEvents(fn: EventTap): () => void;
  /** Whether the kernel accepts calls (listening, not shutting down): /readyz. */
  ready(): boolean;
  /** What /api/v1/system says about the kernel itself besides METRICS_SYSTEM. */
  info(): Record<string, unknown>;
  /** The Prometheus exposition (kernel/http/prometheus.ts): content type and text. */
  metrics?(): Promise<{ contentType: string; text: string }>;
  /** Sets a clove.yaml service's replica count (kernel/http/scale.ts). */
  scale?(project: string, service: string, replicas: number, signal?: AbortSignal): Promise<ScaleResult>;
  /** Mounts the dashboard's static files (kernel/http/static.ts) after the API's routes. */
  mountStatic?(app: Hono): void;
  /** How old the agents' measured figures (CPU, memory, messages, quotas) may be (default 1000 ms). */
  metricsMaxAgeMs?: number;
  /** The largest request body (default 1 MiB, the socket's default payload limit); larger: 413 too_large. */
  maxBodyBytes?: number;
  /** How often the stream sends a metrics message (default 1000 ms). */
  streamIntervalMs?: number;
}

export interface ScaleResult {
  project: string;
  service: string;
  replicas: number;
  started: string[];
  stopped: string[];
}

/** One row of GET /api/v1/agents (and of the stream's metrics messages). */
export interface AgentRow {
  id: number;
  name: string;
  state: string;
  pid: number;
  node: string | null;
  restarts: number;
  restart_policy: string;
  uptime_ms: number;
  ready: boolean;
  labels: Record<string, string>;
  exit_code: number | null;
  exit_reason: string | null;
  cpu_percent: number;
  cpu_seconds: number;
  memory_bytes: number;
  messages_in: number;
  messages_out: number;
  /** Syscalls the agent made (fast path included). */
  syscalls: number;
  mailbox_depth: number;
  quotas: Record<string, { used: number; limit?: number; exceeded?: boolean }>;
}

export interface Api {
  app: Hono;
  /**
   * Adds a stream subscriber: `send` gets every stream message as JSON text (events as they happen, a
   * metrics snapshot every second). The WebSocket server and the relay's tunnel use it. Returns the
   * unsubscribe.
   */
  subscribe(send: (json: string) => void): () => void;
  /** The rows of GET /api/v1/agents. */
  agents(signal?: AbortSignal): Promise<AgentRow[]>;
  /** Stops the stream's timer and the event tap. */
  close(): void;
}

/** Paths the token is not asked for: liveness and readiness probes. */
const OPEN = new Set(['/healthz', '/readyz']);
/** Paths under the token: the API and the metrics; anything else is the dashboard's (static, open). */
const GUARDED = (p: string) => p === '/metrics' || p.startsWith('/api/');

/** Agents' labels that put them in a service (cli/commands/compose.ts). */
export const LABEL = {
  project: 'clove.project',
  service: 'clove.service',
  replica: 'clove.replica',
  hash: 'clove.config-hash',
} as const;

export function createApi(deps: ApiDeps): Api {
  const app = new Hono();
  const history = new EventHistory();
  const subscribers = new Set<(json: string) => void>();
  const read = deps.read ?? deps.call;

  const broadcast = (msg: object) => {
    if (!subscribers.size) return;
    const json = JSON.stringify(msg);
    for (const s of subscribers) {
      try {
        s(json);
      } catch {
        subscribers.delete(s);
      }
    }
  };
  const untap = deps.tapEvents((type, data, source) => {
    const event = history.add(type, data, source);
    broadcast({ type: 'event', event });
  });

  /**
   * Every agent: on a cluster, every live node's (LIST `all_nodes`; KILL and the other verbs reach them
   * through the cluster router); this node's alone while the cluster does not answer.
   */
  const listAll = async (signal?: AbortSignal): Promise<AgentInfo[]> => {
    try {
      return (await read('LIST', { all_nodes: true }, signal)) as AgentInfo[];
    } catch (e) {
      if (e instanceof ApiError && e.code === 'cluster_unavailable')
        return (await read('LIST', {}, signal)) as AgentInfo[];
      throw e;
    }
  };

  /** An agent's measured figures (METRICS_ALL_AGENTS), as the rows show them. */
  interface Measured {
    cpu_seconds: number;
    cpu_percent: number;
    memory_bytes: number;
    messages_in: number;
    messages_out: number;
    syscalls: number;
    quotas: AgentRow['quotas'];
  }
  const maxAge = deps.metricsMaxAgeMs ?? 1000;
  let measured: { at: number; byId: Map<number, Measured> } | undefined;
  let measuring: Promise<Map<number, Measured>> | undefined;
  const prevCpu = new Map<number, { seconds: number; at: number }>();

  /**
   * METRICS_ALL_AGENTS reads every agent's cgroup and /proc files (milliseconds per agent): taken at
   * most once per `maxAge` whoever asks (rows, stream, scrapes), one call at a time, shared. CPU percent
   * is the change of CPU seconds since the previous measurement.
   */
  const measure = (fresh = false): Promise<Map<number, Measured>> => {
    if (!fresh && measured && Date.now() - measured.at < maxAge) return Promise.resolve(measured.byId);
    measuring ??= (async () => {
      try {
        const all = (await read('METRICS_ALL_AGENTS', {})) as { agents: AgentMetrics[] };
        const now = Date.now();
        const byId = new Map<number, Measured>();
        for (const m of all.agents) {
          const cg = m.cgroup?.valid ? m.cgroup : null;
          const seconds = cg
            ? cg.cpu.usage_usec / 1e6
            : m.process
              ? (m.process.cpu.time_user_ms + m.process.cpu.time_system_ms) / 1000
              : 0;
          const prev = prevCpu.get(m.agent_id);
          const percent =
            prev && now > prev.at && seconds >= prev.seconds
              ? Math.round(((seconds - prev.seconds) / ((now - prev.at) / 1000)) * 10000) / 100
              : 0;
          prevCpu.set(m.agent_id, { seconds, at: now });
          const quotas: AgentRow['quotas'] = {};
          for (const [k, q] of Object.entries(m.quotas ?? {}))
            quotas[k] = {
              used: q.used,
              ...(q.limit !== undefined ? { limit: q.limit } : {}),
              ...(q.exceeded !== undefined ? { exceeded: q.exceeded } : {}),
            };
          byId.set(m.agent_id, {
            cpu_seconds: seconds,
            cpu_percent: percent,
            memory_bytes: cg ? cg.memory.current : (m.process?.memory.rss ?? 0),
            messages_in: m.kernel_stats.messages_recv,
            messages_out: m.kernel_stats.messages_sent,
            syscalls: m.kernel_stats.syscall_count,
            quotas,
          });
        }
        for (const id of prevCpu.keys()) if (!byId.has(id)) prevCpu.delete(id);
        measured = { at: Date.now(), byId };
        return byId;
      } finally {
        measuring = undefined;
      }
    })();
    return measuring;
  };

  /** The agents' rows: LIST (as of now) joined with the latest measurement (at most `maxAge` old). */
  const agents = async (signal?: AbortSignal): Promise<AgentRow[]> => {
    const [list, cached] = await Promise.all([listAll(signal), measure()]);
    // A local agent newer than the measurement is measured at once (a new row never shows zeros);
    // other nodes' agents are measured by their own kernels (their rows here carry LIST's fields).
    const here = deps.info().node ?? null;
    const local = (a: AgentInfo) => (a.node ?? null) === here;
    const byId = list.some((a) => local(a) && !cached.has(a.id)) ? await measure(true) : cached;
    return list.map((a) => {
      const m = byId.get(a.id);
      return {
        id: a.id,
        name: a.name,
        state: a.state,
        pid: a.pid,
        node: a.node ?? null,
        restarts: a.restarts,
        restart_policy: a.restart_policy,
        uptime_ms: a.uptime_ms,
        ready: a.ready,
        labels: a.labels ?? {},
        exit_code: a.exit_code,
        exit_reason: a.exit_reason,
        cpu_percent: m?.cpu_percent ?? 0,
        cpu_seconds: m?.cpu_seconds ?? 0,
        memory_bytes: m?.memory_bytes ?? 0,
        messages_in: m?.messages_in ?? 0,
        messages_out: m?.messages_out ?? 0,
        syscalls: m?.syscalls ?? 0,
        mailbox_depth: a.mailbox,
        quotas: m?.quotas ?? {},
      };
    });
  };

  const findAgent = async (key: string, signal?: AbortSignal): Promise<AgentInfo> => {
    const list = await listAll(signal);
    const a = /^\d+$/.test(key) ? list.find((x) => x.id === Number(key)) : list.find((x) => x.name === key);
    if (!a) throw new ApiError('not_found', `no such agent: ${key}`);
    return a;
  };

  const system = async (signal?: AbortSignal) => {
    const r = (await read('METRICS_SYSTEM', {}, signal)) as { metrics: SystemMetrics };
    return r.metrics;
  };

  // The stream's metrics: one snapshot a second, taken only while somebody listens.
  let ticking = false;
  const tick = async () => {
    if (ticking || !subscribers.size) return;
    ticking = true;
    try {
      const [sys, rows] = await Promise.all([system(), agents()]);
      broadcast({ type: 'metrics', ts: Date.now(), system: sys, agents: rows });
    } catch {
      // The kernel is closing (or a call failed): the next tick tries again.
    } finally {
      ticking = false;
    }
  };
  const timer = setInterval(() => void tick(), deps.streamIntervalMs ?? 1000);
  timer.unref();

  app.onError((err, c) => {
    const e = err instanceof ApiError ? err : new ApiError('internal', `internal error: ${err.message}`);
    return c.json(e.body(), e.status as 500);
  });
  app.notFound((c) => c.json({ error: 'not_found', message: `no route ${c.req.method} ${c.req.path}` }, 404));

  app.use('*', async (c, next) => {
    const p = c.req.path;
    if (OPEN.has(p) || !GUARDED(p)) return next();
    if (!tokenMatches(bearerOf(c.req.header('authorization')), deps.token))
      return c.json({ error: 'unauthorized', message: 'missing or wrong bearer token' }, 401);
    return next();
  });

  const maxBody = deps.maxBodyBytes ?? 1024 * 1024;
  app.use(
    '/api/*',
    bodyLimit({
      maxSize: maxBody,
      onError: async (c) => {
        await discardBody(c.req.raw);
        return c.json({ error: 'too_large', message: `request body larger than ${maxBody} bytes` }, 413);
      },
    }),
  );

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', (c) =>
    deps.ready() ? c.json({ status: 'ready' }) : c.json({ status: 'not ready' }, 503),
  );

  app.get('/api/v1/openapi.json', (c) => c.json(openApiDocument()));
  app.get('/api/v1/agents', async (c) => c.json(await agents(c.req.raw.signal)));
  app.post('/api/v1/agents', async (c) => {
    const body = Buffer.from(await c.req.arrayBuffer());
    if (!body.length)
      throw new ApiError('invalid_request', 'invalid request: the body must be a SPAWN request');
    return c.json(await deps.call('SPAWN', body, c.req.raw.signal), 201);
  });
  app.get('/api/v1/agents/:id', async (c) => {
    const a = await findAgent(c.req.param('id'), c.req.raw.signal);
    const row = (await agents(c.req.raw.signal)).find((r) => r.id === a.id);
    if (!row) throw new ApiError('not_found', `no such agent: ${c.req.param('id')}`);
    return c.json(row);
  });
  for (const verb of ['kill', 'restart', 'pause', 'resume'] as const) {
    const op = verb.toUpperCase() as OpName;
    app.post(`/api/v1/agents/:id/${verb}`, async (c) => {
      const a = await findAgent(c.req.param('id'), c.req.raw.signal);
      const extra = await optionalBody(c);
      return c.json(await deps.call(op, { ...extra, id: a.id }, c.req.raw.signal));
    });
  }
  app.get('/api/v1/agents/:id/logs', async (c) => {
    const tail = intParam(c, 'tail', 100, 1, 10_000);
    const a = await findAgent(c.req.param('id'), c.req.raw.signal);
    // A log file lives on its agent's node: another node's path means nothing here.
    if ((a.node ?? null) !== (deps.info().node ?? null))
      throw new ApiError(
        'not_supported',
        `${a.name} runs on node ${a.node}: read its logs through that node's API`,
      );
    return c.json({ agent_id: a.id, name: a.name, lines: a.log_file ? tailLines(a.log_file, tail) : [] });
  });

  app.get('/api/v1/services', async (c) => c.json(services(await agents(c.req.raw.signal))));
  app.post('/api/v1/services/:project/:service/scale', async (c) => {
    const body = await optionalBody(c);
    const n = body.replicas;
    if (!Number.isInteger(n) || (n as number) < 0 || (n as number) > 1000)
      throw new ApiError(
        'invalid_request',
        "invalid request: field 'replicas' must be an integer from 0 to 1000",
      );
    if (!deps.scale) throw new ApiError('not_supported', 'this kernel cannot scale services');
    return c.json(
      await deps.scale(c.req.param('project'), c.req.param('service'), n as number, c.req.raw.signal),
    );
  });

  app.get('/api/v1/events', (c) => {
    const since = intParam(c, 'since', 0, 0, Number.MAX_SAFE_INTEGER);
    const limit = intParam(c, 'limit', 100, 1, 1000);
    return c.json(history.since(since, limit));
  });
  app.get('/api/v1/system', async (c) =>
    c.json({ kernel: deps.info(), system: await system(c.req.raw.signal) }),
  );
  app.get('/api/v1/stream', (c) =>
    c.json(
      {
        error: 'invalid_request',
        message: 'GET /api/v1/stream is a WebSocket: send Upgrade: websocket',
      },
      426,
    ),
  );
  app.get('/metrics', async (c) => {
    if (!deps.metrics) throw new ApiError('not_supported', 'this kernel exports no metrics');
    const m = await deps.metrics();
    return c.body(m.text, 200, { 'content-type': m.contentType });
  });

  deps.mountStatic?.(app);

  return {
    app,
    agents,
    subscribe(send) {
      subscribers.add(send);
      void tick();
      return () => subscribers.delete(send);
    },
    close() {
      clearInterval(timer);
      untap();
      subscribers.clear();
    },
  };
}

export type { ApiEvent };

/** A request body that may be absent: `{}` then; anything but a JSON object is a 400. */
async function optionalBody(c: Context): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (!text.trim()) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new ApiError(
      'invalid_request',
      `invalid request: body is not valid JSON (${(e as Error).message})`,
    );
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new ApiError('invalid_request', 'invalid request: body must be a JSON object');
  return v as Record<string, unknown>;
}

/**
 * Reads what is left of a refused body and drops it (up to 64 MiB, never buffered): a client still
 * sending its body must get to read the 413, not a connection closed under it.
 */
async function discardBody(req: Request): Promise<void> {
  const reader = req.body?.getReader();
  if (!reader) return;
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done || (n += value.byteLength) > 64 << 20) break;
    }
  } catch {
    // the client went away
  } finally {
    reader.releaseLock();
  }
}

/** An integer query parameter within [min, max], `dflt` when absent; anything else is a 400 naming it. */
function intParam(c: Context, name: string, dflt: number, min: number, max: number): number {
  const v = c.req.query(name);
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new ApiError(
      'invalid_request',
      `invalid request: query '${name}' must be an integer from ${min} to ${max}`,
    );
  return n;
}

/** The last `n` lines of a log file, reading at most its last 1 MiB (a log may be large). */
function tailLines(file: string, n: number): string[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, 1 << 20);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    if (len < size) lines.shift(); // cut in the middle
    return lines.slice(-n);
  } finally {
    fs.closeSync(fd);
  }
}

/** Agents grouped by their clove.project / clove.service labels (agents without them are left out). */
export function services(rows: AgentRow[]) {
  const by = new Map<string, { project: string; service: string; agents: AgentRow[] }>();
  for (const r of rows) {
    const project = r.labels[LABEL.project];
    const service = r.labels[LABEL.service];
    if (!project || !service) continue;
    const k = `${project}\u0000${service}`;
    let s = by.get(k);
    if (!s) by.set(k, (s = { project, service, agents: [] }));
    s.agents.push(r);
  }
  return [...by.values()]
    .sort((a, b) => a.project.localeCompare(b.project) || a.service.localeCompare(b.service))
    .map((s) => ({
      ...s,
      replicas: s.agents.length,
      running: s.agents.filter((a) => a.state === 'RUNNING').length,
    }));
}
