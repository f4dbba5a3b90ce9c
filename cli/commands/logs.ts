/**
 * `clove logs [-f] [--tail N] [-t] [--no-color] [--no-prefix] [PATTERN…]`: the logs of every agent whose
 * name (or service, label `clove.service`) matches, aggregated with a `name | ` prefix, and followed
 * across rotation, restarts and new replicas with `-f`.
 *
 * Entry point: `register(program: Command, ctx: CommandContext)` where
 *   `ctx = { socket(): string; dataDir(): string; defaults }` — `socket()` the operator socket (the global
 *   `--socket` option, read when the command runs), `dataDir()` the default data dir (used when the kernel
 *   does not say its own in HELLO), `defaults` the daemon's defaults.
 *
 * Exit codes: 0 (also after SIGINT/SIGTERM while following), 6 the kernel cannot be reached at the start,
 * 7 nothing matches (without -f; with -f it waits for a matching agent to appear).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import picomatch from 'picomatch';
import pc from 'picocolors';
import type { AgentInfo } from '../../protocol/index.js';
import { CloveClient } from '../../sdk/typescript/client.js';
import { CliError, EXIT, withClient } from '../lib.js';

/** What a command module gets from the program (see the header). */
export interface CommandContext {
  socket(): string;
  dataDir(): string;
  defaults: unknown;
}

/** An agent as LIST returns it (labels may be missing from an older kernel's reply). */
export type Listed = Omit<AgentInfo, 'labels'> & { labels?: AgentInfo['labels'] };

/** One log to print: the agent's name and its file. */
export interface LogSource {
  name: string;
  file: string;
}

const POLL_FILES_MS = 200;
const POLL_LIST_MS = 1000;

function nonNegativeInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a non-negative integer');
  return n;
}

/**
 * The agents a set of patterns selects: a pattern matches an agent's name (a picomatch glob, or the exact
 * name), its id (digits), or its service (label `clove.service`, glob too); no pattern selects every agent.
 * Agents without a log file (LIST gives it to operators only) are left out.
 */
export function selectAgents(agents: Listed[], patterns: string[]): LogSource[] {
  return matching(agents, patterns).flatMap((a) => (a.log_file ? [{ name: a.name, file: a.log_file }] : []));
}

function matching(agents: Listed[], patterns: string[]): Listed[] {
  const matchers = patterns.map((p) => ({ p, glob: picomatch(p, { dot: true }) }));
  const out: Listed[] = [];
  for (const a of agents) {
    const service = a.labels?.['clove.service'];
    const hit =
      matchers.length === 0 ||
      matchers.some(
        ({ p, glob }) =>
          glob(a.name) || (/^\d+$/.test(p) && Number(p) === a.id) || (service !== undefined && glob(service)),
      );
    if (hit) out.push(a);
  }
  return out;
}

/**
 * Files of agents that are gone but whose log remains: only for patterns that are exact names (a glob
 * over dead files would resurrect every agent that ever ran).
 */
function leftoverLogs(dataDir: string, patterns: string[], known: Set<string>): LogSource[] {
  const out: LogSource[] = [];
  for (const p of patterns) {
    if (known.has(p) || picomatch.scan(p).isGlob || p.includes('/') || p.startsWith('.')) continue;
    const file = path.join(dataDir, 'logs', `${p}.log`);
    if (fs.existsSync(file)) out.push({ name: p, file });
  }
  return out;
}

/** Splits a buffer into complete lines (without their newline) and the unfinished rest. */
export function splitLines(buf: Buffer): { lines: Buffer[]; rest: Buffer } {
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = buf.indexOf(10); i !== -1; i = buf.indexOf(10, start)) {
    lines.push(buf.subarray(start, i));
    start = i + 1;
  }
  return { lines, rest: buf.subarray(start) };
}

/** A stable colour per name: a hash of the name picks one of the palette. */
function colourFor(colors: ReturnType<typeof pc.createColors>): (name: string) => string {
  const palette = [
    colors.cyan,
    colors.green,
    colors.yellow,
    colors.blue,
    colors.magenta,
    colors.red,
    colors.cyanBright,
    colors.greenBright,
    colors.yellowBright,
    colors.blueBright,
    colors.magentaBright,
    colors.redBright,
  ];
  return (name) => {
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
    return palette[(h >>> 0) % palette.length](name);
  };
}

/** Writes lines with the `name | ` prefix (padded to the longest name shown so far) and an optional time. */
export class Printer {
  private width = 0;
  /** The reader went away (`clove logs | head`): nothing more is written. */
  closed = false;
  private readonly paint: (name: string) => string;

