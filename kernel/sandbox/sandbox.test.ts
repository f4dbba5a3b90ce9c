/**
 * NativeSpawner against real processes. Runs as root (CI does). Without root these tests are skipped
 * locally, but with CI=true a missing sandbox is a failure, never a skip.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExitInfo, SpawnSpec } from './types.js';
import { nativeAvailable } from './native.js';
import { peerCredentials } from './peercred.js';
import { NativeSpawner, type SandboxedAgent } from './native-spawner.js';
import { swarmWeight } from './cgroups.js';
import { sharesToWeight } from './policy.js';
import { until } from '../../harness/kernel.js';
import { programPid } from '../../harness/procs.js';
import {
  TESTDATA,
  childrenOfSelf,
  exitOf,
  kv,
  readLog,
  sandboxPython,
  sleep,
  spec,
  workDir,
  zombieChildren,
} from './testutil.js';

const isRoot = process.geteuid?.() === 0;
const required = process.env.CI === 'true';
const run = (isRoot && nativeAvailable()) || required ? describe : describe.skip;
if (!isRoot && !required)
  console.warn('sandbox tests skipped: they need root and the built addon (npm run build:native)');

run('NativeSpawner (root sandbox)', () => {
  let spawner: NativeSpawner;
  let dir: string;
  let logNo = 0;
  const logs: number[] = [];
  const python = sandboxPython();

  function newLog(): { fd: number; file: string } {
    const file = path.join(dir, `log${logNo++}.txt`);
    const fd = fs.openSync(file, 'a');
    logs.push(fd);
    return { fd, file };
  }

  /** A sandboxed `/bin/sleep 30` with these limits, for tests that read its cgroup (they stop it). */
  async function sleeper(name: string, limits: SpawnSpec['limits']): Promise<SandboxedAgent> {
    const argv = ['/bin/sleep', '30'];
    return (await spawner.spawn(
      spec({ name, argv, cwd: dir, logFd: newLog().fd, limits }),
    )) as SandboxedAgent;
  }

  beforeAll(async () => {
    dir = workDir('clove-sbx-');
    spawner = new NativeSpawner({ require: true, warn: () => undefined });
    await spawner.init();
  });

  afterAll(async () => {
    await spawner.close();
    for (const fd of logs) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('runs fully isolated as root and reports it', async () => {
    expect(spawner.mode).toBe('root');
    const log = newLog();
    const a = (await spawner.spawn(spec({ argv: ['/bin/true'], cwd: dir, logFd: log.fd }))) as SandboxedAgent;
    expect(a.isolation).toMatchObject({
      fully_isolated: true,
      namespaces: { pid: true, net: true, mnt: true, uts: true, ipc: true },
      cgroups: { available: true, memory_limit: true, cpu_quota: true, pids_limit: true },
    });
    expect(a.isolation.degraded_reason).toBeUndefined();
    expect(await exitOf(a)).toEqual({ code: 0, signal: null, reason: 'exit' });
  });

  it('(i) sees only its own PID namespace, cannot signal host processes, runs unprivileged on a read-only root', async () => {
    const log = newLog();
    const a = (await spawner.spawn(
      spec({
        name: 'inspect',
        argv: ['/bin/sh', path.join(TESTDATA, 'inspect.sh')],
        cwd: dir,
        logFd: log.fd,
        env: { PATH: '/usr/bin:/bin', HOST_PID: String(process.pid) },
      }),
    )) as SandboxedAgent;
    const ex = await exitOf(a);
    expect(ex.code).toBe(0);
    const out = kv(readLog(log.file));
    const procs = out.procs.trim().split(' ').map(Number);
    expect(Math.max(...procs)).toBeLessThan(20); // only namespace-local pids (1 = clove-init, 2 = the shell, its children)
    expect(procs).not.toContain(process.pid);
    expect(out.pid).toBe('2');
    expect(out.hostkill).toBe('no');
    expect(out.uid).toBe('65534');
    expect(out.groups?.trim()).toBe('65534');
    expect(out.hostname).toBe('clove-inspect');
    expect(out.rootwrite).toBe('no');
    expect(out.cwdwrite).toBe('yes');
    expect(out.tmpwrite).toBe('yes');
    expect(out.caps).toBe('CapEff:0000000000000000');
    expect(out.nnp).toBe('NoNewPrivs:1');
    expect(out.nofile).toBe('1024');
    // the agent's private /tmp is not the host's
    expect(fs.existsSync('/tmp/tmp-probe')).toBe(false);
  });

  it('(ii) cannot open a TCP connection to a loopback server; network: true can', async () => {
    const server = net.createServer((s) => {
      s.on('error', () => undefined);
      s.end('hi\n');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    let accepted = 0;
    server.on('connection', () => accepted++);
    try {
      const script = `exec 3<>/dev/tcp/127.0.0.1/${port} && echo CONNECTED || echo BLOCKED`;
      const log1 = newLog();
      const a = (await spawner.spawn(
        spec({ argv: ['/bin/bash', '-c', script], cwd: dir, logFd: log1.fd }),
      )) as SandboxedAgent;
      await exitOf(a);
      expect(readLog(log1.file)).toContain('BLOCKED');
      expect(accepted).toBe(0);

      const log2 = newLog();
      const b = (await spawner.spawn(
        spec({ argv: ['/bin/bash', '-c', script], cwd: dir, logFd: log2.fd, network: true }),
      )) as SandboxedAgent;
      expect(b.isolation.namespaces.net).toBe(false);
      await exitOf(b);
      expect(readLog(log2.file)).toContain('CONNECTED');
    } finally {
      server.close();
    }
  });

  it.runIf(python)(
    '(iii) a memory hog is OOM-killed inside its limit and reported as oom; a neighbour is unaffected',
    async () => {
      const nlog = newLog();
      const neighbour = (await spawner.spawn(
        spec({
          name: 'neighbour',
          // Long enough to outlive a hog that is slow to die under load; it is stopped by hand below.
          argv: ['/bin/sleep', '600'],
          cwd: dir,
          logFd: nlog.fd,
          limits: { memory: 64 << 20 },
        }),
      )) as SandboxedAgent;
      const log = newLog();
      const hog = (await spawner.spawn(
        spec({
          name: 'hog',
          argv: [python!, path.join(TESTDATA, 'hog.py')],
          cwd: dir,
          logFd: log.fd,
          limits: { memory: 48 << 20 },
        }),
      )) as SandboxedAgent;
      const ex = await exitOf(hog);
      expect(ex).toMatchObject({ reason: 'oom', signal: 'SIGKILL' });
      const text = readLog(log.file);
      expect(text).not.toContain('survived');
      const last = [...text.matchAll(/allocated (\d+) MiB/g)].map((m) => Number(m[1])).pop() ?? 0;
      expect(last).toBeLessThanOrEqual(48);
      expect(neighbour.exited).toBe(false);
      expect(neighbour.mainPid()).toBeGreaterThan(0);
      neighbour.signal('SIGTERM');
      expect(await exitOf(neighbour)).toEqual({ code: null, signal: 'SIGTERM', reason: 'signal' });
    },
  );

  it('(iv) a fork bomb stops at the pids limit', async () => {
    const log = newLog();
    const bomb = (await spawner.spawn(
      spec({
        name: 'bomb',
        argv: ['/bin/sh', path.join(TESTDATA, 'forkbomb.sh')],
        cwd: dir,
        logFd: log.fd,
        limits: { max_pids: 16 },
      }),
    )) as SandboxedAgent;
    const pidsDir = bomb.cgroup!.dir('pids')!;
    let peak = 0;
    for (let i = 0; i < 20; i++) {
      await sleep(50);
      const cur = Number(fs.readFileSync(path.join(pidsDir, 'pids.current'), 'utf8'));
      peak = Math.max(peak, cur);
    }
    expect(bomb.cgroup!.pidsMaxEvents()).toBeGreaterThan(0);
    expect(peak).toBeLessThanOrEqual(17); // 16 for the agent + clove-init
    bomb.signal('SIGKILL');
    const ex = await exitOf(bomb);
    expect(ex.reason).toBe('pids');
    expect(fs.existsSync(pidsDir)).toBe(false);
  });

  it('(v) a CPU spinner is held to its quota', async () => {
    const log = newLog();
    const spin = (await spawner.spawn(
      spec({
        name: 'spin',
        argv: ['/bin/sh', path.join(TESTDATA, 'spin.sh')],
        cwd: dir,
        logFd: log.fd,
        limits: { cpu_quota: 20_000, cpu_period: 100_000 },
      }),
    )) as SandboxedAgent;
    const layout = spawner.layout!;
    const acct = layout.controllers.cpuacct!;
    const usage = (): number => {
      const d = spin.cgroup!.dir('cpuacct')!;
      if (acct.version === 1) return Number(fs.readFileSync(path.join(d, 'cpuacct.usage'), 'utf8')) / 1e9;
      const m = /usage_usec (\d+)/.exec(fs.readFileSync(path.join(d, 'cpu.stat'), 'utf8'));
      return Number(m![1]) / 1e6;
    };
    await sleep(200);
    const u0 = usage();
    const t0 = performance.now();
    await sleep(1000);
    const used = usage() - u0;
    const wall = (performance.now() - t0) / 1000;
    spin.signal('SIGKILL');
    await exitOf(spin);
    expect(used / wall).toBeLessThanOrEqual(0.2 * 1.25 + 0.02);
    expect(used / wall).toBeGreaterThan(0.05);
  });

  it('(v) the CPU period and quota land in the cgroup as asked: the default period, and another', async () => {
    const cpu = spawner.layout!.controllers.cpu;
    if (!cpu) return; // no cpu controller here: nothing to read back
    for (const period of [100_000, 50_000]) {
      const a = await sleeper(`period${period}`, { cpu_quota: 20_000, cpu_period: period });
      const d = a.cgroup!.dir('cpu')!;
      const read = (f: string) => fs.readFileSync(path.join(d, f), 'utf8').trim();
      if (cpu.version === 1) {
        expect(read('cpu.cfs_period_us')).toBe(String(period));
        expect(read('cpu.cfs_quota_us')).toBe('20000');
      } else {
        expect(read('cpu.max')).toBe(`20000 ${period}`);
      }
      a.signal('SIGKILL');
      await exitOf(a);
    }
  });

  it("(v) the swarm's directories weigh one process per CPU; an agent keeps its own shares below them", async () => {
    const cpu = spawner.layout!.controllers.cpu;
    if (!cpu) return; // no cpu controller here: nothing to read back
    const a = await sleeper('weighed', { cpu_shares: 512 });
    try {
      const leaf = a.cgroup!.dir('cpu')!;
      const root = path.dirname(leaf);
      expect(path.basename(path.dirname(root))).toBe('clove');
      const file = cpu.version === 1 ? 'cpu.shares' : 'cpu.weight';
      const read = (d: string) => Number(fs.readFileSync(path.join(d, file), 'utf8').trim());
      const w = swarmWeight(os.availableParallelism());
      const swarm = cpu.version === 1 ? w.shares : w.weight;
      expect(read(root)).toBe(swarm);
      expect(read(path.dirname(root))).toBe(swarm);
      expect(read(leaf)).toBe(cpu.version === 1 ? 512 : sharesToWeight(512));
    } finally {
      a.signal('SIGKILL');
      await exitOf(a);
    }
  });

  it('(vi) no kernel fd is open in the agent', async () => {
    // Extra fds in the kernel: a listening socket and an open file, without CLOEXEC games.
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const extra = fs.openSync(path.join(dir, 'secret.txt'), 'w');
    try {
      const log = newLog();
      // ls itself lists its own directory fd (-> /proc/<pid>/fd); everything else was inherited.
      const a = (await spawner.spawn(
        spec({ argv: ['/bin/ls', '-l', '/proc/self/fd'], cwd: dir, logFd: log.fd }),
      )) as SandboxedAgent;
      await exitOf(a);
      const entries = [...readLog(log.file).matchAll(/ (\d+) -> (.*)$/gm)].map((m) => ({
        fd: Number(m[1]),
        target: m[2],
      }));
      const inherited = entries.filter((e) => !/^\/proc\/\d+\/fd$/.test(e.target));
      expect(inherited.map((e) => e.fd)).toEqual([0, 1, 2]);
      expect(inherited[0].target).toBe('/dev/null');
      expect(inherited[1].target).toBe(log.file);
      expect(entries.length).toBe(4);
    } finally {
      fs.closeSync(extra);
      server.close();
    }
  });

  it('(vii) leaves no zombie after 200 spawn/kill cycles', async () => {
    const log = newLog();
    const before = new Set(childrenOfSelf());
    for (let i = 0; i < 200; i++) {
      const a = (await spawner.spawn(
        spec({ name: `cycle${i}`, argv: ['/bin/sleep', '30'], cwd: dir, logFd: log.fd }),
      )) as SandboxedAgent;
      const done = exitOf(a);
      a.signal(i % 2 ? 'SIGKILL' : 'SIGTERM');
      const ex = await done;
      expect(ex.signal).toBe(i % 2 ? 'SIGKILL' : 'SIGTERM');
    }
    expect(zombieChildren()).toEqual([]);
    expect(childrenOfSelf().filter((p) => !before.has(p))).toEqual([]);
    expect(spawner.agents().size).toBe(0);
  }, 120_000);

  it("onEnded hears of the agent's own exit from clove-init before its namespace is torn down, and agrees with onExit", async () => {
    const log = newLog();
    const a = (await spawner.spawn(
      spec({ argv: ['/bin/sh', '-c', 'sleep 60 & sleep 0.1; exit 7'], cwd: dir, logFd: log.fd }),
    )) as SandboxedAgent;
    const order: string[] = [];
    let ended: ExitInfo | undefined;
    a.onEnded((info) => {
      order.push('ended');
      ended = info;
    });
    const exit = await new Promise<ExitInfo>((resolve) =>
      a.onExit((info) => {
        order.push('exit');
        resolve(info);
      }),
    );
    expect(order).toEqual(['ended', 'exit']);
    expect(ended).toEqual({ code: 7, signal: null, reason: 'exit' });
    expect(exit).toEqual(ended);

    // clove-init itself killed: no record; onEnded hears of it with init's own exit, before the cgroup's
    // removal and onExit (the agent's status is unknown: SIGKILL).
    const b = (await spawner.spawn(
      spec({ argv: ['/bin/sleep', '60'], cwd: dir, logFd: log.fd }),
    )) as SandboxedAgent;
    const orderB: string[] = [];
    let endedB: ExitInfo | undefined;
    b.onEnded((info) => {
      orderB.push('ended');
      endedB = info;
    });
    b.onExit(() => orderB.push('exit'));
    const done = exitOf(b);
    b.signal('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    expect(orderB).toEqual(['ended', 'exit']);
    expect(endedB).toEqual(await done);
  });

  it('peerEnded: a killed program is known to have ended at once (exit pipe drained, or /proc), nothing else is', async () => {
    const log = newLog();
    const a = (await spawner.spawn(
      spec({ argv: ['/bin/sleep', '60'], cwd: dir, logFd: log.fd }),
    )) as SandboxedAgent;
    let ended: ExitInfo | undefined;
    a.onEnded((info) => (ended = info));
    const prog = await until(() => (programPid(a.pid) !== a.pid ? programPid(a.pid) : 0), 5000, 'program');
    a.peerEnded(prog); // running
    a.peerEnded(a.pid); // clove-init, not the program
    a.peerEnded(process.pid); // not the agent's at all
    expect(ended).toBeUndefined();
    const exit = exitOf(a);
    process.kill(prog, 'SIGKILL');
    // A synchronous loop: the event loop cannot deliver the exit meanwhile, only peerEnded can.
    const deadline = Date.now() + 5000;
    while (!ended && Date.now() < deadline) a.peerEnded(prog);
    expect(ended).toEqual({ code: null, signal: 'SIGKILL', reason: 'signal' });
    expect(await exit).toEqual(ended);
  });

  it('SIGSTOP pauses the whole agent (freezer) and SIGCONT resumes it; KILL of a paused agent works', async () => {
    const log = newLog();
    const a = (await spawner.spawn(
      spec({ argv: ['/bin/sh', '-c', 'while :; do echo tick; sleep 0.05; done'], cwd: dir, logFd: log.fd }),
    )) as SandboxedAgent;
    await sleep(200);
    a.signal('SIGSTOP');
    await sleep(100);
    const n1 = readLog(log.file).length;
    await sleep(300);
    expect(readLog(log.file).length).toBe(n1);
    a.signal('SIGCONT');
    await sleep(300);
    expect(readLog(log.file).length).toBeGreaterThan(n1);
    a.signal('SIGSTOP');
    a.signal('SIGKILL');
    expect((await exitOf(a)).signal).toBe('SIGKILL');
  });

  it('SIGTERM reaches the whole tree: a grandchild dies too', async () => {
    const log = newLog();
    const a = (await spawner.spawn(
      spec({ argv: ['/bin/sh', '-c', 'sleep 60 & sleep 61 & wait'], cwd: dir, logFd: log.fd }),
    )) as SandboxedAgent;
    await sleep(100);
    const procs = a.cgroup!.procs();
    expect(procs.length).toBeGreaterThanOrEqual(4);
    a.signal('SIGTERM');
    await exitOf(a);
    for (const p of procs) expect(fs.existsSync(`/proc/${p}`)).toBe(false);
  });

  it.runIf(python)(
    'identity: an agent connecting to the agent socket is mapped back to its id (ownerOf)',
    async () => {
      const runDir = path.join(dir, 'run');
      fs.mkdirSync(runDir, { mode: 0o711 });
      fs.chmodSync(runDir, 0o711);
      const sock = path.join(runDir, 'agent.sock');
      const server = net.createServer();
      await new Promise<void>((r) => server.listen(sock, r));
      fs.chmodSync(sock, 0o666);
      try {
        const conn = new Promise<{ pid: number; uid: number }>((resolve) => {
          server.once('connection', (s) => {
            const cred = peerCredentials(s);
            s.once('data', () => s.end('bye'));
            resolve(cred);
          });
        });
        const log = newLog();
        const a = (await spawner.spawn(
          spec({
            agentId: 4242,
            name: 'ident',
            argv: [python!, path.join(TESTDATA, 'connect_unix.py')],
            cwd: dir,
            logFd: log.fd,
            env: { PATH: '/usr/bin:/bin', CLOVE_SOCKET: sock },
          }),
        )) as SandboxedAgent;
        const cred = await conn;
        expect(cred.uid).toBe(65534);
        expect(spawner.ownerOf(cred.pid)).toBe(4242);
        expect(cred.pid).toBe(a.mainPid());
        expect(spawner.ownerOf(process.pid)).toBeUndefined();
        expect(spawner.ownerOf(1)).toBeUndefined();
        expect(await exitOf(a)).toMatchObject({ code: 0 });
        expect(spawner.ownerOf(cred.pid)).toBeUndefined();
      } finally {
        server.close();
      }
    },
  );

  it('keeps the agent socket reachable when cwd and socket live under /tmp (private /tmp)', async () => {
    expect(dir.startsWith(os.tmpdir())).toBe(true);
    const log = newLog();
    const a = (await spawner.spawn(
      spec({ argv: ['/bin/sh', '-c', 'pwd; ls'], cwd: dir, logFd: log.fd }),
    )) as SandboxedAgent;
    expect((await exitOf(a)).code).toBe(0);
    expect(readLog(log.file)).toContain(dir);
  });

  it('re-exposes the cwd, program and socket dir below a directory the agent uid cannot traverse (like /root)', async () => {
    const base = fs.mkdtempSync('/var/tmp/clove-mask-');
    try {
      const secret = path.join(base, 'secret');
      fs.mkdirSync(path.join(secret, 'opt', 'bin'), { recursive: true });
      fs.mkdirSync(path.join(secret, 'work'));
      fs.chownSync(path.join(secret, 'work'), 65534, 65534);
      fs.writeFileSync(path.join(secret, 'hidden.txt'), 'kernel secret');
      const tool = path.join(secret, 'opt', 'bin', 'tool.sh');
      fs.writeFileSync(
        tool,
        '#!/bin/sh\npwd\nls -a ..\ncat ../hidden.txt 2>/dev/null || echo NOHIDDEN\ntouch ./w && echo WROTE\n',
        { mode: 0o755 },
      );
      fs.chmodSync(base, 0o755);
      fs.chmodSync(secret, 0o700);
      const log = newLog();
      const a = (await spawner.spawn(
        spec({ argv: [tool], cwd: path.join(secret, 'work'), logFd: log.fd }),
      )) as SandboxedAgent;
      expect(await exitOf(a)).toMatchObject({ code: 0 });
      const out = readLog(log.file);
      expect(out).toContain(path.join(secret, 'work'));
      expect(out).toContain('NOHIDDEN');
      expect(out).not.toContain('hidden.txt');
      expect(out).toContain('WROTE');
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('start failures throw a typed error naming the syscall', async () => {
    const log = newLog();
    await expect(
      spawner.spawn(spec({ argv: ['/nonexistent/agent'], cwd: dir, logFd: log.fd })),
    ).rejects.toMatchObject({ name: 'SpawnError', code: 'EACCES' });
    const bad = path.join(dir, 'notexec');
    fs.writeFileSync(bad, 'x', { mode: 0o755 });
    await expect(spawner.spawn(spec({ argv: [bad], cwd: dir, logFd: log.fd }))).rejects.toMatchObject({
      name: 'SpawnError',
      syscall: 'execve',
      code: 'ENOEXEC',
    });
    await expect(
      spawner.spawn(spec({ argv: ['/bin/true'], cwd: dir, logFd: log.fd, limits: { memory: 12 } })),
    ).rejects.toMatchObject({ name: 'PolicyError' });
    expect(spawner.agents().size).toBe(0);
  });
});
