import type { Socket } from 'node:net';
import { fromNative, SandboxError } from './errors.js';
import { loadNative } from './native.js';

/** The fd of a connected net.Socket (libuv's pipe handle), or throws. */
export function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0)
    throw new SandboxError('socket has no fd (closed, or not a Unix socket)', 'EBADF');
  return fd;
}

/**
 * Credentials the kernel recorded for the peer of an accepted Unix socket (SO_PEERCRED): the pid, uid
 * and gid of the process that called connect(), as seen from the kernel daemon's PID namespace.
 * Throws SyscallError (syscall "getsockopt(SO_PEERCRED)") or NativeUnavailableError.
 */
export function peerCredentials(socket: Socket): { pid: number; uid: number; gid: number } {
  const native = loadNative();
  try {
    return native.peerCred(socketFd(socket));
  } catch (err) {
    throw fromNative(err);
  }
}
