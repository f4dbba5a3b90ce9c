/**
 * A real three-node Clove cluster (issue 13), in Docker and as processes: three nodes running `clove kernel
 * --cluster … --nats …` beside real etcd and NATS JetStream, driven through the harness's faults.
 * Skipped, with the reason, while this build's kernel has no `--cluster` (the cluster half of issue 13
 * lives on its own branch until merged) or dockerd does not answer.
 *
 * The cluster's own calls (LIST with all_nodes, CLUSTER_NODES) are reached by name, so this file
 * compiles against an SDK that does not have them yet.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { REPO_ROOT, until } from '../kernel.js';
import { DockerProvider, dockerUnavailable } from './docker.js';
import { ProcessProvider } from './processes.js';
import { canUseIptables, clusterKernelArgs, type ClusterHandle } from './provider.js';

const docker = new Docker();

function kernelHasCluster(): boolean {
  try {
    const help = execFileSync(
      process.execPath,
      [path.join(REPO_ROOT, 'bin', 'clove.js'), 'kernel', '--help'],
      {
        encoding: 'utf8',
      },
    );
    return help.includes('--cluster');
  } catch {
    return false;
  }
}

const whyNotCluster =
  (kernelHasCluster()
    ? null
    : 'this build of `clove kernel` has no --cluster (issue 13 cluster half not merged)') ??
  (canUseIptables() ? null : 'needs root for iptables');
const why = (await dockerUnavailable(docker)) ?? whyNotCluster;

interface Agent {
  name: string;
  node?: string;
  state: string;
}

/** A call the SDK of this branch may not declare yet. */
function call<T>(c: CloveClient, method: string, ...args: unknown[]): Promise<T> {
  const f = (c as unknown as Record<string, (...a: unknown[]) => Promise<T>>)[method];
  if (typeof f !== 'function') throw new Error(`the SDK has no ${method}()`);
  return f.apply(c, args);
}

const WORKER = `import time
while True:
    time.sleep(60)
`;

for (const [label, make, base] of [
  ['Docker', () => new DockerProvider({ docker }), 42],
  ['processes', () => new ProcessProvider(), 52],
] as const) {
  const skip = label === 'Docker' ? why : whyNotCluster;
  describe.skipIf(skip !== null)(`a three-node ${label} cluster${skip ? ` (skipped: ${skip})` : ''}`, () => {
    let cluster: ClusterHandle;

    beforeAll(async () => {
      cluster = await make().start({
        nodes: ['n1', 'n2', 'n3'].map((name, i) => ({
          name,
          address: `127.0.0.${base + i}`,
          kernelArgs: (ctx) => clusterKernelArgs(ctx, ['--log-level', 'warn', '--lease-ttl', '3']),
        })),
      });
    }, 300_000);

    afterAll(async () => {
      await cluster?.stop();
    }, 120_000);

    const everywhere = async (c: CloveClient) => call<Agent[]>(c, 'list', { all_nodes: true });
    const alive = async (c: CloveClient) =>
      (await call<{ nodes: Array<{ node: string; alive: boolean }> }>(c, 'clusterNodes')).nodes
        .filter((n) => n.alive)
        .map((n) => n.node)
        .sort();

    it('the nodes join; SEND crosses nodes; a killed node’s agent runs again elsewhere under its name', async () => {
      const [n1, n2] = cluster.nodes;
      const c2 = await n2.client();
      await until(async () => (await alive(c2)).length === 3, 60_000, 'three live nodes');
      expect(await alive(c2)).toEqual(['n1', 'n2', 'n3']);

      const script = path.join(cluster.sharedDir, 'worker.py');
      fs.writeFileSync(script, WORKER, { mode: 0o644 });
      const c1 = await n1.client();
      await c1.spawn({ name: 'worker', script, restart_policy: 'always' });
      await until(
        async () =>
          (await everywhere(c2)).find((a) => a.name === 'worker' && a.node === 'n1' && a.state === 'RUNNING'),
        60_000,
        'n2 to see the worker on n1',
      );
      expect((await c2.send('worker', { hello: 'from n2' })).success).toBe(true);

      await n1.kill();
      const moved = await until(
        async () =>
          (await everywhere(c2)).find((a) => a.name === 'worker' && a.node !== 'n1' && a.state === 'RUNNING'),
        120_000,
        'the worker to run again on a survivor',
      );
      expect(['n2', 'n3']).toContain(moved.node);
      expect(await alive(c2)).toEqual(['n2', 'n3']);
    }, 300_000);

    it('an isolated node drops out of the live nodes and joins again on rejoin', async () => {
      const n2 = cluster.node('n2');
      const n3 = cluster.node('n3');
      const c2 = await n2.client();
      await cluster.isolate(n3);
      await until(async () => !(await alive(c2)).includes('n3'), 120_000, 'n3 to drop out');
      await cluster.rejoin(n3);
      await until(async () => (await alive(c2)).includes('n3'), 120_000, 'n3 to join again');
    }, 300_000);

    /** Waits for both survivors to be live again, then for a SEND to the worker from the other node to work. */
    async function recovers(what: string): Promise<void> {
      const c2 = await cluster.node('n2').client();
      const c3 = await cluster.node('n3').client();
      await until(
        async () => (await alive(c2)).length === 2 && (await alive(c3)).length === 2,
        120_000,
        'both survivors live again',
      );
      let last = '';
      await until(
        async () => {
          // Where the worker runs may change meanwhile (a node that lost its lease starts it again).
          const where = (await everywhere(c2)).find((a) => a.name === 'worker');
          const from = where?.node === 'n2' ? c3 : c2;
          const r = await from
            .send('worker', { after: what })
            .catch((e: Error) => ({ success: false, error: e.message }));
          if (!r.success) last = JSON.stringify(r);
          return r.success;
        },
        120_000,
        'a SEND across nodes',
      ).catch(async (e: Error) => {
        // The nodes' logs say why (a name nobody owns, a bus that did not come back).
        const logs = await Promise.all(
          cluster.nodes.map(async (n) => `--- ${n.name}\n${(await n.logs().catch(() => '')).slice(-6000)}`),
        );
        throw new Error(`${e.message}; last answer ${last}\n${logs.join('\n')}`);
      });
    }

    it('etcd and NATS restarted: the cluster recovers and cross-node SEND works again', async () => {
      await cluster.etcd!.restart();
      await cluster.nats!.restart();
      await recovers('restart');
    }, 300_000);

    it('etcd away for longer than the lease: the nodes rejoin, the worker runs again, cross-node SEND works', async () => {
      // A frozen etcd answers no keep-alive: every node loses its lease and stops its named agents; the
      // worker's node is back before anyone could take it over, so it starts the worker again itself.
      await cluster.etcd!.pause();
      await new Promise((r) => setTimeout(r, 6000)); // twice the lease TTL (3 s)
      cluster.etcd!.resume();
      await recovers('etcd outage');
      // A SEND succeeds once the name is claimed: the worker's process may still be starting then.
      const c2 = await cluster.node('n2').client();
      let workers: Awaited<ReturnType<typeof everywhere>> = [];
      await until(
        async () => {
          workers = (await everywhere(c2)).filter((a) => a.name === 'worker');
          return workers.some((a) => a.state !== 'STARTING');
        },
        60_000,
        'the worker past STARTING',
      );
      expect(workers.map((a) => a.state)).toEqual(['RUNNING']);
    }, 300_000);
  });
}
