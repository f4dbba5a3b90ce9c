/**
 * Warm standby (docs/supervision.md "Warm standby") against a real kernel: a Python agent spawned with
 * `standby: 1` gets a parked process; SIGKILL of the agent promotes it (the agent's new pid is the
 * standby's), it answers through the SDK, and a new standby is prepared; KILL removes the standby.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import type { AgentInfo } from '../../protocol/index.js';

const AGENT = `
import os, sys
from clove_sdk import CloveClient
with CloveClient() as c:
    c.hello()
    while True:
        m = c.wait_message(timeout=None)
        if m is None:
            continue
        c.send_message({"argv": sys.argv[1:3], "name": __name__, "path0": sys.path[0]}, to=m["from"])
`;

let k: TestKernel | undefined;
afterEach(async () => {
  await k?.stop();
  k = undefined;
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function info(op: CloveClient, name: string): Promise<AgentInfo> {
  const a = (await op.list()).find((x) => x.name === name);
  if (!a) throw new Error(`${name} not listed`);
  return a;
}

async function ask(op: CloveClient, name: string): Promise<Record<string, unknown>> {
  await op.send(name, { q: 1 });
  const r = await op.recv({ timeoutMs: 10_000 });
  const m = r.messages?.[0];
  if (!m) throw new Error(`${name} did not answer`);
  return m.message as Record<string, unknown>;
}

for (const sandbox of ['auto', 'off'] as const) {
  describe(`warm standby (--sandbox ${sandbox})`, () => {
    it('a SIGKILLed Python agent is answered by promoting its standby; a new one is prepared; KILL removes it', async () => {
      k = await startKernel({ sandbox });
      const dir = tempDir();
      const script = path.join(dir, 'sb_agent.py');
      fs.writeFileSync(script, AGENT, { mode: 0o644 });
      const op = await k.client();
      await op.hello();
      const r = await op.spawn({
        name: 'warm',
        script,
        args: ['x', 'y'],
        restart_policy: 'on-failure',
        standby: 1,
      });
      expect(r.success).toBe(true);
      const first = await until(
        async () => {
          const a = await info(op, 'warm');
          return a.standby?.ready && a.ready ? a : undefined;
        },
        20_000,
        'standby ready',
      );
      const standbyPid = first.standby!.pid;
      expect(standbyPid).toBeGreaterThan(0);
      expect(standbyPid).not.toBe(first.pid);
      expect(alive(standbyPid)).toBe(true);
      expect(await ask(op, 'warm')).toMatchObject({ argv: ['x', 'y'], name: '__main__', path0: dir });

      // SIGKILL the agent's process (its Python, or clove-init's whole namespace).
      process.kill(first.pid, 'SIGKILL');
      const back = await until(
        async () => {
          const a = await info(op, 'warm');
          return a.pid !== first.pid && a.ready ? a : undefined;
        },
        20_000,
        'agent back',
      );
      if (back.pid !== standbyPid) console.log(fs.readFileSync(back.log_file!, 'utf8'));
      expect(back.pid).toBe(standbyPid);
      expect(back.restarts).toBe(1);
      expect(await ask(op, 'warm')).toMatchObject({ argv: ['x', 'y'], name: '__main__' });

      // A new standby appears.
      const next = await until(
        async () => {
          const a = await info(op, 'warm');
          return a.standby?.ready ? a : undefined;
        },
        20_000,
        'new standby ready',
      );
      const nextPid = next.standby!.pid;
      expect(nextPid).not.toBe(standbyPid);
      expect(alive(nextPid)).toBe(true);

      // KILL of the agent removes its standby.
      await op.kill('warm', { wait: true });
      await until(() => !alive(nextPid), 10_000, 'standby gone');
      expect((await op.list()).some((a) => a.name === 'warm')).toBe(false);
    }, 60_000);

    it('a standby that dies parked is replaced; a non-Python agent gets a note', async () => {
      k = await startKernel({ sandbox });
      const dir = tempDir();
      const script = path.join(dir, 'sb_agent.py');
      fs.writeFileSync(script, AGENT, { mode: 0o644 });
      const sh = path.join(dir, 'agent.sh');
      fs.writeFileSync(sh, '#!/bin/sh\nexec sleep 600\n', { mode: 0o755 });
      const op = await k.client();
      await op.hello();
      await op.spawn({ name: 'warm2', script, restart_policy: 'always', standby: 1 });
      const a = await until(
        async () => {
          const x = await info(op, 'warm2');
          return x.standby?.ready ? x : undefined;
        },
        20_000,
        'standby ready',
      );
      process.kill(a.standby!.pid, 'SIGKILL');
      const b = await until(
        async () => {
          const x = await info(op, 'warm2');
          return x.standby?.ready && x.standby.pid !== a.standby!.pid ? x : undefined;
        },
        20_000,
        'standby replaced',
      );
      expect(b.pid).toBe(a.pid); // the agent itself was not touched
      expect(b.restarts).toBe(0);

      await op.spawn({ name: 'shell', script: sh, standby: 1 });
      const s = await info(op, 'shell');
      expect(s.standby).toMatchObject({ ready: false, pid: 0 });
      expect(s.standby?.note).toMatch(/only Python agents/);
    }, 60_000);
  });
}
