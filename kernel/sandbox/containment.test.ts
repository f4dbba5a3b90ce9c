/**
 * Reachability of the host's Unix sockets (issue 9). A sandboxed agent without network must reach no
 * host Unix socket but the kernel's agent socket: /run and /var/run are masked, every other pathname
 * socket that stays visible is covered by /dev/null (NativeSpawnOptions.hideFiles), abstract sockets are
 * cut off by the empty network namespace. With network: true nothing changes.
 *
 * The scan and filter (parseUnixSockets, socketsToHide, exposure with private dirs) run anywhere; the
 * spawns need root.
 */
import { spawn as spawnProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CloveNative, NativeExit, NativeSpawnOptions } from '../../native/index.js';
import { exposure, parseUnixSockets, runtimeDirs, socketsToHide } from './access.js';
import { initHelperPath, loadNative } from './native.js';
import { NativeSpawner, type SandboxedAgent } from './native-spawner.js';
import { exitOf, kv, readLog, sandboxPython, spec, workDir } from './testutil.js';

const isRoot = process.geteuid?.() === 0;

/** A listening Unix socket server at `where` (a path, or "\0name" for an abstract one), mode 0777. */
async function listen(where: string): Promise<net.Server> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ path: where }, resolve);
  });
  if (!where.startsWith('\0')) fs.chmodSync(where, 0o777);
  return server;
}

const close = (s: net.Server) => new Promise<void>((resolve) => s.close(() => resolve()));

/** A directory every uid may search (mkdtemp makes them 0700). */
function openDir(parent: string, prefix: string): string {
  const d = fs.mkdtempSync(path.join(parent, prefix));
  fs.chmodSync(d, 0o755);
  return d;
}

/**
 * Agent: connects to each `name=address` argument ("@x" = the abstract "\0x" as Node binds it), prints
 * name=ok or name=<errno>, and for paths name_kind=sock|chr|<errno>.
 */
const CONNECT = `
import errno, os, socket, stat, sys
for arg in sys.argv[1:]:
    name, _, addr = arg.partition("=")
    if addr.startswith("@"):
        # Node binds abstract names padded with NULs to the whole sun_path (108 bytes).
        addr = ("\\0" + addr[1:]).ljust(108, "\\0")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(addr)
        print(name + "=ok", flush=True)
    except OSError as e:
        print(name + "=" + errno.errorcode.get(e.errno, str(e.errno)), flush=True)
    finally:
        s.close()
    if not addr.startswith("\\0"):
        try:
            m = os.stat(addr).st_mode
            kind = "sock" if stat.S_ISSOCK(m) else "chr" if stat.S_ISCHR(m) else "other"
        except OSError as e:
            kind = errno.errorcode.get(e.errno, str(e.errno))
        print(name + "_kind=" + kind, flush=True)
`;

/** Host process: keeps 32 listening sockets in argv[1], replacing the oldest one all the time. */
const CHURN = `
import collections, os, socket, sys
d = sys.argv[1]
ring = collections.deque()
n = 0
while True:
    p = os.path.join(d, "c%d.sock" % (n % 64))
    n += 1
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
    s.bind(p)
    s.listen(1)
    ring.append((p, s))
    if len(ring) > 32:
        q, old = ring.popleft()
        try:
            os.unlink(q)
        except FileNotFoundError:
            pass
        old.close()
    if n == 40:
        print("ready", flush=True)
`;

