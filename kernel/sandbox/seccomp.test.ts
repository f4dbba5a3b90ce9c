/**
 * The agents' seccomp filter (native/src/seccomp.cc, docs/sandbox.md "System calls"), tested from
 * inside sandboxed agents: a Python probe calls the denied system calls through ctypes and reports each
 * errno, then does ordinary work (threads, fork, exec, files, the agent socket). The same probe runs
 * without the filter (`seccomp: false`): the calls an unprivileged process may make there succeed, so
 * their EPERM under the filter comes from the filter, not from missing capabilities. Root only.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExitInfo } from './types.js';
import { initHelperPath, nativeAvailable } from './native.js';
import { NativeSpawner, type SandboxedAgent } from './native-spawner.js';
import { exitOf, readLog, sandboxPython, spec, workDir } from './testutil.js';

const isRoot = process.geteuid?.() === 0;

/** Prints one JSON line: {denied: {call: "ok" | errno name}, ok: {work: boolean}, status: {...}}. */
const PROBE = String.raw`
import ctypes, errno, json, os, platform, socket, struct, subprocess, sys, threading, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {
    'x86_64': dict(mount=165, unshare=272, setns=308, ptrace=101, process_vm_readv=310, keyctl=250,
                   bpf=321, perf_event_open=298, userfaultfd=323, kexec_load=246, init_module=175,
                   clone=56, clone3=435, io_uring_setup=425, personality=135, socket=41,
                   open_tree=428, fsopen=430),
    'aarch64': dict(mount=40, unshare=97, setns=268, ptrace=117, process_vm_readv=270, keyctl=219,
                    bpf=280, perf_event_open=241, userfaultfd=282, kexec_load=104, init_module=105,
                    clone=220, clone3=435, io_uring_setup=425, personality=92, socket=198,
                    open_tree=428, fsopen=430),
}[platform.machine()]
CLONE_NEWNS, CLONE_NEWUSER, SIGCHLD = 0x20000, 0x10000000, 17

def raw(name, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *conv)
    return r, ctypes.get_errno()

def result(r, e, close=False):
    if r >= 0:
        if close:
            os.close(r)
        return 'ok'
    return errno.errorcode.get(e, str(e))

def in_child(fn):
    """Runs fn in a forked child, so that what it changes (namespaces, personality) stays there."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            out = fn()
        except Exception as ex:
            out = 'exception ' + repr(ex)
        os.write(wr, out.encode())
        os._exit(0)
    os.close(wr)
    out = os.read(rd, 200).decode()
    os.close(rd)
    os.waitpid(pid, 0)
    return out

def forking(name, *args):
    """clone/clone3, which fork when allowed: the child leaves at once."""
    r, e = raw(name, *args)
    if r == 0:
        os._exit(0)
    if r > 0:
        os.waitpid(r, 0)
    return result(r, e)

denied = {}
denied['mount'] = result(*raw('mount', b'none', b'/tmp', b'tmpfs', 0, 0))
denied['fsopen'] = result(*raw('fsopen', b'tmpfs', 0), close=True)
denied['open_tree'] = result(*raw('open_tree', -100, b'/', 0), close=True)
denied['unshare_newuser'] = in_child(lambda: result(*raw('unshare', CLONE_NEWUSER)))
fd = os.open('/proc/self/ns/uts', os.O_RDONLY)
denied['setns'] = result(*raw('setns', fd, 0))
os.close(fd)
denied['clone_newns'] = forking('clone', CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)
denied['clone_newuser'] = forking('clone', CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0)
args = ctypes.create_string_buffer(88)
struct.pack_into('<Q', args, 32, SIGCHLD)
denied['clone3'] = forking('clone3', args, 88)

# Another process of the namespace: our own child, same uid.
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
buf = ctypes.create_string_buffer(8)
iov = iovec(ctypes.cast(buf, ctypes.c_void_p), 8)
denied['process_vm_readv'] = result(*raw('process_vm_readv', child, ctypes.byref(iov), 1, ctypes.byref(iov), 1, 0))
denied['ptrace_attach'] = result(*raw('ptrace', 16, child, 0, 0))
os.kill(child, 9)
os.waitpid(child, 0)

denied['keyctl'] = in_child(lambda: result(*raw('keyctl', 0, -4, 1)))  # KEYCTL_GET_KEYRING_ID, user keyring
attr = ctypes.create_string_buffer(128)
denied['bpf'] = result(*raw('bpf', 0, attr, 128), close=True)  # BPF_MAP_CREATE
perf = ctypes.create_string_buffer(128)
struct.pack_into('<IIQ', perf, 0, 1, 128, 1)  # PERF_TYPE_SOFTWARE, size, PERF_COUNT_SW_TASK_CLOCK
struct.pack_into('<Q', perf, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
denied['perf_event_open'] = result(*raw('perf_event_open', perf, 0, -1, -1, 0), close=True)
denied['userfaultfd'] = result(*raw('userfaultfd', os.O_CLOEXEC | 1), close=True)  # UFFD_USER_MODE_ONLY
denied['kexec_load'] = result(*raw('kexec_load', 0, 0, 0, 0))
denied['init_module'] = result(*raw('init_module', 0, 0, b''))
params = ctypes.create_string_buffer(120)
denied['io_uring_setup'] = result(*raw('io_uring_setup', 1, params), close=True)
denied['personality_no_aslr'] = in_child(lambda: result(*raw('personality', 0x0040000)))
denied['socket_vsock'] = result(*raw('socket', 40, 1, 0), close=True)

ok = {}
ok['personality_query'] = raw('personality', 0xffffffff)[0] >= 0
squares = []
threads = [threading.Thread(target=lambda i=i: squares.append(i * i)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
ok['threads'] = sorted(squares) == [0, 1, 4, 9]
pid = os.fork()
if pid == 0:
    os._exit(7)
ok['fork'] = os.WEXITSTATUS(os.waitpid(pid, 0)[1]) == 7
ok['exec'] = subprocess.run(['/bin/sh', '-c', 'echo hi'], capture_output=True).stdout == b'hi\n'
with open('file.txt', 'w') as f:
    f.write('data')
with open('/tmp/file.txt', 'w') as f:
    f.write('tmp')
ok['files'] = open('file.txt').read() == 'data' and open('/tmp/file.txt').read() == 'tmp'
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(os.environ['CLOVE_SOCKET'])
s.sendall(b'ping')
ok['agent_socket'] = s.recv(4) == b'pong'
s.close()
a, b = socket.socketpair()
a.sendall(b'x')
ok['socketpair'] = b.recv(1) == b'x'
ok['inet_socket'] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) is not None
ok['random_time'] = len(os.urandom(8)) == 8 and time.time() > 0

status = {}
for line in open('/proc/self/status'):
    k, _, v = line.partition(':')
    if k in ('Seccomp', 'Seccomp_filters', 'NoNewPrivs'):
        status[k] = v.strip()
print(json.dumps({'denied': denied, 'ok': ok, 'status': status}), flush=True)
`;

