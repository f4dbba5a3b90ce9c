/**
 * `clove mcp` against a real kernel (docs/mcp.md), driven by the official MCP SDK's Client: over stdio
 * (the SDK spawns `node bin/clove.js mcp`, as an MCP host would) and over streamable HTTP with a bearer
 * token. The MCP client lists the tools, spawns an agent (testdata/echo_agent.py), sends it a message,
 * reads its log and its answer; a guarded syscall outside the session's policy is refused by the kernel
 * and audited under the session agent. Needs `npm run build` (bin/clove.js runs dist/).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { REPO_ROOT, startKernel, tempDir, type TestKernel } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';

const CLOVE = path.join(REPO_ROOT, 'bin', 'clove.js');
const ECHO = path.join(import.meta.dirname, 'testdata', 'echo_agent.py');
const TOOL_SERVER = path.join(REPO_ROOT, 'kernel', 'syscalls', 'mcp', 'testdata', 'tool-server.mjs');

type Json = Record<string, unknown>;

let tk: TestKernel;
let op: CloveClient;
let dir: string;
let outsider: number;
const children: ChildProcess[] = [];

/** Calls a tool; the result with its structured content. */
async function call(
  c: Client,
  name: string,
  args: Json = {},
): Promise<CallToolResult & { structuredContent: Json }> {
  return (await c.callTool({ name, arguments: args })) as CallToolResult & { structuredContent: Json };
}

/** The text of a tool result. */
const text = (r: CallToolResult): string => (r.content[0] as { text: string }).text;

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

/** Writes a policy file and returns its path. */
function policy(name: string, body: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, body);
  return f;
}

