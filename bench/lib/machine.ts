/**
 * What machine a number was measured on: every report carries this block (cores, CPU model, kernel,
 * Node and Python versions, date, load average at the start of the run).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { REPO_ROOT } from '../../kernel/config.js';
import { readText } from '../../kernel/sandbox/cgroups.js';

export interface MachineInfo {
  date: string;
  hostname: string;
  cores: number;
  cpu_model: string;
  mem_total_gib: number;
  kernel: string;
  node: string;
  python_real: string;
  python_real_version: string;
  python_shim: string;
  loadavg_at_start: number[];
  git_commit: string;
  git_dirty: boolean;
  /**
   * How an idle CPU waits for work (cpuidle driver, governor, a KVM guest's halt polling): it sets what a
   * wake-up costs, so round trips of a few tens of µs move with it. Absent in reports made before.
   */
  cpu_idle?: string;
}

/** Where a KVM guest's halt polling is set (the haltpoll cpuidle driver): ns an idle vCPU polls before it halts. */
export const HALT_POLL_NS = '/sys/module/haltpoll/parameters/guest_halt_poll_ns';

/** The cpuidle driver and governor, and the halt polling of the haltpoll driver: "unknown" where sysfs says nothing. */
export function cpuIdleInfo(): string {
  const driver = readText('/sys/devices/system/cpu/cpuidle/current_driver')?.trim();
  if (!driver || driver === 'none') return driver ?? 'unknown';
  const governor = readText('/sys/devices/system/cpu/cpuidle/current_governor')?.trim();
  const poll = driver === 'haltpoll' ? readText(HALT_POLL_NS)?.trim() : undefined;
  const polling =
    poll === undefined
      ? ''
      : poll === '0'
        ? ', guest halt polling off'
        : `, guest halt polling up to ${poll} ns`;
  return `cpuidle ${driver}${governor && governor !== driver ? ` (${governor})` : ''}${polling}`;
}

function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      cwd: REPO_ROOT,
    }).trim();
  } catch {
    return '';
  }
}

let realPython: string | null = null;

/** The interpreter the kernel runs `.py` agents with (the pyenv shim resolved once, as the kernel does). */
export function realPythonPath(): string {
  if (!realPython)
    realPython =
      process.env.CLOVE_PYTHON || run('python3', ['-c', 'import sys; print(sys.executable)']) || 'python3';
  return realPython;
}

/** `python3` as found on PATH (possibly a pyenv shim). */
export function shimPythonPath(): string {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const f = `${dir}/python3`;
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch {
      // next
    }
  }
  return 'python3';
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const py = realPythonPath();
  return {
    date: new Date().toISOString(),
    hostname: os.hostname(),
    cores: cpus.length,
    cpu_model: cpus[0]?.model ?? 'unknown',
    mem_total_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    kernel: os.release(),
    node: process.version,
    python_real: py,
    python_real_version: run(py, ['-c', 'import platform; print(platform.python_version())']),
    python_shim: shimPythonPath(),
    loadavg_at_start: os.loadavg().map((x) => Math.round(x * 100) / 100),
    git_commit: run('git', ['rev-parse', '--short', 'HEAD']),
    git_dirty: run('git', ['status', '--porcelain']).length > 0,
    cpu_idle: cpuIdleInfo(),
  };
}

/** One line for a Markdown report. */
export function machineLine(m: MachineInfo): string {
  return (
    `${m.cores} cores ${m.cpu_model}, ${m.mem_total_gib} GiB, Linux ${m.kernel}, Node ${m.node}, ` +
    `Python ${m.python_real_version} (${m.python_real}), ${m.date.slice(0, 16).replace('T', ' ')} UTC, ` +
    `load average at start ${m.loadavg_at_start.join(' / ')}, commit ${m.git_commit}${m.git_dirty ? ' (+ uncommitted changes)' : ''}` +
    (m.cpu_idle ? `, ${m.cpu_idle}` : '')
  );
}