/** Asks another ABI for getpid: x32 (bit 30 of the number, arrives with the x86_64 arch). */
const X32_PROBE = String.raw`
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
print('x32', libc.syscall(ctypes.c_long(0x40000000 | 39)), flush=True)
`;

/** The same through int 0x80 (32-bit x86 ABI, getpid = 20). */
const INT80_C = `
int main(void) {
  long r;
  __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
  return r > 0 ? 0 : 3;
}
`;

interface ProbeOut {
  denied: Record<string, string>;
  ok: Record<string, boolean>;
  status: Record<string, string>;
}

describe.runIf(isRoot && nativeAvailable())('seccomp filter (from inside agents)', () => {
  const python = sandboxPython();
  let dir: string;
  let filtered: NativeSpawner;
  let unfiltered: NativeSpawner;
  let server: net.Server;
  let sock: string;
  const fds: number[] = [];
  let n = 0;
  let withFilter: { agent: SandboxedAgent; exit: ExitInfo; log: string } | undefined;
  let withoutFilter: { agent: SandboxedAgent; exit: ExitInfo; log: string } | undefined;

  function newLog(): { fd: number; file: string } {
    const file = path.join(dir, `log${n++}.txt`);
    const fd = fs.openSync(file, 'a');
    fds.push(fd);
    return { fd, file };
  }

  async function run(
    sp: NativeSpawner,
    argv: string[],
    sandboxed = true,
  ): Promise<{ agent: SandboxedAgent; exit: ExitInfo; log: string }> {
    const l = newLog();
    const agent = (await sp.spawn(
      spec({ argv, cwd: dir, logFd: l.fd, sandboxed, env: { PATH: '/usr/bin:/bin', CLOVE_SOCKET: sock } }),
    )) as SandboxedAgent;
    const exit = await exitOf(agent);
    return { agent, exit, log: readLog(l.file) };
  }

  const probeOf = (r: { log: string }): ProbeOut => {
    const line = r.log.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as ProbeOut;
    } catch {
      throw new Error(`probe output is not JSON:\n${r.log}`);
    }
  };

  beforeAll(async () => {
    dir = workDir('clove-seccomp-');
    sock = path.join(dir, 'agent.sock');
    server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.once('data', () => c.end('pong'));
    });
    await new Promise<void>((r) => server.listen(sock, r));
    fs.chmodSync(sock, 0o666);
    filtered = new NativeSpawner({ require: true, warn: () => undefined });
    unfiltered = new NativeSpawner({ require: true, seccomp: false, warn: () => undefined });
    await Promise.all([filtered.init(), unfiltered.init()]);
    if (python) {
      const probe = path.join(dir, 'probe.py');
      fs.writeFileSync(probe, PROBE, { mode: 0o644 });
      [withFilter, withoutFilter] = await Promise.all([
        run(filtered, [python, probe]),
        run(unfiltered, [python, probe]),
      ]);
    }
  });

  afterAll(async () => {
    await filtered?.close();
    await unfiltered?.close();
    await new Promise((r) => server?.close(r));
    for (const fd of fds) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.runIf(python)(
    'denies the dangerous calls with EPERM (clone3 with ENOSYS) and reports the filter',
    () => {
      const r = withFilter!;
      expect(r.exit, r.log).toEqual({ code: 0, signal: null, reason: 'exit' });
      expect(r.agent.isolation.seccomp).toBe(true);
      expect(r.agent.isolation.fully_isolated).toBe(true);
      const out = probeOf(r);
      expect(out.status).toMatchObject({ Seccomp: '2', Seccomp_filters: '1', NoNewPrivs: '1' });
      const expected: Record<string, string> = {};
      for (const k of Object.keys(out.denied)) expected[k] = k === 'clone3' ? 'ENOSYS' : 'EPERM';
      expect(out.denied).toEqual(expected);
      expect(Object.keys(out.denied)).toEqual(
        expect.arrayContaining([
          'mount',
          'unshare_newuser',
          'setns',
          'ptrace_attach',
          'keyctl',
          'bpf',
          'perf_event_open',
          'userfaultfd',
          'kexec_load',
          'init_module',
          'clone_newns',
          'clone3',
          'io_uring_setup',
        ]),
      );
    },
  );

  it.runIf(python)('keeps ordinary work going: Python, threads, fork, exec, files, sockets', () => {
    const out = probeOf(withFilter!);
    expect(out.ok).toEqual({
      personality_query: true,
      threads: true,
      fork: true,
      exec: true,
      files: true,
      agent_socket: true,
      socketpair: true,
      inet_socket: true,
      random_time: true,
    });
  });

  it.runIf(python)(
    'without it (seccomp: false) what an unprivileged process may do succeeds: the EPERM is the filter',
    () => {
      const r = withoutFilter!;
      expect(r.exit, r.log).toEqual({ code: 0, signal: null, reason: 'exit' });
      expect(r.agent.isolation.seccomp).toBe(false);
      expect(r.agent.isolation.fully_isolated).toBe(false);
      expect(r.agent.isolation.degraded_reason).toMatch(/seccomp filter off/);
      const out = probeOf(r);
      expect(out.status).toMatchObject({ Seccomp: '0', NoNewPrivs: '1' });
      expect(Object.values(out.ok).every(Boolean)).toBe(true);
      // Allowed to any unprivileged process on every host we run on; the rest depends on sysctls
      // (user namespaces, io_uring_disabled, perf_event_paranoid, Yama): counted when the host allows it.
      const works = Object.keys(out.denied).filter((k) => out.denied[k] === 'ok');
      expect(works).toEqual(expect.arrayContaining(['personality_no_aslr', 'keyctl', 'open_tree', 'clone3']));
      const filteredOut = probeOf(withFilter!);
      for (const k of works)
        expect([k, filteredOut.denied[k]]).toEqual([k, k === 'clone3' ? 'ENOSYS' : 'EPERM']);
      // A mount fails both ways (no capability): the filter's EPERM and the kernel's look alike.
      expect(out.denied.mount).toBe('EPERM');
      console.log(`seccomp: calls that succeed without the filter and fail with it: ${works.join(', ')}`);
    },
  );

  it.runIf(python && process.arch === 'x64')(
    'kills an agent that uses another ABI (x32) with SIGSYS',
    async () => {
      const probe = path.join(dir, 'x32.py');
      fs.writeFileSync(probe, X32_PROBE, { mode: 0o644 });
      const r = await run(filtered, [python!, probe]);
      expect(r.exit).toEqual({ code: null, signal: 'SIGSYS', reason: 'signal' });
      const free = await run(unfiltered, [python!, probe]);
      expect(free.exit.code, free.log).toBe(0);
    },
  );

  const cc = ['/usr/bin/cc', '/usr/bin/gcc'].find((c) => fs.existsSync(c));
  it.runIf(cc && process.arch === 'x64')(
    'kills an agent that uses the 32-bit ABI (int 0x80) with SIGSYS',
    async () => {
      const src = path.join(dir, 'int80.c');
      const bin = path.join(dir, 'int80');
      fs.writeFileSync(src, INT80_C);
      const built = spawnSync(cc!, ['-O0', '-o', bin, src], { encoding: 'utf8' });
      expect(built.status, built.stderr).toBe(0);
      fs.chmodSync(bin, 0o755);
      const free = await run(unfiltered, [bin]);
      // Without IA32 emulation int 0x80 faults anyway (SIGSEGV): nothing to compare then.
      if (free.exit.code !== 0) return;
      const r = await run(filtered, [bin]);
      expect(r.exit).toEqual({ code: null, signal: 'SIGSYS', reason: 'signal' });
    },
  );

  it('applies to rootless agents; not to plain-mode or unsandboxed ones', async () => {
    const check = ['/bin/sh', '-c', 'grep ^Seccomp: /proc/self/status'];
    const rootless = new NativeSpawner({ mode: 'rootless', require: false, warn: () => undefined });
    const plain = new NativeSpawner({ mode: 'plain', require: false, warn: () => undefined });
    try {
      const rl = await run(rootless, check);
      expect(rl.exit.code, rl.log).toBe(0);
      expect(rl.agent.isolation.seccomp).toBe(true);
      expect(rl.log).toMatch(/^Seccomp:\s+2$/m);
      const pl = await run(plain, check);
      expect(pl.agent.isolation.seccomp).toBe(false);
      expect(pl.log).toMatch(/^Seccomp:\s+0$/m);
      const uns = await run(filtered, check, false);
      expect(uns.agent.isolation.seccomp).toBe(false);
      expect(uns.log).toMatch(/^Seccomp:\s+0$/m);
    } finally {
      await rootless.close();
      await plain.close();
    }
  });

  it('clove-init refuses --seccomp without NO_NEW_PRIVS, and unknown options', () => {
    const record = (args: string[]) => {
      const r = spawnSync(initHelperPath(), args, { stdio: ['ignore', 'ignore', 'ignore', 'pipe'] });
      const rec = r.output[3] as Buffer;
      return {
        status: r.status,
        kind: rec.readUInt32LE(0),
        err: rec.readInt32LE(8),
        what: rec.subarray(12).toString().replace(/\0+$/, ''),
      };
    };
    // The test process has no NO_NEW_PRIVS: the filter is not installed and the agent never starts.
    expect(record(['--seccomp', '/bin/true', 'true'])).toEqual({
      status: 127,
      kind: 1,
      err: 1,
      what: 'seccomp: NO_NEW_PRIVS is not set',
    });
    expect(record(['--bogus', '/bin/true', 'true'])).toMatchObject({ status: 127, kind: 1, err: 22 });
  });
});
