/**
 * A spawn never blocks the event loop: the addon clones, sets the sandbox up and waits for the agent's
 * exec on a thread of its own (native/src/spawn.cc). The test hook NativeSpawnOptions.testGate (a FIFO
 * every spawn first reads one byte from; $CLOVE_TEST_SPAWN_GATE for a kernel) holds spawns in flight as
 * long as a test likes, so these tests show the loop serving *while* spawns are under way, with no timing
 * in them. EXEC's start (`execInAgent`) runs on the addon's enter thread likewise. Real processes; needs
 * root and the built addon (CI=true makes a missing sandbox a failure).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKernelProcess, tempDir, until } from '../../harness/kernel.js';
import type { CloveNative, NativeExit, NativeSpawnOptions } from '../../native/index.js';
import { initHelperPath, loadNative, nativeAvailable } from './native.js';
import { workDir } from './testutil.js';

const isRoot = process.geteuid?.() === 0;
const required = process.env.CI === 'true';
const run = (isRoot && nativeAvailable()) || required ? describe : describe.skip;

/** A FIFO in a fresh directory, and an fd of ours on it (read-write: spawns opening it never wait). */
function gate(): { path: string; fd: number; release: (n?: number) => void; close: () => void } {
  const file = path.join(fs.realpathSync(tempDir('gate')), 'gate');
  execFileSync('mkfifo', ['-m', '0600', file]);
  const fd = fs.openSync(file, 'r+');
  let open = true;
  return {
    path: file,
    fd,
    release: (n = 1) => void fs.writeSync(fd, 'x'.repeat(n)),
    // Our fd is the last writer: closing it gives EOF to every spawn still waiting (they go on).
    close: () => {
      if (open) fs.closeSync(fd);
      open = false;
      fs.rmSync(path.dirname(file), { recursive: true, force: true });
    },
  };
}

/** How many fds of process `pid` are open on `file` (a spawn at the gate holds one). */
function openers(pid: number | 'self', file: string): number {
  let n = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === file) n++;
    } catch {
      /* closed meanwhile */
    }
  }
  return n;
}

/** A promise and whether it has settled yet. */
function track<T>(p: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const promise = p.finally(() => (done = true));
  promise.catch(() => undefined);
  return { promise, settled: () => done };
}

