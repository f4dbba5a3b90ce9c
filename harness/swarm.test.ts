/**
 * The swarm's collector (harness/swarm.ts) against the order a cluster makes likely: an agent's first
 * reports reach the collector before its SPAWN reply reaches the harness. A clustered kernel answers SPAWN
 * only once it stored the agent's definition in etcd (kernel/cluster/cluster.ts `spawned`), after the
 * process started; on a loaded machine the agent has said "up" by then. Those reports must count.
 */
import { describe, expect, it } from 'vitest';
import { until } from './kernel.js';
import { Swarm } from './swarm.js';
import type { CloveClient, SpawnRequest } from '../sdk/typescript/client.js';

describe('swarm collector', () => {
  it('counts an agent up whose "up" report arrives before its SPAWN reply', async () => {
    const swarm = await Swarm.start({ agents: 2, nodeEvery: 0, intervalMs: 200 });
    try {
      const heard = new Set<string>();
      swarm.onReport((r) => {
        if (r.t === 'up') heard.add(r.name);
      });
      // An operator whose SPAWN reply comes only after the agent's "up" reached the collector.
      const late = {
        spawn: async (req: SpawnRequest) => {
          const r = await swarm.ctl.spawn(req);
          await until(() => heard.has(req.name!), 30_000, `the "up" report of ${req.name}`);
          return r;
        },
      } as unknown as CloveClient;
      for (let i = 0; i < swarm.names.length; i++) await swarm.spawnOne(i, {}, late);
      await swarm.waitUp(5_000);
      for (const n of swarm.names) {
        expect(swarm.track(n).epochs).toHaveLength(1);
        expect(swarm.track(n).pid).toBeGreaterThan(0);
      }
      await swarm.waitTraffic(30_000);
    } finally {
      await swarm.close();
    }
  }, 60_000);
});
