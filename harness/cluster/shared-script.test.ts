/**
 * sharedScript writes an agent's script whole or not at all. The cluster tests write the same script again
 * for each agent they start; a write that truncated first let an agent started a moment before read it
 * empty and exit 0 at once (a fresh-clone CI run's box3). Here another process reads the file as fast as
 * it can while this one rewrites it: it must never see it empty or cut short.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from '../kernel.js';
import { sharedScript } from './cluster-scenarios.js';
import type { ClusterHandle } from './provider.js';

const READER = `
import sys, time
p, want = sys.argv[1], int(sys.argv[2])
end = time.monotonic() + 1.5
reads = bad = 0
while time.monotonic() < end:
    with open(p, "rb") as f:
        n = len(f.read())
    reads += 1
    if n != want:
        bad += 1
print(reads, bad)
`;

describe('sharedScript', () => {
  it('a reader never sees the script empty or partial while it is written again and again', async () => {
    const dir = tempDir();
    try {
      const cluster = { sharedDir: dir } as unknown as ClusterHandle;
      const text = `import time\n# ${'x'.repeat(4000)}\nwhile True:\n    time.sleep(60)\n`;
      const file = sharedScript(cluster, 'agent.py', text);
      expect(file).toBe(path.join(dir, 'agent.py'));
      const reader = spawn('python3', ['-c', READER, file, String(Buffer.byteLength(text))], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      reader.stdout!.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((r) => reader.once('exit', r));
      // Rewrite for as long as the reader reads (it starts within a second; it reads for 1.5 s).
      let writes = 0;
      const end = Date.now() + 3000;
      while (Date.now() < end) {
        sharedScript(cluster, 'agent.py', text);
        writes++;
        if (writes % 200 === 0) await new Promise((r) => setImmediate(r));
      }
      expect(await exited).toBe(0);
      const [reads, bad] = out.trim().split(' ').map(Number);
      expect(reads).toBeGreaterThan(100);
      expect(bad).toBe(0);
      expect(fs.readdirSync(dir)).toEqual(['agent.py']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