describe('host Unix sockets: scan and filter', () => {
  let base: string;

  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-scan-'));
  });

  afterAll(() => {
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('lists listening stream/seqpacket and bound datagram sockets by path, once each', () => {
    const table = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '0000000000000000: 00000002 00000000 00010000 0001 01 20001 /run/dbus/system_bus_socket',
      '0000000000000000: 00000003 00000000 00000000 0001 03 20002 /run/dbus/system_bus_socket',
      '0000000000000000: 00000002 00000000 00010000 0001 01 20012 /run/dbus/system_bus_socket',
      '0000000000000000: 00000002 00000000 00000000 0002 01 20003 /run/systemd/journal/dev-log',
      '0000000000000000: 00000002 00000000 00010000 0001 01 20004 @/tmp/.X11-unix/X0',
      '0000000000000000: 00000002 00000000 00010000 0005 01 20005 /var/lib/x/my socket',
      '0000000000000000: 00000003 00000000 00000000 0001 03 20006 /var/tmp/a-client-bound-and-connected',
      '0000000000000000: 00000002 00000000 00010000 0001 01  1586',
      '0000000000000000: 00000003 00000000 00000000 0001 03  1587',
      '0000000000000000: 00000002 00000000 00010000 0001 01 20007 relative.sock',
      '',
    ].join('\n');
    expect(parseUnixSockets(table)).toEqual([
      '/run/dbus/system_bus_socket',
      '/run/systemd/journal/dev-log',
      '/var/lib/x/my socket',
    ]);
    expect(parseUnixSockets('')).toEqual([]);
  });

  it('keeps existing sockets outside masks and the agent socket dir, at their real path; skips the vanished', async () => {
    const a = path.join(base, 'a');
    const b = path.join(base, 'b');
    fs.mkdirSync(a);
    fs.mkdirSync(b);
    fs.symlinkSync(b, path.join(base, 'link'));
    const s1 = await listen(path.join(a, 's1.sock'));
    const s2 = await listen(path.join(b, 's2.sock'));
    // Still listening, so /proc/net/unix keeps listing it, but its file is gone: a listed-but-deleted path.
    const gone = await listen(path.join(base, 'gone.sock'));
    fs.unlinkSync(path.join(base, 'gone.sock'));
    // Listed, but what is at the path now is no socket.
    const replaced = await listen(path.join(base, 'replaced.sock'));
    fs.unlinkSync(path.join(base, 'replaced.sock'));
    fs.writeFileSync(path.join(base, 'replaced.sock'), '');
    try {
      const listed = parseUnixSockets(fs.readFileSync('/proc/net/unix', 'utf8'));
      expect(listed).toEqual(
        expect.arrayContaining(
          ['s1.sock', 's2.sock', 'gone.sock', 'replaced.sock'].map((f) => expect.stringContaining(f)),
        ),
      );
      const paths = [
        path.join(a, 's1.sock'),
        path.join(b, 's2.sock'),
        path.join(base, 'link', 's2.sock'),
        path.join(base, 'gone.sock'),
        path.join(base, 'replaced.sock'),
        '/no/such/dir/x.sock',
      ];
      const real = (p: string) => fs.realpathSync(p);
      const r1 = real(path.join(a, 's1.sock'));
      const r2 = real(path.join(b, 's2.sock'));
      expect(socketsToHide(paths, { masks: [], visible: [], exempt: [] })).toEqual([r1, r2]);
      // Reached through a symlink into a mask (as /var/run/x with /var/run -> /run): hidden already.
      expect(
        socketsToHide([path.join(base, 'link', 's2.sock')], { masks: [b], visible: [], exempt: [] }),
      ).toEqual([]);
      // The agent socket's directory is never covered.
      expect(socketsToHide(paths, { masks: [], visible: [], exempt: [a] })).toEqual([r2]);
      // Below a mask a socket is hidden already, unless that part is bound back in.
      expect(socketsToHide(paths, { masks: [base], visible: [], exempt: [] })).toEqual([]);
      expect(socketsToHide(paths, { masks: [base], visible: [path.join(base, 'link')], exempt: [] })).toEqual(
        [r2],
      );
    } finally {
      for (const s of [s1, s2, gone, replaced]) await close(s);
    }
  });

  it('masks the runtime dirs once, by real path, and keeps what is needed below them', () => {
    const dirs = runtimeDirs();
    if (fs.existsSync('/run')) expect(dirs).toContain('/run');
    if (fs.lstatSync('/var/run', { throwIfNoEntry: false })?.isSymbolicLink())
      expect(dirs).not.toContain('/var/run');
    expect(new Set(dirs).size).toBe(dirs.length);

    // A stand-in for /run (below /var/tmp, not below the masked /tmp) and a /var/run-like alias of it.
    const run = openDir('/var/tmp', 'clove-run-');
    const alias = `${run}-alias`;
    try {
      fs.mkdirSync(path.join(run, 'data', 'run'), { recursive: true });
      fs.mkdirSync(path.join(run, 'other'));
      fs.symlinkSync(run, alias);
      const uid = isRoot ? 65534 : (process.geteuid?.() ?? 1) + 1;
      const e = exposure(
        [path.join(run, 'data', 'run'), path.join(alias, 'other'), '/usr/bin'],
        uid,
        uid,
        true,
        [run],
      );
      expect(e.masks).toEqual(expect.arrayContaining(['/tmp', run]));
      expect(e.keep).toEqual([path.join(run, 'other'), path.join(run, 'data', 'run')]);
      // Without private dirs nothing of it is masked or kept (what exposure() did before).
      expect(exposure([path.join(run, 'data', 'run')], uid, uid, true)).toEqual({
        masks: ['/tmp'],
        keep: [],
      });
    } finally {
      fs.rmSync(alias, { force: true });
      fs.rmSync(run, { recursive: true, force: true });
    }
  });
});

