/**
 * Operators steer the whole cluster (kernel/cluster/router.ts) against real etcd and NATS JetStream: two
 * kernels in this process; an operator on `a` spawns on `b`, then kills, restarts, pauses and resumes
 * the agent from `a`, by name and by id; a non-operator's SPAWN `node` is refused and audited. No
 * timing asserts: every wait is for a condition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { startEtcd, startNats, type ServiceProcess } from '../../harness/services.js';
import { REPO_ROOT, startKernel, until, type TestKernel } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { Op } from '../../protocol/index.js';
import type { ClusterOptions } from './types.js';

const probe = path.join(REPO_ROOT, 'kernel', 'testdata', 'probe_agent.py');
const idle = path.join(REPO_ROOT, 'sdk', 'conformance', 'agents', 'idle.py');

let etcd: ServiceProcess;
let nats: ServiceProcess;
let a: TestKernel;
let b: TestKernel;
let ca: CloveClient;
let cb: CloveClient;
const prefix = `r${process.pid}`;
let serial = 0;
const uniq = (s: string) => `${s}-${++serial}`;

function clusterOpts(node: string): ClusterOptions {
  return {
    etcd: [etcd.url],
    nats: [nats.url],
    node,
    advertise: `127.0.0.1:${7300 + serial++}`,
    leaseTtlS: 4,
    prefix,
  };
}

/** The agent as node `node` lists it itself (undefined: not there). */
async function onNode(c: CloveClient, name: string) {
  return (await c.list()).find((x) => x.name === name);
}

/**
 * A probe agent spawned by a client of `a` (role agent, unrestricted rights) makes the call `op` with
 * `payload`; its answer and its id (for the audit log).
 */
async function probeCall(op: number, payload: Record<string, unknown>) {
  const ctl = await a.client();
  await ctl.register(uniq('ctl'));
  const pa = uniq('probe');
  const s = await ctl.spawn({ name: pa, script: probe, sandboxed: false, level: 'unrestricted' });
  await ctl.send(pa, { cmd: 'call', op, payload });
  const answer = await until(
    async () => (await ctl.recv({ max: 1, timeoutMs: 1000 })).messages[0],
    30_000,
    'the probe to answer',
  );
  await ctl.kill(pa);
  return { answer: answer.message, id: s.id };
}

/** Whether the audit log holds a PERMISSION_DENIED of `op` by agent `id`. */
async function deniedAudited(id: number, op: string): Promise<boolean> {
  const audit = await ca.getAuditLog({ category: 'SECURITY', agent_id: id, limit: 100 });
  return audit.entries.some((e) => e.event_type === 'PERMISSION_DENIED' && JSON.stringify(e).includes(op));
}

beforeAll(async () => {
  [etcd, nats] = await Promise.all([startEtcd(), startNats()]);
  a = await startKernel({ sandbox: 'off', fastPath: false, cluster: clusterOpts('a') });
  b = await startKernel({ sandbox: 'off', fastPath: false, cluster: clusterOpts('b') });
  ca = await a.client();
  cb = await b.client();
}, 120_000);

afterAll(async () => {
  await b?.stop();
  await a?.stop();
  await Promise.all([etcd?.stop(), nats?.stop()]);
});

