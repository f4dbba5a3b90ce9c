import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnAtPid, startOf } from '../../harness/procs.js';
import { PlainSpawner } from './plain-spawner.js';
import { exitOf, spec } from './testutil.js';

describe('PlainSpawner: an agent in a process group of its own', () => {
  let dir: string;
  let logFd: number;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-plain-'));
    logFd = fs.openSync(path.join(dir, 'log'), 'a');
  });
  afterAll(() => {
    fs.closeSync(logFd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a signal reaches everything the agent started', async () => {
    const pidFile = path.join(dir, 'child.pid');
    const a = await new PlainSpawner().spawn(
      spec({
        argv: ['/bin/sh', '-c', `sleep 600 & echo $! > ${pidFile}; wait`],
        cwd: dir,
        logFd,
        sandboxed: false,
      }),
    );
    for (let i = 0; i < 200 && !fs.existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 10));
    const child = Number(fs.readFileSync(pidFile, 'utf8'));
    a.signal('SIGTERM');
    expect(await exitOf(a)).toMatchObject({ signal: 'SIGTERM' });
    for (let i = 0; i < 200 && startOf(child) !== null; i++) await new Promise((r) => setTimeout(r, 10));
    expect(startOf(child), 'the agent’s background child went with it').toBeNull();
  });

  it.runIf(process.geteuid?.() === 0)(
    'once the agent has exited, a signal is sent to nobody: its group’s id may name another group by then',
    async () => {
      const a = await new PlainSpawner().spawn(
        spec({ argv: ['/bin/true'], cwd: dir, logFd, sandboxed: false }),
      );
      await exitOf(a);
      // Start times count in clock ticks (10 ms): a real reuse comes a whole pid_max of forks later.
      await new Promise((r) => setTimeout(r, 30));
      // Another program, leading a group of its own, is given the agent's pid (and so its group's id).
      const other = await spawnAtPid(a.pid, ['sleep', '600'], { detached: true });
      expect(other, `could not start a process as pid ${a.pid}`).not.toBeNull();
      try {
        a.signal('SIGKILL');
        await new Promise((r) => setTimeout(r, 50));
        expect(startOf(a.pid), 'the group now holding that id is not signalled').not.toBeNull();
      } finally {
        other?.kill('SIGKILL');
      }
    },
  );
});
