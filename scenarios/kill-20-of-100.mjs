#!/usr/bin/env zx
// 100 agents, SIGKILL 20 of them: the 80 others carry on undisturbed, the 20 come back, nothing is lost.
// Usage: npx zx scenarios/kill-20-of-100.mjs [--seed 1]
import { argv } from 'zx';
import { fmt, load, scenario, verdict } from './_lib.mjs';

await scenario('kill 20 of 100', async () => {
  const { runChaos } = await load('chaos/run.js');
  const r = await runChaos({
    agents: 100,
    faults: 20,
    fault: 'sigkill',
    durationS: 10,
    seed: Number(argv.seed ?? 1),
    kernelMode: 'process',
    log: console.log,
  });
  return verdict('kill 20 of 100', [
    [
      '80 survivors undisturbed',
      r.survivors_undisturbed === 80,
      `${r.survivors_undisturbed}/80${r.disturbed.length ? ': ' + r.disturbed.map((d) => `${d.name} ${d.why}`).join('; ') : ''}`,
    ],
    ['20 victims restarted and serving', r.restarted === 20, `${r.restarted}/20`],
    [
      'every victim died of SIGKILL',
      r.exits_by_kind.sigkill?.SIGKILL === 20,
      JSON.stringify(r.exits_by_kind.sigkill),
    ],
    [
      'no message lost',
      r.messages_lost === 0 && r.messages_sent > 0,
      `${r.messages_delivered}/${r.messages_sent} delivered`,
    ],
    ['restart latency measured', r.restart_ms.count === 20, fmt(r.restart_ms)],
    ['no other failure', r.failures.length === 0, r.failures.join('; ') || 'none'],
  ]);
});
