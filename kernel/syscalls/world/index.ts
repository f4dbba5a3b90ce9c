/**
 * world family: WORLD_CREATE … WORLD_RESTORE (reference §3.11, docs/worlds.md). The worlds themselves
 * are a shared service (kernel/worlds/, `services.worlds`), because the files, http and exec families
 * consult it first for every call of a member; this family only exposes it.
 */
import { defineFamily } from '../../core/family.js';

export default defineFamily(({ services }) => {
  const worlds = services.worlds;
  return {
    name: 'world',
    handlers: {
      WORLD_CREATE: (ctx, req) => worlds.create(ctx.caller, req),
      WORLD_DESTROY: (ctx, req) => worlds.destroy(ctx.caller, req),
      WORLD_LIST: () => worlds.list(),
      WORLD_JOIN: (ctx, req) => worlds.join(ctx.caller, req),
      WORLD_LEAVE: (ctx, req) => worlds.leave(ctx.caller, req),
      WORLD_EVENT: (ctx, req) => worlds.event(ctx.caller, req),
      WORLD_STATE: (_ctx, req) => worlds.state(req),
      WORLD_SNAPSHOT: (ctx, req) => worlds.snapshot(ctx.caller, req),
      WORLD_RESTORE: (ctx, req) => worlds.restore(ctx.caller, req),
    },
  };
});
