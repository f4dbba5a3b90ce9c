/**
 * http family (issue 10 §4): HTTP made by the kernel for its caller, with a real client (undici) and
 * the caller's rights checked on every hop: domain and method lists, and the SSRF rule on every
 * address actually connected to (client.ts, policy.ts; docs/protocol.md §5 HTTP).
 */
import { Op } from '../../../protocol/index.js';
import { acceptAsync, defineFamily } from '../../core/family.js';
import { HttpService } from './client.js';

export default defineFamily(({ services }) => {
  const { principals, quotas } = services;
  const http = new HttpService({
    userAgent: `clove/${services.kernel.version}`,
    onBytes: (caller, bytes) => {
      // Counted for agents that are still known (a released agent's counters are gone).
      if (caller.role === 'agent' && principals.hasRights(caller.id)) {
        principals.stats(caller.id).httpBytes += bytes;
        quotas.charge(caller.id, 'network_bytes', bytes);
      }
    },
  });
  return {
    name: 'http',
    handlers: {
      HTTP: async (ctx, req) => {
        // Every check of a real request: the caller's quota and HTTP rights (a world's passthrough too).
        const check = () => {
          // A reached network_bytes deny quota refuses the call; a response is cut where the quota ends.
          quotas.check(ctx.caller.id, 'network_bytes');
          const checked = http.prepare(ctx.caller, req);
          const left = quotas.remaining(ctx.caller.id, 'network_bytes');
          return left < checked.maxBytes ? { ...checked, maxBytes: Math.floor(left) } : checked;
        };
        // A world's member: mocks, recordings and chaos, else the real request under its own rights.
        const inWorld = services.worlds.of(ctx.caller.id) !== undefined;
        const perform = (signal: AbortSignal) =>
          inWorld
            ? services.worlds
                .http(ctx.caller, req, () => http.perform(ctx.caller, check(), signal), signal)
                .then((r) => r ?? http.perform(ctx.caller, check(), signal))
            : http.perform(ctx.caller, prepared!, signal);
        const prepared = inWorld ? undefined : check();
        if (req.async) return acceptAsync(ctx, { code: Op.HTTP, name: 'HTTP' }, req.request_id, perform);
        // The call may take up to its timeout: parked, so that the watchdog counts it as activity.
        let done = false;
        const call = perform(ctx.signal).finally(() => (done = true));
        await ctx.park(
          () => done,
          () =>
            call.then(
              () => undefined,
              () => undefined,
            ),
          (prepared?.timeoutMs ?? 600_000) + 5000,
        );
        return call;
      },
    },
    close: () => http.close(),
  };
});
