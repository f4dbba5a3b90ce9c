/** The API's event history: numbered, paged, bounded in events and in bytes. */
import { describe, expect, it } from 'vitest';
import { EventHistory } from './history.js';

describe('EventHistory', () => {
  it('numbers events from 1 and pages them after a seq', () => {
    const h = new EventHistory(10);
    for (let i = 0; i < 5; i++) h.add('CUSTOM', { i }, 7);
    const p = h.since(2, 2);
    expect(p.events.map((e) => e.seq)).toEqual([3, 4]);
    expect(p.events[0]).toMatchObject({ type: 'CUSTOM', data: { i: 2 }, source_agent_id: 7 });
    expect(p).toMatchObject({ last_seq: 5, oldest_seq: 1 });
    expect(h.since(5, 10).events).toEqual([]);
  });

  it('keeps the newest `capacity` events', () => {
    const h = new EventHistory(3);
    for (let i = 0; i < 10; i++) h.add('CUSTOM', { i }, 0);
    expect(h.since(0, 100).events.map((e) => e.seq)).toEqual([8, 9, 10]);
    expect(h.since(0, 100).oldest_seq).toBe(8);
  });

  it('keeps no more than `maxBytes`: large events push the oldest out, one too large is not kept', () => {
    const h = new EventHistory(1000, 64 * 1024);
    for (let i = 0; i < 100; i++) h.add('CUSTOM', { big: 'x'.repeat(10_000) }, 0);
    expect(h.size.bytes).toBeLessThanOrEqual(64 * 1024);
    expect(h.size.events).toBe(6);
    const huge = h.add('CUSTOM', { big: 'x'.repeat(100_000) }, 0);
    expect(huge.seq).toBe(101);
    expect(h.since(100, 10).events).toEqual([]);
    expect(h.since(0, 1000).last_seq).toBe(101);
  });
});
