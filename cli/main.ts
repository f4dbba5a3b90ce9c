/**
 * The `clove` command. Exit codes are API (docs/cli.md):
 *   0 success · 1 the kernel refused the request · 2 usage error · 3 cannot listen on the socket path
 *   4 another kernel is running there · 5 the native sandbox layer is missing · 6 cannot reach the kernel
 *   7 no such agent
 */
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_MAX_PAYLOAD, DEFAULT_SOCKET, SOCKET_ENV } from '../protocol/index.js';
import { CloveClient, ConnectionClosedError, KernelError, NotFoundError } from '../sdk/typescript/client.js';
import { register as registerLogs } from './commands/logs.js';
import { register as registerTop } from './commands/top.js';

export const EXIT = {
  OK: 0,
  REFUSED: 1,
  USAGE: 2,
  LISTEN: 3,
  RUNNING: 4,
  SANDBOX: 5,
  UNREACHABLE: 6,
  NOT_FOUND: 7,
} as const;

/**
 * What the CLI needs of the kernel daemon to run one (`clove kernel`, `clove up`). The CLI is a client:
 * it never imports the kernel; bin/clove.js hands it this.
 */
export interface Daemon {
  /** Defaults for the help text, the version, and where Clove is installed (examples/ lives there). */
  defaults(): { dataDir: string; mailboxSize: number; version: string; installDir: string };
  run(
    options: {
      socketPath: string;
      dataDir: string;
      maxPayload?: number;
      mailboxSize?: number;
      /** Default per-agent budgets (docs/protocol.md §4a). */
      budgets?: Record<string, number>;
      sandbox: 'auto' | 'native' | 'off';
      logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
      durability: 'normal' | 'full';
    },
    afterStart?: (k: {
      socketPath: string;
      log(msg: string, fields?: Record<string, unknown>): void;
    }) => Promise<void>,
  ): Promise<number>;
}

function int(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a non-negative integer');
  return n;
}

/** `name=n` of the --budget option, accumulated. */
function budget(v: string, acc: Record<string, number> = {}): Record<string, number> {
  const [name, n] = v.split('=');
  const value = Number(n);
  if (!name || !Number.isInteger(value) || value < 0) throw new InvalidArgumentError('must be NAME=N');
  return { ...acc, [name]: value };
}

function kv(v: string, acc: Record<string, string>): Record<string, string> {
  const i = v.indexOf('=');
  if (i <= 0) throw new InvalidArgumentError('must be KEY=VALUE');
  return { ...acc, [v.slice(0, i)]: v.slice(i + 1) };
}

function kernelOptions(o: Record<string, unknown>, socketPath: string): Parameters<Daemon['run']>[0] {
  return {
    socketPath,
    dataDir: o.dataDir as string,
    maxPayload: o.maxPayload as number | undefined,
    mailboxSize: o.mailboxSize as number | undefined,
    ...(o.budget ? { budgets: o.budget as Record<string, number> } : {}),
    sandbox: o.sandbox as 'auto' | 'native' | 'off',
    logLevel: o.logLevel as 'info',
    durability: o.durability as 'normal' | 'full',
  };
}

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

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

function target(s: string): number | string {
  return /^\d+$/.test(s) ? Number(s) : s;
}

