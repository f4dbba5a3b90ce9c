/**
 * The `clove` command: the program's skeleton (global options, the kernel, single-agent commands);
 * compose-style commands live in cli/commands/. Exit codes are API (docs/cli.md, EXIT in cli/lib.ts):
 *   0 success · 1 the kernel refused the request · 2 usage error · 3 cannot listen on the socket path
 *   4 another kernel is running there · 5 the native sandbox layer is missing · 6 cannot reach the kernel
 *   7 no such agent · 8 clove.yaml missing or invalid · 9 an agent failed to start or become healthy
 */
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_MAX_PAYLOAD, DEFAULT_SOCKET, SOCKET_ENV, type SpawnRequest } from '../protocol/index.js';
import { ConnectionClosedError, KernelError, NotFoundError } from '../sdk/typescript/client.js';
import { registerCompose, type Globals } from './commands/compose.js';
import { register as registerLogs } from './commands/logs.js';
import { registerMcp } from './commands/mcp.js';
import { registerRelay, registerTunnel, type RelayDaemon } from './commands/relay.js';
import { registerStatus } from './commands/status.js';
import { register as registerTop } from './commands/top.js';
import { register as registerWorld } from './commands/world.js';
import { defaultPython, entryProblem, entrySpawn } from './compose/index.js';
import { CliError, EXIT, ensureDataDir, resolveAgent, table, target, withClient } from './lib.js';

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
      /** auto: human-readable on a terminal, JSON when stderr is not one. */
      logFormat?: 'auto' | 'pretty' | 'json';
      durability: 'normal' | 'full';
      /** The native fast path (docs/fastpath.md); default: CLOVE_FAST_PATH=1. */
      fastPath?: boolean;
      /** `--fast-path-poll-us`: the most the reactor polls before sleeping (docs/fastpath.md, "Polling"). */
      fastPathPollUs?: number | 'auto';
      /** `--cluster` and its companions as given (validated by the kernel: docs/cluster.md). */
      clusterFlags?: {
        cluster?: string;
        nats?: string;
        node?: string;
        advertise?: string;
        leaseTtl?: number;
        prefix?: string;
      };
      /** `--http HOST:PORT` as given (validated by the kernel: docs/http.md). */
      httpFlag?: string;
      /** `--relay URL --machine-id ID --relay-token-file F`: dial that relay at start (docs/relay.md). */
      relay?: { url: string; machineId: string; tokenFile: string };
      /** `--upgrade`: take over from the kernel running on the socket (docs/restart.md). */
      upgrade?: boolean;
      /** false with `--agents-die-with-kernel` (docs/restart.md). */
      outliveKernel?: boolean;
      /** false with `--no-spare-sandboxes` (docs/supervision.md "Spare sandbox"). */
      spareSandboxes?: boolean;
      /** `--mail-durability` (docs/restart.md). */
      mailDurability?: 'process' | 'off';
    },
    afterStart?: (k: {
      socketPath: string;
      log(msg: string, fields?: Record<string, unknown>): void;
    }) => Promise<void>,
  ): Promise<number>;
  /** `clove relay`: the relay server and its token file (kernel/relay/). */
  relay?: RelayDaemon;
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

function kernelOptions(
  o: Record<string, unknown>,
  socketPath: string,
  dataDir: string,
): Parameters<Daemon['run']>[0] {
  return {
    socketPath,
    dataDir,
    maxPayload: o.maxPayload as number | undefined,
    mailboxSize: o.mailboxSize as number | undefined,
    ...(o.budget ? { budgets: o.budget as Record<string, number> } : {}),
    sandbox: o.sandbox as 'auto' | 'native' | 'off',
    logLevel: o.logLevel as 'info',
    durability: o.durability as 'normal' | 'full',
    logFormat: o.logFormat as 'auto' | 'pretty' | 'json',
    ...(o.fastPath ? { fastPath: true } : {}),
    ...(o.fastPathPollUs !== undefined ? { fastPathPollUs: o.fastPathPollUs as number | 'auto' } : {}),
    ...(o.upgrade ? { upgrade: true } : {}),
    ...(o.agentsDieWithKernel ? { outliveKernel: false } : {}),
    ...(o.spareSandboxes === false ? { spareSandboxes: false } : {}),
    ...(o.mailDurability ? { mailDurability: o.mailDurability as 'process' | 'off' } : {}),
    ...(o.http ? { httpFlag: o.http as string } : {}),
    ...relayOption(o),
    ...(o.cluster || o.nats || o.node || o.advertise || o.leaseTtl || o.clusterPrefix
      ? {
          clusterFlags: {
            cluster: o.cluster as string | undefined,
            nats: o.nats as string | undefined,
            node: o.node as string | undefined,
            advertise: o.advertise as string | undefined,
            leaseTtl: o.leaseTtl as number | undefined,
            prefix: o.clusterPrefix as string | undefined,
          },
        }
      : {}),
  };
}

