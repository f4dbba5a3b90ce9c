/**
 * The native mail store under several threads (native/test/store_threads.cc), which JavaScript cannot
 * drive: built here with ThreadSanitizer when the compiler has it, and run; it checks exactly-once
 * delivery in each sender's order, bytes freed, counters, and that listeners run without the lock.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from '../sandbox/native.js';

const hasCompiler = spawnSync('g++', ['--version']).status === 0;

describe.skipIf(!hasCompiler)('native mail store, many threads', () => {
  it('delivers every message once, in order, frees every byte, and never calls a listener under the lock', () => {
    const root = projectRoot();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-store-threads-'));
    const bin = path.join(dir, 'store_threads');
    const sources = [
      'native/test/store_threads.cc',
      'native/src/fast/store.cc',
      'native/src/fast/ops.cc',
      'native/src/fast/frame.cc',
    ].map((f) => path.join(root, f));
    const build = (extra: string[]) =>
      spawnSync(
        'g++',
        ['-std=gnu++20', '-O1', '-g', ...extra, ...sources, '-lsimdjson', '-lpthread', '-o', bin],
        {
          encoding: 'utf8',
        },
      );
    try {
      // ThreadSanitizer when available; a plain build otherwise.
      let b = build(['-fsanitize=thread']);
      if (b.status !== 0) b = build([]);
      expect(b.stderr).toBe('');
      expect(b.status).toBe(0);
      const out = execFileSync(bin, {
        encoding: 'utf8',
        env: { ...process.env, TSAN_OPTIONS: 'halt_on_error=1' },
      });
      expect(out).toMatch(/^ok \d+ wake-ups/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