function table(rows: (string | number)[][]): string {
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

function fmtUptime(ms: number): string {
  if (!ms) return '-';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

export function program(daemon: Daemon): Command {
  const defaults = daemon.defaults();
  const p = new Command('clove')
    .description('systemd for AI agents: run every agent as a supervised OS process')
    .version(defaults.version)
    .option('-s, --socket <path>', 'operator socket of the kernel', process.env[SOCKET_ENV] ?? DEFAULT_SOCKET)
    .showHelpAfterError()
    .exitOverride();

  const kernelOpts = (c: Command) =>
    c
      .option('-d, --data-dir <dir>', 'state store, logs and the agent socket', defaults.dataDir)
      .option('--max-payload <bytes>', 'largest request payload', int, DEFAULT_MAX_PAYLOAD)
      .option('--mailbox-size <n>', 'messages a mailbox holds before SEND fails', int, defaults.mailboxSize)
      .option(
        '--budget <name=n>',
        'a default per-agent budget, e.g. connections=128 (repeatable; docs/protocol.md §4a)',
        budget,
      )
      .addOption(
        new Option('--sandbox <mode>', 'agent isolation').choices(['auto', 'native', 'off']).default('auto'),
      )
      .addOption(
        new Option('--durability <mode>', 'state store fsync policy')
          .choices(['normal', 'full'])
          .default('normal'),
      )
      .addOption(
        new Option('--log-level <level>', 'kernel log level')
          .choices(['debug', 'info', 'warn', 'error', 'silent'])
          .default('info'),
      );

  kernelOpts(
    p.command('kernel').description('run the kernel daemon in the foreground (logs to stderr)'),
  ).action(async (o) => {
    process.exitCode = await daemon.run(kernelOptions(o, p.opts().socket));
  });

  kernelOpts(
    p
      .command('up')
      .description('run the kernel with a demo swarm of agents that message each other')
      .option('-n, --agents <n>', 'agents in the swarm', int, 10),
  ).action(async (o) => {
    process.exitCode = await daemon.run(kernelOptions(o, p.opts().socket), async (k) => {
      const script = path.join(defaults.installDir, 'examples', 'swarm', 'worker.py');
      const client = await CloveClient.connect({ socketPath: k.socketPath });
      // A kernel started again on the same data dir has brought its `always` workers back already.
      const running = new Set((await client.list()).map((a) => a.name));
      for (let i = 0; i < o.agents; i++) {
        if (running.has(`worker-${i}`)) continue;
        await client.spawn({
          name: `worker-${i}`,
          script,
          args: [String(o.agents)],
          restart_policy: 'always',
        });
      }
      k.log('swarm started: try `clove ps`, `clove kill worker-3`, `clove logs worker-0 -f`', {
        agents: o.agents,
        restored: [...running].filter((n) => /^worker-\d+$/.test(n)).length,
      });
      client.close();
    });
  });

  p.command('run')
    .description('spawn an agent')
    .argument('<script>', 'script or executable (.py runs with python3, .js/.mjs with node)')
    .argument('[args...]', 'arguments for the agent')
    .option('-n, --name <name>', 'agent name')
    .addOption(
      new Option('-r, --restart <policy>', 'restart policy')
        .choices(['never', 'on-failure', 'always'])
        .default('never'),
    )
    .option('--max-restarts <n>', 'restarts allowed within the window before escalation', int)
    .option('--restart-window <s>', 'restart intensity window in seconds', int)
    .option('--watchdog <ms>', 'kill and restart the agent when it is silent this long', int)
    .option('-e, --env <KEY=VALUE>', 'environment variable for the agent (repeatable)', kv, {})
    .option('--no-sandbox', 'run as a plain process (operator only)')
    .option('--network', 'grant network access')
    .option('--json', 'print the reply as JSON')
    .action(async (script: string, args: string[], o) => {
      const reply = await withClient(p.opts().socket, (c) =>
        c.spawn({
          script: path.resolve(script),
          name: o.name,
          args: args.length ? args : undefined,
          restart_policy: o.restart,
          max_restarts: o.maxRestarts,
          restart_window: o.restartWindow,
          watchdog_ms: o.watchdog,
          env: o.env,
          sandboxed: o.sandbox,
          network: o.network ?? false,
        }),
      );
      console.log(o.json ? JSON.stringify(reply) : `${reply.name} (id ${reply.id}, pid ${reply.pid})`);
    });

  p.command('ps')
    .description('list agents')
    .option('--json', 'print JSON')
    .action(async (o) => {
      const agents = await withClient(p.opts().socket, (c) => c.list());
      if (o.json) return console.log(JSON.stringify(agents));
      const rows: (string | number)[][] = [
        ['ID', 'NAME', 'STATE', 'PID', 'RESTARTS', 'UPTIME', 'POLICY', 'LAST EXIT'],
      ];
      for (const a of agents.sort((x, y) => x.id - y.id)) {
        const exit = a.exit_signal ?? (a.exit_code !== null ? `code ${a.exit_code}` : '-');
        rows.push([
          a.id,
          a.name,
          a.state,
          a.pid || '-',
          a.restarts,
          fmtUptime(a.uptime_ms),
          a.restart_policy,
          a.exit_reason === 'oom' ? 'oom' : exit,
        ]);
      }
      console.log(table(rows));
    });

  p.command('kill')
    .description('stop an agent (SIGTERM, then SIGKILL after the grace period); it is not restarted')
    .argument('<agent>', 'name or id')
    .option('--grace <ms>', 'grace period before SIGKILL', int)
    .action(async (a: string, o) => {
      await withClient(p.opts().socket, (c) => c.kill(target(a), { grace_ms: o.grace }));
      console.log(`killed ${a}`);
    });

  const ctx = { socket: () => p.opts().socket as string, dataDir: () => defaults.dataDir, defaults };
  registerLogs(p, ctx);
  registerTop(p, ctx);

  p.command('send')
    .description('send a message (JSON, or a plain string) to an agent')
    .argument('<agent>', 'name or id')
    .argument('<message>', 'JSON value or text')
    .action(async (a: string, m: string) => {
      let message: unknown;
      try {
        message = JSON.parse(m);
      } catch {
        message = m;
      }
      const r = await withClient(p.opts().socket, (c) => c.send(target(a), message));
      console.log(`delivered to ${r.delivered_to}`);
    });

  p.command('exec')
    .description("run a command as the kernel's owner, through the kernel (EXEC, audited)")
    .argument('<command...>', 'program and its arguments (no shell: quote a pipeline as `sh -c "…"`)')
    .option('-C, --cwd <dir>', 'working directory')
    .option('-t, --timeout <s>', 'kill it after this many seconds', int)
    .option('--json', 'print the reply as JSON')
    .action(async (argv: string[], o) => {
      const r = (await withClient(p.opts().socket, (c) =>
        c.exec({ argv, cwd: o.cwd, timeout: o.timeout } as never),
      )) as unknown as { stdout: string; stderr: string; exit_code: number; timed_out?: boolean };
      if (o.json) return console.log(JSON.stringify(r));
      process.stdout.write(r.stdout ?? '');
      process.stderr.write(r.stderr ?? '');
      if (r.exit_code !== 0) {
        throw new CliError(
          r.timed_out ? 'the command timed out' : `the command exited with ${r.exit_code}`,
          EXIT.REFUSED,
        );
      }
    });

  p.command('perms')
    .description("show an agent's rights, or set them to a preset")
    .argument('<agent>', 'name or id')
    .option('--set <level>', 'unrestricted, standard, sandboxed, readonly or minimal')
    .option('--json', 'print JSON')
    .action(async (a: string, o) => {
      await withClient(p.opts().socket, async (c) => {
        const agent = await resolveAgent(c, a);
        if (o.set) await c.setPerms(agent, o.set);
        const r = await c.getPerms(agent);
        if (o.json) return console.log(JSON.stringify(r));
        const perms = (r.permissions ?? {}) as Record<string, unknown>;
        console.log(`${a} (id ${agent}): ${r.level}`);
        for (const [k, v] of Object.entries(perms)) console.log(`  ${k}: ${JSON.stringify(v)}`);
      });
    });

  p.command('audit')
    .description('print the audit log (operators only)')
    .option('-c, --category <c>', 'SECURITY, AGENT_LIFECYCLE, RESOURCE, SYSCALL, …')
    .option('-a, --agent <agent>', 'only entries of this agent (name or id)')
    .option('-n, --limit <n>', 'the newest n entries', int, 50)
    .option('--json', 'print JSON')
    .action(async (o) => {
      await withClient(p.opts().socket, async (c) => {
        const agentId = o.agent ? await resolveAgent(c, o.agent) : undefined;
        const r = (await c.getAuditLog({
          ...(o.category ? { category: o.category } : {}),
          ...(agentId ? { agent_id: agentId } : {}),
          limit: o.limit,
        })) as unknown as { entries: Record<string, unknown>[] };
        if (o.json) return console.log(JSON.stringify(r.entries));
        const rows: (string | number)[][] = [['ID', 'TIME', 'CATEGORY', 'EVENT', 'AGENT', 'OK', 'DETAILS']];
        for (const e of r.entries) {
          rows.push([
            e.id as number,
            String(e.timestamp),
            String(e.category),
            String(e.event_type),
            `${e.agent_name ?? ''}${e.agent_name ? ' ' : ''}(${e.agent_id})`,
            e.success ? 'yes' : 'no',
            JSON.stringify(e.details).slice(0, 80),
          ]);
        }
        console.log(table(rows));
      });
    });

  return p;
}

/** An agent's id, from an id or a name (through LIST). */
async function resolveAgent(c: CloveClient, a: string): Promise<number> {
  const t = target(a);
  if (typeof t === 'number') return t;
  const found = (await c.list()).find((x) => x.name === t);
  if (!found) throw new CliError(`no such agent: ${a}`, EXIT.NOT_FOUND);
  return found.id;
}

export async function main(argv: string[], daemon: Daemon): Promise<number> {
  try {
    await program(daemon).parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.OK;
  } catch (e) {
    const err = e as { code?: string; exitCode?: number; message: string };
    if (err.code?.startsWith('commander.')) {
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version'
        ? EXIT.OK
        : EXIT.USAGE;
    }
    if (e instanceof CliError) {
      process.stderr.write(`clove: ${e.message}\n`);
      return e.exitCode;
    }
    if (e instanceof NotFoundError) {
      process.stderr.write(`clove: ${e.message}\n`);
      return EXIT.NOT_FOUND;
    }
    if (e instanceof KernelError) {
      process.stderr.write(`clove: ${e.message} (${e.code})\n`);
      return EXIT.REFUSED;
    }
    if (e instanceof ConnectionClosedError) {
      process.stderr.write(`clove: ${e.message}\n`);
      return EXIT.UNREACHABLE;
    }
    process.stderr.write(`clove: ${err.message}\n`);
    return EXIT.REFUSED;
  }
}
