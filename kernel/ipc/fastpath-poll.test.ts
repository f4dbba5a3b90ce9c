/**
 * The fast path's reactor polling before it sleeps (docs/fastpath.md, "Polling"; KernelOptions
 * fastPathPollUs): real kernels, real clients. Whether a given wait polls depends on the machine's load
 * (nothing polls while more tasks are runnable than there are CPUs), so these tests assert what holds on
 * any machine: messages arrive as without polling, every wait that could poll is counted once as polled
 * or skipped with its reason, `0` turns it off, and sparse traffic makes the reactor back off. `auto`
 * (the default) is checked against a real cgroup with a CPU quota: a kernel started in it does not poll.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  kernelCommand,
  REPO_ROOT,
  startKernel,
  tempDir,
  until,
  type TestKernel,
} from '../../harness/kernel.js';
import { Kernel } from '../kernel.js';
import { KernelStartError } from '../core/errors.js';
import { defaultOptions, resolveFastPathPollUs } from '../config.js';
import { cpuQuotaOf, detectHostLayout } from '../sandbox/cgroups.js';
import { FastPath } from '../core/native-socket.js';
import { nativeAvailable } from '../sandbox/native.js';
import type { NativePollStats } from '../../native/index.js';
import type { CloveClient } from '../../sdk/typescript/client.js';

const pollStats = (tk: TestKernel): NativePollStats => tk.kernel['fastPath']!.reactor.pollStats();

/** Two registered clients; `b` echoes every message pushed to it back to `a`. */
async function pair(tk: TestKernel): Promise<{ a: CloveClient; b: CloveClient }> {
  const a = await tk.client();
  const b = await tk.client();
  await a.register('poll-a');
  await b.register('poll-b');
  await a.setPush({ messages: true });
  await b.setPush({ messages: true });
  void (async () => {
    // A send still pending when the test's kernel stops is rejected with the closed client: not a failure.
    for await (const m of b.messages()) b.send('poll-a', m.message).catch(() => {});
  })().catch(() => {});
  return { a, b };
}

/** `n` round trips a → b → a, one at a time: each answer is the message sent, in order. */
async function pingPong(a: CloveClient, n: number): Promise<void> {
  const replies = a.messages()[Symbol.asyncIterator]();
  for (let i = 0; i < n; i++) {
    await a.send('poll-b', { i, pad: 'x'.repeat(i % 7) });
    const r = await replies.next();
    expect(r.value?.message).toEqual({ i, pad: 'x'.repeat(i % 7) });
  }
  await replies.return?.(undefined);
}

describe.skipIf(!nativeAvailable())('fast path: the reactor polls before it sleeps', () => {
  let tk: TestKernel | undefined;
  afterEach(async () => {
    await tk?.stop();
    tk = undefined;
  });

  it('at 50 µs: round trips arrive in order, and every wait that could poll is counted', async () => {
    tk = await startKernel({ fastPath: true, fastPathPollUs: 50 });
    const { a } = await pair(tk);
    await pingPong(a, 300);
    const s = pollStats(tk);
    expect(s.maxUs).toBe(50);
    // 300 round trips: at least 600 waits of the reactor, each one polled, skipped (busy) or backed off.
    expect(s.polls + s.skipped + s.backedOff).toBeGreaterThanOrEqual(600);
    expect(s.caught).toBeLessThanOrEqual(s.polls);
    expect(s.polledUs).toBeGreaterThanOrEqual(0);
    // A poll lasts its window (plus the last epoll_wait and any preemption on the way): no runaway loop.
    if (s.polls > 0) expect(s.polledUs / s.polls).toBeLessThan(50 + 5000);
  });

  it('by default (auto): the window this machine resolves to, 50 µs with 2 CPUs or more and no quota', async () => {
    tk = await startKernel({ fastPath: true });
    const want = resolveFastPathPollUs('auto', os.availableParallelism(), cpuQuotaOf(detectHostLayout()));
    expect(pollStats(tk).maxUs).toBe(want.us);
  });

  it('fastPathPollUs 0: the reactor never polls', async () => {
    tk = await startKernel({ fastPath: true, fastPathPollUs: 0 });
    const { a } = await pair(tk);
    await pingPong(a, 100);
    expect(pollStats(tk)).toEqual({ maxUs: 0, polls: 0, caught: 0, skipped: 0, backedOff: 0, polledUs: 0 });
  });

  it('traffic with gaps longer than a poll: polls find nothing, and the reactor stops polling for a while', async () => {
    tk = await startKernel({ fastPath: true, fastPathPollUs: 50 });
    // A sender and a sink that answers nothing: after each message the reactor's next frame is 4 ms away.
    const a = await tk.client();
    const sink = await tk.client();
    await sink.register('poll-sink');
    await sink.setPush({ messages: true });
    const got: unknown[] = [];
    const taking = (async () => {
      for await (const m of sink.messages()) {
        got.push(m.message);
        if (got.length === 200) return;
      }
    })();
    for (let i = 0; i < 200; i++) {
      await a.send('poll-sink', i);
      await new Promise((r) => setTimeout(r, 4));
    }
    await taking;
    expect(got).toEqual([...Array(200).keys()]);
    const s = pollStats(tk);
    expect(s.caught).toBeLessThanOrEqual(s.polls);
    // Whether a wait polls depends on the machine's load; once there were enough polls for 50 ms epochs
    // to be judged, the misses made the reactor back off: without that, every one of the ~200 waits after
    // a message would have polled and found nothing.
    if (s.polls >= 40) expect(s.backedOff).toBeGreaterThan(0);
    console.log('SPARSE', JSON.stringify(s));
    expect(s.polls - s.caught).toBeLessThan(150);
  });
});

