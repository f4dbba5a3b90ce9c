/**
 * EtcdDirectory against a real etcd (harness/services.ts startEtcd): membership, names, ids, leases,
 * partitions and agent definitions, seen from two or three directories on one etcd. No timing asserts:
 * every wait is for a condition.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Etcd3 } from 'etcd3';
import { startEtcd, freePort, which, type ServiceProcess } from '../../harness/services.js';
import { until } from '../../harness/kernel.js';
import { EtcdDirectory, SLOT_SIZE } from './directory.js';
import {
  ClusterOptionError,
  DefRevisionMissingError,
  DirectoryClosedError,
  EtcdUnreachableError,
  IdsExhaustedError,
  LeaseLostError,
  NodeNameInUseError,
} from './errors.js';
import type { DirectoryEvent } from './types.js';

const log = pino({ level: process.env.CLOVE_TEST_LOG ?? 'silent' });
let etcd: ServiceProcess;
let prefixSerial = 0;
const open: EtcdDirectory[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});
afterEach(async () => {
  etcd.resume();
  for (const d of open.splice(0)) await d.close();
});

/**
 * A directory for `node` in this test's own key prefix (tests do not see each other's keys); `url` is
 * another etcd (or a proxy in front of this one), `fast` shortens its request timeout to 2 s.
 */
function dir(
  node: string,
  prefix: string,
  leaseTtlS = 10,
  o: { url?: string; fast?: boolean; refreshMs?: number } = {},
): EtcdDirectory {
  const d = new EtcdDirectory(
    {
      etcd: [o.url ?? etcd.url.replace('http://', 'etcd://')],
      nats: [],
      node,
      advertise: `127.0.0.1:${7000 + open.length}`,
      leaseTtlS,
      prefix,
    },
    {
      log: log.child({ node }),
      version: 'test',
      refreshMs: o.refreshMs ?? 500,
      requestTimeoutMs: o.fast ? 2000 : 3000,
    },
  );
  open.push(d);
  return d;
}

function newPrefix(): string {
  return `t${process.pid}_${++prefixSerial}`;
}

function events(d: EtcdDirectory): DirectoryEvent[] {
  const seen: DirectoryEvent[] = [];
  d.on((e) => seen.push(e));
  return seen;
}

/**
 * A TCP proxy in front of etcd for one node: `cut()` resets its connections and refuses new ones (a
 * crashed link), `blackhole()` holds every byte back without closing anything (a partition that drops
 * packets), `heal()` lets everything through again (held bytes first, in order).
 */