/** Starts `clove mcp` with `args` and resolves with the process once it says where it listens. */
async function startHttp(args: string[]): Promise<{ proc: ChildProcess; url: string; stderr: () => string }> {
  const proc = spawn(process.execPath, [CLOVE, '--socket', tk.socketPath, 'mcp', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(proc);
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const url = await until(async () => {
    if (proc.exitCode !== null) throw new Error(`clove mcp exited ${proc.exitCode}: ${err}`);
    return /listening on (http:\/\/\S+\/mcp)/.exec(err)?.[1];
  }, 'clove mcp to listen');
  return { proc, url, stderr: () => err };
}

/** Runs `clove mcp` expecting it to refuse to start: its exit code and stderr. */
async function refused(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const proc = spawn(process.execPath, [CLOVE, '--socket', tk.socketPath, 'mcp', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(proc);
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  return { code, stderr: err };
}

async function auditOf(agentId: number, event: string): Promise<Json[]> {
  const r = await op.getAuditLog({ category: 'SECURITY', event_type: event, agent_id: agentId, limit: 100 });
  return r.entries as unknown as Json[];
}

beforeAll(async () => {
  // The operator declares one MCP tool server for agents (the kernel family's test fixture).
  const kdir = tempDir('clmk');
  const dataDir = path.join(kdir, 'data');
  fs.mkdirSync(dataDir, { mode: 0o700 });
  fs.writeFileSync(
    path.join(dataDir, 'mcp.json'),
    JSON.stringify({ servers: { tools: { command: process.execPath, args: [TOOL_SERVER] } } }),
    { mode: 0o600 },
  );
  tk = await startKernel({ dataDir });
  op = await tk.client({ timeoutMs: 60_000 });
  dir = tempDir('clmcp');
  // An agent the operator runs: not the MCP session's (scope own must not reach it).
  outsider = (await op.spawn({ name: 'outsider', script: ECHO, restart_policy: 'never' })).id;
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await tk?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('clove mcp over stdio', () => {
  let client: Client;
  let transport: StdioClientTransport;
  let sessionAgent: number;

  beforeAll(async () => {
    const p = policy(
      'spawner.yaml',
      'permissions:\n  can_spawn: true\n  blocked_commands: ["*"]\nquotas:\n  mcp_calls: 10\n',
    );
    transport = new StdioClientTransport({
      command: process.execPath,
      args: [CLOVE, '--socket', tk.socketPath, 'mcp', '--policy', p, '--name', 'mcp-stdio'],
      stderr: 'pipe',
    });
    client = new Client({ name: 'clove-test', version: '1.0.0' });
    await client.connect(transport);
    sessionAgent = (await op.list()).find((a) => a.name === 'mcp-stdio')!.id;
  }, 60_000);

  afterAll(async () => {
    await client?.close();
  });

  it('lists its tools with input schemas', async () => {
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    for (const t of [
      'session_info',
      'list_agents',
      'spawn_agent',
      'kill_agent',
      'restart_agent',
      'send_message',
      'receive_messages',
      'agent_logs',
      'recent_events',
      'exec',
      'read_file',
      'write_file',
      'http_request',
      'think',
      'store',
      'fetch',
      'mcp_list_tools',
      'mcp_call',
    ])
      expect(names).toContain(t);
    const spawnTool = tools.find((t) => t.name === 'spawn_agent')!;
    expect(spawnTool.inputSchema).toMatchObject({ type: 'object', required: ['script'] });
  });

  it("acts as a session agent with the policy's rights, not as the operator", async () => {
    const info = await call(client, 'session_info');
    expect(info.structuredContent).toMatchObject({
      agent_id: sessionAgent,
      name: 'mcp-stdio',
      scope: 'own',
      permissions: { can_spawn: true, can_exec: false, can_http: false },
    });
    const row = (await op.list()).find((a) => a.id === sessionAgent)!;
    expect(row).toMatchObject({ state: 'RUNNING', labels: { 'clove.mcp': 'session' } });
  });

  it('spawns an agent, sends it a message, reads its log and its answer', async () => {
    const spawned = await call(client, 'spawn_agent', {
      script: ECHO,
      name: 'mcp-echo',
      restart_policy: 'never',
    });
    expect(spawned.isError).toBeFalsy();
    expect(spawned.structuredContent).toMatchObject({ success: true, name: 'mcp-echo' });
    const echoId = spawned.structuredContent.id as number;
    // The kernel recorded who spawned it: the session agent.
    expect((await op.list()).find((a) => a.id === echoId)?.parent_id).toBe(sessionAgent);

    await until(async () => {
      const r = await call(client, 'agent_logs', { agent: 'mcp-echo' });
      return (r.structuredContent.lines as string[]).includes('echo agent ready');
    }, 'the echo agent to start');
    const sent = await call(client, 'send_message', { to: 'mcp-echo', message: { text: 'hello from MCP' } });
    expect(sent.structuredContent).toMatchObject({ success: true, delivered_to: echoId });

    const logged = await until(async () => {
      const r = await call(client, 'agent_logs', { agent: echoId, lines: 20 });
      return (r.structuredContent.lines as string[]).find((l) => l.includes('hello from MCP'));
    }, 'the message in the agent log');
    expect(logged).toBe('got {"text": "hello from MCP"} from mcp-stdio');

    const answer = await until(async () => {
      const r = await call(client, 'receive_messages');
      return (r.structuredContent.messages as Json[]).find((m) => m.from === echoId);
    }, "the agent's answer");
    expect(answer.message).toEqual({ echo: { text: 'hello from MCP' } });

    const listed = await call(client, 'list_agents');
    const names = (listed.structuredContent.agents as Json[]).map((a) => a.name).sort();
    expect(names).toEqual(['mcp-echo', 'mcp-stdio']);

    const events = await call(client, 'recent_events', { type: 'AGENT_SPAWNED' });
    expect(
      (events.structuredContent.events as Json[]).some((e) => (e.data as Json).agent_id === echoId),
    ).toBe(true);

    expect((await call(client, 'restart_agent', { agent: 'mcp-echo' })).structuredContent).toMatchObject({
      success: true,
      restarted: true,
    });
    expect((await call(client, 'kill_agent', { agent: echoId })).structuredContent).toMatchObject({
      success: true,
      killed: true,
    });
  });

  it('a guarded syscall outside the policy is refused by the kernel, as a tool error, and audited', async () => {
    const r = await call(client, 'exec', { command: 'id' });
    expect(r.isError).toBe(true);
    expect(text(r)).toMatch(/^permission_denied: /);
    expect(r.structuredContent).toMatchObject({ success: false, code: 'permission_denied' });
    const h = await call(client, 'http_request', { url: 'http://example.com/' });
    expect(h.isError).toBe(true);
    expect(h.structuredContent.code).toBe('permission_denied');
    const denied = await auditOf(sessionAgent, 'PERMISSION_DENIED');
    expect(denied.map((e) => (e.details as Json).syscall)).toEqual(expect.arrayContaining(['EXEC', 'HTTP']));
    expect(denied.every((e) => e.agent_name === 'mcp-stdio')).toBe(true);
  });

  it("cannot reach the operator's own agents with scope own", async () => {
    const k = await call(client, 'kill_agent', { agent: 'outsider' });
    expect(k.isError).toBe(true);
    expect(k.structuredContent.code).toBe('permission_denied');
    const logs = await call(client, 'agent_logs', { agent: 'outsider' });
    expect(logs.isError).toBe(true);
    expect(logs.structuredContent.code).toBe('not_found');
    expect((await op.list()).find((a) => a.id === outsider)?.state).toBe('RUNNING');
  });

  it('validates tool input with its schema', async () => {
    const r = await call(client, 'send_message', { message: 'no target' });
    expect(r.isError).toBe(true);
    expect(text(r)).toMatch(/to/);
  });

  it('stops its session agent when the MCP client goes away', async () => {
    const pid = transport.pid!;
    await client.close();
    await until(async () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    }, 'clove mcp to exit');
    await until(
      async () => !(await op.list()).some((a) => a.id === sessionAgent && a.state === 'RUNNING'),
      'the session agent to stop',
    );
  });
});

describe('the operator stays in charge', () => {
  it('killing the session agent cuts the MCP client off at once', async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [CLOVE, '--socket', tk.socketPath, 'mcp', '--policy', 'standard', '--name', 'mcp-cut'],
      stderr: 'pipe',
    });
    const client = new Client({ name: 'clove-test-cut', version: '1.0.0' });
    await client.connect(transport);
    try {
      expect((await call(client, 'session_info')).structuredContent.name).toBe('mcp-cut');
      await op.kill('mcp-cut', { wait: true });
      const r = await until(async () => {
        const x = await call(client, 'list_agents');
        return x.isError ? x : undefined;
      }, 'the session to notice');
      expect(text(r)).toMatch(
        /^unavailable: the session agent mcp-cut (exited|is gone).*: restart clove mcp$/,
      );
    } finally {
      await client.close();
    }
  });
});

describe('clove mcp over streamable HTTP', () => {
  let tokenFile: string;
  const TOKEN = 'an-mcp-test-token-0123456789';

  beforeAll(() => {
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  });

  it('serves an MCP client that presents the token; a wrong token is refused', async () => {
    const p = policy(
      'http.yaml',
      'name: mcp-http\nscope: all\npermissions:\n  can_spawn: true\n  mcp: [tools/echo]\n',
    );
    const { proc, url } = await startHttp([
      '--http',
      '127.0.0.1:0',
      '--token-file',
      tokenFile,
      '--policy',
      p,
    ]);

    const client = new Client({ name: 'clove-test-http', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(url), {
        requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
      }),
    );
    try {
      expect((await client.listTools()).tools.map((t) => t.name)).toContain('spawn_agent');
      const s = await call(client, 'spawn_agent', { script: ECHO, name: 'mcp-http-echo' });
      expect(s.structuredContent).toMatchObject({ success: true });
      await until(async () => {
        const r = await call(client, 'agent_logs', { agent: 'mcp-http-echo' });
        return (r.structuredContent.lines as string[]).includes('echo agent ready');
      }, 'the echo agent to start');
      await call(client, 'send_message', { to: 'mcp-http-echo', message: 'over http' });
      await until(async () => {
        const r = await call(client, 'agent_logs', { agent: 'mcp-http-echo' });
        return (r.structuredContent.lines as string[]).some((l) => l.includes('"over http"'));
      }, 'the message in the log');
      // scope all: the operator's agents are seen too (and read, never acted on through a guarded call).
      const names = ((await call(client, 'list_agents')).structuredContent.agents as Json[]).map(
        (a) => a.name,
      );
      expect(names).toEqual(expect.arrayContaining(['outsider', 'mcp-http', 'mcp-http-echo']));
      // The operator's MCP tool servers, through the kernel, as far as the policy grants them.
      const listed = await call(client, 'mcp_list_tools');
      expect(
        (listed.structuredContent.tools as Json[]).map((t) => `${String(t.server)}/${String(t.name)}`),
      ).toEqual(['tools/echo']);
      const echoed = await call(client, 'mcp_call', {
        server: 'tools',
        tool: 'echo',
        arguments: { text: 'relayed' },
      });
      expect(echoed.structuredContent).toMatchObject({
        success: true,
        content: [{ type: 'text', text: 'relayed' }],
      });
      const add = await call(client, 'mcp_call', { server: 'tools', tool: 'add', arguments: { a: 1, b: 2 } });
      expect(add.structuredContent.code).toBe('permission_denied');
      const w = await call(client, 'write_file', { path: '/etc/clove-mcp-test', content: 'x' });
      expect(w.isError).toBe(true);
      expect(fs.existsSync('/etc/clove-mcp-test')).toBe(false);
    } finally {
      await client.close();
    }

    // A wrong token: the HTTP answer is 401, and the SDK client cannot connect.
    const init = {
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } },
    };
    const raw = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        authorization: 'Bearer not-the-token-at-all-000',
      },
      body: JSON.stringify(init),
    });
    expect(raw.status).toBe(401);
    const none = await fetch(url, { method: 'POST', body: JSON.stringify(init) });
    expect(none.status).toBe(401);
    const intruder = new Client({ name: 'intruder', version: '1' });
    await expect(
      intruder.connect(
        new StreamableHTTPClientTransport(new URL(url), {
          requestInit: { headers: { Authorization: 'Bearer wrong-token-wrong-token' } },
        }),
      ),
    ).rejects.toThrow();

    proc.kill('SIGTERM');
    const code = await new Promise<number | null>((r) =>
      proc.exitCode !== null ? r(proc.exitCode) : proc.once('exit', (c) => r(c)),
    );
    expect(code).toBe(0);
    await until(
      async () => !(await op.list()).some((a) => a.name === 'mcp-http' && a.state === 'RUNNING'),
      'the session agent to stop',
    );
  });

  it('refuses to serve without a token off loopback, or with a token file others can read', async () => {
    const open = await refused(['--http', '0.0.0.0:0', '--no-token']);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain('--no-token is refused on 0.0.0.0');
    const loose = path.join(dir, 'loose-token');
    fs.writeFileSync(loose, `${TOKEN}\n`, { mode: 0o644 });
    fs.chmodSync(loose, 0o644);
    const bad = await refused(['--http', '127.0.0.1:0', '--token-file', loose]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('chmod 600');
    // A policy the CLI cannot read is a usage error; one the kernel refuses, the kernel's error.
    const typo = await refused(['--policy', policy('typo.yaml', 'permisions: standard\n')]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain("unknown field 'permisions'");
    const wrong = await refused(['--policy', policy('wrong.yaml', 'permissions:\n  mcp: ["a b"]\n')]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain("permissions.mcp entry 'a b'");
    // Nothing was left behind: no session agent of a refused start runs.
    expect(
      (await op.list()).filter((a) => a.labels?.['clove.mcp'] === 'session' && a.state === 'RUNNING'),
    ).toEqual([]);
  });

  it('makes <data-dir>/mcp-token (0600) when no token file is named', async () => {
    const { proc, url } = await startHttp(['--http', '127.0.0.1:0']);
    const file = path.join(tk.dataDir, 'mcp-token');
    const st = fs.statSync(file);
    expect(st.mode & 0o777).toBe(0o600);
    const token = fs.readFileSync(file, 'utf8').trim();
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    // Without a policy the session may make no guarded syscall at all.
    const client = new Client({ name: 'clove-test-default', version: '1.0.0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(url), {
        requestInit: { headers: { Authorization: `Bearer ${token}` } },
      }),
    );
    try {
      for (const [tool, args] of [
        ['exec', { command: 'true' }],
        ['read_file', { path: '/etc/hostname' }],
        ['write_file', { path: '/tmp/x', content: 'x' }],
        ['think', { prompt: 'hi' }],
        ['http_request', { url: 'https://example.com/' }],
        ['spawn_agent', { script: ECHO }],
        ['mcp_call', { server: 'any', tool: 'any' }],
      ] as const) {
        const r = await call(client, tool, args);
        expect(r.isError, tool).toBe(true);
        expect(r.structuredContent.code, tool).toBe('permission_denied');
      }
    } finally {
      await client.close();
    }
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r(null) : proc.once('exit', r)));
  });
});
