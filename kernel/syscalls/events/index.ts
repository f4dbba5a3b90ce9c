/**
 * Events family: SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT. Clients publish only CUSTOM events (a custom
 * name travels in `data.custom_type`), so nobody can forge a kernel lifecycle event.
 */
import { defineFamily, InvalidRequestError } from '../../core/family.js';

function topics(p: { event_types?: string[]; events?: string[]; event?: string }): string[] | undefined {
  return p.event_types ?? p.events ?? (p.event ? [p.event] : undefined);
}

export default defineFamily(({ services }) => {
  const { events, publish } = services;
  return {
    name: 'events',
    handlers: {
      SUBSCRIBE: ({ caller }, req) => {
        const t = topics(req);
        if (!t?.length) throw new InvalidRequestError('No events specified', { subscribed: [] });
        events.subscribe(caller.id, t);
        return { success: true, subscribed: t };
      },
      UNSUBSCRIBE: ({ caller }, req) => {
        const t = topics(req);
        if (!req.all && !t?.length) throw new InvalidRequestError('No events specified');
        return { success: true, unsubscribed: events.unsubscribe(caller.id, req.all ? null : t!) };
      },
      POLL_EVENTS: async (ctx, req) => {
        const id = ctx.caller.id;
        if (req.wait && req.max > 0 && events.pending(id) === 0) {
          await ctx.park(
            () => events.pending(id) > 0,
            (ms, signal) => events.wait(id, ms, signal),
            req.timeout_ms,
          );
        }
        const { events: list, dropped } = events.poll(id, req.max);
        return { success: true, events: list, count: list.length, dropped };
      },
      EMIT: ({ caller }, req) => {
        const name = req.event ?? req.event_type ?? 'CUSTOM';
        const raw = req.data;
        let data: Record<string, unknown> =
          raw === undefined || raw === null
            ? {}
            : typeof raw === 'object' && !Array.isArray(raw)
              ? { ...(raw as object) }
              : { value: raw };
        if (name !== 'CUSTOM') data = { ...data, custom_type: name };
        return { success: true, event: name, delivered_to: publish('CUSTOM', data, caller.id) };
      },
    },
  };
});
