import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import { AgentLogs, QUIET_MAX_FACTOR } from './logs.js';

let tk: TestKernel;
beforeAll(async () => {
  tk = await startKernel({ logMaxBytes: 64 * 1024, logKeep: 2, logCheckIntervalMs: 100 });
});
afterAll(async () => tk?.stop());

describe('agent logs', () => {
  it('go to a per-agent file whose size is bounded by rotation while the agent keeps writing', async () => {
    const script = path.join(tempDir(), 'chatty.py');
    fs.writeFileSync(
      script,
      'import sys, time\nwhile True:\n    print("x" * 1000, flush=True)\n    time.sleep(0.001)\n',
    );
    const c = await tk.client();
    await c.spawn({ name: 'chatty', script });
    const log = path.join(tk.dataDir, 'logs', 'chatty.log');
    await until(() => fs.existsSync(`${log}.2`), 20_000, 'two rotations');
    // The bound is checked on a timer: allow what one interval of writing adds.
    const sizes = [];
    for (let i = 0; i < 5; i++) {
      sizes.push(fs.statSync(log).size);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(Math.max(...sizes)).toBeLessThan(64 * 1024 + 512 * 1024);
    expect(fs.existsSync(`${log}.3`)).toBe(false);
    expect(fs.readFileSync(`${log}.1`, 'utf8')).toMatch(/^x+$/m);
    await c.kill('chatty');
  });
});

describe('the rotation check', () => {
  it('checks a quiet log less and less often (up to QUIET_MAX_FACTOR intervals), a growing one every interval', () => {
    const dir = tempDir();
    const logs = new AgentLogs({ dir, maxBytes: 100, keep: 1, checkIntervalMs: 1000 });
    try {
      fs.closeSync(logs.open('quiet'));
      fs.closeSync(logs.open('busy'));
      const file = (n: string) => path.join(dir, `${n}.log`);
      let now = Date.now();
      const waits: number[] = [];
      // One tick per interval, as the timer does; 'busy' grows by 10 bytes at every tick.
      for (let t = 0; t < 80; t++) {
        now += 1000;
        fs.appendFileSync(file('busy'), 'x'.repeat(10));
        const due = logs.dueAt('quiet')!;
        logs.check(now);
        if (logs.dueAt('quiet') !== due) waits.push(Math.round((logs.dueAt('quiet')! - now) / 1000 + 0.5));
        expect(logs.dueAt('busy')! - now).toBeLessThanOrEqual(1000); // due again at the next tick
      }
      expect(waits.slice(0, 6)).toEqual([1, 1, 2, 4, 8, 16]);
      expect(Math.max(...waits)).toBe(QUIET_MAX_FACTOR);
      // 'busy' went over its bound several times and was rotated each time at the next tick.
      expect(fs.statSync(file('busy')).size).toBeLessThanOrEqual(100);
      expect(fs.readFileSync(`${file('busy')}.1`, 'utf8')).toMatch(/^x{110}$/);
      // The quiet log starts growing: it is seen at its next due check, and then checked every interval.
      fs.appendFileSync(file('quiet'), 'y'.repeat(200));
      const seenAt = logs.dueAt('quiet')!;
      now = seenAt;
      logs.check(now);
      expect(fs.statSync(file('quiet')).size).toBe(0); // over the bound: rotated
      expect(fs.readFileSync(`${file('quiet')}.1`, 'utf8')).toBe('y'.repeat(200));
      expect(logs.dueAt('quiet')! - now).toBeLessThanOrEqual(1000);
      // A log taken off (the agent is gone) is not checked any more.
      logs.forget('quiet');
      expect(logs.dueAt('quiet')).toBeUndefined();
    } finally {
      logs.close();
    }
  });
});
