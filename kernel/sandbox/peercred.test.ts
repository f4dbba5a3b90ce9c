import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { nativeAvailable, peerCredentials, SyscallError } from './index.js';
import { loadNative } from './native.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'clove-peercred-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('peerCredentials', () => {
  it('the addon is built and loads', () => {
    expect(nativeAvailable()).toBe(true);
  });

  it('reports the pid and uid of a connecting child process', async () => {
    const sock = path.join(dir, 'peer.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      const accepted = new Promise<{ pid: number; uid: number; gid: number }>((resolve, reject) => {
        server.once('connection', (s) => {
          try {
            resolve(peerCredentials(s));
          } catch (err) {
            reject(err);
          } finally {
            s.end();
          }
        });
      });
      const child = spawn(
        process.execPath,
        ['-e', `require('net').connect(${JSON.stringify(sock)}).on('close', () => process.exit(0))`],
        {
          stdio: 'ignore',
        },
      );
      const cred = await accepted;
      await new Promise((resolve) => child.once('exit', resolve));
      expect(cred.pid).toBe(child.pid);
      expect(cred.uid).toBe(process.getuid!());
      expect(cred.gid).toBe(process.getgid!());
    } finally {
      server.close();
    }
  });

  it('throws a SyscallError naming getsockopt and errno for a non-socket fd', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      let caught: unknown;
      try {
        loadNative().peerCred(fd);
      } catch (err) {
        caught = err;
      }
      expect(caught).toMatchObject({ syscall: 'getsockopt(SO_PEERCRED)', code: 'ENOTSOCK' });
      const s = new net.Socket();
      expect(() => peerCredentials(s)).toThrow(/no fd/);
    } finally {
      closeSync(fd);
    }
  });

  it('maps addon errors to SyscallError', async () => {
    const { fromNative } = await import('./errors.js');
    const e = Object.assign(new Error('getsockopt(SO_PEERCRED): EBADF'), {
      syscall: 'getsockopt(SO_PEERCRED)',
      errno: 9,
      code: 'EBADF',
    });
    const t = fromNative(e);
    expect(t).toBeInstanceOf(SyscallError);
    expect(t).toMatchObject({ syscall: 'getsockopt(SO_PEERCRED)', errno: 9, code: 'EBADF' });
  });
});
