/**
 * GET_PERMS and SET_PERMS. Closes the public kernel's escalation holes: nobody raises their own rights;
 * an operator may set anybody's; an agent may only narrow (or set within its own) the rights of agents
 * it spawned.
 */
import { PermissionDeniedError, NotFoundError, InvalidRequestError } from '../errors.js';
import { parsePermissions, within } from '../perms/permissions.js';
import { optInt } from '../validate.js';
import type { HandlerTable } from './index.js';
import { mayControl } from './lifecycle.js';

export const permissions: HandlerTable = {
  GET_PERMS: {
    fn: (k, c, p) => {
      const id = optInt(p, 'agent_id', 0, 0xffffffff) || c.principal.id;
      if (id !== c.principal.id) {
        const a = k.supervisor.get(id);
        if (!a) throw new NotFoundError(`agent not found: ${id}`);
        if (!mayControl(k, c, a))
          throw new PermissionDeniedError(`Permission denied: cannot read agent ${id}'s permissions`);
      }
      return { success: true, agent_id: id, permissions: k.perms.get(id) ?? null };
    },
  },
  SET_PERMS: {
    fn: (k, c, p) => {
      const id = optInt(p, 'agent_id', 0, 0xffffffff) || c.principal.id;
      if (p.permissions === undefined && p.level === undefined) {
        throw new InvalidRequestError('invalid request: permissions or level required');
      }
      const next = parsePermissions(p.permissions ?? p.level);
      const operator = c.principal.role === 'operator';
      if (!operator) {
        if (id === c.principal.id)
          throw new PermissionDeniedError('Permission denied: an agent cannot change its own permissions');
        const a = k.supervisor.get(id);
        if (!a) throw new NotFoundError(`agent not found: ${id}`);
        if (!mayControl(k, c, a))
          throw new PermissionDeniedError("Permission denied: cannot modify other agent's permissions");
        if (!within(next, c.perms))
          throw new PermissionDeniedError('Permission denied: cannot grant rights you do not have');
      }
      if (!k.perms.has(id)) throw new NotFoundError(`agent not found: ${id}`);
      const cur = k.perms.get(id)!;
      next.llm.tokens_used = cur.llm.tokens_used;
      next.llm.calls_made = cur.llm.calls_made;
      k.perms.set(id, next);
      return { success: true, agent_id: id };
    },
  },
};
