/**
 * The kernel-restart chaos scenario (issue 17, docs/restart.md): a swarm of Python agents sends numbered
 * messages around a ring through a kernel daemon; the kernel is SIGKILLed in the middle of it and a new
 * kernel is started on the same socket and data dir. Verified, never timed:
 *
 * - every agent keeps its pid (the new kernel re-adopted it instead of starting it again),
 * - no message the kernel acknowledged (SEND replied ok) is lost — duplicates are counted apart
 *   (a request in flight at the crash is re-sent by the SDK: at least once),
 * - the agents' SDK callers saw no error (each agent counts every failed call),
 * - the swarm keeps messaging after the restart.
 *
 * Used by `npm run chaos -- --kernel-kill` (chaos/main.ts) and chaos/kernel-restart.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { startKernelProcess, tempDir, until, REPO_ROOT, type KernelProcess } from '../harness/kernel.js';
import { sleep } from '../harness/timing.js';

export const RESTART_AGENT = path.join(REPO_ROOT, 'harness', 'agents', 'restart_agent.py');

export interface KernelRestartOptions {
  agents: number;
  /** Each agent's send interval. */
  intervalMs: number;
  /** Seconds of traffic before the kill and after the new kernel has every agent back. */
  beforeS: number;
  afterS: number;
  /** How long no kernel runs between the kill and the new kernel's start. */
  downMs: number;
  sandbox: 'auto' | 'native' | 'off';
  fastPath?: boolean;
  /** Upper bound of every wait. */
  timeoutS: number;
  log?: (line: string) => void;
}

export interface KernelRestartResult {
  ok: boolean;
  failures: string[];
  agents: number;
  /** Agents whose pid after the restart is the pid they had before. */
  pids_kept: number;
  /** Agents alive while no kernel ran. */
  alive_without_kernel: number;
  /** Messages the kernel acknowledged, and of those how many reached their receiver. */
  acknowledged: number;
  delivered: number;
  lost: number;
  duplicates: number;
  /** Calls that failed in the agents' code (must be 0). */
  sdk_errors: number;
  first_errors: unknown[];
  /** Acknowledged after the new kernel had every agent back (the swarm carries on). */
  acknowledged_after_restart: number;
  /** SIGKILL → the new kernel listening, and → every agent listed again with its pid. */
  kernel_down_ms: number;
  readopt_ms: number;
}

interface Summary {
  name: string;
  peer: string;
  acked: number;
  got: Record<string, number[]>;
  dups: number;
  errors: number;
  first_errors: unknown[];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The summary line an agent printed to its log, if it did yet. */
function summaryOf(dataDir: string, name: string): Summary | null {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dataDir, 'logs', `${name}.log`), 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n').reverse()) {
    if (!line.startsWith('{"t": "summary"')) continue;
    try {
      return JSON.parse(line) as Summary;
    } catch {
      return null;
    }
  }
  return null;
}

/** What `name` had acknowledged by wall-clock time `at`, from its once-a-second progress lines. */
function ackedBy(dataDir: string, name: string, at: number): number {
  let text = '';
  try {
    text = fs.readFileSync(path.join(dataDir, 'logs', `${name}.log`), 'utf8');
  } catch {
    return 0;
  }
  let acked = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('{"t": "p"')) continue;
    try {
      const p = JSON.parse(line) as { acked: number; ts: number };
      if (p.ts <= at) acked = Math.max(acked, p.acked);
    } catch {
      /* a line cut by a rotation */
    }
  }
  return acked;
}

