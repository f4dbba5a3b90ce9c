import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { spawnAtPid, startOf, Strays } from './procs.js';

const exited = (c: ReturnType<typeof spawn>): Promise<unknown> =>
  c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((r) => c.once('exit', r));

describe.runIf(process.geteuid?.() === 0)('Strays (pids are reused)', () => {
  it('kills what was added and is still running, and leaves alone another process given its pid since', async () => {
    const runs = spawn('sleep', ['600'], { stdio: 'ignore' });
    const ends = spawn('sleep', ['600'], { stdio: 'ignore' });
    await Promise.all([runs, ends].map((c) => new Promise((r) => c.once('spawn', r))));
    const strays = new Strays().add(runs.pid!).add(ends.pid!);
    ends.kill('SIGKILL');
    await exited(ends);
    // Start times count in clock ticks (10 ms): a real reuse comes a whole pid_max of forks later.
    await new Promise((r) => setTimeout(r, 30));
    // Another test's process, detached (its own group), now holds the pid that ended.
    const other = await spawnAtPid(ends.pid!, ['sleep', '600'], { detached: true });
    expect(other, `could not start a process as pid ${ends.pid}`).not.toBeNull();
    try {
      strays.killAll();
      await exited(runs);
      expect(runs.signalCode).toBe('SIGKILL');
      expect(startOf(other!.pid!), 'the process that reused the pid runs on').not.toBeNull();
    } finally {
      other?.kill('SIGKILL');
      runs.kill('SIGKILL');
    }
  });
});
