/**
 * The operator's MCP servers (docs/mcp.md): a JSON file named by `CLOVE_MCP_CONFIG`, else
 * `<data-dir>/mcp.json`. Whoever can write it chooses the commands the kernel runs and the URLs (and
 * headers, which may hold tokens) it calls, so it is held to llm.json's rule: a regular file owned by
 * the kernel's uid, readable and writable by nobody else (0600 or stricter). Read once, when the family
 * is built; an unsafe or invalid file declares no servers and says why (the kernel keeps running).
 */
import path from 'node:path';
import { readOperatorJson } from '../../core/family.js';

export const CONFIG_ENV = 'CLOVE_MCP_CONFIG';

/** A server's name: what `permissions.mcp` grants and MCP_CALL's `server` names. */
export const SERVER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export const DEFAULTS = {
  /** A call's longest time, and the default when MCP_CALL names none. */
  timeoutMs: 60_000,
  /** Connecting: starting the process (or reaching the URL), the MCP handshake and the tool list. */
  startupTimeoutMs: 15_000,
  /** Bytes of a tool's result (its JSON) the kernel hands back. */
  maxResultBytes: 1024 * 1024,
  /** Calls running at once on one server. */
  maxConcurrency: 8,
  /** Calls one caller may have running at once, over every server. */
  maxPerCaller: 4,
};

/** Bounds an operator may set. */
const MAX = {
  timeoutMs: 600_000,
  startupTimeoutMs: 120_000,
  maxResultBytes: 16 * 1024 * 1024,
  maxConcurrency: 256,
};

interface Common {
  name: string;
  timeoutMs: number;
  startupTimeoutMs: number;
  maxResultBytes: number;
  maxConcurrency: number;
}

/** A server the kernel starts as a child process and speaks to over its stdin and stdout. */
export interface StdioServer extends Common {
  transport: 'stdio';
  command: string;
  args: string[];
  /** Added to a minimal environment (PATH, HOME, LANG…), never the kernel's own. */
  env: Record<string, string>;
  cwd?: string;
}

/** A server reached over MCP's streamable HTTP transport. */
export interface HttpServer extends Common {
  transport: 'http';
  url: string;
  /** Sent with every request (e.g. `Authorization`): secret, never shown to agents. */
  headers: Record<string, string>;
}

export type ServerConfig = StdioServer | HttpServer;

export interface McpConfig {
  /** Where the configuration was read from (null: no file). */
  source: string | null;
  servers: ServerConfig[];
  /** Calls one caller may have running at once. */
  maxPerCaller: number;
  /** Why no server is declared although a file is there. */
  error?: string;
}

class ConfigError extends Error {}

