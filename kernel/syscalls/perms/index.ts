/**
 * Permissions family: GET_PERMS, SET_PERMS. Closes the public kernel's escalation holes: nobody raises
 * their own rights; an operator may set anybody's; an agent may only narrow (or set within its own) the
 * rights of agents it spawned.
 */
import {
  defineFamily,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
} from '../../core/family.js';

export default defineFamily(({ services }) => {
  const { agents, principals } = services;
  return {
    name: 'perms',
    handlers: {
      GET_PERMS: ({ caller }, req) => {
        const id = req.agent_id || caller.id;
        // Another agent's: an operator's to read, or an ancestor's (others are refused alike, found or not).
        if (id !== caller.id) agents.controlled(caller, { id });
        const rights = principals.rights(id);
        return {
          success: true,
          agent_id: id,
          permissions: rights ?? null,
          level: rights ? principals.levelOf(rights) : null,
        };
      },
      SET_PERMS: ({ caller }, req) => {
        const id = req.agent_id || caller.id;
        if (req.permissions === undefined && req.level === undefined)
          throw new InvalidRequestError('invalid request: permissions or level required');
        const next = principals.parseRights(req.permissions ?? req.level);
        if (caller.role !== 'operator' && id === caller.id) {
          // An agent may give up rights, never gain any.
          if (!principals.within(next, caller.perms))
            throw new PermissionDeniedError(
              'Permission denied: an agent can only narrow its own permissions',
            );
        } else if (caller.role !== 'operator') {
          agents.controlled(caller, { id });
          if (!principals.within(next, caller.perms))
            throw new PermissionDeniedError('Permission denied: cannot grant rights you do not have');
        }
        const cur = principals.rights(id);
        if (!cur) throw new NotFoundError(`agent not found: ${id}`);
        next.llm.tokens_used = cur.llm.tokens_used;
        next.llm.calls_made = cur.llm.calls_made;
        principals.setRights(id, next);
        return { success: true, agent_id: id };
      },
    },
  };
});
