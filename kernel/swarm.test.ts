/**
 * The promise, at test scale: a swarm of real Python agents messaging each other through the kernel;
 * five are SIGKILLed; the others carry on undisturbed, the five come back with their ids and names, and
 * no message is lost — including the ones sent to them while they were dead.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { startKernel, until, type TestKernel } from '../harness/kernel.js';
import type { CloveClient } from '../sdk/typescript/client.js';

const N = 20;
const KILL = [2, 5, 9, 14, 17];
const worker = path.join(import.meta.dirname, 'testdata', 'swarm_worker.py');

interface Report {
  type: string;
  name: string;
  [k: string]: unknown;
}

let tk: TestKernel;
let collector: CloveClient;
const reports: Report[] = [];
let collecting = true;
let loop: Promise<void>;

beforeAll(async () => {
  tk = await startKernel({ mailboxSize: 100_000 });
  collector = await tk.client();
  await collector.register('collector');
  loop = (async () => {
    while (collecting) {
      const r = await collector.recv({ max: 1000, timeoutMs: 100 });
      for (const m of r.messages) reports.push(m.message as Report);
    }
  })();
});

afterAll(async () => {
  collecting = false;
  await loop?.catch(() => {});
  await tk?.stop();
});

const ups = (name: string) => reports.filter((r) => r.type === 'up' && r.name === name).length;

describe('swarm under SIGKILL', () => {
  it('keeps 15 agents undisturbed, restarts 5 with the same ids and names, and loses no message', async () => {
    const op = await tk.client();
    const spawned = new Map<string, number>();
    for (let i = 0; i < N; i++) {
      const r = await op.spawn({
        name: `w-${i}`,
        script: worker,
        args: [String(N), '100'],
        restart_policy: 'always',
      });
      spawned.set(`w-${i}`, r.id);
    }
    await until(() => [...spawned.keys()].every((n) => ups(n) === 1), 20_000, 'all workers up');
    // Every name exists now: the workers may start sending.
    for (const name of spawned.keys()) await op.send(name, 'go');
    await until(() => reports.filter((r) => r.type === 'recv').length > 100, 20_000, 'traffic');

    const before = new Map((await op.list()).map((a) => [a.name, a]));
    const victims = KILL.map((i) => `w-${i}`);
    for (const v of victims) process.kill(before.get(v)!.pid, 'SIGKILL');
    // Sent while the victims are dead: these must reach the restarted agents.
    const whileDown: [string, number][] = [];
    for (const v of victims) {
      for (let n = 1; n <= 10; n++) {
        await op.send(v, { type: 'data', src: 'operator', n });
        whileDown.push([v, n]);
      }
    }
    await until(() => victims.every((v) => ups(v) === 2), 20_000, 'victims back');
    await new Promise((r) => setTimeout(r, 2000));

    for (const name of spawned.keys()) await op.send(name, 'stop');
    // Drain: wait until no new receipts arrive for a while.
    let last = -1;
    await until(
      async () => {
        const n = reports.length;
        const stable = n === last;
        last = n;
        if (!stable) await new Promise((r) => setTimeout(r, 700));
        return stable;
      },
      30_000,
      'drain',
    );

    const after = new Map((await op.list()).map((a) => [a.name, a]));
    // Identity: the victims came back as themselves.
    for (const v of victims) {
      const a = after.get(v)!;
      expect(a.id).toBe(spawned.get(v));
      expect(a.state).toBe('RUNNING');
      expect(a.restarts).toBe(1);
      expect(a.pid).not.toBe(before.get(v)!.pid);
      expect(a.exit_signal).toBe('SIGKILL');
    }
    // Survivors: never restarted, same process, no error seen.
    const survivors = [...spawned.keys()].filter((n) => !victims.includes(n));
    expect(survivors).toHaveLength(15);
    for (const s of survivors) {
      expect(after.get(s)!.restarts).toBe(0);
      expect(after.get(s)!.pid).toBe(before.get(s)!.pid);
      expect(ups(s)).toBe(1);
    }
    expect(reports.filter((r) => r.type === 'error')).toEqual([]);

    // No message lost: everything the kernel accepted was received (at least once).
    const received = new Set<string>();
    for (const r of reports.filter((x) => x.type === 'recv')) {
      for (const [src, n] of r.got as [string, number][]) received.add(`${src}>${r.name}#${n}`);
    }
    const sent = reports.filter((r) => r.type === 'sent').map((r) => `${r.name}>${r.dst}#${r.n}`);
    expect(sent.length).toBeGreaterThan(200);
    const lost = sent.filter((k) => !received.has(k));
    expect(lost).toEqual([]);
    const lostWhileDown = whileDown.filter(([v, n]) => !received.has(`operator>${v}#${n}`));
    expect(lostWhileDown).toEqual([]);
  }, 120_000);
});
