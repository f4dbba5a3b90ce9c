/**
 * The state store keeps what it acknowledged: a STORE that got a success reply survives `kill -9` of
 * the kernel; session keys do not outlive the kernel run; a full disk is an error reply, not a crash.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startKernelProcess, tempDir, type KernelProcess } from '../../harness/kernel.js';
import { StorageError } from '../../sdk/typescript/client.js';

const running: KernelProcess[] = [];
afterEach(async () => {
  for (const k of running.splice(0)) await k.stop('SIGKILL');
});

async function start(dataDir: string, socketPath: string) {
  const k = await startKernelProcess({ dataDir, socketPath, extra: ['--log-level', 'error'] });
  running.push(k);
  return k;
}

describe('durability', () => {
  it('a STORE acknowledged before kill -9 is there after a restart; session keys are not', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 's.sock');
    const data = path.join(dir, 'data');
    const k1 = await start(data, sock);
    const c = await k1.client({ reconnect: false });
    for (let i = 0; i < 200; i++) await c.store(`k${i}`, { i });
    await c.store('sess', 1, { scope: 'session' });
    await c.store('mine', 'private', { scope: 'agent' });
    k1.child.kill('SIGKILL');
    await k1.exited;
    const k2 = await start(data, sock); // also proves a stale socket file is replaced
    const d = await k2.client();
    for (let i = 0; i < 200; i++) expect((await d.fetch(`k${i}`)).value).toEqual({ i });
    expect((await d.fetch('sess')).exists).toBe(false);
    expect((await d.fetch('mine', 'agent')).value).toBe('private');
  });

  it('refuses to start on a socket a live kernel holds, and never deletes a non-socket file', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 's.sock');
    await start(path.join(dir, 'd1'), sock);
    const bin = path.join(import.meta.dirname, '..', '..', 'bin', 'clove.js');
    const run = (s: string) => {
      try {
        execFileSync(process.execPath, [bin, '--socket', s, 'kernel', '--data-dir', path.join(dir, 'd2')], {
          stdio: 'pipe',
        });
        return 0;
      } catch (e) {
        return (e as { status: number }).status;
      }
    };
    expect(run(sock)).toBe(4);
    const plain = path.join(dir, 'not-a-socket');
    fs.writeFileSync(plain, 'precious');
    expect(run(plain)).toBe(3);
    expect(fs.readFileSync(plain, 'utf8')).toBe('precious');
  });

  it('a full disk makes STORE fail with storage_error and the kernel keeps serving', async () => {
    const dir = tempDir();
    const mnt = path.join(dir, 'small');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mnt]);
    try {
      const k = await start(path.join(mnt, 'data'), path.join(dir, 's.sock'));
      const c = await k.client();
      let failed: unknown = null;
      for (let i = 0; i < 400 && !failed; i++) {
        try {
          await c.store(`big${i}`, 'x'.repeat(8000));
        } catch (e) {
          failed = e;
        }
      }
      expect(failed).toBeInstanceOf(StorageError);
      expect((await c.hello()).success).toBe(true);
      expect((await c.fetch('big0')).exists).toBe(true);
      await k.stop('SIGKILL');
    } finally {
      execFileSync('umount', ['-l', mnt]);
    }
  });
});
