/**
 * Node loss in a three-node cluster (issue 13 §3): three clustered kernels (in Docker containers, and as
 * processes), real etcd and NATS JetStream, Python agents through the SDK. A Python agent on n1 talks by
 * name to one on n3; a restartable agent on n2 survives n2's death (container kill) under its name on a
 * survivor, with the mail sent to it meanwhile; n2 restarted joins again without taking its old name back.
 * Scenario times are logged as `[cluster-timing]` lines (no duration is asserted).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { until } from '../kernel.js';
import {
  aliveNodes,
  cliNodes,
  ECHO_AGENT,
  everywhere,
  fetchValue,
  KEEPER_AGENT,
  LEASE_TTL_S,
  PING_AGENT,
  runningOn,
  sharedScript,
  timing,
  waitAlive,
  providers,
  ALL,
} from './cluster-scenarios.js';
import { clusterKernelArgs, type ClusterHandle } from './provider.js';

for (const [label, make, base, skip] of await providers(62, 72)) {
  describe.skipIf(skip !== null)(
    `node loss in a three-node ${label} cluster${skip ? ` (skipped: ${skip})` : ''}`,
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
      }, 300_000);

      afterAll(async () => {
        if (cluster)
          for (const n of cluster.nodes) {
            const log = await n.logs().catch(() => '');
            if (/error|fatal/i.test(log))
              console.log(`--- ${label} ${n.name} log (tail) ---\n${log.slice(-3000)}`);
          }
        await cluster?.stop();
      }, 120_000);

      it('`clove nodes` on each node lists the three nodes alive', async () => {
        for (const n of cluster.nodes)
          await until(
            async () => (await cliNodes(n)).length === 3,
            60_000,
            `clove nodes on ${n.name} to list 3`,
          );
        for (const n of cluster.nodes) expect(await cliNodes(n)).toEqual(ALL);
      }, 120_000);

      it('a Python agent on n1 sends by name to a Python agent on n3 and gets its reply', async () => {
        const c1 = clients.get('n1')!;
        const c3 = clients.get('n3')!;
        await c3.spawn({ name: 'echo', script: sharedScript(cluster, 'echo.py', ECHO_AGENT) });
        await c1.spawn({
          name: 'ping',
          script: sharedScript(cluster, 'ping.py', PING_AGENT),
          args: ['echo'],
        });
        const got = await until(
          async () => {
            const v = await fetchValue<{ reply?: { echo: { n: number } }; from_name?: string }>(c1, 'ping');
            return v?.reply ? v : null;
          },
          60_000,
          'the ping agent on n1 to get a reply from echo on n3',
        );
        expect(got.from_name).toBe('echo');
        expect(typeof got.reply?.echo.n).toBe('number');
        const where = Object.fromEntries((await everywhere(c1)).map((a) => [a.name, a.node]));
        expect(where).toMatchObject({ ping: 'n1', echo: 'n3' });
      }, 120_000);

      it('n2 killed: its restartable agent runs again on a survivor under its name and gets the mail sent meanwhile; n2 restarted joins again without its old name', async () => {
        const c1 = clients.get('n1')!;
        const c2 = clients.get('n2')!;
        const n2 = cluster.node('n2');
        await c2.spawn({
          name: 'keeper',
          script: sharedScript(cluster, 'keeper.py', KEEPER_AGENT),
          args: ['keeper'],
          restart_policy: 'always',
        });
        await until(
          async () =>
            (await everywhere(c1)).some(
              (a) => a.name === 'keeper' && a.node === 'n2' && a.state === 'RUNNING',
            ),
          60_000,
          'n1 to see keeper running on n2',
        );
        expect((await c1.send('keeper', { m: 'before' })).success).toBe(true);
        await until(
          async () => (await fetchValue<{ got: unknown[] }>(c2, 'keeper'))?.got.length === 1,
          60_000,
          'keeper on n2 to get the first message',
        );

        // Kill n2 (the container: kernel and agents), then keep sending to keeper until it runs elsewhere.
        const t0 = Date.now();
        await n2.kill();
        const sent: string[] = [];
        const refused: string[] = [];
        let i = 0;
        let lostAt = 0;
        const moved = await until(
          async () => {
            const m = `down-${++i}`;
            const r = await c1.send('keeper', { m }).then(
              () => null,
              (e: Error & { code?: string }) => e.code ?? e.message,
            );
            if (r === null) sent.push(m);
            else refused.push(`${m}: ${r}`);
            if (!lostAt && !(await aliveNodes(c1)).includes('n2')) lostAt = Date.now();
            const a = (await everywhere(c1)).find((x) => x.name === 'keeper' && x.state === 'RUNNING');
            return a && a.node !== 'n2' ? a : null;
          },
          120_000,
          'keeper to run again on n1 or n3',
        );
        const tMoved = Date.now();
        timing(label, 'node kill → node seen lost', (lostAt || tMoved) - t0);
        timing(label, 'node kill → restartable agent RUNNING on a survivor', tMoved - t0);
        console.log(
          `[cluster-timing] ${label}: sends while n2 was down: ${sent.length} stored, refused: ${refused.join('; ') || 'none'}`,
        );
        expect(['n1', 'n3']).toContain(moved.node);
        // At least the first send after the kill is stored (n2 still owned the name) and waits for the new owner.
        expect(sent.length).toBeGreaterThan(0);
        const after = `after-${Date.now()}`;
        expect((await c1.send('keeper', { m: after })).success).toBe(true);
        const newHome = clients.get(moved.node!)!;
        const got = await until(
          async () => {
            const v = await fetchValue<{ got: Array<{ m: string }> }>(newHome, 'keeper');
            const ms = new Set(v?.got.map((x) => x.m));
            return [...sent, after].every((m) => ms.has(m)) ? v : null;
          },
          120_000,
          `keeper on ${moved.node} to get the ${sent.length} messages sent while n2 was down`,
        );
        timing(label, 'node kill → mail sent meanwhile delivered on the survivor', Date.now() - t0);
        expect(got.got.map((x) => x.m)).toEqual(expect.arrayContaining([...sent, after]));

        // n2 comes back: a new lease, alive for everyone, and keeper stays where it moved.
        const t1 = Date.now();
        await n2.restart();
        clients.get('n2')!.close();
        clients.set('n2', await n2.client());
        await waitAlive(clients, ALL, ALL, 'every node to see n2 alive again');
        timing(label, 'node restart → seen alive by every node', Date.now() - t1);
        for (const n of cluster.nodes) expect(await cliNodes(n)).toEqual(ALL);
        const status = await clients.get('n2')!.clusterStatus();
        expect(status).toMatchObject({ clustered: true, node: 'n2', nodes_alive: 3 });
        // Restoring its data dir, n2 finds keeper's name owned by another node: it must not run it as keeper.
        await until(
          async () => {
            const local = (await clients.get('n2')!.list()) as Array<{ name: string; state: string }>;
            return !local.some(
              (a) => a.name === 'keeper' && (a.state === 'RUNNING' || a.state === 'STARTING'),
            );
          },
          60_000,
          'n2 not to run keeper',
        );
        const n2log = (await n2.logs()).split('\n').filter((l) => l.includes('keeper'));
        console.log(
          `[cluster-timing] ${label}: n2's log about keeper after its restart:\n${n2log.slice(-5).join('\n')}`,
        );
        expect(await runningOn(cluster, clients, 'keeper')).toEqual([moved.node]);
        const owners = (await everywhere(c1)).filter((a) => a.name === 'keeper' && a.state === 'RUNNING');
        expect(owners.map((a) => a.node)).toEqual([moved.node]);
        // Mail to keeper still goes to its new home.
        expect((await c1.send('keeper', { m: 'rejoined' })).success).toBe(true);
        await until(
          async () =>
            (await fetchValue<{ got: Array<{ m: string }> }>(newHome, 'keeper'))?.got.some(
              (x) => x.m === 'rejoined',
            ),
          60_000,
          'keeper to get mail after n2 rejoined',
        );
      }, 420_000);
    },
  );
}
