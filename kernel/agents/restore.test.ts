/**
 * Kernel death is survivable (issue 9), for kernels run with `--agents-die-with-kernel`: a kernel
 * SIGKILLed and started again on the same data dir kills
 * what its predecessor's agents left running, brings back its `always` and `on-failure` agents with
 * their identity and agent-scope state, and keeps a `never` agent's identity dormant for an operator.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startOf, Strays } from '../../harness/procs.js';
import { startKernelProcess, tempDir, until, type KernelProcess } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';
import { CgroupRoot, detectHostLayout, type CgroupLayout, type Hierarchy } from '../sandbox/cgroups.js';
import { processTree } from '../sandbox/native-spawner.js';

const isRoot = process.geteuid?.() === 0;

/**
 * Counts its starts in an agent-scope key and in its work directory, reports each start to the name
 * `observer` (retrying until somebody holds it), then runs the steps of the `{"plan": [...]}` messages
 * it gets, answering the sender. It outlives its kernel when nothing kills it.
 */
const AGENT = `
import json, os, sys, time
from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

c = CloveClient(timeout=30)
c.connect()
name = os.environ["CLOVE_AGENT_NAME"]
r = c.fetch("starts", scope="agent")
starts = (r["value"] if r.get("exists") else 0) + 1
c.store("starts", starts, scope="agent")
with open("starts.log", "a") as f:
    f.write(f"{starts}\\n")
with open("starts.log") as f:
    logged = f.read().split()
report = {"from": name, "starts": starts, "logged": logged, "id": c.hello()["agent_id"], "uid": os.getuid()}
while not c.send_message(report, to_name="observer").get("success"):
    time.sleep(0.1)
while True:
    try:
        m = c.wait_message(timeout=None)
    except Exception:
        time.sleep(3600)  # busy: it does not notice that its kernel is gone
        continue
    body = m["message"]
    if isinstance(body, dict) and "plan" in body:
        out = []
        for op, *a in body["plan"]:
            if op == "register":
                out.append(c.register_name(a[0]))
            elif op == "spawn":
                out.append(c.call_json(SyscallOp.SYS_SPAWN, a[0]))
        c.send_message({"from": name, "out": out}, to=m["from"])
`;

interface Report {
  from: string;
  starts: number;
  logged: string[];
  id: number;
  uid: number;
  out?: Record<string, unknown>[];
}

const running: KernelProcess[] = [];
/** Processes to SIGKILL should a test fail half way (an unsandboxed agent outlives a SIGKILLed kernel). */
const strays = new Strays();
afterEach(async () => {
  for (const k of running.splice(0)) await k.stop('SIGTERM');
  strays.killAll();
});

/** A process, named for good by its pid and start time (pids are reused). */
interface Proc {
  pid: number;
  start: string;
}

function procsOf(root: number): Proc[] {
  return processTree(root).flatMap((pid) => {
    const start = startOf(pid);
    return start ? [{ pid, start }] : [];
  });
}

const alive = (p: Proc) => startOf(p.pid) === p.start;

/**
 * The cgroup roots a kernel (a child of this process, so in the same cgroups) made,
 * `<own>/clove/<pid>.0.<data dir tag>`.
 */
function cgroupRootsOf(kernelPid: number): string[] {
  const layout = detectHostLayout();
  const hs = [...(layout.v2 ? [layout.v2] : []), ...layout.v1];
  return hs.flatMap((h) => {
    const base = path.join(h.ownDir, 'clove');
    const names = fs.existsSync(base) ? fs.readdirSync(base) : [];
    return names.filter((n) => n.startsWith(`${kernelPid}.0.`)).map((n) => path.join(base, n));
  });
}

/** The agent script, in a directory of its own (not above the data dir: it is shared with the agent). */
function writeAgent(): string {
  const script = path.join(tempDir(), 'agent.py');
  fs.writeFileSync(script, AGENT);
  return script;
}

/**
 * Kernels that do not re-adopt (`--agents-die-with-kernel`): what a dead kernel left is killed and started
 * again. Re-adoption, the default, is kernel/agents/adopt.test.ts.
 */
async function start(dataDir: string, socketPath: string, extra: string[] = []) {
  const k = await startKernelProcess({
    dataDir,
    socketPath,
    extra: ['--log-level', 'info', '--agents-die-with-kernel', ...extra],
  });
  running.push(k);
  return k;
}

/** Collects reports sent to the name `observer`. */
class Observer {
  private got: Report[] = [];
  constructor(readonly c: CloveClient) {}

  /**
   * Its client does not reconnect: the SDK would otherwise carry `observer` over to the next kernel on
   * the same socket and race that kernel's own observer for the name (a CI failure: name_taken).
   */
  static async on(k: KernelProcess): Promise<Observer> {
    const c = await k.client({ reconnect: false });
    await c.register('observer');
    return new Observer(c);
  }

