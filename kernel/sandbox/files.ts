/**
 * How READ and WRITE reach an agent's files (docs/sandbox.md "Files"): where a path is resolved — inside
 * the agent's own mount namespace (`/proc/<its clove-init pid>/root`), or the host's `/` for operators and
 * unsandboxed agents —, with whose credentials (the agent's fsuid/fsgid, no groups, no capabilities, on a
 * thread of the addon's own), and how the bytes move (bounded reads, atomic replacement). The addon
 * (native/src/files.cc) does the syscalls; this module validates, fills in defaults and runs the
 * resolve → check → open sequence. Which paths may be named is policy, the files family's: it passes a
 * `check` that every real path goes through before anything is opened at it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { NativeFsCall } from '../../native/index.js';
import { fromNative, PolicyError, SandboxError, SyscallError } from './errors.js';
import { loadNative } from './native.js';
import type { Account, AgentProcess } from './types.js';

export const FILE_LIMITS = {
  /** READ's `max_bytes` when the request names none. */
  defaultReadBytes: 8 * 1024 * 1024,
  /** The most a READ's `max_bytes` may be. */
  maxReadBytes: 16 * 1024 * 1024,
  /** Mode of a file WRITE creates; a replaced file keeps its own mode. */
  fileMode: 0o644,
} as const;

/** Where paths are resolved, and as whom. */
export interface FileView {
  /** Host pid whose root (`/proc/<pid>/root`) paths are resolved below; 0: the kernel's own `/`. */
  rootPid: number;
  /** The `ns/pid` link that process must still have ("" to skip): a reused pid never lends its root. */
  pidNs: string;
  /** fsuid/fsgid of every access (no supplementary groups, no capabilities); null: the kernel's own. */
  account: Account | null;
}

/** The host's file system with the kernel's credentials (operators, unsandboxed agents). */
export const HOST_VIEW: FileView = Object.freeze({ rootPid: 0, pidNs: '', account: null });

/**
 * An agent's view: a sandboxed agent with a mount namespace sees its own (private /tmp, read-only root,
 * its work directory), through its clove-init's root; every access is made as its uid. An agent
 * without namespaces (plain mode, `--sandbox off`) shares the host's root.
 */
export function agentView(proc: AgentProcess, account: Account | null): FileView {
  const p = proc as AgentProcess & { exited?: boolean; pidNamespace?: string };
  if (p.exited) throw new SyscallError('open(/proc/<pid>/root)', 3, 'ESRCH', 'the agent has exited');
  return p.pidNamespace
    ? { rootPid: proc.pid, pidNs: p.pidNamespace, account }
    : { rootPid: 0, pidNs: '', account };
}

/** A read refused for its size: `size` is the file's (or what was seen of it), `limit` the maximum. */
export class FileTooLargeError extends SandboxError {
  constructor(
    readonly size: number,
    readonly limit: number,
  ) {
    super(`file too large: ${size} bytes, the limit is ${limit}`, 'EFBIG');
    this.name = 'FileTooLargeError';
  }
}

/** Called with every real path (in the view's namespace) before it is opened; throws to refuse. */
export type PathCheck = (realPath: string) => void;

export interface ReadOptions {
  /** Default FILE_LIMITS.defaultReadBytes, at most FILE_LIMITS.maxReadBytes. */
  maxBytes?: number;
  offset?: number;
  /** Bytes from `offset` at most; default the rest of the file. */
  length?: number;
}

export interface ReadResult {
  data: Buffer;
  /** The file's size when it was opened. */
  fileSize: number;
  realPath: string;
}

export interface WriteOptions {
  append?: boolean;
}

export interface WriteResult {
  bytesWritten: number;
  realPath: string;
  created: boolean;
}

/** The code of a sandbox or addon error (`EACCES`, `ELOOP`, `EFBIG`, …), if it is one. */
export function errnoCode(e: unknown): string | undefined {
  return e instanceof SandboxError ? e.code : undefined;
}

function absolute(p: string, field: string): void {
  if (typeof p !== 'string' || !p.startsWith('/') || p.includes('\0'))
    throw new PolicyError(field, 'must be an absolute path without NUL');
  if (p.split('/').includes('..')) throw new PolicyError(field, "may not contain '..'");
}

function count(v: number | undefined, field: string, dflt: number, max: number): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 0 || v > max)
    throw new PolicyError(field, `must be an integer 0..${max}`);
  return v;
}

