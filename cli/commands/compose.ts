/**
 * Compose-style commands over a clove.yaml (cli/compose/ loads it): up, down, scale, restart, config.
 * The kernel is the only state: a project's agents are the ones labelled `clove.project=<name>`, a
 * service's the ones also labelled `clove.service=<service>`; `<data-dir>/compose/<project>.json` only
 * remembers whether `up -d` started the kernel (so that `down` stops it again).
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pc from 'picocolors';
import picomatch from 'picomatch';
import { stringify as toYaml } from 'yaml';
import { Option, type Command } from 'commander';
import type { AgentInfo, SpawnRequest } from '../../protocol/generated.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import {
  COMPOSE_SCHEMA,
  ComposeError,
  composeLabels,
  findComposeFile,
  loadCompose,
  replicaNames,
  type Project,
  type Service,
} from '../compose/index.js';
import {
  CliError,
  EXIT,
  alive,
  ensureDataDir,
  labelsOf,
  tail,
  tryConnect,
  waitFor,
  withClient,
} from '../lib.js';
import type { Daemon } from '../main.js';
import { PlacementError, placeReplicas, type NodeLoad } from '../compose/placement.js';
import { Followed, Printer } from './logs.js';

/** What the commands need of the program: the global options, resolved at action time. */
export interface Globals {
  daemon: Daemon;
  socket(): string;
  /** --data-dir when given, else the daemon's default. */
  dataDir(): string;
}

const L = {
  project: 'clove.project',
  service: 'clove.service',
  replica: 'clove.replica',
  hash: 'clove.config-hash',
} as const;

/** States in which an agent will not run again by itself. */
const DEAD = new Set(['STOPPED', 'FAILED']);

/** Reads clove.yaml: -f, else the one found from the cwd, else the bundled example (`npm start`). */
export async function loadProject(
  file: string | undefined,
  installDir: string,
  quiet = false,
): Promise<Project> {
  let f = file;
  if (!f) {
    f = findComposeFile(process.cwd()) ?? undefined;
    if (!f) {
      const example = path.join(installDir, 'examples', 'swarm', 'clove.yaml');
      if (!fs.existsSync(example))
        throw new CliError(`no clove.yaml in ${process.cwd()} (use -f FILE)`, EXIT.COMPOSE_INVALID);
      f = example;
      if (!quiet) process.stderr.write(`clove: no clove.yaml here, using the example ${example}\n`);
    }
  }
  try {
    const p = loadCompose(path.resolve(f));
    if (!quiet) for (const w of p.warnings) process.stderr.write(`clove: warning: ${w}\n`);
    return p;
  } catch (e) {
    if (e instanceof ComposeError) throw new CliError(e.message, EXIT.COMPOSE_INVALID);
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw new CliError(`cannot read ${f}: no such file`, EXIT.COMPOSE_INVALID);
    throw e;
  }
}

/** The project's agents, from LIST. */
export function projectAgents(agents: AgentInfo[], project: string, service?: string): AgentInfo[] {
  return agents.filter((a) => {
    const l = labelsOf(a);
    return l[L.project] === project && (service === undefined || l[L.service] === service);
  });
}

function replicaIndex(a: AgentInfo): number {
  return Number(labelsOf(a)[L.replica] ?? 1);
}

/** The selected services plus everything they depend on, in the project's start order. */
function withDependencies(p: Project, names: string[]): Service[] {
  if (!names.length) return p.services;
  const byName = new Map(p.services.map((s) => [s.name, s]));
  const want = new Set<string>();
  const add = (n: string) => {
    const s = byName.get(n);
    if (!s) throw new CliError(`no such service in ${p.file}: ${n}`, EXIT.USAGE);
    if (want.has(n)) return;
    want.add(n);
    for (const d of s.dependsOn) add(d.service);
  };
  names.forEach(add);
  return p.services.filter((s) => want.has(s.name));
}

