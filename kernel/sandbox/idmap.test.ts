/**
 * Idmapped mounts through the raw addon (createIdmapUserns + NativeSpawnOptions.idmapped): an agent
 * running as its own unprivileged uid reads its script directory although that directory is 0700 and
 * owned by root, because it is bound into the agent's mount namespace with an idmapping that makes
 * root-owned files appear owned by the agent's uid. Needs root (CAP_SYS_ADMIN for MOUNT_ATTR_IDMAP).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloveNative, NativeExit, NativeSpawnOptions } from '../../native/index.js';
import { initHelperPath, loadNative } from './native.js';

const isRoot = process.geteuid?.() === 0;
const RLIMIT_NOFILE = 7;
const UID_A = 200901;
const UID_B = 200902;

describe.runIf(isRoot)('idmapped mounts (raw addon, root)', () => {
  let native: CloveNative;
  let logDir: string;
  let logNo = 0;
  const dirs: string[] = [];

  /** A 0700 root-owned directory holding secret.txt (0600) and lib/x.txt (lib/ 0700). */
  function privateDir(tag: string): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'idm'));
    dirs.push(dir);
    fs.chmodSync(dir, 0o700);
    fs.writeFileSync(path.join(dir, 'secret.txt'), `secret of ${tag}\n`, { mode: 0o600 });
    fs.mkdirSync(path.join(dir, 'lib'), { mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'lib', 'x.txt'), `module of ${tag}\n`, { mode: 0o600 });
    return dir;
  }

  function newLog(): { fd: number; file: string } {
    const file = path.join(logDir, `log${logNo++}.txt`);
    return { fd: fs.openSync(file, 'a'), file };
  }

  const INIT_DIR = path.dirname(initHelperPath());

  /** A complete root-mode NativeSpawnOptions, as spawner.ts nativeOptions() builds it. */
  function options(o: {
    argv: string[];
    uid: number;
    stdoutFd: number;
    keep?: string[];
    idmapped?: NativeSpawnOptions['idmapped'];
  }): NativeSpawnOptions {
    return {
      file: o.argv[0],
      argv: o.argv,
      env: ['PATH=/usr/bin:/bin', 'LC_ALL=C'],
      cwd: '/',
      stdoutFd: o.stdoutFd,
      initPath: initHelperPath(),
      newPid: true,
      newMount: true,
      newUts: true,
      newIpc: true,
      newNet: false,
      newCgroup: false,
      newUser: false,
      uidMap: '0 0 1',
      gidMap: '0 0 1',
      netnsFd: -1,
      hostname: 'idmap-test',
      cgroupDir: '',
      cgroupProcs: [],
      readOnlyRoot: true,
      mountProc: true,
      tmpfsOptions: 'size=16m,mode=1777',
      writable: [],
      masks: ['/tmp'],
      // clove-init must stay reachable when the checkout itself lives below the masked /tmp (a CI clone).
      keep: [...(o.keep ?? []), ...(INIT_DIR.startsWith('/tmp/') ? [INIT_DIR] : [])],
      idmapped: o.idmapped ?? [],
      setsid: true,
      noNewPrivs: true,
      dropCaps: true,
      uid: o.uid,
      gid: o.uid,
      rlimits: [[RLIMIT_NOFILE, 256, 256]],
      startTimeoutMs: 10_000,
    };
  }

  /** Spawns, waits for the exit (watch, exactly once), returns it with the agent's output. */
  async function runAgent(opts: Omit<Parameters<typeof options>[0], 'stdoutFd'>) {
    const log = newLog();
    try {
      const child = await native.spawn(options({ ...opts, stdoutFd: log.fd }));
      const exit = await new Promise<NativeExit>((resolve) => child.watch(resolve));
      return { exit, out: fs.readFileSync(log.file, 'utf8') };
    } finally {
      fs.closeSync(log.fd);
    }
  }

  /** createIdmapUserns mapping on-disk uid/gid 0 to `uid`; the fd is closed after fn. */
  async function withUserns<T>(uid: number, fn: (fd: number) => Promise<T>): Promise<T> {
    const fd = native.createIdmapUserns(`0 ${uid} 1`, `0 ${uid} 1`);
    try {
      return await fn(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  beforeAll(() => {
    native = loadNative();
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'idm-log'));
    fs.chmodSync(logDir, 0o755);
  });

  afterAll(() => {
    for (const d of [...dirs, logDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('createIdmapUserns returns a user namespace fd with the given maps', () => {
    const fd = native.createIdmapUserns(`0 ${UID_A} 1`, `0 ${UID_A} 1`);
    try {
      expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).toMatch(/^user:\[\d+\]$/);
      expect(fs.readlinkSync(`/proc/self/fd/${fd}`)).not.toBe(fs.readlinkSync('/proc/self/ns/user'));
    } finally {
      fs.closeSync(fd);
    }
    expect(() => native.createIdmapUserns('', '')).toThrow(
      expect.objectContaining({ syscall: 'write(/proc/<pid>/uid_map)', code: 'EINVAL' }),
    );
  });

  it('an agent reads its 0700 root-owned directory through the idmapped mount, sees it as its own, cannot write', async () => {
    const dir = privateDir('a');
    const script = [
      `cat ${dir}/secret.txt ${dir}/lib/x.txt`,
      `echo "owner=$(stat -c %u:%g ${dir}) $(stat -c %u:%g ${dir}/secret.txt) $(stat -c %u ${dir}/lib/x.txt)"`,
      `echo "me=$(id -u):$(id -g)"`,
      `touch ${dir}/new 2>&1 || echo WRITE_DENIED`,
      `echo more >> ${dir}/secret.txt 2>&1 || echo APPEND_DENIED`,
    ].join('; ');
    const { exit, out } = await withUserns(UID_A, (usernsFd) =>
      runAgent({ argv: ['/bin/sh', '-c', script], uid: UID_A, idmapped: [{ path: dir, usernsFd }] }),
    );
    expect(exit.agent).toEqual({ code: 0, signal: null });
    expect(out).toContain('secret of a\nmodule of a\n');
    expect(out).toContain(`owner=${UID_A}:${UID_A} ${UID_A}:${UID_A} ${UID_A}\n`);
    expect(out).toContain(`me=${UID_A}:${UID_A}\n`);
    expect(out).toMatch(/Read-only file system/);
    expect(out).toContain('WRITE_DENIED');
    expect(out).toContain('APPEND_DENIED');
    // Nothing changed on the host, and the host still sees root's 0700 directory.
    expect(fs.existsSync(path.join(dir, 'new'))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'secret.txt'), 'utf8')).toBe('secret of a\n');
    const st = fs.statSync(dir);
    expect([st.uid, st.mode & 0o777]).toEqual([0, 0o700]);
  });

  it('without the idmapped entry (dir only in keep) the agent gets Permission denied', async () => {
    const dir = privateDir('a2');
    const { exit, out } = await runAgent({
      argv: ['/bin/sh', '-c', `stat -c owner=%u ${dir}; cat ${dir}/secret.txt ${dir}/lib/x.txt`],
      uid: UID_A,
      keep: [dir],
    });
    expect(exit.agent?.code).not.toBe(0);
    expect(out).toContain('owner=0\n');
    expect(out).toMatch(/Permission denied/);
    expect(out).not.toContain('secret of a2');
    expect(out).not.toContain('module of a2');
  });

  it("another agent (other uid, its own idmapped dir) cannot read the first agent's directory while it is mounted", async () => {
    const dirA = privateDir('A');
    const dirB = privateDir('B');
    const fdA = native.createIdmapUserns(`0 ${UID_A} 1`, `0 ${UID_A} 1`);
    const fdB = native.createIdmapUserns(`0 ${UID_B} 1`, `0 ${UID_B} 1`);
    const logA = newLog();
    try {
      // Agent A holds its idmapped mount while B runs.
      const a = await native.spawn(
        options({
          argv: ['/bin/sh', '-c', `cat ${dirA}/secret.txt; exec sleep 30`],
          uid: UID_A,
          stdoutFd: logA.fd,
          idmapped: [{ path: dirA, usernsFd: fdA }],
        }),
      );
      const aExit = new Promise<NativeExit>((resolve) => a.watch(resolve));
      try {
        for (let i = 0; i < 200 && !fs.readFileSync(logA.file, 'utf8').includes('secret of A'); i++)
          await new Promise((r) => setTimeout(r, 25));
        expect(fs.readFileSync(logA.file, 'utf8')).toBe('secret of A\n');

        // B: dirA visible (kept) but only with its real ownership, dirB idmapped to B's uid.
        const b = await runAgent({
          argv: [
            '/bin/sh',
            '-c',
            `cat ${dirB}/secret.txt; cat ${dirA}/secret.txt 2>&1 || echo A_DENIED; ls ${dirA} 2>&1 || echo A_LIST_DENIED`,
          ],
          uid: UID_B,
          keep: [dirA],
          idmapped: [{ path: dirB, usernsFd: fdB }],
        });
        expect(b.exit.agent).toEqual({ code: 0, signal: null });
        expect(b.out).toContain('secret of B\n');
        expect(b.out).toContain('A_DENIED');
        expect(b.out).toContain('A_LIST_DENIED');
        expect(b.out).toMatch(/Permission denied/);
        expect(b.out).not.toContain('secret of A');

        // B with A's idmapping would be the only way in; B's own mapping of dirA does not give A's uid.
        const c = await runAgent({
          argv: ['/bin/sh', '-c', `stat -c owner=%u ${dirA}; cat ${dirA}/secret.txt 2>&1 || echo A_DENIED`],
          uid: UID_B,
          idmapped: [{ path: dirA, usernsFd: fdA }],
        });
        expect(c.out).toContain(`owner=${UID_A}\n`);
        expect(c.out).toContain('A_DENIED');
        expect(c.out).not.toContain('secret of A');
      } finally {
        a.kill(9);
        expect((await aExit).signal).toBe(9);
      }
    } finally {
      fs.closeSync(logA.fd);
      fs.closeSync(fdA);
      fs.closeSync(fdB);
    }
  });

  it('leaks no fd: none in the kernel once the userns fd is closed, only stdio in the agent', async () => {
    const dir = privateDir('fd');
    const before = fs.readdirSync('/proc/self/fd').length;
    const { exit, out } = await withUserns(UID_A, (usernsFd) =>
      runAgent({ argv: ['/bin/ls', '-l', '/proc/self/fd'], uid: UID_A, idmapped: [{ path: dir, usernsFd }] }),
    );
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
    expect(exit.agent).toEqual({ code: 0, signal: null });
    // As in sandbox.test.ts (vi): ls lists its own directory fd; everything else was inherited.
    const entries = [...out.matchAll(/ (\d+) -> (.*)$/gm)].map((m) => ({ fd: Number(m[1]), target: m[2] }));
    const inherited = entries.filter((e) => !/^\/proc\/\d+\/fd$/.test(e.target));
    expect(inherited.map((e) => e.fd)).toEqual([0, 1, 2]);
    expect(inherited[0].target).toBe('/dev/null');
    expect(entries.length).toBe(4);
    expect(out).not.toMatch(/user:\[/);
  });

  it('a bad usernsFd fails the spawn with a SysError naming mount_setattr', async () => {
    const dir = privateDir('bad');
    const before = fs.readdirSync('/proc/self/fd').length;
    const log = newLog();
    try {
      for (const usernsFd of [-1, log.fd]) {
        let err: (Error & { syscall?: string; code?: string; errno?: number }) | undefined;
        try {
          await native.spawn(
            options({
              argv: ['/bin/true'],
              uid: UID_A,
              stdoutFd: log.fd,
              idmapped: [{ path: dir, usernsFd }],
            }),
          );
        } catch (e) {
          err = e as typeof err;
        }
        expect(err).toBeInstanceOf(Error);
        expect(err?.syscall).toMatch(/^mount_setattr\(/);
        expect(err?.code).toMatch(/^E[A-Z0-9]+$/);
        expect(err?.errno).toBeGreaterThan(0);
      }
      // More than 8 entries: E2BIG before anything is mounted.
      const fd = native.createIdmapUserns(`0 ${UID_A} 1`, `0 ${UID_A} 1`);
      try {
        const many = Array.from({ length: 9 }, () => ({ path: dir, usernsFd: fd }));
        await expect(
          native.spawn(options({ argv: ['/bin/true'], uid: UID_A, stdoutFd: log.fd, idmapped: many })),
        ).rejects.toThrow(
          expect.objectContaining({ code: 'E2BIG', syscall: expect.stringMatching(/^open_tree\(/) }),
        );
      } finally {
        fs.closeSync(fd);
      }
      // A missing directory fails in open_tree.
      const fd2 = native.createIdmapUserns(`0 ${UID_A} 1`, `0 ${UID_A} 1`);
      try {
        await expect(
          native.spawn(
            options({
              argv: ['/bin/true'],
              uid: UID_A,
              stdoutFd: log.fd,
              idmapped: [{ path: path.join(dir, 'missing'), usernsFd: fd2 }],
            }),
          ),
        ).rejects.toThrow(
          expect.objectContaining({ code: 'ENOENT', syscall: expect.stringMatching(/^open_tree\(/) }),
        );
      } finally {
        fs.closeSync(fd2);
      }
      // Malformed entries are a TypeError from the option parser.
      expect(() =>
        native.spawn({
          ...options({ argv: ['/bin/true'], uid: UID_A, stdoutFd: log.fd }),
          idmapped: [{ path: dir }] as unknown as NativeSpawnOptions['idmapped'],
        }),
      ).toThrow(TypeError);
    } finally {
      fs.closeSync(log.fd);
    }
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });
});
