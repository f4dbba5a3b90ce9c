/**
 * The kernel's HTTP service, assembled (kernel.ts calls `startHttp` once the sockets listen): the token,
 * the API's operator principal, the API app, the Prometheus registry and the listener. Also what the
 * relay's tunnel needs to serve the same app: `createApi`, `Api.subscribe`.
 */
import type { Logger } from 'pino';
import type { NativePollStats } from '../../native/index.js';
import type { OpName } from '../../protocol/index.js';
import type { Dispatcher } from '../core/dispatch.js';
import type { Principal, Principals } from '../core/principals.js';
import type { EventBus } from '../events/bus.js';
import { createApi, type AgentRow, type Api, type ApiDeps } from './api.js';
import { fromReply } from './errors.js';
import { createPrometheus } from './prometheus.js';
import { makeScale, type SpawnTemplates } from './scale.js';
import { HttpService } from './service.js';
import { mountDashboard } from './static.js';
import { ensureToken } from './token.js';

export { createApi, type Api, type ApiDeps } from './api.js';
export { ApiError } from './errors.js';
export { HttpService, STREAM_PATH } from './service.js';
export { ensureToken, tokenFile } from './token.js';

export interface KernelApiOptions {
  dataDir: string;
  dispatcher: Dispatcher;
  principals: Principals;
  events: EventBus;
  log: Logger;
  ready(): boolean;
  info(): Record<string, unknown>;
  /** The largest request body (the kernel's --max-payload). */
  maxBodyBytes: number;
  /** The SPAWN request an agent was started with (the agents service keeps it): server-side scale. */
  templates: SpawnTemplates;
  /** With the fast path on: what its reactor's polling did (docs/fastpath.md, "Polling"). */
  fastPathPoll?: () => NativePollStats;
}

export interface HttpStartOptions extends KernelApiOptions {
  host: string;
  port: number;
}

export interface KernelApi {
  api: Api;
  token: string;
  /** Ends the API's calls, its stream and its event taps. */
  close(): void;
}

export interface HttpHandle {
  api: Api;
  service: HttpService;
  url: string;
  close(): Promise<void>;
}

/**
 * An operator principal the API's calls run as: allocated like a connection's, opened with an
 * operator's rights, never released while the kernel runs (denials are audited under its name):
 * `http` for the REST verbs, `http-monitor` for the API's own reads.
 */
export function apiPrincipal(principals: Principals, name: string): Principal {
  const p: Principal = { id: principals.allocate(), role: 'operator', name };
  principals.clientOpened(p);
  return p;
}

/** The API's `call`: a syscall through the dispatcher as `principal`, the reply decoded, errors thrown. */
export function callerFor(
  dispatcher: Pick<Dispatcher, 'dispatchAs'>,
  principal: Principal,
  life: AbortSignal,
): ApiDeps['call'] {
  return async (op: OpName, payload, signal) => {
    const buf = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
    const reply = await dispatcher.dispatchAs(principal, op, buf, signal ?? life, 'http');
    const v: unknown = Buffer.isBuffer(reply) ? JSON.parse(reply.toString('utf8')) : reply;
    if (v && typeof v === 'object' && !Array.isArray(v) && (v as { success?: unknown }).success === false)
      throw fromReply(v as Record<string, unknown>);
    return v;
  };
}

/**
 * The kernel's API without a listener: the token, its two operator principals, the Prometheus registry
 * and the app. `startHttp` listens with it; the relay's tunnel can serve it without any listener.
 */
export function createKernelApi(o: KernelApiOptions): KernelApi {
  const token = ensureToken(o.dataDir);
  const principal = apiPrincipal(o.principals, 'http');
  const reader = apiPrincipal(o.principals, 'http-monitor');
  const life = new AbortController();
  const call = callerFor(o.dispatcher, principal, life.signal);
  const read = callerFor(o.dispatcher, reader, life.signal);
  const tapEvents: ApiDeps['tapEvents'] = (fn) => o.events.tap(fn);
  // The collectors read the API's rows; the API exposes the collectors: the rows come late-bound.
  const rows = { of: async (): Promise<AgentRow[]> => [] };
  const prom = createPrometheus({
    rows: () => rows.of(),
    observe: (fn) => o.dispatcher.observe(fn),
    tapEvents,
    ignore: reader.id,
    ...(o.fastPathPoll ? { fastPathPoll: o.fastPathPoll } : {}),
  });
  const api = createApi({
    token,
    call,
    read,
    tapEvents,
    ready: o.ready,
    info: o.info,
    metrics: () => prom.expose(),
    scale: makeScale(call, o.templates),
    mountStatic: (app) => mountDashboard(app),
    maxBodyBytes: o.maxBodyBytes,
  });
  rows.of = () => api.agents();
  return {
    api,
    token,
    close: () => {
      life.abort();
      api.close();
      prom.close();
    },
  };
}

/** Builds the API and listens on `host:port`; the URL it logs carries the token (`#token=`) for the dashboard. */
export async function startHttp(o: HttpStartOptions): Promise<HttpHandle> {
  const k = createKernelApi(o);
  const { api, token } = k;
  const service = new HttpService({ api, token, host: o.host, port: o.port, log: o.log });
  const addr = await service.listen();
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${host}:${addr.port}`;
  o.log.info({ http: url }, `http api listening: dashboard at ${url}/#token=${token}`);
  if (!isLoopback(addr.address))
    o.log.warn(
      { http: url },
      'http api on a non-loopback address: plain HTTP, anyone who can reach it and holds the token is an operator (put TLS in front, or use the relay)',
    );
  return {
    api,
    service,
    url,
    close: async () => {
      k.close();
      await service.close();
    },
  };
}

/** 127.0.0.0/8, ::1 and IPv4-mapped loopback: the addresses only this machine reaches. */
function isLoopback(address: string): boolean {
  return /^(127\.|::1$|::ffff:127\.)/.test(address);
}
