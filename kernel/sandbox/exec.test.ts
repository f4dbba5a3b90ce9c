/**
 * EXEC's mechanism (exec.ts, native/src/enter.cc) in each sandbox mode, forced as root: root (setns into
 * the agent's namespaces, CLONE_VM entry), rootless (a user namespace to join first: fork-style entry)
 * and plain (no namespaces: the agent's uid and cgroup only). The family's policy is tested through a
 * kernel in kernel/syscalls/exec/exec.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExecSite, isFound } from './exec.js';
import { nativeAvailable } from './native.js';
import { NativeSpawner, processTree, type SandboxedAgent } from './native-spawner.js';
import type { SandboxMode } from './native-spawner.js';
import { childrenOfSelf, sleep, spec, workDir, zombieChildren } from './testutil.js';

const isRoot = process.geteuid?.() === 0;
const run = (isRoot && nativeAvailable()) || process.env.CI === 'true' ? describe : describe.skip;

const ns = (pid: number | 'self', n: string) => fs.readlinkSync(`/proc/${pid}/ns/${n}`);

run('ExecSite: a command inside a running agent', () => {
  let dir: string;
  let logFd: number;
  beforeAll(() => {
    dir = workDir('clove-exec-');
    logFd = fs.openSync(path.join(dir, 'log.txt'), 'a');
  });
  afterAll(() => {
    fs.closeSync(logFd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function withAgent(mode: SandboxMode, fn: (a: SandboxedAgent, site: ExecSite) => Promise<void>) {
    const sp = new NativeSpawner({ mode, require: false, warn: () => undefined });
    try {
      await sp.init();
      const a = (await sp.spawn(spec({ argv: ['/bin/sleep', '60'], cwd: dir, logFd }))) as SandboxedAgent;
      const account = mode === 'rootless' ? null : { uid: 65534, gid: 65534 };
      await fn(a, ExecSite.ofAgent(a, account));
    } finally {
      await sp.close();
    }
  }

  const sh = (site: ExecSite, command: string, timeoutMs = 10_000) => {
    const [f] = site.find(['/bin/sh']);
    if (!isFound(f)) throw new Error('no /bin/sh');
    return site.run({
      file: f.path,
      argv: ['sh', '-c', command],
      env: { PATH: '/usr/bin:/bin' },
      cwd: '/',
      timeoutMs,
      maxOutput: 1 << 20,
    });
  };

  it('root mode: the agent namespaces, uid and cgroup', async () => {
    await withAgent('root', async (a, site) => {
      expect(site.confined).toBe(true);
      const main = a.mainPid()!;
      const r = await sh(
        site,
        'id -u; readlink /proc/self/ns/pid; readlink /proc/self/ns/net; cat /proc/self/cgroup',
      );
      expect(r.exitCode).toBe(0);
      const [uid, pidns, netns, ...cg] = r.stdout.toString().trim().split('\n');
      expect(uid).toBe('65534');
      expect(pidns).toBe(ns(main, 'pid'));
      expect(netns).toBe(ns(main, 'net'));
      expect(netns).not.toBe(ns('self', 'net'));
      expect(cg.join('\n') + '\n').toBe(fs.readFileSync(`/proc/${main}/cgroup`, 'utf8'));
    });
  });

  it('rootless mode: joins the user namespace first (a fork-style entry)', async () => {
    await withAgent('rootless', async (a, site) => {
      expect(site.confined).toBe(true);
      const main = a.mainPid()!;
      const r = await sh(
        site,
        'id -u; readlink /proc/self/ns/user; readlink /proc/self/ns/pid; grep CapEff /proc/self/status',
      );
      expect(r.exitCode).toBe(0);
      const [uid, userns, pidns, caps] = r.stdout.toString().trim().split('\n');
      expect(uid).toBe('0'); // the kernel's uid, mapped to 0 inside
      expect(userns).toBe(ns(main, 'user'));
      expect(userns).not.toBe(ns('self', 'user'));
      expect(pidns).toBe(ns(main, 'pid'));
      expect(caps).toMatch(/CapEff:\s*0+$/);
    });
  });

  it('plain mode: no namespaces, the agent uid and cgroup', async () => {
    await withAgent('plain', async (a, site) => {
      expect(site.confined).toBe(true); // a uid of its own
      const r = await sh(site, 'id -u; readlink /proc/self/ns/pid; cat /proc/self/cgroup');
      const [uid, pidns, ...cg] = r.stdout.toString().trim().split('\n');
      expect(uid).toBe('65534');
      expect(pidns).toBe(ns('self', 'pid'));
      expect(cg.join('\n') + '\n').toBe(fs.readFileSync(`/proc/${a.pid}/cgroup`, 'utf8'));
    });
  });

  it('paths are found in the agent view, never outside its root, with its search rights', async () => {
    await withAgent('root', async (_a, site) => {
      const [tmp, up, root] = site.find(['/tmp', '/../../tmp/..', '/root/x']);
      expect(tmp).toMatchObject({ path: '/tmp', type: 'dir' });
      expect(up).toMatchObject({ path: '/', type: 'dir' });
      // /root is 0700: the agent's uid cannot search it, whatever the kernel's rights.
      expect(root).toMatchObject({ code: fs.existsSync('/root') ? 'EACCES' : 'ENOENT' });
      expect(site.which('sh', '/nonexistent:/usr/bin:/bin')?.path).toMatch(/\/(dash|bash|sh)$/);
    });
  });

  it('a timeout kills the whole tree; 50 commands leave no zombie and no fd behind', async () => {
    await withAgent('root', async (a, site) => {
      const fdsBefore = fs.readdirSync('/proc/self/fd').length;
      const r = await sh(site, 'sleep 100 & setsid sleep 101 & (sleep 102 &); sleep 103', 500);
      expect(r).toMatchObject({ timedOut: true, exitCode: null, signal: 'SIGKILL' });
      await sleep(100);
      // Only the agent's own processes are left in its tree (clove-init and sleep 60).
      expect(processTree(a.pid).length).toBe(2);
      for (let i = 0; i < 50; i++) expect((await sh(site, 'true')).exitCode).toBe(0);
      await sleep(50);
      expect(zombieChildren()).toEqual([]);
      // Children of this process: the agent's clove-init only (the commands were reaped).
      expect(childrenOfSelf().filter((p) => p !== a.pid)).toEqual([]);
      expect(fs.readdirSync('/proc/self/fd').length).toBeLessThanOrEqual(fdsBefore + 2);
    });
  });

  it('an exec failure is a SyscallError naming the step', async () => {
    await withAgent('root', async (a, site) => {
      await expect(
        site.run({ file: '/nonexistent', argv: ['x'], env: {}, cwd: '/', timeoutMs: 1000, maxOutput: 10 }),
      ).rejects.toMatchObject({ syscall: 'execve', code: 'ENOENT' });
      await expect(
        site.run({
          file: '/bin/true',
          argv: ['true'],
          env: {},
          cwd: '/root',
          timeoutMs: 1000,
          maxOutput: 10,
        }),
      ).rejects.toMatchObject({ syscall: 'chdir', code: 'EACCES' });
      // (the spawner's start-up probe is reaped from the event loop: let it run)
      await sleep(100);
      expect(zombieChildren()).toEqual([]);
      expect(a.exited).toBe(false); // the agent is unharmed
    });
  });
});
