import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Supervisor, DEFAULT_POLICY, type AgentDef, type RestartPolicy } from './supervisor.js';
import { AgentLogs } from './logs.js';
import type { AgentProcess, ExitInfo, SpawnSpec, Spawner } from '../sandbox/types.js';

/** A spawner whose "processes" the test ends by hand: for exact control over timing. */
class FakeSpawner implements Spawner {
  readonly kind = 'fake';
  procs: {
    spec: SpawnSpec;
    signals: string[];
    exit: (i: ExitInfo) => void;
    /** Its program ended, its sandbox not yet torn down (onEnded; only with `withEnded`). */
    end: (i: ExitInfo) => void;
  }[] = [];
  failNext = 0;
  ignoreSignals = false;
  /** Processes have onEnded, like the native sandbox's (else they only have onExit). */
  withEnded = false;
  private pid = 1000;

  async spawn(spec: SpawnSpec): Promise<AgentProcess> {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('exec failed');
    }
    const exits: ((i: ExitInfo) => void)[] = [];
    const ends: ((i: ExitInfo) => void)[] = [];
    const rec = {
      spec,
      signals: [] as string[],
      exit: (i: ExitInfo) => exits.splice(0).forEach((f) => f(i)),
      end: (i: ExitInfo) => ends.splice(0).forEach((f) => f(i)),
    };
    this.procs.push(rec);
    return {
      ...(this.withEnded ? { onEnded: (f: (i: ExitInfo) => void) => void ends.push(f) } : {}),
      pid: this.pid++,
      isolation: {
        fully_isolated: false,
        namespaces: { pid: false, net: false, mnt: false, uts: false },
        cgroups: { available: false, memory_limit: false, cpu_quota: false, pids_limit: false },
      },
      signal: (s) => {
        rec.signals.push(s);
        if (!this.ignoreSignals && (s === 'SIGTERM' || s === 'SIGKILL'))
          queueMicrotask(() => rec.exit({ code: null, signal: s, reason: 'signal' }));
      },
      onExit: (f) => void exits.push(f),
    };
  }
  last() {
    return this.procs[this.procs.length - 1];
  }
}

let dir: string;
let logs: AgentLogs;
let events: { type: string; data: Record<string, unknown> }[];
let released: number[];
let sup: Supervisor;
let spawner: FakeSpawner;

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clv-sup'));
  logs = new AgentLogs({ dir, maxBytes: 1 << 20, keep: 1 });
  events = [];
  released = [];
  spawner = new FakeSpawner();
  sup = new Supervisor(logs, {
    event: (type, data) => events.push({ type, data }),
    release: (a) => released.push(a.def.id),
    exited: () => {},
    log: () => {},
  });
});

