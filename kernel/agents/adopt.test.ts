/**
 * Agents outlive their kernel (issue 17 §1, docs/restart.md): a kernel SIGKILLed, or handing over with
 * `clove kernel --upgrade`, leaves its agents running; the next kernel on the same data dir re-adopts
 * them — same pid, same agent id, name and rights, the same process with its memory — watches them
 * without being their parent, and restarts by policy those that died while no kernel ran or that die
 * later. Sandboxed (clove-init without PDEATHSIG, cgroups kept) and plain (`--sandbox off`).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  startKernelProcess,
  tempDir,
  until,
  waitForSocket,
  type KernelProcess,
} from '../../harness/kernel.js';
import { startOf, Strays } from '../../harness/procs.js';
import { REPO_ROOT } from '../config.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { CgroupRoot, detectHostLayout } from '../sandbox/cgroups.js';

/**
 * Takes an extra name (REGISTER `<name>-alias`), then answers every message with what only this very process knows: how many it answered so far (memory a
 * restart would reset) and its agent id. Transport errors (its kernel is gone) are retried: the SDK
 * reconnects on the next call.
 */
const AGENT = `
import os, time
from clove_sdk import CloveClient

c = CloveClient(timeout=30)
assert c.register_name(os.environ["CLOVE_AGENT_NAME"] + "-alias")["success"]
assert c.subscribe(["tick"])["success"]
answered = 0
while True:
    try:
        m = c.wait_message(timeout=None)
    except Exception:
        time.sleep(0.1)
        continue
    answered += 1
    try:
        reply = {"answered": answered, "id": int(os.environ["CLOVE_AGENT_ID"])}
        if m["message"] == "events":
            reply["events"] = [e.get("data") for e in c.poll_events().get("events", [])]
        c.send_message(reply, to=m["from"])
    except Exception:
        pass
`;

const running: KernelProcess[] = [];
const strays = new Strays();
afterEach(async () => {
  for (const k of running.splice(0)) await k.stop('SIGTERM');
  strays.killAll();
});

/** A socket path and a data dir for a kernel and its successor, and the agent script (apart from both). */
function place(): { sock: string; data: string; script: string } {
  const dir = tempDir();
  const script = path.join(tempDir(), 'agent.py');
  fs.writeFileSync(script, AGENT);
  return { sock: path.join(dir, 's.sock'), data: path.join(dir, 'data'), script };
}

async function start(dataDir: string, socketPath: string, sandbox: string): Promise<KernelProcess> {
  const k = await startKernelProcess({
    dataDir,
    socketPath,
    extra: ['--log-level', 'info', '--sandbox', sandbox],
  });
  running.push(k);
  return k;
}

/** Sends `to` a ping and returns its answer. */
async function ping(
  c: CloveClient,
  to: string,
  body?: unknown,
): Promise<{ answered: number; id: number; from: number; events?: unknown[] }> {
  for (let i = 0; ; i++) {
    const sent = await c.send(to, body ?? { ping: i });
    expect(sent.success).toBe(true);
    const r = await c.recv({ max: 1, timeoutMs: 10_000 });
    if (r.messages.length) {
      const m = r.messages[0];
      return { ...(m.message as { answered: number; id: number }), from: m.from };
    }
    if (i > 5) throw new Error(`${to} does not answer`);
  }
}

function byName(list: { name: string }[]) {
  return Object.fromEntries(list.map((a) => [a.name, a])) as Record<
    string,
    (typeof list)[number] & Record<string, unknown>
  >;
}

