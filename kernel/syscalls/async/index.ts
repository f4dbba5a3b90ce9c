/**
 * Async family: ASYNC_RESULTS (ext) hands out the replies of calls made with `async: true`, waiting in the
 * kernel when asked. Each result carries the reply as JSON text (`payload`, as the public kernel's
 * ASYNC_POLL did) and as JSON (`result`).
 */
import { defineFamily } from '../../core/family.js';

export default defineFamily(({ services }) => {
  const calls = services.async;
  return {
    name: 'async',
    handlers: {
      ASYNC_RESULTS: async (ctx, req) => {
        const id = ctx.caller.id;
        if (req.wait && req.max > 0 && calls.ready(id) === 0) {
          await ctx.park(
            () => calls.ready(id) > 0,
            (ms, signal) => calls.wait(id, ms, signal),
            req.timeout_ms,
          );
        }
        const results = calls.take(id, req.max);
        const items = results.map(
          (r) =>
            `{"request_id":${r.request_id},"opcode":${r.opcode},"opcode_name":${JSON.stringify(r.opcode_name)},"payload":${JSON.stringify(r.json)},"result":${r.json}}`,
        );
        return Buffer.from(
          `{"success":true,"results":[${items.join(',')}],"count":${items.length},"pending":${calls.pending(id)}}`,
        );
      },
    },
  };
});
