#!/usr/bin/env zx
// One of 50 agents leaks memory. With the sandbox its 128 MiB memory cgroup stops it (exit reason
// `oom`); without, the agent stops itself at 300 MiB and aborts (SIGABRT). Either way the kernel restarts
// it and the 49 others never notice.
import { argv } from 'zx';
import { fmt, load, scenario, verdict } from './_lib.mjs';

await scenario('leak 1 of 50', async () => {
  const { runChaos } = await load('chaos/run.js');
  const r = await runChaos({
    agents: 50,
    faults: 1,
    fault: 'leak',
    durationS: 8,
    seed: Number(argv.seed ?? 3),
    kernelMode: 'process',
    log: console.log,
  });
  const f = r.fault_records[0];
  const expected = r.sandbox.memory ? 'oom' : 'SIGABRT (self-bounded, no memory cgroup)';
  const got = f?.exit ? (f.exit.reason === 'oom' ? 'oom' : f.exit.signal) : 'no exit';
  return verdict('leak 1 of 50', [
    [
      `the leaking agent ${f?.name} was stopped: ${expected}`,
      r.sandbox.memory ? got === 'oom' : got === 'SIGABRT',
      got,
    ],
    [
      'it was restarted and serves again',
      r.restarted === 1,
      f?.latencyMs !== undefined ? `${f.latencyMs} ms from the fault` : 'not back',
    ],
    ['the 49 others are undisturbed', r.survivors_undisturbed === 49, `${r.survivors_undisturbed}/49`],
    [
      'no message lost',
      r.messages_lost === 0 && r.messages_sent > 0,
      `${r.messages_delivered}/${r.messages_sent}`,
    ],
    ['no other failure', r.failures.length === 0, r.failures.join('; ') || fmt(r.restart_ms)],
  ]);
});
