/**
 * Spawning as a new user does it (issue 8's defects): a script in a directory only its owner can enter,
 * sandboxed and unsandboxed, with the Python interpreter under a 0700 home; and a watchdog that tells a
 * waiting agent from a hung one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startKernel, tempDir, type TestKernel } from '../../harness/kernel.js';
import type { CloveClient, KernelEvent } from '../../sdk/typescript/client.js';

const isRoot = process.geteuid?.() === 0;

/** The first ancestor of the real python3 that others cannot search (pyenv in a 0700 /root here). */
function privateAncestorOfPython(): string | undefined {
  const py = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], {
    encoding: 'utf8',
  }).trim();
  for (let d = path.dirname(fs.realpathSync(py)); d !== '/'; d = path.dirname(d)) {
    if ((fs.statSync(d).mode & 0o001) === 0) return d;
  }
  return undefined;
}

const MAIN = `
import os, sys
import helper                      # a sibling module of the script
from clove_sdk import CloveClient

name = os.environ["CLOVE_AGENT_NAME"]
with CloveClient(timeout=30) as c:
    c.hello()
    c.send_message({"up": name, "helper": helper.VALUE, "uid": os.getuid(), "python": sys.executable},
                   to=int(os.environ["REPORT_TO"]))
    while True:
        m = c.wait_message(timeout=None)
        body = m["message"]
        if "forward_to" in body:
            c.send_message({"hi_from": name}, to_name=body["forward_to"])
        elif "hi_from" in body:
            c.send_message({"got": body, "me": name}, to=int(os.environ["REPORT_TO"]))
`;

/** Tries to read another agent's script directory and reports what happened. */
const SNOOP = `
import os
from clove_sdk import CloveClient
target = os.environ["TARGET_DIR"]
out = {}
for what, fn in (("listdir", lambda: os.listdir(target)), ("read", lambda: open(os.path.join(target, "main.py")).read())):
    try:
        fn()
        out[what] = "ok"
    except OSError as e:
        out[what] = type(e).__name__
with CloveClient(timeout=30) as c:
    c.send_message({"snoop": out}, to=int(os.environ["REPORT_TO"]))
`;

let tk: TestKernel;
let op: CloveClient;
let me: number;

beforeAll(async () => {
  tk = await startKernel();
  op = await tk.client();
  me = (await op.hello()).agent_id;
});
afterAll(async () => tk?.stop());

async function next(c: CloveClient): Promise<Record<string, unknown>> {
  const r = await c.recv({ max: 1, timeoutMs: 15_000 });
  expect(r.count, 'a message within 15 s').toBe(1);
  return r.messages[0].message as Record<string, unknown>;
}