async function etcdProxy(target: number) {
  let mode: 'open' | 'cut' | 'black' = 'open';
  const links = new Set<{ a: net.Socket; b: net.Socket; held: [net.Socket, Buffer][] }>();
  const server = net.createServer((a) => {
    if (mode === 'cut') return void a.destroy();
    const b = net.connect(target, '127.0.0.1');
    const link = { a, b, held: [] as [net.Socket, Buffer][] };
    links.add(link);
    const end = () => {
      links.delete(link);
      a.destroy();
      b.destroy();
    };
    const forward = (to: net.Socket) => (d: Buffer) => {
      if (mode === 'black') link.held.push([to, d]);
      else to.write(d);
    };
    a.on('data', forward(b));
    b.on('data', forward(a));
    for (const s of [a, b]) {
      s.on('error', end);
      s.on('close', end);
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      mode = 'cut';
      for (const l of links) l.a.destroy();
    },
    blackhole() {
      mode = 'black';
    },
    heal() {
      mode = 'open';
      for (const l of links) for (const [to, d] of l.held.splice(0)) to.write(d);
    },
    close() {
      for (const l of links) l.a.destroy();
      server.close();
    },
  };
}

/** Whether this process may change the firewall (root, iptables installed, CAP_NET_ADMIN). */
/**
 * Runs `fn` on a joined `d`; a short test lease lost again meanwhile (a loaded machine: no keep-alive
 * answered within the TTL) is joined again and `fn` tried again.
 */
async function whileJoined<T>(d: EtcdDirectory, fn: () => T | Promise<T>, what: string): Promise<T> {
  return until(
    async () => {
      try {
        return { v: await fn() };
      } catch (e) {
        if (!(e instanceof LeaseLostError)) throw e;
        await d.rejoin().catch(() => undefined);
        return undefined;
      }
    },
    60_000,
    what,
  ).then((r) => r.v);
}

function canIptables(): boolean {
  if (process.getuid?.() !== 0 || !which('iptables')) return false;
  try {
    execFileSync('iptables', ['-S', 'INPUT'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

describe('EtcdDirectory', () => {
  it('two nodes see each other, with the NodeInfo they publish', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    const b = dir('b', p);
    const seenA = events(a);
    await a.start();
    await b.start();
    await until(() => a.nodes().length === 2 && b.nodes().length === 2, 10_000, 'both nodes in both caches');
    expect(a.nodes().map((n) => n.node)).toEqual(['a', 'b']);
    await until(
      () => seenA.some((e) => e.type === 'node-joined' && e.node.node === 'b'),
      10_000,
      'a sees b join',
    );
    const infoB = a.nodes().find((n) => n.node === 'b')!;
    expect(infoB.version).toBe('test');
    expect(infoB.cores).toBeGreaterThan(0);
    expect(infoB.freeMemory).toBeGreaterThan(0);
    await b.publish({ agents: 7 });
    await until(
      () => a.nodes().find((n) => n.node === 'b')?.agents === 7,
      10_000,
      'a sees b publish 7 agents',
    );
  });

  it('a name claimed by both nodes at once has exactly one owner, and both learn the same one', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    const b = dir('b', p);
    await Promise.all([a.start(), b.start()]);
    for (let i = 0; i < 10; i++) {
      const name = `w${i}`;
      const [ra, rb] = await Promise.all([
        a.claim({ name, id: a.allocateId(), identity: `${name}#1` }),
        b.claim({ name, id: b.allocateId(), identity: `${name}#1` }),
      ]);
      expect(ra).toEqual(rb);
      expect(['a', 'b']).toContain(ra.node);
      await until(
        () => a.owner(name)?.node === ra.node && b.owner(name)?.node === ra.node,
        10_000,
        'both caches',
      );
    }
  });

  it('ids of two nodes never collide, and ownerOfId resolves a remote id', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    const b = dir('b', p);
    await a.start();
    await b.start();
    const ids = new Set<number>();
    for (let i = 0; i < 200; i++) {
      ids.add(a.allocateId());
      ids.add(b.allocateId());
    }
    expect(ids.size).toBe(400);
    const ia = a.allocateId();
    const ib = b.allocateId();
    expect(Math.floor(ia / SLOT_SIZE)).not.toBe(Math.floor(ib / SLOT_SIZE));
    expect(ia).toBeLessThan(2 ** 32);
    await b.claim({ name: 'remote', id: ib, identity: 'remote#1' });
    await until(() => a.ownerOfId(ib), 10_000, 'a to resolve b id');
    expect(a.ownerOfId(ib)).toEqual({ name: 'remote', node: 'b', id: ib, identity: 'remote#1' });
  });

  it('a used-up id slot moves on to the next slot, claimed ahead of time', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    await a.start();
    const first = a.allocateId();
    a.skipIds(SLOT_SIZE - 10);
    a.allocateId(); // past 90 %: the next slot is claimed in the background
    await a.spareReady();
    let last = 0;
    for (let i = 0; i < 20; i++) last = a.allocateId();
    expect(Math.floor(last / SLOT_SIZE)).toBe(Math.floor(first / SLOT_SIZE) + 1);
  });

  it('a used-up slot with no next slot ready is a clear error until the next slot is claimed', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    await a.start();
    const first = a.allocateId();
    a.skipIds(SLOT_SIZE); // jumps past the 90 % mark without an allocation there: nothing claimed ahead
    expect(() => a.allocateId()).toThrow(IdsExhaustedError);
    await a.spareReady();
    expect(Math.floor(a.allocateId() / SLOT_SIZE)).toBe(Math.floor(first / SLOT_SIZE) + 1);
  });

  it('refuses a malformed node name before contacting etcd', () => {
    expect(
      () =>
        new EtcdDirectory(
          { etcd: [etcd.url], nats: [], node: 'no/slash', advertise: 'x:1', leaseTtlS: 10, prefix: 'clove' },
          { log, version: 'test' },
        ),
    ).toThrow(ClusterOptionError);
  });

  it('claiming a name this node owns again keeps it and rewrites its id; release frees it for another node', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    const b = dir('b', p);
    await a.start();
    await b.start();
    const id1 = a.allocateId();
    expect((await a.claim({ name: 'x', id: id1, identity: 'x#1' })).node).toBe('a');
    const id2 = a.allocateId();
    expect(await a.claim({ name: 'x', id: id2, identity: 'x#2' })).toEqual({
      name: 'x',
      node: 'a',
      id: id2,
      identity: 'x#2',
    });
    await until(() => b.ownerOfId(id2)?.name === 'x', 10_000, 'b to see the new id');
    expect(b.ownerOfId(id1)).toBeUndefined();
    expect((await b.claim({ name: 'x', id: b.allocateId(), identity: 'x#1' })).node).toBe('a');
    await b.release('x'); // not b's: nothing happens
    expect(a.owner('x')?.node).toBe('a');
    const seenB = events(b);
    await a.release('x');
    await until(
      () => seenB.some((e) => e.type === 'name-released' && e.name === 'x'),
      10_000,
      'b sees x released',
    );
    expect(b.owner('x')).toBeUndefined();
    const idb = b.allocateId();
    expect(await b.claim({ name: 'x', id: idb, identity: 'x#1' })).toEqual({
      name: 'x',
      node: 'b',
      id: idb,
      identity: 'x#1',
    });
  });

  it('a node that closes is lost at once for the others, and its names are free', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    const b = dir('b', p);
    await a.start();
    await b.start();
    await a.claim({ name: 'n1', id: a.allocateId(), identity: 'n1#1' });
    await until(() => b.owner('n1'), 10_000, 'b sees n1');
    const seenB = events(b);
    await a.close();
    await a.close(); // idempotent
    await until(() => seenB.some((e) => e.type === 'node-lost' && e.node === 'a'), 10_000, 'b sees a lost');
    await until(() => b.owner('n1') === undefined, 10_000, 'n1 free');
    expect(b.nodes().map((n) => n.node)).toEqual(['b']);
    expect((await b.claim({ name: 'n1', id: b.allocateId(), identity: 'n1#1' })).node).toBe('b');
  });

  it('a node that dies without revoking is lost when its lease expires, and its names are free', async () => {
    const p = newPrefix();
    const a = dir('a', p, 2);
    const b = dir('b', p);
    await a.start();
    await b.start();
    await a.claim({ name: 'c1', id: a.allocateId(), identity: 'c1#1' });
    await until(() => b.owner('c1'), 10_000, 'b sees c1');
    const seenB = events(b);
    await a.crash();
    await until(() => seenB.some((e) => e.type === 'node-lost' && e.node === 'a'), 20_000, 'b sees a lost');
    await until(() => b.owner('c1') === undefined, 10_000, 'c1 free');
    expect(seenB).toContainEqual({ type: 'name-released', name: 'c1', node: 'a' });
  });

  it('a second kernel with the same node name is refused while the first lives', async () => {
    const p = newPrefix();
    const a = dir('a', p, 2);
    await a.start();
    const again = dir('a', p, 2);
    const err = await again.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NodeNameInUseError);
    expect((err as Error).message).toMatch(/node name 'a' is in use/);
    expect(a.status).toBe('joined');
    expect(a.nodes().map((n) => n.node)).toEqual(['a']);
  });

  it('a node restarted right after it crashed waits for its old lease and starts', async () => {
    const p = newPrefix();
    const a = dir('a', p, 2);
    await a.start();
    await a.crash();
    const again = dir('a', p, 2);
    await again.start();
    expect(again.status).toBe('joined');
  });

  it('etcd paused past the TTL: both nodes lose their lease, names go, and both rejoin after resume', async () => {
    const p = newPrefix();
    const a = dir('a', p, 2);
    const b = dir('b', p, 2);
    await a.start();
    await b.start();
    await a.claim({ name: 'p1', id: a.allocateId(), identity: 'p1#1' });
    const seenA = events(a);
    const seenB = events(b);
    await etcd.pause();
    await until(
      () => seenA.some((e) => e.type === 'lease-lost') && seenB.some((e) => e.type === 'lease-lost'),
      20_000,
      'lease-lost on both',
    );
    expect(a.status).toBe('lost');
    expect(() => a.allocateId()).toThrow(LeaseLostError);
    await expect(a.claim({ name: 'p2', id: 1, identity: 'p2#1' })).rejects.toThrow(LeaseLostError);
    // Let etcd's clock pass the TTL too, then bring it back.
    await new Promise((r) => setTimeout(r, 2500));
    etcd.resume();
    await until(
      () =>
        a.rejoin().then(
          () => true,
          () => false,
        ),
      30_000,
      'a to rejoin',
    );
    await until(
      () =>
        b.rejoin().then(
          () => true,
          () => false,
        ),
      30_000,
      'b to rejoin',
    );
    expect(a.status).toBe('joined');
    await until(() => a.nodes().length === 2 && b.nodes().length === 2, 10_000, 'both nodes back');
    await until(() => b.owner('p1') === undefined, 10_000, 'p1 gone with the old lease');
    const p1 = await whileJoined(
      b,
      () => b.claim({ name: 'p1', id: b.allocateId(), identity: 'p1#1' }),
      'b to claim p1',
    );
    expect(p1.node).toBe('b');
    expect(await whileJoined(a, () => a.allocateId(), 'a to allocate an id')).toBeGreaterThan(0);
  });

  it("a lease that etcd drops behind the node's back is reported lost, claims are refused, and rejoin works", async () => {
    const p = newPrefix();
    const a = dir('a', p);
    const b = dir('b', p);
    await a.start();
    await b.start();
    await a.claim({ name: 'r1', id: a.allocateId(), identity: 'r1#1' });
    await until(() => b.owner('r1'), 10_000, 'b sees r1');
    const seenA = events(a);
    const seenB = events(b);
    const raw = new Etcd3({ hosts: etcd.url });
    try {
      const kv = (await raw.get(`/${p}/nodes/a`).exec()).kvs[0];
      await raw.leaseClient.leaseRevoke({ ID: kv.lease });
    } finally {
      raw.close();
    }
    await until(() => seenA.some((e) => e.type === 'lease-lost'), 10_000, 'a to see its lease lost');
    await until(() => seenB.some((e) => e.type === 'node-lost' && e.node === 'a'), 10_000, 'b to see a lost');
    await until(() => b.owner('r1') === undefined, 10_000, 'r1 free');
    expect(seenB).toContainEqual({ type: 'name-released', name: 'r1', node: 'a' });
    expect(seenA.filter((e) => e.type === 'node-lost')).toEqual([]); // never about itself
    await expect(a.claim({ name: 'r2', id: 1, identity: 'r2#1' })).rejects.toThrow(LeaseLostError);
    await a.rejoin();
    await until(
      () => seenB.some((e) => e.type === 'node-joined' && e.node.node === 'a'),
      10_000,
      'b to see a again',
    );
    expect((await a.claim({ name: 'r2', id: a.allocateId(), identity: 'r2#1' })).node).toBe('a');
  });

  it('etcd stopped and started again within the TTL: leases and names survive, the watch resumes', async () => {
    const port = await freePort();
    const peerPort = await freePort();
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'clvetcd-data-'));
    let own = await startEtcd({ port, peerPort, dataDir });
    const mk = (node: string) => dir(node, 'restart', 15, { url: own.url, fast: true });
    try {
      const a = mk('a');
      const b = mk('b');
      await a.start();
      await b.start();
      await a.claim({ name: 'kept', id: a.allocateId(), identity: 'kept#1' });
      await until(() => b.owner('kept'), 10_000, 'b sees kept');
      const seen: DirectoryEvent[] = [];
      a.on((e) => seen.push(e));
      b.on((e) => seen.push(e));
      await own.stop();
      own = await startEtcd({ port, peerPort, dataDir });
      // The watch reconnects: a claim made now is seen on the other node.
      const ib = await until(
        () =>
          b.claim({ name: 'after', id: b.allocateId(), identity: 'after#1' }).then(
            (o) => o.id,
            () => 0,
          ),
        30_000,
        'b to claim after the restart',
      );
      await until(
        () => a.ownerOfId(ib)?.name === 'after',
        30_000,
        'a to see the claim made after the restart',
      );
      expect(a.owner('kept')?.node).toBe('a');
      expect(b.owner('kept')?.node).toBe('a');
      expect(a.status).toBe('joined');
      expect(seen.filter((e) => e.type === 'lease-lost' || e.type === 'node-lost')).toEqual([]);
    } finally {
      for (const d of open.splice(0)) await d.close();
      await own.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('a watch cut off from etcd reconnects and catches up with what changed meanwhile', async () => {
    const p = newPrefix();
    const px = await etcdProxy(etcd.port);
    try {
      const a = dir('a', p, 15, { url: px.url, fast: true });
      const b = dir('b', p);
      const c = dir('c', p);
      await a.start();
      await b.start();
      await c.start();
      await until(() => a.nodes().length === 3, 10_000, 'a to see b and c');
      const seenA = events(a);
      px.cut();
      const yid = b.allocateId();
      await b.claim({ name: 'y', id: yid, identity: 'y#1' });
      await c.close();
      px.heal();
      await until(() => a.owner('y')?.node === 'b', 30_000, 'a to learn y');
      await until(() => a.nodes().length === 2, 30_000, 'a to learn c is gone');
      expect(a.ownerOfId(yid)?.name).toBe('y');
      expect(seenA).toContainEqual({ type: 'node-lost', node: 'c' });
      expect(seenA.some((e) => e.type === 'name-claimed' && e.owner.name === 'y')).toBe(true);
      expect(a.status).toBe('joined');
    } finally {
      for (const d of open.splice(0)) await d.close();
      px.close();
    }
  });

  it('a watch etcd cancels (history compacted while it was away) is created again after a reload', async () => {
    const p = newPrefix();
    const px = await etcdProxy(etcd.port);
    const raw = new Etcd3({ hosts: etcd.url });
    try {
      const a = dir('a', p, 15, { url: px.url, fast: true });
      const b = dir('b', p);
      await a.start();
      await b.start();
      await b.claim({ name: 'old', id: b.allocateId(), identity: 'old#1' });
      await until(() => a.owner('old'), 10_000, 'a sees old');
      const seenA = events(a);
      px.cut();
      await b.release('old');
      const nid = b.allocateId();
      await b.claim({ name: 'new', id: nid, identity: 'new#1' });
      const now = (await raw.get(`/${p}/nodes/b`).exec()).header.revision;
      await raw.kv.compact({ revision: now, physical: true });
      px.heal();
      await until(() => a.owner('new')?.node === 'b', 30_000, 'a to learn new');
      await until(() => a.owner('old') === undefined, 30_000, 'a to learn old is gone');
      expect(a.ownerOfId(nid)?.name).toBe('new');
      expect(seenA).toContainEqual({ type: 'name-released', name: 'old', node: 'b' });
      // The new watch goes on: a later claim is seen too.
      await b.claim({ name: 'later', id: b.allocateId(), identity: 'later#1' });
      await until(() => a.owner('later'), 30_000, 'a to learn later');
    } finally {
      for (const d of open.splice(0)) await d.close();
      raw.close();
      px.close();
    }
  });

  it('a node partitioned from etcd past its TTL reports lease-lost before its names move, and rejoins after', async () => {
    const p = newPrefix();
    const px = await etcdProxy(etcd.port);
    try {
      const a = dir('a', p, 3, { url: px.url, fast: true });
      const b = dir('b', p);
      await a.start();
      await b.start();
      await a.claim({ name: 'm', id: a.allocateId(), identity: 'm#1' });
      await until(() => b.owner('m'), 10_000, 'b sees m');
      // The order of what happens, as one list: a must give m up before b can have it.
      const history: string[] = [];
      a.on((e) => e.type === 'lease-lost' && history.push('a:lease-lost'));
      b.on((e) => e.type === 'name-released' && e.name === 'm' && history.push('b:m-released'));
      px.blackhole();
      await until(() => history.includes('b:m-released'), 30_000, 'm to expire');
      expect(history[0]).toBe('a:lease-lost');
      const bm = b.allocateId();
      expect((await b.claim({ name: 'm', id: bm, identity: 'm#2' })).node).toBe('b');
      px.heal();
      await until(
        () =>
          a.rejoin().then(
            () => true,
            () => false,
          ),
        60_000,
        'a to rejoin',
      );
      await until(() => a.owner('m')?.node === 'b', 30_000, 'a to see m at b');
      const owner = await whileJoined(
        a,
        () => a.claim({ name: 'm', id: a.allocateId(), identity: 'm#3' }),
        'a to be refused m',
      );
      expect(owner.node).toBe('b');
      await until(() => b.nodes().length === 2, 10_000, 'b to see a back');
    } finally {
      for (const d of open.splice(0)) await d.close();
      px.close();
    }
  });

  // A real partition: the kernel's packets to etcd are dropped (iptables, as harness/cluster does it).
  it.skipIf(!canIptables())(
    'a real packet-dropping partition: lease-lost while cut off, rejoin once healed',
    async () => {
      const own = await startEtcd();
      const rules = ['--dport', '--sport'].map((dir) => [
        'INPUT',
        '-p',
        'tcp',
        dir,
        String(own.port),
        '-j',
        'DROP',
        '-m',
        'comment',
        '--comment',
        `clove-directory-test-${process.pid}`,
      ]);
      const ipt = (op: '-I' | '-D', r: string[]) => execFileSync('iptables', [op, ...r], { stdio: 'ignore' });
      const a = new EtcdDirectory(
        { etcd: [own.url], nats: [], node: 'a', advertise: 'x:1', leaseTtlS: 4, prefix: 'drop' },
        { log: log.child({ node: 'a' }), version: 'test', requestTimeoutMs: 2000 },
      );
      open.push(a);
      let cut = false;
      try {
        await a.start();
        await a.claim({ name: 'm', id: a.allocateId(), identity: 'm#1' });
        const seen = events(a);
        for (const r of rules) ipt('-I', r);
        cut = true;
        await until(() => seen.some((e) => e.type === 'lease-lost'), 30_000, 'lease-lost');
        await expect(a.claim({ name: 'm2', id: 1, identity: 'm2#1' })).rejects.toThrow(LeaseLostError);
        for (const r of rules) ipt('-D', r);
        cut = false;
        await until(
          () =>
            a.rejoin().then(
              () => true,
              () => false,
            ),
          60_000,
          'a to rejoin after the heal',
        );
        await until(() => a.owner('m') === undefined, 30_000, 'm gone with the old lease');
        expect(a.nodes().map((n) => n.node)).toEqual(['a']);
      } finally {
        if (cut) for (const r of rules) ipt('-D', r);
        for (const d of open.splice(0)) await d.close();
        await own.stop();
      }
    },
  );

  it("definitions: a crashed node's definition is found and taken over exactly once", async () => {
    const p = newPrefix();
    const a = dir('a', p, 2);
    const b = dir('b', p);
    const c = dir('c', p);
    await Promise.all([a.start(), b.start(), c.start()]);
    await a.saveDef({ name: 'keeper', node: 'a', spec: { cmd: ['python3', 'k.py'], restart: 'always' } });
    await a.saveDef({ name: 'gone', node: 'a', spec: {} });
    await a.dropDef('gone');
    await a.crash();
    const found = await b.defsOf('a');
    expect(found.map((d) => d.name)).toEqual(['keeper']);
    expect(found[0].spec).toEqual({ cmd: ['python3', 'k.py'], restart: 'always' });
    const stale = (await c.defsOf('a'))[0];
    await expect(b.takeOver({ name: 'keeper', node: 'a', spec: {} })).rejects.toThrow(
      DefRevisionMissingError,
    );
    expect(await b.takeOver(found[0])).toBe(true);
    expect(await c.takeOver(stale)).toBe(false);
    expect(await c.defsOf('a')).toEqual([]);
    expect((await c.defsOf('b')).map((d) => d.name)).toEqual(['keeper']);
    await c.dropDef('keeper'); // not c's: stays
    expect((await b.defsOf('b')).map((d) => d.name)).toEqual(['keeper']);
  });

  it('close() while start() is joining wins: start rejects, nothing of the node stays', async () => {
    const p = newPrefix();
    const b = dir('b', p);
    await b.start();
    for (let i = 0; i < 5; i++) {
      const a = dir('a', p, 2);
      const starting = a.start().then(
        () => 'started',
        (e: unknown) => e,
      );
      await new Promise((r) => setTimeout(r, i * 5));
      await a.close();
      const r = await starting;
      // Closing may land after start finished (then start resolved); never a half-started directory.
      if (r !== 'started') expect(r).toBeInstanceOf(DirectoryClosedError);
      expect(a.status).toBe('closed');
      await until(() => !b.nodes().some((n) => n.node === 'a'), 20_000, 'a gone from b');
    }
  });

  it('refuses to start when etcd does not answer, naming the endpoint', async () => {
    const port = await freePort();
    const d = new EtcdDirectory(
      {
        etcd: [`etcd://127.0.0.1:${port}`],
        nats: [],
        node: 'z',
        advertise: 'x:1',
        leaseTtlS: 5,
        prefix: 'clove',
      },
      { log, version: 'test', requestTimeoutMs: 1000 },
    );
    const err = await d.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EtcdUnreachableError);
    expect((err as Error).message).toContain(`http://127.0.0.1:${port}`);
    expect(d.status).toBe('closed');
  });

  it('writes exactly the key layout of docs/cluster.md', async () => {
    const p = newPrefix();
    const a = dir('a', p);
    await a.start();
    const id = a.allocateId();
    await a.claim({ name: 'k', id, identity: 'k#1' });
    await a.saveDef({ name: 'k', node: 'a', spec: 1 });
    const raw = new Etcd3({ hosts: etcd.url });
    try {
      const all = await raw.getAll().prefix(`/${p}/`).strings();
      expect(Object.keys(all).sort()).toEqual(
        [
          `/${p}/defs/k`,
          `/${p}/ids/${id}`,
          `/${p}/names/k`,
          `/${p}/nodes/a`,
          `/${p}/slots/${Math.floor(id / SLOT_SIZE)}`,
        ].sort(),
      );
      expect(JSON.parse(all[`/${p}/names/k`])).toEqual({ name: 'k', node: 'a', id, identity: 'k#1' });
      expect(all[`/${p}/ids/${id}`]).toBe('k');
      expect(all[`/${p}/slots/${Math.floor(id / SLOT_SIZE)}`]).toBe('a');
      expect(JSON.parse(all[`/${p}/defs/k`])).toEqual({ name: 'k', node: 'a', spec: 1 });
    } finally {
      raw.close();
    }
  });
});
