/**
 * One error class per condition a syscall can fail with. Every class carries the stable machine `code`
 * that goes on the wire (docs/protocol.md §4); the message is for humans.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'bad_frame'
  | 'unknown_opcode'
  | 'not_supported'
  | 'permission_denied'
  | 'not_found'
  | 'name_taken'
  | 'mailbox_full'
  | 'invalid_state'
  | 'spawn_failed'
  | 'storage_error'
  | 'internal';

export abstract class KernelError extends Error {
  abstract readonly code: ErrorCode;
  /** Extra fields merged into the error reply (e.g. compatibility filler of the public kernel). */
  readonly extra: Record<string, unknown>;
  constructor(message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.name = new.target.name;
    this.extra = extra;
  }
}

export class InvalidRequestError extends KernelError {
  readonly code = 'invalid_request';
}
export class UnknownOpcodeError extends KernelError {
  readonly code = 'unknown_opcode';
}
export class NotSupportedError extends KernelError {
  readonly code = 'not_supported';
}
export class PermissionDeniedError extends KernelError {
  readonly code = 'permission_denied';
}
export class NotFoundError extends KernelError {
  readonly code = 'not_found';
}
export class NameTakenError extends KernelError {
  readonly code = 'name_taken';
}
export class MailboxFullError extends KernelError {
  readonly code = 'mailbox_full';
}
export class InvalidStateError extends KernelError {
  readonly code = 'invalid_state';
}
export class SpawnError extends KernelError {
  readonly code = 'spawn_failed';
}
export class StorageError extends KernelError {
  readonly code = 'storage_error';
}

/** The error reply for anything a handler threw: typed errors keep their code, the rest are `internal`. */
export function errorReply(err: unknown): Record<string, unknown> {
  if (err instanceof KernelError) return { ...err.extra, success: false, error: err.message, code: err.code };
  const message = err instanceof Error ? err.message : String(err);
  return { success: false, error: `internal error: ${message}`, code: 'internal' };
}

/** The kernel cannot start; `exitCode` is the CLI's exit status (docs/cli.md). */
export class KernelStartError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'KernelStartError';
  }
}