describe.runIf(isRoot)('a script in a directory only its owner can enter', () => {
  // `mktemp -d` (below /tmp, which every sandboxed agent has a private copy of: other agents do not
  // even see the path) and a 0700 directory where other agents see the path but may not enter it.
  it.each([
    ['mktemp -d', os.tmpdir(), 'FileNotFoundError'],
    ['a private project directory', '/var/tmp', 'PermissionError'],
  ])(
    '%s: runs sandboxed and unsandboxed with python3 under a 0700 home; others cannot read it',
    async (_what, base, denied) => {
      // The machine's python3 lives below a home nobody else may enter: the case the issue describes.
      expect(privateAncestorOfPython(), 'python3 below a 0700 directory (pyenv in /root)').toBeDefined();
      const dir = fs.mkdtempSync(path.join(base, 'clv-private-'));
      expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
      fs.writeFileSync(path.join(dir, 'main.py'), MAIN, { mode: 0o600 });
      fs.writeFileSync(path.join(dir, 'helper.py'), 'VALUE = "from a sibling module"\n', { mode: 0o600 });
      try {
        const env = { REPORT_TO: String(me) };
        const sb = await op.spawn({ name: 'private-sb', script: path.join(dir, 'main.py'), env });
        const upSb = await next(op);
        const plain = await op.spawn({
          name: 'private-plain',
          script: path.join(dir, 'main.py'),
          env,
          sandboxed: false,
        });
        const upPlain = await next(op);
        const ups = [upSb, upPlain].sort((a, b) => String(a.up).localeCompare(String(b.up)));
        expect(ups.map((u) => u.helper)).toEqual(['from a sibling module', 'from a sibling module']);
        // Unsandboxed: the kernel's own uid, as in the public kernel; sandboxed: a uid of its own.
        expect(ups[0]).toMatchObject({ up: 'private-plain', uid: process.geteuid!() });
        expect(ups[1].up).toBe('private-sb');
        expect(ups[1].uid).not.toBe(0);
        expect(sb.isolation.namespaces.pid).toBe(true);
        expect(plain.isolation.namespaces.pid).toBe(false);

        // They exchange messages, both ways.
        await op.send('private-sb', { forward_to: 'private-plain' });
        expect(await next(op)).toEqual({ got: { hi_from: 'private-sb' }, me: 'private-plain' });
        await op.send('private-plain', { forward_to: 'private-sb' });
        expect(await next(op)).toEqual({ got: { hi_from: 'private-plain' }, me: 'private-sb' });

        // A second sandboxed agent cannot read the first one's script directory.
        const other = tempDir();
        fs.writeFileSync(path.join(other, 'snoop.py'), SNOOP);
        await op.spawn({
          name: 'snoop',
          script: path.join(other, 'snoop.py'),
          env: { ...env, TARGET_DIR: dir },
        });
        expect(await next(op)).toEqual({ snoop: { listdir: denied, read: denied } });
        fs.rmSync(other, { recursive: true, force: true });
      } finally {
        for (const n of ['private-sb', 'private-plain', 'snoop']) await op.kill(n).catch(() => {});
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  it('an agent cannot hand a directory it does not own to its child', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'clv-private-'));
    fs.writeFileSync(path.join(dir, 'main.py'), MAIN, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'helper.py'), 'VALUE = 1\n', { mode: 0o600 });
    const parentDir = tempDir();
    fs.writeFileSync(
      path.join(parentDir, 'parent.py'),
      [
        'import os',
        'from clove_sdk import CloveClient',
        'with CloveClient(timeout=30) as c:',
        `    r = c.spawn("stolen", ${JSON.stringify(path.join(dir, 'main.py'))}, env={"REPORT_TO": os.environ["REPORT_TO"]})`,
        '    c.send_message({"spawned": r.get("success"), "code": r.get("code")}, to=int(os.environ["REPORT_TO"]))',
        '    c.wait_message(timeout=None)',
      ].join('\n'),
    );
    const events = await tk.client();
    await events.subscribe(['AGENT_EXITED']);
    try {
      await op.spawn({
        name: 'parent',
        script: path.join(parentDir, 'parent.py'),
        env: { REPORT_TO: String(me) },
        permissions: { can_spawn: true },
      });
      expect(await next(op)).toEqual({ spawned: true, code: null });
      // The child starts, but cannot read the script: python exits with status 2 and never reports.
      let exit: KernelEvent | undefined;
      for (let i = 0; i < 50 && !exit; i++) {
        const r = await events.pollEvents({ max: 10, timeoutMs: 15_000 });
        exit = r.events.find((e) => e.data.name === 'stolen');
      }
      expect(exit?.data).toMatchObject({ exit_code: 2, reason: 'exit' });
      expect((await op.recv({ max: 10 })).count).toBe(0);
    } finally {
      await op.kill('parent').catch(() => {});
      fs.rmSync(dir, { recursive: true, force: true });
      fs.rmSync(parentDir, { recursive: true, force: true });
    }
  });
});