describe.each(['auto', 'off'])('agents outlive a SIGKILLed kernel (sandbox %s)', (sandbox) => {
  it('the next kernel re-adopts them: same pid, id and memory; their later exits restart them by policy', async () => {
    const { sock, data, script } = place();

    const k1 = await start(data, sock, sandbox);
    const op1 = await k1.client();
    await op1.spawn({ name: 'keeper', script, restart_policy: 'on-failure' });
    await op1.spawn({ name: 'mortal', script, restart_policy: 'always' });
    await op1.spawn({ name: 'once', script, restart_policy: 'never' });
    for (const n of ['keeper', 'mortal', 'once']) expect((await ping(op1, n)).answered).toBe(1);
    const before = byName(await op1.list());
    for (const n of ['keeper', 'mortal', 'once']) strays.add(before[n].pid as number);
    const starts = Object.fromEntries(
      ['keeper', 'mortal', 'once'].map((n) => [n, startOf(before[n].pid as number)]),
    );

    const cgroupOf = (pid: number) => fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    const cgroups = cgroupOf(before.keeper.pid as number);

    k1.child.kill('SIGKILL');
    await k1.exited;
    await new Promise((r) => setTimeout(r, 300));
    for (const n of ['keeper', 'mortal', 'once'])
      expect(startOf(before[n].pid as number), `${n} runs on without a kernel`).toBe(starts[n]);
    // One dies while no kernel runs: the next one starts it again (policy always).
    process.kill(before.mortal.pid as number, 'SIGKILL');
    await until(() => startOf(before.mortal.pid as number) === null, 10_000, 'mortal gone');

    const k2 = await start(data, sock, sandbox);
    const op2 = await k2.client();
    const after = byName(await op2.list());
    for (const n of ['keeper', 'once']) {
      expect(after[n], n).toMatchObject({ id: before[n].id, pid: before[n].pid, state: 'RUNNING' });
      expect(startOf(after[n].pid as number), `${n} is the same process`).toBe(starts[n]);
    }
    // In the cgroups the dead kernel made for it, which the new kernel kept.
    expect(cgroupOf(after.keeper.pid as number)).toBe(cgroups);
    // The same process, with its memory: its counter goes on.
    const k = await ping(op2, 'keeper');
    expect(k).toMatchObject({ answered: 2, id: before.keeper.id, from: before.keeper.id });
    // The name it took with REGISTER is its own again, and so are its event subscriptions.
    expect(await ping(op2, 'keeper-alias')).toMatchObject({ answered: 3, from: before.keeper.id });
    await op2.emit('tick', { n: 1 });
    const ev = await ping(op2, 'keeper', 'events');
    expect(ev.events).toEqual([expect.objectContaining({ n: 1 })]);
    expect(k2.stderr().match(/agent re-adopted/g)?.length).toBe(2);

    // The dead one came back by policy, under its old id, as a new process.
    await until(async () => byName(await op2.list()).mortal?.state === 'RUNNING', 20_000, 'mortal back');
    const mortal = byName(await op2.list()).mortal;
    strays.add(mortal.pid as number);
    expect(mortal.id).toBe(before.mortal.id);
    expect(mortal.pid).not.toBe(before.mortal.pid);
    expect((await ping(op2, 'mortal')).answered).toBe(1);

    // An adopted agent that dies is seen (through its pidfd) and handled by its policy.
    process.kill(before.keeper.pid as number, 'SIGKILL');
    await until(
      async () => {
        const a = byName(await op2.list()).keeper;
        return a.state === 'RUNNING' && a.pid !== before.keeper.pid;
      },
      20_000,
      'keeper restarted',
    );
    const keeper = byName(await op2.list()).keeper;
    strays.add(keeper.pid as number);
    expect(keeper).toMatchObject({ id: before.keeper.id, restarts: 1, exit_reason: 'unknown' });
    expect((await ping(op2, 'keeper')).answered).toBe(1);
    // A never agent that dies after re-adoption stays down.
    process.kill(before.once.pid as number, 'SIGKILL');
    await until(async () => byName(await op2.list()).once === undefined, 20_000, 'once gone');
  }, 120_000);

  it('an agent whose kernel dies before its first call waits for the next kernel and is re-adopted', async () => {
    const { sock, data, script } = place();
    // The agent makes its first call only once the test opens the gate: after its kernel is gone.
    const gate = path.join(path.dirname(script), 'gate');
    const gated = path.join(path.dirname(script), 'gated.py');
    fs.writeFileSync(
      gated,
      `import os, time\nwhile not os.path.exists(${JSON.stringify(gate)}):\n    time.sleep(0.02)\n` + AGENT,
    );
    const k1 = await start(data, sock, sandbox);
    const op1 = await k1.client();
    await op1.spawn({ name: 'late', script: gated, restart_policy: 'always' });
    const before = byName(await op1.list()).late;
    strays.add(before.pid as number);
    const started = startOf(before.pid as number);
    k1.child.kill('SIGKILL');
    await k1.exited;
    fs.writeFileSync(gate, '');
    // Its first connect is refused now; its SDK (started by a kernel: CLOVE_AGENT_ID) waits instead of
    // failing the script.
    await new Promise((r) => setTimeout(r, 800));
    expect(startOf(before.pid as number), 'the agent waits for a kernel').toBe(started);
    const k2 = await start(data, sock, sandbox);
    const op2 = await k2.client();
    expect(byName(await op2.list()).late).toMatchObject({ id: before.id, pid: before.pid, restarts: 0 });
    expect(await ping(op2, 'late')).toMatchObject({ answered: 1, id: before.id, from: before.id });
    expect(byName(await op2.list()).late).toMatchObject({ pid: before.pid, restarts: 0 });
  }, 60_000);
});

