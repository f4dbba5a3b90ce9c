/**
 * The kernel raises its own RLIMIT_NOFILE at start and says what it got: a real kernel process started
 * under a low limit (prlimit), its /proc/<pid>/limits and its start-up log line.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { kernelCommand, tempDir, until } from '../../harness/kernel.js';
import { nativeAvailable } from '../sandbox/native.js';
import { agentRoom, describeNofile, FDS_PER_AGENT, TARGET_AGENTS, WANTED_NOFILE } from './rlimits.js';

/** CAP_SYS_RESOURCE (bit 24) in this process's effective set: may a kernel started from here raise its hard limit? */
function hasSysResource(): boolean {
  const m = /^CapEff:\s+([0-9a-f]+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? (BigInt('0x' + m[1]) & (1n << 24n)) !== 0n : false;
}

const prlimit = fs.existsSync('/usr/bin/prlimit') ? '/usr/bin/prlimit' : undefined;

describe('agentRoom / describeNofile', () => {
  it('counts one fd per agent above what is open and the operators reserve', () => {
    expect(FDS_PER_AGENT).toBe(1);
    expect(agentRoom(20_000, 40, 256)).toBe(19_704);
    expect(agentRoom(100, 40, 256)).toBe(0);
    expect(agentRoom(Number.POSITIVE_INFINITY, 40, 256)).toBe(Number.POSITIVE_INFINITY);
  });

  it('warns, naming the limit and the way out, when fewer than the target agents fit', () => {
    const low = describeNofile(
      {
        before: { soft: 1024, hard: 4096 },
        after: { soft: 4096, hard: 4096 },
        hardError: 'EPERM',
        softError: null,
      },
      256,
    );
    expect(low.level).toBe('warn');
    expect(low.msg).toMatch(/limit 4096 \(was 1024 soft \/ 4096 hard\) leaves room for only \d+ agents/);
    expect(low.msg).toContain(`fewer than ${TARGET_AGENTS}`);
    expect(low.msg).toContain('CAP_SYS_RESOURCE');
    expect(low.fields.nofile).toMatchObject({ hard_raise_error: 'EPERM', soft: 4096 });
    const high = describeNofile(
      {
        before: { soft: 1024, hard: 65536 },
        after: { soft: 65536, hard: 65536 },
        hardError: null,
        softError: null,
      },
      256,
    );
    expect(high.level).toBe('info');
    expect(high.msg).toMatch(/limit 65536 .*room for \d+ agents/);
  });
});

describe.skipIf(!prlimit || !nativeAvailable())('the kernel process', () => {
  it('raises its soft limit to the hard one (and the hard one when it may), and logs what it got', async () => {
    const dir = tempDir();
    const child = spawn(
      prlimit!,
      [
        '--nofile=512:4096',
        '--',
        ...kernelCommand({ socketPath: path.join(dir, 'clove.sock'), dataDir: path.join(dir, 'data') }, [
          '--sandbox',
          'off',
          '--log-level',
          'info',
        ]),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    try {
      const line = await until(
        () => err.split('\n').find((l) => l.includes('"nofile"')),
        30_000,
        'the file descriptors line',
      );
      const logged = JSON.parse(line) as { level: number; msg: string; nofile: Record<string, unknown> };
      const limits = fs.readFileSync(`/proc/${child.pid}/limits`, 'utf8');
      const [, soft, hard] = /^Max open files\s+(\d+)\s+(\d+)/m.exec(limits)!.map(Number);
      expect(soft).toBe(hard);
      expect(logged.nofile).toMatchObject({ soft, hard });
      if (hasSysResource()) {
        expect(hard).toBe(Math.min(WANTED_NOFILE, Number(fs.readFileSync('/proc/sys/fs/nr_open', 'utf8'))));
        expect(logged.level).toBe(30);
      } else {
        // Without CAP_SYS_RESOURCE the hard limit stays, and the kernel says it is too low, and why.
        expect(hard).toBe(4096);
        expect(logged.level).toBe(40);
        expect(logged.msg).toContain('leaves room for only');
        expect(logged.nofile.hard_raise_error).toMatch(/EPERM/);
      }
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