/**
 * Every agent the project may have: on a clustered kernel every node's (LIST `all_nodes`, each with its
 * `node`); a kernel without --cluster lists its own.
 */
function listAll(c: CloveClient): Promise<AgentInfo[]> {
  return c.list({ all_nodes: true });
}

/** The cluster as `up` and `scale` place replicas on it: null for a kernel without --cluster. */
async function clusterNodes(c: CloveClient): Promise<NodeLoad[] | null> {
  try {
    const r = await c.clusterNodes();
    return r.clustered ? r.nodes : null;
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'unknown_opcode' || code === 'not_supported') return null;
    throw e;
  }
}

/**
 * The nodes of `count` new replicas of `s` (null entries: a kernel without --cluster, which places
 * nothing; `placement:` then only earns a warning). `running` are the replicas it keeps.
 */
function placeNew(
  nodes: NodeLoad[] | null,
  s: Service,
  running: AgentInfo[],
  count: number,
): (string | null)[] {
  if (!nodes) {
    if (s.placement)
      process.stderr.write(`clove: warning: the kernel is not clustered: placement of ${s.name} ignored\n`);
    return new Array<string | null>(count).fill(null);
  }
  const have = new Map<string, number>();
  for (const a of running) if (a.node) have.set(a.node, (have.get(a.node) ?? 0) + 1);
  try {
    return placeReplicas(nodes, have, s.placement, count, s.name);
  } catch (e) {
    if (e instanceof PlacementError) throw new CliError(e.message, EXIT.START_FAILED);
    throw e;
  }
}

/** A replica running where `placement.nodes` no longer allows it: `up` moves it (recreates it). */
function misplaced(s: Service, a: AgentInfo, clustered: boolean): boolean {
  return clustered && !!s.placement?.nodes && !!a.node && !s.placement.nodes.includes(a.node);
}

/** The state file that remembers whether `up` started the kernel. */
interface ProjectState {
  project: string;
  file: string;
  socket: string;
  kernel: { pid: number; started_by_up: true; log: string } | null;
}

function stateFile(dataDir: string, project: string): string {
  return path.join(dataDir, 'compose', `${project}.json`);
}

function readState(dataDir: string, project: string): ProjectState | null {
  try {
    return JSON.parse(fs.readFileSync(stateFile(dataDir, project), 'utf8')) as ProjectState;
  } catch {
    return null;
  }
}

