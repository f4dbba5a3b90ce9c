/**
 * files family: READ and WRITE (docs/protocol.md §5 "Files"); a world's member is served by its world
 * first (docs/worlds.md). The policy half: who may read or write
 * which path. The mechanics — the agent's own view of the file system, its uid, bounded reads, atomic
 * writes — are the sandbox layer's (kernel/sandbox/files.ts, reached as `files` through family.ts).
 *
 * A path an agent names means what it means inside its own mount namespace (private /tmp, read-only
 * root, its work directory), relative paths start at its work directory, and every file is opened with
 * its uid: the kernel never opens for an agent a file the agent could not open itself. On top of that,
 * its rights: `can_read`/`can_write`, then the `filesystem` globs (globs.ts) against the path it named
 * and against every real path the name resolves to, so a symlink cannot lead to a blocked file.
 */
import { isUtf8 } from 'node:buffer';
import type { ArgsOf, Replies } from '../../../protocol/index.js';
import {
  defineFamily,
  files,
  InvalidRequestError,
  InvalidStateError,
  IoError,
  KernelError,
  NotFoundError,
  PermissionDeniedError,
  TooLargeError,
  type Permissions,
  type Services,
  type SyscallContext,
} from '../../core/family.js';
import { ReadGate } from './gate.js';
import { firstMatch } from '../../core/family.js';

/** Bytes all READs may hold at once, and READs of one caller running at once (the rest wait). */
const READ_BYTES_IN_FLIGHT = 128 * 1024 * 1024;
const READS_PER_CALLER = 2;
/** The longest path accepted (PATH_MAX). */
const MAX_PATH = 4096;

type Filler = Record<string, unknown>;
/** The reference's error filler of each call. */
const READ_FILLER: Filler = { content: '', size: 0 };
const WRITE_FILLER: Filler = { bytes_written: 0 };

/** Where the caller's paths are resolved, and what `~` and relative paths mean for it. */
interface Where {
  view: files.FileView;
  /** Relative paths start here; null: only absolute paths (operators). */
  cwd: string | null;
  /** `~` in globs: the agent's HOME first (allow lists use it alone), then the kernel's. */
  homes: string[];
}

function whereOf(ctx: SyscallContext, filler: Filler): Where {
  const { caller, services } = ctx;
  const kernelHome = process.env.HOME ?? '/';
  if (caller.role === 'operator') return { view: files.HOST_VIEW, cwd: null, homes: [kernelHome] };
  if (caller.role !== 'agent')
    throw new PermissionDeniedError(
      'Permission denied: files are read and written for agents and operators only',
      filler,
    );
  const a = services.agents.get(caller.id);
  if (!a?.proc) throw new InvalidStateError(`agent ${caller.id} has no running process`, filler);
  let view: files.FileView = files.HOST_VIEW;
  if (a.def.sandboxed) {
    try {
      view = files.agentView(a.proc, a.def.account);
    } catch {
      throw new InvalidStateError(`agent ${caller.id} has no running process`, filler);
    }
  }
  const home = a.def.env.HOME ?? kernelHome;
  return { view, cwd: a.def.cwd, homes: [...new Set([home, kernelHome])] };
}

/** The absolute path the caller named: `.` and repeated slashes dropped; `..` refused. */
function normalise(raw: string | undefined, cwd: string | null, filler: Filler): string {
  if (raw === undefined || raw === '') throw new InvalidRequestError('path required', filler);
  if (raw.includes('\0')) throw new InvalidRequestError('invalid request: path contains NUL', filler);
  if (raw.length > MAX_PATH) throw new InvalidRequestError('invalid request: path too long', filler);
  let p = raw;
  if (!p.startsWith('/')) {
    if (cwd === null)
      throw new InvalidRequestError('invalid request: path must be absolute (no work directory)', filler);
    p = `${cwd}/${p}`;
  }
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  if (parts.includes('..'))
    throw new PermissionDeniedError(`Permission denied: '..' is not allowed in a path: ${raw}`, filler);
  return '/' + parts.join('/');
}

/** The caller's rights on paths, as a check that throws permission_denied. */
function policy(perms: Permissions, kind: 'read' | 'write', homes: string[], filler: Filler) {
  const allow = kind === 'read' ? perms.filesystem.read : perms.filesystem.write;
  const verb = kind === 'read' ? 'reading' : 'writing';
  return (p: string): void => {
    const blocked = firstMatch(perms.filesystem.blocked, p, homes, 'blocked');
    if (blocked !== undefined)
      throw new PermissionDeniedError(
        `Permission denied: path not allowed for ${verb}: ${p} (blocked: ${blocked})`,
        filler,
      );
    if (allow.length && firstMatch(allow, p, homes.slice(0, 1), 'allow') === undefined)
      throw new PermissionDeniedError(
        `Permission denied: path not allowed for ${verb}: ${p} (not in filesystem.${kind})`,
        filler,
      );
  };
}

