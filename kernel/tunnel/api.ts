/**
 * The kernel's HTTP API as the tunnel serves it. A kernel started with `--http` already has one (its
 * app and stream are reused); one without gets the same app built here on first use, with no listener:
 * the relay's users then reach the API only through the tunnel. Loaded lazily, like kernel/http itself,
 * so a kernel that never tunnels never imports hono or prom-client.
 */
import type { HttpStartOptions } from '../http/index.js';
import type { TunnelApi } from './client.js';

/** What the API needs of the kernel, as startHttp takes it (without where to listen). */
export type TunnelApiOptions = Omit<HttpStartOptions, 'host' | 'port'>;

/** The API app of a kernel without `--http`, its stream, and its token (mirrors startHttp, minus the listener). */
export async function buildTunnelApi(o: TunnelApiOptions): Promise<TunnelApi & { close(): void }> {
  const http = await import('../http/index.js');
  const { createPrometheus } = await import('../http/prometheus.js');
  const { makeScale } = await import('../http/scale.js');
  const token = http.ensureToken(o.dataDir);
  const principal = http.apiPrincipal(o.principals, 'http');
  const reader = http.apiPrincipal(o.principals, 'http-monitor');
  const life = new AbortController();
  const call = http.callerFor(o.dispatcher, principal, life.signal);
  const read = http.callerFor(o.dispatcher, reader, life.signal);
  const tapEvents = (fn: Parameters<typeof o.events.tap>[0]) => o.events.tap(fn);
  const rows = { of: async () => [] as Awaited<ReturnType<typeof api.agents>> };
  const prom = createPrometheus({
    rows: () => rows.of(),
    observe: (fn) => o.dispatcher.observe(fn),
    tapEvents,
    ignore: reader.id,
  });
  const api = http.createApi({
    token,
    call,
    read,
    tapEvents,
    ready: o.ready,
    info: o.info,
    metrics: () => prom.expose(),
    scale: makeScale(call, o.templates),
    maxBodyBytes: o.maxBodyBytes,
  });
  rows.of = () => api.agents();
  return {
    fetch: (req) => api.app.fetch(req),
    subscribe: (send) => api.subscribe(send),
    token,
    close: () => {
      life.abort();
      api.close();
      prom.close();
    },
  };
}
