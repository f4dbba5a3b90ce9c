/**
 * `clove mcp --http HOST:PORT` (docs/mcp.md "Streamable HTTP"): the official SDK's streamable HTTP
 * server transport on a node:http listener, one McpServer and transport per MCP session (at most
 * MAX_SESSIONS), all of them sharing the one Session (the session agent) of this process. Every request
 * needs `Authorization: Bearer <token>` (the token file's, compared in constant time); a listener
 * without a token is refused anywhere but on a loopback address, and then checks the Host header so
 * that a web page cannot reach it through DNS rebinding.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';

/** MCP sessions served at once. */
const MAX_SESSIONS = 64;
/** The largest request body read. */
const MAX_BODY = 4 * 1024 * 1024;
const TOKEN_RE = /^\S{16,}$/;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

/** Whether `host` (as given to --http) is a loopback address or name. */
export function isLoopback(host: string): boolean {
  return LOOPBACK_HOSTS.has(host) || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * The bearer token: `file` as the operator made it (0600 or stricter, at least 16 non-blank characters),
 * or, without one, `<dataDir>/mcp-token`, made (32 random bytes as hex, 0600) when missing or unsafe.
 * Throws a sentence naming the file when it cannot be used.
 */
export function loadToken(file: string | undefined, dataDir: string): { token: string; file: string } {
  if (file) {
    const st = fs.statSync(file);
    if (!st.isFile()) throw new Error(`token file ${file} is not a regular file`);
    if (st.mode & 0o077)
      throw new Error(
        `token file ${file} has mode ${(st.mode & 0o777).toString(8)}: group and others must have no access (chmod 600)`,
      );
    const token = fs.readFileSync(file, 'utf8').trim();
    if (!TOKEN_RE.test(token))
      throw new Error(`token file ${file} must hold one token of at least 16 characters`);
    return { token, file };
  }
  const own = path.join(dataDir, 'mcp-token');
  try {
    const st = fs.statSync(own);
    const text = fs.readFileSync(own, 'utf8').trim();
    if (st.isFile() && TOKEN_RE.test(text) && (st.mode & 0o077) === 0) return { token: text, file: own };
    // A token others could read is no secret: replaced.
    fs.rmSync(own, { force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const token = crypto.randomBytes(32).toString('hex');
  const fd = fs.openSync(own, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, `${token}\n`);
  } finally {
    fs.closeSync(fd);
  }
  return { token, file: own };
}

/** Constant-time comparison of the presented bearer token with ours. */
function authorized(header: string | undefined, token: string): boolean {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  if (!m) return false;
  const a = Buffer.from(m[1]);
  const b = Buffer.from(token);
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}

/** The Host header's name without its port (`[::1]:80` → `::1`). */
function hostName(header: string | undefined): string {
  const h = (header ?? '').trim();
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']'));
  return h.replace(/:\d+$/, '');
}

function reply(
  res: http.ServerResponse,
  status: number,
  message: string,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message }, id: null }));
}

/** Reads a JSON body of at most MAX_BODY bytes; undefined when there is none. */
async function body(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > MAX_BODY)
      throw Object.assign(new Error(`request body larger than ${MAX_BODY} bytes`), { status: 413 });
    chunks.push(c);
  }
  if (!n) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw Object.assign(new Error('request body is not JSON'), { status: 400 });
  }
}

export interface HttpMcp {
  /** Where it listens (the port chosen when 0 was asked for). */
  address: { host: string; port: number };
  close(): Promise<void>;
}

/** Serves MCP over streamable HTTP at `/mcp`; `makeServer` builds each session's McpServer. */
export async function serveHttp(o: {
  host: string;
  port: number;
  token: string | null;
  makeServer(): McpServer;
  note(msg: string): void;
}): Promise<HttpMcp> {
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; server: McpServer }>();

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/mcp') return reply(res, 404, 'not found: the MCP endpoint is /mcp');
    if (o.token === null) {
      if (!isLoopback(hostName(req.headers.host)))
        return reply(res, 403, 'forbidden: Host must be a loopback name (no token is set)');
    } else if (!authorized(req.headers.authorization, o.token)) {
      return reply(res, 401, 'unauthorized: Authorization: Bearer <token> required', {
        'www-authenticate': 'Bearer realm="clove-mcp"',
      });
    }
    const sid = req.headers['mcp-session-id'];
    const id = Array.isArray(sid) ? sid[0] : sid;
    if (id) {
      const s = sessions.get(id);
      if (!s) return reply(res, 404, 'unknown MCP session: initialize again');
      const parsed = req.method === 'POST' ? await body(req) : undefined;
      return s.transport.handleRequest(req, res, parsed);
    }
    if (req.method !== 'POST') return reply(res, 400, 'no MCP session: POST an initialize request first');
    const parsed = await body(req);
    if (!isInitializeRequest(parsed))
      return reply(res, 400, 'no MCP session: the first request must be initialize');
    if (sessions.size >= MAX_SESSIONS)
      return reply(res, 503, `too many MCP sessions (at most ${MAX_SESSIONS}); close one`);
    const server = o.makeServer();
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => crypto.randomUUID(),
      onsessioninitialized: (newId) => {
        sessions.set(newId, { transport, server });
      },
    });
    transport.onclose = () => {
      if (transport.sessionId) sessions.delete(transport.sessionId);
      void server.close();
    };
    await server.connect(transport);
    await transport.handleRequest(req, res, parsed);
  }

  const listener = http.createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      const status = (e as { status?: number }).status ?? 500;
      reply(res, status, (e as Error).message);
      if (status === 500) o.note(`MCP HTTP request failed: ${(e as Error).message}`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(o.port, o.host, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  const addr = listener.address() as net.AddressInfo;
  return {
    address: { host: o.host, port: addr.port },
    close: async () => {
      for (const s of [...sessions.values()]) await s.transport.close().catch(() => {});
      listener.closeAllConnections();
      await new Promise((r) => listener.close(r));
    },
  };
}