run('spawn off the event loop (raw addon)', () => {
  let native: CloveNative;
  let dir: string;

  function options(stdoutFd: number, argv: string[]): NativeSpawnOptions {
    return {
      file: argv[0],
      argv,
      env: ['PATH=/usr/bin:/bin'],
      cwd: '/',
      stdoutFd,
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
      hostname: 'offloop',
      cgroupDir: '',
      cgroupProcs: [],
      readOnlyRoot: true,
      mountProc: true,
      tmpfsOptions: 'size=16m,mode=1777',
      writable: [],
      masks: [],
      keep: [],
      idmapped: [],
      hideFiles: [],
      setsid: true,
      noNewPrivs: true,
      dropCaps: true,
      seccomp: true,
      uid: 65534,
      gid: 65534,
      rlimits: [],
      startTimeoutMs: 10_000,
    };
  }

  const exitOf = (c: { watch(cb: (e: NativeExit) => void): void }) =>
    new Promise<NativeExit>((resolve) => c.watch(resolve));

  beforeAll(() => {
    native = loadNative();
    dir = workDir('clove-offloop-');
  });

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a spawn held in flight leaves the loop serving, other spawns going, and the caller free to close its fds', async () => {
    // One spawn first: the reaper's fds (its signal, the shared exit pipe) stay for good.
    const devnull = fs.openSync('/dev/null', 'w');
    const first = await native.spawn(options(devnull, ['/bin/true']));
    fs.closeSync(devnull);
    await exitOf(first);
    const g = gate();
    const fdsBefore = fs.readdirSync('/proc/self/fd').length;
    const heldLog = path.join(dir, 'held.log');
    const logFd = fs.openSync(heldLog, 'a');
    try {
      const held = track(
        native.spawn({ ...options(logFd, ['/bin/echo', 'held agent ran']), testGate: g.path }),
      );
      // The addon has its own copy of the log fd: ours may go at once.
      fs.closeSync(logFd);
      await until(() => openers('self', g.path) === 2, 10_000, 'the spawn to wait at its gate');

      // Meanwhile the event loop runs timers and I/O …
      await new Promise((r) => setTimeout(r, 0));
      const sock = path.join(dir, 'echo.sock');
      const server = net.createServer((c) => c.pipe(c));
      await new Promise<void>((r) => server.listen(sock, r));
      const echoed = await new Promise<string>((resolve, reject) => {
        const c = net.connect(sock, () => c.write('ping'));
        c.once('data', (d) => {
          c.end();
          resolve(String(d));
        });
        c.once('error', reject);
      });
      await new Promise<void>((r) => server.close(() => r()));
      expect(echoed).toBe('ping');
      // … and another spawn (another spawn thread) starts its agent and sees it end.
      const otherLog = path.join(dir, 'other.log');
      const otherFd = fs.openSync(otherLog, 'a');
      const other = await native.spawn(options(otherFd, ['/bin/echo', 'other agent ran']));
      fs.closeSync(otherFd);
      expect((await exitOf(other)).agent).toEqual({ code: 0, signal: null });
      expect(fs.readFileSync(otherLog, 'utf8')).toBe('other agent ran\n');
      expect(held.settled()).toBe(false);

      g.release();
      const child = await held.promise;
      expect((await exitOf(child)).agent).toEqual({ code: 0, signal: null });
      expect(fs.readFileSync(heldLog, 'utf8')).toBe('held agent ran\n');
      // Nothing of the spawns stays open: not the gate, not the addon's copies of the log fds.
      expect(openers('self', g.path)).toBe(1);
      expect(fs.readdirSync('/proc/self/fd').length).toBe(fdsBefore);
    } finally {
      g.close();
    }
  });

  it("an agent reaped before it is watched does not stop the next watch from keeping Node's loop alive", () => {
    // In a process of its own: nothing but the second watch keeps that process's loop alive, so a watch
    // that did not count would let it end before the second agent does (no "second").
    const script = path.join(dir, 'watch-order.cjs');
    fs.writeFileSync(
      script,
      `const native = require(${JSON.stringify(path.join(path.dirname(initHelperPath()), 'clove_native.node'))});
const fs = require('node:fs');
const base = ${JSON.stringify(options(-1, ['/bin/true']))};
const opts = (fd, argv) => ({ ...base, stdoutFd: fd, file: argv[0], argv });
(async () => {
  const fd = fs.openSync('/dev/null', 'w');
  const first = await native.spawn(opts(fd, ['/bin/true']));
  await new Promise((res) => { const t = setInterval(() => first.exited && (clearInterval(t), res()), 5); });
  await new Promise((res) => first.watch(res));
  console.log('first');
  const second = await native.spawn(opts(fd, ['/bin/sleep', '1']));
  fs.closeSync(fd);
  const exit = await new Promise((res) => second.watch(res));
  console.log('second', exit.agent.code);
})();
`,
    );
    const out = execFileSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(out).toBe('first\nsecond 0\n');
  });

  it('the gate is a step like the others: a failure rejects naming it; a malformed option throws at once', async () => {
    await expect(
      native.spawn({ ...options(1, ['/bin/true']), testGate: path.join(dir, 'missing', 'gate') }),
    ).rejects.toThrow(expect.objectContaining({ syscall: 'open(testGate)', code: 'ENOENT' }));
    expect(() => native.spawn({ ...options(1, ['/bin/true']), testGate: 7 as unknown as string })).toThrow(
      TypeError,
    );
    // A log fd that is not open fails when spawn() takes its copy, before any thread is involved.
    const closed = fs.openSync('/dev/null', 'w');
    fs.closeSync(closed);
    await expect(native.spawn(options(closed, ['/bin/true']))).rejects.toThrow(
      expect.objectContaining({ syscall: 'fcntl(stdoutFd, F_DUPFD_CLOEXEC)', code: 'EBADF' }),
    );
  });
});

