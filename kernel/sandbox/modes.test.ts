/** Degraded modes, forced as root: rootless (user namespace) and plain processes. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nativeAvailable } from './native.js';
import { NativeSpawner, type SandboxedAgent } from './native-spawner.js';
import { TESTDATA, exitOf, kv, readLog, sleep, spec, workDir } from './testutil.js';

const isRoot = process.geteuid?.() === 0;
const run = (isRoot && nativeAvailable()) || process.env.CI === 'true' ? describe : describe.skip;

run('NativeSpawner degraded modes', () => {
  let dir: string;
  const fds: number[] = [];
  const log = () => {
    const file = path.join(dir, `log${fds.length}.txt`);
    fds.push(fs.openSync(file, 'a'));
    return { fd: fds[fds.length - 1], file };
  };
  beforeAll(() => {
    dir = workDir('clove-modes-');
  });
  afterAll(() => {
    for (const fd of fds) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('rootless: user + pid/mnt/uts/ipc/net namespaces, says it is degraded, loudly', async () => {
    const warnings: string[] = [];
    const sp = new NativeSpawner({ mode: 'rootless', require: false, warn: (m) => warnings.push(m) });
    try {
      await sp.init();
      expect(sp.mode).toBe('rootless');
      expect(warnings.join('\n')).toMatch(/DEGRADED \(rootless\)/);
      const l = log();
      const a = (await sp.spawn(
        spec({
          name: 'rl',
          argv: ['/bin/sh', path.join(TESTDATA, 'inspect.sh')],
          cwd: dir,
          logFd: l.fd,
          env: { PATH: '/usr/bin:/bin', HOST_PID: String(process.pid) },
        }),
      )) as SandboxedAgent;
      expect(a.isolation.namespaces).toMatchObject({
        pid: true,
        mnt: true,
        uts: true,
        user: true,
        net: true,
      });
      expect(a.isolation.fully_isolated).toBe(false);
      expect(a.isolation.degraded_reason).toMatch(/rootless/);
      expect((await exitOf(a)).code).toBe(0);
      const out = kv(readLog(l.file));
      expect(out.pid).toBe('2');
      expect(out.hostkill).toBe('no');
      expect(out.rootwrite).toBe('no');
      expect(out.caps).toBe('CapEff:0000000000000000');
    } finally {
      await sp.close();
    }
  });

  it('plain: no namespaces, still an unprivileged uid, cgroups and whole-tree signals', async () => {
    const warnings: string[] = [];
    const sp = new NativeSpawner({ mode: 'plain', require: false, warn: (m) => warnings.push(m) });
    try {
      await sp.init();
      expect(sp.mode).toBe('plain');
      expect(warnings.join('\n')).toMatch(/DEGRADED \(plain\)/);
      const l = log();
      const a = (await sp.spawn(
        spec({ argv: ['/bin/sh', '-c', 'id -u; sleep 60 & sleep 61 & wait'], cwd: dir, logFd: l.fd }),
      )) as SandboxedAgent;
      expect(a.isolation.namespaces).toMatchObject({ pid: false, net: false, mnt: false, uts: false });
      expect(a.isolation.cgroups.memory_limit).toBe(true);
      expect(a.isolation.degraded_reason).toMatch(/plain/);
      // sh and its two sleeps, once sh has forked them (wait for it: the machine may be busy)
      for (let i = 0; i < 200 && a.cgroup!.procs().length < 3; i++) await sleep(50);
      const procs = a.cgroup!.procs();
      expect(procs.length).toBe(3);
      expect(sp.ownerOf(procs[2])).toBe(sp.ownerOf(a.pid));
      a.signal('SIGTERM');
      expect(await exitOf(a)).toMatchObject({ signal: 'SIGTERM', reason: 'signal' });
      // gone, or a zombie waiting for the host's init to reap it (they were re-parented, not ours)
      const running = (p: number) => {
        try {
          return !/\) Z /.test(fs.readFileSync(`/proc/${p}/stat`, 'utf8'));
        } catch {
          return false;
        }
      };
      expect(procs.filter(running)).toEqual([]);
      expect(readLog(l.file)).toContain('65534');
    } finally {
      await sp.close();
    }
  });

  it('require: true refuses a degraded sandbox with SandboxUnavailableError', async () => {
    const sp = new NativeSpawner({ mode: 'plain', require: true, warn: () => undefined });
    await expect(sp.init()).rejects.toThrow(
      expect.objectContaining({ name: 'SandboxUnavailableError', code: 'ENOSANDBOX' }),
    );
  });
});