/** `--relay`, `--machine-id` and `--relay-token-file`: all three or none (a usage error names what is missing). */
function relayOption(o: Record<string, unknown>): {
  relay?: { url: string; machineId: string; tokenFile: string };
} {
  const given = [o.relay, o.machineId, o.relayTokenFile].filter((v) => v !== undefined).length;
  if (given === 0) return {};
  if (given < 3)
    throw new CliError(
      '--relay, --machine-id and --relay-token-file go together (docs/relay.md)',
      EXIT.USAGE,
    );
  return {
    relay: {
      url: o.relay as string,
      machineId: o.machineId as string,
      tokenFile: path.resolve(o.relayTokenFile as string),
    },
  };
}

/** An interpreter given as a path is made absolute (the kernel runs elsewhere); a bare name stays. */
function interpreter(p: string): string {
  return p.includes('/') ? path.resolve(p) : p;
}

/**
 * What `clove run` starts: a script (with `--python` for a .py), or with `--entry` the Python SDK's runner
 * serving that object, its module found in the current directory; every positional argument then goes to
 * the runner (e.g. `--once '{"q": 1}'` after `--`).
 */
function runProgram(
  script: string | undefined,
  args: string[],
  o: { entry?: string; python?: string; env: Record<string, string> },
): Pick<SpawnRequest, 'script' | 'python' | 'command' | 'args' | 'env'> {
  if (o.entry !== undefined) {
    const problem = entryProblem(o.entry);
    if (problem) throw new CliError(`--entry ${problem}`, EXIT.USAGE);
    const rest = script !== undefined ? [script, ...args] : args;
    const e = entrySpawn(o.entry, o.python ? interpreter(o.python) : defaultPython(), process.cwd(), o.env);
    return { command: e.command, env: e.env, ...(rest.length ? { args: rest } : {}) };
  }
  if (script === undefined)
    throw new CliError('clove run needs a script, or --entry module:attr', EXIT.USAGE);
  return {
    script: path.resolve(script),
    ...(o.python ? { python: interpreter(o.python) } : {}),
    args: args.length ? args : undefined,
    env: o.env,
  };
}

