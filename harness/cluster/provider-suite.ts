/**
 * The behaviour every cluster provider must have, run against real kernels, real etcd and NATS, real
 * iptables (and, for docker.test.ts, real containers): processes.test.ts and docker.test.ts call
 * `describeProvider` with their provider. Nothing here asserts a duration: a fault is checked by what
 * stops working and what works again.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../kernel.js';
import {
  canUseIptables,
  clusterKernelArgs,
  harnessRules,
  socketAccepts,
  type ClusterHandle,
  type ClusterProvider,
} from './provider.js';

const PY_AGENT = `import sys, time
from clove_sdk import connect
c = connect()
c.store("py-agent", {"python": sys.version.split()[0]}, check=True)
while True:
    time.sleep(60)
`;

const JS_AGENT = `import path from 'node:path';
import { pathToFileURL } from 'node:url';
// The kernel gives every agent NODE_PATH=<its installation>/node_modules: the SDK is beside it.
const root = path.dirname(process.env.NODE_PATH);
const { CloveClient } = await import(pathToFileURL(path.join(root, 'dist', 'sdk', 'typescript', 'client.js')).href);
const c = await CloveClient.connect();
await c.store('js-agent', { node: process.version });
setInterval(() => {}, 1 << 30);
`;

/** Connects to HOST PORT again and again, and keeps in the state store whether the last try got through. */
const PROBE_AGENT = `import socket, sys, time
from clove_sdk import connect
c = connect()
host, port, n = sys.argv[1], int(sys.argv[2]), 0
while True:
    n += 1
    try:
        socket.create_connection((host, port), timeout=1).close()
        ok = True
    except OSError:
        ok = False
    c.store("probe", {"ok": ok, "n": n}, check=True)
    time.sleep(0.1)
`;

/** Whether a TCP connection from `from` to `to`:`port` is accepted within `timeoutMs`. */
export function tcpConnects(from: string, to: string, port: number, timeoutMs = 2000): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect({ host: to, port, localAddress: from });
    const t = setTimeout(() => (s.destroy(), res(false)), timeoutMs);
    s.once('connect', () => (clearTimeout(t), s.destroy(), res(true)));
    s.once('error', () => (clearTimeout(t), res(false)));
  });
}

/** A TCP listener on `host` (a free port) for the partition checks. */
async function listenOn(host: string): Promise<net.Server & { port: number }> {
  const srv = net.createServer((s) => s.destroy());
  await new Promise<void>((res, rej) => (srv.once('error', rej), srv.listen(0, host, res)));
  return Object.assign(srv, { port: (srv.address() as net.AddressInfo).port });
}

export interface SuiteOptions {
  /** Two unused loopback addresses for this file's nodes (each test file its own: partitions are global). */
  addresses: [string, string];
  /** Why the provider cannot run here (the suite is skipped with it); null: run. */
  skip: string | null;
  /** Extra checks after stop() (no container left…). */
  afterStop?: (cluster: ClusterHandle) => Promise<void>;
}

