/**
 * Agent rights, in the shape of the public kernel's GET_PERMS object, with its presets. The rule that
 * closes the public kernel's escalation holes lives here: `within(child, parent)` — nobody can hand out
 * (or give themselves) a right they do not hold.
 */
import type { Permissions } from '../../protocol/index.js';
import { InvalidRequestError } from '../core/errors.js';

export type { Permissions };

export const LEVELS = ['unrestricted', 'standard', 'sandboxed', 'readonly', 'minimal'] as const;
export type Level = (typeof LEVELS)[number];

export const DEFAULT_BLOCKED_PATHS = [
  '/etc/shadow',
  '/etc/passwd',
  '~/.ssh/*',
  '~/.gnupg/*',
  '~/.aws/*',
  '~/.config/gcloud/*',
  '*/.env',
  '*/.git/config',
  '*/credentials*',
  '*/secrets*',
  '*/*token*',
  '*/*password*',
];
export const DEFAULT_BLOCKED_COMMANDS = [
  'rm -rf /',
  'rm -rf ~',
  'rm -rf /*',
  'sudo',
  'su ',
  'chmod 777',
  'curl | bash',
  'wget | bash',
  '> /dev/sd',
  'dd if=',
  'mkfs',
  ':(){:|:&};:',
  'shutdown',
  'reboot',
  'init 0',
  'poweroff',
];

export function preset(level: Level): Permissions {
  const base: Permissions = {
    can_exec: false,
    can_read: true,
    can_write: true,
    can_think: true,
    can_spawn: false,
    can_http: false,
    filesystem: { read: [], write: [], blocked: [...DEFAULT_BLOCKED_PATHS] },
    exec: [],
    blocked_commands: [...DEFAULT_BLOCKED_COMMANDS],
    network: [],
    http_methods: [],
    llm: { max_tokens: 0, max_calls: 0, tokens_used: 0, calls_made: 0 },
    max_exec_time_ms: 30000,
    mcp: [],
  };
  switch (level) {
    case 'unrestricted':
      return {
        ...base,
        can_exec: true,
        can_spawn: true,
        can_http: true,
        filesystem: { read: ['*'], write: ['*'], blocked: [] },
        exec: ['*'],
        blocked_commands: [],
        network: ['*'],
        http_methods: ['*'],
        mcp: ['*'],
      };
    case 'standard':
      return base;
    case 'sandboxed':
      return { ...base, filesystem: { ...base.filesystem, read: ['/tmp/*', '/home/*'], write: ['/tmp/*'] } };
    case 'readonly':
      return { ...base, can_write: false };
    case 'minimal':
      return { ...base, can_read: false, can_write: false };
  }
}

const BOOLS = ['can_exec', 'can_read', 'can_write', 'can_think', 'can_spawn', 'can_http'] as const;

function strList(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new InvalidRequestError(`invalid request: permissions.${field} must be an array of strings`);
  }
  return [...(v as string[])];
}

/** A grant of `permissions.mcp`: `*`, a server's name, or `server/tool` (a tool glob: `*` and `?`). */
const MCP_GRANT = /^(\*|[A-Za-z0-9_-]{1,64}(\/\S{1,256})?)$/;

/** The server and tool pattern of an `mcp` grant (a bare server name is every tool of it). */
function grantParts(g: string): [string, string] {
  if (g === '*') return ['*', '*'];
  const i = g.indexOf('/');
  return i < 0 ? [g, '*'] : [g.slice(0, i), g.slice(i + 1)];
}

/** A tool glob as a regular expression: `*` any characters, `?` one, everything else literal. */
function toolGlob(p: string): RegExp {
  const src = p
    .replace(/[.+^${}()|[\]\\]/g, '\\$&')
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return new RegExp(`^${src}$`);
}

