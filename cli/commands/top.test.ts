/**
 * `clove top` against a real kernel process and real agents: the live view in a pseudo terminal
 * (util-linux `script`) quits on `q` and Ctrl-C with exit 0, `--once --json` carries every field, a
 * non-terminal stdout gets one frame per interval; and the CPU % arithmetic on fixed samples.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startKernelProcess, tempDir, until, type KernelProcess } from '../../harness/kernel.js';
import type { AgentMetrics } from '../../protocol/index.js';
import { renderTop, snapshot, type TopSnapshot } from './top.js';
import type { Listed } from './logs.js';

const bin = path.join(REPO_ROOT, 'bin', 'clove.js');
let kp: KernelProcess;
let dir: string;

function clove(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, '--socket', kp.socketPath, ...args], (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, out, err }),
    );
  });
}

/** Runs `clove top` in a pseudo terminal, waits for `until` in its output, types `key`, awaits the exit. */
async function topInPty(key: string): Promise<{ code: number | null; out: string }> {
  const child = spawn(
    'script',
    [
      '-qfec',
      // A pty of `script` whose own stdin is a pipe has no size: give it one, or lines wrap at 80.
      `stty cols 200 rows 50; exec ${process.execPath} ${bin} -s ${kp.socketPath} top --interval 300`,
      '/dev/null',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  try {
    // Two frames: the view is live and stdin is in raw mode (set before the first frame).
    await until(() => out.split('MSGS OUT').length > 2 && out.includes('pinger'), 30_000, 'two frames');
    child.stdin.write(key);
    const code = await Promise.race([
      exited,
      new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000)),
    ]);
    expect(code, out).not.toBe('hung');
    return { code: code as number | null, out };
  } finally {
    child.kill('SIGKILL');
  }
}