export function describeProvider(label: string, make: () => ClusterProvider, opts: SuiteOptions): void {
  const [A, B] = opts.addresses;
  const root = canUseIptables();

  describe.skipIf(opts.skip !== null)(
    `${label} cluster provider${opts.skip ? ` (skipped: ${opts.skip})` : ''}`,
    () => {
      let cluster: ClusterHandle;

      beforeAll(async () => {
        cluster = await make().start({
          nodes: [
            { name: 'a', address: A, kernelArgs: ['--log-level', 'warn'] },
            { name: 'b', address: B, kernelArgs: ['--log-level', 'warn'] },
          ],
        });
      }, 300_000);

      afterAll(async () => {
        await cluster?.stop();
      }, 120_000);

      it('starts two nodes whose kernels answer HELLO and LIST through their sockets from the host', async () => {
        expect(cluster.nodes.map((n) => n.name)).toEqual(['a', 'b']);
        expect(cluster.etcdUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
        expect(cluster.natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
        for (const n of cluster.nodes) {
          const c = await n.client();
          expect((await c.hello()).success).toBe(true);
          expect(await c.list()).toEqual([]);
          expect(fs.existsSync(n.dataDir)).toBe(true);
        }
        expect(cluster.node('a').socketPath).not.toBe(cluster.node('b').socketPath);
        const args = clusterKernelArgs(cluster.node('a').context, ['--log-level', 'warn']);
        expect(args.slice(0, 4)).toEqual([
          '--cluster',
          `etcd://${A}:${new URL(cluster.etcdUrl!).port}`,
          '--nats',
          `nats://${A}:${new URL(cluster.natsUrl!).port}`,
        ]);
        expect(args.slice(4)).toEqual(['--node', 'a', '--advertise', `${A}:7070`, '--log-level', 'warn']);
      });

      it('runs a python3 agent and a node agent on a node, both reaching the kernel through the SDKs', async () => {
        const a = cluster.node('a');
        fs.writeFileSync(path.join(a.dir, 'py_agent.py'), PY_AGENT, { mode: 0o644 });
        fs.writeFileSync(path.join(a.dir, 'js_agent.mjs'), JS_AGENT, { mode: 0o644 });
        const c = await a.client();
        await c.spawn({ name: 'py', script: path.join(a.dir, 'py_agent.py') });
        await c.spawn({ name: 'js', script: path.join(a.dir, 'js_agent.mjs') });
        const py = await until(
          async () => (await c.fetch('py-agent', 'global')).value,
          60_000,
          'the python agent',
        );
        const js = await until(
          async () => (await c.fetch('js-agent', 'global')).value,
          60_000,
          'the node agent',
        );
        expect((py as { python: string }).python).toMatch(/^3\./);
        expect((js as { node: string }).node).toBe(process.version);
        const states = Object.fromEntries((await c.list()).map((x) => [x.name, x.state]));
        expect(states).toMatchObject({ py: 'RUNNING', js: 'RUNNING' });
      });

      it('a script in the shared directory runs on every node, a node directory only on its node', async () => {
        fs.writeFileSync(path.join(cluster.sharedDir, 'py_agent.py'), PY_AGENT, { mode: 0o644 });
        for (const n of cluster.nodes) {
          const c = await n.client();
          await c.delete('py-agent', 'global');
          await c.spawn({ name: 'shared', script: path.join(cluster.sharedDir, 'py_agent.py') });
          await until(
            async () => (await c.fetch('py-agent', 'global')).value,
            60_000,
            `the agent on ${n.name}`,
          );
          await c.kill('shared');
        }
        // b cannot run what lives in a's directory (in a container it is not even there).
        const b = await cluster.node('b').client();
        const own = await b
          .spawn({ name: 'notmine', script: path.join(cluster.node('a').dir, 'py_agent.py') })
          .then(
            () => null,
            (e: Error) => e,
          );
        if (label === 'docker') expect(own?.message).toMatch(/not found|not readable/);
        else if (!own) await b.kill('notmine');
      });

      it('pause: a call to the node times out; resume: it answers again', async () => {
        const b = cluster.node('b');
        await b.pause();
        const stuck = await b.client({ timeoutMs: 3000, reconnect: false }).catch((e: Error) => e);
        if (!(stuck instanceof Error))
          await expect(stuck.hello()).rejects.toThrow(/no reply to opcode .* within/);
        await b.resume();
        const c = await b.client();
        expect((await c.hello()).success).toBe(true);
      });

      it('kill: the node stops answering; restart: it answers again on the same data dir', async () => {
        const a = cluster.node('a');
        await a.kill();
        expect(await socketAccepts(a.socketPath)).toBe(false);
        await expect(a.client({ reconnect: false })).rejects.toThrow();
        await a.restart();
        const c = await a.client();
        expect((await c.hello()).success).toBe(true);
        expect(Array.isArray(await c.list())).toBe(true);
        expect(await a.logs()).toBeTypeOf('string');
      });

      it.skipIf(!root)(
        'partition(a, b) drops TCP between their addresses both ways; heal(a, b) lets it through',
        async () => {
          const [la, lb] = [await listenOn(A), await listenOn(B)];
          try {
            expect(await tcpConnects(A, B, lb.port)).toBe(true);
            expect(await tcpConnects(B, A, la.port)).toBe(true);
            await cluster.partition(cluster.node('a'), 'b'); // by handle and by name
            expect(await tcpConnects(A, B, lb.port)).toBe(false);
            expect(await tcpConnects(B, A, la.port)).toBe(false);
            // Other addresses are not affected.
            expect(await tcpConnects('127.0.0.1', B, lb.port)).toBe(true);
            await cluster.heal(A, B); // by address this time
            expect(await tcpConnects(A, B, lb.port)).toBe(true);
            expect(await tcpConnects(B, A, la.port)).toBe(true);
          } finally {
            la.close();
            lb.close();
          }
        },
      );

      it.skipIf(!root)(
        'isolate(node) cuts the node off etcd and NATS (its own URLs), rejoin(node) restores them',
        async () => {
          const a = cluster.node('a');
          const b = cluster.node('b');
          const port = (u: string) => Number(new URL(u).port);
          // Each node reaches the services at its own address (DNAT to 127.0.0.1).
          expect(new URL(a.context.etcdUrl).hostname).toBe(A);
          expect(new URL(b.context.natsUrl).hostname).toBe(B);
          expect(await tcpConnects('127.0.0.1', A, port(a.context.etcdUrl))).toBe(true);
          await cluster.isolate(a);
          expect(await tcpConnects('127.0.0.1', A, port(a.context.etcdUrl))).toBe(false);
          expect(await tcpConnects('127.0.0.1', A, port(a.context.natsUrl))).toBe(false);
          expect(await tcpConnects('127.0.0.1', B, port(b.context.etcdUrl))).toBe(true);
          await cluster.rejoin(a);
          expect(await tcpConnects('127.0.0.1', A, port(a.context.etcdUrl))).toBe(true);
          expect(await tcpConnects('127.0.0.1', A, port(a.context.natsUrl))).toBe(true);
        },
      );

      it.skipIf(!root)(
        'from the node itself (an agent with network on it), etcd at its URL goes away on isolate and comes back on rejoin',
        async () => {
          const a = cluster.node('a');
          fs.writeFileSync(path.join(a.dir, 'probe.py'), PROBE_AGENT, { mode: 0o644 });
          const c = await a.client();
          const u = new URL(a.context.etcdUrl);
          await c.spawn({
            name: 'probe',
            script: path.join(a.dir, 'probe.py'),
            args: [u.hostname, u.port],
            network: true,
          });
          // Each wait needs tries that started after the change: n moves past the value seen at the change.
          const probe = async () =>
            (await c.fetch('probe', 'global')).value as { ok: boolean; n: number } | null;
          const settle = async (ok: boolean, what: string) => {
            const from = (await probe())?.n ?? 0;
            await until(
              async () => {
                const p = await probe();
                return p && p.n > from + 1 && p.ok === ok;
              },
              60_000,
              what,
            );
          };
          await settle(true, 'the probe to reach etcd');
          await cluster.isolate(a);
          await settle(false, 'the probe to lose etcd');
          await cluster.rejoin(a);
          await settle(true, 'the probe to reach etcd again');
          await c.kill('probe');
        },
      );

      it('stop() leaves no node process or container, no iptables rule and no temporary directory', async () => {
        const a = cluster.node('a');
        const c = await a.client();
        await c.spawn({ name: 'py2', script: path.join(a.dir, 'py_agent.py') });
        if (root) await cluster.partition(A, B);
        const dirs = [
          ...cluster.nodes.map((n) => n.dir),
          cluster.sharedDir,
          cluster.etcd!.dir,
          cluster.nats!.dir,
        ];
        const mine = async () => (await harnessRules()).filter((r) => r.args.includes(cluster.ruleTag!));
        // The partition's 2 DROP rules and the 4 DNAT rules (2 nodes × etcd, NATS).
        if (root) expect((await mine()).length).toBe(6);
        await cluster.stop();
        for (const d of dirs) expect(fs.existsSync(d)).toBe(false);
        for (const n of cluster.nodes) expect(await socketAccepts(n.socketPath)).toBe(false);
        if (root) expect(await mine()).toEqual([]);
        await opts.afterStop?.(cluster);
        await cluster.stop(); // idempotent
      }, 120_000);
    },
  );
}
