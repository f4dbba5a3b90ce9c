/**
 * Cluster providers: start N Clove kernels ("nodes") beside real etcd and NATS JetStream, hand each one
 * its own loopback address (127.0.0.x), and inject node-level faults — kill, pause, restart a node,
 * partition two nodes, isolate a node from the cluster's services — always undone by stop().
 *
 * Two implementations share this file's driver loop: processes.ts (each node a `clove kernel` child
 * process: quick) and docker.ts (each node a container on host networking, through dockerode).
 *
 * Network faults are iptables rules (so they need root), each tagged with a comment naming the owning
 * test process (`clove.harness:<pid>:<cluster>`): stop() deletes its own, and every start first sweeps
 * rules whose owner process is gone (a run that crashed before its stop()).
 *
 * How a node reaches etcd and NATS: both run on 127.0.0.1, and each node is given URLs on its OWN
 * address (`http://127.0.0.2:<etcd port>`), which a DNAT rule in the nat table's OUTPUT chain sends to
 * 127.0.0.1. So every connection a node makes to the services carries the node's address as its original
 * destination, and isolate(node) can cut exactly that node off (conntrack --ctorigdst), even though on
 * loopback every connection's source address is 127.0.0.1.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { parse as shellParse } from 'shell-quote';
import { CloveClient, type ClientOptions } from '../../sdk/typescript/client.js';
import { startEtcd, startNats, which, type ServiceProcess } from '../services.js';

const run = promisify(execFile);

/** What the caller gives for one node. */
export interface NodeSpec {
  /** Node name (also the container's label). */
  name: string;
  /** Its loopback address, `127.0.0.x` (x ≥ 2: 127.0.0.1 is the services'). */
  address: string;
  /**
   * `clove kernel` arguments after `--data-dir` (e.g. `--cluster …`), or a function of the node's
   * context (the services' URLs are known only once they run).
   */
  kernelArgs?: string[] | ((ctx: NodeContext) => string[]);
}

/** What a node's kernel arguments may depend on. */
export interface NodeContext {
  name: string;
  address: string;
  /** etcd as this node reaches it (`http://<address>:<port>` when the DNAT is in place, else 127.0.0.1). */
  etcdUrl: string;
  /** NATS as this node reaches it. */
  natsUrl: string;
  /** The node's directory (socket, data dir); visible at the same path on the host and in a container. */
  dir: string;
}

/**
 * The kernel arguments of a cluster node (issue 13: `--cluster etcd://H:P --nats nats://H:P --node NAME
 * --advertise HOST:PORT`) from its context, followed by `extra`; the advertised port defaults to 7070.
 */
export function clusterKernelArgs(ctx: NodeContext, extra: string[] = [], port = 7070): string[] {
  return [
    '--cluster',
    ctx.etcdUrl.replace(/^http:/, 'etcd:'),
    '--nats',
    ctx.natsUrl,
    '--node',
    ctx.name,
    '--advertise',
    `${ctx.address}:${port}`,
    ...extra,
  ];
}

export interface ClusterStartOptions {
  nodes: NodeSpec[];
  /** etcd: started here (default), `false` for none, or the URL of one the caller runs (on 127.0.0.1). */
  etcd?: boolean | string;
  /** NATS with JetStream: likewise. */
  nats?: boolean | string;
  /** Milliseconds a node's kernel may take to listen (default 60 s: a cold container on a busy machine). */
  startTimeoutMs?: number;
}

export interface NodeHandle {
  readonly name: string;
  readonly address: string;
  /** The node's directory: socket, data dir; scripts put here are visible to its kernel at the same path. */
  readonly dir: string;
  /** The kernel's operator socket, reachable from the host. */
  readonly socketPath: string;
  readonly dataDir: string;
  readonly context: NodeContext;
  /** An operator client on the node's socket (closed by stop()). */
  client(opts?: ClientOptions): Promise<CloveClient>;
  /** SIGKILL: the kernel (and, through PDEATHSIG or the container, its agents) die at once. */
  kill(): Promise<void>;
  /** Freezes the node (a hung machine): its socket accepts nothing answered until resume(). */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Starts the node again on the same data dir (after kill(), or stopping it first when it runs). */
  restart(): Promise<void>;
  /** The kernel's stdout and stderr so far (every run of it). */
  logs(): Promise<string>;
}

