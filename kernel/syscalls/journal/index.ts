/**
 * journal family (docs/durable.md): STEP_BEGIN, STEP_END, STEP_STATUS, STEP_CLEAR. The journal itself
 * is a kernel service (kernel/journal/), because the dispatcher runs every journaled opcode (THINK,
 * HTTP, EXEC: `journaled` in the contract) through it; this family only opens, closes, shows and clears
 * steps. Whose journal, and who may see another's, is the service's rule.
 */
import { defineFamily } from '../../core/family.js';

export default defineFamily(({ services }) => ({
  name: 'journal',
  handlers: {
    STEP_BEGIN: (ctx, req) => services.journal.begin(ctx, req),
    STEP_END: (ctx, req) => services.journal.end(ctx, req),
    STEP_STATUS: (ctx, req) => services.journal.status(ctx, req),
    STEP_CLEAR: (ctx, req) => services.journal.clear(ctx, req),
  },
}));