export async function runKernelRestart(o: KernelRestartOptions): Promise<KernelRestartResult> {
  const log = o.log ?? (() => {});
  const dir = tempDir('ckr');
  const socketPath = path.join(dir, 'clove.sock');
  const dataDir = path.join(dir, 'data');
  const extra = ['--sandbox', o.sandbox, ...(o.fastPath ? ['--fast-path'] : [])];
  const names = Array.from({ length: o.agents }, (_, i) => `r-${i}`);
  const failures: string[] = [];
  const timeoutMs = o.timeoutS * 1000;
  let kp: KernelProcess | null = null;
  const orphans: number[] = [];
  try {
    kp = await startKernelProcess({ socketPath, dataDir, extra });
    let op = await kp.client();
    log(`kernel ${kp.child.pid} up; spawning ${o.agents} agents`);
    for (let i = 0; i < o.agents; i++)
      await op.spawn({
        name: names[i],
        script: RESTART_AGENT,
        restart_policy: 'on-failure',
        env: {
          RESTART_PEER: names[(i + 1) % o.agents],
          RESTART_INTERVAL_MS: String(o.intervalMs),
        },
      });
    const before = new Map<string, number>();
    for (const a of await until(
      async () => {
        const l = (await op.list()).filter((a) => names.includes(a.name) && a.pid > 0);
        return l.length === o.agents ? l : null;
      },
      timeoutMs,
      'every agent running',
    ))
      before.set(a.name, a.pid);
    orphans.push(...before.values());
    await sleep(o.beforeS * 1000);

    log(`SIGKILL to kernel ${kp.child.pid} under load`);
    const killedAt = Date.now();
    kp.child.kill('SIGKILL');
    await kp.exited;
    op.close();
    await sleep(o.downMs);
    const aliveWithout = [...before.values()].filter(alive).length;
    if (aliveWithout !== o.agents) failures.push(`${o.agents - aliveWithout} agent(s) died with the kernel`);

    kp = await startKernelProcess({ socketPath, dataDir, extra });
    const kernelDownMs = Date.now() - killedAt;
    log(`new kernel ${kp.child.pid} listening after ${kernelDownMs} ms`);
    op = await kp.client();
    let after = new Map<string, number>();
    try {
      await until(
        async () => {
          after = new Map(
            (await op.list()).filter((a) => names.includes(a.name)).map((a) => [a.name, a.pid]),
          );
          return names.every((n) => after.get(n) === before.get(n));
        },
        timeoutMs,
        'every agent listed again with its pid',
      );
    } catch {
      /* counted below */
    }
    const readoptAt = Date.now();
    const readoptMs = readoptAt - killedAt;
    const kept = names.filter((n) => after.get(n) === before.get(n)).length;
    if (kept !== o.agents) failures.push(`${o.agents - kept} agent(s) did not keep their pid`);
    log(`${kept}/${o.agents} agents re-adopted with their pid after ${readoptMs} ms`);
    await sleep(o.afterS * 1000);

    // Stop the traffic: every agent then drains its mailbox and prints its summary.
    for (const n of names) await op.send(n, { cmd: 'stop' });
    const summaries = new Map<string, Summary>();
    try {
      await until(
        () => {
          for (const n of names)
            if (!summaries.has(n)) {
              const s = summaryOf(dataDir, n);
              if (s) summaries.set(n, s);
            }
          return summaries.size === names.length;
        },
        timeoutMs,
        'every agent’s summary',
      );
    } catch {
      failures.push(`${names.length - summaries.size} agent(s) printed no summary`);
    }

    let acknowledged = 0;
    let delivered = 0;
    let duplicates = 0;
    let sdkErrors = 0;
    let ackedAfter = 0;
    const stalled: string[] = [];
    const firstErrors: unknown[] = [];
    for (const s of summaries.values()) {
      acknowledged += s.acked;
      duplicates += s.dups;
      sdkErrors += s.errors;
      firstErrors.push(...s.first_errors.map((e) => ({ agent: s.name, e })));
      const since = s.acked - ackedBy(dataDir, s.name, readoptAt);
      ackedAfter += since;
      if (since <= 0) stalled.push(s.name);
      const receiver = summaries.get(s.peer);
      const got = new Set(receiver?.got[s.name] ?? []);
      for (let n = 1; n <= s.acked; n++) if (got.has(n)) delivered++;
    }
    const lost = acknowledged - delivered;
    if (lost > 0) failures.push(`${lost} acknowledged message(s) lost`);
    if (stalled.length > 0)
      failures.push(
        `${stalled.length} agent(s) sent nothing after the restart: ${stalled.slice(0, 5).join(', ')}`,
      );
    if (sdkErrors > 0) failures.push(`${sdkErrors} error(s) seen by the agents' SDK callers`);
    const result: KernelRestartResult = {
      ok: false,
      failures,
      agents: o.agents,
      pids_kept: kept,
      alive_without_kernel: aliveWithout,
      acknowledged,
      delivered,
      lost,
      duplicates,
      sdk_errors: sdkErrors,
      first_errors: firstErrors.slice(0, 10),
      acknowledged_after_restart: ackedAfter,
      kernel_down_ms: kernelDownMs,
      readopt_ms: readoptMs,
    };
    result.ok = failures.length === 0;
    return result;
  } finally {
    // SIGTERM: the kernel stops its agents; on a failed run, agents no kernel adopted are killed here.
    if (kp) await kp.stop('SIGTERM');
    for (const pid of orphans) if (alive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