export interface ClusterHandle {
  readonly nodes: NodeHandle[];
  /** The services as the host reaches them (127.0.0.1). */
  readonly etcdUrl: string | null;
  readonly natsUrl: string | null;
  /**
   * A directory every node sees at the same path (bind-mounted into each container): put the scripts of
   * agents that must be able to start on any node (a node's own `dir` is visible to it alone).
   */
  readonly sharedDir: string;
  /** The services the cluster started itself (restart() for an outage; null when the caller gave a URL or none). */
  readonly etcd: ServiceProcess | null;
  readonly nats: ServiceProcess | null;
  node(name: string): NodeHandle;
  /** Drops every packet between two nodes (handles, names or addresses), both ways (iptables INPUT DROP). */
  partition(a: NodeHandle | string, b: NodeHandle | string): Promise<void>;
  heal(a: NodeHandle | string, b: NodeHandle | string): Promise<void>;
  /** Cuts a node off from etcd, NATS and every other address (its lease expires, its mail stops). */
  isolate(node: NodeHandle | string): Promise<void>;
  rejoin(node: NodeHandle | string): Promise<void>;
  /** Stops every node, removes every rule, container and directory, stops the services it started. Idempotent. */
  stop(): Promise<void>;
  /** The comment on this cluster's iptables rules (null without iptables). */
  readonly ruleTag: string | null;
}

export interface ClusterProvider {
  readonly kind: 'processes' | 'docker';
  start(opts: ClusterStartOptions): Promise<ClusterHandle>;
}

// ---------------------------------------------------------------------------------------------
// iptables

/** Comment prefix of every rule the harness adds. */
export const RULE_TAG = 'clove.harness';

/** Whether this process can write iptables rules (root and an iptables binary). */
export function canUseIptables(): boolean {
  return process.getuid?.() === 0 && which('iptables') !== null;
}

