/**
 * What every `clove` command shares: exit codes (API, docs/cli.md), the error that carries one, a client
 * for one command, tables, agent targets and the few formatters the listings use.
 */
import fs from 'node:fs';
import { CloveClient } from '../sdk/typescript/client.js';
import type { AgentInfo } from '../protocol/generated.js';

export const EXIT = {
  OK: 0,
  REFUSED: 1,
  USAGE: 2,
  LISTEN: 3,
  RUNNING: 4,
  SANDBOX: 5,
  UNREACHABLE: 6,
  NOT_FOUND: 7,
  /** clove.yaml is missing or invalid */
  COMPOSE_INVALID: 8,
  /** an agent of the project failed to start or to become healthy */
  START_FAILED: 9,
} as const;

/** A failure the user should read: printed as `clove: <message>`, the process exits with `exitCode`. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** Runs `fn` with an operator client on `socket`; an unreachable kernel is exit 6, the client is closed. */
export async function withClient<T>(socket: string, fn: (c: CloveClient) => Promise<T>): Promise<T> {
  let c: CloveClient;
  try {
    c = await CloveClient.connect({ socketPath: socket, reconnect: false });
  } catch (e) {
    throw new CliError(`cannot reach the kernel at ${socket}: ${(e as Error).message}`, EXIT.UNREACHABLE);
  }
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** A client when a kernel answers on `socket`, else null (no error: `up` then starts one). */
export async function tryConnect(socket: string): Promise<CloveClient | null> {
  try {
    return await CloveClient.connect({ socketPath: socket, reconnect: false });
  } catch {
    return null;
  }
}

/** A command-line agent reference: digits are an id, anything else a name. */
export function target(s: string): number | string {
  return /^\d+$/.test(s) ? Number(s) : s;
}

/** Left-aligned columns, two spaces apart; the first row is the header. */
export function table(rows: (string | number)[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => String(c).padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function fmtUptime(ms: number): string {
  if (!ms) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d${Math.floor((s % 86400) / 3600)}h`;
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return '-';
  if (n < 1024) return `${n}B`;
  const units = ['K', 'M', 'G', 'T'];
  let v = n;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)}${units[u]}`;
}

/** An agent's labels ({} when it has none). */
export function labelsOf(a: AgentInfo): Record<string, string> {
  return a.labels ?? {};
}

/** An agent's id, from an id or a name (through LIST). */
export async function resolveAgent(c: CloveClient, a: string): Promise<number> {
  const t = target(a);
  if (typeof t === 'number') return t;
  const found = (await c.list()).find((x) => x.name === t);
  if (!found) throw new CliError(`no such agent: ${a}`, EXIT.NOT_FOUND);
  return found.id;
}

/** Resolves when `cond` returns a truthy value; throws `what` after `timeoutMs` (conditions, not sleeps). */
export async function waitFor<T>(
  cond: () => Promise<T | null | undefined | false>,
  timeoutMs: number,
  what: string,
  everyMs = 200,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The last `n` lines of a file ('' when it cannot be read). */
export function tail(file: string | undefined, n: number): string {
  if (!file) return '';
  try {
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    return lines.slice(-n).join('\n');
  } catch {
    return '';
  }
}

/** Is process `pid` alive (and not a zombie)? */
export function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Creates a kernel's data dir traversable by agents' uids (0711) when missing: the kernel's own first
 * recursive mkdir of <data>/logs (0700) would otherwise make it 0700, and sandboxed agents could not reach
 * <data>/run/agent.sock.
 */
export function ensureDataDir(dir: string): void {
  if (!fs.existsSync(dir)) fs.mkdirSync(dir, { recursive: true, mode: 0o711 });
}
