import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExitInfo } from '../sandbox/types.js';
import { cgroupMetrics, resolveCgroupPath } from './cgroup.js';
import { processMetrics } from './process.js';
import { createSystemSampler } from './system.js';
import { nativeAvailable } from '../sandbox/native.js';
import { NativeSpawner, type SandboxedAgent } from '../sandbox/native-spawner.js';
import { sleep, spec, workDir } from '../sandbox/testutil.js';

const isRoot = process.geteuid?.() === 0;
const run = (isRoot && nativeAvailable()) || process.env.CI === 'true' ? describe : describe.skip;

const allNumbers = (o: unknown, where = 'metrics'): void => {
  if (Array.isArray(o)) o.forEach((v, i) => allNumbers(v, `${where}[${i}]`));
  else if (o && typeof o === 'object') for (const [k, v] of Object.entries(o)) allNumbers(v, `${where}.${k}`);
  else if (typeof o !== 'string' && typeof o !== 'boolean')
    expect(Number.isFinite(o), `${where} = ${String(o)}`).toBe(true);
};

describe('system and process metrics', () => {
  it('METRICS_SYSTEM object has every field as a finite number', async () => {
    const sample = createSystemSampler();
    await sleep(50);
    const m = sample();
    allNumbers(m);
    expect(m.cpu.count).toBeGreaterThan(0);
    expect(m.cpu.per_core.length).toBe(m.cpu.count);
    expect(m.memory.total).toBeGreaterThan(m.memory.available);
    expect(m.cpu.load_avg).toHaveLength(3);
  });

  it('per-process object of this process; undefined for a missing pid', () => {
    const m = processMetrics(process.pid)!;
    allNumbers(m);
    expect(m.pid).toBe(process.pid);
    expect(m.memory.rss).toBeGreaterThan(0);
    expect(m.threads).toBeGreaterThan(0);
    expect(m.fds).toBeGreaterThan(2);
    expect(m.state).toMatch(/^[RSDZT?]$/);
    expect(processMetrics(2 ** 30)).toBeUndefined();
    expect(processMetrics(-1)).toBeUndefined();
  });
});

run('cgroup metrics', () => {
  let spawner: NativeSpawner;
  let dir: string;
  let fd: number;
  beforeAll(async () => {
    dir = workDir('clove-metrics-');
    fd = fs.openSync(path.join(dir, 'log'), 'a');
    spawner = new NativeSpawner({ require: true, warn: () => undefined });
    await spawner.init();
  });
  afterAll(async () => {
    await spawner.close();
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads the agent cgroup object (v1/v2) with the applied limits', async () => {
    const a = (await spawner.spawn(
      spec({
        agentId: 77,
        name: 'met',
        argv: ['/bin/sh', '-c', 'sleep 30'],
        cwd: dir,
        logFd: fd,
        limits: { memory: 96 << 20, max_pids: 10, cpu_quota: 50_000 },
      }),
    )) as SandboxedAgent;
    try {
      const m = cgroupMetrics(spawner.cgroupRoot!, 'met_77')!;
      expect(m).toBeDefined();
      allNumbers(m);
      expect(m.valid).toBe(true);
      expect(m.cgroup_path).toBe('clove/met_77');
      expect(m.memory.max).toBe(96 << 20);
      expect(m.memory.current).toBeGreaterThan(0);
      expect(m.pids.max).toBe(11); // 10 for the agent + clove-init
      expect(m.pids.current).toBeGreaterThanOrEqual(2);
      expect(m.cpu.quota_usec).toBe(50_000);
      expect(m.cpu.period_usec).toBe(100_000);
      expect(cgroupMetrics(spawner.cgroupRoot!, 'clove/met_77')!.memory.max).toBe(96 << 20);
      expect(cgroupMetrics(spawner.cgroupRoot!, 'nope_1')).toBeUndefined();
    } finally {
      const done = new Promise<ExitInfo>((r) => a.onExit(r));
      a.signal('SIGKILL');
      await done;
    }
  });

  it('rejects client paths that try to leave the kernel cgroup tree', () => {
    const root = spawner.cgroupRoot!;
    for (const bad of [
      '../x',
      'a/../../b',
      '/sys/fs/cgroup/memory',
      '..',
      '.',
      'a//b',
      '',
      'x\0y',
      'clove/../..',
    ]) {
      expect(() => resolveCgroupPath(root, bad), bad).toThrow(
        expect.objectContaining({ name: 'CgroupPathError', code: 'ECGPATH' }),
      );
    }
  });
});