  /** The next report from `name` matching `pred`. */
  async next(name: string, pred: (r: Report) => boolean = () => true): Promise<Report> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      const i = this.got.findIndex((r) => r.from === name && pred(r));
      if (i >= 0) return this.got.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`no report from ${name} within 20 s`);
      const r = await this.c.recv({ max: 16, timeoutMs: 1000 });
      for (const m of r.messages) this.got.push(m.message as Report);
    }
  }
}

describe('kernel death is survivable', () => {
  it('always and on-failure agents come back with their state; a never agent stays dormant for an operator', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 's.sock');
    const data = path.join(dir, 'data');
    const script = writeAgent();

    const k1 = await start(data, sock);
    const obs1 = await Observer.on(k1);
    const op1 = obs1.c;
    await op1.spawn({
      name: 'ever',
      script,
      restart_policy: 'always',
      labels: { 'clove.project': 'p', 'clove.service': 'ever' },
    });
    // Unsandboxed: no clove-init, no PDEATHSIG; only the next kernel's cleanup can stop it.
    await op1.spawn({ name: 'onfail', script, restart_policy: 'on-failure', sandboxed: false });
    await op1.spawn({ name: 'once', script, restart_policy: 'never' });
    const first = {
      ever: await obs1.next('ever'),
      onfail: await obs1.next('onfail'),
      once: await obs1.next('once'),
    };
    for (const r of Object.values(first)) expect(r.starts).toBe(1);
    const list1 = await op1.list();
    const procs = Object.fromEntries(list1.map((a) => [a.name, procsOf(a.pid)]));
    for (const n of ['ever', 'onfail', 'once']) expect(procs[n].length, n).toBeGreaterThan(0);
    for (const p of procs.onfail) strays.add(p.pid);

    k1.child.kill('SIGKILL');
    await k1.exited;
    // Sandboxed agents die with their kernel (clove-init has PR_SET_PDEATHSIG).
    await until(() => ![...procs.ever, ...procs.once].some(alive), 10_000, 'sandboxed agents gone');
    // The unsandboxed one is still running, in the dead kernel's cgroup root.
    const roots = cgroupRootsOf(k1.child.pid!);
    expect(roots.length, 'the dead kernel’s cgroup roots').toBeGreaterThan(0);
    const unsandboxedLeft = procs.onfail.some(alive);

    const k2 = await start(data, sock);
    // The new kernel killed what the old one left before it started anything.
    const left = Object.values(procs).flat().filter(alive);
    expect(left, `processes of the dead kernel still running: ${JSON.stringify(left)}`).toEqual([]);
    expect(
      roots.filter((d) => fs.existsSync(d)),
      'its cgroup roots are gone',
    ).toEqual([]);
    expect(unsandboxedLeft || !isRoot).toBe(true);

    const obs2 = await Observer.on(k2);
    const op2 = obs2.c;
    const ever = await obs2.next('ever');
    const onfail = await obs2.next('onfail');
    // Their agent-scope key and work directory came back with their identity.
    expect(ever).toMatchObject({ starts: 2, logged: ['1', '2'] });
    expect(onfail).toMatchObject({ starts: 2, logged: ['1', '2'] });
    const list2 = await op2.list();
    const byName = Object.fromEntries(list2.map((a) => [a.name, a]));
    expect(byName.ever?.state).toBe('RUNNING');
    expect(byName.onfail?.state).toBe('RUNNING');
    expect(byName.ever.restart_policy).toBe('always');
    expect(byName.onfail.restart_policy).toBe('on-failure');
    expect(byName.once, 'a never agent is not started again').toBeUndefined();
    expect(byName.ever.parent_id).toBe(0);
    expect(byName.ever.labels, 'labels come back with the agent').toEqual({
      'clove.project': 'p',
      'clove.service': 'ever',
    });
    expect(byName.onfail.labels).toEqual({});
    for (const n of ['ever', 'onfail']) strays.add(byName[n].pid);
    await until(() => k2.stderr().includes('its identity stays, dormant'), 5000, 'the restore log');
    expect(k2.stderr().match(/"agent restored"/g)?.length).toBe(2);
    expect(k2.stderr()).toMatch(/"agent":"once".*its identity stays, dormant/);

    // The dormant identity keeps its name from everybody but an operator's SPAWN.
    await op2.spawn({ name: 'prober', script, permissions: { can_spawn: true } });
    await obs2.next('prober');
    await op2.send('prober', {
      plan: [
        ['register', 'once'],
        ['spawn', { name: 'once', script }],
      ],
    });
    const probe = await obs2.next('prober', (r) => Array.isArray(r.out));
    const [register, spawnOnce] = probe.out!;
    expect.soft(register, 'REGISTER of a dormant name').toMatchObject({ code: 'name_taken' });
    expect(spawnOnce, 'SPAWN of a dormant name').toMatchObject({ code: 'name_taken' });
    expect(String(spawnOnce.error)).toMatch(/reserved/);
    await op2.spawn({ name: 'once', script });
    const once = await obs2.next('once');
    expect(once, 'the operator took the identity back, keys and work dir included').toMatchObject({
      starts: 2,
      logged: ['1', '2'],
    });
    if (process.geteuid?.() === 0) expect(once.uid).not.toBe(first.once.uid); // a new id: its work dir re-owned
  });

  it('without a sandbox (plain processes), a dead kernel’s agents are killed by their recorded pid', async () => {
    const dir = tempDir();
    const sock = path.join(dir, 's.sock');
    const data = path.join(dir, 'data');
    const script = writeAgent();
    const k1 = await start(data, sock, ['--sandbox', 'off']);
    const obs1 = await Observer.on(k1);
    await obs1.c.spawn({ name: 'plain', script, restart_policy: 'always' });
    expect((await obs1.next('plain')).starts).toBe(1);
    const old = procsOf((await obs1.c.list())[0].pid);
    for (const p of old) strays.add(p.pid);
    k1.child.kill('SIGKILL');
    await k1.exited;
    expect(old.some(alive), 'a plain agent outlives its SIGKILLed kernel').toBe(true);

    const k2 = await start(data, sock, ['--sandbox', 'off']);
    const obs2 = await Observer.on(k2);
    expect(await obs2.next('plain')).toMatchObject({ starts: 2, logged: ['1', '2'] });
    expect(old.filter(alive)).toEqual([]);
    strays.add((await obs2.c.list())[0].pid);
    await until(() => /killing a process left by a dead kernel/.test(k2.stderr()), 5000, 'the log line');
  });
});

