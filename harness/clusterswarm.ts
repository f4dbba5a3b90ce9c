/**
 * A swarm (harness/swarm.ts) spread over a cluster (harness/cluster/): N kernels started by a cluster
 * provider with clusterKernelArgs, the collector, the operator and the event listener on the first node,
 * and agent i spawned on node i % N. The agents talk by NAME, so their mail crosses nodes through the
 * kernels (etcd names, JetStream mail). Also the OwnerWatch: a sampler of LIST `all_nodes` on every live
 * node that proves when one name was RUNNING on two nodes at the same instant.
 *
 * Used by the cluster chaos run (chaos/cluster.ts). Always `close()` it: the swarm, then the cluster.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import Docker from 'dockerode';
import { REPO_ROOT } from './kernel.js';
import { HARNESS_LABEL, IMAGE_PROJECT_DIR } from './cluster/image.js';
import { DockerProvider } from './cluster/docker.js';
import { ProcessProvider } from './cluster/processes.js';
import { clusterKernelArgs, type ClusterHandle, type NodeHandle } from './cluster/provider.js';
import { NODE_AGENT, PY_AGENT, Swarm, type SwarmKernel, type SwarmOptions } from './swarm.js';
import type { AgentInfo, CloveClient } from '../sdk/typescript/client.js';

export type ProviderKind = 'processes' | 'docker';

export interface ClusterSwarmOptions extends Omit<
  SwarmOptions,
  'kernelHandle' | 'scripts' | 'listAllNodes' | 'kernel' | 'kernelMode'
> {
  nodes: number;
  provider: ProviderKind;
  /** Node i gets the address `${addressPrefix}${10 + i}` (a 127.x.y. prefix no other cluster uses now). */
  addressPrefix: string;
  /** `clove kernel` flags after the cluster's own (--lease-ttl, --sandbox, …). */
  kernelFlags?: string[];
  /** Milliseconds a node may take to start (default 120 s). */
  startTimeoutMs?: number;
}

/** Clusters not yet stopped (for SIGINT/SIGTERM handlers: closeAllClusters). */
const open = new Set<ClusterHandle>();

/** Stops every cluster a cluster swarm started and has not stopped yet. */
export async function closeAllClusters(): Promise<void> {
  await Promise.allSettled([...open].map((c) => c.stop()));
}

/**
 * Puts harness/agents/ into every node container at IMAGE_PROJECT_DIR (the image carries dist/ but not
 * the harness): the same path on every node, so that an agent taken over by another node finds its
 * script there, and swarm_agent.mjs finds the SDK at ../../dist as on the host.
 */
async function installAgentsInContainers(cluster: ClusterHandle): Promise<void> {
  const docker = new Docker();
  const tar = execFileSync('tar', ['-c', '-C', REPO_ROOT, 'harness/agents'], { maxBuffer: 64 << 20 });
  for (const n of cluster.nodes) {
    const [c] = await docker.listContainers({
      filters: JSON.stringify({ label: [`${HARNESS_LABEL}.dir=${n.dir}`] }),
    });
    if (!c) throw new Error(`node ${n.name}: no container labelled with its directory ${n.dir}`);
    await docker.getContainer(c.Id).putArchive(tar, { path: IMAGE_PROJECT_DIR });
  }
}

export class ClusterSwarm {
  private constructor(
    readonly cluster: ClusterHandle,
    readonly swarm: Swarm,
    /** An operator client per node, in node order. */
    readonly operators: CloveClient[],
    readonly provider: ProviderKind,
  ) {}

  /** Starts the cluster, then the swarm on it (no agents yet); stops the cluster when the swarm fails. */
  static async start(o: ClusterSwarmOptions): Promise<ClusterSwarm> {
    if (o.nodes < 2) throw new Error(`a cluster swarm needs at least 2 nodes (got ${o.nodes})`);
    const provider = o.provider === 'docker' ? new DockerProvider() : new ProcessProvider();
    const cluster = await provider.start({
      nodes: Array.from({ length: o.nodes }, (_, i) => ({
        name: `node${i + 1}`,
        address: `${o.addressPrefix}${10 + i}`,
        kernelArgs: (ctx) => clusterKernelArgs(ctx, o.kernelFlags ?? []),
      })),
      startTimeoutMs: o.startTimeoutMs ?? 120_000,
    });
    open.add(cluster);
    const stop = async () => {
      open.delete(cluster);
      await cluster.stop();
    };
    try {
      if (o.provider === 'docker') await installAgentsInContainers(cluster);
      const scripts =
        o.provider === 'docker'
          ? {
              python: path.posix.join(IMAGE_PROJECT_DIR, 'harness', 'agents', 'swarm_agent.py'),
              node: path.posix.join(IMAGE_PROJECT_DIR, 'harness', 'agents', 'swarm_agent.mjs'),
            }
          : { python: PY_AGENT, node: NODE_AGENT };
      const first = cluster.nodes[0];
      const handle: SwarmKernel = {
        mode: 'cluster',
        client: () => first.client(),
        stop,
        logDirOf: (node) => {
          const n = cluster.nodes.find((x) => x.name === node);
          return n && path.join(n.dataDir, 'logs');
        },
      };
      const operators = await Promise.all(cluster.nodes.map((n) => n.client()));
      const swarm = await Swarm.start({ ...o, kernelHandle: handle, scripts, listAllNodes: true });
      return new ClusterSwarm(cluster, swarm, operators, o.provider);
    } catch (e) {
      await stop().catch(() => undefined);
      throw e;
    }
  }

