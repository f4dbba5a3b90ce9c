/**
 * The tasks family against a real kernel and real agents: Python workers (the SDK) that take their
 * subtask from their mailbox, report it to the test's coordinator and complete it only when told.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { startKernel, tempDir, type TestKernel } from '../../../harness/kernel.js';
import type { CloveClient } from '../../../sdk/typescript/client.js';

/**
 * The worker: reports every `task_assigned` message (the whole message) to REPORT_TO (a name), completes
 * its subtask on `go`, fails it on `fail`, and on `call` makes any SDK call and reports its reply.
 */
const WORKER = `
import os, signal, time
from clove_sdk import CloveClient
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
me = os.environ["CLOVE_AGENT_NAME"]
report = os.environ["REPORT_TO"]

def tell(c, msg):
    # The coordinator may not have registered its name yet (a kernel just started): try again.
    for _ in range(300):
        if c.send_message(msg, to_name=report, check=False).get("success"):
            return
        time.sleep(0.1)

with CloveClient(timeout=60) as c:
    held = None
    while True:
        m = c.wait_message(timeout=None)
        body = m["message"]
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "task_assigned":
            held = body
            tell(c, {"took": body, "from_name": m["from_name"], "by": me})
        elif kind == "go" and held:
            r = c.task_complete(held["task_id"], result={"by": me, "subtask": held["subtask"]}, check=False)
            tell(c, {"done": held["subtask_id"], "by": me, "reply": r})
            held = None
        elif kind == "fail" and held:
            r = c.task_complete(held["task_id"], error="it broke", check=False)
            tell(c, {"failed": held["subtask_id"], "by": me, "reply": r})
            held = None
        elif kind == "call":
            r = getattr(c, body["method"])(*body.get("args", []), check=False, **body.get("kwargs", {}))
            tell(c, {"called": body["method"], "by": me, "reply": r})
`;

type Msg = { from: number; from_name: string; message: Record<string, unknown> };

let tk: TestKernel;
let op: CloveClient;
let dir: string;
let worker: string;
/** Messages the coordinator received that no wait has consumed yet. */
const inbox: Msg[] = [];

/** Waits (in the kernel, 1 s at a time, up to 60 s) for a coordinator message matching `pred`. */
async function waitMsg(c: CloveClient, pred: (m: Msg) => boolean, box = inbox): Promise<Msg> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const i = box.findIndex(pred);
    if (i >= 0) return box.splice(i, 1)[0];
    if (Date.now() > deadline)
      throw new Error(`no matching message; got ${JSON.stringify(box.map((m) => m.message))}`);
    const r = await c.recv({ max: 50, timeoutMs: 1000 });
    box.push(...(r.messages as unknown as Msg[]));
  }
}

