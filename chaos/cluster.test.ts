/**
 * Chaos across nodes at CI scale (chaos/cluster.ts): 3 kernels on real etcd and NATS JetStream, 15
 * agents (Python and Node) spread over them, then a node killed or a node isolated past its lease TTL.
 * Asserts what happened, never how fast: the faulted node's agents run again on survivors under the same
 * names, the others are undisturbed, no name is ever RUNNING on two nodes at once, and no acknowledged
 * message is lost beyond what docs/cluster.md "Limits" allows (counted apart).
 */
import Docker from 'dockerode';
import { describe, expect, it } from 'vitest';
import { dockerUnavailable } from '../harness/cluster/docker.js';
import { canUseIptables } from '../harness/cluster/provider.js';
import { runClusterChaos, type ClusterChaosOptions, type ClusterChaosResult } from './cluster.js';
import { renderClusterFrame, renderClusterSummary } from './view.js';

const dockerWhy = await dockerUnavailable(new Docker());
const iptablesWhy = canUseIptables() ? null : 'isolate() needs iptables as root';

/** Runs one cluster chaos run and fails with everything it saw when an invariant broke. */
async function run(o: Partial<ClusterChaosOptions> & Pick<ClusterChaosOptions, 'fault' | 'addressPrefix'>) {
  const log: string[] = [];
  let frame = '';
  const header = { nodes: 3, agents: 15, fault: o.fault, provider: o.provider ?? 'processes', seed: 3 };
  const r = await runClusterChaos({
    onTick: (v) => (frame = renderClusterFrame(header, v)),
    nodes: 3,
    agents: 15,
    durationS: 6,
    seed: 3,
    intervalMs: 300,
    leaseTtlS: 3,
    timeoutS: 120,
    log: (l) => log.push(l),
    ...o,
  });
  const detail = JSON.stringify({ ...r, machine: undefined, log }, null, 1);
  expect(r.failures, detail).toEqual([]);
  expect(r.ok).toBe(true);
  // The live view's last frame and the summary table say the same.
  // eslint-disable-next-line no-control-regex
  const plain = (s: string) => s.replace(/\u001b\[[0-9;]*m/g, '');
  expect(plain(frame)).toMatch(/phase done/);
  expect(plain(frame)).toMatch(/moved & serving 5\/5 {3}two owners 0/);
  for (const n of r.node_names) expect(plain(frame)).toContain(n);
  expect(plain(renderClusterSummary(r))).toMatch(/agents moved & serving\s*│\s*5 \/ 5/);
  return r;
}

/** What every passing run's summary says. */
function common(r: ClusterChaosResult) {
  expect(r.nodes).toBe(3);
  expect(r.agents).toBe(15);
  expect(r.collector_node).toBe('node1');
  expect(r.faulted_nodes).toHaveLength(1);
  expect(r.faulted_nodes[0]).not.toBe('node1');
  // Agent i lives on node i % 3: five agents per node.
  expect(r.victims).toBe(5);
  expect(r.rescheduled).toBe(5);
  expect(r.survivors).toBe(10);
  expect(r.survivors_undisturbed).toBe(10);
  for (const m of r.moved) {
    expect(m.from).toBe(r.faulted_nodes[0]);
    expect(m.to).not.toBe(r.faulted_nodes[0]);
    expect(r.node_names).toContain(m.to);
    // After the fault, not before: the life that serves is a new one.
    expect(m.takeover_ms).toBeGreaterThan(0);
  }
  expect(r.takeover_ms.count).toBe(5);
  expect(r.double_owners).toEqual([]);
  expect(r.owner_samples).toBeGreaterThan(0);
  expect(r.messages_sent).toBeGreaterThan(50);
  expect(r.messages_lost).toBe(0);
  expect(r.messages_delivered + r.messages_lost_with_node).toBe(r.messages_sent);
}

describe('chaos across nodes (processes provider)', () => {
  it('--nodes 3 --agents 15 --kill-node 1: the dead node’s agents run again on survivors, nothing else moves', async () => {
    const r = await run({ fault: 'kill-node', killNodes: 1, addressPrefix: '127.0.31.' });
    common(r);
    expect(r.fault).toBe('kill-node');
    expect(r.provider).toBe('processes');
    expect(r.rejoined).toBeNull();
  }, 300_000);

  it.skipIf(iptablesWhy !== null)(
    `--partition: the isolated node’s agents move, and it rejoins holding none of them${iptablesWhy ? ` (skipped: ${iptablesWhy})` : ''}`,
    async () => {
      const r = await run({ fault: 'partition', addressPrefix: '127.0.32.' });
      common(r);
      expect(r.fault).toBe('partition');
      expect(r.rejoined).toBe(true);
    },
    300_000,
  );
});

describe.skipIf(dockerWhy !== null)(
  `chaos across nodes (docker provider)${dockerWhy ? ` (skipped: ${dockerWhy})` : ''}`,
  () => {
    it('--nodes 3 --agents 15 --kill-node 1 --provider docker', async () => {
      const r = await run({
        fault: 'kill-node',
        killNodes: 1,
        provider: 'docker',
        addressPrefix: '127.0.33.',
      });
      common(r);
      expect(r.provider).toBe('docker');
    }, 600_000);
  },
);
