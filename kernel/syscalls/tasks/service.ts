/**
 * The task service (docs/protocol.md "Tasks"): tasks and their subtasks, kept in memory and written
 * through to their own table in `<data-dir>/state.db`, so that a kernel started again on the same data
 * dir has them all. Assignees are kept by identity `<name>#<serial>` (ids change across a restart).
 *
 * A subtask is never lost: a sweep (a timer, and at once on every AGENT_EXITED) checks that each
 * assignment's process is still the one it was handed to and that its deadline has not passed; if not,
 * the attempt failed and the task's policy reassigns it (to the live agent of the pool with the fewest
 * open subtasks, never the one that just failed while another is available) or fails it.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import picomatch from 'picomatch';
import {
  InvalidRequestError,
  InvalidStateError,
  NotFoundError,
  PermissionDeniedError,
  QuotaExceededError,
  type AgentRecord,
  type Caller,
  type Services,
} from '../../core/family.js';
import type { Subtask, Task, TaskPolicy, TaskStatus } from '../../../protocol/index.js';

/** The policy with its defaults filled in. */
type Policy = Required<Omit<TaskPolicy, 'subtask_timeout_ms'>> & { subtask_timeout_ms?: number };

/** A subtask as the service keeps it: the wire shape plus who holds it. */
interface SubtaskRec extends Subtask {
  /** The assignee's identity (`<name>#<serial>`): who may complete it, across restarts. */
  assignee_identity?: string;
  /** The host pid the assignment was handed to (0: the agent was between processes). */
  assignee_pid?: number;
  /** Identities whose attempts failed (not chosen again while another candidate is available). */
  failed_by?: string[];
  /** Every identity that held it (they may still see the task). */
  holders?: string[];
  /** Since when it waits for a live agent of the pool to reassign to. */
  waiting_since?: number;
  /** Why its last attempt failed (the reason a waiting reassignment gives). */
  last_reason?: string;
}

/** A task as the service keeps it. */
interface TaskRec extends Omit<Task, 'subtasks' | 'policy'> {
  policy: Policy;
  /** Who created it: `agent:<identity>`, `operator`, or `client:<id>`. */
  creator_key: string;
  /** The default pool, fixed at the first assignment: agents of this project + service label, or this name. */
  pool_service?: { project?: string; service: string };
  pool_name?: string;
  subtasks: SubtaskRec[];
}

const LIVE_STATES = new Set(['STARTING', 'RUNNING', 'PAUSED']);
const OPEN_TASK: ReadonlySet<string> = new Set(['pending', 'running']);
const SWEEP_MS = 250;

/** An agent's labels (SPAWN `labels`; `clove up` sets `clove.project` and `clove.service`). */
function labelsOf(a: AgentRecord): Record<string, string> {
  return a.def.labels ?? {};
}

/** Who a caller is for ownership: agents by identity (stable across restarts), others by role. */
function keyOf(c: Caller): string {
  if (c.role === 'agent') return `agent:${c.identity ?? c.name}`;
  return c.role === 'operator' ? 'operator' : `client:${c.id}`;
}

/** A copy of a task without the service's bookkeeping: what replies carry. */
function wire(t: TaskRec): Task {
  const subtasks: Subtask[] = t.subtasks.map((s) => {
    const {
      assignee_identity: _i,
      assignee_pid: _p,
      failed_by: _f,
      holders: _h,
      waiting_since: _w,
      last_reason: _r,
      ...rest
    } = s;
    return rest;
  });
  const { creator_key: _k, pool_service: _s, pool_name: _n, ...rest } = t;
  return { ...rest, subtasks };
}

export class TaskService {
  private readonly db: Database.Database;
  /** The open (pending, running) tasks; finished ones are read from the database when asked for. */
  private readonly tasks = new Map<number, TaskRec>();
  /** When each agent identity was last handed a subtask: among equally loaded agents, the one that waited longest goes first. */
  private readonly lastAssigned = new Map<string, number>();
  private assignments = 0;
  private nextSubtaskId = 1;
  private readonly save: Database.Statement;
  private readonly byId: Database.Statement;
  private readonly newest: Database.Statement;
  private readonly timer: NodeJS.Timeout;
  private readonly listener: number;
  private readonly stop = new AbortController();
  /** Set by every change a sweep makes, so that it writes only the tasks it changed. */
  private touched = false;