  constructor(
    private readonly o: { prefix: boolean; timestamps: boolean; color: boolean },
    private readonly out: NodeJS.WritableStream = process.stdout,
  ) {
    this.paint = colourFor(pc.createColors(o.color));
  }

  widen(names: string[]): void {
    for (const n of names) this.width = Math.max(this.width, n.length);
  }

  /** `at` is when the line was read; undefined for backlog lines, whose time is unknown. */
  lines(name: string, lines: Buffer[], at?: Date): void {
    if (lines.length === 0 || this.closed) return;
    let head = '';
    if (this.o.timestamps) head += `${at ? at.toISOString() : '-'.padEnd(24)} `;
    if (this.o.prefix) head += `${this.paint(name)}${' '.repeat(this.width - name.length)} | `;
    this.out.write(lines.map((l) => `${head}${l.toString('utf8')}\n`).join(''));
  }
}

/**
 * The last `tail` lines of a file and its size. Following, an unfinished last line is handed back as
 * `rest` (its end is still to come); otherwise it counts as the last line.
 */
function backlog(
  file: string,
  tail: number | undefined,
  following: boolean,
): { lines: Buffer[]; rest: Buffer; size: number } {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return { lines: [], rest: Buffer.alloc(0), size: 0 };
  }
  const split = splitLines(buf);
  let { rest } = split;
  const lines = split.lines;
  if (!following && rest.length) {
    lines.push(rest);
    rest = Buffer.alloc(0);
  }
  return {
    lines: tail === undefined ? lines : lines.slice(Math.max(0, lines.length - tail)),
    rest,
    size: buf.length,
  };
}

/**
 * One followed file, like `tail -F`: reads what was appended since the last poll, keeps a partial last
 * line until its newline arrives, and survives copy-and-truncate rotation (the bytes written between
 * the last poll and the rotation are read back from `<file>.1`) and a file replaced by a new one.
 */
export class Followed {
  private rest: Buffer = Buffer.alloc(0);
  private ino = 0;

  constructor(
    readonly src: LogSource,
    private pos: number,
    rest?: Buffer,
  ) {
    if (rest) this.rest = rest;
    try {
      this.ino = fs.statSync(src.file).ino;
    } catch {
      // not there yet: read from its start when it appears
    }
  }

  /** Complete lines appended since the last call. */
  poll(): Buffer[] {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.src.file);
    } catch {
      return [];
    }
    let chunk: Buffer = Buffer.alloc(0);
    if (st.ino !== this.ino) {
      this.ino = st.ino;
      this.pos = 0;
    } else if (st.size < this.pos) {
      chunk = readRange(`${this.src.file}.1`, this.pos);
      this.pos = 0;
    }
    if (st.size > this.pos) {
      chunk = Buffer.concat([chunk, readRange(this.src.file, this.pos, st.size)]);
      this.pos = st.size;
    }
    if (chunk.length === 0) return [];
    const { lines, rest } = splitLines(Buffer.concat([this.rest, chunk]));
    this.rest = Buffer.from(rest);
    return lines;
  }

  /** The unfinished last line, handed out when the follow ends. */
  flush(): Buffer[] {
    const r = this.rest;
    this.rest = Buffer.alloc(0);
    return r.length ? [r] : [];
  }
}

