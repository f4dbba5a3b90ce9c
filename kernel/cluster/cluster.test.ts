/**
 * The kernel's cluster wiring (kernel/cluster/cluster.ts) against real etcd and NATS JetStream
 * (harness/services.ts): two kernels in this process (node `a` on the native fast path, node `b` in
 * JavaScript, so that both paths send and receive across nodes), and a kernel process killed with
 * SIGKILL whose restartable agent comes back on a survivor. No timing asserts: every wait is for a
 * condition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { startEtcd, startNats, type ServiceProcess } from '../../harness/services.js';
import {
  REPO_ROOT,
  startKernel,
  startKernelProcess,
  tempDir,
  until,
  type KernelProcess,
  type TestKernel,
} from '../../harness/kernel.js';
import { CloveClient } from '../../sdk/typescript/client.js';
import { Kernel } from '../kernel.js';
import { createEngines } from './cluster.js';
import { nativeAvailable } from '../sandbox/native.js';
import { Op } from '../../protocol/index.js';
import type { ClusterOptions, DirectoryEvent } from './types.js';
import { clusterOptions } from '../config.js';
import { KernelStartError } from '../core/errors.js';

const probe = path.join(REPO_ROOT, 'kernel', 'testdata', 'probe_agent.py');
const idle = path.join(REPO_ROOT, 'sdk', 'conformance', 'agents', 'idle.py');
const fast = nativeAvailable();

let etcd: ServiceProcess;
let nats: ServiceProcess;
let a: TestKernel;
let b: TestKernel;
const prefix = `t${process.pid}`;
let serial = 0;
/** A name unique to this run. */
const uniq = (s: string) => `${s}-${++serial}`;

function clusterOpts(node: string, leaseTtlS = 4): ClusterOptions {
  return {
    etcd: [etcd.url],
    nats: [nats.url],
    node,
    advertise: `127.0.0.1:${7100 + serial++}`,
    leaseTtlS,
    prefix,
  };
}

/** Receives until `n` messages arrived (each RECV waits in the kernel). */
async function recvN(c: CloveClient, n: number, timeoutMs = 30_000) {
  const got: { from: number; from_name: string; message: unknown }[] = [];
  await until(
    async () => {
      const r = await c.recv({ max: n - got.length, timeoutMs: 1000 });
      got.push(...(r.messages as typeof got));
      return got.length >= n;
    },
    timeoutMs,
    `${n} messages`,
  );
  return got;
}

/** An operator client registered under `name`. */
async function named(k: { client(): Promise<CloveClient> }, name: string) {
  const c = await k.client();
  await c.register(name);
  const id = (await c.hello()).agent_id;
  return { c, id, name };
}

