/**
 * Smoke test of the messaging bench's runners (no speed asserts): each system's broker and peers start,
 * exchange a few windows of messages and round trips, and stop. ci/setup.sh installs redis-server and
 * nats-server; Redis and NATS are skipped only where they are missing (a machine set up otherwise).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKernelProcess, type KernelProcess } from '../harness/kernel.js';
import { which } from '../harness/services.js';
import {
  cpuPerMessage,
  mergeRounds,
  runSystem,
  type Cell,
  type CloveSystem,
  type System,
} from './messaging.js';
import { DIST_BENCH } from './lib/child.js';
import { HALT_POLL_NS } from './lib/machine.js';
import { ACK_EVERY } from './lib/msg-peer-protocol.js';

const available: Record<Exclude<System, CloveSystem>, boolean> = {
  relay: true,
  'relay-c': which('cc') !== null,
  redis: which('redis-server') !== null,
  nats: which('nats-server') !== null,
};

// Warm-up round trips are made and not timed: each cell holds `pings` round trips per pair.
const o = { shapes: [1, 2], sizes: [64, 1024], ms: 50, warmup: 3, pings: 5 };

function check(cells: Cell[], system: System): void {
  expect(cells.map((c) => [c.size, c.pairs])).toEqual([
    [64, 1],
    [1024, 1],
    [64, 2],
    [1024, 2],
  ]);
  for (const c of cells) {
    expect(c.system).toBe(system);
    // Every message sent was acknowledged, in whole acknowledgement batches, by every pair.
    expect(c.delivered).toBeGreaterThanOrEqual(ACK_EVERY * c.pairs);
    expect(c.delivered % ACK_EVERY).toBe(0);
    expect(c.msgs_per_s).toBeGreaterThan(0);
    expect(c.rtt_us.n).toBe(o.pings * c.pairs);
    expect(c.rtt_us.p50).toBeGreaterThan(0);
    expect(c.cpu.wall_s).toBeGreaterThan(0);
    expect(c.cpu.broker_s).toBeGreaterThanOrEqual(0);
    // Each producer measured its own CPU over its round trips.
    expect(c.rtt_cpu.round_trips).toBe(c.rtt_us.n);
    expect(c.rtt_cpu.producers_us).toBeGreaterThan(0);
  }
  // CPU time was counted for the clients (clock ticks of 10 ms: summed over the cells, not per cell).
  expect(cells.reduce((a, c) => a + c.cpu.clients_s, 0)).toBeGreaterThan(0);
}

describe('mergeRounds', () => {
  it('takes the median rate of the rounds and pools their round trips', () => {
    const round = (rate: number, rtt: number[]): Cell => ({
      system: 'relay',
      size: 64,
      pairs: 1,
      delivered: rate,
      seconds: 1,
      msgs_per_s: rate,
      msgs_per_s_rounds: [rate],
      rtt_us: { n: rtt.length, min: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0 },
      rtt_samples: rtt,
      cpu: { broker_s: 0.5, clients_s: 1, wall_s: 2 },
      rtt_cpu: { producers_us: 40 * rtt.length, round_trips: rtt.length },
    });
    const [m] = mergeRounds([round(100, [1, 2]), round(300, [3]), round(200, [4, 5])]);
    expect(m.msgs_per_s).toBe(200);
    expect(m.msgs_per_s_rounds).toEqual([100, 300, 200]);
    expect(m.delivered).toBe(600);
    expect(m.rtt_us.n).toBe(5);
    expect(m.rtt_us.p50).toBe(3);
    // CPU adds up over the rounds: 4.5 s of 6 s of wall time, 1.5 s of it the broker's.
    expect(m.cpu).toEqual({ broker_s: 1.5, clients_s: 3, wall_s: 6 });
    expect(cpuPerMessage(m)).toEqual({
      broker_us: 2500,
      clients_us: 5000,
      cores: 0.75,
      producer_us_per_rtt: 40,
    });
    expect(m.rtt_cpu).toEqual({ producers_us: 200, round_trips: 5 });
  });
});

describe('messaging bench runners', () => {
  for (const system of ['relay', 'relay-c', 'redis', 'nats'] as const)
    it.skipIf(!available[system])(
      `${system}: starts, exchanges messages and round trips, stops`,
      async () => {
        check(await runSystem(system, o), system);
      },
    );

  // The TypeScript path with SEND + RECV, the fast path with SEND_BATCH + push (answered, and unanswered),
  // and the same job without the SDK.
  for (const [system, extra] of [
    ['clove', []],
    ['clove-fast-batch', ['--fast-path']],
    ['clove-fast-batch-quiet', ['--fast-path']],
    ['clove-fast-raw', ['--fast-path']],
  ] as [CloveSystem, string[]][])
    describe(system, () => {
      let kp: KernelProcess;
      beforeAll(async () => {
        kp = await startKernelProcess({ extra: ['--log-level', 'error', ...extra] });
      });
      afterAll(async () => {
        await kp?.stop();
      });

      it(`${system}: sandboxed agents exchange messages through the kernel, and are gone afterwards`, async () => {
        check(await runSystem(system, { ...o, kernel: kp }), system);
        const c = await kp.client();
        const left = (await c.list()).filter((a) => a.name.startsWith('msg-') && a.running);
        expect(left).toEqual([]);
      });
    });
});

describe('the command line: a diagnostic run with its own report and halt polling', () => {
  const bench = path.join(DIST_BENCH, 'messaging.js');
  const run = (args: string[], reports: string) =>
    spawnSync(process.execPath, [bench, ...args], {
      encoding: 'utf8',
      env: { ...process.env, CLOVE_REPORTS_DIR: reports },
      timeout: 120_000,
    });

  it('writes reports/NAME.* only, says how it was run, and puts the halt polling back', () => {
    const reports = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-msg-report-'));
    try {
      const hasHaltPoll = fs.existsSync(HALT_POLL_NS) && process.geteuid?.() === 0;
      const before = hasHaltPoll ? fs.readFileSync(HALT_POLL_NS, 'utf8').trim() : '';
      const wanted = before === '12345' ? '12346' : '12345';
      const args = [
        '--quick',
        '--systems',
        'relay',
        '--sizes',
        '64',
        '--shapes',
        '1',
        '--pings',
        '20',
        '--warmup',
        '7',
      ];
      const r = run(
        [...args, '--report', 'diag', ...(hasHaltPoll ? ['--halt-poll-ns', wanted] : [])],
        reports,
      );
      expect(r.status, r.stderr).toBe(0);
      expect(fs.readdirSync(reports).sort()).toEqual(['diag.json', 'diag.md', 'diag.svg']);
      const md = fs.readFileSync(path.join(reports, 'diag.md'), 'utf8');
      expect(md).toContain('--report=diag');
      expect(md).toContain('reports/diag.json');
      expect(md).toContain('20 per pair (pooled over the pairs), timed\nafter 7 untimed ones per pair');
      expect(
        JSON.parse(fs.readFileSync(path.join(reports, 'diag.json'), 'utf8')).results.setup,
      ).toMatchObject({
        warmup_pings_per_pair: 7,
        pings_per_pair: 20,
      });
      if (hasHaltPoll) {
        expect(md).toContain(`--halt-poll-ns=${wanted}`);
        expect(md).toContain(`guest halt polling up to ${wanted} ns`);
        expect(fs.readFileSync(HALT_POLL_NS, 'utf8').trim()).toBe(before);
      }
    } finally {
      fs.rmSync(reports, { recursive: true, force: true });
    }
  });

  it('refuses a report name with a directory, and a halt polling that is not a number', () => {
    const reports = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-msg-report-'));
    try {
      for (const name of ['../x', '..']) {
        const bad = run(['--quick', '--systems', 'relay', '--report', name], reports);
        expect(bad.status).not.toBe(0);
        expect(bad.stderr).toContain('--report: a file name without a directory');
      }
      const nan = run(['--quick', '--systems', 'relay', '--halt-poll-ns', 'lots'], reports);
      expect(nan.status).not.toBe(0);
      expect(nan.stderr).toContain('--halt-poll-ns: a number of nanoseconds');
      const cold = run(['--quick', '--systems', 'relay', '--warmup', 'some'], reports);
      expect(cold.status).not.toBe(0);
      expect(cold.stderr).toContain('--warmup: a whole number of round trips');
      expect(fs.readdirSync(reports)).toEqual([]);
    } finally {
      fs.rmSync(reports, { recursive: true, force: true });
    }
  });
});
