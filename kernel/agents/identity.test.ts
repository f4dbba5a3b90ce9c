/**
 * An agent's identity and its name (docs/protocol.md §2, issue 9): what a dead agent owned does not pass
 * to the next agent of its name; names of operators' agents, dormant identities and configured names
 * are reserved; an operator's SPAWN takes a name back from a REGISTER squatter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, until, type TestKernel } from '../../harness/kernel.js';
import type { CloveClient } from '../../sdk/typescript/client.js';

/**
 * Runs the steps of $PLAN (JSON) and reports their replies to $REPORT_TO; then exits ($THEN=exit),
 * fails ($THEN=fail) or obeys `{"plan": [...]}` messages, answering the sender.
 */
const AGENT = `
import json, os, sys
from clove_sdk import CloveClient
from clove_sdk.protocol import SyscallOp

c = CloveClient(timeout=30)
c.connect()
name = os.environ["CLOVE_AGENT_NAME"]

def run(plan):
    out = []
    for op, *a in plan:
        if op == "store":
            r = c.store(a[0], a[1], scope=a[2])
        elif op == "fetch":
            r = c.fetch(a[0], scope=a[1] if len(a) > 1 else None)
        elif op == "delete":
            r = c.delete_key(a[0], scope=a[1])
        elif op == "register":
            r = c.register_name(a[0])
        elif op == "spawn":
            r = c.call_json(SyscallOp.SYS_SPAWN, a[0])
        elif op == "ls":
            r = {"cwd": os.getcwd(), "entries": sorted(os.listdir("."))}
        elif op == "write":
            with open(a[0], "w") as f:
                f.write(a[1])
            r = {"success": True}
        out.append(r)
    return out

c.send_message({"from": name, "out": run(json.loads(os.environ.get("PLAN", "[]")))}, to=int(os.environ["REPORT_TO"]))
then = os.environ.get("THEN", "wait")
if then == "exit":
    sys.exit(0)
if then == "fail":
    sys.exit(1)
while True:
    m = c.wait_message(timeout=None)
    body = m["message"]
    if isinstance(body, dict) and "plan" in body:
        c.send_message({"from": name, "out": run(body["plan"])}, to=m["from"])
`;

type Reply = Record<string, unknown> & { success?: boolean; code?: string; error?: string };
type Step = [string, ...unknown[]];

let tk: TestKernel;
let op: CloveClient;
let me: number;
let script: string;
/** Reports received but not yet asked for, by sender name. */
const inbox = new Map<string, Reply[][]>();

beforeAll(async () => {
  tk = await startKernel({ reservedNames: ['db'] });
  op = await tk.client();
  me = (await op.hello()).agent_id;
  const dir = tempDir();
  script = path.join(dir, 'agent.py');
  fs.writeFileSync(script, AGENT);
});
afterAll(async () => tk?.stop());

/** The next report of agent `name` (other agents' reports are kept for later). */
async function reportOf(name: string): Promise<Reply[]> {
  for (;;) {
    const queued = inbox.get(name);
    if (queued?.length) return queued.shift()!;
    const r = await op.recv({ max: 1, timeoutMs: 15_000 });
    expect(r.count, `a report of ${name} within 15 s`).toBe(1);
    const m = r.messages[0].message as { from: string; out: Reply[] };
    inbox.set(m.from, [...(inbox.get(m.from) ?? []), m.out]);
  }
}

/** Spawns the plan agent as the operator; returns its spawn reply and first report. */
async function spawnAgent(name: string, plan: Step[], extra: Record<string, unknown> = {}) {
  const env = { REPORT_TO: String(me), PLAN: JSON.stringify(plan), ...((extra.env as object) ?? {}) };
  const spawn = await op.spawn({ name, script, ...extra, env } as never);
  return { spawn, out: await reportOf(name) };
}

/** Has a running plan agent run more steps. */
async function ask(name: string, plan: Step[]): Promise<Reply[]> {
  await op.send(name, { plan });
  return reportOf(name);
}

const workDir = (name: string) => path.join(tk.dataDir, 'work', name);
const endedDir = (identity: string) => path.join(tk.dataDir, 'work', '.ended', identity);