  constructor(private readonly s: Services) {
    const file = path.join(s.kernel.dataDir, 'state.db');
    this.db = new Database(file);
    fs.chmodSync(file, 0o600);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('busy_timeout = 2000');
    // One row per task, the whole task as JSON; `last_subtask` keeps subtask ids from being reused.
    this.db.exec(
      `CREATE TABLE IF NOT EXISTS tasks (id INTEGER PRIMARY KEY AUTOINCREMENT, creator_key TEXT NOT NULL,
         status TEXT NOT NULL, last_subtask INTEGER NOT NULL DEFAULT 0, doc TEXT NOT NULL)`,
    );
    this.save = this.db.prepare(
      'INSERT INTO tasks (id, creator_key, status, last_subtask, doc) VALUES (?, ?, ?, ?, ?) ' +
        'ON CONFLICT(id) DO UPDATE SET status = excluded.status, last_subtask = excluded.last_subtask, doc = excluded.doc',
    );
    this.byId = this.db.prepare('SELECT doc FROM tasks WHERE id = ?');
    this.newest = this.db.prepare('SELECT id, status, creator_key, doc FROM tasks ORDER BY id DESC');
    const last = this.db.prepare('SELECT MAX(last_subtask) AS n FROM tasks').get() as { n: number | null };
    this.nextSubtaskId = (last.n ?? 0) + 1;
    const open = this.db.prepare("SELECT doc FROM tasks WHERE status IN ('pending', 'running')");
    for (const row of open.all() as { doc: string }[]) {
      const t = this.parse(row.doc);
      this.tasks.set(t.id, t);
    }
    // Agent exits are heard in the kernel, through the event bus, by a subscriber of the service's own.
    this.listener = s.principals.allocate();
    s.events.subscribe(this.listener, ['AGENT_EXITED', 'AGENT_SPAWNED']);
    void this.listen();
    this.timer = setInterval(() => this.sweep(), SWEEP_MS);
    this.timer.unref();
  }

  /** Waits for agent events (never blocking the loop) and sweeps at once when one comes. */
  private async listen(): Promise<void> {
    const { events } = this.s;
    while (!this.stop.signal.aborted) {
      await events.wait(this.listener, 60_000, this.stop.signal).catch(() => undefined);
      if (this.stop.signal.aborted) return;
      if (events.poll(this.listener, 10_000).events.length) this.sweep();
    }
  }

  close(): void {
    this.stop.abort();
    clearInterval(this.timer);
    this.s.events.drop(this.listener);
    this.db.close();
  }

  /** Writes a task through; a finished one leaves memory (the database has it). */
  private persist(t: TaskRec): void {
    const last = t.subtasks.reduce((m, st) => Math.max(m, st.id), 0);
    this.save.run(t.id, t.creator_key, t.status, last, JSON.stringify(t));
    if (!OPEN_TASK.has(t.status)) this.tasks.delete(t.id);
  }

  /** A stored task; ids of this kernel run are unknown for it (0) until its agents are found again. */
  private parse(doc: string): TaskRec {
    const t = JSON.parse(doc) as TaskRec;
    if (!this.tasks.has(t.id)) {
      t.creator_id = 0;
      for (const st of t.subtasks) if (st.assignee_id) st.assignee_id = 0;
    }
    return t;
  }

  /** A task by id: the open one in memory, or a finished one from the database. */
  private get(id: number): TaskRec | undefined {
    const open = this.tasks.get(id);
    if (open) return open;
    const row = this.byId.get(id) as { doc: string } | undefined;
    return row ? this.parse(row.doc) : undefined;
  }

  // ─── who may do what ──────────────────────────────────────────────────────────────────────

  private isCreator(c: Caller, t: TaskRec): boolean {
    return c.role === 'operator' || keyOf(c) === t.creator_key;
  }

  private isHolder(c: Caller, t: TaskRec): boolean {
    if (c.role !== 'agent') return false;
    const me = c.identity ?? c.name;
    return t.subtasks.some((st) => st.assignee_identity === me || st.holders?.includes(me));
  }