beforeAll(async () => {
  kp = await startKernelProcess({ extra: ['--log-level', 'error'] });
  dir = tempDir();
  const script = path.join(dir, 'pinger.py');
  fs.writeFileSync(
    script,
    [
      'from clove_sdk import CloveClient',
      'c = CloveClient()',
      'c.send_message("ping", to_name="pinger")',
      'while True: c.wait_message(timeout=30)',
    ].join('\n'),
  );
  const idle = path.join(dir, 'idle.py');
  fs.writeFileSync(idle, ['import time', 'while True: time.sleep(30)'].join('\n'));
  const c = await kp.client();
  await c.spawn({ name: 'pinger', script, labels: { 'clove.project': 'demo', 'clove.service': 'pings' } });
  await c.spawn({ name: 'idle-worker', script: idle });
}, 60_000);
afterAll(async () => {
  await kp?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('clove top', () => {
  it('--once --json: one snapshot of every agent with its figures and the kernel totals', async () => {
    const snap = await until(
      async () => {
        const r = await clove('top', '--once', '--json', '--interval', '200');
        expect(r.code, r.err).toBe(0);
        const s = JSON.parse(r.out) as TopSnapshot;
        const p = s.agents.find((a) => a.name === 'pinger');
        return p?.messages_in === 1 ? s : null;
      },
      30_000,
      'pinger received its ping',
    );
    expect(snap.agents.map((a) => a.name)).toEqual(['idle-worker', 'pinger']);
    const p = snap.agents.find((a) => a.name === 'pinger')!;
    expect(p).toMatchObject({
      state: 'RUNNING',
      restarts: 0,
      messages_in: 1,
      messages_out: 1,
      service: 'pings',
    });
    expect(p.pid).toBeGreaterThan(0);
    expect(p.memory_bytes).toBeGreaterThan(0);
    expect(typeof p.cpu_percent).toBe('number');
    expect(p.cpu_percent).toBeGreaterThanOrEqual(0);
    expect(p.uptime_ms).toBeGreaterThan(0);
    expect(snap.agents_by_state.RUNNING).toBe(2);
    expect(snap.system!.cpu_count).toBeGreaterThan(0);
    expect(snap.system!.memory_total).toBeGreaterThan(0);
  });

  it('--once: a text frame with the header and the columns', async () => {
    const r = await clove('top', '--once', '--interval', '100');
    expect(r.code, r.err).toBe(0);
    const lines = r.out.split('\n');
    expect(lines[0]).toMatch(/^clove top {2}\d\d:\d\d:\d\d {2}agents 2: RUNNING 2$/);
    expect(r.out).toMatch(/NAME\s+SERVICE\s+STATE\s+CPU%\s+MEM\s+RESTARTS\s+MSGS IN\s+MSGS OUT\s+UPTIME/);
    expect(r.out).toMatch(/pinger\s+pings\s+RUNNING\s+\d+\.\d\s+[\d.]+[KMG]\s+0\s+1\s+1\s+\d+[smh]/);
    expect(r.out).not.toContain('\u001b['); // not a terminal: no colours
  });

  it('live in a terminal: renders the agents, `q` quits with 0 and restores the cursor', async () => {
    const { code, out } = await topInPty('q');
    expect(code, out).toBe(0);
    expect(out).toMatch(/NAME\s+SERVICE\s+STATE\s+CPU%\s+MEM\s+RESTARTS\s+MSGS IN\s+MSGS OUT\s+UPTIME/);
    expect(out).toContain('idle-worker');
    expect(out).toMatch(/pinger\s+pings\s+\S*RUNNING/);
    expect(out.lastIndexOf('\u001b[?25h')).toBeGreaterThan(out.lastIndexOf('\u001b[?25l'));
  });

  it('live in a terminal: Ctrl-C quits with 0', async () => {
    const { code, out } = await topInPty('\u0003');
    expect(code, out).toBe(0);
  });

  it('stdout not a terminal: a frame every interval until SIGTERM (exit 0)', async () => {
    const child = spawn(process.execPath, [bin, '--socket', kp.socketPath, 'top', '--interval', '200'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await until(() => out.split('clove top').length > 3, 30_000, 'three frames');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toContain('\n\nclove top');
  });

  it('cannot reach the kernel: exit 6', async () => {
    const r = await new Promise<number>((resolve) =>
      execFile(process.execPath, [bin, '--socket', '/tmp/nowhere.sock', 'top', '--once'], (e) =>
        resolve((e as { code?: number } | null)?.code ?? 0),
      ),
    );
    expect(r).toBe(6);
  });
});

describe('top arithmetic (unit)', () => {
  const agent = (over: Partial<Listed> = {}): Listed =>
    ({ id: 7, name: 'web-1', pid: 100, state: 'RUNNING', restarts: 0, uptime_ms: 5000, ...over }) as Listed;
  const metrics = (pid: number, usageUsec: number, extra: object = {}): AgentMetrics =>
    ({
      agent_id: 7,
      pid,
      process: { cpu: { time_user_ms: 1, time_system_ms: 1 }, memory: { rss: 5 } },
      cgroup: { valid: true, cpu: { usage_usec: usageUsec }, memory: { current: 4096 } },
      kernel_stats: { messages_recv: 3, messages_sent: 4 },
      ...extra,
    }) as unknown as AgentMetrics;
  const sample = (at: number, m: AgentMetrics, a = agent()) => ({
    at,
    list: [a],
    metrics: new Map([[7, m]]),
    system: null,
  });

  it("CPU % is the cgroup's usage delta over the wall time; '-' without a previous sample of that pid", () => {
    const first = sample(1000, metrics(100, 1_000_000));
    const second = sample(3000, metrics(100, 2_500_000));
    expect(snapshot(first, null).agents[0].cpu_percent).toBeNull();
    expect(snapshot(second, first).agents[0]).toMatchObject({
      cpu_percent: 75,
      memory_bytes: 4096,
      messages_in: 3,
      messages_out: 4,
    });
    const restarted = sample(3000, metrics(101, 10));
    expect(snapshot(restarted, first).agents[0].cpu_percent).toBeNull();
  });

  it('labels give the service; a quotas object in the metrics adds the QUOTA column', () => {
    const m = metrics(100, 0, {
      quotas: { llm_calls: { limit: 10, used: 5 }, cpu_time: { limit: 1000, used: 900 } },
    });
    const s = snapshot(sample(1, m, agent({ labels: { 'clove.service': 'web' } })), null);
    expect(s.agents[0]).toMatchObject({ service: 'web', quota: 'cpu_time 90%' });
    const text = renderTop(s, false);
    expect(text).toMatch(/UPTIME\s+QUOTA/);
    expect(text).toMatch(/web-1\s+web\s+RUNNING.*cpu_time 90%$/m);
  });
});
