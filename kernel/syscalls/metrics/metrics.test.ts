import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import path from 'node:path';
import { startKernel, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';
import { Op } from '../../../protocol/index.js';

// Metrics objects are deep JSON: the test walks them freely.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

const probe = path.join(import.meta.dirname, '..', '..', 'testdata', 'probe_agent.py');
let tk: TestKernel;
let op: CloveClient;
beforeAll(async () => {
  tk = await startKernel();
  op = await tk.client();
});
afterAll(async () => tk?.stop());

function allNumbers(o: unknown, where = ''): string[] {
  if (typeof o === 'number') return [];
  if (o && typeof o === 'object')
    return Object.entries(o).flatMap(([k, v]) => allNumbers(v, `${where}.${k}`));
  if (Array.isArray(o)) return o.flatMap((v, i) => allNumbers(v, `${where}[${i}]`));
  return [where];
}

describe('metrics syscalls', () => {
  it('METRICS_SYSTEM: every field a number', async () => {
    const r = await op.call<{ metrics: Record<string, unknown> }>(Op.METRICS_SYSTEM, {});
    expect(allNumbers(r.metrics)).toEqual([]);
    expect((r.metrics.memory as { total: number }).total).toBeGreaterThan(0);
  });

  it("METRICS_AGENT and METRICS_CGROUP read the agent's process and cgroup; paths cannot escape", async () => {
    const me = (await op.hello()).agent_id;
    const s = await op.spawn({
      name: 'measured',
      script: probe,
      env: { REPORT_TO: String(me) },
      limits: { memory: 96 * 1024 * 1024, max_pids: 32 },
    });
    await op.recv({ max: 1, timeoutMs: 10_000 });
    const m = (await op.call<{ metrics: Record<string, Any> }>(Op.METRICS_AGENT, { agent_id: s.id })).metrics;
    expect(m).toMatchObject({ agent_id: s.id, name: 'measured', status: 'RUNNING' });
    expect(m.process.pid).toBe(s.pid);
    expect(allNumbers(m.process.memory)).toEqual([]);
    if (s.isolation.cgroups.memory_limit) {
      expect(m.cgroup.memory.max).toBe(96 * 1024 * 1024);
      expect(m.cgroup.pids.max).toBeGreaterThanOrEqual(32);
      const leaf = m.cgroup.cgroup_path.replace(/^clove\//, '');
      const cg = await op.call<{ metrics: Record<string, Any> }>(Op.METRICS_CGROUP, { cgroup_path: leaf });
      expect(cg.metrics.memory.max).toBe(96 * 1024 * 1024);
    }
    await expect(op.call(Op.METRICS_CGROUP, { cgroup_path: '../../..' })).rejects.toThrow(
      /invalid cgroup_path/,
    );
    await expect(op.call(Op.METRICS_CGROUP, { cgroup_path: '/sys/fs/cgroup' })).rejects.toThrow(
      /invalid cgroup_path/,
    );
    const all = await op.call<{ count: number }>(Op.METRICS_ALL_AGENTS, {});
    expect(all.count).toBeGreaterThanOrEqual(1);
    await expect(op.call(Op.METRICS_AGENT, { agent_id: 999_999 })).rejects.toThrow(/Agent not found/);
  });
});