/** Runs one addon call with a root fd of the view (the addon dups it: ours is closed at once). */
async function call<T>(view: FileView, run: (c: NativeFsCall) => Promise<T>): Promise<T> {
  const native = loadNative();
  let p: Promise<T>;
  try {
    const rootFd = native.fsOpenRoot(view.rootPid, view.pidNs);
    try {
      p = run({ rootFd, uid: view.account?.uid ?? -1, gid: view.account?.gid ?? -1 });
    } finally {
      fs.closeSync(rootFd);
    }
    return await p;
  } catch (err) {
    const out = fromNative(err);
    const size = (err as { size?: unknown }).size;
    if (out !== err && typeof size === 'number') Object.assign(out as object, { size });
    throw out;
  }
}

/**
 * Reads a regular file: `file` is an absolute path of the view without `..`. Fast path: opened with no
 * symlink allowed anywhere, so its real path is the path named. When a symlink is on the way, the path is
 * resolved (inside the root), `check`ed, and then that real path is read, again with no symlink
 * allowed: a symlink swapped in meanwhile fails (ELOOP) instead of being followed. `check` also sees the
 * path of the file actually read (its data is dropped if it throws).
 */
export async function readFile(
  view: FileView,
  file: string,
  opts: ReadOptions,
  check: PathCheck,
): Promise<ReadResult> {
  absolute(file, 'path');
  const maxBytes = count(opts.maxBytes, 'maxBytes', FILE_LIMITS.defaultReadBytes, FILE_LIMITS.maxReadBytes);
  const o = {
    maxBytes,
    offset: count(opts.offset, 'offset', 0, Number.MAX_SAFE_INTEGER),
    length: count(opts.length, 'length', -1, Number.MAX_SAFE_INTEGER),
  };
  const native = loadNative();
  const read = async (p: string) => {
    try {
      const r = await call(view, (c) => native.fsRead({ ...c, path: p, noSymlinks: true, ...o }));
      check(r.realPath);
      return r;
    } catch (e) {
      if (errnoCode(e) === 'EFBIG') throw new FileTooLargeError((e as { size?: number }).size ?? 0, maxBytes);
      throw e;
    }
  };
  try {
    return await read(file);
  } catch (e) {
    if (errnoCode(e) !== 'ELOOP') throw e;
  }
  const target = await call(view, (c) => native.fsResolve({ ...c, path: file, noSymlinks: false }));
  check(target.realPath);
  return read(target.realPath).catch((e: unknown) => {
    throw errnoCode(e) === 'ELOOP' ? changed(file) : e;
  });
}

/**
 * Writes a regular file: appends (`append`), or replaces it atomically (a new file in the same
 * directory, renamed over it: readers see the old content or the new, never a part). A symlink at the
 * target is never followed (ELOOP, syscall "target"); one on the way to its directory is resolved and
 * its real directory `check`ed (with the file's name) before anything is written, then written with no
 * symlink allowed. The caller checked `file` itself.
 */
export async function writeFile(
  view: FileView,
  file: string,
  data: Buffer,
  opts: WriteOptions,
  check: PathCheck,
): Promise<WriteResult> {
  absolute(file, 'path');
  const dir = path.posix.dirname(file);
  const name = path.posix.basename(file);
  if (file === '/' || file.endsWith('/') || name === '.' || !name)
    throw new PolicyError('path', 'must name a file');
  if (!Buffer.isBuffer(data)) throw new PolicyError('data', 'must be a Buffer');
  const native = loadNative();
  const o = { name, data, append: opts.append ?? false, fileMode: FILE_LIMITS.fileMode };
  const write = async (d: string) => {
    const r = await call(view, (c) => native.fsWrite({ ...c, dir: d, ...o }));
    return { bytesWritten: r.bytesWritten, created: r.created, realPath: path.posix.join(r.realDir, name) };
  };
  try {
    return await write(dir);
  } catch (e) {
    if (errnoCode(e) !== 'ELOOP' || (e as SyscallError).syscall === 'target') throw e;
  }
  const target = await call(view, (c) => native.fsResolve({ ...c, path: dir, noSymlinks: false }));
  check(path.posix.join(target.realPath, name));
  return write(target.realPath).catch((e: unknown) => {
    throw errnoCode(e) === 'ELOOP' && (e as SyscallError).syscall !== 'target' ? changed(file) : e;
  });
}

function changed(file: string): SyscallError {
  return new SyscallError(
    'openat2',
    40,
    'ELOOP',
    `${file}: a symbolic link appeared on the way while it was resolved`,
  );
}
