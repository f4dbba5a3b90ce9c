/**
 * `GET /metrics`: the kernel in Prometheus' text format (prom-client, on a registry of its own, never
 * the global one). Three sources: the dispatcher's syscall observer (calls by opcode and result, latency
 * by family), the event bus (restarts, exits by reason), and, at each scrape, the API's agent rows
 * (state, CPU seconds and memory from cgroups, messages in and out, mailbox depth, quota usage), plus
 * prom-client's process metrics of the kernel itself. Labels are bounded: agent names, opcodes,
 * families, states, error codes, quota names; never message or request ids.
 *
 * Calls served by the native fast path (SEND, SEND_BATCH, RECV, BROADCAST on the reactor thread) never
 * reach the observer, so `clove_syscalls_total` counts only calls served in JavaScript; the agents'
 * message counters include the fast path (the native store counts them per principal).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { NativePollStats } from '../../native/index.js';
import { opInfo, Op, SCHEMA_DEFS } from '../../protocol/index.js';
import type { SyscallRecord } from '../core/context.js';
import type { AgentRow, EventTap } from './api.js';

export interface PrometheusDeps {
  /** The agents' rows (GET /api/v1/agents), read once per scrape. */
  rows(): Promise<AgentRow[]>;
  observe(fn: (r: SyscallRecord) => void): void;
  tapEvents(fn: EventTap): () => void;
  /** The principal whose calls are not counted: the API's own reads (its scrapes would count themselves). */
  ignore?: number;
  /** With the fast path on: its reactor's polling counters, read at each scrape. */
  fastPathPoll?: () => NativePollStats;
}

export interface Prometheus {
  registry: Registry;
  expose(): Promise<{ contentType: string; text: string }>;
  close(): void;
}

/** The agent states of the contract (every state is exposed, 0 when no agent is in it). */
const AGENT_STATES: string[] =
  (SCHEMA_DEFS.$defs as Record<string, { enum?: string[] }>).AgentState.enum ?? [];

const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5];

