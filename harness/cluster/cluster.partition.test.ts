/**
 * Partitions in a three-node cluster (issue 13 §4: never two live owners of a name), in Docker containers
 * and as processes, with real etcd, NATS JetStream and iptables:
 * - n2 isolated (cut off etcd, NATS and the other nodes) past its lease: its named agents stop on n2, the
 *   restartable one is taken over elsewhere; sampled all along through every node's own LIST, a name is
 *   never RUNNING on two nodes; n2 rejoined joins again and its old names stay where they moved;
 * - n1 and n3 partitioned from each other while both still reach etcd and NATS: no ownership changes, and
 *   mail still crosses between them (it goes through NATS).
 * Scenario times are logged as `[cluster-timing]` lines (no duration is asserted).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { until } from '../kernel.js';
import {
  aliveNodes,
  everywhere,
  fetchValue,
  IDLE_AGENT,
  KEEPER_AGENT,
  LEASE_TTL_S,
  runningOn,
  sharedScript,
  timing,
  waitAlive,
  providers,
  ALL,
} from './cluster-scenarios.js';
import { clusterKernelArgs, type ClusterHandle } from './provider.js';

/** The last 2 KiB of a file, or why there is none (for a timeout's message). */
function tail(file: string): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return JSON.stringify(text.slice(-2048));
  } catch (e) {
    return `(${(e as Error).message})`;
  }
}

/**
 * Samples, until stopped, on which nodes each name is RUNNING (every node's local LIST), and keeps every
 * sample where a name ran on two nodes at once.
 */
