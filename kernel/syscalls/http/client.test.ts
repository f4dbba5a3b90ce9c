/**
 * The HTTP service with an injected resolver (no kernel, no /etc/hosts): names that resolve to special
 * addresses, answers that mix allowed and refused addresses, the one lookup per connection (no separate
 * check a DNS rebinding could race), failures, and the in-flight limits.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { HttpService, type HttpArgs, type Lookup } from './client.js';
import type { Caller, Permissions } from '../../core/family.js';

let server: http.Server;
let port: number;
let hits = 0;
let hang: net.Server;
let hangPort: number;
const hangSockets = new Set<net.Socket>();

beforeAll(async () => {
  server = http.createServer((req, res) => {
    hits++;
    if (req.url === '/to-name') return res.writeHead(302, { location: `http://inside.test:${port}/` }).end();
    res.end(`hello from ${req.headers.host}`);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as net.AddressInfo).port;
  hang = net.createServer((s) => {
    hangSockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
  hangPort = (hang.address() as net.AddressInfo).port;
});
afterAll(() => {
  for (const s of hangSockets) s.destroy();
  server.close();
  hang.close();
});

function caller(network: string[], id = 7, role: Caller['role'] = 'agent'): Caller {
  const perms = { can_http: true, network, http_methods: ['*'] } as unknown as Permissions;
  return { id, role, name: `c${id}`, perms };
}

const args = (url: string, more: Partial<HttpArgs> = {}): HttpArgs => ({
  url,
  method: 'GET',
  body_encoding: 'utf8',
  timeout: 5,
  max_response_bytes: 1 << 20,
  max_redirects: 5,
  async: false,
  ...more,
});

/** A resolver from a table, counting its calls. */
function table(t: Record<string, string[]>): Lookup & { calls: string[] } {
  const calls: string[] = [];
  const fn = async (host: string) => {
    calls.push(host);
    const a = t[host];
    if (!a) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return a.map((address) => ({ address, family: net.isIPv6(address) ? 6 : 4 }));
  };
  return Object.assign(fn, { calls });
}

describe('the resolver and the SSRF rule', () => {
  it('a name is connected to only through addresses the rule allows, resolved once, at connect', async () => {
    const lookup = table({
      'public.test': ['127.0.0.1'],
      'mixed.test': ['10.0.0.1', '169.254.169.254', '::1', '127.0.0.1'],
      'inside.test': ['127.0.0.1'],
      'private.test': ['192.168.1.10', 'fd00::1'],
    });
    const svc = new HttpService({ lookup });
    const named = caller(['*.test', `127.0.0.1:${port}`]);
    const before = hits;
    expect(await svc.request({ caller: named }, args(`http://public.test:${port}/`))).toMatchObject({
      success: true,
      status_code: 200,
      body: `hello from public.test:${port}`,
    });
    expect(lookup.calls).toEqual(['public.test']); // one lookup: the connect's own
    // Refused answers are dropped; the named one is used.
    expect(await svc.request({ caller: named }, args(`http://mixed.test:${port}/`))).toMatchObject({
      success: true,
    });
    // Without the address named, a name that resolves to loopback or private addresses is refused.
    const unnamed = caller(['*.test']);
    await expect(svc.request({ caller: unnamed }, args(`http://public.test:${port}/`))).rejects.toThrow(
      /127\.0\.0\.1 is a loopback address/,
    );
    await expect(svc.request({ caller: unnamed }, args(`http://private.test:${port}/`))).rejects.toThrow(
      /private address/,
    );
    // The named address on another port is not named.
    await expect(
      svc.request(
        { caller: caller(['*.test', `127.0.0.1:${port + 1}`]) },
        args(`http://public.test:${port}/`),
      ),
    ).rejects.toThrow(/loopback address/);
    expect(hits - before).toBe(2);
    // A redirect to a name that resolves inside is checked at its own connect.
    await expect(
      svc.request(
        { caller: caller(['*.test', `public.test:${port}`, `127.0.0.1:${port}`]) },
        args(`http://public.test:${port}/to-name`),
      ),
    ).resolves.toMatchObject({ success: true, redirects: 1 }); // inside.test:port is 127.0.0.1:port, named
    await expect(
      svc.request(
        { caller: caller(['public.test', `127.0.0.1:${port}`]) },
        args(`http://public.test:${port}/to-name`),
      ),
    ).rejects.toThrow(/redirect target not in whitelist: inside\.test/);
  });

  it('a DNS answer that changes between calls is judged each time it is used', async () => {
    // The rebinding target listens (same port, another loopback address): only the rule keeps it out.
    let inside = 0;
    const target = http.createServer((_q, res) => {
      inside++;
      res.end('inside');
    });
    await new Promise<void>((r) => target.listen(port, '127.0.0.2', r));
    let n = 0;
    const lookup: Lookup = async () => [{ address: n++ === 0 ? '127.0.0.1' : '127.0.0.2', family: 4 }];
    const svc = new HttpService({ lookup });
    const c = caller(['rebind.test', `127.0.0.1:${port}`]);
    expect(await svc.request({ caller: c }, args(`http://rebind.test:${port}/`))).toMatchObject({
      success: true,
    });
    await expect(svc.request({ caller: c }, args(`http://rebind.test:${port}/`))).rejects.toThrow(
      /127\.0\.0\.2 is a loopback address/,
    );
    expect(inside).toBe(0);
    target.close();
  });

  it('an unknown name is a dns failure', async () => {
    const svc = new HttpService({ lookup: table({}) });
    expect(await svc.request({ caller: caller(['*']) }, args('http://nowhere.test/'))).toMatchObject({
      success: false,
      code: 'upstream_failed',
      failure: 'dns',
    });
  });
});

describe('in-flight limits and shutdown', () => {
  it('a caller may have 4 calls in flight, the kernel 16; close() cancels them', async () => {
    const svc = new HttpService({ maxPerCaller: 4, maxInFlight: 6 });
    const a = caller([`127.0.0.1:${hangPort}`], 1);
    const slow = () => svc.request({ caller: a }, args(`http://127.0.0.1:${hangPort}/`, { timeout: 10 }));
    const running = [slow(), slow(), slow(), slow()];
    await expect(slow()).rejects.toMatchObject({
      code: 'quota_exceeded',
      extra: { budget: 'http_in_flight' },
    });
    const b = caller([`127.0.0.1:${hangPort}`], 2);
    const others = [1, 2].map(() =>
      svc.request({ caller: b }, args(`http://127.0.0.1:${hangPort}/`, { timeout: 10 })),
    );
    await expect(
      svc.request({ caller: caller([`127.0.0.1:${hangPort}`], 3) }, args(`http://127.0.0.1:${hangPort}/`)),
    ).rejects.toMatchObject({
      code: 'quota_exceeded',
      extra: { budget: 'kernel_http_in_flight' },
    });
    const t = Date.now();
    svc.close();
    for (const r of await Promise.all([...running, ...others]))
      expect(r).toMatchObject({ success: false, failure: 'aborted' });
    expect(Date.now() - t).toBeLessThan(1000);
  });
});
