/**
 * The mcp family on a real kernel (docs/mcp.md): the operator's mcp.json declares real MCP servers
 * written with the official SDK — testdata/tool-server.mjs over stdio (twice: once with tight bounds),
 * a streamable HTTP server in this process (it wants a bearer token the kernel must send), and a
 * command that does not exist. Sandboxed Python agents (testdata/mcp_agent.py, the Python SDK's
 * mcp_list_tools / mcp_call) list and call tools through the kernel with and without grants; denials
 * and calls are read back from the audit log; a server that crashes is started again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { startKernel, tempDir, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';
import { KernelError } from '../../../sdk/typescript/errors.js';
import { mcpGranted } from '../../core/family.js';

const TESTDATA = path.join(import.meta.dirname, 'testdata');
const TOOL_SERVER = path.join(TESTDATA, 'tool-server.mjs');
const WEB_TOKEN = 'web-secret-token-1234';
const LEAKY_SECRET = 'sk-never-shown-9876';

type Json = Record<string, unknown>;

let tk: TestKernel;
let op: CloveClient;
let scripts: string;
let web: http.Server;
let webCalls = 0;
let nextId = 1;
const inbox = new Map<number, Json>();

/** A streamable HTTP MCP server (stateless: a server and transport per request) behind a bearer token. */
async function startWebServer(): Promise<number> {
  web = http.createServer(async (req, res) => {
    if (req.headers.authorization !== `Bearer ${WEB_TOKEN}`) {
      res.writeHead(401).end('no token');
      return;
    }
    if (req.method !== 'POST') {
      res.writeHead(405).end();
      return;
    }
    const server = new McpServer({ name: 'clove-test-web', version: '1.0.0' });
    server.registerTool(
      'shout',
      { description: 'Upper-cases its text', inputSchema: { text: z.string() } },
      async ({ text }) => {
        webCalls++;
        return { content: [{ type: 'text', text: text.toUpperCase() }] };
      },
    );
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req, res);
  });
  await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
  return (web.address() as net.AddressInfo).port;
}

/** Writes `<dataDir>/mcp.json` (0600) with `config`. */
function writeConfig(dataDir: string, config: unknown, mode = 0o600): void {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, 'mcp.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2), { mode });
  fs.chmodSync(file, mode);
}

/** Sends a request to agent `name` and waits for its answer (matched by id). */
async function ask(name: string, msg: Json, timeoutMs = 60_000): Promise<Json> {
  const id = nextId++;
  await op.send(name, { ...msg, id });
  const deadline = Date.now() + timeoutMs;
  while (!inbox.has(id)) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`no answer from ${name} to ${JSON.stringify(msg)}`);
    const r = await op.recv({ max: 10, timeoutMs: Math.min(left, 1000) });
    for (const m of r.messages) {
      const body = m.message as Json;
      if (typeof body?.id === 'number') inbox.set(body.id, body);
    }
  }
  const out = inbox.get(id)!;
  inbox.delete(id);
  if (out.error) throw new Error(`agent ${name}: ${String(out.error)}`);
  return out.reply as Json;
}

/** Spawns the test agent with `mcp` grants (the rest of its rights: `standard`), serving once it answers. */
async function spawnAgent(name: string, mcp: string[] | undefined): Promise<number> {
  const r = await op.spawn({
    name,
    script: path.join(scripts, 'mcp_agent.py'),
    restart_policy: 'never',
    ...(mcp ? { permissions: { mcp } } : {}),
  });
  await ask(name, { op: 'ping' });
  return r.id;
}

/** Polls `fn` until it returns a truthy value (a condition with a deadline, not a sleep). */
async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function audit(event: string, agentId: number): Promise<Json[]> {
  const r = await op.getAuditLog({ category: 'SECURITY', event_type: event, agent_id: agentId, limit: 100 });
  return r.entries as unknown as Json[];
}

