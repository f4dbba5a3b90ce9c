/**
 * Cold restarts of a sandboxed agent against a real kernel (docs/supervision.md "Restarting before the
 * teardown"): the supervisor handles a crash as soon as the agent's program has ended and starts the new
 * process while the old sandbox is still being torn down, in a cgroup leaf of its own when the old one is
 * not gone yet. Kill after kill the agent comes back and answers, the old leaves are removed, and nothing
 * of it is left once it is stopped. The kernel runs with `--no-spare-sandboxes`: each restart spawns
 * (spare.test.ts covers restarts into a sandbox made in advance).
 */
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import { programPid } from '../../harness/procs.js';
import { listed as info } from '../../harness/operator.js';
import { detectHostLayout, parseProcCgroup, readText } from '../sandbox/cgroups.js';

const AGENT = `
import os
from clove_sdk import CloveClient
with CloveClient() as c:
    c.hello()
    while True:
        m = c.wait_message(timeout=None)
        if m is not None:
            c.send_message({"pid": os.getpid()}, to=m["from"])
`;

let k: TestKernel | undefined;
afterEach(async () => {
  await k?.stop();
  k = undefined;
});

/**
 * The directory of `pid`'s cgroup in the hierarchy the kernel identifies agents by (v2 when mounted, else the
 * first v1 controller's), found as the kernel finds it (kernel/sandbox/cgroups.ts), or null. The kernel is a
 * child of this process, so its agents' cgroups lie below this process's own.
 */
function cgroupDir(pid: number): string | null {
  const layout = detectHostLayout();
  const h = layout.v2 ?? Object.values(layout.controllers)[0];
  const text = readText(`/proc/${pid}/cgroup`);
  if (!h || !text) return null;
  const key = h.controllers.slice().sort().join(',');
  const line = parseProcCgroup(text).find((l) =>
    h.version === 2 ? l.id === '0' : l.controllers.slice().sort().join(',') === key,
  );
  if (!line) return null;
  const rel = path.posix.relative(h.ownPath, line.path);
  return rel.startsWith('..') ? null : path.join(h.ownDir, rel);
}

describe('cold restart of a sandboxed agent', () => {
  it('comes back after every SIGKILL, each life in a leaf of the agent, old leaves removed; KILL leaves none', async () => {
    k = await startKernel({ sandbox: 'auto', spareSandboxes: false });
    const dir = tempDir();
    const script = path.join(dir, 'cold_agent.py');
    fs.writeFileSync(script, AGENT, { mode: 0o644 });
    const op = await k.client();
    await op.hello();
    const r = await op.spawn({
      name: 'cold',
      script,
      restart_policy: 'always',
      max_restarts: 100,
      min_uptime_ms: 50,
      backoff_max_ms: 200,
    });
    expect(r.success).toBe(true);
    const id = r.id;
    let a = await until(
      async () => ((await info(op, 'cold')).ready ? info(op, 'cold') : undefined),
      20_000,
      'ready',
    );
    const leafOf = (pid: number): string | null => {
      const d = cgroupDir(programPid(pid));
      return d && path.basename(d);
    };
    const first = cgroupDir(programPid(a.pid));
    const isolated = first !== null && path.basename(first).startsWith(`cold_${id}`);
    const parent = isolated ? path.dirname(first) : '';
    const leaves = () =>
      fs.readdirSync(parent).filter((n) => n === `cold_${id}` || n.startsWith(`cold_${id}_`));

    const seen = new Set<string>();
    for (let i = 1; i <= 8; i++) {
      const before = a.pid;
      // Up past min_uptime_ms: the restart is immediate (a backoff would outlast the old sandbox's teardown).
      await new Promise((res) => setTimeout(res, 150));
      process.kill(programPid(before), 'SIGKILL');
      a = await until(
        async () => {
          const x = await info(op, 'cold');
          return x.pid !== before && x.ready && x.restarts === i ? x : undefined;
        },
        20_000,
        `restart ${i}`,
      );
      await op.send('cold', { q: i });
      const got = await op.recv({ timeoutMs: 10_000 });
      expect(got.messages?.[0]?.message).toEqual({ pid: expect.any(Number) });
      if (!isolated) continue;
      const leaf = leafOf(a.pid)!;
      expect(leaf).toMatch(new RegExp(`^cold_${id}(_r\\d+)?$`));
      seen.add(leaf);
      // The previous life's leaf (when it was another one) is removed once its sandbox is gone.
      await until(() => leaves().length === 1, 10_000, `only the live leaf of restart ${i}`);
      expect(leaves()).toEqual([leaf]);
    }
    // Each restart began before the old sandbox was gone: the new life took a leaf of its own.
    if (isolated) expect([...seen].every((l) => /_r\d+$/.test(l))).toBe(true);
    await op.kill('cold', { wait: true });
    if (isolated) await until(() => leaves().length === 0, 10_000, 'no leaf after KILL');
    // The log says each exit and each restart, and no start failed.
    const log = fs.readFileSync(path.join(k.dataDir, 'logs', 'cold.log'), 'utf8');
    expect(log.match(/agent exited: killed by SIGKILL/g)?.length).toBe(8);
    expect(log).not.toMatch(/failed to spawn|cannot create the agent's cgroup|EBUSY/);
  });
});
