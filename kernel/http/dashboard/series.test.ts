/**
 * The dashboard's chart memory (src/series.ts) and display helpers (src/format.ts), which run in the
 * browser but need no DOM: the ring keeps the newest samples in order, rates come from counter changes
 * and never go negative when an agent restarts (its counters start again) or goes away.
 */
import { describe, expect, it } from 'vitest';
import { Ring, Sampler } from './src/series.js';
import { bytes, worstQuota } from './src/format.js';
import type { AgentRow } from './src/api.js';

const agent = (id: number, state: string, msgsIn: number, extra: Partial<AgentRow> = {}): AgentRow => ({
  id,
  name: `a${id}`,
  state,
  pid: 100 + id,
  restarts: 0,
  messages_in: msgsIn,
  messages_out: 0,
  cpu_percent: 10,
  memory_bytes: 1024,
  ...extra,
});

describe('Ring', () => {
  it('keeps the newest `capacity` items, oldest first', () => {
    const r = new Ring<number>(3);
    for (let i = 1; i <= 5; i++) r.push(i);
    expect(r.toArray()).toEqual([3, 4, 5]);
    expect(r.size).toBe(3);
    r.clear();
    expect(r.toArray()).toEqual([]);
  });
});

describe('Sampler', () => {
  it('counts agents by state group and sums CPU and memory', () => {
    const s = new Sampler();
    s.add(
      1000,
      [agent(1, 'RUNNING', 0), agent(2, 'BACKOFF', 0), agent(3, 'PAUSED', 0), agent(4, 'FAILED', 0)],
      {
        cpu: { percent: 50 },
        memory: { used: 4096 },
      },
    );
    const [row] = s.ring.toArray();
    expect(row).toMatchObject({ running: 1, restarting: 1, paused: 1, stopped: 1, cpuAgents: 40 });
    expect(row).toMatchObject({ memAgents: 4096, cpuSystem: 50, memSystem: 4096 });
  });

  it('derives messages/s from two samples; a restarted agent (counters back to 0) gives 0, not a negative rate', () => {
    const s = new Sampler();
    s.add(1000, [agent(1, 'RUNNING', 10), agent(2, 'RUNNING', 5)]);
    s.add(3000, [agent(1, 'RUNNING', 30), agent(2, 'RUNNING', 0)]);
    s.add(4000, [agent(1, 'RUNNING', 30)]);
    const rates = s.ring.toArray().map((r) => r.msgsIn);
    expect(rates).toEqual([0, 10, 0]);
    const [x, y] = s.columns(['msgsIn']);
    expect(x).toEqual([1, 3, 4]);
    expect(y).toEqual([0, 10, 0]);
  });
});

describe('format', () => {
  it('worstQuota picks the quota nearest its limit and ignores quotas without one', () => {
    const a = agent(1, 'RUNNING', 0, {
      quotas: {
        memory: { used: 50, limit: 100 },
        cpu_time: { used: 90, limit: 100 },
        llm_calls: { used: 7 },
      },
    });
    expect(worstQuota(a)).toMatchObject({ name: 'cpu_time', fraction: 0.9 });
    expect(worstQuota(agent(2, 'RUNNING', 0, { quotas: { llm_calls: { used: 3 } } }))).toBeNull();
  });

  it('bytes', () => {
    expect(bytes(512)).toBe('512 B');
    expect(bytes(1536)).toBe('1.5 KiB');
    expect(bytes(null)).toBe('—');
  });
});