/** A failure of the sandbox layer as the wire's error. */
function failure(e: unknown, file: string, filler: Filler): KernelError | unknown {
  if (e instanceof KernelError) return e;
  if (e instanceof files.FileTooLargeError)
    return new TooLargeError(`file too large: ${file} (${e.size} bytes; max_bytes ${e.limit})`, {
      ...filler,
      file_size: e.size,
      limit: e.limit,
    });
  const code = files.errnoCode(e);
  if (code === undefined) return e;
  const syscall = (e as { syscall?: string }).syscall ?? '';
  const message = (e as Error).message;
  if (syscall.includes('/proc/<pid>') || code === 'ESRCH')
    return new InvalidStateError("the agent's process is gone", filler);
  switch (code) {
    case 'EPOLICY':
      return new InvalidRequestError(`invalid request: ${message}`, filler);
    case 'ENOENT':
    case 'ENOTDIR':
      return new NotFoundError(`not found: ${file}`, filler);
    case 'EACCES':
    case 'EPERM':
      return new PermissionDeniedError(`Permission denied: ${file} (${code})`, filler);
    case 'ELOOP':
      if (syscall === 'target')
        return new PermissionDeniedError(
          `Permission denied: ${file} is a symbolic link (WRITE never follows one)`,
          filler,
        );
      break;
    case 'EINVAL':
      if (syscall === 'S_ISREG')
        return new IoError(`${file}: not a regular file`, { ...filler, errno: code });
      break;
  }
  return new IoError(`${file}: ${message}`, { ...filler, errno: code });
}

function fromBase64(s: string, filler: Filler): Buffer {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s))
    throw new InvalidRequestError('invalid request: content is not valid base64', filler);
  return Buffer.from(s, 'base64');
}

function count(services: Services, ctx: SyscallContext, field: 'bytesRead' | 'bytesWritten', n: number) {
  if (ctx.caller.role === 'agent') services.principals.stats(ctx.caller.id)[field] += n;
}

export default defineFamily(({ services }) => {
  const gate = new ReadGate(READ_BYTES_IN_FLIGHT, READS_PER_CALLER);

  async function read(ctx: SyscallContext, req: ArgsOf['READ']): Promise<Replies['READ']> {
    const F = READ_FILLER;
    // A world's member: its chaos first, and its virtual files instead of the real ones (docs/worlds.md).
    const virtual = await services.worlds.read(ctx.caller, req, ctx.signal);
    if (virtual) return virtual;
    const { perms } = ctx.caller;
    if (!perms.can_read)
      throw new PermissionDeniedError('Permission denied: reading files is not allowed', F);
    const where = whereOf(ctx, F);
    const file = normalise(req.path, where.cwd, F);
    const check = policy(perms, 'read', where.homes, F);
    check(file);
    const release = await gate.acquire(
      ctx.caller.id,
      Math.min(req.max_bytes + 1, req.length ?? Infinity),
      ctx.signal,
    );
    try {
      const r = await files
        .readFile(
          where.view,
          file,
          { maxBytes: req.max_bytes, offset: req.offset, length: req.length },
          check,
        )
        .catch((e: unknown) => {
          throw failure(e, file, F);
        });
      count(services, ctx, 'bytesRead', r.data.length);
      const size = r.data.length;
      if (req.encoding === 'auto' && isUtf8(r.data))
        return { success: true, content: r.data.toString('utf8'), size, file_size: r.fileSize };
      return {
        success: true,
        content: r.data.toString('base64'),
        size,
        encoding: 'base64',
        file_size: r.fileSize,
      };
    } finally {
      release();
    }
  }

  async function write(ctx: SyscallContext, req: ArgsOf['WRITE']): Promise<Replies['WRITE']> {
    const F = WRITE_FILLER;
    const virtual = await services.worlds.write(ctx.caller, req, ctx.signal);
    if (virtual) return virtual;
    const { perms } = ctx.caller;
    if (!perms.can_write)
      throw new PermissionDeniedError('Permission denied: writing files is not allowed', F);
    const where = whereOf(ctx, F);
    const file = normalise(req.path, where.cwd, F);
    if (req.path!.endsWith('/') || file === '/')
      throw new InvalidRequestError('invalid request: path names a directory', F);
    const check = policy(perms, 'write', where.homes, F);
    check(file);
    const data = req.encoding === 'base64' ? fromBase64(req.content, F) : Buffer.from(req.content, 'utf8');
    const r = await files
      .writeFile(where.view, file, data, { append: req.mode === 'append' }, check)
      .catch((e: unknown) => {
        throw failure(e, file, F);
      });
    count(services, ctx, 'bytesWritten', r.bytesWritten);
    return { success: true, bytes_written: r.bytesWritten, created: r.created };
  }

  return { name: 'files', handlers: { READ: read, WRITE: write } };
});