describe('operators act on agents of other nodes', () => {
  it('SPAWN with node runs it there; KILL, RESTART, PAUSE, RESUME from the other node reach it', async () => {
    const name = uniq('far');
    const r = await ca.spawn({ name, script: idle, sandboxed: false, node: 'b' });
    expect(r).toMatchObject({ success: true, name, status: 'running' });
    const there = await onNode(cb, name);
    expect(there).toMatchObject({ id: r.id, state: 'RUNNING', node: 'b' });
    expect(await onNode(ca, name)).toBeUndefined();
    // The id and name are b's in etcd once SPAWN replied; a resolves them from its cache: wait for it.
    await until(
      async () => (await ca.list({ all_nodes: true })).some((x) => x.name === name),
      30_000,
      'a to see it',
    );

    await expect(ca.pause(name)).resolves.toMatchObject({ paused: true, agent_id: r.id });
    expect((await onNode(cb, name))?.state).toBe('PAUSED');
    await expect(ca.resume(r.id)).resolves.toMatchObject({ resumed: true, agent_id: r.id });
    expect((await onNode(cb, name))?.state).toBe('RUNNING');
    // name@node names the node itself.
    await expect(ca.pause(`${name}@b`)).resolves.toMatchObject({ paused: true, agent_id: r.id });
    await expect(ca.resume(`${name}@b`)).resolves.toMatchObject({ resumed: true, agent_id: r.id });
    await expect(ca.pause(`${name}@a`)).rejects.toMatchObject({ code: 'not_found' });

    const rs = await ca.restart(name, { wait: true, grace_ms: 2000 });
    expect(rs).toMatchObject({ restarted: true, agent_id: r.id });
    expect(rs.pid).not.toBe(r.pid);
    expect((await onNode(cb, name))?.pid).toBe(rs.pid);

    await expect(ca.kill(r.id, { wait: true })).resolves.toMatchObject({ killed: true, agent_id: r.id });
    await until(async () => (await onNode(cb, name)) === undefined, 30_000, 'the agent to be gone from b');
  });

  it("SPAWN on this node with node set runs here; an unknown node is not_found; an error reply is the owner's", async () => {
    const name = uniq('here');
    const r = await ca.spawn({ name, script: idle, sandboxed: false, node: 'a' });
    expect((await onNode(ca, name))?.id).toBe(r.id);
    await ca.kill(name);
    await expect(
      ca.spawn({ name: uniq('x'), script: idle, sandboxed: false, node: 'nowhere' }),
    ).rejects.toMatchObject({
      code: 'not_found',
    });
    // The name is taken on b: b's own refusal comes back.
    const held = uniq('held');
    await cb.spawn({ name: held, script: idle, sandboxed: false });
    await expect(ca.spawn({ name: held, script: idle, sandboxed: false, node: 'b' })).rejects.toMatchObject({
      code: 'name_taken',
    });
    await cb.kill(held);
  });

  it('KILL right after another node spawned it (before this node saw its name) still reaches it; a miss is not_found', async () => {
    for (let i = 0; i < 3; i++) {
      const name = uniq('fresh');
      const r = await cb.spawn({ name, script: idle, sandboxed: false });
      await expect(ca.kill(i % 2 ? name : r.id, { wait: true })).resolves.toMatchObject({
        killed: true,
        agent_id: r.id,
      });
      expect(await onNode(cb, name)).toBeUndefined();
    }
    await expect(ca.kill(uniq('nobody'))).rejects.toMatchObject({ code: 'not_found' });
    await expect(ca.pause(4_000_000)).rejects.toMatchObject({ code: 'not_found' });
  });

  it("a non-operator's SPAWN with node is refused (permission_denied) and audited", async () => {
    const child = uniq('child');
    const { answer, id } = await probeCall(Op.SPAWN, { name: child, script: idle, node: 'b' });
    expect(answer).toMatchObject({ type: 'answer', out: { success: false, code: 'permission_denied' } });
    expect(await deniedAudited(id, 'SPAWN')).toBe(true);
    expect((await cb.list()).some((x) => x.name === child)).toBe(false);
  });

  it("a non-operator's KILL of another node's agent is refused (permission_denied), audited, and the agent runs on", async () => {
    const far = uniq('far');
    const r = await cb.spawn({ name: far, script: idle, sandboxed: false });
    await until(
      async () => (await ca.list({ all_nodes: true })).some((x) => x.name === far),
      30_000,
      'a to see it',
    );
    const { answer, id } = await probeCall(Op.KILL, { name: far });
    expect(answer).toMatchObject({ type: 'answer', out: { success: false, code: 'permission_denied' } });
    expect(await deniedAudited(id, 'KILL')).toBe(true);
    expect(await onNode(cb, far)).toMatchObject({ id: r.id, state: 'RUNNING' });
    await cb.kill(far);
  });
});