beforeAll(async () => {
  const port = await startWebServer();
  const dir = tempDir('clm');
  const dataDir = path.join(dir, 'data');
  writeConfig(dataDir, {
    servers: {
      tools: { command: process.execPath, args: [TOOL_SERVER] },
      tight: {
        command: process.execPath,
        args: [TOOL_SERVER],
        timeout_ms: 5000,
        max_result_bytes: 4096,
        max_concurrency: 1,
      },
      web: { url: `http://127.0.0.1:${port}/mcp`, headers: { Authorization: `Bearer ${WEB_TOKEN}` } },
      broken: { command: path.join(dir, 'no-such-mcp-server'), startup_timeout_ms: 5000 },
      leaky: {
        command: process.execPath,
        args: ['-e', "console.error('my token is ' + process.env.SECRET); process.exit(1)"],
        env: { SECRET: LEAKY_SECRET },
      },
    },
  });
  tk = await startKernel({ dataDir });
  op = await tk.client({ timeoutMs: 120_000 });
  scripts = tempDir('clx');
  fs.copyFileSync(path.join(TESTDATA, 'mcp_agent.py'), path.join(scripts, 'mcp_agent.py'));
}, 60_000);

afterAll(async () => {
  await tk?.stop();
  await new Promise((r) => web?.close(r));
  if (scripts) fs.rmSync(scripts, { recursive: true, force: true });
});

describe('an operator', () => {
  it('lists every declared server with its tools; one that cannot start says why', async () => {
    const r = await op.mcpListTools();
    const byName = Object.fromEntries(r.servers.map((s) => [s.name, s]));
    expect(byName.tools).toMatchObject({ transport: 'stdio', state: 'ready', tools: 7 });
    expect(byName.web).toMatchObject({ transport: 'http', state: 'ready', tools: 1 });
    expect(['backoff', 'failed']).toContain(byName.broken.state);
    expect(byName.broken.error).toMatch(/ENOENT|no-such-mcp-server/);
    // What a server wrote before it died is shown, its configured secrets never.
    expect(byName.leaky.error).toContain('my token is [redacted]');
    expect(JSON.stringify(r)).not.toContain(LEAKY_SECRET);
    const names = r.tools.filter((t) => t.server === 'tools').map((t) => t.name);
    expect(names.sort()).toEqual(['add', 'big', 'crash', 'echo', 'fail', 'pid', 'slow']);
    const add = r.tools.find((t) => t.server === 'tools' && t.name === 'add')!;
    expect(add.input_schema).toMatchObject({ type: 'object', properties: { a: {}, b: {} } });
    expect(add.output_schema).toMatchObject({ properties: { sum: {} } });
  });

  it('calls a stdio tool and an HTTP tool (the kernel sends the configured token)', async () => {
    const sum = await op.mcpCall({ server: 'tools', tool: 'add', arguments: { a: 2, b: 40 } });
    expect(sum).toMatchObject({
      success: true,
      server: 'tools',
      tool: 'add',
      is_error: false,
      structured_content: { sum: 42 },
      content: [{ type: 'text', text: '42' }],
    });
    const before = webCalls;
    const shout = await op.mcpCall({ server: 'web', tool: 'shout', arguments: { text: 'hi' } });
    expect(shout.content).toEqual([{ type: 'text', text: 'HI' }]);
    expect(webCalls).toBe(before + 1);
  });

  it('gets a tool failure as is_error, unknown tools and servers as not_found, a dead command as upstream_failed', async () => {
    expect(await op.mcpCall({ server: 'tools', tool: 'fail' })).toMatchObject({
      success: true,
      is_error: true,
      content: [{ type: 'text', text: 'it did not work' }],
    });
    await expect(op.mcpCall({ server: 'tools', tool: 'nope' })).rejects.toMatchObject({
      code: 'not_found',
      message: expect.stringContaining("has no tool 'nope'"),
    });
    await expect(op.mcpCall({ server: 'ghost', tool: 'x' })).rejects.toMatchObject({ code: 'not_found' });
    await expect(op.mcpCall({ server: 'broken', tool: 'x', timeout_ms: 20_000 })).rejects.toMatchObject({
      code: 'upstream_failed',
      message: expect.stringMatching(/MCP server 'broken' cannot be started: .*(ENOENT|no-such-mcp-server)/),
    });
  });

  it('bounds results and time: too_large past max_result_bytes, upstream_failed (timeout) past timeout_ms', async () => {
    const e = await op
      .mcpCall({ server: 'tight', tool: 'big', arguments: { bytes: 10_000 } })
      .catch((x) => x);
    expect(e).toBeInstanceOf(KernelError);
    expect(e).toMatchObject({ code: 'too_large' });
    expect((e as KernelError).reply).toMatchObject({ server: 'tight', tool: 'big', limit: 4096 });
    expect((await op.mcpCall({ server: 'tight', tool: 'big', arguments: { bytes: 100 } })).success).toBe(
      true,
    );
    const t = await op
      .mcpCall({ server: 'tight', tool: 'slow', arguments: { ms: 3000 }, timeout_ms: 200 })
      .catch((x) => x);
    expect(t).toMatchObject({ code: 'upstream_failed' });
    expect((t as KernelError).reply).toMatchObject({ reason: 'timeout', server: 'tight' });
    // The server is still there for the next call.
    expect((await op.mcpCall({ server: 'tight', tool: 'echo', arguments: { text: 'ok' } })).content).toEqual([
      { type: 'text', text: 'ok' },
    ]);
  });
});

