/**
 * What a sandboxed agent costs in file descriptors: nothing in the spawner (its exit comes through the
 * addon's reaper: one signal, one shared pipe for every agent), its connection alone in a kernel. Real
 * processes; needs root and the built addon (CI=true makes a missing sandbox a failure).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKernelProcess, until, type KernelProcess } from '../../harness/kernel.js';
import { REPO_ROOT } from '../config.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { nativeAvailable } from './native.js';
import { NativeSpawner, type SandboxedAgent } from './native-spawner.js';
import { exitOf, sandboxPython, spec, workDir, zombieChildren } from './testutil.js';

const isRoot = process.geteuid?.() === 0;
const required = process.env.CI === 'true';
const run = (isRoot && nativeAvailable()) || required ? describe : describe.skip;

const fdsOf = (pid: number | 'self') => fs.readdirSync(`/proc/${pid}/fd`).length;

run('file descriptors per sandboxed agent', () => {
  let spawner: NativeSpawner;
  let dir: string;
  let log: number;

  beforeAll(async () => {
    dir = workDir('clove-fds-');
    log = fs.openSync(path.join(dir, 'log.txt'), 'a');
    spawner = new NativeSpawner({ require: true, warn: () => undefined });
    await spawner.init();
    // The first spawn sets up the reaper (its signal and its shared exit pipe, two fds for good).
    const a = (await spawner.spawn(spec({ argv: ['/bin/true'], cwd: dir, logFd: log }))) as SandboxedAgent;
    await exitOf(a);
  });

  afterAll(async () => {
    await spawner.close();
    fs.closeSync(log);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the spawner keeps no fd for a running agent, and still reports how each one ended', async () => {
    const before = fdsOf('self');
    const agents: SandboxedAgent[] = [];
    for (let i = 0; i < 4; i++)
      agents.push(
        (await spawner.spawn(spec({ argv: ['/bin/sleep', '1000'], cwd: dir, logFd: log }))) as SandboxedAgent,
      );
    expect(fdsOf('self')).toBe(before);
    const exits = agents.map(exitOf);
    agents[0].signal('SIGTERM');
    agents[1].signal('SIGKILL');
    agents[2].signal('SIGINT');
    agents[3].signal('SIGTERM');
    expect(await Promise.all(exits)).toEqual([
      { code: null, signal: 'SIGTERM', reason: 'signal' },
      { code: null, signal: 'SIGKILL', reason: 'signal' },
      { code: null, signal: 'SIGINT', reason: 'signal' },
      { code: null, signal: 'SIGTERM', reason: 'signal' },
    ]);
    expect(fdsOf('self')).toBe(before);
    await until(() => zombieChildren().length === 0, 10_000, 'no zombie children');
  });

  it("an agent's own exit code comes through even when it leaves processes behind", async () => {
    const before = fdsOf('self');
    const a = (await spawner.spawn(
      spec({ argv: ['/bin/sh', '-c', 'sleep 1000 & sleep 1000 & exit 3'], cwd: dir, logFd: log }),
    )) as SandboxedAgent;
    const b = (await spawner.spawn(
      spec({ argv: ['/bin/sh', '-c', 'exit 0'], cwd: dir, logFd: log }),
    )) as SandboxedAgent;
    expect(await exitOf(a)).toEqual({ code: 3, signal: null, reason: 'exit' });
    expect(await exitOf(b)).toEqual({ code: 0, signal: null, reason: 'exit' });
    expect(fdsOf('self')).toBe(before);
    await until(() => zombieChildren().length === 0, 10_000, 'no zombie children');
  });

  it('many agents ending at once are all reaped, each with its own status', async () => {
    const agents: SandboxedAgent[] = [];
    for (let i = 0; i < 20; i++)
      agents.push(
        (await spawner.spawn(
          spec({ argv: ['/bin/sh', '-c', `sleep 0.5; exit ${i}`], cwd: dir, logFd: log }),
        )) as SandboxedAgent,
      );
    const got = await Promise.all(agents.map(exitOf));
    expect(got.map((e) => e.code)).toEqual(agents.map((_, i) => i));
  });
});

run('file descriptors of a kernel per sandboxed agent', () => {
  let kp: KernelProcess;
  let bench: CloveClient;
  const python = sandboxPython();

  beforeAll(async () => {
    kp = await startKernelProcess({ extra: ['--sandbox', 'auto', '--log-level', 'warn'] });
    bench = await kp.client();
    await bench.register('bench');
  }, 60_000);

  afterAll(async () => {
    await kp?.stop();
  });

  it.skipIf(!python)(
    'holds one fd per connected idle agent: its connection',
    async () => {
      const ctl = await kp.client();
      const up = async (n: number) => {
        let got = 0;
        while (got < n) got += (await bench.recv({ max: n, timeoutMs: 30_000 })).count;
      };
      // One agent first: whatever the first spawn sets up for good is not counted.
      const script = path.join(REPO_ROOT, 'bench', 'agents', 'idle_agent.py');
      await ctl.spawn({ name: 'idle-0', script, restart_policy: 'never' } as never);
      await up(1);
      const before = fdsOf(kp.child.pid!);
      const N = 5;
      for (let i = 1; i <= N; i++)
        await ctl.spawn({ name: `idle-${i}`, script, restart_policy: 'never' } as never);
      await up(N);
      const running = (await ctl.list()).filter((a) => a.running).length;
      expect(running).toBe(N + 1);
      expect(fdsOf(kp.child.pid!) - before).toBe(N);
    },
    120_000,
  );
});
