import { describe, expect, it } from 'vitest';
import { EventBus } from './bus.js';
import { QueuedBytes } from '../ipc/mailboxes.js';
import { DEFAULT_BUDGETS } from '../core/budgets.js';
import { QuotaExceededError } from '../core/errors.js';

function bus(over: Partial<typeof DEFAULT_BUDGETS> = {}, total = 1 << 20) {
  const b = { ...DEFAULT_BUDGETS, ...over };
  const q = new QueuedBytes(total);
  return { bus: new EventBus(() => b, q), q };
}

describe('EventBus', () => {
  it('a queue over its bytes drops its oldest events and counts them; the publisher never fails', () => {
    const { bus: e, q } = bus({ event_queue_bytes: 1000 });
    e.subscribe(1, ['CUSTOM']);
    for (let i = 0; i < 20; i++) e.publish('CUSTOM', { pad: 'z'.repeat(200), i }, 7);
    const { events, dropped } = e.poll(1, 100);
    expect(events.length).toBeGreaterThan(0);
    expect(events.length + dropped).toBe(20);
    expect(JSON.parse(events.at(-1)!.json).data.i).toBe(19);
    expect(q.used).toBe(0);
  });

  it('custom names never reach subscribers of a kernel event type', () => {
    const { bus: e } = bus();
    e.subscribe(1, ['AGENT_EXITED']);
    e.subscribe(2, ['job.done']);
    expect(e.publish('CUSTOM', { custom_type: 'AGENT_EXITED' }, 7)).toBe(0);
    expect(e.publish('CUSTOM', { custom_type: 'job.done' }, 7)).toBe(1);
    expect(e.publish('AGENT_EXITED', { agent_id: 3 }, 0)).toBe(1);
  });

  it('subscriptions are bounded; the kernel total bounds every queue; drop frees bytes', () => {
    const { bus: e, q } = bus({ subscriptions: 3 }, 500);
    e.subscribe(1, ['a', 'b', 'c']);
    e.subscribe(1, ['a']);
    expect(() => e.subscribe(1, ['d'])).toThrow(QuotaExceededError);
    e.subscribe(2, ['CUSTOM']);
    for (let i = 0; i < 10; i++) e.publish('CUSTOM', { pad: 'w'.repeat(100) }, 7);
    expect(q.used).toBeLessThanOrEqual(500);
    e.drop(2);
    expect(q.used).toBe(0);
  });

  it('a poll stops at the byte limit but always takes one', () => {
    const { bus: e } = bus();
    e.subscribe(1, ['*']);
    for (let i = 0; i < 5; i++) e.publish('CUSTOM', { pad: 'v'.repeat(100) }, 7);
    expect(e.poll(1, 10, 1).events.length).toBe(1);
    expect(e.poll(1, 10, 400).events.length).toBe(2);
  });
});