describe('fastPathPollUs: checked before anything starts', () => {
  it.each([-1, 1.5, 1001, Number.NaN])('refuses %s with exit code 2', (v) => {
    let err: unknown;
    try {
      new Kernel({ fastPathPollUs: v, logLevel: 'silent' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(KernelStartError);
    expect((err as KernelStartError).exitCode).toBe(2);
    expect((err as Error).message).toMatch(
      /--fast-path-poll-us .*microseconds from 0 \(never poll\) to 1000/,
    );
  });

  it('takes CLOVE_FAST_PATH_POLL_US from the environment, auto without it', () => {
    const was = process.env.CLOVE_FAST_PATH_POLL_US;
    try {
      delete process.env.CLOVE_FAST_PATH_POLL_US;
      expect(defaultOptions().fastPathPollUs).toBe('auto');
      process.env.CLOVE_FAST_PATH_POLL_US = 'auto';
      expect(defaultOptions().fastPathPollUs).toBe('auto');
      process.env.CLOVE_FAST_PATH_POLL_US = '200';
      expect(defaultOptions().fastPathPollUs).toBe(200);
      process.env.CLOVE_FAST_PATH_POLL_US = 'soon';
      expect(() => new Kernel({ logLevel: 'silent' })).toThrow(/--fast-path-poll-us NaN/);
    } finally {
      if (was === undefined) delete process.env.CLOVE_FAST_PATH_POLL_US;
      else process.env.CLOVE_FAST_PATH_POLL_US = was;
    }
  });

  it.skipIf(!nativeAvailable())('the addon refuses a negative pollUs (the kernel checks it first)', () => {
    expect(
      () =>
        new FastPath({
          maxPayload: 1 << 20,
          queuedBytesLimit: 1 << 20,
          maxReplyBytes: 1 << 20,
          maxDepth: 64,
          pollUs: -1,
        }),
    ).toThrow(/pollUs/);
  });
});

describe('auto: a kernel with no CPU to spare does not poll', () => {
  it.each([
    ['auto', 2, null, 50],
    ['auto', 16, 4, 50],
    ['auto', 1, null, 0],
    ['auto', 8, 1.5, 0],
    ['auto', 2, 0.5, 0],
    [0, 16, null, 0],
    [200, 1, 0.5, 200],
  ] as const)('%s with %s CPUs and a quota of %s polls %s µs', (v, cpus, quota, us) => {
    const r = resolveFastPathPollUs(v, cpus, quota);
    expect(r.us).toBe(us);
    expect(r.why).toMatch(v === 'auto' ? /\(auto\)$/ : /set|--fast-path-poll-us 0/);
  });

  // A real cgroup with a CPU quota of half a CPU (cgroup v1's cpu controller, as on these hosts; root).
  const cpu = (() => {
    try {
      return process.getuid?.() === 0 ? detectHostLayout().controllers.cpu : undefined;
    } catch {
      return undefined;
    }
  })();
  it.skipIf(!nativeAvailable() || cpu?.version !== 1)(
    'in a cgroup with a quota of 0.5 CPU: cpuQuotaOf reads it, and a kernel started there logs that it does not poll',
    async () => {
      const dir = path.join(cpu!.mount, `clove-test-quota-${process.pid}`);
      fs.mkdirSync(dir);
      const tmp = tempDir();
      const inCgroup = (cmd: string[]) =>
        ['sh', '-c', `echo $$ > ${dir}/cgroup.procs && exec "$@"`, 'sh', ...cmd] as const;
      let kernel: ReturnType<typeof spawn> | undefined;
      try {
        fs.writeFileSync(path.join(dir, 'cpu.cfs_period_us'), '100000');
        fs.writeFileSync(path.join(dir, 'cpu.cfs_quota_us'), '50000');
        const [sh, ...args] = inCgroup([
          process.execPath,
          '--input-type=module',
          '-e',
          `import { cpuQuotaOf, detectHostLayout } from '${REPO_ROOT}/dist/kernel/sandbox/cgroups.js';` +
            'console.log(JSON.stringify(cpuQuotaOf(detectHostLayout())))',
        ]);
        expect(JSON.parse(execFileSync(sh, args, { encoding: 'utf8' }))).toBe(0.5);
        // The same for a kernel: `clove kernel --fast-path`, polling left to auto, JSON logs on stderr.
        const [ksh, ...kargs] = inCgroup(
          kernelCommand({ socketPath: path.join(tmp, 'k.sock'), dataDir: path.join(tmp, 'data') }, [
            '--sandbox',
            'off',
            '--fast-path',
            '--log-format',
            'json',
          ]),
        );
        const k = spawn(ksh, kargs, {
          stdio: ['ignore', 'ignore', 'pipe'],
          env: { ...process.env, CLOVE_FAST_PATH_POLL_US: '' },
        });
        kernel = k;
        let err = '';
        k.stderr!.on('data', (d) => (err += d));
        const line = await until(
          () => err.split('\n').find((l) => l.includes('fast path on')),
          30_000,
          'the fast path line',
        );
        expect(JSON.parse(line)).toMatchObject({
          fast_path: true,
          poll_us: 0,
          msg: expect.stringContaining("it polls off: the cgroup's CPU quota is 0.5 (auto)"),
        });
      } finally {
        if (kernel && kernel.exitCode === null) {
          const gone = new Promise((r) => kernel!.once('exit', r));
          kernel.kill('SIGTERM');
          await gone;
        }
        fs.rmdirSync(dir);
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    },
  );
});
