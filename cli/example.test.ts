/**
 * The README's main job and its clove.yaml, run as a user would: `clove up -d` on
 * examples/swarm/clove.yaml (the file `npm start` runs), a round of the coordinator's task completes
 * with the right count, a worker SIGKILLed mid-run changes nothing but time, `down` leaves nothing.
 * And the clove.yaml shown in the README loads.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, tempDir, until } from '../harness/kernel.js';
import { loadCompose } from './compose/index.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');
const example = path.join(REPO_ROOT, 'examples', 'swarm');
// π(200000): what every round of the example must report.
const PRIMES = 17984;

function clove(
  sock: string,
  data: string,
  ...args: string[]
): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, '--socket', sock, '--data-dir', data, ...args],
      { cwd: example, timeout: 180_000 },
      (e, out, err) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

const dir = tempDir('clvx');
const sock = path.join(dir, 'k.sock');
const data = path.join(dir, 'data');
afterAll(async () => {
  await clove(sock, data, 'down', '-t', '2');
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the example swarm (npm start)', () => {
  it('rounds complete with the right count, also across a SIGKILLed worker; down leaves no process', async () => {
    const up = await clove(sock, data, 'up', '-d');
    expect(up.code, up.err).toBe(0);
    const ps = JSON.parse((await clove(sock, data, 'ps', '--json')).out) as {
      name: string;
      state: string;
      pid: number;
    }[];
    expect(ps.map((a) => a.name).sort()).toEqual([
      'coordinator',
      'workers-1',
      'workers-2',
      'workers-3',
      'workers-4',
    ]);
    expect(ps.every((a) => a.state === 'RUNNING')).toBe(true);
    const coordLog = path.join(data, 'logs', 'coordinator.log');
    const rounds = () =>
      (fs.existsSync(coordLog) ? fs.readFileSync(coordLog, 'utf8') : '')
        .split('\n')
        .filter((l) => /^round \d+:/.test(l));
    await until(() => rounds().length >= 1, 60_000, 'a first round');
    expect(rounds()[0]).toContain(`${PRIMES} primes below 200000`);
    // Equally idle workers take turns: the 8 subtasks of a round spread over all 4.
    expect(rounds()[0]).toContain('4 workers helped');

    // SIGKILL every worker but one, by pid: they come back, and the rounds go on with the right count.
    const seen = rounds().length;
    for (const w of ps.filter((a) => /^workers-[234]$/.test(a.name))) process.kill(w.pid, 'SIGKILL');
    await until(() => rounds().length >= seen + 2, 90_000, 'two more rounds');
    for (const r of rounds()) expect(r).toMatch(new RegExp(`^round \\d+: ${PRIMES} primes below 200000`));
    const after = JSON.parse((await clove(sock, data, 'ps', '--json')).out) as {
      name: string;
      restarts: number;
    }[];
    expect(
      after
        .filter((a) => a.restarts > 0)
        .map((a) => a.name)
        .sort(),
    ).toEqual(['workers-2', 'workers-3', 'workers-4']);

    const pids = after.map((a) => (a as unknown as { pid: number }).pid);
    const down = await clove(sock, data, 'down');
    expect(down.code, down.err).toBe(0);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    await until(() => !pids.some(alive), 10_000, 'the agents gone');
    expect(fs.existsSync(sock)).toBe(false);
  });
});

describe("the README's clove.yaml", () => {
  it('loads: services in start order, replicas, quotas per replica and per service', () => {
    const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Describe a swarm'));
    const text = /```yaml\n([\s\S]*?)```/.exec(section)![1];
    const d = tempDir('clvr');
    fs.writeFileSync(path.join(d, 'clove.yaml'), text);
    for (const f of ['coordinator.py', 'worker.py']) fs.writeFileSync(path.join(d, f), 'pass\n');
    const p = loadCompose(path.join(d, 'clove.yaml'));
    expect(p.name).toBe('research');
    expect(p.services.map((s) => [s.name, s.replicas])).toEqual([
      ['workers', 4],
      ['coordinator', 1],
    ]);
    const workers = p.services[0];
    expect(workers.spawn.limits).toMatchObject({ memory: 128 << 20, max_pids: 16 });
    expect(workers.spawn.quotas).toEqual({
      llm_tokens: { limit: 20000 },
      exec_count: { limit: 100, policy: 'deny' },
    });
    expect(workers.serviceQuotas).toEqual({ cpu_time: { limit: 3_600_000, policy: 'pause' } });
    fs.rmSync(d, { recursive: true, force: true });
  });
});