  /** The task, if the caller may see it; to non-operators a missing task is refused like another's. */
  private visible(c: Caller, id: number): TaskRec {
    const t = this.get(id);
    if (t && (this.isCreator(c, t) || this.isHolder(c, t))) return t;
    if (!t && c.role === 'operator') throw new NotFoundError(`task not found: ${id}`);
    throw new PermissionDeniedError(`Permission denied: task ${id} is not yours`, { task_id: id });
  }

  // ─── agents ───────────────────────────────────────────────────────────────────────────────

  private byIdentity(identity: string | undefined): AgentRecord | undefined {
    if (!identity) return undefined;
    return this.s.agents.list().find((a) => a.def.identity === identity);
  }

  private live(a: AgentRecord | undefined): a is AgentRecord {
    return !!a && LIVE_STATES.has(a.state);
  }

  /** Open (assigned) subtasks each identity holds, over all tasks. */
  private load(): Map<string, number> {
    const n = new Map<string, number>();
    for (const t of this.tasks.values())
      if (OPEN_TASK.has(t.status))
        for (const st of t.subtasks)
          if (st.status === 'assigned' && st.assignee_identity)
            n.set(st.assignee_identity, (n.get(st.assignee_identity) ?? 0) + 1);
    return n;
  }

  /** The running agents of a task's pool (a paused one takes nothing new). */
  private pool(t: TaskRec): AgentRecord[] {
    const agents = this.s.agents.list().filter((a) => a.state === 'RUNNING');
    if (t.pool) {
      const match = picomatch(t.pool);
      return agents.filter((a) => match(a.def.name));
    }
    if (t.pool_service) {
      const { project, service } = t.pool_service;
      return agents.filter((a) => {
        const l = labelsOf(a);
        return l['clove.service'] === service && l['clove.project'] === project;
      });
    }
    if (t.pool_name) return agents.filter((a) => a.def.name === t.pool_name);
    return [];
  }

  /**
   * The pool's live agent with the fewest open subtasks (ties: the one handed a subtask least recently),
   * avoiding `avoid` while another is available.
   */
  private pick(t: TaskRec, avoid: string[] = []): AgentRecord | undefined {
    const load = this.load();
    const last = (a: AgentRecord) => this.lastAssigned.get(a.def.identity) ?? 0;
    const all = this.pool(t).sort(
      (a, b) =>
        (load.get(a.def.identity) ?? 0) - (load.get(b.def.identity) ?? 0) ||
        last(a) - last(b) ||
        a.def.id - b.def.id,
    );
    return all.find((a) => !avoid.includes(a.def.identity)) ?? all[0];
  }

  /** The first assignee fixes the default pool: its project + service, or its name. */
  private fixPool(t: TaskRec, a: AgentRecord): void {
    if (t.pool || t.pool_service || t.pool_name) return;
    const l = labelsOf(a);
    if (l['clove.service']) t.pool_service = { project: l['clove.project'], service: l['clove.service'] };
    else t.pool_name = a.def.name;
  }

  /**
   * Hands `st` to `a`: its mailbox gets a `task_assigned` message (from `from`), subscribers a
   * TASK_ASSIGNED event. A full mailbox refuses the assignment (nothing changes).
   */
  private hand(
    t: TaskRec,
    st: SubtaskRec,
    a: AgentRecord,
    from: { id: number; name: string },
    deadlineMs: number | undefined,
  ): void {
    this.touched = true;
    const now = Date.now();
    const attempt = st.attempts + 1;
    const ms = deadlineMs ?? t.policy.subtask_timeout_ms;
    const deadline_at = ms !== undefined ? now + ms : undefined;
    const body = {
      type: 'task_assigned',
      task_id: t.id,
      subtask_id: st.id,
      subtask: st.description,
      payload: st.payload ?? null,
      task: t.description,
      creator: t.creator_name,
      attempt,
      ...(deadline_at !== undefined ? { deadline_at } : {}),
    };
    this.s.mail.deliver(a.def.id, from.id, from.name, JSON.stringify(body));
    st.status = 'assigned';
    st.attempts = attempt;
    st.assignee_id = a.def.id;
    st.assignee_name = a.def.name;
    st.assignee_identity = a.def.identity;
    // Kept in recency order and bounded: an identity not handed anything for 4096 assignments counts as never.
    this.lastAssigned.delete(a.def.identity);
    this.lastAssigned.set(a.def.identity, ++this.assignments);
    if (this.lastAssigned.size > 4096) this.lastAssigned.delete(this.lastAssigned.keys().next().value!);
    st.assignee_pid = a.pid;
    st.holders = [...new Set([...(st.holders ?? []), a.def.identity])];
    st.assigned_at = now;
    st.deadline_at = deadline_at;
    delete st.waiting_since;
    if (t.status === 'pending') t.status = 'running';
    this.s.publish(
      'TASK_ASSIGNED',
      {
        task_id: t.id,
        subtask_id: st.id,
        agent_id: a.def.id,
        agent_name: a.def.name,
        attempt,
        by: from.id,
      },
      0,
    );
  }