function sampleOwners(cluster: ClusterHandle, clients: Map<string, CloveClient>, names: string[]) {
  let stop = false;
  let samples = 0;
  const doubles: string[] = [];
  const done = (async () => {
    while (!stop) {
      for (const name of names) {
        const on = await runningOn(cluster, clients, name);
        if (on.length > 1) doubles.push(`${name} RUNNING on ${on.join(', ')} at sample ${samples}`);
      }
      samples++;
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    get samples() {
      return samples;
    },
    doubles,
    async stop() {
      stop = true;
      await done;
    },
  };
}

for (const [label, make, base, skip] of await providers(82, 92)) {
  describe.skipIf(skip !== null)(
    `partitions in a three-node ${label} cluster${skip ? ` (skipped: ${skip})` : ''}`,
    () => {
      let cluster: ClusterHandle;
      const clients = new Map<string, CloveClient>();

      beforeAll(async () => {
        cluster = await make().start({
          nodes: ALL.map((name, i) => ({
            name,
            address: `127.0.0.${base + i}`,
            kernelArgs: (ctx) =>
              clusterKernelArgs(ctx, ['--log-level', 'warn', '--lease-ttl', String(LEASE_TTL_S)]),
          })),
        });
        for (const n of cluster.nodes) clients.set(n.name, await n.client());
        await waitAlive(clients, ALL, ALL, 'three live nodes');
      }, 300_000);

      afterAll(async () => {
        if (cluster)
          for (const n of cluster.nodes) {
            const log = await n.logs().catch(() => '');
            if (log.trim()) console.log(`--- ${label} ${n.name} log (tail) ---\n${log.slice(-4000)}`);
          }
        await cluster?.stop();
      }, 120_000);

      it('n2 isolated past its lease: its named agents stop there and the restartable one moves, never running twice; rejoined, n2 leaves it where it moved', async () => {
        const c1 = clients.get('n1')!;
        const c2 = clients.get('n2')!;
        const idle = sharedScript(cluster, 'idle.py', IDLE_AGENT);
        const keeper = sharedScript(cluster, 'keeper.py', KEEPER_AGENT);
        await c2.spawn({ name: 'held', script: keeper, args: ['held'], restart_policy: 'always' });
        await c2.spawn({ name: 'plain', script: idle });
        await until(
          async () => {
            const a = await everywhere(c1);
            return ['held', 'plain'].every((n) =>
              a.some((x) => x.name === n && x.node === 'n2' && x.state === 'RUNNING'),
            );
          },
          60_000,
          'n1 to see held and plain running on n2',
        );

        const sampler = sampleOwners(cluster, clients, ['held', 'plain']);
        try {
          const t0 = Date.now();
          await cluster.isolate('n2');
          let stoppedAt = 0;
          let movedAt = 0;
          let movedTo = '';
          const sent: string[] = [];
          const refused: string[] = [];
          let i = 0;
          await until(
            async () => {
              if (!stoppedAt) {
                const local = (await c2.list()) as Array<{ name: string; state: string }>;
                if (!local.some((a) => ['held', 'plain'].includes(a.name) && a.state === 'RUNNING'))
                  stoppedAt = Date.now();
              }
              const m = `isolated-${++i}`;
              const r = await c1.send('held', { m }).then(
                () => null,
                (e: Error & { code?: string }) => e.code ?? e.message,
              );
              if (r === null) sent.push(m);
              else refused.push(`${m}: ${r}`);
              if (!movedAt) {
                const on = (await runningOn(cluster, clients, 'held')).filter((n) => n !== 'n2');
                if (on.length) [movedAt, movedTo] = [Date.now(), on[0]!];
              }
              return stoppedAt && movedAt;
            },
            120_000,
            'held and plain to stop on n2 and held to run on n1 or n3',
          );
          timing(label, 'isolate → named agents stopped on the isolated node', stoppedAt - t0);
          timing(label, 'isolate → restartable agent RUNNING on a survivor', movedAt - t0);
          expect(stoppedAt).toBeLessThanOrEqual(movedAt);
          expect(['n1', 'n3']).toContain(movedTo);
          console.log(
            `[cluster-timing] ${label}: sends to held while n2 was isolated: ${sent.length} stored, refused: ${refused.join('; ') || 'none'}`,
          );
          expect(sent.length).toBeGreaterThan(0);
          const home = clients.get(movedTo)!;
          const heldGot = async () =>
            new Set((await fetchValue<{ got: Array<{ m: string }> }>(home, 'held'))?.got.map((x) => x.m));
          await until(
            async () => {
              const got = await heldGot();
              return sent.every((m) => got.has(m));
            },
            120_000,
            `held on ${movedTo} to get the ${sent.length} messages sent to it while n2 was isolated`,
          );
          timing(label, 'isolate → mail sent meanwhile delivered on the survivor', Date.now() - t0);
          await waitAlive(clients, ['n1', 'n3'], ['n1', 'n3'], 'n1 and n3 to see n2 lost');
          // plain had no restart policy: nobody runs it now.
          expect(await runningOn(cluster, clients, 'plain')).toEqual([]);

          const t1 = Date.now();
          await cluster.rejoin('n2');
          await waitAlive(clients, ALL, ALL, 'every node to see n2 alive again');
          timing(label, 'rejoin → the isolated node seen alive by every node', Date.now() - t1);
          const status = await c2.clusterStatus();
          expect(status).toMatchObject({ clustered: true, node: 'n2', nodes_alive: 3 });
          // A few more samples after the rejoin (n2 restoring or retrying anything would show here).
          const from = sampler.samples;
          await until(async () => sampler.samples >= from + 20, 120_000, 'samples after the rejoin');
          expect(await runningOn(cluster, clients, 'held')).toEqual([movedTo]);
          const owners = (await everywhere(c1)).filter((a) => a.name === 'held' && a.state === 'RUNNING');
          expect(owners.map((a) => a.node)).toEqual([movedTo]);
          // Mail to held after the rejoin goes to its new home (n2 keeps no stale consumer of the name).
          for (let k = 0; k < 5; k++)
            expect((await c1.send('held', { m: `rejoined-${k}` })).success).toBe(true);
          await until(
            async () => {
              const got = await heldGot();
              return [0, 1, 2, 3, 4].every((k) => got.has(`rejoined-${k}`));
            },
            60_000,
            'held to get the mail sent after n2 rejoined',
          );
          // n2 allocates ids again (a new lease, its slot claimed again): an agent spawned there now has an
          // id no other agent has, and mail reaches it by name and by id from n1.
          const fresh = await c2.spawn({ name: 'fresh', script: keeper, args: ['fresh'] });
          const all = await everywhere(c1);
          expect(all.filter((a) => a.id === fresh.id).map((a) => a.name)).toEqual(['fresh']);
          expect(new Set(all.map((a) => a.id)).size).toBe(all.length);
          expect((await c1.send('fresh', { m: 'by name' })).success).toBe(true);
          expect((await c1.send(fresh.id, { m: 'by id' })).success).toBe(true);
          await until(
            async () => (await fetchValue<{ got: Array<{ m: string }> }>(c2, 'fresh'))?.got.length === 2,
            60_000,
            'fresh on n2 to get mail by name and by id',
          );
          // The name n2 lost is free to claim again only where it is not owned: a SPAWN of held on n2 is refused.
          await expect(c2.spawn({ name: 'held', script: idle })).rejects.toThrow(
            /name already in use|name_taken/,
          );
        } finally {
          await sampler.stop();
        }
        console.log(`[cluster-timing] ${label}: owner samples while isolated and after: ${sampler.samples}`);
        expect(sampler.samples).toBeGreaterThan(0);
        expect(sampler.doubles).toEqual([]);
      }, 420_000);

      it('n1 and n3 partitioned from each other but not from etcd and NATS: no ownership changes, mail still crosses', async () => {
        const c1 = clients.get('n1')!;
        const c3 = clients.get('n3')!;
        // Why an agent might be missing: an agent with restart_policy never leaves the table when it exits.
        const node3 = cluster.nodes.find((n) => n.name === 'n3')!;
        const exits3 = await node3.client();
        await exits3.subscribe(['AGENT_EXITED']);
        const spawned3 = await c3.spawn({
          name: 'box3',
          script: sharedScript(cluster, 'keeper.py', KEEPER_AGENT),
          args: ['box3'],
        });
        const spawned1 = await c1.spawn({
          name: 'box1',
          script: sharedScript(cluster, 'keeper.py', KEEPER_AGENT),
          args: ['box1'],
        });
        const owners = async () =>
          (await everywhere(clients.get('n2')!))
            .filter((a) => a.state === 'RUNNING')
            .map((a) => `${a.name}@${a.node}#${a.id}`)
            .sort();
        // A timeout says what n2 saw last, every agent's state there, what SPAWN answered and what n1 and n3
        // list of their own (fresh-clone CI runs timed out here twice: the second time n2 listed box1 and
        // n3's older agent but no box3 at all; the case passes in about 12 s otherwise).
        let seen: string[] = [];
        await until(
          async () => {
            seen = await owners();
            return seen.some((o) => o.startsWith('box1@n1')) && seen.some((o) => o.startsWith('box3@n3'));
          },
          60_000,
          'box1 on n1 and box3 on n3',
        ).catch(async (e: Error) => {
          const all = (await everywhere(clients.get('n2')!).catch(() => [])).map(
            (a) => `${a.name}@${a.node}#${a.id}:${a.state}`,
          );
          const own = async (c: CloveClient): Promise<string> => {
            try {
              return `[${(await c.list()).map((a) => `${a.name}#${a.id}:${a.state}`).join(', ')}]`;
            } catch (x) {
              return `LIST failed: ${(x as Error).message}`;
            }
          };
          throw new Error(
            `${e.message}; RUNNING as n2 saw last: [${seen.join(', ')}]; all: [${all.join(', ')}]; ` +
              `SPAWN answered n3: ${JSON.stringify(spawned3)}, n1: ${JSON.stringify(spawned1)}; ` +
              `n3's own LIST: ${await own(c3)}; n1's: ${await own(c1)}; ` +
              `AGENT_EXITED on n3: ${JSON.stringify((await exits3.pollEvents({ max: 50, timeoutMs: 0 }).catch(() => null))?.events ?? 'none')}; ` +
              `box3's log on n3 (tail): ${tail(path.join(node3.dataDir, 'logs', 'box3.log'))}`,
          );
        });
        const before = await owners();
        await cluster.partition('n1', 'n3');
        try {
          // Watch for several lease TTLs: every node stays alive for every other, no name moves.
          const until_ = Date.now() + 4 * LEASE_TTL_S * 1000;
          let checks = 0;
          while (Date.now() < until_ || checks < 5) {
            for (const n of ALL) expect(await aliveNodes(clients.get(n)!)).toEqual(ALL);
            expect(await owners()).toEqual(before);
            checks++;
            await new Promise((r) => setTimeout(r, 500));
          }
          expect((await c1.send('box3', { m: 'n1→n3 across the partition' })).success).toBe(true);
          expect((await c3.send('box1', { m: 'n3→n1 across the partition' })).success).toBe(true);
          await until(
            async () =>
              (await fetchValue<{ got: Array<{ m: string }> }>(c3, 'box3'))?.got.some((x) =>
                x.m.startsWith('n1→n3'),
              ),
            60_000,
            'box3 to get mail from n1',
          );
          await until(
            async () =>
              (await fetchValue<{ got: Array<{ m: string }> }>(c1, 'box1'))?.got.some((x) =>
                x.m.startsWith('n3→n1'),
              ),
            60_000,
            'box1 to get mail from n3',
          );
        } finally {
          await cluster.heal('n1', 'n3');
        }
        expect(await owners()).toEqual(before);
      }, 300_000);
    },
  );
}