function writeState(dataDir: string, s: ProjectState): void {
  fs.mkdirSync(path.join(dataDir, 'compose'), { recursive: true, mode: 0o700 });
  fs.writeFileSync(stateFile(dataDir, s.project), JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
}

/** Is `pid` still the kernel `up` started (and not a reused pid)? */
function isOurKernel(pid: number): boolean {
  try {
    return alive(pid) && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('clove.js');
  } catch {
    return false;
  }
}

/**
 * `up -d` without a kernel: one in the background, in its own session (it outlives this shell), JSON
 * logs to <data-dir>/kernel.log. Resolves once it accepts connections.
 */
async function startBackgroundKernel(
  g: Globals,
  installDir: string,
  o: { sandbox: string; logLevel: string },
): Promise<{ pid: number; log: string }> {
  const dataDir = g.dataDir();
  ensureDataDir(dataDir);
  const log = path.join(dataDir, 'kernel.log');
  const fd = fs.openSync(log, 'a', 0o600);
  const child = spawn(
    process.execPath,
    [
      path.join(installDir, 'bin', 'clove.js'),
      '--socket',
      g.socket(),
      '--data-dir',
      dataDir,
      'kernel',
      '--log-format',
      'json',
      '--sandbox',
      o.sandbox,
      '--log-level',
      o.logLevel,
    ],
    { detached: true, stdio: ['ignore', fd, fd] },
  );
  fs.closeSync(fd);
  let exitCode: number | null = null;
  child.once('exit', (code) => (exitCode = code ?? 1));
  child.unref();
  try {
    const c = await waitFor(
      async () => {
        if (exitCode !== null) throw new Error('exited');
        return tryConnect(g.socket());
      },
      60_000,
      `the kernel on ${g.socket()}`,
    );
    c.close();
  } catch {
    if (exitCode === null && child.pid) process.kill(child.pid, 'SIGKILL');
    throw new CliError(
      `the kernel did not start (see ${log}):\n${tail(log, 10)}`,
      exitCode !== null && exitCode > 0 ? exitCode : EXIT.START_FAILED,
    );
  }
  return { pid: child.pid!, log };
}

/** Is this agent healthy: its healthcheck passes, or (without one) its current process said HELLO (LIST `ready`)? */
async function healthy(s: Service, a: AgentInfo, socket: string): Promise<boolean> {
  if (a.state !== 'RUNNING') return false;
  if (!s.healthcheck) return a.ready;
  const [cmd, ...args] = s.healthcheck.command;
  return new Promise((resolve) =>
    execFile(
      cmd,
      args,
      {
        timeout: s.healthcheck!.timeout_ms,
        env: { ...process.env, CLOVE_SOCKET: socket, CLOVE_AGENT: a.name, CLOVE_SERVICE: s.name },
      },
      (err) => resolve(!err),
    ),
  );
}

/** An agent counts as started once RUNNING and it said HELLO or stayed up MIN_UP_MS (not a crash at start). */
const MIN_UP_MS = 2000;
function started(a: AgentInfo): boolean {
  return a.state === 'RUNNING' && (a.ready || a.uptime_ms >= MIN_UP_MS);
}

/** An agent that cannot start: exit 9 with its last log lines. */
function startFailure(a: AgentInfo, why: string): CliError {
  const lines = tail(a.log_file, 15);
  return new CliError(
    `${a.name} ${why} (state ${a.state}${a.exit_code !== null ? `, exit code ${a.exit_code}` : ''}${
      a.exit_signal ? `, ${a.exit_signal}` : ''
    })${lines ? `; its last log lines:\n${lines}` : ''}`,
    EXIT.START_FAILED,
  );
}

/**
 * Waits until every replica of `s` is RUNNING (`started`) or healthy (`healthy`); a replica that
 * failed, or the timeout, is exit 9. A healthcheck that fails `retries` times in a row fails too.
 */
async function waitService(
  c: CloveClient,
  p: Project,
  s: Service,
  condition: 'started' | 'healthy',
  socket: string,
  timeoutMs: number,
): Promise<void> {
  const want = replicaNames(s, s.replicas);
  const fails = new Map<string, number>();
  const end = Date.now() + timeoutMs;
  const logs = path.join((await c.hello()).data_dir ?? '', 'logs');
  const finished = new Set<string>();
  for (;;) {
    const agents = projectAgents(await listAll(c), p.name, s.name).filter((a) => want.includes(a.name));
    for (const a of agents) if (DEAD.has(a.state)) throw startFailure(a, 'did not start');
    // Gone from LIST: it exited and is not restarted. Exit code 0 is a finished job; anything else failed.
    for (const name of want) {
      if (agents.some((a) => a.name === name) || finished.has(name)) continue;
      const log = path.join(logs, `${name}.log`);
      const code = /agent exited: exit code (\d+)[^\n]*\n?$/.exec(tail(log, 3))?.[1];
      if (code === '0' && condition === 'started') {
        finished.add(name);
        continue;
      }
      const lines = tail(log, 15);
      throw new CliError(
        `${name} exited${code ? ` with code ${code}` : ''} and is not restarted${
          lines ? `; its last log lines:\n${lines}` : ''
        }`,
        EXIT.START_FAILED,
      );
    }
    let ok = agents.length + finished.size === want.length && agents.every(started);
    if (ok && condition === 'healthy') {
      for (const a of agents) {
        if (await healthy(s, a, socket)) {
          fails.set(a.name, 0);
          continue;
        }
        ok = false;
        if (s.healthcheck) {
          const n = (fails.get(a.name) ?? 0) + 1;
          fails.set(a.name, n);
          if (n > s.healthcheck.retries) throw startFailure(a, 'failed its healthcheck');
        }
      }
    }
    if (ok) return;
    if (Date.now() > end) {
      const bad = agents.find((a) => a.state !== 'RUNNING') ?? agents[0];
      if (bad) throw startFailure(bad, `is not ${condition} after ${timeoutMs / 1000} s`);
      throw new CliError(`${s.name}: no replica is running after ${timeoutMs / 1000} s`, EXIT.START_FAILED);
    }
    await new Promise((r) =>
      setTimeout(r, s.healthcheck && condition === 'healthy' ? s.healthcheck.interval_ms : 250),
    );
  }
}

async function killAll(c: CloveClient, agents: AgentInfo[], graceMs?: number): Promise<void> {
  await Promise.all(
    agents.map((a) =>
      c.kill(a.id, { wait: true, ...(graceMs !== undefined ? { grace_ms: graceMs } : {}) }).catch((e) => {
        // Gone meanwhile (e.g. it exited and was not restarted): that is what we wanted.
        if ((e as { code?: string }).code !== 'not_found') throw e;
      }),
    ),
  );
}

/** SET_QUOTA (0x92) for a whole service; a kernel without the quotas family gets a warning, not a failure. */
async function setServiceQuotas(c: CloveClient, p: Project, s: Service): Promise<void> {
  if (!s.serviceQuotas) return;
  try {
    await c.setQuota({ service: { project: p.name, service: s.name }, quotas: s.serviceQuotas });
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'unknown_opcode' || code === 'not_supported')
      process.stderr.write(
        `clove: warning: this kernel has no quotas; service_quotas of ${s.name} ignored\n`,
      );
    else throw e;
  }
}

