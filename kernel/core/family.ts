/**
 * Everything a syscall family may import from the kernel (npm run lint enforces it): the context types,
 * the error classes and the helpers below. A family reaches services only through `ctx.services`.
 */
export {
  defineFamily,
  type Caller,
  type Family,
  type FamilyEnv,
  type FamilyFactory,
  type Handlers,
  type Services,
  type SyscallContext,
  type SyscallRecord,
} from './context.js';
export * from './errors.js';
export type { AgentRecord } from '../supervisor/supervisor.js';
export type { ClusterService } from '../cluster/cluster.js';
/** The tunnel family's service and its connect failure (kernel/tunnel/). */
export { TunnelConnectError, type TunnelClient } from '../tunnel/client.js';
export type { WorldService } from '../worlds/service.js';
export type { NameOwner } from '../cluster/types.js';
export type { Permissions } from '../perms/permissions.js';
/** Whether `permissions.mcp` grants a server's tool, or names the server at all (mcp family). */
export { mcpGranted, mcpServerGranted } from '../perms/permissions.js';
export { isKernelEvent } from '../events/bus.js';
export { readOperatorJson } from './operator-file.js';
/** Push delivery (HELLO `push`): what a connection is sent unasked (core family). */
export { pushMode, setPush } from '../ipc/push.js';
export { messageFields, reachableState } from '../ipc/mailboxes.js';
export { messageTexts } from '../ipc/message-text.js';
/** READ/WRITE mechanics: an agent's view of the file system, bounded reads, atomic writes (files family). */
export * as files from '../sandbox/files.js';
export { firstMatch, type GlobKind } from '../perms/globs.js';
/** EXEC mechanics: where a command runs (an agent's own sandbox), its program and cwd found there (exec family). */
export * as exec from '../sandbox/exec.js';

import { InvalidRequestError } from './errors.js';
import type { SyscallContext as Ctx } from './context.js';

/** A target named by `id` or `name` (id wins), as KILL/PAUSE/RESUME take it. */
export function target(p: { id?: number; name?: string }): { id?: number; name?: string } {
  if (!p.id && !p.name) throw new InvalidRequestError('invalid request: id or name required');
  return p.id ? { id: p.id } : { name: p.name };
}

/**
 * The reply of a call made with `async: true`: `run` goes on in the background, its reply waits for the
 * caller's ASYNC_RESULTS (reference §3.4 accept shape). Its signal is not the connection's: it aborts
 * only when the caller is gone for good.
 */
export function acceptAsync(
  ctx: Ctx,
  op: { code: number; name: string },
  requestId: number | undefined,
  run: (signal: AbortSignal) => Promise<unknown>,
): { success: true; async: true; request_id: number; status: 'accepted' } {
  const request_id = ctx.services.async.start(ctx.caller, op, requestId, run);
  return { success: true, async: true, request_id, status: 'accepted' };
}
