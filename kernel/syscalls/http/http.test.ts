/**
 * HTTP on a real kernel (docs/protocol.md §5 HTTP): test servers on loopback stand for the internet, so
 * the one "public" server is named by the callers' `network` lists (`127.0.0.1:<its port>`); every
 * other loopback address or port, private and metadata address must stay out of reach, whatever the
 * spelling of the URL and wherever a redirect points. A sandboxed Python agent uses the Python SDK's
 * `http()`; operator clients narrowed with SET_PERMS play the policy matrix.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startKernel, tempDir, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';
import { KernelError } from '../../../sdk/typescript/errors.js';
import type { Requests, Replies } from '../../../protocol/index.js';

type Reply = Replies['HTTP'];

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A test server on `host`; it records what it receives. */
async function serve(
  host: string,
  handler: (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void,
) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      handler(req, body, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as net.AddressInfo).port;
  return { server, port, seen, base: `http://${host}:${port}` };
}

let tk: TestKernel;
let op: CloveClient;
let pub: Awaited<ReturnType<typeof serve>>; // the "public" server: 127.0.0.1:<port>, named by the lists
let other: Awaited<ReturnType<typeof serve>>; // 127.0.0.2: loopback, never named
let otherPort: Awaited<ReturnType<typeof serve>>; // 127.0.0.1, another port, never named
let hang: net.Server; // accepts and never answers
let hangPort: number;
const hangSockets = new Set<net.Socket>();
const MARK = path.join(os.tmpdir(), `clove-http-pwned-${process.pid}`);