/**
 * Makes the kernel run what the file says, changing only what differs: for each service in start order,
 * wait for its dependencies, recreate replicas whose config hash changed, scale to `replicas`.
 */
export async function applyProject(
  c: CloveClient,
  p: Project,
  opts: {
    services: string[];
    removeOrphans: boolean;
    socket: string;
    timeoutMs: number;
    out: (s: string) => void;
  },
): Promise<void> {
  const agents = projectAgents(await listAll(c), p.name);
  const known = new Set(p.services.map((s) => s.name));
  const orphans = agents.filter((a) => !known.has(labelsOf(a)[L.service]));
  if (orphans.length && opts.removeOrphans) {
    await killAll(c, orphans);
    opts.out(`removed orphans: ${orphans.map((a) => a.name).join(', ')}`);
  } else if (orphans.length) {
    process.stderr.write(
      `clove: warning: agents of services no longer in ${p.file}: ${orphans
        .map((a) => a.name)
        .join(', ')} (remove them with --remove-orphans)\n`,
    );
  }
  const byName = new Map(p.services.map((s) => [s.name, s]));
  const nodes = await clusterNodes(c);
  for (const s of withDependencies(p, opts.services)) {
    for (const d of s.dependsOn) {
      await waitService(c, p, byName.get(d.service)!, d.condition, opts.socket, opts.timeoutMs);
    }
    const mine = projectAgents(await listAll(c), p.name, s.name);
    const want = replicaNames(s, s.replicas);
    const stale = mine.filter(
      (a) =>
        !want.includes(a.name) ||
        labelsOf(a)[L.hash] !== s.hash ||
        DEAD.has(a.state) ||
        misplaced(s, a, nodes !== null),
    );
    if (stale.length)
      await killAll(
        c,
        stale.sort((x, y) => replicaIndex(y) - replicaIndex(x)),
      );
    const keep = new Set(mine.filter((a) => !stale.includes(a)).map((a) => a.name));
    const recreated = new Set(stale.map((a) => a.name));
    for (const a of mine) if (keep.has(a.name)) opts.out(`${a.name} is up to date`);
    const missing = want.flatMap((n, i) => (keep.has(n) ? [] : [i]));
    const where = placeNew(
      nodes,
      s,
      mine.filter((a) => keep.has(a.name)),
      missing.length,
    );
    for (const [k, i] of missing.entries()) {
      const labels = composeLabels(p, s, s.replicated ? i + 1 : undefined);
      const node = where[k];
      const r = await c.spawn({
        ...s.spawn,
        name: want[i],
        labels,
        ...(node ? { node } : {}),
      } as SpawnRequest);
      opts.out(
        `${recreated.has(want[i]) ? 'recreated' : 'started'} ${want[i]}${node ? ` on ${node}` : ''} (id ${r.id}, pid ${r.pid})`,
      );
    }
    await setServiceQuotas(c, p, s);
  }
}