describe.runIf(isRoot)('host Unix sockets: sandboxed agents (root)', () => {
  const python = sandboxPython();
  const tag = `clove-ct-${process.pid}`;
  let spawner: NativeSpawner;
  let dir: string;
  let varDir: string;
  let runDir: string;
  let dataDir: string;
  let varServer: net.Server;
  let runServer: net.Server;
  let abstractServer: net.Server;
  let agentServer: net.Server;
  let varSock: string;
  let runSock: string;
  let agentSock: string;
  const abstractName = `clove-test-${process.pid}`;
  const logs: number[] = [];
  let logNo = 0;

  function newLog(): { fd: number; file: string } {
    const file = path.join(dir, `log${logNo++}.txt`);
    const fd = fs.openSync(file, 'a');
    logs.push(fd);
    return { fd, file };
  }

  /** Runs the CONNECT agent against the targets; its `key=value` output. */
  async function probe(o: { network: boolean; socket: string; targets: string[]; argv?: string[] }) {
    const log = newLog();
    const a = (await spawner.spawn(
      spec({
        argv: [python!, '-c', CONNECT, ...o.targets, ...(o.argv ?? [])],
        cwd: dir,
        logFd: log.fd,
        network: o.network,
        env: { PATH: '/usr/local/bin:/usr/bin:/bin', CLOVE_SOCKET: o.socket },
      }),
    )) as SandboxedAgent;
    const ex = await exitOf(a);
    const out = kv(readLog(log.file));
    expect(ex, readLog(log.file)).toMatchObject({ code: 0 });
    return out;
  }

  beforeAll(async () => {
    dir = workDir('clove-ct-');
    varDir = openDir('/var/tmp', `${tag}-`);
    runDir = openDir('/run', `${tag}-`);
    // The kernel's data dir below /run: its run/ (the agent socket's dir) must stay reachable.
    dataDir = openDir('/run', `${tag}-data-`);
    fs.mkdirSync(path.join(dataDir, 'run'), { mode: 0o711 });
    fs.chmodSync(path.join(dataDir, 'run'), 0o711);
    varSock = path.join(varDir, 's.sock');
    runSock = path.join(runDir, 's.sock');
    agentSock = path.join(dataDir, 'run', 'agent.sock');
    varServer = await listen(varSock);
    runServer = await listen(runSock);
    abstractServer = await listen(`\0${abstractName}`);
    agentServer = await listen(agentSock);
    spawner = new NativeSpawner({ require: true, warn: () => undefined });
    await spawner.init();
  });

  afterAll(async () => {
    await spawner?.close();
    for (const s of [varServer, runServer, abstractServer, agentServer]) if (s) await close(s);
    for (const fd of logs) fs.closeSync(fd);
    for (const d of [dir, varDir, runDir, dataDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  const targets = () => [
    `var=${varSock}`,
    `run=${runSock}`,
    `abstract=@${abstractName}`,
    `agent=${agentSock}`,
  ];

  it.runIf(python)(
    'without network only the agent socket connects: /run is masked, the rest covered, abstract cut off',
    async () => {
      const out = await probe({ network: false, socket: agentSock, targets: targets() });
      expect(out.agent).toBe('ok');
      expect(out.var).toBe('ECONNREFUSED'); // /dev/null bound over it
      expect(out.var_kind).toBe('chr');
      expect(out.run).toBe('ENOENT'); // below the masked /run
      expect(out.abstract).toBe('ECONNREFUSED'); // no such name in the empty network namespace
      // Nothing changed for the host.
      expect(fs.lstatSync(varSock).isSocket()).toBe(true);
    },
  );

  it.runIf(python)('with network: true every one of them connects (unchanged)', async () => {
    const out = await probe({ network: true, socket: agentSock, targets: targets() });
    expect(out).toMatchObject({ var: 'ok', run: 'ok', abstract: 'ok', agent: 'ok' });
  });

  it.runIf(python)(
    'a socket below a directory bound back in (an absolute argument under /run) is covered too',
    async () => {
      // The absolute argument makes neededDirs() keep runDir visible under the /run mask.
      const out = await probe({ network: false, socket: agentSock, targets: targets(), argv: [runSock] });
      expect(out.run).toBe('ECONNREFUSED');
      expect(out.run_kind).toBe('chr');
      expect(out.agent).toBe('ok');
    },
  );

  it.runIf(python)(
    'an agent socket outside /run stays reachable, its neighbours in other dirs do not',
    async () => {
      const d = openDir('/var/tmp', `${tag}-sock-`);
      const sock = path.join(d, 'agent.sock');
      const server = await listen(sock);
      try {
        const out = await probe({
          network: false,
          socket: sock,
          targets: [`agent=${sock}`, `var=${varSock}`, `run=${runSock}`],
        });
        expect(out).toMatchObject({ agent: 'ok', var: 'ECONNREFUSED', run: 'ENOENT' });
      } finally {
        await close(server);
        fs.rmSync(d, { recursive: true, force: true });
      }
    },
  );

  it.runIf(python)('rootless mode (user namespace, locked mounts) hides them the same way', async () => {
    const rl = new NativeSpawner({ mode: 'rootless', require: false, warn: () => undefined });
    try {
      await rl.init();
      expect(rl.mode).toBe('rootless');
      const log = newLog();
      const a = (await rl.spawn(
        spec({
          argv: [python!, '-c', CONNECT, ...targets()],
          cwd: dir,
          logFd: log.fd,
          env: { PATH: '/usr/local/bin:/usr/bin:/bin', CLOVE_SOCKET: agentSock },
        }),
      )) as SandboxedAgent;
      expect((await exitOf(a)).code, readLog(log.file)).toBe(0);
      expect(kv(readLog(log.file))).toMatchObject({
        agent: 'ok',
        var: 'ECONNREFUSED',
        run: 'ENOENT',
        abstract: 'ECONNREFUSED',
      });
    } finally {
      await rl.close();
    }
  });

  it.runIf(python)('spawns succeed while another process keeps creating and removing sockets', async () => {
    // The churn runs in another process, so it races every step of the spawn: the scan, the bind in the
    // child and the host unlinking the file (which detaches the bind).
    const d = openDir('/var/tmp', `${tag}-churn-`);
    const churn = spawnProcess(python!, ['-c', CHURN, d], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => churn.stdout!.once('data', () => resolve()));
      for (let i = 0; i < 100; i++) {
        const log = newLog();
        const a = await spawner.spawn(spec({ argv: ['/bin/true'], cwd: dir, logFd: log.fd }));
        expect(await exitOf(a)).toMatchObject({ code: 0 });
      }
    } finally {
      churn.kill('SIGKILL');
      await new Promise((r) => churn.once('exit', r));
      fs.rmSync(d, { recursive: true, force: true });
    }
  });

  it.runIf(python)('a listed socket whose file is gone does not fail the spawn', async () => {
    const d = openDir('/var/tmp', `${tag}-gone-`);
    const sock = path.join(d, 's.sock');
    const server = await listen(sock);
    fs.unlinkSync(sock); // still listening: /proc/net/unix still lists the path
    try {
      const out = await probe({
        network: false,
        socket: agentSock,
        targets: [`gone=${sock}`, `var=${varSock}`],
      });
      expect(out).toMatchObject({ gone: 'ENOENT', var: 'ECONNREFUSED' });
    } finally {
      await close(server);
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});

describe.runIf(isRoot)('NativeSpawnOptions.hideFiles (raw addon, root)', () => {
  let native: CloveNative;
  let logDir: string;
  const INIT_DIR = path.dirname(initHelperPath());

  function options(stdoutFd: number, argv: string[], hideFiles: string[]): NativeSpawnOptions {
    return {
      file: argv[0],
      argv,
      env: ['PATH=/usr/bin:/bin', 'LC_ALL=C'],
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
      hostname: 'hide-test',
      cgroupDir: '',
      cgroupProcs: [],
      readOnlyRoot: true,
      mountProc: true,
      tmpfsOptions: 'size=16m,mode=1777',
      writable: [],
      masks: ['/tmp'],
      keep: INIT_DIR.startsWith('/tmp/') ? [INIT_DIR] : [],
      idmapped: [],
      hideFiles,
      setsid: true,
      noNewPrivs: true,
      dropCaps: true,
      uid: 65534,
      gid: 65534,
      rlimits: [],
      startTimeoutMs: 10_000,
    };
  }

  async function run(argv: string[], hideFiles: string[]): Promise<{ exit: NativeExit; out: string }> {
    const file = path.join(logDir, `log${Math.random().toString(36).slice(2)}.txt`);
    const fd = fs.openSync(file, 'a');
    try {
      const child = await native.spawn(options(fd, argv, hideFiles));
      const exit = await new Promise<NativeExit>((resolve) => child.watch(resolve));
      return { exit, out: fs.readFileSync(file, 'utf8') };
    } finally {
      fs.closeSync(fd);
    }
  }

  beforeAll(() => {
    native = loadNative();
    logDir = openDir('/var/tmp', 'clove-hide-');
  });

  afterAll(() => {
    if (logDir) fs.rmSync(logDir, { recursive: true, force: true });
  });

  it('covers a file with a read-only /dev/null, skips a vanished one, names the syscall otherwise', async () => {
    const victim = path.join(logDir, 'victim');
    fs.writeFileSync(victim, 'secret\n', { mode: 0o644 });
    const r = await run(
      ['/bin/sh', '-c', `stat -c %F ${victim}; cat ${victim} || echo DENIED; echo x > ${victim} || echo RO`],
      [path.join(logDir, 'vanished.sock'), victim],
    );
    expect(r.exit.agent).toMatchObject({ code: 0 });
    expect(r.out).toContain('character special file');
    expect(r.out).not.toContain('secret');
    expect(r.out).toContain('DENIED'); // nodev: not even /dev/null opens through it
    expect(r.out).toContain('RO');
    expect(fs.readFileSync(victim, 'utf8')).toBe('secret\n');

    await expect(native.spawn(options(1, ['/bin/true'], [logDir]))).rejects.toThrow(
      expect.objectContaining({ syscall: 'mount(<hidden socket>, MS_BIND)', code: 'ENOTDIR' }),
    );
    expect(() => native.spawn({ ...options(1, ['/bin/true'], [victim]), newMount: false })).toThrow(
      /hideFiles requires newMount/,
    );
    const many = Array.from({ length: 257 }, (_, i) => path.join(logDir, `n${i}`));
    await expect(native.spawn(options(1, ['/bin/true'], many))).rejects.toThrow(
      expect.objectContaining({ syscall: 'mount(<hidden socket>, MS_BIND)', code: 'E2BIG' }),
    );
  });
});
