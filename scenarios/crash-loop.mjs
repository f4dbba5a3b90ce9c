#!/usr/bin/env zx
// An agent that crashes right after every start, next to 10 healthy ones. With max_restarts 3 the
// kernel restarts it three times with growing backoff, then escalates (AGENT_ESCALATED) and leaves it
// FAILED for good; the healthy agents never notice.
import { load, scenario, verdict } from './_lib.mjs';

await scenario('crash loop', async () => {
  const { Swarm, PY_AGENT, COLLECTOR } = await load('harness/swarm.js');
  const { until } = await load('harness/kernel.js');
  const { sleep } = await load('harness/timing.js');
  const swarm = await Swarm.start({ agents: 10, intervalMs: 300, kernelMode: 'process' });
  try {
    await swarm.spawnAll();
    await swarm.waitUp();
    await swarm.waitTraffic();
    const before = await swarm.listByName();
    const counts = swarm.counts();
    const maxRestarts = 3;
    const looper = await swarm.ctl.spawn({
      name: 'looper',
      script: PY_AGENT,
      restart_policy: 'always',
      max_restarts: maxRestarts,
      restart_window: 60,
      backoff_initial_ms: 100,
      backoff_multiplier: 2,
      env: {
        SWARM_PREFIX: 'looper-',
        SWARM_SIZE: '1',
        SWARM_COLLECTOR: COLLECTOR,
        SWARM_CRASH_ON_START: 'exception',
      },
    });
    console.log(`spawned looper (id ${looper.id}); waiting for AGENT_ESCALATED…`);
    const ofLooper = (type) => swarm.events.filter((e) => e.type === type && e.data.agent_id === looper.id);
    const esc = await until(() => ofLooper('AGENT_ESCALATED')[0], 60_000, 'AGENT_ESCALATED of the looper');
    const failed = (await swarm.listByName()).get('looper');
    // Stays FAILED: nothing restarts it later.
    await sleep(2000);
    const later = (await swarm.listByName()).get('looper');
    await swarm.waitTraffic(30_000, swarm.names, counts);
    await swarm.stopTraffic();
    const acct = await swarm.drain();
    const after = await swarm.listByName();
    const undisturbed = swarm.names.filter((n) => {
      const a = after.get(n);
      const t = swarm.track(n);
      return (
        a && a.restarts === 0 && a.pid === before.get(n).pid && t.epochs.length === 1 && t.errors.length === 0
      );
    });
    const delays = ofLooper('AGENT_RESTARTING').map((e) => e.data.delay_ms);
    const lives = swarm.events.filter(
      (e) => e.type === 'AGENT_SPAWNED' && e.data.agent_id === looper.id,
    ).length;
    return verdict('crash loop', [
      [
        `AGENT_ESCALATED after ${maxRestarts} restarts`,
        esc.data.restart_count === maxRestarts,
        JSON.stringify(esc.data),
      ],
      [
        'restarted with growing backoff',
        delays.length === maxRestarts && delays.every((d, i) => i === 0 || d >= delays[i - 1]),
        `delays ${delays.join(', ')} ms`,
      ],
      ['4 lives (1 start + 3 restarts), each crashed', lives === maxRestarts + 1, `${lives} AGENT_SPAWNED`],
      ['FAILED at escalation', failed?.state === 'FAILED', failed?.state],
      [
        'still FAILED 2 s later, not restarted again',
        later?.state === 'FAILED' && later.restarts === failed.restarts,
        `${later?.state}, restarts ${later?.restarts}`,
      ],
      ['the 10 healthy agents undisturbed', undisturbed.length === 10, `${undisturbed.length}/10`],
      ['no message lost', acct.lost.length === 0 && acct.sent > 0, `${acct.delivered}/${acct.sent}`],
    ]);
  } finally {
    await swarm.close();
  }
});