describe('agents', () => {
  let granted: number;
  let plain: number;

  beforeAll(async () => {
    granted = await spawnAgent('mcp-granted', ['tools/echo', 'tools/a*', 'tools/crash', 'tools/pid', 'web']);
    plain = await spawnAgent('mcp-plain', undefined);
  }, 90_000);

  it('list only the tools their rights grant', async () => {
    const r = await ask('mcp-granted', { op: 'list' });
    expect(r.success).toBe(true);
    const tools = (r.tools as Json[]).map((t) => `${String(t.server)}/${String(t.name)}`).sort();
    expect(tools).toEqual(['tools/add', 'tools/crash', 'tools/echo', 'tools/pid', 'web/shout']);
    expect((r.servers as Json[]).map((s) => s.name).sort()).toEqual(['tools', 'web']);
    const none = await ask('mcp-plain', { op: 'list' });
    expect(none).toMatchObject({ success: true, tools: [], servers: [] });
  });

  it('call a granted tool through the kernel, and each call is audited', async () => {
    const r = await ask('mcp-granted', {
      op: 'call',
      server: 'tools',
      tool: 'echo',
      arguments: { text: 'from a sandboxed agent' },
    });
    expect(r).toMatchObject({
      success: true,
      is_error: false,
      content: [{ type: 'text', text: 'from a sandboxed agent' }],
    });
    const entries = await audit('MCP_CALL', granted);
    expect(entries.at(-1)).toMatchObject({
      success: true,
      agent_name: 'mcp-granted',
      details: { server: 'tools', tool: 'echo', outcome: 'ok' },
    });
  });

  it('without a grant are denied, and the denial is audited', async () => {
    const r = await ask('mcp-plain', { op: 'call', server: 'tools', tool: 'echo', arguments: { text: 'x' } });
    expect(r).toMatchObject({ success: false, code: 'permission_denied' });
    expect(String(r.error)).toContain("MCP tool 'tools/echo' is not granted");
    // A tool outside the grants of an agent that has some: denied too (and nothing was run).
    const other = await ask('mcp-granted', { op: 'call', server: 'tools', tool: 'fail' });
    expect(other).toMatchObject({ success: false, code: 'permission_denied' });
    // An undeclared server looks the same as an ungranted one to an agent.
    const ghost = await ask('mcp-plain', { op: 'call', server: 'ghost', tool: 'x' });
    expect(ghost).toMatchObject({ success: false, code: 'permission_denied' });
    const denied = await audit('PERMISSION_DENIED', plain);
    expect(denied.map((e) => (e.details as Json).syscall)).toEqual(['MCP_CALL', 'MCP_CALL']);
    expect(denied[0]).toMatchObject({ success: false, details: { server: 'tools', tool: 'echo' } });
    expect(await audit('PERMISSION_DENIED', granted)).toHaveLength(1);
    expect(await audit('MCP_CALL', plain)).toHaveLength(0);
  });

  it('are held to the mcp_calls quota', async () => {
    const q = await spawnAgent('mcp-quota', ['tools/echo']);
    await op.setQuota({ agent_id: q, quotas: { mcp_calls: { limit: 1 } } });
    const first = await ask('mcp-quota', {
      op: 'call',
      server: 'tools',
      tool: 'echo',
      arguments: { text: '1' },
    });
    expect(first.success).toBe(true);
    const second = await ask('mcp-quota', {
      op: 'call',
      server: 'tools',
      tool: 'echo',
      arguments: { text: '2' },
    });
    expect(second).toMatchObject({ success: false, code: 'quota_exceeded', quota: 'mcp_calls', limit: 1 });
    expect((await op.getQuota({ agent_id: q })).usage?.mcp_calls).toBe(1);
    await op.kill('mcp-quota');
  });

  it('see a server that crashed started again', async () => {
    const pid1 = await ask('mcp-granted', { op: 'call', server: 'tools', tool: 'pid' });
    const crashed = await ask('mcp-granted', { op: 'call', server: 'tools', tool: 'crash' });
    expect(crashed).toMatchObject({
      success: false,
      code: 'upstream_failed',
      server: 'tools',
      reason: 'closed',
    });
    expect(String(crashed.error)).toContain('crashing on request');
    const status = await until(async () => {
      const s = (await op.mcpListTools({ server: 'tools' })).servers[0];
      return s.state === 'ready' && s.restarts >= 1 ? s : undefined;
    }, 'the tools server to be started again');
    expect(status.tools).toBe(7);
    const pid2 = await ask('mcp-granted', { op: 'call', server: 'tools', tool: 'pid' });
    expect(pid2.success).toBe(true);
    expect((pid2.content as Json[])[0].text).not.toBe((pid1.content as Json[])[0].text);
    const failed = await audit('MCP_CALL', granted);
    expect(failed.some((e) => (e.details as Json).tool === 'crash' && !e.success)).toBe(true);
  });
});