/** `up`'s end with -d: every selected agent RUNNING, and healthy where a healthcheck or a dependant asks. */
async function waitProject(
  c: CloveClient,
  p: Project,
  services: Service[],
  socket: string,
  timeoutMs: number,
) {
  const healthyAsked = new Set(
    p.services.flatMap((s) => s.dependsOn.filter((d) => d.condition === 'healthy').map((d) => d.service)),
  );
  for (const s of services) {
    await waitService(
      c,
      p,
      s,
      s.healthcheck || healthyAsked.has(s.name) ? 'healthy' : 'started',
      socket,
      timeoutMs,
    );
  }
}

/** Where each of the project's agents' log files ends now: following starts there. */
export async function logEnds(c: CloveClient, project: string): Promise<Map<string, number>> {
  const ends = new Map<string, number>();
  for (const a of projectAgents(await c.list(), project)) {
    try {
      if (a.log_file) ends.set(a.log_file, fs.statSync(a.log_file).size);
    } catch {
      // no log yet: it is followed from its start
    }
  }
  return ends;
}

/**
 * Prints the project's agents' log lines as `name | line` (clove logs' printer: stable colours on a
 * terminal) until `signal` aborts: files in `from` from that offset, new ones (agents started or
 * recreated meanwhile) from their start; each file followed like `clove logs -f` does (rotation, partial
 * lines). Polls LIST every second for new agents, the files every 200 ms.
 */
export async function followProject(
  c: CloveClient,
  project: string,
  signal: AbortSignal,
  from: Map<string, number>,
): Promise<void> {
  const printer = new Printer({
    prefix: true,
    timestamps: false,
    color: pc.isColorSupported && Boolean(process.stdout.isTTY),
  });
  const followed = new Map<string, Followed>();
  let listedAt = 0;
  while (!signal.aborted) {
    if (Date.now() - listedAt >= 1000) {
      listedAt = Date.now();
      let agents: AgentInfo[];
      try {
        agents = projectAgents(await c.list(), project);
      } catch {
        return; // the kernel went away
      }
      for (const a of agents) {
        if (!a.log_file || followed.has(a.log_file)) continue;
        printer.widen([a.name]);
        followed.set(a.log_file, new Followed({ name: a.name, file: a.log_file }, from.get(a.log_file) ?? 0));
      }
    }
    for (const f of followed.values()) printer.lines(f.src.name, f.poll());
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const f of followed.values()) printer.lines(f.src.name, [...f.poll(), ...f.flush()]);
}