/** Parses a `permissions` object or a level name, as SPAWN and SET_PERMS take them. */
export function parsePermissions(v: unknown): Permissions {
  if (typeof v === 'string') {
    if (!(LEVELS as readonly string[]).includes(v))
      throw new InvalidRequestError(`invalid request: unknown permission level '${v}'`);
    return preset(v as Level);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidRequestError('invalid request: permissions must be an object or a level name');
  }
  const o = v as Record<string, unknown>;
  const p = preset('standard');
  for (const b of BOOLS) {
    if (o[b] === undefined) continue;
    if (typeof o[b] !== 'boolean')
      throw new InvalidRequestError(`invalid request: permissions.${b} must be a boolean`);
    p[b] = o[b] as boolean;
  }
  const fs = (o.filesystem ?? {}) as Record<string, unknown>;
  if (typeof fs !== 'object' || Array.isArray(fs))
    throw new InvalidRequestError('invalid request: permissions.filesystem must be an object');
  p.filesystem = {
    read: strList(fs.read, 'filesystem.read'),
    write: strList(fs.write, 'filesystem.write'),
    blocked: [...new Set([...DEFAULT_BLOCKED_PATHS, ...strList(fs.blocked, 'filesystem.blocked')])],
  };
  p.exec = strList(o.exec, 'exec');
  p.blocked_commands = [
    ...new Set([...DEFAULT_BLOCKED_COMMANDS, ...strList(o.blocked_commands, 'blocked_commands')]),
  ];
  p.network = strList(o.network, 'network');
  p.http_methods = strList(o.http_methods, 'http_methods');
  p.mcp = strList(o.mcp, 'mcp');
  for (const g of p.mcp)
    if (!MCP_GRANT.test(g))
      throw new InvalidRequestError(
        `invalid request: permissions.mcp entry '${g}' must be '*', 'server', 'server/*' or 'server/tool'`,
      );
  if (p.exec.length) p.can_exec = true;
  if (p.network.length || p.http_methods.length) p.can_http = true;
  const llm = (o.llm ?? {}) as Record<string, unknown>;
  for (const k of ['max_tokens', 'max_calls'] as const) {
    const n = llm[k];
    if (n === undefined) continue;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0)
      throw new InvalidRequestError(`invalid request: permissions.llm.${k} must be a non-negative integer`);
    p.llm[k] = n;
  }
  if (o.max_exec_time_ms !== undefined) {
    const n = o.max_exec_time_ms;
    if (typeof n !== 'number' || !Number.isInteger(n) || n <= 0)
      throw new InvalidRequestError(
        'invalid request: permissions.max_exec_time_ms must be a positive integer',
      );
    p.max_exec_time_ms = n;
  }
  return p;
}

/** An allow-list where `*` or (for filesystem) an empty list means "anything". */
function listWithin(child: string[], parent: string[], emptyMeansAny: boolean): boolean {
  const parentAny = parent.includes('*') || (emptyMeansAny && parent.length === 0);
  if (parentAny) return true;
  const childAny = child.includes('*') || (emptyMeansAny && child.length === 0);
  if (childAny) return false;
  return child.every((c) => parent.includes(c));
}

/**
 * True when `child` grants nothing that `parent` does not: no boolean right the parent lacks, no allow
 * list entry outside the parent's, no blocklist entry of the parent's removed, no looser LLM quota.
 */
export function within(child: Permissions, parent: Permissions): boolean {
  for (const b of BOOLS) if (child[b] && !parent[b]) return false;
  if (!listWithin(child.filesystem.read, parent.filesystem.read, true)) return false;
  if (!listWithin(child.filesystem.write, parent.filesystem.write, true)) return false;
  if (!listWithin(child.exec, parent.exec, false)) return false;
  if (!listWithin(child.network, parent.network, false)) return false;
  if (!listWithin(child.http_methods, parent.http_methods, false)) return false;
  if (!parent.filesystem.blocked.every((b) => child.filesystem.blocked.includes(b))) return false;
  if (!parent.blocked_commands.every((b) => child.blocked_commands.includes(b))) return false;
  for (const k of ['max_tokens', 'max_calls'] as const) {
    if (parent.llm[k] > 0 && (child.llm[k] === 0 || child.llm[k] > parent.llm[k])) return false;
  }
  if (child.max_exec_time_ms > parent.max_exec_time_ms) return false;
  if (!mcpWithin(child.mcp ?? [], parent.mcp ?? [])) return false;
  return true;
}

/**
 * Whether `permissions.mcp` grants tool `tool` of server `server` (MCP_LIST_TOOLS, MCP_CALL): by `*`,
 * the server's name, `server/*`, or a `server/<glob>` the tool's name matches.
 */
export function mcpGranted(grants: readonly string[] | undefined, server: string, tool: string): boolean {
  for (const g of grants ?? []) {
    const [s, t] = grantParts(g);
    if (s !== '*' && s !== server) continue;
    if (t === '*' || t === tool || toolGlob(t).test(tool)) return true;
  }
  return false;
}

/** Whether a server is named by any grant (its tools may be listed at all). */
export function mcpServerGranted(grants: readonly string[] | undefined, server: string): boolean {
  return (grants ?? []).some((g) => {
    const s = grantParts(g)[0];
    return s === '*' || s === server;
  });
}

/**
 * Every child grant is covered by a parent grant: the same grant, the parent's `*`, or a parent grant
 * for every tool of the child's server (`server`, `server/*`). A child glob inside a narrower parent
 * glob is refused (nobody proves glob inclusion here).
 */
function mcpWithin(child: readonly string[], parent: readonly string[]): boolean {
  return child.every((c) => {
    const [cs] = grantParts(c);
    return parent.some((p) => {
      if (p === c) return true;
      const [ps, pt] = grantParts(p);
      return (ps === '*' || ps === cs) && pt === '*';
    });
  });
}

/** The preset these rights are (usage counters aside), or `custom`. */
export function levelOf(p: Permissions): Level | 'custom' {
  const plain = (x: Permissions) =>
    JSON.stringify({ ...x, llm: { ...x.llm, tokens_used: 0, calls_made: 0 } });
  return LEVELS.find((l) => plain(preset(l)) === plain(p)) ?? 'custom';
}