describe('clove kernel --upgrade', () => {
  it('the running kernel hands its agents over and exits 0; the new one re-adopts them', async () => {
    const { sock, data, script } = place();
    const k1 = await start(data, sock, 'auto');
    const op1 = await k1.client();
    await op1.spawn({ name: 'keeper', script, restart_policy: 'always' });
    expect((await ping(op1, 'keeper')).answered).toBe(1);
    const before = byName(await op1.list()).keeper;
    strays.add(before.pid as number);
    op1.close();

    const upgrade = spawn(
      process.execPath,
      [path.join(REPO_ROOT, 'bin', 'clove.js'), '--socket', sock, 'kernel', '--data-dir', data, '--upgrade'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    upgrade.stderr!.on('data', (d) => (err += d));
    const upgraded = new Promise((r) => upgrade.once('exit', r));
    try {
      expect(await k1.exited).toEqual({ code: 0, signal: null });
      expect(k1.stderr()).toContain('handed over');
      await waitForSocket(sock, 15_000, upgraded);
      await until(() => err.includes('clove kernel ready'), 15_000, `the new kernel ready: ${err}`);
      const { CloveClient } = await import('../../sdk/typescript/client.js');
      const op2 = await CloveClient.connect({ socketPath: sock });
      const after = byName(await op2.list()).keeper;
      expect(after).toMatchObject({ id: before.id, pid: before.pid, state: 'RUNNING', restarts: 0 });
      expect((await ping(op2, 'keeper')).answered).toBe(2);
      op2.close();
    } finally {
      upgrade.kill('SIGTERM');
      await upgraded;
    }
  }, 120_000);
});

describe.runIf(process.geteuid?.() === 0)(
  'a dead kernel’s tagged cgroup root (agents that outlive it)',
  () => {
    it('is left alone by a kernel of another data dir while it holds a process, removed once empty', async () => {
      const layout = detectHostLayout();
      const h = layout.v2 ?? Object.values(layout.controllers)[0];
      if (!h) return;
      const dead = spawn('true');
      await new Promise((r) => dead.once('exit', r));
      const mk = (tag: string) => {
        const dir = path.join(h.ownDir, 'clove', `${dead.pid}.0.${tag}`, 'agent_1');
        fs.mkdirSync(dir, { recursive: true });
        if (h.version === 1 && h.controllers.includes('cpuset'))
          for (const d of [path.dirname(dir), dir])
            for (const f of ['cpuset.cpus', 'cpuset.mems'])
              fs.writeFileSync(
                path.join(d, f),
                fs.readFileSync(path.join(path.dirname(d), f), 'utf8').trim(),
              );
        return dir;
      };
      const busy = mk('0000aaaa');
      const empty = mk('0000bbbb');
      const sleeper = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
      // How it ended, should it end early (a fresh-clone CI run once found it gone: say who ended it).
      let ended = 'still running';
      sleeper.once('exit', (code, signal) => (ended = `exited: code ${code}, signal ${signal}`));
      strays.add(sleeper.pid!);
      fs.writeFileSync(path.join(busy, 'cgroup.procs'), String(sleeper.pid));
      const layoutOne = { ...layout, v1: h.version === 1 ? [h] : [], v2: h.version === 2 ? h : undefined };
      const controllers = Object.fromEntries(Object.entries(layout.controllers).filter(([, x]) => x === h));
      const root = new CgroupRoot({ ...layoutOne, controllers }, `test-${process.pid}`, '0000cccc');
      root.init();
      try {
        const alive = startOf(sleeper.pid!);
        // Gone: its 'exit' event (which fills `ended`) comes in a later turn.
        if (alive === null) await new Promise((r) => setTimeout(r, 100));
        expect(
          alive,
          `the other data dir’s survivor runs on (${ended}; root.leftovers ${JSON.stringify(root.leftovers)})`,
        ).not.toBeNull();
        expect(fs.existsSync(busy)).toBe(true);
        expect(fs.existsSync(path.dirname(empty)), 'an empty one is removed').toBe(false);
      } finally {
        root.close();
        sleeper.kill('SIGKILL');
        await new Promise((r) => sleeper.once('exit', r));
        for (let i = 0; i < 100 && fs.existsSync(path.dirname(busy)); i++) {
          try {
            fs.rmdirSync(busy);
            fs.rmdirSync(path.dirname(busy));
          } catch {
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }
    });
  },
);

describe('a re-adopted agent with a warm standby', () => {
  it('gets a new standby from the new kernel, which takes over at its next crash', async () => {
    const { sock, data, script } = place();
    const k1 = await start(data, sock, 'auto');
    const op1 = await k1.client();
    await op1.spawn({ name: 'warm', script, restart_policy: 'always', standby: 1 });
    const warmOf = async (c: CloveClient) => (await c.list()).find((a) => a.name === 'warm')!;
    await until(async () => (await warmOf(op1)).standby?.ready === true, 30_000, 'a first standby');
    // Serving first: the process that answers is the one the next kernel must re-adopt.
    await ping(op1, 'warm');
    const before = await warmOf(op1);
    strays.add(before.pid);
    k1.child.kill('SIGKILL');
    await k1.exited;
    const k2 = await start(data, sock, 'auto');
    const op2 = await k2.client();
    expect(await warmOf(op2)).toMatchObject({ id: before.id, pid: before.pid });
    await until(
      async () => (await warmOf(op2)).standby?.ready === true,
      30_000,
      'a standby of the new kernel',
    );
    const standby = (await warmOf(op2)).standby!.pid;
    expect(standby).not.toBe(before.standby!.pid);
    process.kill(before.pid, 'SIGKILL');
    await until(async () => (await warmOf(op2)).pid === standby, 30_000, 'the standby promoted');
    strays.add(standby);
    expect((await ping(op2, 'warm')).id).toBe(before.id);
  }, 120_000);
});
