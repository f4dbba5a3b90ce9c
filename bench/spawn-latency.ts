/**
 * Spawn latency: a sandboxed /bin/true through NativeSpawner vs plain child_process.spawn('/bin/true')
 * vs bubblewrap, interleaved in one run. Latency = from the spawn call until the exit was observed (and,
 * for NativeSpawner, the agent's cgroups were removed). Writes reports/spawn-latency.{json,md}.
 *
 *   npm run bench:spawn            (root; installs bubblewrap via bench/setup.sh)
 *   BENCH_N=500 node dist/bench/spawn-latency.js
 */
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NativeSpawner } from '../kernel/sandbox/index.js';
import { projectRoot } from '../kernel/sandbox/native.js';
import type { ExitInfo } from '../kernel/sandbox/types.js';
import { summarize, type Summary } from './spawn/stats.js';
import { which } from '../harness/services.js';

const N = Number(process.env.BENCH_N ?? 500);
const WARMUP = 20;

function runChild(file: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const c = spawn(file, args, { stdio: 'ignore' });
    c.once('error', reject);
    c.once('exit', (code) => {
      if (code !== 0) reject(new Error(`${file} exited ${code}`));
      else resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    });
  });
}

async function main(): Promise<void> {
  const root = projectRoot();
  const loadBefore = os.loadavg();
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'clove-bench-'));
  fs.chmodSync(work, 0o755);
  const logFd = fs.openSync('/dev/null', 'a');
  const spawner = new NativeSpawner({ warn: (m) => console.warn(m) });
  await spawner.init();
  const bwrap = which('bwrap');
  const bwrapArgs = ['--unshare-all', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '/bin/true'];

  let id = 1;
  const nativeTotal: number[] = [];
  const nativeStart: number[] = [];
  const plain: number[] = [];
  const bw: number[] = [];
  let isolation: unknown;
  const native = async (record: boolean) => {
    const t0 = process.hrtime.bigint();
    const agent = await spawner.spawn({
      agentId: id++,
      name: 'bench',
      argv: ['/bin/true'],
      env: {},
      cwd: work,
      logFd,
      sandboxed: true,
      network: false,
      limits: {},
      account: { uid: 65534, gid: 65534 },
    });
    const t1 = process.hrtime.bigint();
    const info = await new Promise<ExitInfo>((r) => agent.onExit(r));
    const t2 = process.hrtime.bigint();
    if (info.code !== 0) throw new Error(`sandboxed /bin/true: ${JSON.stringify(info)}`);
    isolation ??= agent.isolation;
    if (record) {
      nativeStart.push(Number(t1 - t0) / 1e6);
      nativeTotal.push(Number(t2 - t0) / 1e6);
    }
  };

  for (let i = 0; i < WARMUP; i++) {
    await native(false);
    await runChild('/bin/true', []);
    if (bwrap) await runChild(bwrap, bwrapArgs);
  }
  // Interleaved so that drift (page cache, CPU frequency, noisy neighbours) hits all three alike, and
  // rotated so that none always runs right after bwrap (whose network namespace is torn down by a kernel
  // worker after it exits, stealing CPU from whatever runs next).
  const kinds: Array<() => Promise<void>> = [
    () => native(true),
    async () => {
      plain.push(await runChild('/bin/true', []));
    },
  ];
  if (bwrap)
    kinds.push(async () => {
      bw.push(await runChild(bwrap, bwrapArgs));
    });
  for (let i = 0; i < N; i++) {
    for (let k = 0; k < kinds.length; k++) await kinds[(i + k) % kinds.length]();
  }
  await spawner.close();
  fs.closeSync(logFd);
  fs.rmSync(work, { recursive: true, force: true });

  const loadAfter = os.loadavg();
  const cpuModel = os.cpus()[0]?.model ?? 'unknown';
  const machine = {
    cores: os.cpus().length,
    cpu_model: cpuModel,
    kernel: os.release(),
    node: process.version,
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
    cgroups: spawner.layout?.version ?? 'none',
    load_avg_1m_before: Math.round(loadBefore[0] * 100) / 100,
    load_avg_1m_after: Math.round(loadAfter[0] * 100) / 100,
    bwrap: bwrap
      ? execFileSync(bwrap, ['--version'], { encoding: 'utf8' }).trim()
      : 'not installed (run bench/setup.sh)',
  };
  const results: Record<string, Summary & { what: string }> = {
    native_sandbox: {
      what: 'NativeSpawner.spawn(/bin/true) until onExit (cgroups created and removed)',
      ...summarize(nativeTotal),
    },
    native_sandbox_start: {
      what: "NativeSpawner.spawn(/bin/true) until it returned (agent exec'd)",
      ...summarize(nativeStart),
    },
    child_process: { what: "child_process.spawn('/bin/true') until 'exit'", ...summarize(plain) },
  };
  if (bwrap)
    results.bwrap = {
      what: `child_process.spawn('bwrap ${bwrapArgs.join(' ')}') until 'exit'`,
      ...summarize(bw),
    };
  const goal = { p50_ms: 5, p99_ms: 15 };
  const n = results.native_sandbox;
  const verdict = {
    p50_ok: n.p50 <= goal.p50_ms,
    p99_ok: n.p99 <= goal.p99_ms,
    ahead_of_bwrap: results.bwrap ? n.p50 < results.bwrap.p50 && n.p99 < results.bwrap.p99 : null,
  };
  const report = {
    date: new Date().toISOString(),
    n: N,
    warmup: WARMUP,
    machine,
    isolation,
    goal,
    verdict,
    results,
  };
  const outDir = path.join(root, 'reports');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'spawn-latency.json'), JSON.stringify(report, null, 2) + '\n');
  const row = (k: string, r: Summary & { what: string }) =>
    `| ${k} | ${r.n} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.mean.toFixed(2)} | ${r.min.toFixed(2)} | ${r.max.toFixed(2)} | ${r.what} |`;
  const md = [
    '# Spawn latency',
    '',
    `Generated by \`npm run bench:spawn\` (bench/spawn-latency.ts) on ${report.date}; ${N} measured spawns of each kind after ${WARMUP} warm-ups, interleaved.`,
    '',
    '## Machine',
    '',
    `- CPU: ${machine.cpu_model}, ${machine.cores} cores, ${machine.memory_gib} GiB`,
    `- Kernel: ${machine.kernel}; cgroups: ${machine.cgroups}`,
    `- Node: ${machine.node}; bubblewrap: ${machine.bwrap}`,
    `- 1-minute load average: ${machine.load_avg_1m_before} before, ${machine.load_avg_1m_after} after (other work on the machine inflates p99)`,
    '',
    '## Results (milliseconds)',
    '',
    '| kind | n | p50 | p99 | mean | min | max | measured |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...Object.entries(results).map(([k, r]) => row(k, r)),
    '',
    '## Verdict',
    '',
    `- Goal for the sandboxed /bin/true: p50 <= ${goal.p50_ms} ms (${verdict.p50_ok ? 'met' : 'NOT met'}: ${n.p50.toFixed(2)} ms), p99 <= ${goal.p99_ms} ms (${verdict.p99_ok ? 'met' : 'NOT met'}: ${n.p99.toFixed(2)} ms).`,
    `- Against bwrap: ${verdict.ahead_of_bwrap === null ? 'bwrap not installed' : verdict.ahead_of_bwrap ? 'ahead at p50 and p99' : 'NOT ahead at both p50 and p99'}.`,
    '',
    "The sandboxed spawn does strictly more than the bwrap line: it also creates and removes the agent's",
    'cgroups (memory, cpu, cpuacct, pids, freezer and the v2 identity cgroup), joins a shared empty network',
    'namespace, drops to uid 65534 and runs clove-init as PID 1. See docs/sandbox.md.',
    '',
    'Isolation reported for the benchmarked agent:',
    '',
    '```json',
    JSON.stringify(isolation, null, 2),
    '```',
    '',
  ].join('\n');
  fs.writeFileSync(path.join(outDir, 'spawn-latency.md'), md);
  console.log(md);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