afterEach(() => {
  vi.useRealTimers();
  logs.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function def(policy: Partial<RestartPolicy> = {}): AgentDef {
  return {
    id: 7,
    name: 'a7',
    identity: 'a7#1',
    argv: ['/bin/true'],
    env: {},
    cwd: '/',
    sandboxed: false,
    network: false,
    limits: {},
    parentId: 1,
    account: null,
    policy: { ...DEFAULT_POLICY, ...policy },
    spawner,
    labels: {},
  };
}

const crash = (code = 1): ExitInfo => ({ code, signal: null, reason: 'exit' });
const flush = async () => {
  for (let i = 0; i < 5; i++) await Promise.resolve();
  await vi.advanceTimersByTimeAsync(0);
};

describe('Supervisor', () => {
  it('restarts at once an agent that was up past min_uptime, then backs off exponentially up to the cap', async () => {
    const a = await sup.create(
      def({
        policy: 'always',
        backoffInitialMs: 100,
        backoffMultiplier: 2,
        backoffMaxMs: 300,
        maxRestarts: 100,
        minUptimeMs: 1000,
      }),
    );
    await vi.advanceTimersByTimeAsync(1500); // stable: failure count reset
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) {
      spawner.last().exit(crash());
      await flush();
      delays.push(events.filter((e) => e.type === 'AGENT_RESTARTING').at(-1)!.data.delay_ms as number);
      await vi.advanceTimersByTimeAsync(delays[i]);
      await flush();
      expect(a.state).toBe('RUNNING');
    }
    expect(delays).toEqual([0, 100, 200, 300, 300]);
    expect(a.restarts).toBe(5);
    expect(spawner.procs.every((p) => p.spec.agentId === 7 && p.spec.name === 'a7')).toBe(true);
  });

  it('RESTART stops the process and starts it again whatever the policy, counted and announced', async () => {
    const a = await sup.create(def({ policy: 'never' }));
    const first = spawner.last();
    sup.restart(7, 1);
    expect(a.state).toBe('RESTARTING');
    const started = sup.waitStarted(7);
    await flush();
    expect(first.signals).toEqual(['SIGTERM']);
    await started;
    expect(a.state).toBe('RUNNING');
    expect(spawner.procs.length).toBe(2);
    expect(a.restarts).toBe(1);
    const types = events.map((e) => e.type);
    expect(types.slice(-3)).toEqual(['AGENT_EXITED', 'AGENT_RESTARTING', 'AGENT_SPAWNED']);
    expect(events.find((e) => e.type === 'AGENT_RESTARTING')!.data.requested).toBe(true);
    expect(released).toEqual([]);
  });

  it('RESTART of an agent that ignores SIGTERM SIGKILLs it after the grace period; KILL during it wins', async () => {
    spawner.ignoreSignals = true;
    const a = await sup.create(def({ policy: 'always' }));
    sup.restart(7, 1, 50);
    await vi.advanceTimersByTimeAsync(60);
    expect(spawner.last().signals).toEqual(['SIGTERM', 'SIGKILL']);
    spawner.last().exit({ code: null, signal: 'SIGKILL', reason: 'signal' });
    await flush();
    expect(a.state).toBe('RUNNING');
    sup.restart(7, 1, 50);
    sup.kill(7, 1);
    spawner.last().exit({ code: null, signal: 'SIGTERM', reason: 'signal' });
    await flush();
    expect(a.state).toBe('STOPPED');
    expect(spawner.procs.length).toBe(2);
  });

  it('resets the failure count by a timer after sustained uptime', async () => {
    const a = await sup.create(def({ policy: 'always', minUptimeMs: 1000, maxRestarts: 100 }));
    spawner.last().exit(crash());
    await flush();
    expect(a.consecutiveFailures).toBe(1);
    await vi.advanceTimersByTimeAsync(999);
    expect(a.consecutiveFailures).toBe(1);
    await vi.advanceTimersByTimeAsync(2);
    expect(a.consecutiveFailures).toBe(0);
    expect(a.timers.uptime).toBeUndefined(); // a fired timer is not kept
  });

  it('escalates when the restart intensity is exceeded, and stops restarting', async () => {
    const a = await sup.create(
      def({ policy: 'on-failure', maxRestarts: 2, windowMs: 10_000, backoffInitialMs: 1 }),
    );
    for (let i = 0; i < 3; i++) {
      spawner.last().exit(crash());
      await flush();
      await vi.advanceTimersByTimeAsync(10);
      await flush();
    }
    expect(a.state).toBe('FAILED');
    expect(spawner.procs.length).toBe(3);
    expect(events.map((e) => e.type)).toContain('AGENT_ESCALATED');
    expect(released).toEqual([7]);
    expect(sup.get(7)).toBeDefined(); // still listed, as FAILED
    sup.kill(7, 1);
    expect(sup.get(7)).toBeUndefined();
  });

  it('on-failure does not restart a clean exit; never does not restart a crash', async () => {
    const a = await sup.create(def({ policy: 'on-failure' }));
    spawner.last().exit(crash(0));
    await flush();
    expect(a.state).toBe('STOPPED');
    const b = await sup.create({ ...def({ policy: 'never' }), id: 8, name: 'a8' });
    spawner.last().exit(crash(3));
    await flush();
    expect(b.state).toBe('STOPPED');
    expect(events.filter((e) => e.type === 'AGENT_EXITED').map((e) => e.data.exit_code)).toEqual([0, 3]);
  });

  it('on-failure restarts an agent killed by a signal', async () => {
    const a = await sup.create(def({ policy: 'on-failure' }));
    spawner.last().exit({ code: null, signal: 'SIGSEGV', reason: 'signal' });
    await flush();
    expect(a.state).toBe('RUNNING');
    expect(events.find((e) => e.type === 'AGENT_EXITED')!.data.signal).toBe('SIGSEGV');
  });

  it('KILL sends SIGTERM, then SIGKILL after the grace period, and never restarts', async () => {
    const a = await sup.create(def({ policy: 'always' }));
    const p = spawner.last();
    spawner.ignoreSignals = true; // an agent that ignores SIGTERM
    sup.kill(7, 1, 500);
    expect(a.state).toBe('STOPPING');
    await vi.advanceTimersByTimeAsync(499);
    expect(a.state).toBe('STOPPING');
    await vi.advanceTimersByTimeAsync(1);
    expect(p.signals).toEqual(['SIGTERM', 'SIGKILL']);
    p.exit({ code: null, signal: 'SIGKILL', reason: 'signal' });
    await flush();
    expect(a.state).toBe('STOPPED');
    expect(spawner.procs.length).toBe(1);
  });

  it('KILL works on a paused agent (SIGTERM and SIGCONT)', async () => {
    const a = await sup.create(def());
    sup.pause(7);
    expect(a.state).toBe('PAUSED');
    expect(() => sup.pause(7)).toThrow(/PAUSED/);
    sup.kill(7, 1);
    expect(spawner.last().signals).toEqual(['SIGSTOP', 'SIGTERM', 'SIGCONT']);
    await flush();
    expect(a.state).toBe('STOPPED');
  });

  it('a KILL during backoff cancels the restart', async () => {
    const a = await sup.create(def({ policy: 'always', backoffInitialMs: 1000 }));
    spawner.last().exit(crash());
    await flush();
    spawner.last().exit(crash());
    await flush();
    expect(a.state).toBe('BACKOFF');
    sup.kill(7, 1);
    expect(a.state).toBe('STOPPED');
    await vi.advanceTimersByTimeAsync(5000);
    expect(spawner.procs.length).toBe(2);
  });

  it('a failed restart counts as a failure and is retried with backoff', async () => {
    const a = await sup.create(def({ policy: 'always', backoffInitialMs: 50, maxRestarts: 10 }));
    spawner.failNext = 1;
    spawner.last().exit(crash());
    await flush();
    await flush();
    expect(a.state).toBe('BACKOFF');
    await vi.advanceTimersByTimeAsync(50);
    await flush();
    expect(a.state).toBe('RUNNING');
  });

  it('the watchdog kills an agent that stops sending heartbeats', async () => {
    const a = await sup.create(def({ policy: 'always', watchdogMs: 1000, maxRestarts: 10 }));
    await vi.advanceTimersByTimeAsync(600);
    sup.heartbeat(7);
    await vi.advanceTimersByTimeAsync(600);
    expect(spawner.procs.length).toBe(1);
    await vi.advanceTimersByTimeAsync(500);
    await flush();
    expect(spawner.procs[0].signals).toContain('SIGKILL');
    expect(a.state).toBe('RUNNING');
    expect(spawner.procs.length).toBe(2);
  });

  it('a first start that fails is an error, not a restart loop', async () => {
    spawner.failNext = 1;
    await expect(sup.create(def({ policy: 'always' }))).rejects.toThrow(/exec failed/);
    expect(sup.get(7)).toBeUndefined();
  });

  it('restarts when the program ended, before its sandbox is torn down, into a cgroup leaf of its own', async () => {
    spawner.withEnded = true;
    const a = await sup.create(def({ policy: 'always', minUptimeMs: 1000 }));
    expect(spawner.last().spec.instance).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1500);
    const first = spawner.last();
    first.end(crash());
    await flush();
    // The exit is handled and the new process started while the old sandbox is still going.
    expect(spawner.procs).toHaveLength(2);
    expect(spawner.last().spec.instance).toBe('r1');
    expect(a.state).toBe('RUNNING');
    expect(a.pid).toBe(1001);
    first.exit(crash()); // the teardown's end: nothing more happens
    await flush();
    expect(spawner.procs).toHaveLength(2);
    expect(events.filter((e) => e.type === 'AGENT_EXITED')).toHaveLength(1);
    expect(a.state).toBe('RUNNING');
    // Nothing left tearing down: the next start takes the agent's own leaf again.
    await vi.advanceTimersByTimeAsync(1500);
    spawner.last().exit(crash());
    await flush();
    expect(spawner.procs).toHaveLength(3);
    expect(spawner.last().spec.instance).toBeUndefined();
  });

  it('an end that does not restart (policy, KILL) waits for the teardown', async () => {
    spawner.withEnded = true;
    const a = await sup.create(def({ policy: 'never' }));
    spawner.last().end(crash());
    await flush();
    expect(a.state).toBe('RUNNING');
    spawner.last().exit(crash());
    await flush();
    expect(a.state).toBe('STOPPED');

    spawner.ignoreSignals = true;
    const b = await sup.create({ ...def({ policy: 'always' }), id: 8, name: 'a8', identity: 'a8#1' });
    sup.kill(b.def.id, 1);
    spawner.last().end({ code: null, signal: 'SIGTERM', reason: 'signal' });
    await flush();
    expect(b.state).toBe('STOPPING');
    spawner.last().exit({ code: null, signal: 'SIGTERM', reason: 'signal' });
    await flush();
    expect(b.state).toBe('STOPPED');
    expect(spawner.procs).toHaveLength(2);
  });

  it('RESTART asked for: the new process starts when the old program ended', async () => {
    spawner.withEnded = true;
    spawner.ignoreSignals = true;
    const a = await sup.create(def({ policy: 'never' }));
    sup.restart(a.def.id, 1);
    spawner.last().end({ code: null, signal: 'SIGTERM', reason: 'signal' });
    await flush();
    expect(spawner.procs).toHaveLength(2);
    expect(spawner.last().spec.instance).toBe('r1');
    expect(a.state).toBe('RUNNING');
  });

  it('named(): the oldest listed agent of a name, kept in step with the table', async () => {
    spawner.failNext = 1;
    await expect(sup.create(def())).rejects.toThrow(/exec failed/);
    expect(sup.named('a7')).toBeUndefined(); // a failed first start leaves no name behind
    const a = await sup.create(
      def({ policy: 'on-failure', maxRestarts: 0, windowMs: 10_000, backoffInitialMs: 1 }),
    );
    spawner.last().exit(crash());
    await flush();
    expect(a.state).toBe('FAILED');
    expect(sup.named('a7')).toBe(a); // escalated: still listed, still found
    // Its replacement under the same name (an operator's SPAWN kills the escalated one right after).
    const b = await sup.create({ ...def(), id: 8 });
    expect(sup.named('a7')).toBe(a);
    sup.kill(7, 1);
    expect(sup.named('a7')).toBe(b);
    sup.kill(8, 1);
    await flush();
    expect(b.state).toBe('STOPPED');
    expect(sup.get(8)).toBeUndefined();
    expect(sup.named('a7')).toBeUndefined();
    expect(sup.list()).toEqual([]);
  });
});