  // ─── syscalls ─────────────────────────────────────────────────────────────────────────────

  create(
    c: Caller,
    req: {
      description: string;
      subtasks?: { description?: string; subtask?: string; payload?: unknown }[];
      deadline_ms?: number;
      policy?: TaskPolicy;
      pool?: string;
      metadata?: unknown;
    },
  ): Task {
    const key = keyOf(c);
    const limit = this.s.principals.budgets(c.id).tasks ?? Number.POSITIVE_INFINITY;
    let open = 0;
    for (const t of this.tasks.values()) if (t.creator_key === key && OPEN_TASK.has(t.status)) open++;
    if (open + 1 > limit)
      throw new QuotaExceededError(
        `quota exceeded: too many open tasks (budget tasks: ${open} of ${limit})`,
        { budget: 'tasks', used: open, limit },
      );
    if (req.pool !== undefined) {
      try {
        picomatch(req.pool);
      } catch (e) {
        throw new InvalidRequestError(`invalid request: pool is not a glob: ${(e as Error).message}`);
      }
    }
    const now = Date.now();
    const p = req.policy ?? {};
    const policy: Policy = {
      on_failure: p.on_failure ?? 'reassign',
      max_attempts: p.max_attempts ?? 3,
      reassign_wait_ms: p.reassign_wait_ms ?? 30_000,
      ...(p.subtask_timeout_ms !== undefined ? { subtask_timeout_ms: p.subtask_timeout_ms } : {}),
    };
    const subtasks: SubtaskRec[] = (req.subtasks ?? []).map((s, i) => {
      const description = s.description ?? s.subtask;
      if (!description)
        throw new InvalidRequestError(`invalid request: subtasks[${i}] needs a description (or subtask)`);
      return {
        id: 0,
        description,
        ...(s.payload !== undefined ? { payload: s.payload } : {}),
        status: 'pending',
        attempts: 0,
        created_at: now,
      };
    });
    const t: TaskRec = {
      id: 0,
      description: req.description,
      status: 'pending',
      creator_id: c.id,
      creator_name: c.name,
      creator_key: key,
      policy,
      ...(req.pool !== undefined ? { pool: req.pool } : {}),
      ...(req.metadata !== undefined ? { metadata: req.metadata } : {}),
      ...(req.deadline_ms !== undefined ? { deadline_at: now + req.deadline_ms } : {}),
      subtasks,
      results: {},
      created_at: now,
    };
    const insert = this.db.prepare('INSERT INTO tasks (creator_key, status, doc) VALUES (?, ?, ?)');
    this.db.transaction(() => {
      t.id = Number(insert.run(key, t.status, '{}').lastInsertRowid);
      for (const st of subtasks) st.id = this.nextSubtaskId++;
      this.persist(t);
    })();
    this.tasks.set(t.id, t);
    return wire(t);
  }

