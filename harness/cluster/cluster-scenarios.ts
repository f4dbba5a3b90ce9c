/**
 * Failure scenarios of a three-node Clove cluster (issue 13 §3–4), shared by the Docker and the processes
 * providers: cluster.docker.test.ts (node loss, cross-node SEND from Python agents) and
 * cluster.partition.test.ts (an isolated node, a partition between two nodes). Everything runs for real:
 * kernels, etcd, NATS JetStream, iptables, Python agents through the SDK. No duration is asserted; the
 * time each failure took to heal is measured and logged (`[cluster-timing] …`) for docs/cluster.md.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { REPO_ROOT, until } from '../kernel.js';
import Docker from 'dockerode';
import { DockerProvider, dockerUnavailable } from './docker.js';
import { ProcessProvider } from './processes.js';
import { canUseIptables, type ClusterHandle, type ClusterProvider, type NodeHandle } from './provider.js';

const run = promisify(execFile);

/** The lease TTL of the scenario clusters (seconds): short, so that a lost node is noticed quickly. */
export const LEASE_TTL_S = 3;

/** Why the cluster scenarios cannot run here (null: they can). */
export async function whyNoCluster(): Promise<string | null> {
  if (!canUseIptables()) return 'needs root for iptables';
  const { stdout } = await run(process.execPath, [
    path.join(REPO_ROOT, 'bin', 'clove.js'),
    'kernel',
    '--help',
  ]);
  return stdout.includes('--cluster') ? null : 'this build of `clove kernel` has no --cluster';
}

export interface Agent {
  id: number;
  name: string;
  node?: string;
  state: string;
}

/** Replies to every message with `{echo: <message>}`, to the sender's name (on whatever node it is). */
export const ECHO_AGENT = `from clove_sdk import connect
c = connect()
while True:
    m = c.wait_message(timeout=None)
    if m and m.get("from_name"):
        c.send_message({"echo": m["message"]}, to_name=m["from_name"])
`;

/** Sends {n} to the name in argv[1] until a reply comes, and keeps the last reply in the state store. */
export const PING_AGENT = `import sys
from clove_sdk import connect
c = connect()
n = 0
while True:
    n += 1
    r = c.send_message({"n": n}, to_name=sys.argv[1], check=False)
    if not r.get("success"):
        c.store("ping", {"error": r.get("error"), "n": n}, check=True)
        m = c.wait_message(timeout=1)
        continue
    m = c.wait_message(timeout=5)
    if m:
        c.store("ping", {"reply": m["message"], "from_name": m.get("from_name"), "n": n}, check=True)
        c.wait_message(timeout=5)
`;

/** Keeps every message it got in the state store of its node, under the key its last argument names. */
export const KEEPER_AGENT = `import sys
from clove_sdk import connect
c = connect()
key = sys.argv[-1]
got = []
while True:
    m = c.wait_message(timeout=None)
    if m:
        got.append(m["message"])
        c.store(key, {"got": got}, check=True)
`;

/** An agent that only runs. */
export const IDLE_AGENT = `import time
while True:
    time.sleep(60)
`;

/** LIST with all_nodes from one node: every node's agents, each with its node. */
export async function everywhere(c: CloveClient): Promise<Agent[]> {
  return (await c.list({ all_nodes: true })) as Agent[];
}

/** The nodes `c`'s kernel sees alive, sorted. */
export async function aliveNodes(c: CloveClient): Promise<string[]> {
  const r = await c.clusterNodes();
  return r.nodes
    .filter((n) => n.alive)
    .map((n) => n.node)
    .sort();
}

/** `clove nodes --json` (the CLI, from the host, on the node's socket): the nodes it prints alive. */
export async function cliNodes(node: NodeHandle): Promise<string[]> {
  const { stdout } = await run(process.execPath, [
    path.join(REPO_ROOT, 'bin', 'clove.js'),
    '--socket',
    node.socketPath,
    'nodes',
    '--json',
  ]);
  const parsed = JSON.parse(stdout) as
    { nodes?: Array<{ node: string; alive: boolean }> } | Array<{ node: string; alive: boolean }>;
  const list = Array.isArray(parsed) ? parsed : (parsed.nodes ?? []);
  return list
    .filter((n) => n.alive)
    .map((n) => n.node)
    .sort();
}

/** Where `name` runs, as each node's own (local) LIST says: the nodes on which it is RUNNING. */
export async function runningOn(
  cluster: ClusterHandle,
  clients: Map<string, CloveClient>,
  name: string,
): Promise<string[]> {
  const out: string[] = [];
  for (const n of cluster.nodes) {
    const c = clients.get(n.name);
    if (!c) continue;
    const list = (await c.list().catch(() => null)) as Agent[] | null;
    if (list?.some((a) => a.name === name && a.state === 'RUNNING')) out.push(n.name);
  }
  return out;
}

/**
 * Writes an agent script to the cluster's shared directory (every node can run it: takeovers), whole or
 * not at all: written beside it and renamed over it. Why: tests write the same script again for each
 * agent, and a plain write truncates the file first, so an agent started from it a moment before could
 * read it empty and exit 0 at once (a fresh-clone CI run's box3: "exit code 0 after 11 ms").
 */
export function sharedScript(cluster: ClusterHandle, file: string, text: string): string {
  const p = path.join(cluster.sharedDir, file);
  const tmp = `${p}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o644 });
  fs.renameSync(tmp, p);
  return p;
}

/** Logs a measured duration in a form docs/cluster.md can quote. */
export function timing(label: string, what: string, ms: number): void {
  console.log(`[cluster-timing] ${label}: ${what}: ${(ms / 1000).toFixed(1)} s`);
}

/** Waits until every node in `on` sees exactly `expected` alive (through CLUSTER_NODES). */
export async function waitAlive(
  clients: Map<string, CloveClient>,
  on: string[],
  expected: string[],
  what: string,
): Promise<void> {
  await until(
    async () => {
      for (const n of on) {
        const got = await aliveNodes(clients.get(n)!).catch(() => null);
        if (!got || JSON.stringify(got) !== JSON.stringify([...expected].sort())) return false;
      }
      return true;
    },
    120_000,
    what,
  );
}

/** The value under `key` in a node's state store (global scope), null when absent. */
export async function fetchValue<T>(c: CloveClient, key: string): Promise<T | null> {
  return ((await c.fetch(key, 'global')).value ?? null) as T | null;
}

/** The three nodes of the scenarios. */
export const ALL = ['n1', 'n2', 'n3'];

/**
 * The providers a scenario file runs on — Docker and processes — each with the first byte of its nodes'
 * loopback addresses (test files run at once and iptables rules are global: each file has its own) and
 * why it is skipped here (null: it runs).
 */
export async function providers(
  dockerBase: number,
  processesBase: number,
): Promise<Array<[label: string, make: () => ClusterProvider, base: number, skip: string | null]>> {
  const docker = new Docker();
  const noCluster = await whyNoCluster();
  const noDocker = (await dockerUnavailable(docker)) ?? noCluster;
  return [
    ['Docker', () => new DockerProvider({ docker }), dockerBase, noDocker],
    ['processes', () => new ProcessProvider(), processesBase, noCluster],
  ];
}