async function iptables(args: string[]): Promise<string> {
  try {
    // -w: wait for the xtables lock (several test files may add rules at once).
    const { stdout } = await run(which('iptables') ?? 'iptables', ['-w', ...args]);
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`iptables ${args.join(' ')} failed: ${(err.stderr ?? err.message).trim()}`, { cause: e });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The iptables rules of one cluster: added with its tag, deleted one by one or all at stop(). */
export class Firewall {
  private readonly rules: Array<{ table: string; chain: string; spec: string[] }> = [];

  constructor(readonly tag: string) {}

  async add(table: string, chain: string, spec: string[]): Promise<void> {
    const full = [...spec, '-m', 'comment', '--comment', this.tag];
    await iptables(['-t', table, '-I', chain, ...full]);
    this.rules.push({ table, chain, spec: full });
  }

  /** Deletes the rules `spec` names (as added); true when there was one. */
  async remove(table: string, chain: string, spec: string[]): Promise<boolean> {
    const full = [...spec, '-m', 'comment', '--comment', this.tag];
    const key = JSON.stringify([table, chain, full]);
    const i = this.rules.findIndex((r) => JSON.stringify([r.table, r.chain, r.spec]) === key);
    if (i < 0) return false;
    await iptables(['-t', table, '-D', chain, ...full]);
    this.rules.splice(i, 1);
    return true;
  }

  has(table: string, chain: string, spec: string[]): boolean {
    const key = JSON.stringify([table, chain, [...spec, '-m', 'comment', '--comment', this.tag]]);
    return this.rules.some((r) => JSON.stringify([r.table, r.chain, r.spec]) === key);
  }

  /** Deletes every rule of this cluster; the first failure is thrown after trying them all. */
  async clear(): Promise<void> {
    let first: unknown;
    for (const r of this.rules.splice(0).reverse()) {
      await iptables(['-t', r.table, '-D', r.chain, ...r.spec]).catch((e: unknown) => (first ??= e));
    }
    if (first) throw first;
  }
}

/** Every harness rule now in the filter and nat tables, as `-A CHAIN …` argument lists. */
export async function harnessRules(): Promise<Array<{ table: string; args: string[] }>> {
  const out: Array<{ table: string; args: string[] }> = [];
  for (const table of ['filter', 'nat']) {
    const text = await iptables(['-t', table, '-S']);
    for (const line of text.split('\n')) {
      if (!line.startsWith('-A ') || !line.includes(RULE_TAG)) continue;
      out.push({ table, args: shellParse(line).map(String) });
    }
  }
  return out;
}

/** Deletes harness rules whose owner process (`clove.harness:<pid>:…`) is gone. */
export async function sweepRules(): Promise<number> {
  if (!canUseIptables()) return 0;
  let n = 0;
  for (const r of await harnessRules()) {
    const comment = r.args[r.args.indexOf('--comment') + 1] ?? '';
    const pid = Number(comment.split(':')[1]);
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) continue;
    await iptables(['-t', r.table, '-D', ...r.args.slice(1)]).catch(() => undefined);
    n++;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// The shared driver loop

/** One node's life, as a provider implements it. */
export interface NodeDriver {
  start(): Promise<void>;
  kill(): Promise<void>;
  pause(): Promise<void>;
  resume(): Promise<void>;
  restart(): Promise<void>;
  logs(): Promise<string>;
  /** Stops the node for good and frees what the driver holds (a container); the directory is the loop's. */
  destroy(): Promise<void>;
}

export interface DriverSpec {
  name: string;
  address: string;
  dir: string;
  /** The cluster's shared directory (ClusterHandle.sharedDir). */
  sharedDir: string;
  socketPath: string;
  dataDir: string;
  kernelArgs: string[];
  startTimeoutMs: number;
}

const ADDRESS = /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/**
 * Starts the services, the DNAT rules and the nodes (through `makeDriver`), and builds the handle; on a
 * failure anywhere, everything already started is stopped before the error is thrown.
 */
export async function startCluster(
  opts: ClusterStartOptions,
  makeDir: () => string,
  makeDriver: (spec: DriverSpec) => NodeDriver,
): Promise<ClusterHandle> {
  const names = new Set<string>();
  for (const n of opts.nodes) {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(n.name)) throw new Error(`bad node name ${JSON.stringify(n.name)}`);
    if (names.has(n.name)) throw new Error(`node ${n.name} given twice`);
    names.add(n.name);
    if (!ADDRESS.test(n.address) || n.address === '127.0.0.1')
      throw new Error(`node ${n.name}: address ${n.address} is not a 127.x.y.z address other than 127.0.0.1`);
  }
  const firewall = canUseIptables()
    ? new Firewall(`${RULE_TAG}:${process.pid}:${randomBytes(4).toString('hex')}`)
    : null;
  await sweepRules();
  let etcd: ServiceProcess | null = null;
  let nats: ServiceProcess | null = null;
  const sharedDir = makeDir();
  const dirs: string[] = [sharedDir];
  const drivers: NodeDriver[] = [];
  const clients: CloveClient[] = [];
  let stopped = false;

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    const errors: unknown[] = [];
    for (const c of clients.splice(0)) c.close();
    await Promise.all(drivers.map((d) => d.destroy().catch((e: unknown) => errors.push(e))));
    await firewall?.clear().catch((e: unknown) => errors.push(e));
    await etcd?.stop().catch((e: unknown) => errors.push(e));
    await nats?.stop().catch((e: unknown) => errors.push(e));
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
    if (errors.length) throw new AggregateError(errors, 'cluster stop: some parts failed to stop');
  };

  try {
    const hostUrl = async (given: boolean | string | undefined, start: () => Promise<ServiceProcess>) => {
      if (given === false) return { url: null, svc: null };
      if (typeof given === 'string') return { url: given, svc: null };
      const svc = await start();
      return { url: svc.url, svc };
    };
    const e = await hostUrl(opts.etcd, () => startEtcd());
    etcd = e.svc;
    const n = await hostUrl(opts.nats, () => startNats());
    nats = n.svc;
    /** `url` as `address` reaches it: same port, the node's address, DNAT'd to 127.0.0.1. */
    const via = async (url: string | null, address: string) => {
      if (!url) return '';
      const u = new URL(url);
      if (!firewall || u.hostname !== '127.0.0.1') return url;
      const spec = [
        '-d',
        address,
        '-p',
        'tcp',
        '--dport',
        u.port,
        '-j',
        'DNAT',
        '--to-destination',
        `127.0.0.1:${u.port}`,
      ];
      if (!firewall.has('nat', 'OUTPUT', spec)) await firewall.add('nat', 'OUTPUT', spec);
      u.hostname = address;
      return u.toString().replace(/\/$/, '');
    };
    const handles: NodeHandle[] = [];
    for (const spec of opts.nodes) {
      const dir = makeDir();
      dirs.push(dir);
      const context: NodeContext = {
        name: spec.name,
        address: spec.address,
        etcdUrl: await via(e.url, spec.address),
        natsUrl: await via(n.url, spec.address),
        dir,
      };
      const kernelArgs =
        typeof spec.kernelArgs === 'function' ? spec.kernelArgs(context) : (spec.kernelArgs ?? []);
      const socketPath = `${dir}/clove.sock`;
      const dataDir = `${dir}/data`;
      const driver = makeDriver({
        name: spec.name,
        address: spec.address,
        dir,
        sharedDir,
        socketPath,
        dataDir,
        kernelArgs,
        startTimeoutMs: opts.startTimeoutMs ?? 60_000,
      });
      drivers.push(driver);
      handles.push({
        name: spec.name,
        address: spec.address,
        dir,
        socketPath,
        dataDir,
        context,
        client: async (o = {}) => {
          const c = await CloveClient.connect({ socketPath, ...o });
          clients.push(c);
          return c;
        },
        kill: () => driver.kill(),
        pause: () => driver.pause(),
        resume: () => driver.resume(),
        restart: () => driver.restart(),
        logs: () => driver.logs(),
      });
    }
    // Nodes start one after another: a cluster kernel joining is what its tests look at, and two cores.
    for (const d of drivers) await d.start();

    // A node by handle, by name, or any address.
    const addr = (x: NodeHandle | string) =>
      typeof x !== 'string' ? x.address : (handles.find((h) => h.name === x)?.address ?? x);
    const needFirewall = (what: string) => {
      if (!firewall)
        throw new Error(`${what} needs iptables as root (this process is uid ${process.getuid?.()})`);
      return firewall;
    };
    const pairRules = (a: string, b: string) => [
      ['-s', a, '-d', b, '-j', 'DROP'],
      ['-s', b, '-d', a, '-j', 'DROP'],
    ];
    const isolateRules = (a: string) => [
      ['-m', 'conntrack', '--ctorigdst', a, '-j', 'DROP'],
      ['-s', a, '-j', 'DROP'],
      ['-d', a, '-j', 'DROP'],
    ];
    const handle: ClusterHandle = {
      nodes: handles,
      etcdUrl: e.url,
      natsUrl: n.url,
      sharedDir,
      etcd,
      nats,
      node: (name) => {
        const h = handles.find((x) => x.name === name);
        if (!h) throw new Error(`no node ${name} in this cluster`);
        return h;
      },
      partition: async (a, b) => {
        const fw = needFirewall('partition');
        for (const r of pairRules(addr(a), addr(b)))
          if (!fw.has('filter', 'INPUT', r)) await fw.add('filter', 'INPUT', r);
      },
      heal: async (a, b) => {
        const fw = needFirewall('heal');
        for (const r of pairRules(addr(a), addr(b))) await fw.remove('filter', 'INPUT', r);
      },
      isolate: async (x) => {
        const fw = needFirewall('isolate');
        for (const r of isolateRules(addr(x)))
          if (!fw.has('filter', 'INPUT', r)) await fw.add('filter', 'INPUT', r);
      },
      rejoin: async (x) => {
        const fw = needFirewall('rejoin');
        for (const r of isolateRules(addr(x))) await fw.remove('filter', 'INPUT', r);
      },
      stop,
      ruleTag: firewall?.tag ?? null,
    };
    return handle;
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}

/** Whether something on `socketPath` answers a connect within `timeoutMs` (false: refused, absent or silent). */
export function socketAccepts(socketPath: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(socketPath);
    const t = setTimeout(() => (s.destroy(), res(false)), timeoutMs);
    s.once('connect', () => (clearTimeout(t), s.destroy(), res(true)));
    s.once('error', () => (clearTimeout(t), res(false)));
  });
}