function int(
  o: Record<string, unknown>,
  key: string,
  dflt: number,
  min: number,
  max: number,
  where: string,
): number {
  const v = o[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
    throw new ConfigError(`${where}.${key} must be an integer from ${min} to ${max}`);
  return v;
}

function strings(v: unknown, where: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    throw new ConfigError(`${where} must be an array of strings`);
  return v as string[];
}

function record(v: unknown, where: string): Record<string, string> {
  if (v === undefined) return {};
  if (!v || typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string'))
    throw new ConfigError(`${where} must be an object of strings`);
  return { ...(v as Record<string, string>) };
}

function server(name: string, v: unknown): ServerConfig {
  const where = `servers.${name}`;
  if (!SERVER_NAME.test(name))
    throw new ConfigError(`server name '${name}' must match ${SERVER_NAME.source}`);
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${where} must be an object`);
  const o = v as Record<string, unknown>;
  const known = new Set([
    'command',
    'args',
    'env',
    'cwd',
    'url',
    'headers',
    'timeout_ms',
    'startup_timeout_ms',
    'max_result_bytes',
    'max_concurrency',
  ]);
  for (const k of Object.keys(o)) if (!known.has(k)) throw new ConfigError(`${where}: unknown field '${k}'`);
  const common: Common = {
    name,
    timeoutMs: int(o, 'timeout_ms', DEFAULTS.timeoutMs, 1, MAX.timeoutMs, where),
    startupTimeoutMs: int(o, 'startup_timeout_ms', DEFAULTS.startupTimeoutMs, 1, MAX.startupTimeoutMs, where),
    maxResultBytes: int(o, 'max_result_bytes', DEFAULTS.maxResultBytes, 1024, MAX.maxResultBytes, where),
    maxConcurrency: int(o, 'max_concurrency', DEFAULTS.maxConcurrency, 1, MAX.maxConcurrency, where),
  };
  const hasCommand = o.command !== undefined;
  const hasUrl = o.url !== undefined;
  if (hasCommand === hasUrl)
    throw new ConfigError(`${where} needs exactly one of "command" (stdio) and "url" (streamable HTTP)`);
  if (hasCommand) {
    if (typeof o.command !== 'string' || o.command === '')
      throw new ConfigError(`${where}.command must be a non-empty string`);
    if (o.headers !== undefined) throw new ConfigError(`${where}.headers is for "url" servers`);
    if (o.cwd !== undefined && (typeof o.cwd !== 'string' || !path.isAbsolute(o.cwd)))
      throw new ConfigError(`${where}.cwd must be an absolute path`);
    return {
      ...common,
      transport: 'stdio',
      command: o.command,
      args: strings(o.args, `${where}.args`),
      env: record(o.env, `${where}.env`),
      ...(o.cwd !== undefined ? { cwd: o.cwd as string } : {}),
    };
  }
  for (const k of ['args', 'env', 'cwd'])
    if (o[k] !== undefined) throw new ConfigError(`${where}.${k} is for "command" servers`);
  if (typeof o.url !== 'string') throw new ConfigError(`${where}.url must be a string`);
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    throw new ConfigError(`${where}.url is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new ConfigError(`${where}.url must be http or https`);
  if (url.username || url.password)
    throw new ConfigError(`${where}.url must not carry credentials (use "headers")`);
  return { ...common, transport: 'http', url: url.href, headers: record(o.headers, `${where}.headers`) };
}

function empty(source: string | null, error?: string): McpConfig {
  return { source, servers: [], maxPerCaller: DEFAULTS.maxPerCaller, ...(error ? { error } : {}) };
}

/** Parses a configuration object (the file's JSON); throws with a sentence naming the bad field. */
export function parseConfig(json: unknown, source: string | null): McpConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json))
    throw new ConfigError('the configuration must be a JSON object with a "servers" object');
  const o = json as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (k !== 'servers' && k !== 'max_calls_per_caller') throw new ConfigError(`unknown field '${k}'`);
  const s = o.servers;
  if (!s || typeof s !== 'object' || Array.isArray(s))
    throw new ConfigError('"servers" must be an object: server name → {command, args…} or {url, headers…}');
  return {
    source,
    servers: Object.entries(s).map(([name, v]) => server(name, v)),
    maxPerCaller: int(o, 'max_calls_per_caller', DEFAULTS.maxPerCaller, 1, 1024, 'configuration'),
  };
}

/**
 * The configuration in force: the file named by `CLOVE_MCP_CONFIG`, else `<dataDir>/mcp.json` when it
 * exists, else none. A file that is unsafe or invalid gives no servers and an `error` saying why.
 */
export function loadConfig(dataDir: string, env = process.env, uid = process.getuid?.() ?? 0): McpConfig {
  const named = env[CONFIG_ENV];
  const file = named ? path.resolve(named) : path.join(dataDir, 'mcp.json');
  const read = readOperatorJson(file, 'MCP servers file', Boolean(named), uid);
  if (read.kind === 'absent') return empty(null);
  if (read.kind === 'refused') return empty(file, read.error);
  try {
    return parseConfig(read.json, file);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    return empty(file, `MCP servers file ${file} is not used: ${e.message}`);
  }
}