run('a kernel serves while it spawns and restarts agents', () => {
  it('answers NOOPs and LIST while spawns, then restarts, are held in flight', async () => {
    const g = gate();
    const kp = await startKernelProcess({
      extra: ['--sandbox', 'auto', '--log-level', 'warn'],
      env: { CLOVE_TEST_SPAWN_GATE: g.path },
    });
    const kernelPid = kp.child.pid!;
    const held = () => openers(kernelPid, g.path);
    try {
      const ctl = await kp.client();
      const probe = await kp.client();
      const names = ['held-0', 'held-1', 'held-2'];

      // Spawns, one at a time: each waits at the gate while another connection is served.
      for (const name of names) {
        const spawn = track(
          ctl.spawn({
            name,
            command: ['/bin/sleep', '1000'],
            restart_policy: 'always',
            min_uptime_ms: 0,
            backoff_initial_ms: 0,
          } as never),
        );
        await until(() => held() === 1, 20_000, `SPAWN of ${name} at the gate`);
        for (let i = 0; i < 5; i++) expect(await probe.echo(`${name} ${i}`)).toBe(`${name} ${i}`);
        expect((await probe.list()).some((a) => a.name === name && a.running)).toBe(false);
        expect(spawn.settled()).toBe(false);
        g.release();
        await spawn.promise;
      }
      const agents = (await probe.list()).filter((a) => names.includes(a.name));
      expect(agents.map((a) => [a.running, a.restarts])).toEqual(names.map(() => [true, 0]));

      // Restarts, all at once: every agent's process is killed; the supervisor starts them again and all
      // three spawns wait at the gate together (each on its own spawn thread).
      for (const a of agents) process.kill(a.pid, 'SIGKILL');
      await until(() => held() === 3, 20_000, 'the three restarts at the gate');
      for (let i = 0; i < 5; i++) expect(await probe.echo(`restarting ${i}`)).toBe(`restarting ${i}`);
      const during = (await probe.list()).filter((a) => names.includes(a.name));
      expect(during.map((a) => a.running)).toEqual([false, false, false]);

      g.release(3);
      await until(
        async () =>
          (await probe.list()).filter((a) => names.includes(a.name) && a.running && a.restarts === 1)
            .length === 3,
        20_000,
        'the three agents running again',
      );
      expect(held()).toBe(0);
    } finally {
      g.close();
      await kp.stop();
    }
  }, 120_000);
});

run('EXEC never clones on the event loop', () => {
  it('execInAgent answers with a promise; the loop turns while the command is started on the enter thread', async () => {
    const n = loadNative();
    const devnull = fs.openSync('/dev/null', 'r+');
    try {
      const starts = Array.from({ length: 10 }, () =>
        n.execInAgent({
          nsPid: 0,
          namespaces: [],
          cgroupDir: '',
          cgroupProcs: [],
          file: '/bin/true',
          argv: ['true'],
          env: [],
          cwd: '/',
          stdinFd: devnull,
          stdoutFd: devnull,
          stderrFd: devnull,
          uid: -1,
          gid: -1,
          rlimits: [],
          seccomp: false,
          startTimeoutMs: 10_000,
        }),
      );
      for (const p of starts) expect(p).toBeInstanceOf(Promise);
      // Nothing was started by the calls themselves: the loop turns before the first start settles.
      let turns = 0;
      let spinning = true;
      const spin = (): void => {
        turns++;
        if (spinning) setImmediate(spin);
      };
      setImmediate(spin);
      const first = await Promise.race(starts);
      const turnsAtFirst = turns;
      const children = await Promise.all(starts);
      spinning = false;
      expect(turnsAtFirst).toBeGreaterThan(0);
      expect(first.pid).toBeGreaterThan(0);
      const exits = await Promise.all(children.map((c) => new Promise<NativeExit>((r) => c.watch(r))));
      expect(exits.map((e) => e.code)).toEqual(children.map(() => 0));
    } finally {
      fs.closeSync(devnull);
    }
  });

  it('a failing start rejects with the step that failed', async () => {
    const n = loadNative();
    const devnull = fs.openSync('/dev/null', 'r+');
    try {
      await expect(
        n.execInAgent({
          nsPid: 0,
          namespaces: [],
          cgroupDir: '',
          cgroupProcs: [],
          file: '/nonexistent/command',
          argv: ['command'],
          env: [],
          cwd: '/',
          stdinFd: devnull,
          stdoutFd: devnull,
          stderrFd: devnull,
          uid: -1,
          gid: -1,
          rlimits: [],
          seccomp: false,
          startTimeoutMs: 10_000,
        }),
      ).rejects.toMatchObject({ syscall: 'execve', code: 'ENOENT' });
    } finally {
      fs.closeSync(devnull);
    }
  });
});

run('the enter thread', () => {
  it('does not keep a process from exiting once its EXECs are done', async () => {
    const addon = path.join(path.dirname(initHelperPath()), 'clove_native.node');
    const script = `
      const n = require(${JSON.stringify(addon)});
      const fs = require('node:fs');
      const fd = fs.openSync('/dev/null', 'r+');
      n.execInAgent({ nsPid: 0, namespaces: [], cgroupDir: '', cgroupProcs: [], file: '/bin/true', argv: ['true'],
        env: [], cwd: '/', stdinFd: fd, stdoutFd: fd, stderrFd: fd, uid: -1, gid: -1, rlimits: [], seccomp: false,
        startTimeoutMs: 5000 }).then((c) => c.watch((e) => console.log('exit', e.code)));`;
    const out = execFileSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(out.trim()).toBe('exit 0');
  });
});
