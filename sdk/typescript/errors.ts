/**
 * SDK errors: one class per condition. Kernel error replies become the class of their `code`
 * (docs/protocol.md §4), so callers can `catch (e) { if (e instanceof MailboxFullError) … }`.
 */
export class CloveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** The connection closed (or could not be opened) before the reply arrived. */
export class ConnectionClosedError extends CloveError {}
/** The kernel sent bytes that are not a valid frame. */
export class ProtocolError extends CloveError {}
/** No reply within the call's timeout. */
export class TimeoutError extends CloveError {}

/** The kernel answered `success: false`. */
export class KernelError extends CloveError {
  constructor(
    message: string,
    readonly code: string,
    readonly reply: Record<string, unknown>,
  ) {
    super(message);
  }
}
export class InvalidRequestError extends KernelError {}
export class PermissionDeniedError extends KernelError {}
export class NotFoundError extends KernelError {}
export class NameTakenError extends KernelError {}
export class MailboxFullError extends KernelError {}
export class InvalidStateError extends KernelError {}
export class SpawnFailedError extends KernelError {}
export class StorageError extends KernelError {}
export class NotSupportedError extends KernelError {}
export class BadFrameError extends KernelError {}

const BY_CODE: Record<string, typeof KernelError> = {
  invalid_request: InvalidRequestError,
  permission_denied: PermissionDeniedError,
  not_found: NotFoundError,
  name_taken: NameTakenError,
  mailbox_full: MailboxFullError,
  invalid_state: InvalidStateError,
  spawn_failed: SpawnFailedError,
  storage_error: StorageError,
  not_supported: NotSupportedError,
  unknown_opcode: NotSupportedError,
  bad_frame: BadFrameError,
};

export function kernelError(reply: Record<string, unknown>): KernelError {
  const code = typeof reply.code === 'string' ? reply.code : 'unknown';
  const message = typeof reply.error === 'string' ? reply.error : 'kernel error';
  const Cls = BY_CODE[code] ?? KernelError;
  return new Cls(message, code, reply);
}