/** Until SIGINT or SIGTERM (or `stop()`). */
function untilSignal(): { signal: AbortSignal; done: Promise<void>; stop: () => void } {
  const ac = new AbortController();
  let stop = () => {};
  const done = new Promise<void>((resolve) => {
    stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      ac.abort();
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  return { signal: ac.signal, done, stop };
}

/** SIGTERM, wait up to `timeoutMs`, then SIGKILL; resolves once the process is gone. */
async function stopProcess(pid: number, timeoutMs: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  try {
    await waitFor(async () => !alive(pid), timeoutMs, `process ${pid} to exit`, 100);
  } catch {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    await waitFor(async () => !alive(pid), 10_000, `process ${pid} to die`, 100);
  }
}

export function registerCompose(p: Command, g: Globals): void {
  const installDir = g.daemon.defaults().installDir;
  const say = (s: string): void => void process.stdout.write(`${s}\n`);

  p.command('up')
    .description('start (or update) the project in clove.yaml: a kernel if none runs, then its services')
    .argument('[services...]', 'only these services (and what they depend on)')
    .option('-d, --detach', 'start in the background and return once every agent runs')
    .option('-f, --file <file>', 'the compose file (default: clove.yaml found from the cwd)')
    .option('--remove-orphans', 'kill agents of services that are no longer in the file')
    .option('--wait-timeout <s>', 'how long an agent may take to run / become healthy', Number, 120)
    .addOption(
      new Option('--sandbox <mode>', 'agent isolation of a kernel started by up')
        .choices(['auto', 'native', 'off'])
        .default('auto'),
    )
    .addOption(
      new Option('--log-level <level>', 'log level of a kernel started by up')
        .choices(['debug', 'info', 'warn', 'error', 'silent'])
        .default('info'),
    )
    .addOption(
      new Option('--log-format <format>', 'kernel log format (foreground kernel)')
        .choices(['auto', 'pretty', 'json'])
        .default('auto'),
    )
    .action(async (services: string[], o) => {
      const project = await loadProject(o.file, installDir);
      process.stderr.write(`clove: using ${project.file} (project ${project.name})\n`);
      const selected = withDependencies(project, services);
      const timeoutMs = o.waitTimeout * 1000;
      const socket = g.socket();
      const apply = async (c: CloveClient) => {
        await applyProject(c, project, {
          services,
          removeOrphans: !!o.removeOrphans,
          socket,
          timeoutMs,
          out: say,
        });
      };
      let c = await tryConnect(socket);
      if (!c && !o.detach) {
        // The kernel runs in this process; Ctrl-C / SIGTERM stop it and with it every agent.
        process.stderr.write(`clove: starting a kernel on ${socket}\n`);
        ensureDataDir(g.dataDir());
        let failure: CliError | null = null;
        const code = await g.daemon.run(
          {
            socketPath: socket,
            dataDir: g.dataDir(),
            sandbox: o.sandbox,
            logLevel: o.logLevel,
            logFormat: o.logFormat,
            durability: 'normal',
          },
          async (k) => {
            const client = await tryConnect(k.socketPath);
            const follower = await tryConnect(k.socketPath);
            if (!client || !follower) return;
            const stopFollowing = new AbortController();
            void followProject(
              follower,
              project.name,
              stopFollowing.signal,
              await logEnds(client, project.name),
            ).finally(() => follower.close());
            try {
              await apply(client);
              await waitProject(client, project, selected, socket, timeoutMs);
              k.log(`project ${project.name} is up: Ctrl-C stops it`, { file: project.file });
            } catch (e) {
              failure = e instanceof CliError ? e : new CliError((e as Error).message, EXIT.REFUSED);
              process.stderr.write(`clove: ${failure.message}\n`);
              stopFollowing.abort();
              process.kill(process.pid, 'SIGTERM');
            } finally {
              client.close();
            }
          },
        );
        process.exitCode = failure ? (failure as CliError).exitCode : code;
        return;
      }
      let started: { pid: number; log: string } | null = null;
      if (!c) {
        started = await startBackgroundKernel(g, installDir, o);
        c = (await tryConnect(socket))!;
      }
      try {
        const dataDir = (await c.hello()).data_dir ?? g.dataDir();
        const prev = readState(dataDir, project.name);
        writeState(dataDir, {
          project: project.name,
          file: project.file,
          socket,
          kernel: started
            ? { pid: started.pid, started_by_up: true, log: started.log }
            : prev?.kernel && isOurKernel(prev.kernel.pid)
              ? prev.kernel
              : null,
        });
        if (started) say(`started a kernel on ${socket} (pid ${started.pid}, log ${started.log})`);
        if (o.detach) {
          await apply(c);
          await waitProject(c, project, selected, socket, timeoutMs);
          say(`project ${project.name} is up`);
          return;
        }
        // A kernel already ran: follow the logs; Ctrl-C stops this project's agents, not the kernel.
        const { signal, done, stop } = untilSignal();
        const following = followProject(c, project.name, signal, await logEnds(c, project.name));
        try {
          await apply(c);
          await waitProject(c, project, selected, socket, timeoutMs);
          say(`project ${project.name} is up: Ctrl-C stops it`);
          await done;
        } finally {
          stop();
          await following;
          await killAll(c, projectAgents(await listAll(c), project.name));
          say(`stopped project ${project.name}`);
        }
      } finally {
        c.close();
      }
    });

  p.command('down')
    .description("stop the project's agents, and the kernel when `up -d` started it and nothing else runs")
    .option('-f, --file <file>', 'the compose file (default: clove.yaml found from the cwd)')
    .option('-t, --timeout <s>', 'grace period before SIGKILL, in seconds', Number, 10)
    .action(async (o) => {
      const project = await loadProject(o.file, installDir, true);
      const graceMs = o.timeout * 1000;
      const c = await tryConnect(g.socket());
      let dataDir = g.dataDir();
      let othersRemain = false;
      if (c) {
        try {
          dataDir = (await c.hello()).data_dir ?? dataDir;
          const mine = projectAgents(await listAll(c), project.name);
          const order = project.services.map((s) => s.name);
          // Reverse start order: dependants first; orphans (not in the file) before everything.
          const rank = (a: AgentInfo) => order.indexOf(labelsOf(a)[L.service]);
          const groups = new Map<number, AgentInfo[]>();
          for (const a of mine) groups.set(rank(a), [...(groups.get(rank(a)) ?? []), a]);
          // Orphans (rank -1) first, then the highest rank (started last) down to the first.
          const ranks = [...groups.keys()].sort((x, y) => (x === -1 ? -1 : y === -1 ? 1 : y - x));
          for (const r of ranks) await killAll(c, groups.get(r)!, graceMs);
          if (mine.length) say(`stopped ${mine.map((a) => a.name).join(', ')}`);
          othersRemain = (await c.list()).some((a) => !DEAD.has(a.state));
        } finally {
          c.close();
        }
      }
      const st = readState(dataDir, project.name);
      if (st?.kernel?.started_by_up) {
        if (othersRemain) {
          say(`the kernel keeps running: other agents remain (it was started by up for ${project.name})`);
          return;
        }
        if (isOurKernel(st.kernel.pid)) {
          await stopProcess(st.kernel.pid, graceMs + 15_000);
          say(`stopped the kernel (pid ${st.kernel.pid})`);
        }
      }
      fs.rmSync(stateFile(dataDir, project.name), { force: true });
    });

  p.command('scale')
    .description('set the number of replicas of replicated services, live')
    .argument('<service=n...>', 'e.g. workers=5')
    .option('-f, --file <file>', 'the compose file (default: clove.yaml found from the cwd)')
    .action(async (pairs: string[], o) => {
      const project = await loadProject(o.file, installDir, true);
      const wanted = pairs.map((pair) => {
        const m = /^([^=]+)=(\d+)$/.exec(pair);
        if (!m) throw new CliError(`expected SERVICE=N, got ${pair}`, EXIT.USAGE);
        const s = project.services.find((x) => x.name === m[1]);
        if (!s) throw new CliError(`no such service in ${project.file}: ${m[1]}`, EXIT.USAGE);
        if (!s.replicated)
          throw new CliError(
            `${s.name} is not replicated (give it \`replicas:\` in ${project.file})`,
            EXIT.USAGE,
          );
        return { s, n: Number(m[2]) };
      });
      await withClient(g.socket(), async (c) => {
        const nodes = await clusterNodes(c);
        for (const { s, n } of wanted) {
          const mine = projectAgents(await listAll(c), project.name, s.name);
          const want = replicaNames(s, n);
          // Newest (highest index) first.
          const extra = mine
            .filter((a) => !want.includes(a.name))
            .sort((x, y) => replicaIndex(y) - replicaIndex(x));
          for (const a of extra) await killAll(c, [a]);
          const have = new Set(mine.map((a) => a.name));
          const missing = want.flatMap((n, i) => (have.has(n) ? [] : [i]));
          const where = placeNew(
            nodes,
            s,
            mine.filter((a) => want.includes(a.name)),
            missing.length,
          );
          for (const [k, i] of missing.entries()) {
            const node = where[k];
            const r = await c.spawn({
              ...s.spawn,
              name: want[i],
              labels: composeLabels(project, s, i + 1),
              ...(node ? { node } : {}),
            } as SpawnRequest);
            say(`started ${want[i]}${node ? ` on ${node}` : ''} (id ${r.id}, pid ${r.pid})`);
          }
          if (extra.length) say(`stopped ${extra.map((a) => a.name).join(', ')}`);
          say(`${s.name}: ${n} replicas`);
        }
      });
    });

  p.command('restart')
    .description('restart agents by name, service or glob (RESTART: same id, new process)')
    .argument('<targets...>', 'agent name or id, service name, or glob such as "workers-*"')
    .action(async (targets: string[]) => {
      await withClient(g.socket(), async (c) => {
        const agents = await listAll(c);
        const chosen = new Map<number, AgentInfo>();
        for (const t of targets) {
          const isGlob = picomatch.scan(t).isGlob;
          const match = isGlob ? picomatch(t) : null;
          const hits = agents.filter(
            (a) =>
              a.name === t ||
              String(a.id) === t ||
              labelsOf(a)[L.service] === t ||
              (match !== null && match(a.name)),
          );
          if (!hits.length) throw new CliError(`no such agent or service: ${t}`, EXIT.NOT_FOUND);
          for (const a of hits) chosen.set(a.id, a);
        }
        for (const a of chosen.values()) {
          const r = await c.restart(a.id);
          say(`restarted ${a.name} (id ${r.agent_id}, pid ${r.pid})`);
        }
      });
    });

  p.command('config')
    .description('validate clove.yaml and print the normalized project')
    .option('-f, --file <file>', 'the compose file (default: clove.yaml found from the cwd)')
    .option('--schema', "print the file's JSON Schema")
    .option('--json', 'print JSON instead of YAML')
    .option('-q, --quiet', 'only validate (exit code)')
    .action(async (o) => {
      if (o.schema) return say(JSON.stringify(COMPOSE_SCHEMA, null, 2));
      const project = await loadProject(o.file, installDir, o.quiet);
      if (o.quiet) return;
      const view = normalized(project);
      say(o.json ? JSON.stringify(view, null, 2) : toYaml(view));
    });
}

/**
 * What `clove config` prints: the project as the kernel will be asked to run it — each service's SPAWN
 * request (wire names and units), its agents' names, and the rest in clove.yaml's own words.
 */
function normalized(p: Project): Record<string, unknown> {
  return {
    name: p.name,
    file: p.file,
    services: Object.fromEntries(
      p.services.map((s) => [
        s.name,
        {
          replicas: s.replicas,
          agents: replicaNames(s),
          spawn: s.spawn,
          ...(s.serviceQuotas ? { service_quotas: s.serviceQuotas } : {}),
          ...(s.dependsOn.length
            ? {
                depends_on: Object.fromEntries(
                  s.dependsOn.map((d) => [d.service, { condition: d.condition }]),
                ),
              }
            : {}),
          ...(s.healthcheck ? { healthcheck: s.healthcheck } : {}),
          config_hash: s.hash,
        },
      ]),
    ),
  };
}
