/**
 * The sandbox layer's file mechanics (kernel/sandbox/files.ts, native/src/files.cc) without a kernel:
 * per-thread credentials that never touch Node's threads, bounded reads, atomic replacement.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { files } from '../../core/family.js';

const root = process.geteuid?.() === 0;
const NOBODY = { uid: 65534, gid: 65534 };
const allow = () => {};
let dir: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clvfm'));
  fs.chmodSync(dir, 0o755);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Uid/Gid/Groups/CapEff lines of every thread of this process. */
function threadCreds(): string[] {
  const out: string[] = [];
  for (const t of fs.readdirSync('/proc/self/task')) {
    try {
      const s = fs.readFileSync(`/proc/self/task/${t}/status`, 'utf8');
      out.push((s.match(/^(Uid|Gid|Groups|CapEff):.*$/gm) ?? []).join('|'));
    } catch {
      /* the thread ended meanwhile */
    }
  }
  return [...new Set(out)];
}

describe.skipIf(!root)('file mechanics, as root', () => {
  it('reads and writes as the account, on threads of their own: Node’s credentials never change', async () => {
    const before = threadCreds();
    expect(before).toHaveLength(1);
    const secret = path.join(dir, 'secret');
    fs.writeFileSync(secret, 'root only');
    fs.chmodSync(secret, 0o600);
    const view = { ...files.HOST_VIEW, account: NOBODY };
    const runs = await Promise.allSettled(
      Array.from({ length: 50 }, () => files.readFile(view, secret, {}, allow)),
    );
    expect(
      runs.every((r) => r.status === 'rejected' && (r.reason as { code: string }).code === 'EACCES'),
    ).toBe(true);
    await expect(
      files.writeFile(view, path.join(dir, 'new'), Buffer.from('x'), {}, allow),
    ).rejects.toMatchObject({
      code: 'EACCES',
    });
    expect(fs.existsSync(path.join(dir, 'new'))).toBe(false);
    // With the kernel's own credentials the same file is readable.
    const r = await files.readFile(files.HOST_VIEW, secret, {}, allow);
    expect(r.data.toString()).toBe('root only');
    expect(threadCreds()).toEqual(before);
    expect(process.geteuid!()).toBe(0);
  });

  it('a file the account owns is read and replaced; its mode and owner are kept', async () => {
    const own = path.join(dir, 'own');
    fs.mkdirSync(own, { mode: 0o755 });
    fs.chownSync(own, NOBODY.uid, NOBODY.gid);
    const f = path.join(own, 'f');
    const view = { ...files.HOST_VIEW, account: NOBODY };
    const w = await files.writeFile(view, f, Buffer.from('one'), {}, allow);
    expect(w).toMatchObject({ bytesWritten: 3, created: true, realPath: f });
    expect(fs.statSync(f)).toMatchObject({ uid: NOBODY.uid, gid: NOBODY.gid });
    expect(fs.statSync(f).mode & 0o777).toBe(0o644);
    fs.chmodSync(f, 0o640);
    const ino = fs.statSync(f).ino;
    await files.writeFile(view, f, Buffer.from('two'), {}, allow);
    expect(fs.readFileSync(f, 'utf8')).toBe('two');
    expect(fs.statSync(f).mode & 0o777).toBe(0o640);
    expect(fs.statSync(f).ino).not.toBe(ino);
    await files.writeFile(view, f, Buffer.from('+3'), { append: true }, allow);
    expect(fs.readFileSync(f, 'utf8')).toBe('two+3');
    expect(fs.readdirSync(own)).toEqual(['f']);
    // The kernel replacing a file of another owner keeps that owner.
    await files.writeFile(files.HOST_VIEW, f, Buffer.from('by root'), {}, allow);
    expect(fs.statSync(f)).toMatchObject({ uid: NOBODY.uid, gid: NOBODY.gid });
  });
});

describe('file mechanics', () => {
  it('refuses a file larger than the limit from its size, and reads at most limit + 1 bytes of /proc', async () => {
    const big = path.join(dir, 'big');
    fs.writeFileSync(big, '');
    fs.truncateSync(big, 1 << 30);
    const t0 = Date.now();
    await expect(files.readFile(files.HOST_VIEW, big, {}, allow)).rejects.toMatchObject({
      code: 'EFBIG',
      size: 1 << 30,
      limit: files.FILE_LIMITS.defaultReadBytes,
    });
    expect(Date.now() - t0).toBeLessThan(1000);
    const tail = await files.readFile(files.HOST_VIEW, big, { offset: (1 << 30) - 3, length: 10 }, allow);
    expect(tail.data).toEqual(Buffer.alloc(3));
    // /proc files claim size 0: the limit is found by reading one byte past it.
    await expect(
      files.readFile(files.HOST_VIEW, '/proc/self/maps', { maxBytes: 16 }, allow),
    ).rejects.toMatchObject({
      code: 'EFBIG',
    });
    const status = await files.readFile(files.HOST_VIEW, '/proc/self/status', {}, allow);
    expect(status.data.toString()).toMatch(/^Name:/);
    await expect(files.readFile(files.HOST_VIEW, big, { maxBytes: 1 << 30 }, allow)).rejects.toMatchObject({
      code: 'EPOLICY',
    });
  });

  it('checks the real path behind a symlink before opening it; never writes through one', async () => {
    const target = path.join(dir, 'target');
    fs.writeFileSync(target, 'target');
    const link = path.join(dir, 'link');
    fs.symlinkSync(target, link);
    const seen: string[] = [];
    const r = await files.readFile(files.HOST_VIEW, link, {}, (p) => void seen.push(p));
    expect(r.data.toString()).toBe('target');
    expect(seen).toEqual([target, target]);
    const refuse = () => {
      throw new Error('refused');
    };
    await expect(files.readFile(files.HOST_VIEW, link, {}, refuse)).rejects.toThrow('refused');
    await expect(files.writeFile(files.HOST_VIEW, link, Buffer.from('x'), {}, allow)).rejects.toMatchObject({
      code: 'ELOOP',
      syscall: 'target',
    });
    expect(fs.readFileSync(target, 'utf8')).toBe('target');
    // A symlinked directory is resolved and its real path checked before anything is written.
    const dlink = path.join(dir, 'dlink');
    fs.symlinkSync(dir, dlink);
    const checked: string[] = [];
    await expect(
      files.writeFile(files.HOST_VIEW, path.join(dlink, 'w'), Buffer.from('x'), {}, (p) => {
        checked.push(p);
        throw new Error('no');
      }),
    ).rejects.toThrow('no');
    expect(checked).toEqual([path.join(dir, 'w')]);
    expect(fs.existsSync(path.join(dir, 'w'))).toBe(false);
  });

  it('validates what it is given', async () => {
    await expect(files.readFile(files.HOST_VIEW, 'relative', {}, allow)).rejects.toMatchObject({
      code: 'EPOLICY',
    });
    await expect(files.readFile(files.HOST_VIEW, '/a/../b', {}, allow)).rejects.toMatchObject({
      code: 'EPOLICY',
    });
    await expect(files.writeFile(files.HOST_VIEW, '/', Buffer.from(''), {}, allow)).rejects.toMatchObject({
      code: 'EPOLICY',
    });
    await expect(files.readFile(files.HOST_VIEW, dir, {}, allow)).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(files.readFile(files.HOST_VIEW, path.join(dir, 'nope'), {}, allow)).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });
});
