/**
 * The chaos promise at CI scale: 30 agents (Python and Node), 6 of them faulted with mixed kinds
 * (sigkill, segv, exception, hang — plus leak and cpu when the sandbox enforces limits). Asserts the
 * invariants only, never timings: survivors undisturbed, every victim restarted and serving, no
 * message lost, and each fault ended its agent the way it should.
 */
import { describe, expect, it } from 'vitest';
import { runChaos } from './run.js';

// `auto` uses the native sandbox where it works (limits enforced); `off` checks plain processes too; the
// last runs the kernel with its native fast path (docs/fastpath.md).
describe.each([
  ['auto', false],
  ['off', false],
  ['auto', true],
] as const)('chaos: 30 agents, 6 mixed faults, sandbox %s, fast path %s', (sandbox, fastPath) => {
  it('keeps the 24 others undisturbed, restarts the 6 and loses no message', async () => {
    const log: string[] = [];
    const r = await runChaos({
      agents: 30,
      faults: 6,
      fault: 'mixed',
      safeOnly: true,
      durationS: 4,
      seed: 7,
      intervalMs: 300,
      timeoutS: 40,
      sandbox,
      fastPath,
      log: (l) => log.push(l),
    });
    if (sandbox === 'off') expect(r.sandbox).toEqual({ memory: false, pids: false, cpu: false });
    const detail = JSON.stringify(
      { failures: r.failures, disturbed: r.disturbed, records: r.fault_records, log },
      null,
      1,
    );
    expect(r.failures, detail).toEqual([]);
    expect(r.ok).toBe(true);
    expect(r.survivors).toBe(24);
    expect(r.survivors_undisturbed).toBe(24);
    expect(r.restarted).toBe(6);
    expect(r.messages_sent).toBeGreaterThan(100);
    expect(r.messages_delivered).toBe(r.messages_sent);
    expect(r.messages_lost).toBe(0);
    expect(r.restart_ms.count).toBe(6);

    const kinds = new Set(r.fault_records.map((f) => f.kind));
    for (const k of ['sigkill', 'segv', 'exception', 'hang'] as const)
      expect(kinds.has(k), `a ${k} fault was injected`).toBe(true);
    for (const f of r.fault_records) {
      const e = f.exit!;
      expect(e, `${f.name} (${f.kind}) exited`).toBeTruthy();
      if (f.kind === 'sigkill' || f.kind === 'hang' || f.kind === 'cpu') expect(e.signal).toBe('SIGKILL');
      if (f.kind === 'segv') expect(e.signal).toBe('SIGSEGV');
      if (f.kind === 'exception') expect(e.exit_code).toBe(1);
      if (f.kind === 'leak') expect(e.reason).toBe(r.sandbox.memory ? 'oom' : 'signal');
    }
  }, 90_000);
});