beforeAll(async () => {
  other = await serve('127.0.0.2', (_q, _b, res) => res.end('secret of 127.0.0.2'));
  otherPort = await serve('127.0.0.1', (_q, _b, res) => res.end('secret of another port'));
  pub = await serve('127.0.0.1', (req, body, res) => {
    const u = new URL(req.url!, 'http://x');
    const p = u.pathname;
    if (p === '/ok') {
      res.setHeader('x-test', 'a');
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.setHeader('content-type', 'application/json');
      return res.end(JSON.stringify({ hello: 'world', n: 1 }));
    }
    if (p === '/missing') return res.writeHead(404).end('nope');
    if (p.startsWith('/chain/')) {
      const n = Number(p.slice(7));
      if (n === 0) return res.end('landed');
      return res.writeHead(302, { location: `/chain/${n - 1}` }).end();
    }
    if (p === '/loop') return res.writeHead(302, { location: '/loop' }).end();
    if (p === '/see-other') return res.writeHead(303, { location: '/echo' }).end();
    if (p === '/redirect') return res.writeHead(302, { location: u.searchParams.get('to')! }).end();
    if (p === '/echo')
      return res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
    if (p === '/big') {
      const chunk = Buffer.alloc(64 * 1024, 'x');
      let left = 9 * 1024 * 1024;
      const write = (): void => {
        while (left > 0) {
          left -= chunk.length;
          if (!res.write(chunk)) return void res.once('drain', write);
        }
        res.end();
      };
      return write();
    }
    if (p === '/binary') return res.end(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
    res.writeHead(500).end('unexpected');
  });
  hang = net.createServer((s) => {
    hangSockets.add(s);
    s.on('close', () => hangSockets.delete(s));
    s.on('error', () => {});
  });
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
  hangPort = (hang.address() as net.AddressInfo).port;
  tk = await startKernel();
  op = await tk.client();
});

afterAll(async () => {
  await tk?.stop();
  for (const s of hangSockets) s.destroy();
  for (const s of [pub?.server, other?.server, otherPort?.server, hang]) s?.close();
  fs.rmSync(MARK, { force: true });
  for (const d of scriptDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** An operator client narrowed to these lists (an operator may set its own rights). */
async function clientWith(network: string[], methods: string[] = ['GET', 'POST']): Promise<CloveClient> {
  const c = await tk.client();
  const me = (await c.hello()).agent_id;
  await c.setPerms(me, { network, http_methods: methods });
  return c;
}

/** The reply, or the error reply the SDK threw. */
async function call(c: CloveClient, req: Requests['HTTP']): Promise<Reply & { code?: string }> {
  try {
    return await c.http(req);
  } catch (e) {
    if (e instanceof KernelError) return e.reply as Reply;
    throw e;
  }
}

/** A sandboxed Python agent that makes the HTTP calls of its CASES with the SDK and reports the replies. */
const AGENT = [
  'import json, os',
  'from clove_sdk import CloveClient',
  'c = CloveClient(timeout=60)',
  'c.connect()',
  'out = []',
  'for case in json.loads(os.environ["CASES"]):',
  '    out.append(c.http(case["url"], case.get("method", "GET"), case.get("headers"), case.get("body"), case.get("timeout", 30)))',
  'c.send_message({"results": out}, to=int(os.environ["REPORT_TO"]))',
  '# Stay until killed: the test reads what was counted for this agent first.',
  'c.wait_message(timeout=None)',
].join('\n');

const scriptDirs: string[] = [];
function agentScript(): string {
  const dir = tempDir();
  scriptDirs.push(dir);
  const script = path.join(dir, 'http_agent.py');
  fs.writeFileSync(script, AGENT, { mode: 0o644 });
  return script;
}

describe('HTTP from a sandboxed agent (Python SDK)', () => {
  it('real status, headers and body; redirects; refusals; nothing a shell would run', async () => {
    const me = (await op.hello()).agent_id;
    const base = pub.base;
    const inject = `'; touch ${MARK}; echo '`;
    const cases = [
      { url: `${base}/ok` },
      { url: `http://localhost:${pub.port}/missing` },
      { url: `${base}/chain/3` },
      {
        url: `${base}/echo`,
        method: 'POST',
        headers: { 'X-Inject': inject, 'X-Sub': `$(touch ${MARK})` },
        body: `\`touch ${MARK}\` ${inject}`,
      },
      { url: `${base}/echo?q=${inject}&r=$(touch ${MARK})` },
      { url: `https://example.com/` },
      { url: `${base}/ok`, method: 'DELETE' },
      { url: `${base}/ok`, method: `GET ${inject}` },
      { url: `http://127.0.0.2:${other.port}/` },
      { url: `${base}/redirect?to=${encodeURIComponent(`http://127.0.0.2:${other.port}/`)}` },
    ];
    const s = await op.spawn({
      name: 'http-agent',
      script: agentScript(),
      env: { REPORT_TO: String(me), CASES: JSON.stringify(cases) },
      permissions: {
        network: [`localhost:${pub.port}`, `127.0.0.1:${pub.port}`],
        http_methods: ['GET', 'POST'],
      },
    });
    const r = await op.recv({ max: 1, timeoutMs: 30_000 });
    expect(r.count, 'the agent reports within 30 s').toBe(1);
    const [ok, missing, chain, post, query, notListed, badMethod, injectedMethod, otherIp, redirected] = (
      r.messages[0].message as { results: (Reply & { code?: string })[] }
    ).results;

    expect(ok).toMatchObject({
      success: true,
      status_code: 200,
      ok: true,
      body: '{"hello":"world","n":1}',
      body_encoding: 'utf8',
      truncated: false,
      redirects: 0,
    });
    expect(ok.headers).toMatchObject({
      'x-test': 'a',
      'set-cookie': 'a=1\nb=2',
      'content-type': 'application/json',
    });
    expect(missing).toMatchObject({ success: true, status_code: 404, ok: false, body: 'nope' });
    expect(chain).toMatchObject({
      success: true,
      status_code: 200,
      body: 'landed',
      redirects: 3,
      final_url: `${base}/chain/0`,
    });
    const echoed = JSON.parse(post.body) as Seen;
    expect(echoed.method).toBe('POST');
    expect(echoed.headers['x-inject']).toBe(inject);
    expect(echoed.headers['x-sub']).toBe(`$(touch ${MARK})`);
    expect(echoed.body).toBe(`\`touch ${MARK}\` ${inject}`);
    expect(echoed.headers['user-agent']).toMatch(/^clove\//);
    const sent = new URL(JSON.parse(query.body).url as string, 'http://x').searchParams;
    expect([sent.get('q'), sent.get('r')]).toEqual([inject, `$(touch ${MARK})`]);
    expect(notListed).toMatchObject({
      success: false,
      code: 'permission_denied',
      error: 'Permission denied: domain not in whitelist: example.com',
    });
    expect(badMethod).toMatchObject({
      success: false,
      code: 'permission_denied',
      error: 'Permission denied: HTTP method not allowed: DELETE',
    });
    expect(injectedMethod).toMatchObject({ success: false, code: 'invalid_request' });
    expect(otherIp).toMatchObject({ success: false, code: 'permission_denied' });
    expect(redirected).toMatchObject({ success: false, code: 'permission_denied' });
    expect(redirected.error).toMatch(/redirect target not in whitelist: 127\.0\.0\.2/);
    expect(other.seen).toEqual([]);
    expect(fs.existsSync(MARK)).toBe(false);

    // What the agent's calls sent and received is counted for it.
    const principals = (tk.kernel as unknown as { principals: { stats(id: number): { httpBytes: number } } })
      .principals;
    expect(principals.stats(s.id).httpBytes).toBeGreaterThan(1000);
    await op.kill(s.id);
  }, 60_000);

  it('a call longer than the watchdog is activity: the agent is not killed while it waits', async () => {
    const me = (await op.hello()).agent_id;
    const t = Date.now();
    const s = await op.spawn({
      name: 'http-waiter',
      script: agentScript(),
      env: {
        REPORT_TO: String(me),
        CASES: JSON.stringify([{ url: `http://127.0.0.1:${hangPort}/`, timeout: 3 }]),
      },
      permissions: { network: [`127.0.0.1:${hangPort}`], http_methods: ['GET'] },
      watchdog_ms: 1000,
    });
    const r = await op.recv({ max: 1, timeoutMs: 20_000 });
    expect(r.count).toBe(1);
    const [res] = (r.messages[0].message as { results: Reply[] }).results;
    expect(res).toMatchObject({ success: false, code: 'upstream_failed', failure: 'timeout' });
    expect(Date.now() - t).toBeGreaterThan(2900);
    await op.kill(s.id).catch(() => {}); // it may have exited already
  }, 30_000);
});

describe('the domain and method lists', () => {
  it('refuses hosts that only look allowed, before any connection', async () => {
    const c = await clientWith(['allowed.com', '*.allowed.com', `127.0.0.1:${pub.port}`], ['GET']);
    for (const url of [
      'http://example.com/',
      'http://evil.com?.allowed.com/',
      'http://evil.com/?.allowed.com',
      'http://allowed.com.evil.com/',
      'http://allowed.com@evil.com/',
      'http://аllowed.com/', // Cyrillic а
      'http://allowed.com.evil.com./',
      `http://127.0.0.1:${otherPort.port}/`,
      `http://localhost:${pub.port}/ok`, // a name is not the address the list names
    ]) {
      const r = await call(c, { url });
      expect(r, url).toMatchObject({ success: false, code: 'permission_denied' });
      expect(r.error, url).toMatch(/domain not in whitelist/);
    }
    expect(await call(c, { url: `${pub.base}/ok`, method: 'POST' })).toMatchObject({
      success: false,
      code: 'permission_denied',
      error: 'Permission denied: HTTP method not allowed: POST',
    });
    expect(await call(c, { url: `${pub.base}/ok`, method: 'get' })).toMatchObject({
      success: true,
      status_code: 200,
    });
    expect(await call(c, { url: 'file:///etc/passwd' })).toMatchObject({ code: 'permission_denied' });
    expect(otherPort.seen).toEqual([]);
  });

  it('a caller without can_http, a missing url, async, smuggling headers', async () => {
    const c = await tk.client();
    const me = (await c.hello()).agent_id;
    await c.setPerms(me, 'standard');
    expect(await call(c, { url: `${pub.base}/ok` })).toMatchObject({
      code: 'permission_denied',
      error: 'Permission denied: HTTP not allowed',
    });
    expect(await call(op, {} as Requests['HTTP'])).toMatchObject({
      code: 'invalid_request',
      error: 'invalid request: url required',
    });
    expect(await call(op, { url: `${pub.base}/ok`, async: true })).toMatchObject({
      success: true,
      async: true,
      status: 'accepted',
    });
    const w = await clientWith(['*', `127.0.0.1:${pub.port}`]);
    for (const h of ['Host', 'Transfer-Encoding', 'Connection', 'Proxy-Authorization', 'Content-Length'])
      expect(await call(w, { url: `${pub.base}/echo`, headers: { [h]: 'evil.com' } }), h).toMatchObject({
        code: 'invalid_request',
      });
    expect(
      await call(w, { url: `${pub.base}/echo`, headers: { 'X-A': 'a\r\nHost: evil.com' } }),
    ).toMatchObject({
      code: 'invalid_request',
    });
  });
});

describe('the SSRF rule: addresses actually connected to', () => {
  it('loopback, private and metadata addresses in every spelling are refused, even with `*`', async () => {
    const c = await clientWith(['*'], ['*']);
    const p = pub.port;
    const before = pub.seen.length;
    for (const url of [
      `http://127.0.0.1:${p}/ok`,
      `http://127.1:${p}/ok`,
      `http://2130706433:${p}/ok`,
      `http://0x7f000001:${p}/ok`,
      `http://0177.0.0.1:${p}/ok`,
      `http://[::1]:${p}/ok`,
      `http://[::ffff:127.0.0.1]:${p}/ok`,
      `http://[::ffff:7f00:1]:${p}/ok`,
      `http://localhost:${p}/ok`, // a name that resolves to loopback
      'http://10.0.0.1/',
      'http://192.168.1.1/',
      'http://172.16.0.1/',
      'http://100.64.0.1/',
      'http://0.0.0.0/',
      'http://169.254.169.254/latest/meta-data/',
      'http://[fd00:ec2::254]/',
      'http://[fe80::1]/',
    ]) {
      const t = Date.now();
      const r = await call(c, { url, timeout: 5 });
      expect(r, url).toMatchObject({ success: false, code: 'permission_denied' });
      expect(r.error, url).toMatch(/(loopback|private|link-local|cgnat|unspecified|metadata) address/);
      expect(Date.now() - t, url).toBeLessThan(2000);
    }
    expect(pub.seen.length).toBe(before);
  });

  it('a redirect from the named server to an address or port not named is refused', async () => {
    // `*` lets every host through the domain list: only the address rule stands in the way.
    const c = await clientWith(['*', `127.0.0.1:${pub.port}`], ['*']);
    const to = (target: string) => `${pub.base}/redirect?to=${encodeURIComponent(target)}`;
    for (const target of [
      `http://127.0.0.2:${other.port}/`,
      `http://127.0.0.1:${otherPort.port}/`,
      `http://localhost:${otherPort.port}/`,
      `http://[::1]:${otherPort.port}/`,
      'http://169.254.169.254/latest/meta-data/',
      'http://10.0.0.1/',
    ]) {
      const r = await call(c, { url: to(target), timeout: 5 });
      expect(r, target).toMatchObject({ success: false, code: 'permission_denied' });
      expect(r.error, target).toMatch(/address/);
    }
    expect(other.seen).toEqual([]);
    expect(otherPort.seen).toEqual([]);
    // The named server itself is reachable, by address and through its own redirects.
    expect(await call(c, { url: to(`${pub.base}/ok`) })).toMatchObject({
      success: true,
      status_code: 200,
      redirects: 1,
    });
  });

  it('redirects: at most 5, a 303 turns a POST into a GET, 0 returns the 3xx', async () => {
    const c = await clientWith([`127.0.0.1:${pub.port}`]);
    expect(await call(c, { url: `${pub.base}/chain/5` })).toMatchObject({
      success: true,
      body: 'landed',
      redirects: 5,
    });
    expect(await call(c, { url: `${pub.base}/chain/6` })).toMatchObject({
      success: false,
      code: 'upstream_failed',
      failure: 'redirects',
    });
    expect(await call(c, { url: `${pub.base}/loop` })).toMatchObject({
      success: false,
      failure: 'redirects',
    });
    const r = await call(c, { url: `${pub.base}/see-other`, method: 'POST', body: 'x' });
    expect(r).toMatchObject({ success: true, redirects: 1 });
    expect(JSON.parse(r.body)).toMatchObject({ method: 'GET', body: '' });
    expect(await call(c, { url: `${pub.base}/chain/2`, max_redirects: 0 })).toMatchObject({
      success: true,
      status_code: 302,
      ok: false,
      redirects: 0,
    });
  });
});

describe('limits', () => {
  it('a response over the limit is truncated; binary bodies come as base64', async () => {
    const c = await clientWith([`127.0.0.1:${pub.port}`]);
    const big = await call(c, { url: `${pub.base}/big` });
    expect(big).toMatchObject({ success: true, status_code: 200, truncated: true });
    expect(big.body.length).toBe(8 * 1024 * 1024);
    const small = await call(c, { url: `${pub.base}/big`, max_response_bytes: 1000 });
    expect(small).toMatchObject({ truncated: true, body: 'x'.repeat(1000) });
    const bin = await call(c, { url: `${pub.base}/binary` });
    expect(bin).toMatchObject({ success: true, body_encoding: 'base64', truncated: false });
    expect(Buffer.from(bin.body, 'base64')).toEqual(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
  }, 30_000);

  it('a server that never answers times out in about `timeout` s while the kernel serves others', async () => {
    const c = await clientWith([`127.0.0.1:${hangPort}`, `127.0.0.1:${pub.port}`]);
    const t = Date.now();
    const pending = call(c, { url: `http://127.0.0.1:${hangPort}/`, timeout: 2 });
    await new Promise((r) => setTimeout(r, 200));
    // Meanwhile: another client's syscalls and HTTP calls are served at once.
    const t2 = Date.now();
    expect((await op.hello()).success).toBe(true);
    expect(await call(op, { url: 'http://10.0.0.1/' })).toMatchObject({ code: 'permission_denied' });
    const c2 = await clientWith([`127.0.0.1:${pub.port}`]);
    expect(await call(c2, { url: `${pub.base}/ok` })).toMatchObject({ status_code: 200 });
    expect(Date.now() - t2).toBeLessThan(1000);
    const r = await pending;
    const took = Date.now() - t;
    expect(r).toMatchObject({ success: false, code: 'upstream_failed', failure: 'timeout', status_code: 0 });
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(4000);
  }, 20_000);

  it('a refused connection is upstream_failed, not a crash', async () => {
    const free = net.createServer();
    await new Promise<void>((r) => free.listen(0, '127.0.0.1', r));
    const port = (free.address() as net.AddressInfo).port;
    await new Promise((r) => free.close(r));
    const c = await clientWith([`127.0.0.1:${port}`]);
    expect(await call(c, { url: `http://127.0.0.1:${port}/` })).toMatchObject({
      success: false,
      code: 'upstream_failed',
      failure: 'connect',
    });
  });
});