describe('the watchdog and blocking calls', () => {
  it('a parked agent survives 10 s of blocking RECVs while a spinning one is killed', async () => {
    const dir = tempDir();
    fs.writeFileSync(
      path.join(dir, 'parked.py'),
      [
        'from clove_sdk import CloveClient',
        'with CloveClient(timeout=30) as c:',
        '    c.hello()',
        '    while True:',
        '        c.recv_messages(10, timeout=3)   # parked in the kernel for 3 s at a time',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(dir, 'spinner.py'),
      ['from clove_sdk import CloveClient', 'c = CloveClient()', 'c.hello()', 'while True:', '    pass'].join(
        '\n',
      ),
    );
    const events = await tk.client();
    await events.subscribe(['AGENT_EXITED', 'AGENT_RESTARTING']);
    const policy = { restart_policy: 'always' as const, watchdog_ms: 1000, backoff_initial_ms: 100 };
    const parked = await op.spawn({ name: 'parked', script: path.join(dir, 'parked.py'), ...policy });
    const spinner = await op.spawn({ name: 'spinner', script: path.join(dir, 'spinner.py'), ...policy });
    const seen: KernelEvent[] = [];
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      const r = await events.pollEvents({ max: 100, timeoutMs: Math.max(1, deadline - Date.now()) });
      seen.push(...r.events);
    }
    const exits = (id: number) => seen.filter((e) => e.type === 'AGENT_EXITED' && e.data.agent_id === id);
    expect(exits(parked.id)).toEqual([]);
    expect(exits(spinner.id).length).toBeGreaterThanOrEqual(1);
    expect(exits(spinner.id)[0].data).toMatchObject({ signal: 'SIGKILL' });
    const list = await op.list();
    expect(list.find((a) => a.id === parked.id)).toMatchObject({ state: 'RUNNING', restarts: 0 });
    expect(list.find((a) => a.id === spinner.id)!.restarts).toBeGreaterThanOrEqual(1);
    await op.kill('parked');
    await op.kill('spinner');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('labels and RESTART', () => {
  it('labels are kept and listed; bad labels are refused; RESTART gives a new process under the same name', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'idle.py'), 'import time\nwhile True:\n    time.sleep(1)\n');
    const script = path.join(dir, 'idle.py');
    await expect(op.spawn({ name: 'badlabel', script, labels: { 'no spaces': 'x' } })).rejects.toMatchObject({
      code: 'invalid_request',
    });
    const a = await op.spawn({
      name: 'labelled',
      script,
      labels: { 'clove.project': 'demo', 'clove.service': 'labelled' },
    });
    const before = (await op.list()).find((x) => x.id === a.id)!;
    expect(before.labels).toEqual({ 'clove.project': 'demo', 'clove.service': 'labelled' });
    expect(before.ready, 'an agent that never said HELLO is not ready').toBe(false);
    fs.writeFileSync(
      path.join(dir, 'hello.py'),
      'import time\nfrom clove_sdk import CloveClient\nc = CloveClient()\nc.hello()\nwhile True:\n    time.sleep(1)\n',
    );
    await op.spawn({ name: 'greeter', script: path.join(dir, 'hello.py') });
    for (let i = 0; i < 200 && !(await op.list()).find((x) => x.name === 'greeter')?.ready; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect((await op.list()).find((x) => x.name === 'greeter')?.ready).toBe(true);
    await op.kill('greeter');
    const r = await op.restart('labelled', { grace_ms: 2000 });
    expect(r).toMatchObject({ success: true, restarted: true, agent_id: a.id });
    expect(r.pid).toBeGreaterThan(0);
    expect(r.pid).not.toBe(a.pid);
    const after = (await op.list()).find((x) => x.id === a.id)!;
    expect(after).toMatchObject({ state: 'RUNNING', restarts: 1, pid: r.pid, restart_policy: 'never' });
    expect(after.labels).toEqual(before.labels);
    await op.kill('labelled');
    await expect(op.restart('labelled')).rejects.toMatchObject({ code: 'not_found' });
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