/** Bytes [from, to) of a file (to: its end); empty when it cannot be read. */
function readRange(file: string, from: number, to?: number): Buffer {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const end = to ?? fs.fstatSync(fd).size;
    if (end <= from) return Buffer.alloc(0);
    const buf = Buffer.alloc(end - from);
    const n = fs.readSync(fd, buf, 0, buf.length, from);
    return buf.subarray(0, n);
  } catch {
    return Buffer.alloc(0);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

interface LogsOptions {
  follow?: boolean;
  tail?: number;
  timestamps?: boolean;
  color: boolean;
  /** undefined: on, unless the only pattern is the exact name of the one agent shown. */
  prefix?: boolean;
}

export function register(program: Command, ctx: CommandContext): void {
  program
    .command('logs')
    .description('print (and follow) the logs of the agents that match, each line prefixed with its agent')
    .argument('[patterns...]', "agent names, ids, globs ('workers-*') or service names; none: every agent")
    .option('-f, --follow', 'keep printing as logs grow; agents that start matching later join')
    .option('-n, --tail <n>', 'only the last n lines of each log', nonNegativeInt)
    .option('-t, --timestamps', 'prefix each line with the time clove logs read it (- for the backlog)')
    .option('--no-color', 'no colours (also off when stdout is not a terminal, or NO_COLOR is set)')
    .option('--prefix', 'prefix lines with `name | ` (the default, but for one agent named exactly)')
    .option('--no-prefix', 'no `name | ` prefix')
    .action(async (patterns: string[], o: LogsOptions) => {
      await logs(ctx, patterns, o);
    });
}

/** Lists the agents (and the kernel's data dir) once. */
async function discover(
  c: CloveClient,
  patterns: string[],
  fallbackDataDir: string,
): Promise<{ sources: LogSource[]; dataDir: string; unreadable: number }> {
  const [agents, hello] = await Promise.all([c.list(), c.hello()]);
  const dataDir = hello.data_dir ?? fallbackDataDir;
  const sources = selectAgents(agents as Listed[], patterns);
  // Matching agents LIST gave no log file for: the caller is not an operator.
  const unreadable = matching(agents as Listed[], patterns).length - sources.length;
  const known = new Set(agents.map((a) => a.name));
  sources.push(...leftoverLogs(dataDir, patterns, known));
  sources.sort((a, b) => a.name.localeCompare(b.name));
  return { sources, dataDir, unreadable };
}

async function logs(ctx: CommandContext, patterns: string[], o: LogsOptions): Promise<void> {
  const first = await withClient(ctx.socket(), (c) => discover(c, patterns, ctx.dataDir()));
  if (first.sources.length === 0 && first.unreadable > 0)
    throw new CliError("only operators (the uid running the kernel) may read agents' logs", EXIT.REFUSED);
  if (first.sources.length === 0 && !o.follow)
    throw new CliError(`no agent matches ${patterns.join(' ') || '(any agent)'}`, EXIT.NOT_FOUND);
  const single = patterns.length === 1 && first.sources.length === 1 && first.sources[0].name === patterns[0];
  const printer = new Printer({
    prefix: o.prefix ?? !single,
    timestamps: Boolean(o.timestamps),
    color: o.color && pc.isColorSupported && Boolean(process.stdout.isTTY),
  });
  printer.widen(first.sources.map((s) => s.name));
  // `clove logs | head`: the reader went away; stop writing and end quietly (exit 0).
  process.stdout.on('error', () => (printer.closed = true));
  const followed = new Map<string, Followed>();
  for (const s of first.sources) {
    const b = backlog(s.file, o.tail, Boolean(o.follow));
    printer.lines(s.name, b.lines);
    if (o.follow) followed.set(s.file, new Followed(s, b.size, b.rest));
  }
  if (!o.follow) return;
  await followAll(ctx, patterns, first.dataDir, printer, followed);
}

/**
 * The `-f` loop: polls the followed files every 200 ms and LIST every second, adding the agents that
 * start matching. A log that existed when the follow began is read from its size then (its old lines
 * are not news), a new one from its start. When the kernel goes away the files keep being followed and
 * LIST is retried, so a kernel restart is seamless; SIGINT/SIGTERM end it (exit 0).
 */
async function followAll(
  ctx: CommandContext,
  patterns: string[],
  dataDir: string,
  printer: Printer,
  followed: Map<string, Followed>,
): Promise<void> {
  const logDir = path.join(dataDir, 'logs');
  const sizeAtStart = new Map<string, number>();
  try {
    for (const f of fs.readdirSync(logDir))
      sizeAtStart.set(path.join(logDir, f), fs.statSync(path.join(logDir, f)).size);
  } catch {
    // no logs directory yet
  }
  let client: CloveClient | null = null;
  let warned = false;
  let listing = false;
  const refreshList = async () => {
    if (listing) return;
    listing = true;
    try {
      client ??= await CloveClient.connect({ socketPath: ctx.socket(), reconnect: false });
      const { sources } = await discover(client, patterns, dataDir);
      if (warned) process.stderr.write('clove: kernel reachable again\n');
      warned = false;
      for (const s of sources) {
        if (followed.has(s.file)) continue;
        printer.widen([s.name]);
        followed.set(s.file, new Followed(s, sizeAtStart.get(s.file) ?? 0));
      }
    } catch (e) {
      client?.close();
      client = null;
      if (!warned) {
        process.stderr.write(
          `clove: cannot reach the kernel (${(e as Error).message}); following the open logs, retrying\n`,
        );
      }
      warned = true;
    } finally {
      listing = false;
    }
  };
  const pollFiles = () => {
    const now = new Date();
    for (const f of followed.values()) printer.lines(f.src.name, f.poll(), now);
  };
  await new Promise<void>((resolve) => {
    const files = setInterval(pollFiles, POLL_FILES_MS);
    const list = setInterval(() => void refreshList(), POLL_LIST_MS);
    let stopped = false;
    const stop = () => {
      if (stopped) return;
      stopped = true;
      clearInterval(files);
      clearInterval(list);
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      pollFiles();
      for (const f of followed.values()) printer.lines(f.src.name, f.flush(), new Date());
      client?.close();
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    process.stdout.on('error', stop);
  });
}
