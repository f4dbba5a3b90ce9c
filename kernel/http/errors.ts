/**
 * How the contract's error codes (protocol/wire.json) become HTTP statuses, and the one error type the
 * API's handlers throw: `{"error": "<code>", "message": "..."}` with the status that fits the code.
 */
import type { ErrorCode } from '../../protocol/index.js';

/** HTTP-only codes: a request without a valid token, and a path the API does not have. */
export type ApiErrorCode = ErrorCode | 'unauthorized' | 'not_found';

/** The HTTP status of each contract error code (docs/http.md "Errors"). */
export const STATUS: Record<ApiErrorCode, number> = {
  invalid_request: 400,
  bad_frame: 400,
  unknown_opcode: 400,
  not_supported: 501,
  permission_denied: 403,
  not_found: 404,
  name_taken: 409,
  mailbox_full: 429,
  quota_exceeded: 429,
  invalid_state: 409,
  spawn_failed: 422,
  storage_error: 507,
  too_large: 413,
  io_error: 500,
  upstream_failed: 502,
  cluster_unavailable: 503,
  not_clustered: 409,
  tunnel_failed: 502,
  journal_diverged: 409,
  internal: 500,
  unauthorized: 401,
};

/** A failed API call: its contract code, its message, and the reply's other fields (e.g. `agent_id`). */
export class ApiError extends Error {
  constructor(
    readonly code: ApiErrorCode,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  get status(): number {
    return STATUS[this.code] ?? 500;
  }

  body(): Record<string, unknown> {
    return { ...this.extra, error: this.code, message: this.message };
  }
}

/** The ApiError of a kernel error reply (`{success:false, error, code, ...}`). */
export function fromReply(reply: Record<string, unknown>): ApiError {
  const { success: _s, error, code, ...extra } = reply;
  const c = (typeof code === 'string' && code in STATUS ? code : 'internal') as ApiErrorCode;
  return new ApiError(c, String(error ?? 'failed'), extra);
}
