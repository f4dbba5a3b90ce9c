/**
 * `clove kernel --upgrade` (docs/restart.md): the kernel running on a socket hands its agents over to
 * this process. It is found through the socket itself (SO_PEERCRED of a connection names the process
 * that listens), told with SIGHUP, and waited for until it is gone; this kernel then starts on the same
 * data dir and re-adopts the agents it left running.
 */
import net from 'node:net';
import { peerCredentials } from '../sandbox/peercred.js';
import { KernelStartError } from './errors.js';

/** How long the running kernel may take to hand over (it closes its connections and stores). */
const HANDOVER_TIMEOUT_MS = 60_000;

/** The pid of the process listening on the Unix socket `file`, or a start error (exit code 6) when none does. */
async function listenerPid(file: string): Promise<number> {
  const sock = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(file);
    s.once('connect', () => resolve(s));
    s.once('error', (e: NodeJS.ErrnoException) =>
      reject(new KernelStartError(`--upgrade: no kernel answers on ${file} (${e.code ?? e.message})`, 6)),
    );
  });
  try {
    return peerCredentials(sock).pid;
  } finally {
    sock.destroy();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** SIGHUPs the kernel listening on `socketPath` and resolves once that process is gone. */
export async function takeOver(socketPath: string): Promise<number> {
  const pid = await listenerPid(socketPath);
  if (pid === process.pid)
    throw new KernelStartError('--upgrade: the kernel on the socket is this process', 4);
  try {
    process.kill(pid, 'SIGHUP');
  } catch (e) {
    throw new KernelStartError(
      `--upgrade: cannot signal the running kernel (pid ${pid}): ${(e as NodeJS.ErrnoException).code}`,
      4,
    );
  }
  const deadline = Date.now() + HANDOVER_TIMEOUT_MS;
  while (alive(pid)) {
    if (Date.now() > deadline)
      throw new KernelStartError(
        `--upgrade: the running kernel (pid ${pid}) did not hand over within ${HANDOVER_TIMEOUT_MS / 1000} s`,
        4,
      );
    await new Promise((r) => setTimeout(r, 20));
  }
  return pid;
}