  assign(
    c: Caller,
    req: {
      task_id: number;
      agent_id?: number;
      agent_name?: string;
      subtask?: string;
      subtask_id?: number;
      payload?: unknown;
      deadline_ms?: number;
    },
  ): { task_id: number; subtask_id: number; agent_id: number; agent_name: string } {
    const t = this.visible(c, req.task_id);
    if (!this.isCreator(c, t))
      throw new PermissionDeniedError(
        `Permission denied: only the creator of task ${t.id} (or an operator) assigns its subtasks`,
        { task_id: t.id },
      );
    if (!OPEN_TASK.has(t.status)) throw new InvalidStateError(`task ${t.id} is already ${t.status}`);
    if (req.subtask !== undefined && req.subtask_id !== undefined)
      throw new InvalidRequestError('invalid request: give subtask or subtask_id, not both');
    let st: SubtaskRec | undefined;
    if (req.subtask_id !== undefined) {
      st = t.subtasks.find((x) => x.id === req.subtask_id);
      if (!st) throw new NotFoundError(`subtask ${req.subtask_id} not found in task ${t.id}`);
      if (st.status !== 'pending')
        throw new InvalidStateError(`subtask ${st.id} of task ${t.id} is ${st.status}, not pending`);
    } else if (req.subtask === undefined) {
      // Neither: the task's next pending subtask (one given at TASK_CREATE, not one waiting to be reassigned).
      st = t.subtasks.find((x) => x.status === 'pending' && x.waiting_since === undefined);
      if (!st)
        throw new InvalidRequestError(
          `invalid request: task ${t.id} has no pending subtask; give subtask (a description)`,
        );
    }
    // The assignee: named (it must be reachable, as for SEND), or the pool's least loaded live agent.
    let a: AgentRecord | undefined;
    if (req.agent_id !== undefined || req.agent_name !== undefined) {
      const target = req.agent_id !== undefined ? { id: req.agent_id } : { name: req.agent_name };
      a = this.s.agents.find(target);
      if (a.state === 'FAILED' || a.state === 'STOPPED')
        throw new NotFoundError(`target agent not found: ${req.agent_name ?? req.agent_id}`);
    } else {
      a = this.pick(t);
      if (!a)
        throw new NotFoundError(
          `no live agent in the pool of task ${t.id} (${t.pool ?? t.pool_name ?? t.pool_service?.service ?? 'no pool: name an agent'})`,
        );
    }
    const now = Date.now();
    const fresh = !st;
    st ??= {
      id: this.nextSubtaskId,
      description: req.subtask!,
      status: 'pending',
      attempts: 0,
      created_at: now,
    };
    const before = st.payload;
    if (req.payload !== undefined) st.payload = req.payload;
    try {
      this.hand(t, st, a, { id: c.id, name: this.s.mail.nameOf(c.id) || c.name }, req.deadline_ms);
    } catch (e) {
      st.payload = before; // a refused assignment (a full mailbox) changes nothing
      throw e;
    }
    if (fresh) {
      this.nextSubtaskId++;
      t.subtasks.push(st);
    }
    this.fixPool(t, a);
    this.persist(t);
    return { task_id: t.id, subtask_id: st.id, agent_id: a.def.id, agent_name: a.def.name };
  }

  status(c: Caller, id: number): Task {
    return wire(this.visible(c, id));
  }

  complete(
    c: Caller,
    req: { task_id: number; subtask_id?: number; result?: unknown; error?: string },
  ): { task_id: number; subtask_id: number; subtask_status: Subtask['status']; task_status: TaskStatus } {
    const t = this.visible(c, req.task_id);
    const me = c.role === 'agent' ? (c.identity ?? c.name) : undefined;
    let st: SubtaskRec | undefined;
    if (req.subtask_id !== undefined) {
      st = t.subtasks.find((x) => x.id === req.subtask_id);
      if (!st) throw new NotFoundError(`subtask ${req.subtask_id} not found in task ${t.id}`);
    } else {
      st = t.subtasks.find((x) => x.status === 'assigned' && me && x.assignee_identity === me);
      // One it held once (since reassigned) is refused below like anybody else's.
      st ??= t.subtasks.find((x) => me && x.holders?.includes(me));
      if (!st)
        throw new InvalidRequestError(
          `invalid request: you hold no open subtask of task ${t.id}; give subtask_id`,
        );
    }
    // Its holder (a finished one too: it learns why it can no longer complete it), not one it was taken from.
    const assignee = me !== undefined && st.status !== 'pending' && st.assignee_identity === me;
    if (!assignee && !this.isCreator(c, t))
      throw new PermissionDeniedError(
        `Permission denied: subtask ${st.id} of task ${t.id} is not assigned to you${me && st.holders?.includes(me) ? ' (any more: it went to another agent)' : ''}`,
        { task_id: t.id, subtask_id: st.id },
      );
    if (!OPEN_TASK.has(t.status)) throw new InvalidStateError(`task ${t.id} is already ${t.status}`);
    if (st.status === 'completed' || st.status === 'failed')
      throw new InvalidStateError(`subtask ${st.id} of task ${t.id} is already ${st.status}`);
    if (req.error !== undefined) this.attemptFailed(t, st, `reported: ${req.error}`, req.error);
    else {
      st.status = 'completed';
      st.result = req.result ?? null;
      st.finished_at = Date.now();
      delete st.deadline_at;
      delete st.waiting_since;
      (t.results as Record<string, unknown>)[String(st.id)] = st.result;
      if (t.subtasks.every((x) => x.status === 'completed')) this.finish(t, 'completed');
    }
    this.persist(t);
    return { task_id: t.id, subtask_id: st.id, subtask_status: st.status, task_status: t.status };
  }

