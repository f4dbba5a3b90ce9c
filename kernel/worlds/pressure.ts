/**
 * resource_pressure on one agent (docs/worlds.md): its cgroup's memory made to reclaim above a lower
 * mark and its CPU quota lowered, for the duration of the event. Writes plain cgroup files (v2
 * `memory.high`, `cpu.max`; v1 `memory.soft_limit_in_bytes`, `cpu.cfs_quota_us`) and returns the undo
 * that writes back what was there.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { AgentCgroup } from '../sandbox/cgroups.js';

/** Lowers `cg`; undefined when neither controller is there to lower (the caller slows calls instead). */
export function applyPressure(
  cg: AgentCgroup,
  p: { memoryHighBytes: number; cpuPercent: number },
): (() => void) | undefined {
  const undo: (() => void)[] = [];
  const set = (file: string, value: string) => {
    const old = fs.readFileSync(file, 'utf8').trim();
    fs.writeFileSync(file, value);
    undo.push(() => fs.writeFileSync(file, old));
  };
  const mem = cg.layout.controllers.memory;
  const memDir = cg.dir('memory');
  if (mem && memDir) {
    const file = path.join(memDir, mem.version === 2 ? 'memory.high' : 'memory.soft_limit_in_bytes');
    if (fs.existsSync(file)) set(file, String(p.memoryHighBytes));
  }
  const cpu = cg.layout.controllers.cpu;
  const cpuDir = cg.dir('cpu');
  if (cpu && cpuDir) {
    const period = 100_000;
    const quota = Math.max(1000, Math.floor((period * p.cpuPercent) / 100));
    if (cpu.version === 2) {
      const file = path.join(cpuDir, 'cpu.max');
      if (fs.existsSync(file)) set(file, `${quota} ${period}`);
    } else {
      const q = path.join(cpuDir, 'cpu.cfs_quota_us');
      const per = path.join(cpuDir, 'cpu.cfs_period_us');
      if (fs.existsSync(q) && fs.existsSync(per)) {
        set(per, String(period));
        set(q, String(quota));
      }
    }
  }
  if (!undo.length) return undefined;
  return () => {
    for (const u of undo.reverse()) {
      try {
        u();
      } catch {
        // the cgroup is gone with its agent: nothing to restore
      }
    }
  };
}
