/**
 * The charts' memory: a fixed-size ring of samples taken from the stream's metrics messages (one a
 * second, so 600 samples ≈ 10 minutes). Rates (messages/s) are derived from the counters of two
 * successive samples; an agent that restarted or went away does not produce a negative rate.
 */
import type { AgentRow, SystemInfo } from './api.js';

export const STATE_GROUPS = {
  running: ['RUNNING'],
  paused: ['PAUSED'],
  restarting: ['STARTING', 'RESTARTING', 'BACKOFF', 'STOPPING'],
  stopped: ['STOPPED', 'FAILED'],
} as const;
export type StateGroup = keyof typeof STATE_GROUPS;

export interface Sample {
  /** seconds (uPlot's x unit) */
  t: number;
  running: number;
  paused: number;
  restarting: number;
  stopped: number;
  msgsIn: number;
  msgsOut: number;
  cpuSystem: number | null;
  cpuAgents: number;
  memAgents: number;
  memSystem: number | null;
}

export class Ring<T> {
  private buf: T[] = [];
  private head = 0;
  constructor(readonly capacity: number) {}
  push(v: T): void {
    if (this.buf.length < this.capacity) this.buf.push(v);
    else {
      this.buf[this.head] = v;
      this.head = (this.head + 1) % this.capacity;
    }
  }
  /** Oldest first. */
  toArray(): T[] {
    return this.buf.length < this.capacity
      ? this.buf.slice()
      : [...this.buf.slice(this.head), ...this.buf.slice(0, this.head)];
  }
  get size(): number {
    return this.buf.length;
  }
  clear(): void {
    this.buf = [];
    this.head = 0;
  }
}

/** Turns metrics snapshots into samples; keeps the previous counters per agent for the rates. */
export class Sampler {
  readonly ring = new Ring<Sample>(600);
  private prev = new Map<number, { in: number; out: number }>();
  private prevT = 0;

  add(tsMs: number, agents: AgentRow[], system?: SystemInfo): void {
    const t = tsMs / 1000;
    const dt = this.prevT ? t - this.prevT : 0;
    const counts: Record<StateGroup, number> = { running: 0, paused: 0, restarting: 0, stopped: 0 };
    let dIn = 0;
    let dOut = 0;
    let cpu = 0;
    let mem = 0;
    const next = new Map<number, { in: number; out: number }>();
    for (const a of agents) {
      for (const [group, states] of Object.entries(STATE_GROUPS) as [StateGroup, readonly string[]][]) {
        if (states.includes(a.state)) counts[group]++;
      }
      const cur = { in: a.messages_in ?? 0, out: a.messages_out ?? 0 };
      const before = this.prev.get(a.id);
      if (before) {
        dIn += Math.max(0, cur.in - before.in);
        dOut += Math.max(0, cur.out - before.out);
      }
      next.set(a.id, cur);
      cpu += a.cpu_percent ?? 0;
      mem += a.memory_bytes ?? 0;
    }
    this.prev = next;
    this.prevT = t;
    this.ring.push({
      t,
      ...counts,
      msgsIn: dt > 0 ? dIn / dt : 0,
      msgsOut: dt > 0 ? dOut / dt : 0,
      cpuSystem: typeof system?.cpu?.percent === 'number' ? system.cpu.percent : null,
      cpuAgents: cpu,
      memAgents: mem,
      memSystem: typeof system?.memory?.used === 'number' ? system.memory.used : null,
    });
  }

  reset(): void {
    this.ring.clear();
    this.prev.clear();
    this.prevT = 0;
  }

  /** Column arrays for uPlot: x first, then one array per key. */
  columns(keys: (keyof Sample)[]): (number | null)[][] {
    const rows = this.ring.toArray();
    return [rows.map((r) => r.t), ...keys.map((k) => rows.map((r) => r[k] as number | null))];
  }
}