/** Polls TASK_STATUS until `pred` holds (60 s at most). */
async function waitStatus(
  c: CloveClient,
  id: number,
  pred: (t: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const r = (await c.taskStatus(id)) as unknown as { task: Record<string, unknown> };
    if (pred(r.task)) return r.task;
    if (Date.now() > deadline) throw new Error(`task ${id} never got there: ${JSON.stringify(r.task)}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Collects events of the given types until one matches `pred` (60 s at most). */
async function waitEvent(
  c: CloveClient,
  pred: (e: { type: string; data: Record<string, unknown> }) => boolean,
): Promise<{ type: string; data: Record<string, unknown> }> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const r = await c.pollEvents({ max: 100, timeoutMs: 1000 });
    for (const e of r.events as unknown as { type: string; data: Record<string, unknown> }[])
      if (pred(e)) return e;
  }
  throw new Error('event never came');
}

async function spawnWorker(name: string, extra: Record<string, unknown> = {}): Promise<number> {
  const r = await op.spawn({ name, script: worker, env: { REPORT_TO: 'coord' }, ...extra });
  return r.id;
}

beforeAll(async () => {
  dir = tempDir();
  worker = path.join(dir, 'worker.py');
  fs.writeFileSync(worker, WORKER);
  tk = await startKernel();
  op = await tk.client();
  await op.register('coord');
}, 60_000);
afterAll(async () => {
  await tk?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('tasks', () => {
  it('create, assign, complete, status: the assignee is told by a message and an event; the creator when it ends', async () => {
    const ev = await tk.client();
    await ev.subscribe(['TASK_ASSIGNED', 'TASK_COMPLETED']);
    const w = await spawnWorker('rt-w1');
    const created = await op.taskCreate('Build and test', { metadata: { ticket: 7 } });
    expect(created).toMatchObject({
      success: true,
      task: { status: 'pending', description: 'Build and test', subtasks: [], metadata: { ticket: 7 } },
    });
    const id = created.id;
    const a = await op.taskAssign(id, {
      agent_name: 'rt-w1',
      subtask: 'run tests',
      payload: { suite: 'unit' },
    });
    expect(a).toMatchObject({ success: true, agent_id: w, agent_name: 'rt-w1' });
    const took = await waitMsg(op, (m) => m.message.by === 'rt-w1' && 'took' in m.message);
    expect(took.message.from_name).toBe('coord');
    expect(took.message.took).toEqual({
      type: 'task_assigned',
      task_id: id,
      subtask_id: a.subtask_id,
      subtask: 'run tests',
      payload: { suite: 'unit' },
      task: 'Build and test',
      creator: 'operator-' + String((await op.hello()).agent_id),
      attempt: 1,
    });
    const assigned = await waitEvent(ev, (e) => e.type === 'TASK_ASSIGNED' && e.data.task_id === id);
    expect(assigned.data).toMatchObject({
      subtask_id: a.subtask_id,
      agent_id: w,
      agent_name: 'rt-w1',
      attempt: 1,
    });
    expect((await op.taskStatus(id)).task).toMatchObject({
      status: 'running',
      subtasks: [
        { id: a.subtask_id, status: 'assigned', assignee_id: w, assignee_name: 'rt-w1', attempts: 1 },
      ],
    });

    await op.send('rt-w1', { type: 'go' });
    const done = await waitMsg(op, (m) => m.message.by === 'rt-w1' && 'done' in m.message);
    expect(done.message.reply).toMatchObject({ success: true, task_status: 'completed' });
    const st = await op.taskStatus(id);
    expect(st).toMatchObject({
      status: 'completed',
      results: { [String(a.subtask_id)]: { by: 'rt-w1', subtask: 'run tests' } },
      task: { subtasks: [{ status: 'completed', result: { by: 'rt-w1', subtask: 'run tests' } }] },
    });
    const ended = await waitMsg(op, (m) => m.message.type === 'task_completed' && m.message.task_id === id);
    expect(ended.from_name).toBe('kernel');
    expect(ended.message).toMatchObject({ status: 'completed', results: { [String(a.subtask_id)]: {} } });
    await waitEvent(ev, (e) => e.type === 'TASK_COMPLETED' && e.data.task_id === id);
    expect((await op.taskList({ status: 'completed' })).tasks.map((t) => t.id)).toContain(id);
    await op.kill('rt-w1');
  }, 120_000);

  it('a stranger may neither see nor complete a task; the assignee sees it and completes only its own subtask', async () => {
    await spawnWorker('pm-holder');
    await spawnWorker('pm-stranger');
    const { id } = await op.taskCreate('private', { subtasks: [{ description: 'other part' }] });
    const a = await op.taskAssign(id, { agent_name: 'pm-holder', subtask: 'mine' });
    await waitMsg(op, (m) => m.message.by === 'pm-holder' && 'took' in m.message);
    const other = (await op.taskStatus(id)).task.subtasks[0].id;

    const call = async (who: string, method: string, args: unknown[], kwargs = {}) => {
      await op.send(who, { type: 'call', method, args, kwargs });
      const m = await waitMsg(op, (x) => x.message.by === who && x.message.called === method);
      return m.message.reply as Record<string, unknown>;
    };
    expect(await call('pm-stranger', 'task_status', [id])).toMatchObject({
      success: false,
      code: 'permission_denied',
    });
    expect(
      await call('pm-stranger', 'task_complete', [id], { subtask_id: a.subtask_id, result: 1 }),
    ).toMatchObject({
      success: false,
      code: 'permission_denied',
    });
    // A task that does not exist is refused like another's (no probing of ids).
    expect(await call('pm-stranger', 'task_status', [987654])).toMatchObject({ code: 'permission_denied' });
    expect(await call('pm-stranger', 'task_list', [])).toMatchObject({ success: true, count: 0 });
    expect(
      await call('pm-stranger', 'task_assign', [id], { agent_name: 'pm-stranger', subtask: 'x' }),
    ).toMatchObject({ code: 'permission_denied' });
    // The holder sees the task, but may not complete (or assign) a subtask it does not hold.
    expect(await call('pm-holder', 'task_status', [id])).toMatchObject({ success: true, status: 'running' });
    expect(await call('pm-holder', 'task_complete', [id], { subtask_id: other, result: 1 })).toMatchObject({
      code: 'permission_denied',
    });
    expect(await call('pm-holder', 'task_list', [])).toMatchObject({ count: 1, tasks: [{ id }] });
    // Nothing was changed by the refusals; the denials are audited.
    expect((await op.taskStatus(id)).task.subtasks.map((s) => s.status)).toEqual(['pending', 'assigned']);
    const log = await op.getAuditLog({ category: 'SECURITY', limit: 50 });
    expect(JSON.stringify(log)).toContain('TASK_COMPLETE');
    await op.kill('pm-holder');
    await op.kill('pm-stranger');
  }, 120_000);

  it('an agent creates tasks within its tasks budget; bad requests get clear errors', async () => {
    await spawnWorker('bg-w', { budgets: { tasks: 1 } });
    const call = async (method: string, args: unknown[], kwargs = {}) => {
      await op.send('bg-w', { type: 'call', method, args, kwargs });
      const m = await waitMsg(op, (x) => x.message.by === 'bg-w' && x.message.called === method);
      return m.message.reply as Record<string, unknown>;
    };
    const first = await call('task_create', ['one']);
    expect(first).toMatchObject({ success: true, task: { creator_name: 'bg-w' } });
    expect(await call('task_create', ['two'])).toMatchObject({ success: false, code: 'quota_exceeded' });
    // Its own task: it may assign (to itself, whom it may message) and complete it; then it has room again.
    const tid = first.id as number;
    expect(await call('task_assign', [tid], { agent_name: 'bg-w', subtask: 'self' })).toMatchObject({
      success: true,
    });
    await waitMsg(op, (m) => m.message.by === 'bg-w' && 'took' in m.message);
    await op.send('bg-w', { type: 'go' });
    await waitMsg(op, (m) => m.message.by === 'bg-w' && 'done' in m.message);
    expect(await call('task_create', ['two'])).toMatchObject({ success: true });

    await expect(op.taskAssign(tid, { agent_name: 'bg-w', subtask: 'late' })).rejects.toMatchObject({
      code: 'invalid_state',
    });
    const { id } = await op.taskCreate('errors');
    await expect(op.taskAssign(id, { subtask: 'nobody' })).rejects.toMatchObject({ code: 'not_found' });
    await expect(op.taskAssign(id, { agent_name: 'no-such-agent', subtask: 's' })).rejects.toMatchObject({
      code: 'not_found',
    });
    await expect(op.taskAssign(id, { agent_name: 'bg-w' })).rejects.toMatchObject({
      code: 'invalid_request',
    });
    await expect(op.taskComplete(id, { subtask_id: 424242 })).rejects.toMatchObject({ code: 'not_found' });
    await expect(op.taskCreate('', {})).rejects.toMatchObject({ code: 'invalid_request' });
    await expect(op.taskStatus(999_999)).rejects.toMatchObject({ code: 'not_found' });
    await op.kill('bg-w');
  }, 120_000);

  it('TASK_ASSIGN naming no subtask hands out the next pending one given at TASK_CREATE', async () => {
    await spawnWorker('nx-1');
    await spawnWorker('nx-2');
    const { id, task } = await op.taskCreate('split', {
      pool: 'nx-*',
      subtasks: [{ description: 'part 1', payload: 1 }, { subtask: 'part 2' }],
    });
    const first = await op.taskAssign(id, {});
    const second = await op.taskAssign(id, {});
    expect([first.subtask_id, second.subtask_id]).toEqual(task.subtasks.map((s) => s.id));
    // The least loaded agent of the pool each time: both workers got one.
    expect(new Set([first.agent_name, second.agent_name])).toEqual(new Set(['nx-1', 'nx-2']));
    await expect(op.taskAssign(id, {})).rejects.toMatchObject({ code: 'invalid_request' });
    for (const w of ['nx-1', 'nx-2']) {
      await waitMsg(op, (m) => m.message.by === w && 'took' in m.message);
      await op.send(w, { type: 'go' });
      await waitMsg(op, (m) => m.message.by === w && 'done' in m.message);
    }
    expect((await op.taskStatus(id)).status).toBe('completed');
    await op.kill('nx-1');
    await op.kill('nx-2');
  }, 120_000);

  it('a subtask whose deadline passes is reassigned to another agent of the pool, which completes it', async () => {
    const ev = await tk.client();
    await ev.subscribe(['TASK_REASSIGNED']);
    await spawnWorker('dl-1');
    await spawnWorker('dl-2');
    const { id } = await op.taskCreate('slow', { pool: 'dl-*', policy: { subtask_timeout_ms: 1500 } });
    const a = await op.taskAssign(id, { agent_name: 'dl-1', subtask: 'hurry' });
    await waitMsg(op, (m) => m.message.by === 'dl-1' && 'took' in m.message);
    // dl-1 is never told to go: its deadline passes and the subtask goes to dl-2.
    const took = await waitMsg(op, (m) => m.message.by === 'dl-2' && 'took' in m.message);
    expect(took.message.from_name).toBe('kernel');
    expect(took.message.took).toMatchObject({ subtask_id: a.subtask_id, attempt: 2 });
    const re = await waitEvent(ev, (e) => e.data.task_id === id);
    expect(re.data).toMatchObject({ from_name: 'dl-1', agent_name: 'dl-2', attempt: 2 });
    expect(String(re.data.reason)).toMatch(/deadline/);
    // The old assignee can no longer complete it.
    await op.send('dl-1', { type: 'go' });
    const late = await waitMsg(op, (m) => m.message.by === 'dl-1' && m.message.called === undefined);
    expect(late.message).toMatchObject({ done: a.subtask_id, reply: { code: 'permission_denied' } });
    expect((await op.taskStatus(id)).task.status).toBe('running');
    await op.send('dl-2', { type: 'go' });
    await waitMsg(op, (m) => m.message.by === 'dl-2' && 'done' in m.message);
    const t = await waitStatus(op, id, (x) => x.status === 'completed');
    expect(t.subtasks).toMatchObject([{ assignee_name: 'dl-2', attempts: 2, result: { by: 'dl-2' } }]);
    await op.kill('dl-1');
    await op.kill('dl-2');
  }, 120_000);

  it('on_failure "fail": a reported error fails the task and the creator is told', async () => {
    await spawnWorker('ff-w');
    const { id } = await op.taskCreate('fragile', { policy: { on_failure: 'fail' } });
    const a = await op.taskAssign(id, { agent_name: 'ff-w', subtask: 'try' });
    await waitMsg(op, (m) => m.message.by === 'ff-w' && 'took' in m.message);
    await op.send('ff-w', { type: 'fail' });
    const f = await waitMsg(op, (m) => m.message.by === 'ff-w' && 'failed' in m.message);
    expect(f.message.reply).toMatchObject({ success: true, subtask_status: 'failed', task_status: 'failed' });
    const ended = await waitMsg(op, (m) => m.message.type === 'task_failed' && m.message.task_id === id);
    expect(ended.message).toMatchObject({ subtask_id: a.subtask_id });
    expect(String(ended.message.error)).toMatch(/it broke/);
    expect((await op.taskStatus(id)).task).toMatchObject({
      status: 'failed',
      subtasks: [{ status: 'failed', error: 'reported: it broke' }],
    });
    await op.kill('ff-w');
  }, 120_000);

  it('acceptance: SIGKILL of the worker holding a subtask: it is reassigned to another worker, which completes it', async () => {
    await spawnWorker('ak-1');
    await spawnWorker('ak-2');
    const task = await op.taskCreate('Build and test', { pool: 'ak-*' });
    const a = await op.taskAssign(task.id, { agent_name: 'ak-1', subtask: 'run tests' });
    expect(a.agent_name).toBe('ak-1');
    await waitMsg(op, (m) => m.message.by === 'ak-1' && 'took' in m.message);
    const pid = (await op.list()).find((x) => x.name === 'ak-1')!.pid;
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    const took = await waitMsg(op, (m) => m.message.by === 'ak-2' && 'took' in m.message);
    expect(took.message.took).toMatchObject({ task_id: task.id, subtask_id: a.subtask_id, attempt: 2 });
    const mid = (await op.taskStatus(task.id)).task;
    expect(mid.subtasks[0]).toMatchObject({ status: 'assigned', assignee_name: 'ak-2', attempts: 2 });
    expect(mid.subtasks[0].error).toMatch(/ak-1 exited/);
    await op.send('ak-2', { type: 'go' });
    const done = await waitMsg(op, (m) => m.message.by === 'ak-2' && 'done' in m.message);
    expect(done.message.reply).toMatchObject({ task_status: 'completed' });
    const st = await op.taskStatus(task.id);
    expect(st.status).toBe('completed');
    expect(st.results).toEqual({ [String(a.subtask_id)]: { by: 'ak-2', subtask: 'run tests' } });
    await op.kill('ak-2');
  }, 120_000);

  it('a task past its deadline fails, with what was still open; its holder is refused', async () => {
    await spawnWorker('td-w');
    const { id } = await op.taskCreate('hurried', {
      deadline_ms: 3000,
      subtasks: [{ description: 'never' }],
    });
    const a = await op.taskAssign(id, { agent_name: 'td-w', subtask: 'slow' });
    await waitMsg(op, (m) => m.message.by === 'td-w' && 'took' in m.message);
    const t = await waitStatus(op, id, (x) => x.status === 'failed');
    expect(t.error).toBe('task deadline passed');
    expect(t.subtasks).toMatchObject([
      { status: 'failed', error: 'the task failed: task deadline passed' },
      { id: a.subtask_id, status: 'failed', error: 'the task failed: task deadline passed' },
    ]);
    await waitMsg(op, (m) => m.message.type === 'task_failed' && m.message.task_id === id);
    await op.send('td-w', { type: 'go' });
    const late = await waitMsg(op, (m) => m.message.by === 'td-w' && 'done' in m.message);
    expect(late.message.reply).toMatchObject({ success: false, code: 'invalid_state' });
    await op.kill('td-w');
  }, 120_000);

  it("without a pool, the first assignee's clove.project + clove.service labels are the pool", async () => {
    const labels = (service: string) => ({ labels: { 'clove.project': 'tp', 'clove.service': service } });
    await spawnWorker('svc-1', labels('svc'));
    await spawnWorker('svc-2', labels('svc'));
    await spawnWorker('other-1', labels('other'));
    const { id } = await op.taskCreate('by label');
    const a = await op.taskAssign(id, { agent_name: 'svc-1', subtask: 'job' });
    await waitMsg(op, (m) => m.message.by === 'svc-1' && 'took' in m.message);
    // With the pool fixed, an assignment naming nobody goes to the least loaded agent of the service.
    const b = await op.taskAssign(id, { subtask: 'job 2' });
    expect(b.agent_name).toBe('svc-2');
    await waitMsg(op, (m) => m.message.by === 'svc-2' && 'took' in m.message);
    process.kill((await op.list()).find((x) => x.name === 'svc-1')!.pid, 'SIGKILL');
    const took = await waitMsg(op, (m) => m.message.by === 'svc-2' && 'took' in m.message);
    expect(took.message.took).toMatchObject({ subtask_id: a.subtask_id, attempt: 2 });
    await op.kill('svc-2');
    await op.kill('other-1');
  }, 120_000);

  it('RESTART of the assignee: the new process of the same agent gets the subtask again', async () => {
    await spawnWorker('rr-1');
    const { id } = await op.taskCreate('again', { pool: 'rr-*' });
    const a = await op.taskAssign(id, { agent_name: 'rr-1', subtask: 'once more' });
    await waitMsg(
      op,
      (m) =>
        m.message.by === 'rr-1' &&
        'took' in m.message &&
        (m.message.took as { attempt: number }).attempt === 1,
    );
    await op.restart('rr-1', { wait: true });
    const took = await waitMsg(op, (m) => m.message.by === 'rr-1' && 'took' in m.message);
    expect(took.message.took).toMatchObject({ subtask_id: a.subtask_id, attempt: 2 });
    await op.send('rr-1', { type: 'go' });
    await waitMsg(op, (m) => m.message.by === 'rr-1' && 'done' in m.message);
    expect((await op.taskStatus(id)).status).toBe('completed');
    await op.kill('rr-1');
  }, 120_000);

  it('with nobody left in the pool, the subtask waits for a candidate, then fails', async () => {
    await spawnWorker('nc-1');
    const { id } = await op.taskCreate('lonely', { policy: { reassign_wait_ms: 500 } });
    await op.taskAssign(id, { agent_name: 'nc-1', subtask: 'alone' });
    await waitMsg(op, (m) => m.message.by === 'nc-1' && 'took' in m.message);
    await op.kill('nc-1', { wait: true });
    const t = await waitStatus(op, id, (x) => x.status === 'failed');
    expect(String(t.error)).toMatch(/nc-1 exited.*no agent of the pool/);
  }, 120_000);
});

describe('tasks across a kernel restart', () => {
  it('a task survives: still there, its open subtask goes to the restored agent, completable', async () => {
    const d = tempDir();
    const dataDir = path.join(d, 'data');
    const k1 = await startKernel({ dataDir, socketPath: path.join(d, 'k1.sock') });
    const c1 = await k1.client();
    await c1.register('coord');
    await c1.spawn({ name: 'rs-w', script: worker, env: { REPORT_TO: 'coord' }, restart_policy: 'always' });
    const { id } = await c1.taskCreate('durable', {
      subtasks: [{ description: 'later', payload: { x: 1 } }],
    });
    const a = await c1.taskAssign(id, { agent_name: 'rs-w', subtask: 'now' });
    const box1: Msg[] = [];
    await waitMsg(c1, (m) => m.message.by === 'rs-w' && 'took' in m.message, box1);
    c1.close();
    await k1.kernel.close();

    const k2 = await startKernel({ dataDir, socketPath: path.join(d, 'k2.sock') });
    try {
      const c2 = await k2.client();
      await c2.register('coord');
      const st = await c2.taskStatus(id);
      expect(st.task).toMatchObject({
        description: 'durable',
        status: 'running',
        creator_name: expect.any(String),
      });
      // The restored rs-w (a new process) is handed the open subtask again.
      const box2: Msg[] = [];
      const took = await waitMsg(c2, (m) => m.message.by === 'rs-w' && 'took' in m.message, box2);
      expect(took.message.took).toMatchObject({ subtask_id: a.subtask_id, subtask: 'now' });
      await c2.send('rs-w', { type: 'go' });
      await waitMsg(c2, (m) => m.message.by === 'rs-w' && 'done' in m.message, box2);
      const later = st.task.subtasks.find((s) => s.description === 'later')!;
      expect(later).toMatchObject({ status: 'pending', payload: { x: 1 } });
      expect(await c2.taskComplete(id, { subtask_id: later.id, result: 'by hand' })).toMatchObject({
        task_status: 'completed',
      });
      // New ids do not collide with the restored ones.
      const next = await c2.taskCreate('after restart', { subtasks: [{ description: 'n' }] });
      expect(next.id).toBeGreaterThan(id);
      expect(next.task.subtasks[0].id).toBeGreaterThan(later.id);
      await c2.kill('rs-w');
    } finally {
      await k2.stop();
      fs.rmSync(d, { recursive: true, force: true });
    }
  }, 180_000);
});