describe('grants', () => {
  it('match `*`, a server, `server/*`, an exact tool and a tool glob', () => {
    expect(mcpGranted(['*'], 'a', 'b')).toBe(true);
    expect(mcpGranted(['a'], 'a', 'b')).toBe(true);
    expect(mcpGranted(['a/*'], 'a', 'b')).toBe(true);
    expect(mcpGranted(['a/b'], 'a', 'b')).toBe(true);
    expect(mcpGranted(['a/get_*'], 'a', 'get_x')).toBe(true);
    expect(mcpGranted(['a/get_*'], 'a', 'put_x')).toBe(false);
    expect(mcpGranted(['a/b'], 'c', 'b')).toBe(false);
    expect(mcpGranted(['a/b.c'], 'a', 'bxc')).toBe(false);
    expect(mcpGranted([], 'a', 'b')).toBe(false);
    expect(mcpGranted(undefined, 'a', 'b')).toBe(false);
  });

  it('are part of the rights: refused when malformed, shown by GET_PERMS', async () => {
    await expect(
      op.spawn({ name: 'bad-grant', script: '/bin/true', permissions: { mcp: ['a b'] } }),
    ).rejects.toMatchObject({ code: 'invalid_request', message: expect.stringContaining("mcp entry 'a b'") });
    const r = await op.spawn({
      name: 'grant-shown',
      script: path.join(scripts, 'mcp_agent.py'),
      permissions: { mcp: ['tools/echo'] },
    });
    expect((await op.getPerms(r.id)).permissions?.mcp).toEqual(['tools/echo']);
    expect((await op.getPerms(r.id)).level).toBe('custom');
    await op.kill('grant-shown');
  });
});

describe('a kernel whose mcp.json is unsafe or invalid', () => {
  it.each([
    ['readable by others', { servers: {} }, 0o644, /chmod 600/],
    ['without servers', { server: {} }, 0o600, /unknown field 'server'/],
    [
      'with a server of two kinds',
      { servers: { x: { command: 'a', url: 'http://b' } } },
      0o600,
      /exactly one of/,
    ],
    ['with a bad name', { servers: { 'a b': { command: 'a' } } }, 0o600, /server name 'a b'/],
  ])('%s: declares no server and says why', async (_what, config, mode, why) => {
    const dir = tempDir('clm');
    const dataDir = path.join(dir, 'data');
    writeConfig(dataDir, config, mode);
    const k = await startKernel({ dataDir });
    try {
      const c = await k.client();
      const r = await c.mcpListTools();
      expect(r).toMatchObject({ success: true, tools: [], servers: [] });
      expect(r.error).toMatch(why);
      expect(r.error).toContain(path.join(dataDir, 'mcp.json'));
      await expect(c.mcpCall({ server: 'x', tool: 'y' })).rejects.toMatchObject({
        code: 'not_found',
        message: expect.stringMatching(why),
      });
    } finally {
      await k.stop();
    }
  });
});
