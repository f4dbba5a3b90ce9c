/**
 * Events family: SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT. Clients publish only CUSTOM events (a custom
 * name travels in `data.custom_type`), so nobody can forge a kernel lifecycle event.
 */
import {
  defineFamily,
  InvalidRequestError,
  isKernelEvent,
  PermissionDeniedError,
} from '../../core/family.js';

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
        services.agents.subscriptionsChanged(caller, events.topics(caller.id));
        return { success: true, subscribed: t };
      },
      UNSUBSCRIBE: ({ caller }, req) => {
        const t = topics(req);
        if (!req.all && !t?.length) throw new InvalidRequestError('No events specified');
        const unsubscribed = events.unsubscribe(caller.id, req.all ? null : t!);
        if (unsubscribed.length) services.agents.subscriptionsChanged(caller, events.topics(caller.id));
        return { success: true, unsubscribed };
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
        const { events: list, dropped } = events.poll(id, req.max, services.kernel.maxReplyBytes);
        // Events are queued as JSON text; the reply splices them.
        return Buffer.from(
          `{"success":true,"events":[${list.map((e) => e.json).join(',')}],"count":${list.length},"dropped":${dropped}}`,
        );
      },
      EMIT: ({ caller }, req) => {
        const name = req.event ?? req.event_type ?? 'CUSTOM';
        // Nobody but the kernel publishes its event types; an operator's EMIT of one stays a custom
        // event that reaches no subscriber of the kernel's.
        if (isKernelEvent(name) && caller.role !== 'operator')
          throw new PermissionDeniedError(
            `Permission denied: ${name} is a kernel event; only the kernel publishes it`,
          );
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
