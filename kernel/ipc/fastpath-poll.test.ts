/**
 * The fast path's reactor polling before it sleeps (docs/fastpath.md, "Polling"; KernelOptions
 * fastPathPollUs): real kernels, real clients. Whether a given wait polls depends on the machine's load
 * (nothing polls while more tasks are runnable than there are CPUs), so these tests assert what holds on
 * any machine: messages arrive as without polling, every wait that could poll is counted once as polled
 * or skipped with its reason, `0` turns it off, and sparse traffic makes the reactor back off.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startKernel, type TestKernel } from '../../harness/kernel.js';
import { Kernel } from '../kernel.js';
import { KernelStartError } from '../core/errors.js';
import { defaultOptions } from '../config.js';
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

  it('by default (50 µs): round trips arrive in order, and every wait that could poll is counted', async () => {
    tk = await startKernel({ fastPath: true });
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

  it('fastPathPollUs 0: the reactor never polls', async () => {
    tk = await startKernel({ fastPath: true, fastPathPollUs: 0 });
    const { a } = await pair(tk);
    await pingPong(a, 100);
    expect(pollStats(tk)).toEqual({ maxUs: 0, polls: 0, caught: 0, skipped: 0, backedOff: 0, polledUs: 0 });
  });

  it('traffic with gaps longer than a poll: polls find nothing, and the reactor stops polling for a while', async () => {
    tk = await startKernel({ fastPath: true, fastPathPollUs: 50 });
    const { a, b } = await pair(tk);
    // One message every 4 ms for about 0.8 s: each poll after it runs out with nothing found.
    const got: unknown[] = [];
    const taking = (async () => {
      for await (const m of a.messages()) {
        got.push(m.message);
        if (got.length === 200) return;
      }
    })();
    for (let i = 0; i < 200; i++) {
      await a.send('poll-b', i);
      await new Promise((r) => setTimeout(r, 4));
    }
    await taking;
    expect(got).toEqual([...Array(200).keys()]);
    const s = pollStats(tk);
    expect(s.caught).toBeLessThanOrEqual(s.polls);
    // Whether a wait polls depends on the machine's load; once there were enough polls for a 50 ms epoch
    // to be judged, the misses made the reactor back off (without it, every wait would have polled).
    if (s.polls >= 80) expect(s.backedOff).toBeGreaterThan(0);
    void b;
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

  it('takes CLOVE_FAST_PATH_POLL_US from the environment, 50 without it', () => {
    const was = process.env.CLOVE_FAST_PATH_POLL_US;
    try {
      delete process.env.CLOVE_FAST_PATH_POLL_US;
      expect(defaultOptions().fastPathPollUs).toBe(50);
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
