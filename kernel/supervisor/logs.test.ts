import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';

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
