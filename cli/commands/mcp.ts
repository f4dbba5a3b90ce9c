/**
 * `clove mcp [--http HOST:PORT [--token-file F | --no-token]] [--policy LEVEL|FILE] [--name N]
 * [--scope own|all]`: this kernel as an MCP server (docs/mcp.md), over stdio (the default: an MCP host
 * runs it) or streamable HTTP. A client of the kernel like every command: the MCP session acts through
 * a session agent whose rights are the operator's policy (cli/mcp/session.ts), never with the
 * operator's own.
 *
 * Exit codes: 0 when the MCP client or a signal ends it, 2 a bad option or policy (also: --no-token off
 * loopback, an unusable token file), 6 the kernel cannot be reached or went away, 1 the kernel refused
 * the session agent (its error printed).
 */
import fs from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import YAML from 'yaml';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { Globals } from './compose.js';
import { CliError, EXIT } from '../lib.js';
import { isLoopback, loadToken, serveHttp } from '../mcp/http.js';
import { Session, type Scope } from '../mcp/session.js';
import { buildServer } from '../mcp/tools.js';
import { ConnectionClosedError } from '../../sdk/typescript/client.js';

const LEVELS = ['unrestricted', 'standard', 'sandboxed', 'readonly', 'minimal'];
/**
 * The session agent's rights when the operator gives no policy or a policy without `permissions`: the
 * `minimal` level (no READ, WRITE, HTTP, SPAWN, MCP tools), and neither THINK (the operator's provider
 * costs money) nor EXEC (which the kernel otherwise allows any sandboxed agent inside its own sandbox).
 */
const DEFAULT_PERMISSIONS = { can_read: false, can_write: false, can_think: false, blocked_commands: ['*'] };
const NAME_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
const HOST_PORT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$/;

/** What the operator decided for MCP clients (a policy file, or a level, and the flags). */
export interface Policy {
  name?: string;
  scope?: Scope;
  permissions: unknown;
  quotas?: Record<string, unknown>;
}

/**
 * A policy: a level name, or a file (YAML or JSON) of `permissions` (a level or a permissions object:
 * the session agent's rights), `quotas` (its quotas), `scope` and `name`. Its rights are checked by the
 * kernel when it spawns the session agent.
 */
export function readPolicy(v: string | undefined): Policy {
  if (v === undefined) return { permissions: DEFAULT_PERMISSIONS };
  if (LEVELS.includes(v)) return { permissions: v };
  let doc: unknown;
  try {
    doc = YAML.parse(fs.readFileSync(v, 'utf8'));
  } catch (e) {
    throw new CliError(`policy ${v}: ${(e as Error).message}`, EXIT.USAGE);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc))
    throw new CliError(`policy ${v}: must be a mapping of permissions, quotas, scope, name`, EXIT.USAGE);
  const o = doc as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!['permissions', 'quotas', 'scope', 'name'].includes(k))
      throw new CliError(`policy ${v}: unknown field '${k}' (permissions, quotas, scope, name)`, EXIT.USAGE);
  if (o.scope !== undefined && o.scope !== 'own' && o.scope !== 'all')
    throw new CliError(`policy ${v}: scope must be own or all`, EXIT.USAGE);
  if (o.name !== undefined && (typeof o.name !== 'string' || !NAME_RE.test(o.name)))
    throw new CliError(`policy ${v}: name must match ${NAME_RE.source}`, EXIT.USAGE);
  if (o.quotas !== undefined && (!o.quotas || typeof o.quotas !== 'object' || Array.isArray(o.quotas)))
    throw new CliError(`policy ${v}: quotas must be a mapping of quota names`, EXIT.USAGE);
  const perms = o.permissions ?? DEFAULT_PERMISSIONS;
  if (typeof perms !== 'string' && (!perms || typeof perms !== 'object' || Array.isArray(perms)))
    throw new CliError(`policy ${v}: permissions must be a level or a permissions mapping`, EXIT.USAGE);
  // A bare number is a limit with the quota's default policy, as in clove.yaml.
  const quotas = o.quotas
    ? Object.fromEntries(
        Object.entries(o.quotas as Record<string, unknown>).map(([k, q]) => [
          k,
          typeof q === 'number' ? { limit: q } : q,
        ]),
      )
    : undefined;
  return {
    permissions: perms,
    ...(quotas ? { quotas } : {}),
    ...(o.scope ? { scope: o.scope as Scope } : {}),
    ...(o.name ? { name: o.name as string } : {}),
  };
}

function hostPort(v: string): { host: string; port: number } {
  const m = HOST_PORT.exec(v);
  if (!m || Number(m[2]) > 65535) throw new InvalidArgumentError('must be HOST:PORT, e.g. 127.0.0.1:7331');
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

function agentName(v: string): string {
  if (!NAME_RE.test(v)) throw new InvalidArgumentError(`must match ${NAME_RE.source}`);
  return v;
}

const note = (msg: string) => process.stderr.write(`clove mcp: ${msg}\n`);

/** Resolves on SIGINT/SIGTERM (then the handlers are removed). */
function signalled(): { done: Promise<string>; off(): void } {
  let off = () => {};
  const done = new Promise<string>((resolve) => {
    const on = (s: NodeJS.Signals) => resolve(s);
    process.once('SIGINT', on);
    process.once('SIGTERM', on);
    off = () => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
    };
  });
  return { done, off: () => off() };
}