export function createPrometheus(d: PrometheusDeps): Prometheus {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry, prefix: 'clove_kernel_' });
  let rows: AgentRow[] = [];
  // The reactor's polling counters, read once per scrape (as the rows) for its three series.
  let polled: NativePollStats | undefined;
  // Counters of absolute per-agent values: set at each scrape (reset, then inc by the value), so an
  // agent that is gone leaves the exposition with its series.
  const absolute = <T extends string>(
    c: Counter<T>,
    each: (r: AgentRow) => [Record<T, string>, number][],
  ) => {
    c.reset();
    for (const r of rows) for (const [labels, v] of each(r)) if (v > 0) c.inc(labels, v);
  };

  new Gauge({
    name: 'clove_agents',
    help: 'Agents by state',
    labelNames: ['state'],
    registers,
    collect() {
      this.reset();
      for (const s of AGENT_STATES) this.set({ state: s }, 0);
      for (const r of rows) this.inc({ state: r.state });
    },
  });
  const restarts = new Counter({
    name: 'clove_agent_restarts_total',
    help: 'Agent restarts (AGENT_RESTARTING events), by agent',
    labelNames: ['agent'],
    registers,
  });
  const exits = new Counter({
    name: 'clove_agent_exits_total',
    help: 'Agent process exits (AGENT_EXITED events) by reason (exit, oom, pids, …) and outcome (ok, error, signal)',
    labelNames: ['reason', 'outcome'],
    registers,
  });
  const msgIn = new Counter({
    name: 'clove_agent_messages_received_total',
    help: 'Messages an agent took from its mailbox (RECV, push), fast path included',
    labelNames: ['agent'],
    registers,
    collect() {
      absolute(this, (r) => [[{ agent: r.name }, r.messages_in]]);
    },
  });
  const msgOut = new Counter({
    name: 'clove_agent_messages_sent_total',
    help: 'Messages an agent sent (SEND, SEND_BATCH, BROADCAST), fast path included',
    labelNames: ['agent'],
    registers,
    collect() {
      absolute(this, (r) => [[{ agent: r.name }, r.messages_out]]);
    },
  });
  new Counter({
    name: 'clove_agent_syscalls_total',
    help: 'Syscalls an agent made, fast path included (the native store counts the calls the reactor served)',
    labelNames: ['agent'],
    registers,
    collect() {
      absolute(this, (r) => [[{ agent: r.name }, r.syscalls]]);
    },
  });
  new Gauge({
    name: 'clove_agent_mailbox_depth',
    help: "Messages waiting in an agent's mailbox",
    labelNames: ['agent'],
    registers,
    collect() {
      this.reset();
      for (const r of rows) this.set({ agent: r.name }, r.mailbox_depth);
    },
  });
  new Counter({
    name: 'clove_agent_cpu_seconds_total',
    help: "CPU time of an agent's current process tree (its cgroup, else its process)",
    labelNames: ['agent'],
    registers,
    collect() {
      absolute(this, (r) => [[{ agent: r.name }, r.cpu_seconds]]);
    },
  });
  new Gauge({
    name: 'clove_agent_memory_bytes',
    help: "Memory of an agent (its cgroup's memory.current, else its process' RSS)",
    labelNames: ['agent'],
    registers,
    collect() {
      this.reset();
      for (const r of rows) this.set({ agent: r.name }, r.memory_bytes);
    },
  });
  new Gauge({
    name: 'clove_agent_quota_used',
    help: "An agent's usage of each quota, in the quota's unit (docs/protocol.md §4b)",
    labelNames: ['agent', 'quota'],
    registers,
    collect() {
      this.reset();
      for (const r of rows)
        for (const [q, m] of Object.entries(r.quotas)) this.set({ agent: r.name, quota: q }, m.used);
    },
  });
  new Gauge({
    name: 'clove_agent_quota_limit',
    help: "An agent's limit of each quota that has one",
    labelNames: ['agent', 'quota'],
    registers,
    collect() {
      this.reset();
      for (const r of rows)
        for (const [q, m] of Object.entries(r.quotas))
          if (m.limit !== undefined) this.set({ agent: r.name, quota: q }, m.limit);
    },
  });
  if (d.fastPathPoll) {
    new Counter({
      name: 'clove_fast_path_polls_total',
      help: "Waits of the fast path's reactor that polled before sleeping, by whether the poll found work",
      labelNames: ['result'],
      registers,
      collect() {
        this.reset();
        if (!polled) return;
        this.inc({ result: 'caught' }, polled.caught);
        this.inc({ result: 'missed' }, polled.polls - polled.caught);
      },
    });
    new Counter({
      name: 'clove_fast_path_polls_skipped_total',
      help: 'Waits that did not poll: the machine was busy, or recent polls mostly found nothing',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        if (!polled) return;
        this.inc({ reason: 'busy' }, polled.skipped);
        this.inc({ reason: 'backed_off' }, polled.backedOff);
      },
    });
    new Counter({
      name: 'clove_fast_path_poll_seconds_total',
      help: "Time the fast path's reactor spent polling (CPU time it used while it could have slept)",
      registers,
      collect() {
        this.reset();
        if (polled) this.inc(polled.polledUs / 1e6);
      },
    });
  }
  const syscalls = new Counter({
    name: 'clove_syscalls_total',
    help: 'Syscalls served in JavaScript, by opcode and result (ok or the error code)',
    labelNames: ['op', 'result'],
    registers,
  });
  const latency = new Histogram({
    name: 'clove_syscall_duration_seconds',
    help: 'Time from dispatch to reply of syscalls served in JavaScript, by family',
    labelNames: ['family'],
    buckets: LATENCY_BUCKETS,
    registers,
  });
  void msgIn;
  void msgOut;

  d.observe((r) => {
    if (r.caller.id === d.ignore) return;
    const result = r.success ? 'ok' : String((r.reply as { code?: unknown })?.code ?? 'error');
    syscalls.inc({ op: r.op, result });
    latency.observe({ family: opInfo(Op[r.op])?.family ?? 'unknown' }, r.durationUs / 1e6);
  });
  const untap = d.tapEvents((type, data) => {
    if (type === 'AGENT_RESTARTING') restarts.inc({ agent: String(data.agent_name ?? '') });
    else if (type === 'AGENT_EXITED') {
      const outcome = data.signal ? 'signal' : data.exit_code === 0 ? 'ok' : 'error';
      exits.inc({ reason: String(data.reason ?? 'unknown'), outcome });
    }
  });

  return {
    registry,
    async expose() {
      rows = await d.rows();
      polled = d.fastPathPoll?.();
      try {
        return { contentType: registry.contentType, text: await registry.metrics() };
      } finally {
        rows = [];
        polled = undefined;
      }
    },
    close: () => untap(),
  };
}
