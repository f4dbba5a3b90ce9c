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
export type { Permissions } from '../perms/permissions.js';
export { isKernelEvent } from '../events/bus.js';

import { InvalidRequestError } from './errors.js';

/** A target named by `id` or `name` (id wins), as KILL/PAUSE/RESUME take it. */
export function target(p: { id?: number; name?: string }): { id?: number; name?: string } {
  if (!p.id && !p.name) throw new InvalidRequestError('invalid request: id or name required');
  return p.id ? { id: p.id } : { name: p.name };
}
