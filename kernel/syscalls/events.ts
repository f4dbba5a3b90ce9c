/**
 * Event syscalls: SUBSCRIBE, UNSUBSCRIBE, POLL_EVENTS, EMIT. Clients publish only CUSTOM events (a
 * custom name travels in `data.custom_type`), so nobody can forge a kernel lifecycle event.
 */
import { InvalidRequestError } from '../errors.js';
import { type Payload, optBool, optInt, optString, optStringArray } from '../validate.js';
import type { HandlerTable } from './index.js';
import { parkUntil } from '../ipc/waiters.js';

const MAX_WAIT_MS = 300_000;

function topics(p: Payload): string[] | undefined {
  const list = optStringArray(p, 'event_types') ?? optStringArray(p, 'events');
  if (list) return list;
  const one = optString(p, 'event');
  return one ? [one] : undefined;
}

export const events: HandlerTable = {
  SUBSCRIBE: {
    fn: (k, c, p) => {
      const t = topics(p);
      if (!t?.length) throw new InvalidRequestError('No events specified', { subscribed: [] });
      k.events.subscribe(c.principal.id, t);
      return { success: true, subscribed: t };
    },
  },
  UNSUBSCRIBE: {
    fn: (k, c, p) => {
      const all = optBool(p, 'all') ?? false;
      const t = topics(p);
      if (!all && !t?.length) throw new InvalidRequestError('No events specified');
      const removed = k.events.unsubscribe(c.principal.id, all ? null : t!);
      return { success: true, unsubscribed: removed };
    },
  },
  POLL_EVENTS: {
    fn: (k, c, p) => {
      const max = optInt(p, 'max', 0, 10_000) ?? 100;
      const wait = optBool(p, 'wait') ?? false;
      const timeout = optInt(p, 'timeout_ms', 0, MAX_WAIT_MS) ?? 30_000;
      const id = c.principal.id;
      const take = () => {
        const { events, dropped } = k.events.poll(id, max);
        return { success: true, events, count: events.length, dropped };
      };
      if (!wait || max === 0 || k.events.pending(id) > 0) return take();
      const signal = c.conn.abort.signal;
      return parkUntil(
        () => k.events.pending(id) > 0,
        (ms, sig) => k.events.wait(id, ms, sig),
        timeout,
        signal,
      ).then(take);
    },
  },
  EMIT: {
    fn: (k, c, p) => {
      const name = optString(p, 'event') ?? optString(p, 'event_type') ?? 'CUSTOM';
      const raw = p.data;
      let data: Record<string, unknown> =
        raw === undefined || raw === null
          ? {}
          : typeof raw === 'object' && !Array.isArray(raw)
            ? { ...(raw as object) }
            : { value: raw };
      if (name !== 'CUSTOM') data = { ...data, custom_type: name };
      const n = k.publish('CUSTOM', data, c.principal.id);
      return { success: true, event: name, delivered_to: n };
    },
  },
};