beforeAll(async () => {
  [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
  a = await startKernel({ sandbox: 'off', fastPath: fast, cluster: clusterOpts('a') });
  b = await startKernel({ sandbox: 'off', fastPath: false, cluster: clusterOpts('b') });
});

afterAll(async () => {
  await b?.stop();
  await a?.stop();
  await Promise.all([etcd?.stop(), nats?.stop()]);
});

describe('one cluster of two kernels', () => {
  it('SEND crosses nodes by name@node and by plain name, both ways, byte for byte with from and from_name', async () => {
    const alice = await named(a, uniq('alice'));
    const bob = await named(b, uniq('bob'));
    const m1 = { text: 'héllo → ☃', n: [1, 2.5, -3e-7], nested: { ok: true, nil: null }, s: '\u0000\t"' };
    const m2 = 'just a string';
    // Names reach other nodes through the directory's watch (docs/cluster.md): a SEND made before a's cache
    // has bob is not_found and delivers nothing, so it is tried again until a knows the name.
    const first = await until(
      () => alice.c.send(`${bob.name}@b`, m1).catch(() => null),
      30_000,
      "a to learn bob's name",
    );
    expect(first).toMatchObject({ success: true, delivered_to: bob.id });
    expect((await alice.c.send(bob.name, m2)).delivered_to).toBe(bob.id);
    const got = await recvN(bob.c, 2);
    expect(got.map((m) => m.message)).toEqual([m1, m2]);
    for (const m of got) expect(m).toMatchObject({ from: alice.id, from_name: alice.name });
    // And back, to the remote sender's id (ids are unique cluster-wide) and to name@node.
    await bob.c.send(alice.id, { back: 1 });
    await bob.c.send(`${alice.name}@a`, { back: 2 });
    const back = await recvN(alice.c, 2);
    expect(back.map((m) => m.message)).toEqual([{ back: 1 }, { back: 2 }]);
    expect(back[0]).toMatchObject({ from: bob.id, from_name: bob.name });
  });

  it('an agent on a sends to a named client on b (its SEND goes through the fast path on a)', async () => {
    const ctl = await named(a, uniq('ctl'));
    const bob = await named(b, uniq('bob'));
    const pa = uniq('pa');
    const sa = await ctl.c.spawn({ name: pa, script: probe, sandboxed: false });
    const message = { from: 'an agent', list: [1, 'two', { three: 3 }] };
    await ctl.c.send(pa, { cmd: 'call', op: Op.SEND, payload: { to_name: `${bob.name}@b`, message } });
    const answer = await recvN(ctl.c, 1);
    expect(answer[0].message).toMatchObject({
      type: 'answer',
      to_cmd: 'call',
      out: { success: true, delivered_to: bob.id },
    });
    const got = await recvN(bob.c, 1);
    expect(got[0]).toEqual(expect.objectContaining({ from: sa.id, from_name: pa, message }));
    await ctl.c.kill(pa);
  });

  it('an agent on b answers a client on a that wrote to it by name', async () => {
    const ctl = await named(a, uniq('ctl'));
    const pb = uniq('pb');
    const sb = await (await b.client()).spawn({ name: pb, script: probe, sandboxed: false });
    await ctl.c.send(pb, { cmd: 'whoami' });
    const got = await recvN(ctl.c, 1);
    expect(got[0]).toMatchObject({
      from: sb.id,
      from_name: pb,
      message: { type: 'answer', to_cmd: 'whoami' },
    });
    await (await b.client()).kill(pb);
  });

  it('a name spawned or registered on one node is name_taken on the other', async () => {
    const name = uniq('dup');
    const ca = await a.client();
    const cb = await b.client();
    const s = await ca.spawn({ name, script: idle, sandboxed: false });
    await expect(cb.spawn({ name, script: idle, sandboxed: false })).rejects.toMatchObject({
      code: 'name_taken',
    });
    await expect(cb.register(name)).rejects.toMatchObject({ code: 'name_taken' });
    const reg = uniq('reg');
    await cb.register(reg);
    await expect(ca.register(reg)).rejects.toMatchObject({ code: 'name_taken' });
    await expect(ca.spawn({ name: reg, script: idle, sandboxed: false })).rejects.toMatchObject({
      code: 'name_taken',
    });
    // Gone for good on a: the name is free for b.
    await ca.kill(name, { wait: true });
    const again = await until(
      () => cb.spawn({ name, script: idle, sandboxed: false }).catch(() => null),
      30_000,
      'the name to be free on b',
    );
    expect(again.id).not.toBe(s.id);
    await cb.kill(name);
  });

  it('SPAWNs of one name at once, twice on a and once on b: exactly one wins, the others are name_taken', async () => {
    const name = uniq('race');
    const clients = [await a.client(), await a.client(), await b.client()];
    const rs = await Promise.allSettled(
      clients.map((c) => c.spawn({ name, script: idle, sandboxed: false })),
    );
    const won = rs.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
    expect(won).toHaveLength(1);
    for (const r of rs)
      if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('name_taken');
    const winner = clients[won[0]];
    expect((await winner.list()).find((x) => x.name === name)?.state).toBe('RUNNING');
    await winner.kill(name);
  });

  it("an operator on a restarts and kills b's agents by name, name@node and id; an unknown one is not_found", async () => {
    const ca = await a.client();
    const cb = await b.client();
    const n1 = uniq('remote');
    const n2 = uniq('remote');
    const s1 = await cb.spawn({ name: n1, script: idle, sandboxed: false });
    const s2 = await cb.spawn({ name: n2, script: idle, sandboxed: false });
    const r = await ca.restart(n1, { wait: true });
    expect(r).toMatchObject({ success: true, restarted: true, agent_id: s1.id });
    expect(r.pid).toBeGreaterThan(0);
    expect(r.pid).not.toBe(s1.pid);
    expect(await ca.kill(`${n1}@b`, { wait: true })).toMatchObject({ killed: true, agent_id: s1.id });
    expect(await ca.kill(s2.id, { wait: true })).toMatchObject({ killed: true, agent_id: s2.id });
    const left = await cb.list();
    for (const id of [s1.id, s2.id])
      expect(left.find((x) => x.id === id && x.state !== 'STOPPED')).toBeUndefined();
    await expect(ca.kill(`${n1}@b`)).rejects.toMatchObject({ code: 'not_found' });
  });

  it('an unknown name or name@node is not_found; SEND_BATCH mixes local and remote items in order', async () => {
    const x = await named(a, uniq('x'));
    const y = await named(a, uniq('y'));
    const z = await named(b, uniq('z'));
    const yName = y.name;
    const zName = z.name;
    await expect(x.c.send(uniq('nobody'), {})).rejects.toMatchObject({ code: 'not_found' });
    await expect(x.c.send(`${zName}@a`, {})).rejects.toMatchObject({ code: 'not_found' });
    await expect(x.c.send(`${zName}@nonode`, {})).rejects.toMatchObject({ code: 'not_found' });
    const r = await x.c.sendBatch([
      { to_name: yName, message: 1 },
      { to_name: `${zName}@b`, message: 2 },
      { to_name: uniq('nobody'), message: 3 },
      { to: z.id, message: 4 },
      { to_name: `${yName}@a`, message: 5 },
    ]);
    expect(r, JSON.stringify(r)).toMatchObject({ delivered_count: 4, failed_count: 1 });
    expect(r.results.map((i) => i.delivered_to ?? i.code)).toEqual([y.id, z.id, 'not_found', z.id, y.id]);
    expect((await recvN(y.c, 2)).map((m) => m.message)).toEqual([1, 5]);
    expect((await recvN(z.c, 2)).map((m) => m.message)).toEqual([2, 4]);
  });

  it('BROADCAST reaches named agents on both nodes, from either (a on the fast path, b in JavaScript)', async () => {
    const la = await named(a, uniq('la'));
    const lb1 = await named(b, uniq('lb'));
    const lb2 = await named(b, uniq('lb'));
    for (const [sender, msg] of [
      [await named(a, uniq('bca')), { all: 'hands', from: 'a' }],
      [await named(b, uniq('bcb')), { all: 'hands', from: 'b' }],
    ] as const) {
      const r = await sender.c.broadcast(msg);
      expect(r.success).toBe(true);
      for (const r2 of [la, lb1, lb2]) {
        const got = await until(
          async () =>
            (await r2.c.recv({ max: 100, timeoutMs: 1000 })).messages.find((m) => m.from === sender.id),
          30_000,
          `the broadcast of ${sender.name} at ${r2.name}`,
        );
        expect(got).toMatchObject({ from_name: sender.name, message: msg });
      }
    }
  });

  it('an event on b is seen by a subscriber on a, with its node', async () => {
    const sub = await a.client();
    const ev = uniq('ping');
    await sub.subscribe([ev]);
    const pub = await b.client();
    await pub.emit(ev, { k: 1 });
    const seen = await until(
      async () =>
        (await sub.pollEvents({ max: 10, timeoutMs: 1000 })).events.find(
          (e) => (e.data as { custom_type?: string }).custom_type === ev,
        ),
      30_000,
      'the event from b',
    );
    expect(seen.data).toMatchObject({ k: 1, node: 'b', custom_type: ev });
  });

  it('CLUSTER_NODES, CLUSTER_STATUS, LIST all_nodes and clove nodes / clove ps see both nodes', async () => {
    const ca = await a.client();
    const nodes = await ca.clusterNodes();
    expect(nodes.clustered).toBe(true);
    expect(nodes.nodes.map((n) => n.node).sort()).toEqual(['a', 'b']);
    expect(nodes.nodes.find((n) => n.node === 'a')).toMatchObject({ self: true, alive: true });
    const st = await ca.clusterStatus();
    expect(st).toMatchObject({ clustered: true, node: 'a', prefix, nodes_alive: 2, etcd: [etcd.url] });
    const name = uniq('listed');
    const s = await (await b.client()).spawn({ name, script: idle, sandboxed: false });
    const all = await ca.list({ all_nodes: true });
    expect(all.find((x) => x.name === name)).toMatchObject({ id: s.id, node: 'b' });
    expect((await ca.list()).some((x) => x.name === name)).toBe(false);
    const cli = (...args: string[]) =>
      new Promise<string>((res, rej) =>
        execFile(
          process.execPath,
          [path.join(REPO_ROOT, 'bin', 'clove.js'), '--socket', a.socketPath, ...args],
          { encoding: 'utf8' },
          (err, out, errOut) => (err ? rej(new Error(`${err.message}\n${errOut}`)) : res(out)),
        ),
      );
    const table = await cli('nodes');
    expect(table).toMatch(/NODE/);
    expect(table).toMatch(/^a \*/m);
    expect(table).toMatch(/^b /m);
    const ps = await cli('ps');
    expect(ps).toMatch(/NODE/);
    expect(ps).toMatch(new RegExp(`${name}\\s+b\\s`));
    await (await b.client()).kill(name);
  });
});

describe('a node lost', () => {
  let k: KernelProcess | undefined;
  afterAll(async () => {
    await k?.stop('SIGKILL');
  });

  it("a killed kernel process's restartable agent comes back on a survivor with its name and the mail sent meanwhile", async () => {
    k = await startKernelProcess({
      extra: [
        '--sandbox',
        'off',
        '--log-level',
        'warn',
        '--cluster',
        etcd.url.replace('http://', 'etcd://'),
        '--nats',
        nats.url,
        '--node',
        'c',
        '--advertise',
        '127.0.0.1:7199',
        '--lease-ttl',
        '3',
        '--cluster-prefix',
        prefix,
      ],
    });
    const ctl = await named(a, uniq('ctl'));
    const name = uniq('phoenix');
    const ck = await k.client();
    const s = await ck.spawn({ name, script: probe, sandboxed: false, restart_policy: 'always' });
    await until(async () => (await ctl.c.clusterNodes()).nodes.some((n) => n.node === 'c'), 30_000, 'c');
    // Reachable from a while it lives on c.
    await ctl.c.send(name, { cmd: 'whoami' });
    expect((await recvN(ctl.c, 1))[0]).toMatchObject({ from: s.id, message: { to_cmd: 'whoami' } });
    k.child.kill('SIGKILL');
    await k.exited;
    // Sent while c is dead (its lease not yet expired): kept by JetStream for the name's next owner.
    const sent = await ctl.c.send(name, { cmd: 'hello' });
    expect(sent.delivered_to).toBe(s.id);
    // Placement (most free memory, fewest agents, name) picks a or b: both run on this machine.
    const back = await until(
      async () =>
        (await ctl.c.list({ all_nodes: true })).find((x) => x.name === name && x.state === 'RUNNING'),
      60_000,
      `${name} to run again on a survivor`,
    );
    expect(['a', 'b']).toContain(back.node);
    expect(back.id).not.toBe(s.id);
    const got = await recvN(ctl.c, 1, 90_000);
    expect(got[0]).toMatchObject({ from: back.id, from_name: name, message: { to_cmd: 'hello' } });
    const nodes = (await ctl.c.clusterNodes()).nodes;
    expect(nodes.find((n) => n.node === 'c')).toMatchObject({ alive: false });
    await (await (back.node === 'a' ? a : b).client()).kill(name);
  }, 180_000);
});

describe('a lost lease (partition)', () => {
  it('stops the agents whose names the node owned and rejoins; one no survivor took over starts again there under its name, one taken over does not', async () => {
    const dir = tempDir();
    let inject: ((e: DirectoryEvent) => void) | undefined;
    const engines = async (o: ClusterOptions, deps: { log: Logger; version: string }) => {
      const eng = await createEngines(o, deps);
      const on = eng.directory.on.bind(eng.directory);
      eng.directory.on = (l) => {
        inject = l;
        return on(l);
      };
      return eng;
    };
    const k = new Kernel(
      {
        socketPath: path.join(dir, 'e.sock'),
        dataDir: path.join(dir, 'data'),
        logLevel: 'silent',
        sandbox: 'off',
        shutdownGraceMs: 2000,
        cluster: clusterOpts('e'),
      },
      undefined,
      engines,
    );
    await k.start();
    const etcdClient = new Etcd3({ hosts: etcd.url });
    try {
      const c = await CloveClient.connect({ socketPath: path.join(dir, 'e.sock') });
      const name = uniq('victim');
      const moved = uniq('moved');
      const s = await c.spawn({ name, script: idle, sandboxed: false, restart_policy: 'always' });
      const m = await c.spawn({ name: moved, script: idle, sandboxed: false, restart_policy: 'always' });
      const defKey = (n: string) => `/${prefix}/defs/${n}`;
      expect(JSON.parse((await etcdClient.get(defKey(name)).string()) ?? '{}')).toMatchObject({
        name,
        node: 'e',
      });
      // As a survivor's takeover would leave it: the definition is another node's now.
      const def = JSON.parse((await etcdClient.get(defKey(moved)).string())!) as Record<string, unknown>;
      await etcdClient.put(defKey(moved)).value(JSON.stringify({ ...def, node: 'elsewhere' }));
      inject!({ type: 'lease-lost' });
      // Killed for good (not restarted under its policy: its name may be someone else's now).
      await until(
        async () => !(await c.list()).some((a) => (a.id === s.id || a.id === m.id) && a.state !== 'STOPPED'),
        30_000,
        `${name} and ${moved} to stop`,
      );
      // Nobody took `name` over: after the rejoin it runs here again, under its name (a new id).
      const back = await until(
        async () => (await c.list()).find((a) => a.name === name && a.state === 'RUNNING'),
        30_000,
        `${name} to run again`,
      );
      expect(back.id).not.toBe(s.id);
      expect(JSON.parse((await etcdClient.get(defKey(name)).string())!)).toMatchObject({ name, node: 'e' });
      expect((await c.send(name, { after: 'rejoin' })).success).toBe(true);
      // `moved` is the other node's to start: not here, and its definition is left as it was.
      expect((await c.list()).some((a) => a.name === moved)).toBe(false);
      expect(JSON.parse((await etcdClient.get(defKey(moved)).string())!)).toMatchObject({
        node: 'elsewhere',
      });
      expect((await c.clusterStatus()).names_owned).toBe(1);
      c.close();
    } finally {
      etcdClient.close();
      await k.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('cluster flags (clove kernel)', () => {
  it('get their defaults and are refused with the flag named', () => {
    expect(clusterOptions({})).toBeNull();
    const o = clusterOptions({
      cluster: 'etcd://10.0.0.5:2379,http://10.0.0.6:2379',
      nats: 'nats://10.0.0.5:4222',
    });
    expect(o).toMatchObject({
      etcd: ['http://10.0.0.5:2379', 'http://10.0.0.6:2379'],
      nats: ['nats://10.0.0.5:4222'],
      leaseTtlS: 10,
      prefix: 'clove',
    });
    expect(o!.advertise).toMatch(/:7070$/);
    const bad = (f: Parameters<typeof clusterOptions>[0], re: RegExp) => {
      let err: unknown;
      try {
        clusterOptions(f);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(KernelStartError);
      expect((err as KernelStartError).exitCode).toBe(2);
      expect((err as Error).message).toMatch(re);
    };
    const base = { cluster: 'etcd://h:1', nats: 'nats://h:2' };
    bad({ nats: 'nats://h:2' }, /--nats needs --cluster/);
    bad({ cluster: 'etcd://h:1' }, /--cluster needs --nats/);
    bad({ ...base, cluster: 'redis://h:1' }, /invalid --cluster endpoint/);
    bad({ ...base, nats: 'nats://h' }, /invalid --nats endpoint/);
    bad({ ...base, node: 'a b' }, /invalid --node/);
    bad({ ...base, advertise: 'nohostport' }, /invalid --advertise/);
    bad({ ...base, leaseTtl: 1 }, /invalid --lease-ttl/);
    bad({ ...base, prefix: 'a.b' }, /invalid --cluster-prefix/);
  });
});

describe('a kernel without --cluster', () => {
  it('never loads etcd3 or nats (a clustered one does)', async () => {
    // A child process: this test process has loaded both already.
    const script = `
      import { createRequire } from 'node:module';
      import fs from 'node:fs';
      import os from 'node:os';
      import path from 'node:path';
      const { Kernel } = await import(${JSON.stringify(path.join(REPO_ROOT, 'dist', 'kernel', 'kernel.js'))});
      const cache = () => Object.keys(createRequire(import.meta.url)('node:module')._cache);
      const loaded = () => ['etcd3', 'nats'].filter((m) => cache().some((f) => f.includes('/node_modules/' + m + '/')));
      const out = {};
      for (const cluster of [null, JSON.parse(process.env.CLUSTER)]) {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clv'));
        const k = new Kernel({ socketPath: path.join(dir, 's'), dataDir: path.join(dir, 'd'), logLevel: 'silent', sandbox: 'off', cluster });
        await k.start();
        out[cluster ? 'clustered' : 'alone'] = loaded();
        await k.close();
        fs.rmSync(dir, { recursive: true, force: true });
      }
      console.log(JSON.stringify(out));
      process.exit(0);
    `;
    const out = await new Promise<string>((res, rej) =>
      execFile(
        process.execPath,
        ['--input-type=module', '-e', script],
        { encoding: 'utf8', env: { ...process.env, CLUSTER: JSON.stringify(clusterOpts('solo')) } },
        (err, stdout, stderr) => (err ? rej(new Error(`${err.message}\n${stderr}`)) : res(stdout)),
      ),
    );
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({ alone: [], clustered: ['etcd3', 'nats'] });
  });

  it('answers CLUSTER_NODES and CLUSTER_STATUS with clustered: false', async () => {
    const k = await startKernel({ sandbox: 'off' });
    try {
      const c = await k.client();
      expect(await c.clusterNodes()).toEqual({ success: true, clustered: false, nodes: [] });
      expect(await c.clusterStatus()).toEqual({ success: true, clustered: false, node: null });
      expect(await c.send('x@b', {}).catch((e) => e.code)).toBe('not_found');
    } finally {
      await k.stop();
    }
  });
});