/** A pid that names no process (one that just exited). */
async function deadPid(): Promise<number> {
  const c = spawn('true');
  await new Promise((r) => c.once('exit', r));
  return c.pid!;
}

/**
 * A dead kernel's cgroup root as it leaves one: `<own>/clove/<pid>.0/<agent>` in every hierarchy of
 * `layout`, holding a live process (optionally frozen by the v1 freezer).
 */
async function staleRoot(layout: CgroupLayout, freeze: boolean) {
  const child = spawn('sleep', ['600'], { stdio: 'ignore', detached: true });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
  strays.add(child.pid!);
  const top: string[] = [];
  const hs = new Set<Hierarchy>([...Object.values(layout.controllers), ...(layout.v2 ? [layout.v2] : [])]);
  const name = `${await deadPid()}.0`;
  for (const h of hs) {
    const dir = path.join(h.ownDir, 'clove', name, 'agent_1');
    fs.mkdirSync(dir, { recursive: true });
    if (h.version === 1 && h.controllers.includes('cpuset'))
      for (const d of [path.dirname(dir), dir])
        for (const f of ['cpuset.cpus', 'cpuset.mems'])
          fs.writeFileSync(path.join(d, f), fs.readFileSync(path.join(path.dirname(d), f), 'utf8').trim());
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(child.pid));
    if (freeze && h.controllers.includes('freezer'))
      fs.writeFileSync(path.join(dir, 'freezer.state'), 'FROZEN');
    top.push(path.dirname(dir));
  }
  return { pid: child.pid!, exited, top };
}

describe.runIf(isRoot)('a dead kernel’s cgroup root', () => {
  it('every process left in it is SIGKILLed before it is removed (v2: cgroup.kill)', async () => {
    const layout = detectHostLayout();
    if (!layout.v2) return;
    const stale = await staleRoot(layout, false);
    const root = new CgroupRoot(layout, `test-${process.pid}`);
    root.init();
    try {
      expect(await stale.exited).toBe('SIGKILL');
      expect(stale.top.filter((d) => fs.existsSync(d))).toEqual([]);
    } finally {
      root.close();
    }
  });

  it('v1 only: a frozen process is thawed and SIGKILLed, then the root is removed', async () => {
    const host = detectHostLayout();
    if (!host.v1.some((h) => h.controllers.includes('freezer'))) return;
    const controllers = Object.fromEntries(
      Object.entries(host.controllers).filter(([, h]) => h.version === 1),
    );
    const layout: CgroupLayout = { ...host, v2: undefined, controllers, version: 'v1' };
    const stale = await staleRoot(layout, true);
    const root = new CgroupRoot(layout, `test-${process.pid}`);
    root.init();
    try {
      expect(await stale.exited).toBe('SIGKILL');
      expect(stale.top.filter((d) => fs.existsSync(d))).toEqual([]);
    } finally {
      root.close();
    }
  });
});