  list(c: Caller, req: { status?: TaskStatus; mine: boolean; limit: number }): Task[] {
    const all = c.role === 'operator' && !req.mine;
    const key = keyOf(c);
    const out: Task[] = [];
    type Row = { id: number; status: string; creator_key: string; doc: string };
    for (const row of this.newest.iterate() as IterableIterator<Row>) {
      if (out.length >= req.limit) break;
      if (req.status && row.status !== req.status) continue;
      const t = this.tasks.get(row.id) ?? this.parse(row.doc);
      if (!all && row.creator_key !== key && !this.isHolder(c, t)) continue;
      out.push(wire(t));
    }
    return out;
  }

  // ─── failures, deadlines, endings ─────────────────────────────────────────────────────────

  /**
   * One attempt at `st` failed (`reason`): by the policy, reassign it (to another live agent of the
   * pool, or wait for one) or fail it, and with it the task.
   */
  private attemptFailed(t: TaskRec, st: SubtaskRec, reason: string, error?: string): void {
    this.touched = true;
    const from = { id: st.assignee_id ?? 0, name: st.assignee_name ?? '' };
    if (st.assignee_identity) st.failed_by = [...new Set([...(st.failed_by ?? []), st.assignee_identity])];
    st.error = error ?? reason;
    st.last_reason = reason;
    delete st.deadline_at;
    if (t.policy.on_failure === 'fail' || st.attempts >= t.policy.max_attempts) {
      const why =
        t.policy.on_failure === 'fail'
          ? reason
          : `${reason} (attempt ${st.attempts} of ${t.policy.max_attempts})`;
      this.failSubtask(t, st, why);
      return;
    }
    st.status = 'pending';
    st.waiting_since = Date.now();
    this.reassign(t, st, from);
  }

  /** Tries to hand a waiting subtask to a live agent of the pool; false when there is none. */
  private reassign(t: TaskRec, st: SubtaskRec, from: { id: number; name: string }): boolean {
    const avoid = st.failed_by?.slice(-1) ?? [];
    let a = this.pick(t, avoid);
    while (a) {
      try {
        this.hand(t, st, a, { id: 0, name: 'kernel' }, undefined);
      } catch (e) {
        this.s.log.warn({ err: e, task: t.id, subtask: st.id, agent: a.def.name }, 'task reassign refused');
        const tried: string[] = [...avoid, a.def.identity];
        a = this.pool(t).find((x) => !tried.includes(x.def.identity));
        if (a) avoid.push(a.def.identity);
        continue;
      }
      this.s.publish(
        'TASK_REASSIGNED',
        {
          task_id: t.id,
          subtask_id: st.id,
          from_id: from.id,
          from_name: from.name,
          agent_id: a.def.id,
          agent_name: a.def.name,
          attempt: st.attempts,
          reason: st.last_reason ?? '',
        },
        0,
      );
      return true;
    }
    return false;
  }

