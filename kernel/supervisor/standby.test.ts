/**
 * Warm standby (docs/supervision.md "Warm standby") against a real kernel: a Python agent spawned with
 * `standby: 1` gets a parked process; SIGKILL of the agent promotes it (the agent's new pid is the
 * standby's), it answers through the SDK, and a new standby is prepared; KILL removes the standby.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import { programPid } from '../../harness/procs.js';
import { listed as info, ask, readyAgent } from '../../harness/operator.js';
import { alive } from '../../cli/lib.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import type { AgentInfo } from '../../protocol/index.js';
import { parkedIn, standbyArgv } from './standby.js';

const AGENT = `
import os, sys
import clove_sdk.client
from clove_sdk import CloveClient
pre = clove_sdk.client._preconnected is not None
drops = []
with CloveClient(on_reconnect=lambda: drops.append(1)) as c:
    c.hello()
    while True:
        m = c.wait_message(timeout=None)
        if m is None:
            continue
        c.send_message({"argv": sys.argv[1:3], "name": __name__, "path0": sys.path[0], "preconnected": pre,
                        "reconnects": len(drops)}, to=m["from"])
`;

let k: TestKernel | undefined;
afterEach(async () => {
  await k?.stop();
  k = undefined;
});

/** The agent's LIST entry once its standby is ready. */
function standbyReady(op: CloveClient, name: string, what: string): Promise<AgentInfo> {
  return until(
    async () => {
      const a = await info(op, name);
      return a.standby?.ready ? a : undefined;
    },
    20_000,
    what,
  );
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
      expect(await ask(op, 'warm')).toMatchObject({
        argv: ['x', 'y'],
        name: '__main__',
        path0: dir,
        preconnected: false,
      });

      // SIGKILL the agent's process (its Python, or clove-init's whole namespace).
      process.kill(first.pid, 'SIGKILL');
      const back = await readyAgent(op, 'warm', 'agent back', first.pid);
      if (back.pid !== standbyPid) console.log(fs.readFileSync(back.log_file!, 'utf8'));
      expect(back.pid).toBe(standbyPid);
      expect(back.restarts).toBe(1);
      // Its connection was opened while parked, and the kernel kept it when the old process died.
      expect(await ask(op, 'warm')).toMatchObject({
        argv: ['x', 'y'],
        name: '__main__',
        preconnected: true,
        reconnects: 0,
      });

      // A new standby appears.
      const next = await standbyReady(op, 'warm', 'new standby ready');
      const nextPid = next.standby!.pid;
      expect(nextPid).not.toBe(standbyPid);
      expect(alive(nextPid)).toBe(true);

      // A crash of the agent's program itself (below clove-init when sandboxed): init reports it at once
      // (onEnded) and the standby is promoted while the old namespace is still being torn down.
      const watcher = await k.client();
      await watcher.subscribe(['AGENT_EXITED', 'AGENT_RESTARTING', 'AGENT_SPAWNED']);
      process.kill(programPid(back.pid), 'SIGKILL');
      const crashed = await until(
        async () => {
          const a = await info(op, 'warm');
          return a.pid === nextPid && a.ready ? a : undefined;
        },
        20_000,
        'agent back after its program crashed',
      );
      expect(crashed.restarts).toBe(2);
      expect(crashed.exit_signal).toBe('SIGKILL');
      expect(await ask(op, 'warm')).toMatchObject({ argv: ['x', 'y'], preconnected: true, reconnects: 0 });
      // The bookkeeping held back while the standby was promoted (Supervisor.later) was all done, in
      // order: the lifecycle events, the log's notes, the registry's record of the new pid.
      const seen: string[] = [];
      await until(
        async () => {
          const r = await watcher.pollEvents({ max: 16, timeoutMs: 1000 });
          for (const e of r.events)
            if (e.data.agent_name === 'warm' || e.data.name === 'warm') seen.push(e.type);
          return seen.includes('AGENT_SPAWNED');
        },
        10_000,
        'the lifecycle events of the promotion',
      );
      expect(seen).toEqual(['AGENT_EXITED', 'AGENT_RESTARTING', 'AGENT_SPAWNED']);
      const log = fs.readFileSync(crashed.log_file!, 'utf8');
      const exitedAt = log.lastIndexOf('agent exited: killed by SIGKILL');
      expect(exitedAt).toBeGreaterThan(0);
      expect(log.indexOf(`promoting the warm standby (pid ${nextPid})`, exitedAt)).toBeGreaterThan(exitedAt);
      const db = new Database(path.join(k.dataDir, 'state.db'), { readonly: true });
      try {
        const row = db.prepare('SELECT pid FROM agent_identity WHERE name = ?').get('warm') as {
          pid: number;
        };
        expect(row.pid, 'the registry records the promoted pid').toBe(nextPid);
      } finally {
        db.close();
      }
      const third = await standbyReady(op, 'warm', 'standby after the crash');
      const thirdPid = third.standby!.pid;

      // RESTART promotes the standby too (a restart all the same).
      const rs = await op.restart('warm', { wait: true });
      const afterRestart = await info(op, 'warm');
      expect(afterRestart.pid).toBe(thirdPid);
      expect(rs.success).toBe(true);
      expect(afterRestart.restarts).toBe(3);
      expect(await ask(op, 'warm')).toMatchObject({ argv: ['x', 'y'], name: '__main__' });
      const last = await standbyReady(op, 'warm', 'standby after RESTART');
      const lastPid = last.standby!.pid;

      // KILL of the agent removes its standby.
      await op.kill('warm', { wait: true });
      await until(() => !alive(lastPid), 10_000, 'standby gone');
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

      // Kernel shutdown kills the standby.
      const parked = (await info(op, 'warm2')).standby!.pid;
      expect(alive(parked)).toBe(true);
      await k.stop();
      k = undefined;
      await until(() => !alive(parked), 10_000, 'standby gone with the kernel');
    }, 60_000);
  });
}

