/**
 * Operators steer a whole cluster from one node's socket, as a user would: `node bin/clove.js …` (needs
 * `npm run build`) against two clustered kernels in this process (real etcd and NATS JetStream,
 * harness/services.ts) and one kernel without --cluster. `clove up` places replicas across the nodes
 * (spread, `nodes:`, `max_per_node`), `restart` and `down` reach the other node's agents, `run --node`
 * and `kill` act on the other node. No timing asserts: every wait is for a condition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startEtcd, startNats, type ServiceProcess } from '../harness/services.js';
import { REPO_ROOT, startKernel, tempDir, until, type TestKernel } from '../harness/kernel.js';
import type { AgentInfo } from '../protocol/generated.js';
import type { CloveClient } from '../sdk/typescript/client.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');
const idle = path.join(REPO_ROOT, 'sdk', 'conformance', 'agents', 'idle.py');

let etcd: ServiceProcess;
let nats: ServiceProcess;
let n1: TestKernel;
let n2: TestKernel;
let solo: TestKernel;
let op: CloveClient;
const prefix = `p${process.pid}`;
let serial = 0;

interface Run {
  code: number;
  out: string;
  err: string;
}

/** `clove …` on kernel `k`'s socket, in `dir`. */
function clove(k: TestKernel, dir: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, '--socket', k.socketPath, '--data-dir', k.dataDir, ...args],
      { cwd: dir, timeout: 180_000 },
      (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

/** A project directory holding a clove.yaml with one service `w` of `replicas` idle agents. */
function project(name: string, replicas: number, placement?: string): string {
  const dir = tempDir('clvp');
  fs.writeFileSync(
    path.join(dir, 'clove.yaml'),
    [
      `name: ${name}`,
      'agents:',
      '  w:',
      `    script: ${idle}`,
      `    replicas: ${replicas}`,
      ...(placement ? [`    placement: ${placement}`] : []),
      '',
    ].join('\n'),
  );
  return dir;
}

/** The project's agents on every node (LIST all_nodes from n1). */
async function agentsOf(name: string): Promise<AgentInfo[]> {
  return (await op.list({ all_nodes: true })).filter((a) => a.labels?.['clove.project'] === name);
}

/** How many of `agents` run on each node. */
function perNode(agents: AgentInfo[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of agents) out[a.node ?? '?'] = (out[a.node ?? '?'] ?? 0) + 1;
  return out;
}

beforeAll(async () => {
  [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
  const cluster = (node: string) => ({
    etcd: [etcd.url],
    nats: [nats.url],
    node,
    advertise: `127.0.0.1:${7500 + serial++}`,
    leaseTtlS: 4,
    prefix,
  });
  n1 = await startKernel({ sandbox: 'off', fastPath: false, cluster: cluster('n1') });
  n2 = await startKernel({ sandbox: 'off', fastPath: false, cluster: cluster('n2') });
  solo = await startKernel({ sandbox: 'off', fastPath: false });
  op = await n1.client();
  // Both nodes see each other before anything is placed.
  await until(
    async () => (await op.clusterNodes()).nodes.filter((n) => n.alive).length === 2,
    30_000,
    'two nodes',
  );
}, 120_000);

afterAll(async () => {
  await solo?.stop();
  await n2?.stop();
  await n1?.stop();
  await Promise.all([etcd?.stop(), nats?.stop()]);
});

describe('clove on a cluster', () => {
  it('up spreads 4 replicas 2+2; restart and down reach the other node', async () => {
    const dir = project('spread', 4);
    const up = await clove(n1, dir, 'up', '-d', '--wait-timeout', '120');
    expect(up.code, up.err).toBe(0);
    expect(up.out).toMatch(/started w-1 on n[12]/);
    const agents = await agentsOf('spread');
    expect(agents.map((a) => a.name).sort()).toEqual(['w-1', 'w-2', 'w-3', 'w-4']);
    expect(perNode(agents)).toEqual({ n1: 2, n2: 2 });

    // Up again: nothing moves.
    const again = await clove(n1, dir, 'up', '-d');
    expect(again.code, again.err).toBe(0);
    expect(again.out).not.toMatch(/started/);

    // RESTART of a replica on n2, from n1's socket: a new process there, same id.
    const far = agents.find((a) => a.node === 'n2')!;
    const rs = await clove(n1, dir, 'restart', far.name);
    expect(rs.code, rs.err).toBe(0);
    const after = (await agentsOf('spread')).find((a) => a.name === far.name)!;
    expect(after).toMatchObject({ id: far.id, node: 'n2' });
    expect(after.pid).not.toBe(far.pid);

    const down = await clove(n1, dir, 'down', '-t', '5');
    expect(down.code, down.err).toBe(0);
    await until(async () => (await agentsOf('spread')).length === 0, 60_000, 'every replica gone');
    expect(
      (await (await n2.client()).list()).filter((a) => a.labels?.['clove.project'] === 'spread'),
    ).toEqual([]);
  });

  it('up honours nodes: and max_per_node; scale places the new replicas too', async () => {
    const dir = project('only2', 3, '{nodes: [n2], max_per_node: 3}');
    const up = await clove(n1, dir, 'up', '-d', '--wait-timeout', '120');
    expect(up.code, up.err).toBe(0);
    expect(perNode(await agentsOf('only2'))).toEqual({ n2: 3 });
    // A fourth does not fit: refused with the reason, nothing started.
    const scale = await clove(n1, dir, 'scale', 'w=4');
    expect(scale.code).toBe(9);
    expect(scale.err).toMatch(/no room for 1 more replica/);
    expect((await agentsOf('only2')).length).toBe(3);
    expect((await clove(n1, dir, 'down', '-t', '5')).code).toBe(0);

    const one = project('oneeach', 2, '{max_per_node: 1, spread: false}');
    const up2 = await clove(n1, one, 'up', '-d', '--wait-timeout', '120');
    expect(up2.code, up2.err).toBe(0);
    expect(perNode(await agentsOf('oneeach'))).toEqual({ n1: 1, n2: 1 });
    const scaled = await clove(n1, one, 'scale', 'w=3');
    expect(scaled.code).toBe(9);
    expect((await clove(n1, one, 'down', '-t', '5')).code).toBe(0);
    await until(async () => (await agentsOf('oneeach')).length === 0, 60_000, 'every replica gone');
  });

  it('run --node starts it on the other node; kill from this node stops it there', async () => {
    const dir = tempDir('clvr');
    const name = `far-${process.pid}`;
    const run = await clove(n1, dir, 'run', '--node', 'n2', '-n', name, idle);
    expect(run.code, run.err).toBe(0);
    const listed = (await (await n2.client()).list()).find((a) => a.name === name);
    expect(listed?.state).toBe('RUNNING');
    await until(
      async () => (await op.list({ all_nodes: true })).some((a) => a.name === name),
      30_000,
      'n1 to see it',
    );
    const kill = await clove(n1, dir, 'kill', name);
    expect(kill.code, kill.err).toBe(0);
    await until(
      async () => !(await (await n2.client()).list()).some((a) => a.name === name),
      30_000,
      'the agent gone from n2',
    );
  });

  it('a kernel without --cluster ignores placement with a warning, and refuses run --node', async () => {
    const dir = project('alone', 2, '{nodes: [n2]}');
    const up = await clove(solo, dir, 'up', '-d', '--wait-timeout', '120');
    expect(up.code, up.err).toBe(0);
    expect(up.err).toMatch(/not clustered: placement of w ignored/);
    expect(
      (await (await solo.client()).list()).filter((a) => a.labels?.['clove.project'] === 'alone').length,
    ).toBe(2);
    expect((await clove(solo, dir, 'down', '-t', '5')).code).toBe(0);
    const run = await clove(solo, dir, 'run', '--node', 'n2', idle);
    expect(run.code).not.toBe(0);
    expect(run.err).toMatch(/not part of a cluster/);
  });
});