  private failSubtask(t: TaskRec, st: SubtaskRec, why: string): void {
    st.status = 'failed';
    st.error = why;
    st.finished_at = Date.now();
    delete st.waiting_since;
    this.finish(t, 'failed', `subtask ${st.id} failed: ${why}`, st.id);
  }

  /** The task ended: subscribers get TASK_COMPLETED/TASK_FAILED, its creator a message. */
  private finish(t: TaskRec, status: 'completed' | 'failed', error?: string, subtaskId?: number): void {
    this.touched = true;
    t.status = status;
    t.finished_at = Date.now();
    if (error !== undefined) t.error = error;
    // What was still open of a failed task fails with it (its holders can no longer complete it).
    if (status === 'failed')
      for (const st of t.subtasks)
        if (st.status === 'assigned' || st.status === 'pending') {
          st.status = 'failed';
          st.error = `the task failed: ${error}`;
          st.finished_at = t.finished_at;
          delete st.deadline_at;
          delete st.waiting_since;
        }
    const data = {
      task_id: t.id,
      creator_name: t.creator_name,
      status,
      ...(status === 'completed'
        ? { results: t.results }
        : { error, ...(subtaskId ? { subtask_id: subtaskId } : {}) }),
    };
    this.s.publish(status === 'completed' ? 'TASK_COMPLETED' : 'TASK_FAILED', data, 0);
    const to = this.creatorId(t);
    if (to === undefined) return;
    const body = {
      type: status === 'completed' ? 'task_completed' : 'task_failed',
      task_id: t.id,
      status,
      description: t.description,
      results: t.results,
      ...(error !== undefined ? { error } : {}),
      ...(subtaskId ? { subtask_id: subtaskId } : {}),
    };
    try {
      this.s.mail.deliver(to, 0, 'kernel', JSON.stringify(body));
    } catch (e) {
      this.s.log.warn({ err: e, task: t.id, to }, 'task end message not delivered');
    }
  }

  /** The creator's id now, if it is still there to be told. */
  private creatorId(t: TaskRec): number | undefined {
    if (t.creator_key.startsWith('agent:')) {
      const a = this.byIdentity(t.creator_key.slice('agent:'.length));
      return a && a.state !== 'FAILED' && a.state !== 'STOPPED' ? a.def.id : undefined;
    }
    return t.creator_id && this.s.principals.isClient(t.creator_id) ? t.creator_id : undefined;
  }

  /**
   * Checks every open task: assignments whose process is gone or whose deadline passed fail their
   * attempt; waiting subtasks get another try; tasks past their deadline fail. While the kernel stops,
   * agents exit because it does: nothing is failed then (the next kernel reassigns).
   */
  private sweep(): void {
    if (this.s.agents.shuttingDown || this.stop.signal.aborted) return;
    const now = Date.now();
    for (const t of this.tasks.values()) {
      if (!OPEN_TASK.has(t.status)) continue;
      this.touched = false;
      if (t.deadline_at !== undefined && now >= t.deadline_at) {
        this.finish(t, 'failed', 'task deadline passed');
      } else {
        for (const st of t.subtasks) {
          if (!OPEN_TASK.has(t.status)) break;
          if (st.status === 'assigned') {
            const a = this.byIdentity(st.assignee_identity);
            if (a && st.assignee_pid === 0 && a.pid > 0 && this.live(a)) {
              st.assignee_pid = a.pid;
              this.touched = true;
            }
            if (!this.live(a) || (st.assignee_pid !== 0 && a.pid !== st.assignee_pid)) {
              this.attemptFailed(t, st, `assignee ${st.assignee_name} exited`);
            } else if (st.assignee_id !== a.def.id) {
              st.assignee_id = a.def.id;
              this.touched = true;
            } else if (st.deadline_at !== undefined && now >= st.deadline_at) {
              this.attemptFailed(t, st, `deadline passed on ${st.assignee_name}`);
            }
          } else if (st.status === 'pending' && st.waiting_since !== undefined) {
            if (
              !this.reassign(t, st, { id: 0, name: '' }) &&
              now - st.waiting_since >= t.policy.reassign_wait_ms
            )
              this.failSubtask(t, st, `${st.last_reason}; no agent of the pool to reassign to`);
          }
        }
      }
      if (this.touched) this.persist(t);
    }
  }
}