describe('standby launcher detection', () => {
  it('maps python argv to the launcher, and refuses others', () => {
    expect(standbyArgv(['/usr/bin/python3.11', '/a/b.py', 'x'])).toEqual([
      '/usr/bin/python3.11',
      '-m',
      'clove_sdk._standby',
      '/a/b.py',
      'x',
    ]);
    expect(standbyArgv(['/usr/bin/node', '/a/b.js'])).toHaveProperty('note');
    expect(standbyArgv(['/usr/bin/python3', '-c', 'pass'])).toHaveProperty('note');
  });

  it('is parked only when the launcher itself blocks the marker, not a process naming it in its argv', async () => {
    const py = process.env.CLOVE_PYTHON ?? 'python3';
    const env = { ...process.env, PYTHONPATH: path.join(process.cwd(), 'sdk', 'python') };
    // A process that blocks everything and names the module later in its argv (as clove-init does).
    const decoy = spawn(
      py,
      [
        '-c',
        'import signal,time\nsignal.pthread_sigmask(signal.SIG_BLOCK,set(range(1,32))-{9,19})\ntime.sleep(60)',
        '-m',
        'clove_sdk._standby',
      ],
      { env, stdio: 'ignore' },
    );
    const real = spawn(py, ['-m', 'clove_sdk._standby', '/nonexistent.py'], { env, stdio: 'ignore' });
    try {
      await until(() => parkedIn(real.pid!) === real.pid, 20_000, 'launcher parked');
      // The decoy has blocked SIGUSR2 (the marker) by now, too.
      await until(
        () =>
          /^SigBlk:\s*[0-9a-f]*[89a-f][0-9a-f]{2}$/m.test(
            fs.readFileSync(`/proc/${decoy.pid}/status`, 'utf8'),
          ),
        20_000,
        'decoy blocked',
      );
      expect(parkedIn(decoy.pid!)).toBe(0);
    } finally {
      decoy.kill('SIGKILL');
      real.kill('SIGKILL');
    }
  });
});