export function registerMcp(p: Command, g: Globals): void {
  p.command('mcp')
    .description('serve this kernel to MCP clients (stdio, or streamable HTTP with --http), under a policy')
    .option('--http <host:port>', 'serve streamable HTTP at http://HOST:PORT/mcp instead of stdio', hostPort)
    .option('--token-file <file>', 'the bearer token for --http (mode 0600); default <data-dir>/mcp-token')
    .option('--no-token', 'serve --http without a token (loopback addresses only)')
    .option(
      '--policy <level|file>',
      "the MCP session's rights: a level, or a YAML/JSON file of permissions, quotas, scope, name (default: no guarded syscalls)",
    )
    .option('--name <name>', "the session agent's name (default mcp-<pid>)", agentName)
    .addOption(
      new Option('--scope <scope>', 'agents the list, logs, events, kill and restart tools reach').choices([
        'own',
        'all',
      ]),
    )
    .action(
      async (o: {
        http?: { host: string; port: number };
        tokenFile?: string;
        token: boolean;
        policy?: string;
        name?: string;
        scope?: Scope;
      }) => {
        const policy = readPolicy(o.policy);
        if (!o.http && (o.tokenFile || !o.token))
          throw new CliError('--token-file and --no-token go with --http', EXIT.USAGE);
        if (o.http && !o.token && o.tokenFile)
          throw new CliError('--token-file and --no-token exclude each other', EXIT.USAGE);
        if (o.http && !o.token && !isLoopback(o.http.host))
          throw new CliError(
            `--no-token is refused on ${o.http.host}: off loopback the MCP endpoint needs a token (--token-file, or <data-dir>/mcp-token)`,
            EXIT.USAGE,
          );
        // A token file the operator named is checked before anything starts.
        let named: string | undefined;
        if (o.http && o.token && o.tokenFile) {
          try {
            named = loadToken(o.tokenFile, '').token;
          } catch (e) {
            throw new CliError((e as Error).message, EXIT.USAGE);
          }
        }
        let session: Session;
        try {
          session = await Session.open({
            socket: g.socket(),
            name: o.name ?? policy.name ?? `mcp-${process.pid}`,
            permissions: policy.permissions,
            ...(policy.quotas ? { quotas: policy.quotas } : {}),
            scope: o.scope ?? policy.scope ?? 'own',
            note,
          });
        } catch (e) {
          if (
            e instanceof ConnectionClosedError ||
            (e as NodeJS.ErrnoException).code === 'ENOENT' ||
            (e as NodeJS.ErrnoException).code === 'ECONNREFUSED'
          )
            throw new CliError(
              `cannot reach the kernel at ${g.socket()}: ${(e as Error).message}`,
              EXIT.UNREACHABLE,
            );
          throw e;
        }
        const version = g.daemon.defaults().version;
        const sig = signalled();
        let why: string;
        try {
          note(`session agent ${session.agentName} (${session.agentId}), scope ${session.scope}`);
          if (o.http) {
            let token: string | null = named ?? null;
            if (o.token && !named) {
              try {
                const t = loadToken(o.tokenFile, session.dataDir ?? g.dataDir());
                token = t.token;
                note(`bearer token in ${t.file}`);
              } catch (e) {
                throw new CliError(`${(e as Error).message}`, EXIT.USAGE);
              }
            }
            const h = await serveHttp({
              host: o.http.host,
              port: o.http.port,
              token,
              makeServer: () => buildServer(session, version),
              note,
            }).catch((e: unknown) => {
              throw new CliError(
                `cannot listen on ${o.http!.host}:${o.http!.port}: ${(e as Error).message}`,
                EXIT.USAGE,
              );
            });
            // The one line a script waits for: where the endpoint is.
            note(
              `listening on http://${h.address.host.includes(':') ? `[${h.address.host}]` : h.address.host}:${h.address.port}/mcp`,
            );
            why = await Promise.race([sig.done, session.lost.then((e) => `kernel lost: ${e.message}`)]);
            await h.close();
          } else {
            const server = buildServer(session, version);
            const transport = new StdioServerTransport();
            const ended = new Promise<string>((resolve) => {
              process.stdin.once('end', () => resolve('stdin closed'));
              process.stdin.once('close', () => resolve('stdin closed'));
              transport.onclose = () => resolve('transport closed');
            });
            await server.connect(transport);
            why = await Promise.race([
              ended,
              sig.done,
              session.lost.then((e) => `kernel lost: ${e.message}`),
            ]);
            await server.close().catch(() => {});
          }
        } finally {
          sig.off();
          await session.close();
        }
        note(`stopped (${why})`);
        if (why.startsWith('kernel lost')) process.exitCode = EXIT.UNREACHABLE;
      },
    );
}
