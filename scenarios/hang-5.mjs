#!/usr/bin/env zx
// Five of 50 agents hang (alive, but no progress and no heartbeat). Their watchdog (watchdog_ms 1500)
// makes the kernel kill and restart them; the 45 others carry on.
import { argv } from 'zx';
import { fmt, load, scenario, verdict } from './_lib.mjs';

await scenario('hang 5', async () => {
  const { runChaos } = await load('chaos/run.js');
  const watchdogMs = 1500;
  const r = await runChaos({
    agents: 50,
    faults: 5,
    fault: 'hang',
    durationS: 8,
    seed: Number(argv.seed ?? 5),
    kernelMode: 'process',
    settings: { watchdogMs },
    log: console.log,
  });
  const lat = r.fault_records.map((f) => f.latencyMs ?? -1);
  return verdict('hang 5', [
    [
      '5 hung agents killed by the watchdog (SIGKILL)',
      r.exits_by_kind.hang?.SIGKILL === 5,
      JSON.stringify(r.exits_by_kind.hang),
    ],
    ['not before the watchdog period', lat.every((l) => l >= watchdogMs), `${lat.join(', ')} ms`],
    ['all 5 restarted and serving', r.restarted === 5, `${r.restarted}/5, ${fmt(r.restart_ms)}`],
    ['the 45 others undisturbed', r.survivors_undisturbed === 45, `${r.survivors_undisturbed}/45`],
    [
      'no message lost',
      r.messages_lost === 0 && r.messages_sent > 0,
      `${r.messages_delivered}/${r.messages_sent}`,
    ],
    ['no other failure', r.failures.length === 0, r.failures.join('; ') || 'none'],
  ]);
});