  get nodes(): NodeHandle[] {
    return this.cluster.nodes;
  }

  /** The node agent i is spawned on (round robin). */
  homeOf(i: number): NodeHandle {
    return this.cluster.nodes[i % this.cluster.nodes.length];
  }

  /** Spawns every agent on its home node. */
  async spawnAll(extra: (i: number) => Parameters<Swarm['spawnOne']>[1] = () => ({})): Promise<void> {
    for (let i = 0; i < this.swarm.names.length; i++)
      await this.swarm.spawnOne(i, extra(i), this.operators[i % this.operators.length]);
  }

  /** Stops the swarm's loops, the cluster (every node and its agents, etcd, NATS, iptables rules). */
  close(): Promise<void> {
    return this.swarm.close();
  }
}

/** One process life of a name on a node, as far as the samples prove it: RUNNING throughout [from, to]. */
export interface Life {
  node: string;
  name: string;
  pid: number;
  from: number;
  to: number;
}

export interface DoubleOwner {
  name: string;
  lives: { node: string; pid: number; from: number; to: number }[];
  /** Milliseconds both were provably RUNNING. */
  overlap_ms: number;
}

/**
 * Samples LIST `all_nodes` on every live node (each node at most one request at a time) and keeps, per
 * (node, name, pid), the interval during which that life was provably RUNNING: from its latest possible
 * start (answer time − uptime) to the earliest time it was seen RUNNING at the latest (the request's
 * send time). Two lives of one name on different nodes whose intervals overlap were live owners at the
 * same instant: never allowed. Samples taken across a handoff prove nothing and flag nothing.
 */
export class OwnerWatch {
  readonly lives = new Map<string, Life>();
  samples = 0;
  /** The last answer of each node, and when it came. */
  readonly latest = new Map<string, { at: number; agents: AgentInfo[] }>();
  private readonly busy = new Set<string>();
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly nodes: { name: string; client: CloveClient }[],
    /** Whether a node is to be asked now (a killed node is not). */
    private readonly live: (node: string) => boolean,
  ) {}

  start(everyMs = 300): void {
    this.timer = setInterval(() => {
      for (const n of this.nodes) if (this.live(n.name)) void this.sample(n.name, n.client);
    }, everyMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One LIST `all_nodes` on `node` (skipped while the previous one is under way). */
  async sample(node: string, client: CloveClient): Promise<void> {
    if (this.busy.has(node)) return;
    this.busy.add(node);
    try {
      const s = Date.now();
      const agents = await client.list({ all_nodes: true });
      const e = Date.now();
      this.samples++;
      this.latest.set(node, { at: e, agents });
      for (const a of agents) {
        if (a.state !== 'RUNNING' || !a.pid) continue;
        const where = a.node ?? node;
        const key = `${where}\u0000${a.name}\u0000${a.pid}`;
        const from = e - a.uptime_ms;
        const l = this.lives.get(key);
        if (!l) this.lives.set(key, { node: where, name: a.name, pid: a.pid, from, to: s });
        else {
          l.from = Math.min(l.from, from);
          l.to = Math.max(l.to, s);
        }
      }
    } catch {
      // A node that does not answer (killed, stopping) is simply not sampled this time.
    } finally {
      this.busy.delete(node);
    }
  }

  /** Names provably RUNNING on two nodes at once. */
  doubles(): DoubleOwner[] {
    const byName = new Map<string, Life[]>();
    for (const l of this.lives.values())
      if (l.to > l.from) byName.set(l.name, [...(byName.get(l.name) ?? []), l]);
    const out: DoubleOwner[] = [];
    for (const [name, ls] of byName) {
      for (let i = 0; i < ls.length; i++)
        for (let j = i + 1; j < ls.length; j++) {
          const [a, b] = [ls[i], ls[j]];
          if (a.node === b.node) continue;
          const overlap = Math.min(a.to, b.to) - Math.max(a.from, b.from);
          if (overlap > 0)
            out.push({
              name,
              lives: [a, b].map((l) => ({ node: l.node, pid: l.pid, from: l.from, to: l.to })),
              overlap_ms: overlap,
            });
        }
    }
    return out;
  }

  /**
   * Each name's entry across the latest answers: RUNNING on a node `trusted` says is in the cluster (not
   * an isolated one, whose own answer is stale) first, then RUNNING anywhere, then the latest seen.
   */
  current(trusted: (node: string) => boolean = () => true): Map<string, AgentInfo> {
    const rank = (a: AgentInfo) => (a.running ? (trusted(a.node ?? '') ? 2 : 1) : 0);
    const out = new Map<string, AgentInfo & { seenAt: number }>();
    for (const [node, { at, agents }] of this.latest)
      for (const a of agents) {
        const had = out.get(a.name);
        const mine = { ...a, node: a.node ?? node, seenAt: at };
        if (!had || rank(mine) > rank(had) || (rank(mine) === rank(had) && at > had.seenAt))
          out.set(a.name, mine);
      }
    return out;
  }
}
