/**
 * Spare sandbox (docs/supervision.md "Spare sandbox") against a real kernel with the native sandbox: a
 * sandboxed agent that may be restarted keeps its next sandbox made in advance (a clove-init parked with
 * `--park`, nothing of the program running); a crash or RESTART starts the program in it, with the same
 * isolation, and a new spare is made; KILL, `restart_policy: never`, `--no-spare-sandboxes` and a dead
 * kernel leave no parked clove-init behind.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import {
  startKernel,
  startKernelProcess,
  tempDir,
  until,
  type KernelProcess,
  type TestKernel,
} from '../../harness/kernel.js';
import { programPid } from '../../harness/procs.js';
import { listed as info, ask, readyAgent } from '../../harness/operator.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { alive } from '../../cli/lib.js';

const AGENT = `
import os
from clove_sdk import CloveClient
with CloveClient() as c:
    c.hello()
    while True:
        m = c.wait_message(timeout=None)
        if m is None:
            continue
        c.send_message({"pid": os.getpid(), "uid": os.getuid(), "host": os.uname().nodename,
                        "mark": os.environ.get("MARK")}, to=m["from"])
`;

let k: TestKernel | undefined;
let kp: KernelProcess | undefined;
afterEach(async () => {
  await k?.stop();
  k = undefined;
  await kp?.stop();
  kp = undefined;
});

/** Pids of the clove-inits parked (`--park`) for `script`. */
function parkedInits(script: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${e}/cmdline`, 'latin1').split('\0');
      if (argv[0] === 'clove-init' && argv.includes('--park') && argv.includes(script)) out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

/** The one spare sandbox of `script` once it is parked (and not `not`). */
function spareOf(script: string, what: string, not?: number): Promise<number> {
  return until(
    () => {
      const p = parkedInits(script).filter((x) => x !== not);
      return p.length === 1 ? p[0] : undefined;
    },
    20_000,
    what,
  );
}

function script(): { dir: string; file: string } {
  const dir = tempDir();
  const file = path.join(dir, 'spare_agent.py');
  fs.writeFileSync(file, AGENT, { mode: 0o644 });
  return { dir, file };
}

/** Whether the agent runs in the native sandbox (a spare needs clove-init in a PID namespace). */
function nativeSandbox(spawned: { isolation?: { namespaces?: { pid?: boolean } } }): boolean {
  return spawned.isolation?.namespaces?.pid === true;
}

/** Resolves once a new kernel lists the agent `keep` with the pid it had under the dead one. */
function readopted(op: CloveClient, pid: number): Promise<true> {
  return until(
    async () => ((await op.list()).find((x) => x.name === 'keep')?.pid === pid ? true : undefined),
    20_000,
    `keep re-adopted with pid ${pid}`,
  );
}

describe('spare sandbox', () => {
  it('a crash starts the program in the spare sandbox made in advance; a new spare follows; KILL removes it', async () => {
    k = await startKernel({ sandbox: 'auto' });
    const { file } = script();
    const op = await k.client();
    await op.hello();
    const r = await op.spawn({
      name: 'spry',
      script: file,
      restart_policy: 'always',
      env: { MARK: 'm1' },
    });
    expect(r.success).toBe(true);
    const first = await readyAgent(op, 'spry', 'agent ready');
    if (!nativeSandbox(r)) return; // plain processes: nothing to park
    const before = await ask(op, 'spry');
    // Made a little after the first start (an agent failing at once gets none), with nothing running in it.
    const spare = await spareOf(file, 'spare parked');
    expect(spare).not.toBe(first.pid);
    expect((await info(op, 'spry')).spare).toEqual({ ready: true, pid: spare });
    expect(fs.readFileSync(`/proc/${spare}/task/${spare}/children`, 'latin1').trim()).toBe('');

    // SIGKILL of the program: it starts again inside the spare, as its root.
    process.kill(programPid(first.pid), 'SIGKILL');
    const back = await readyAgent(op, 'spry', 'agent back', first.pid);
    expect(back.pid).toBe(spare);
    expect(back.restarts).toBe(1);
    const after = await ask(op, 'spry');
    // Same account, same environment, its own PID namespace (program under clove-init, pid 2).
    expect(after).toMatchObject({ uid: before.uid, host: before.host, mark: 'm1', pid: 2 });
    expect(programPid(back.pid)).not.toBe(back.pid);
    expect(alive(first.pid)).toBe(false);

    // A new spare is made; RESTART uses it as well.
    const next = await spareOf(file, 'next spare parked', spare);
    expect(next).not.toBe(spare);
    const rs = await op.restart('spry', { wait: true });
    expect(rs.success).toBe(true);
    const restarted = await info(op, 'spry');
    expect(restarted.pid).toBe(next);
    expect(restarted.restarts).toBe(2);
    expect(await ask(op, 'spry')).toMatchObject({ uid: before.uid, mark: 'm1' });
    const third = await spareOf(file, 'third spare parked', next);

    // KILL removes the agent and its spare.
    await op.kill('spry', { wait: true });
    await until(() => !alive(third) && !alive(next), 10_000, 'agent and spare gone');
    expect(parkedInits(file)).toEqual([]);
  }, 60_000);

  it('no spare for restart_policy never, SPAWN spare: false, nor with --no-spare-sandboxes (which still restarts)', async () => {
    k = await startKernel({ sandbox: 'auto' });
    const once = script();
    const nope = script();
    const op = await k.client();
    await op.hello();
    const r = await op.spawn({ name: 'once', script: once.file, restart_policy: 'never' });
    await op.spawn({ name: 'nope', script: nope.file, restart_policy: 'always', spare: false });
    await readyAgent(op, 'once', 'once ready');
    await readyAgent(op, 'nope', 'nope ready');
    if (!nativeSandbox(r)) return;
    // The spare would be made 1 s after the start.
    await new Promise((r) => setTimeout(r, 1500));
    expect(parkedInits(once.file)).toEqual([]);
    expect((await info(op, 'once')).spare).toBeUndefined();
    expect(parkedInits(nope.file)).toEqual([]);
    expect((await info(op, 'nope')).spare).toBeUndefined();
    await k.stop();
    k = undefined;

    k = await startKernel({ sandbox: 'auto', spareSandboxes: false });
    const again = script();
    const op2 = await k.client();
    await op2.hello();
    await op2.spawn({ name: 'again', script: again.file, restart_policy: 'always' });
    const a = await readyAgent(op2, 'again', 'ready');
    await new Promise((r) => setTimeout(r, 1500));
    expect(parkedInits(again.file)).toEqual([]);
    expect((await info(op2, 'again')).spare).toBeUndefined();
    process.kill(programPid(a.pid), 'SIGKILL');
    const back = await readyAgent(op2, 'again', 'agent back without a spare', a.pid);
    expect(back.restarts).toBe(1);
    expect(await ask(op2, 'again')).toMatchObject({ pid: 2 });
  }, 60_000);

  it('a parked spare dies with a SIGKILLed kernel; the agent lives on and the next kernel makes a new spare', async () => {
    kp = await startKernelProcess();
    const { file } = script();
    const op = await kp.client();
    await op.hello();
    const r = await op.spawn({ name: 'keep', script: file, restart_policy: 'always' });
    const first = await readyAgent(op, 'keep', 'agent ready');
    if (!nativeSandbox(r)) return;
    const spare = await spareOf(file, 'spare parked');
    const { socketPath, dataDir } = kp;
    await kp.stop('SIGKILL');
    kp = undefined;
    // PR_SET_PDEATHSIG: a parked sandbox is nothing to re-adopt; the agent itself outlives the kernel.
    await until(() => !alive(spare), 10_000, 'spare gone with the kernel');
    expect(alive(first.pid)).toBe(true);

    kp = await startKernelProcess({ socketPath, dataDir });
    const op2 = await kp.client();
    await readopted(op2, first.pid);
    const next = await spareOf(file, 'a new spare from the new kernel', spare);
    process.kill(programPid(first.pid), 'SIGKILL');
    const back = await readyAgent(op2, 'keep', 'agent back in the new spare', first.pid);
    expect(back.pid).toBe(next);
    // Once released, the agent outlives the kernel like any other (PR_SET_PDEATHSIG was lifted).
    const last = await spareOf(file, 'the spare after that', next);
    await kp.stop('SIGKILL');
    kp = undefined;
    await until(() => !alive(last), 10_000, 'parked spare gone with the kernel');
    expect(alive(next)).toBe(true);
    expect(alive(programPid(next))).toBe(true);
    expect(programPid(next)).not.toBe(next);
    // A last kernel re-adopts it; its graceful stop (afterEach) removes the agent and its cgroups.
    kp = await startKernelProcess({ socketPath, dataDir });
    await readopted(await kp.client(), next);
  }, 60_000);
});