describe('identity: what an agent owned does not pass to the next agent of its name', () => {
  it('a child given a dead agent’s name gets none of its keys and a fresh work directory', async () => {
    const first = await spawnAgent(
      'keeper',
      [
        ['store', 'secret', 'only-mine', 'agent'],
        ['store', 'keeper-global', 'mine', 'global'],
        ['write', 'note.txt', 'left by keeper#1'],
      ],
      { env: { THEN: 'exit' } },
    );
    expect(first.out.map((r) => r.success)).toEqual([true, true, true]);
    // Gone for good (restart never): the identity ends, its work directory is moved aside.
    await until(() => fs.existsSync(path.join(endedDir('keeper#1'), 'note.txt')), 10_000, 'keeper#1 ended');
    expect(fs.existsSync(workDir('keeper'))).toBe(false);
    const ended = fs.statSync(path.dirname(endedDir('keeper#1')));
    expect(ended.mode & 0o777).toBe(0o700);
    expect(ended.uid).toBe(process.geteuid?.());

    const heirPlan: Step[] = [
      ['fetch', 'secret', 'agent'],
      ['fetch', 'keeper-global', 'global'],
      ['store', 'keeper-global', 'stolen', 'global'],
      ['delete', 'keeper-global', 'global'],
      ['ls'],
      ['fetch', 'secret'],
    ];
    const parent = await spawnAgent(
      'parent',
      [
        [
          'spawn',
          {
            script,
            name: 'keeper',
            env: { REPORT_TO: String(me), PLAN: JSON.stringify(heirPlan) },
          },
        ],
      ],
      { permissions: { can_spawn: true } },
    );
    expect(parent.out[0].success, JSON.stringify(parent.out[0])).toBe(true);
    const [agentKey, globalKey, overwrite, del, ls, anyScope] = await reportOf('keeper');
    // The state family keys agent scope and global ownership by identity.
    expect.soft(agentKey.exists, 'agent key of keeper#1 invisible to keeper#2').toBe(false);
    expect.soft(anyScope.exists, 'no agent key, no global key "secret"').toBe(false);
    expect(globalKey).toMatchObject({ exists: true, value: 'mine' });
    expect.soft(overwrite.code, 'keeper#2 cannot overwrite keeper#1’s global key').toBe('permission_denied');
    expect.soft(del.code, 'keeper#2 cannot delete keeper#1’s global key').toBe('permission_denied');
    expect(ls).toEqual({ cwd: workDir('keeper'), entries: [] });
    expect.soft((await op.fetch('keeper-global')).value).toBe('mine');
    // keeper#1's directory is still there for operators; agents cannot reach it.
    expect(fs.readFileSync(path.join(endedDir('keeper#1'), 'note.txt'), 'utf8')).toBe('left by keeper#1');
    // The heir's own identity ends with it: keeper#2's (empty) work dir is removed, not kept.
    await op.kill('keeper');
    await until(() => !fs.existsSync(workDir('keeper')), 10_000, 'keeper#2 ended');
    expect(fs.existsSync(endedDir('keeper#2'))).toBe(false);
  });
});

describe('names', () => {
  it("an operator's SPAWN takes a name back from an agent that REGISTERed it", async () => {
    const squatter = await spawnAgent('squatter', [['register', 'writer']]);
    expect(squatter.out[0].success).toBe(true);
    const w = await op.spawn({ name: 'writer', script, env: { REPORT_TO: String(me) } });
    expect(w.success).toBe(true);
    await reportOf('writer');
    const sent = await op.send('writer', { hello: 'writer' });
    expect(sent.delivered_to).toBe(w.id);
    // The squatter lost it and cannot take it again (an operator's agent holds it); it keeps its own name.
    const [again] = await ask('squatter', [['register', 'writer']]);
    expect(again.code).toBe('name_taken');
    expect((await op.list()).find((a) => a.name === 'squatter')?.state).toBe('RUNNING');
  });

  it("an agent's own spawn name is never taken, not even by an operator", async () => {
    await spawnAgent('holder', []);
    await expect(op.spawn({ name: 'holder', script })).rejects.toMatchObject({ code: 'name_taken' });
  });

  it('while an operator’s agent lives (or waits to restart), nobody else may REGISTER or SPAWN its name', async () => {
    await spawnAgent('svc', [], { restart_policy: 'always' });
    await spawnAgent('flaky', [], {
      restart_policy: 'on-failure',
      backoff_initial_ms: 60_000,
      min_uptime_ms: 60_000,
      env: { THEN: 'fail' },
    });
    await reportOf('flaky'); // its immediate first restart
    await until(
      async () => (await op.list()).find((a) => a.name === 'flaky')?.state === 'BACKOFF',
      10_000,
      'flaky in BACKOFF',
    );
    await spawnAgent('intruder', [], { permissions: { can_spawn: true } });
    const out = await ask('intruder', [
      ['register', 'svc'],
      ['spawn', { script, name: 'svc' }],
      ['register', 'flaky'],
      ['spawn', { script, name: 'flaky' }],
    ]);
    for (const r of out) expect(r.code, JSON.stringify(r)).toBe('name_taken');
    expect(out[1].error).toMatch(/reserved/);
    expect(out[3].error).toMatch(/reserved/);
    const states = Object.fromEntries((await op.list()).map((a) => [a.name, a.state]));
    expect(states.svc).toBe('RUNNING');
    expect(states.flaky).toBe('BACKOFF');
  });

  it('a configured reserved name: no agent may take it, an operator may spawn it', async () => {
    const out = await ask('intruder', [
      ['register', 'db'],
      ['spawn', { script, name: 'db' }],
    ]);
    expect(out[1]).toMatchObject({ code: 'name_taken' });
    expect(out[1].error).toMatch(/reserved/);
    // REGISTER asks AgentService.mayRegister first.
    expect.soft(out[0]).toMatchObject({ code: 'name_taken' });
    expect.soft(out[0].error).toMatch(/reserved/);
    const db = await op.spawn({ name: 'db', script, env: { REPORT_TO: String(me) } });
    expect(db.success).toBe(true);
    await reportOf('db');
  });
});