export function program(daemon: Daemon): Command {
  const defaults = daemon.defaults();
  const p = new Command('clove')
    .description('systemd for AI agents: run every agent as a supervised OS process')
    .version(defaults.version)
    .option('-s, --socket <path>', 'operator socket of the kernel', process.env[SOCKET_ENV] ?? DEFAULT_SOCKET)
    .option('--data-dir <dir>', `state store, logs and the agent socket (default: ${defaults.dataDir})`)
    .showHelpAfterError()
    .exitOverride();
  const g: Globals = {
    daemon,
    socket: () => p.opts().socket,
    dataDir: () => path.resolve(p.opts().dataDir ?? defaults.dataDir),
  };

  p.command('kernel')
    .description('run the kernel daemon in the foreground (logs to stderr)')
    .option('-d, --data-dir <dir>', 'same as the global --data-dir')
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
    )
    .addOption(
      new Option('--log-format <format>', 'pretty (colours) on a terminal, else JSON')
        .choices(['auto', 'pretty', 'json'])
        .default('auto'),
    )
    .option('--fast-path', 'serve connections and messages on the native reactor thread (docs/fastpath.md)')
    .option(
      '--fast-path-poll-us <us>',
      'the most microseconds the reactor polls for work before it sleeps, backing off when polls find nothing; 0: never; auto (default, or CLOVE_FAST_PATH_POLL_US): 50 where the kernel has 2 CPUs or more to run on',
      (v: string) => (v === 'auto' ? 'auto' : int(v)),
    )
    .option(
      '--upgrade',
      'take over from the kernel running on this socket: it hands its agents over and exits, this one re-adopts them (docs/restart.md)',
    )
    .addOption(
      new Option(
        '--mail-durability <mode>',
        "process: agents' queued messages are written to <data-dir>/mail.db and survive a kernel crash; off: memory only",
      )
        .choices(['process', 'off'])
        .default('process'),
    )
    .option(
      '--no-spare-sandboxes',
      'restarts spawn a new sandbox instead of releasing one made in advance (one parked clove-init and cgroup leaf less per restartable agent)',
    )
    .option(
      '--agents-die-with-kernel',
      'sandboxed agents are killed when the kernel process dies, instead of being re-adopted by the next kernel',
    )
    .option(
      '--http <host:port>',
      'serve the HTTP API, dashboard and /metrics there (token in <data-dir>/http-token; docs/http.md)',
    )
    .option('--relay <url>', 'dial this relay at start and keep a tunnel to it (docs/relay.md)')
    .option('--machine-id <id>', 'the machine name the relay token was made for (with --relay)')
    .option('--relay-token-file <file>', 'a file holding the machine token (with --relay)')
    .option('--cluster <etcd>', 'join a cluster: etcd endpoints, etcd://HOST:PORT[,…] (docs/cluster.md)')
    .option('--nats <url>', 'NATS JetStream servers of the cluster, nats://HOST:PORT[,…]')
    .option('--node <name>', 'this node in the cluster (default: the host name)')
    .option(
      '--advertise <host:port>',
      'where other nodes and operators reach this node (default: <host>:7070)',
    )
    .option('--lease-ttl <s>', "seconds until a silent node's names expire (default 10)", int)
    .option(
      '--cluster-prefix <p>',
      'etcd key and NATS subject prefix: clusters sharing servers (default clove)',
    )
    .action(async (o) => {
      const dataDir = o.dataDir ? path.resolve(o.dataDir) : g.dataDir();
      ensureDataDir(dataDir);
      process.exitCode = await daemon.run(kernelOptions(o, g.socket(), dataDir));
    });

  registerCompose(p, g);
  registerStatus(p, g);
  registerRelay(p, g, daemon.relay);
  registerTunnel(p, g);
  registerMcp(p, g);

  p.command('run')
    .description('spawn an agent: a script, or a framework object (--entry module:attr)')
    .argument(
      '[script]',
      'script or executable (.py runs with python3, .js/.mjs with node); not with --entry',
    )
    .argument('[args...]', 'arguments for the agent')
    .option(
      '--entry <module:attr>',
      'serve this object (LangGraph graph, LangChain runnable, CrewAI crew, AutoGen agent/team, callable) as the agent; the module is found in the current directory',
    )
    .option('--python <path>', 'interpreter for a .py script or --entry (e.g. a virtualenv’s bin/python)')
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
    .option('--node <node>', 'run it on this node of the cluster (a clustered kernel)')
    .option('--world <id>', 'put it in this world from its first syscall (docs/worlds.md)')
    .option('--json', 'print the reply as JSON')
    .action(async (script: string | undefined, args: string[], o) => {
      const program = runProgram(script, args, o);
      const reply = await withClient(p.opts().socket, (c) =>
        c.spawn({
          ...program,
          name: o.name,
          restart_policy: o.restart,
          max_restarts: o.maxRestarts,
          restart_window: o.restartWindow,
          watchdog_ms: o.watchdog,
          sandboxed: o.sandbox,
          network: o.network ?? false,
          ...(o.node ? { node: o.node } : {}),
          ...(o.world ? { world: o.world } : {}),
        }),
      );
      console.log(o.json ? JSON.stringify(reply) : `${reply.name} (id ${reply.id}, pid ${reply.pid})`);
    });

  p.command('kill')
    .description('stop an agent (SIGTERM, then SIGKILL after the grace period); it is not restarted')
    .argument('<agent>', 'name or id')
    .option('--grace <ms>', 'grace period before SIGKILL', int)
    .action(async (a: string, o) => {
      await withClient(p.opts().socket, (c) => c.kill(target(a), { grace_ms: o.grace }));
      console.log(`killed ${a}`);
    });

  const ctx = { socket: g.socket, dataDir: g.dataDir, defaults };
  registerLogs(p, ctx);
  registerTop(p, ctx);
  registerWorld(p, ctx);

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
      if (e.message) process.stderr.write(`clove: ${e.message}\n`);
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
