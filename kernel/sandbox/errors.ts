/**
 * Typed errors of the sandbox. One class per condition; every class has a stable `code` so callers can
 * switch on it without `instanceof` across module copies (the way nats.js errors.ts does it).
 */

export class SandboxError extends Error {
  readonly code: string;
  constructor(message: string, code: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxError';
    this.code = code;
  }
}

/** A syscall made by the addon (or by the sandboxed child before exec) failed. */
export class SyscallError extends SandboxError {
  /** e.g. "getsockopt(SO_PEERCRED)", "clone3", "mount(/proc)". */
  readonly syscall: string;
  /** The numeric errno. */
  readonly errno: number;
  constructor(syscall: string, errno: number, code: string, message?: string) {
    super(message ?? `${syscall}: ${code}`, code);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.errno = errno;
  }
}

/** The native addon is not built or cannot be loaded (run `npm run build:native`). */
export class NativeUnavailableError extends SandboxError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'ENATIVE', options);
    this.name = 'NativeUnavailableError';
  }
}

/** A sandbox policy or resource limit is invalid (bad number, out of range, bad path). */
export class PolicyError extends SandboxError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`, 'EPOLICY');
    this.name = 'PolicyError';
    this.field = field;
  }
}

/** A cgroup file or directory could not be created, written or removed. */
export class CgroupError extends SandboxError {
  readonly path: string;
  constructor(path: string, message: string, code: string, options?: { cause?: unknown }) {
    super(`${path}: ${message}`, code, options);
    this.name = 'CgroupError';
    this.path = path;
  }
}

/** A client-supplied cgroup path was rejected (traversal, absolute, symlink, outside the kernel's tree). */
export class CgroupPathError extends SandboxError {
  readonly requested: string;
  constructor(requested: string, reason: string) {
    super(`cgroup path ${JSON.stringify(requested)} rejected: ${reason}`, 'ECGPATH');
    this.name = 'CgroupPathError';
    this.requested = requested;
  }
}

/** The agent could not be started at all (the supervisor treats this like kernel/errors.ts SpawnError). */
export class SandboxSpawnError extends SandboxError {
  readonly syscall?: string;
  readonly errno?: number;
  constructor(
    message: string,
    code: string,
    options?: { cause?: unknown; syscall?: string; errno?: number },
  ) {
    super(message, code, options);
    this.name = 'SpawnError';
    this.syscall = options?.syscall;
    this.errno = options?.errno;
  }
}

/** The sandbox is required (CI=true or `require: true`) but the host cannot provide it. */
export class SandboxUnavailableError extends SandboxError {
  constructor(message: string) {
    super(message, 'ENOSANDBOX');
    this.name = 'SandboxUnavailableError';
  }
}

/** Converts an error thrown by the addon (plain Error with syscall/errno/code) into a SyscallError. */
export function fromNative(err: unknown): unknown {
  if (err instanceof Error && typeof (err as { syscall?: unknown }).syscall === 'string') {
    const e = err as Error & { syscall: string; errno: number; code: string };
    const out = new SyscallError(e.syscall, e.errno, e.code, e.message);
    out.stack = e.stack;
    return out;
  }
  return err;
}
