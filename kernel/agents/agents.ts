/**
 * Agents as the syscall families see them: a SPAWN request turned into a supervised process, who may
 * control whom (operators everything, an agent what it transitively spawned), the agent a pid belongs
 * to, and the public description of an agent. It composes the supervisor (lifecycle), the post office
 * (names), the principals (rights) and the sandbox runtime (uids, the spawner).
 *
 * It also owns agents' identities (registry.ts, docs/protocol.md §2 "An agent's identity and its
 * name"): which names are reserved, when an identity starts and ends, and the agents a kernel started
 * again on the same data dir brings back (`restore`).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AgentInfo, SpawnArgs, SpawnReply } from '../../protocol/index.js';
import { budgetsFor, type Budgets } from '../core/budgets.js';
import type { Caller } from '../core/context.js';
import {
  InvalidRequestError,
  NameTakenError,
  NotFoundError,
  PermissionDeniedError,
  SpawnFailedError,
} from '../core/errors.js';
import type { Principals } from '../core/principals.js';
import { NAME_RE, type Mail } from '../ipc/mailboxes.js';
import { parsePermissions, within, type Permissions } from '../perms/permissions.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { AgentLogs } from '../supervisor/logs.js';
import {
  DEFAULT_POLICY,
  type AgentDef,
  type AgentRecord,
  type RestartPolicy,
  type RestartPolicyName,
  type Supervisor,
} from '../supervisor/supervisor.js';
import type { Account } from '../sandbox/types.js';
import { parentPid, startedAtMs, startTime, zombieOrGone } from '../sandbox/procfs.js';
import { IdentityRegistry, type IdentityRow, type PersistedAgent, type SpawnedBy } from './registry.js';
import { reownTree, retireWorkDir } from './workdir.js';

const PROTECTED_ENV = /^(CLOVE_|PATH$|HOME$)/;

export interface AgentServiceOptions {
  supervisor: Supervisor;
  mail: Mail;
  principals: Principals;
  sandbox: SandboxRuntime;
  logs: AgentLogs;
  log: Logger;
  dataDir: string;
  agentSocket: string;
  /** Extra PYTHONPATH entries for agents (the Python SDK's directory is always first). */
  pythonPath: string[];
  /** The directory holding Clove's installation (sdk/python, node_modules). */
  installDir: string;
  /** The real python3 interpreter, resolved once at start (null: none found). */
  python: string | null;
  /** Names only an operator's SPAWN may take (KernelOptions.reservedNames). */
  reservedNames?: string[];
  /** Durability of the identity registry's writes (`<data-dir>/state.db`, as the state store's). */
  durability?: 'normal' | 'full';
  /** Worlds (docs/worlds.md): a SPAWN `world` is checked first and the identity placed before it starts. */
  worlds?: { check(worldId: string): void; place(identity: string, worldId: string): void };
  /** An identity ended: its agent-scope keys can go (the kernel wires it to the state store). */
  onIdentityEnded?: (identity: string) => void;
  /**
   * An agent was re-adopted or restored under `identity` as agent `id`, before any of its connections is
   * served: what the kernel keeps for the identity (its durable mailbox) goes to that id.
   */
  onIdentityBack?: (identity: string, id: number) => void;
  /** The event bus: an agent's persisted subscriptions are made again when a kernel restart brings it back. */
  events?: { subscribe(id: number, topics: string[]): void };
}

/**
 * What a clustered kernel adds to names (kernel/cluster/cluster.ts): an agent's name is claimed
 * cluster-wide before it is registered here, and a restartable agent's definition is stored so that it
 * outlives this node.
 */
export interface ClusterNames {
  /** Claims `name` for `id` in the whole cluster; throws name_taken when another node (or id) has it. */
  claim(name: string, id: number, identity: string): Promise<void>;
  /** Gives a claimed name back if `id` holds it (never throws). */
  release(name: string, id: number): void;
  /** An agent was spawned here (SPAWN or a takeover): `request` is what would spawn it again elsewhere. */
  spawned(a: AgentRecord, request: SpawnArgs): Promise<void>;
}

/** Why a name cannot be taken, and by whom it is held (0: nobody running). */
interface Reservation {
  why: string;
  holder: number;
}

export class AgentService {
  private readonly registry: IdentityRegistry;
  /** Live identities held by a supervised agent: identity -> agent id. The others are dormant. */
  private readonly held = new Map<string, number>();
  private readonly reserved: Set<string>;
  private cluster?: ClusterNames;

  constructor(private readonly o: AgentServiceOptions) {
    this.registry = new IdentityRegistry({
      path: path.join(o.dataDir, 'state.db'),
      durability: o.durability,
    });
    this.reserved = new Set(o.reservedNames ?? []);
    // The ids a previous kernel's agents had stay theirs (re-adopted or restored, they keep them).
    for (const r of this.registry.all()) if (r.agentId !== null) o.principals.reserve(r.agentId);
    // SET_PERMS (and anything else that changes an agent's rights or budgets) is persisted with it.
    o.principals.watch((id) => this.rightsChanged(id));
  }

  /** A clustered kernel: names are claimed cluster-wide from now on (before the first agent starts). */
  attachCluster(c: ClusterNames): void {
    this.cluster = c;
  }

  /** Closes the identity registry (after the supervisor shut down). */
  close(): void {
    this.registry.close();
  }

  /** Every live identity, held or dormant (the journal drops what belongs to none at start). */
  liveIdentities(): string[] {
    return this.registry.all().map((r) => r.identity);
  }

  /** The identity `<name>#<serial>` of a supervised agent. */
  identityOf(id: number): string | undefined {
    return this.o.supervisor.get(id)?.def.identity;
  }

  get(id: number): AgentRecord | undefined {
    return this.o.supervisor.get(id);
  }

  list(): AgentRecord[] {
    return this.o.supervisor.list();
  }

  /** The agent a pid belongs to: by the sandbox's cgroup, else by its parent chain in /proc. */
  agentOfPid(pid: number): { id: number; name: string; identity: string } | undefined {
    if (pid <= 0) return undefined;
    const viaSandbox = this.o.sandbox.ownerOf(pid);
    const a =
      viaSandbox !== undefined
        ? this.o.supervisor.get(viaSandbox)
        : this.byParentChain(pid, this.o.supervisor);
    return a ? { id: a.def.id, name: a.def.name, identity: a.def.identity } : undefined;
  }

  private byParentChain(pid: number, sup: Supervisor): AgentRecord | undefined {
    let p = pid;
    for (let depth = 0; depth < 64 && p > 1; depth++) {
      const a = sup.pidOwner(p);
      if (a) return a;
      const next = parentPid(p);
      if (next === null || next === process.pid) return undefined;
      p = next;
    }
    return undefined;
  }

  spawnsSettled(): Promise<void> {
    return this.o.supervisor.spawnsSettled();
  }

  /** True once the kernel began stopping: agents exit because it does, not because they failed. */
  get shuttingDown(): boolean {
    return this.o.supervisor.shuttingDown;
  }

  /** True when `caller` may act on `agent`: an operator, or an ancestor through the spawn chain. */
  mayControl(caller: Caller, agent: AgentRecord): boolean {
    if (caller.role === 'operator') return true;
    for (let p = agent.def.parentId, depth = 0; p && depth < 256; depth++) {
      if (p === caller.id) return true;
      p = this.o.supervisor.get(p)?.def.parentId ?? 0;
    }
    return false;
  }

  /** The agent named by id or name (escalated agents have released their names, but are still found). */
  find(t: { id?: number; name?: string }): AgentRecord {
    const byName = (name: string) => this.o.mail.resolve(name) ?? this.o.supervisor.named(name)?.def.id;
    const id = t.id ?? (t.name !== undefined ? byName(t.name) : undefined);
    const a = id !== undefined ? this.o.supervisor.get(id) : undefined;
    if (!a)
      throw new NotFoundError(
        t.name !== undefined ? `agent not found: ${t.name}` : `agent not found: ${t.id}`,
        { agent_id: t.id ?? 0 },
      );
    return a;
  }

  /**
   * `find`, then refuse unless the caller may control the agent. For non-operators a missing agent is
   * refused like another's.
   */
  controlled(caller: Caller, t: { id?: number; name?: string }): AgentRecord {
    // To anybody but an operator, an agent that is not theirs and one that does not exist look the
    // same (permission_denied): ids and names of others are not probed this way.
    let a: AgentRecord;
    try {
      a = this.find(t);
    } catch (e) {
      if (caller.role === 'operator') throw e;
      throw new PermissionDeniedError(`Permission denied: agent ${t.name ?? t.id} is not yours to control`, {
        agent_id: t.id ?? 0,
      });
    }
    if (!this.mayControl(caller, a)) {
      throw new PermissionDeniedError(
        `Permission denied: agent ${a.def.id} (${a.def.name}) is not yours to control`,
        { agent_id: a.def.id },
      );
    }
    return a;
  }

  /** SIGTERM, then SIGKILL after the grace period; with `wait`, resolves once the process is gone. */
  async kill(caller: Caller, a: AgentRecord, o: { graceMs?: number; wait: boolean }): Promise<void> {
    const exited = this.o.supervisor.waitExit(a.def.id);
    this.o.supervisor.kill(a.def.id, caller.id, o.graceMs);
    if (o.wait) await exited;
    this.o.log.info({ agent: a.def.name, id: a.def.id, by: caller.id }, 'agent killed');
  }

  /** HELLO from an agent's own process: it is ready (LIST `ready`) until that process ends. */
  saidHello(id: number): void {
    const a = this.o.supervisor.get(id);
    if (a?.proc && !a.helloAt) a.helloAt = Date.now();
  }

  /** RESTART: stops the agent's process and starts it again; with `wait`, resolves once it has started. */
  async restart(caller: Caller, a: AgentRecord, o: { graceMs?: number; wait: boolean }): Promise<number> {
    this.o.supervisor.restart(a.def.id, caller.id, o.graceMs);
    this.o.log.info({ agent: a.def.name, id: a.def.id, by: caller.id }, 'agent restart');
    if (!o.wait) return 0;
    await this.o.supervisor.waitStarted(a.def.id);
    return a.proc ? a.pid : 0;
  }

  pause(a: AgentRecord): void {
    this.o.supervisor.pause(a.def.id);
  }

  resume(a: AgentRecord): void {
    this.o.supervisor.resume(a.def.id);
  }

  describe(a: AgentRecord, forOperator: boolean): AgentInfo {
    const e = a.lastExit;
    return {
      id: a.def.id,
      name: a.def.name,
      pid: a.proc ? a.pid : 0,
      state: a.state,
      running: a.state === 'RUNNING',
      restarts: a.restarts,
      uptime_ms: a.proc ? Date.now() - a.startedAt : 0,
      restart_policy: a.def.policy.policy,
      parent_id: a.def.parentId,
      exit_code: e?.code ?? null,
      exit_signal: e?.signal ?? null,
      exit_reason: e?.reason ?? null,
      mailbox: this.o.mail.size(a.def.id),
      ready: a.proc !== null && a.helloAt > 0,
      labels: a.def.labels,
      ...(a.def.durable ? { durable: true } : {}),
      ...(a.def.standby ? { standby: this.o.supervisor.standbyOf(a) } : {}),
      ...withSpare(this.o.supervisor.spareOf(a)),
      ...(forOperator ? { log_file: this.o.logs.file(a.def.name) } : {}),
    };
  }

  /**
   * The SPAWN request an agent was started with, as run (script path absolute, rights explicit): what
   * the HTTP API's scale copies to start a service's next replica. Undefined for an agent persisted
   * before requests were kept.
   */
  spawnRequestOf(id: number): SpawnArgs | undefined {
    const a = this.o.supervisor.get(id);
    const row = a ? this.registry.live(a.def.name) : undefined;
    const r = row?.definition?.request;
    return r ? structuredClone(r) : undefined;
  }

  /**
   * SPAWN: checks the caller's rights, resolves the request (validated against the contract already)
   * into the agent's definition, gives it an identity and starts it. The only place a SPAWN request is
   * interpreted.
   */
  async spawn(caller: Caller, req: SpawnArgs): Promise<SpawnReply> {
    const operator = caller.role === 'operator';
    if (!operator && !caller.perms.can_spawn)
      throw new PermissionDeniedError('Permission denied: spawning agents is not allowed');
    if ((req.command || req.python) && !operator) {
      throw new PermissionDeniedError(
        'Permission denied: only an operator may choose the executable (command, python)',
      );
    }
    if (!req.script && !req.command?.length) throw new InvalidRequestError('script path required');
    if (!req.sandboxed && !operator)
      throw new PermissionDeniedError('Permission denied: only an operator may spawn unsandboxed agents');
    if (req.network && !operator && !caller.perms.can_http)
      throw new PermissionDeniedError('Permission denied: cannot grant network access you do not have');
    const perms = this.rightsFor(caller, req);
    if (req.world) this.o.worlds?.check(req.world);

    const sup = this.o.supervisor;
    const id = this.o.principals.allocate();
    const name = req.name ?? `agent_${id}`;
    if (!NAME_RE.test(name))
      throw new InvalidRequestError(`invalid request: name must match ${NAME_RE.source}`);
    const claim = this.claimable(caller, name);

    const account = this.o.sandbox.account(id, req.sandboxed);
    const cwd = req.cwd ? path.resolve(req.cwd) : this.workDirOf(name);
    const scriptPath = req.script ? path.resolve(cwd, req.script) : undefined;
    const argv = req.command?.length ? [...req.command] : this.argvFor(scriptPath!, req.python);
    if (req.command?.length && !path.isAbsolute(argv[0])) argv[0] = resolveOnPath(argv[0]);
    const args = req.args ?? (req.command?.length ? [] : [this.o.agentSocket]);
    const env = this.envFor(id, name, req.env ?? {});

    const budgets = budgetsFor(
      this.o.principals.defaultBudgets,
      req.budgets,
      operator ? null : this.o.principals.budgets(caller.id),
    );

    // Everything is checked: from here on the name is taken.
    if (claim.squatter !== undefined) {
      this.o.mail.unregister(claim.squatter, name);
      this.o.log.warn(
        { name, holder: claim.squatter, by: caller.id },
        "name taken back from its REGISTER holder for an operator's SPAWN",
      );
    }
    // An escalated agent of the same name gives way to the new one (its identity ends).
    if (claim.failed) sup.kill(claim.failed.def.id, caller.id);
    const spawnedBy = this.spawnedBy(caller);
    const dormant = this.registry.live(name);
    if (dormant && this.held.has(dormant.identity))
      throw new NameTakenError(`name already in use: ${name}`, { agent_id: this.held.get(dormant.identity) });
    if (dormant) {
      this.o.log.info(
        { agent: name, identity: dormant.identity, by: caller.id },
        "an operator's SPAWN takes back a dormant identity",
      );
    } else {
      // A work directory no live identity owns (a data dir of an older kernel): not the new agent's.
      try {
        const orphan = retireWorkDir(path.join(this.o.dataDir, 'work'), name, `${name}#orphaned`);
        if (orphan)
          this.o.log.warn({ agent: name, moved_to: orphan }, 'moved aside an orphaned work directory');
      } catch (e) {
        throw new SpawnFailedError(
          `cannot move aside the old work directory of ${name}: ${(e as Error).message}`,
        );
      }
    }
    const row = dormant ?? this.registry.begin(name, spawnedBy);
    const def: AgentDef = {
      id,
      name,
      identity: row.identity,
      argv: [...argv, ...args],
      env,
      cwd,
      sandboxed: req.sandboxed,
      network: req.network,
      limits: req.limits ?? {},
      parentId: caller.id,
      policy: policyOf(req),
      spawner: this.o.sandbox.spawner(),
      account,
      share: scriptPath ? this.shareable(caller, path.dirname(scriptPath)) : [],
      labels: { ...(req.labels ?? {}) },
      durable: req.durable,
      standby: req.standby,
      spare: req.spare,
    };
    // What would spawn it again (another node, or a scaled service's next replica): the request as
    // run here, its script's path absolute, its rights made explicit.
    const asRun = {
      ...req,
      name,
      ...(scriptPath ? { script: scriptPath } : {}),
      permissions: perms,
      level: undefined,
    } as unknown as SpawnArgs;
    let a: AgentRecord;
    try {
      if (!req.cwd) this.prepareWorkDir(name, dormant?.definition?.account ?? null, account);
      // In its world from its first syscall: placed before the process starts.
      if (req.world) this.o.worlds?.place(row.identity, req.world);
      a = await this.start(def, row, perms, budgets, spawnedBy, asRun);
    } catch (e) {
      // A new identity whose first start failed never lived; a dormant one stays as it was.
      if (!dormant) this.endIdentity(row);
      throw e;
    }
    this.o.log.info({ agent: name, identity: row.identity, id, pid: a.pid, by: caller.id }, 'agent spawned');
    // What would spawn it again on another node: the request as run here, with its rights made explicit.
    await this.cluster?.spawned(a, asRun);
    return {
      success: true,
      id,
      name,
      pid: a.pid,
      status: 'running',
      restart_policy: a.def.policy.policy,
      isolation: a.isolation!,
    };
  }

  /**
   * Starts an agent under an identity (a SPAWN, or a restore): names it, gives it its rights and
   * budgets, starts it, and persists its definition.
   */
  private async start(
    def: AgentDef,
    row: IdentityRow,
    perms: Permissions,
    budgets: Budgets,
    spawnedBy: SpawnedBy,
    request?: SpawnArgs,
  ): Promise<AgentRecord> {
    // Clustered: the name is the cluster's first (a name another node holds is name_taken here too).
    if (this.cluster) await this.cluster.claim(def.name, def.id, row.identity);
    try {
      this.o.mail.register(def.id, def.name);
    } catch (e) {
      this.cluster?.release(def.name, def.id);
      throw e;
    }
    this.o.principals.setRights(def.id, perms);
    this.o.principals.setBudgets(def.id, budgets);
    let a: AgentRecord;
    try {
      a = await this.o.supervisor.create(def);
    } catch (e) {
      this.o.mail.release(def.id);
      this.o.principals.forget(def.id);
      this.cluster?.release(def.name, def.id);
      throw e;
    }
    this.held.set(row.identity, def.id);
    try {
      this.registry.define(row, persisted(def, perms, budgets, request), spawnedBy);
    } catch (e) {
      // The agent runs; it is only not brought back should the kernel die.
      this.o.log.error(
        { agent: def.name, identity: row.identity, err: (e as Error).message },
        'cannot persist the agent',
      );
    }
    return a;
  }

  /**
   * Whether `caller` may SPAWN `name`, and what must give way: throws name_taken for a reserved name
   * (non-operators), a name an agent holds as its own, a running agent's name, and a name squatted by
   * REGISTER unless an operator spawns (then the squatter loses it). Changes nothing.
   */
  private claimable(caller: Caller, name: string): { squatter?: number; failed?: AgentRecord } {
    const operator = caller.role === 'operator';
    if (!operator) {
      const r = this.reservation(caller, name);
      if (r) throw new NameTakenError(`name reserved: ${name} (${r.why})`, { agent_id: r.holder });
    }
    const out: { squatter?: number; failed?: AgentRecord } = {};
    const holder = this.o.mail.resolve(name);
    if (holder !== undefined) {
      // An agent's own spawn name is never taken away; an extra name (REGISTER) is, by an operator.
      const own = this.o.supervisor.get(holder)?.def.name === name;
      if (!operator || own) throw new NameTakenError(`name already in use: ${name}`, { agent_id: holder });
      out.squatter = holder;
    }
    const listed = this.o.supervisor.named(name);
    if (listed) {
      if (listed.state !== 'FAILED')
        throw new NameTakenError(`name already in use: ${name}`, { agent_id: listed.def.id });
      out.failed = listed;
    }
    return out;
  }

  /**
   * Why `name` is reserved against `caller` (undefined: it is not). Reserved are: the names in the
   * kernel's configuration (always); the name of a live identity spawned by an operator; the name of a
   * dormant identity (one no agent holds: a `never` agent of a dead kernel). Nobody is refused their own
   * name. Operators' SPAWN ignores reservations (not their REGISTER).
   */
  private reservation(caller: Caller, name: string): Reservation | undefined {
    const row = this.registry.live(name);
    const holder = row ? this.held.get(row.identity) : undefined;
    if (holder !== undefined && holder === caller.id) return undefined;
    if (this.reserved.has(name))
      return {
        why: 'reserved by the kernel configuration for agents spawned by an operator',
        holder: holder ?? 0,
      };
    if (!row) return undefined;
    if (holder === undefined)
      return { why: `identity ${row.identity} is dormant; only an operator may spawn it again`, holder: 0 };
    if (row.spawnedBy === 'operator')
      return { why: `held by agent ${holder}, spawned by an operator`, holder };
    return undefined;
  }

  /**
   * REGISTER succeeded: an agent's extra name is kept with its identity, so that it holds it again when
   * a kernel restart re-adopts or restores it (docs/restart.md). Never throws.
   */
  registered(caller: Caller, name: string): void {
    if (caller.role !== 'agent') return;
    const a = this.o.supervisor.get(caller.id);
    const row = a && this.rowOf(a);
    if (!a || !row || name === a.def.name) return;
    try {
      this.registry.addName(row, name);
    } catch (e) {
      this.o.log.warn({ agent: a.def.name, name, err: (e as Error).message }, 'cannot persist a name');
    }
  }

  /**
   * SUBSCRIBE or UNSUBSCRIBE succeeded: an agent's topics (all of them, `topics`) are kept with its
   * identity, so that it is subscribed again when a kernel restart brings it back. Never throws.
   */
  subscriptionsChanged(caller: Caller, topics: string[]): void {
    if (caller.role !== 'agent') return;
    const a = this.o.supervisor.get(caller.id);
    const row = a && this.rowOf(a);
    if (!a || !row) return;
    try {
      this.registry.setTopics(row, topics);
    } catch (e) {
      this.o.log.warn({ agent: a.def.name, err: (e as Error).message }, 'cannot persist subscriptions');
    }
  }

  /**
   * What an identity's agent held besides its process, given back to agent `id` after a kernel restart:
   * the names it REGISTERed and its event subscriptions (failures logged).
   */
  private takeNames(row: IdentityRow, id: number): void {
    for (const n of row.names) {
      try {
        this.o.mail.register(id, n);
      } catch (e) {
        this.o.log.warn({ agent: row.name, name: n, err: (e as Error).message }, 'name not taken again');
      }
    }
    if (row.topics.length === 0) return;
    try {
      this.o.events?.subscribe(id, row.topics);
    } catch (e) {
      this.o.log.warn({ agent: row.name, err: (e as Error).message }, 'subscriptions not made again');
    }
  }

  /**
   * REGISTER: throws name_taken when `name` is reserved against the caller (docs/protocol.md §2):
   * configured names, live operator-spawned agents' names and dormant identities' names are never
   * registered by anybody but their own agent.
   */
  mayRegister(caller: Caller, name: string): void {
    const r = this.reservation(caller, name);
    if (r) throw new NameTakenError(`name reserved: ${name} (${r.why})`, { agent_id: r.holder });
  }

  private spawnedBy(caller: Caller): SpawnedBy {
    if (caller.role === 'operator') return 'operator';
    if (caller.role === 'agent') return this.identityOf(caller.id) ?? caller.identity ?? 'client';
    return 'client';
  }

  /** Supervisor hook: a process of the agent started; its pid is recorded (a dead kernel's leftovers are killed by it). */
  started(a: AgentRecord): void {
    const row = this.rowOf(a);
    if (!row) return;
    try {
      this.registry.setPid(row, a.pid, startTime(a.pid), a.def.id);
    } catch (e) {
      this.o.log.warn({ agent: a.def.name, err: (e as Error).message }, 'cannot record the agent pid');
    }
  }

  /**
   * Supervisor hook: the agent released its names. Gone for good (it left the supervisor's table) means
   * its identity ends — unless the kernel is shutting down: then it comes back at the next start.
   */
  released(a: AgentRecord): void {
    if (this.o.supervisor.get(a.def.id) === a) return; // escalated: listed as FAILED, its identity lives
    if (this.held.get(a.def.identity) === a.def.id) this.held.delete(a.def.identity);
    if (this.o.supervisor.shuttingDown) return;
    const row = this.rowOf(a);
    if (row) this.endIdentity(row);
  }

  private rowOf(a: AgentRecord): IdentityRow | undefined {
    const row = this.registry.live(a.def.name);
    return row?.identity === a.def.identity ? row : undefined;
  }

  /**
   * Ends an identity: its row goes, its work directory is moved to `work/.ended/<identity>` (removed when
   * empty), and the kernel is told (its agent-scope keys go). Never throws.
   */
  private endIdentity(row: IdentityRow): void {
    try {
      this.registry.end(row);
    } catch (e) {
      this.o.log.error({ identity: row.identity, err: (e as Error).message }, 'cannot end the identity');
    }
    let kept: string | null = null;
    try {
      kept = retireWorkDir(path.join(this.o.dataDir, 'work'), row.name, row.identity);
    } catch (e) {
      this.o.log.warn(
        { identity: row.identity, err: (e as Error).message },
        'cannot move the work directory of an ended identity',
      );
    }
    try {
      this.o.onIdentityEnded?.(row.identity);
    } catch (e) {
      this.o.log.warn({ identity: row.identity, err: (e as Error).message }, 'cannot drop the agent keys');
    }
    this.o.log.info({ agent: row.name, identity: row.identity, work_dir: kept }, 'identity ended');
  }

  /** Persists an agent's new rights or budgets (SET_PERMS), so that a restore gives it what it had. */
  private rightsChanged(id: number): void {
    const a = this.o.supervisor.get(id);
    const row = a && this.rowOf(a);
    if (!a || !row?.definition || this.held.get(row.identity) !== id) return;
    const rights = this.o.principals.rights(id);
    if (!rights) return;
    try {
      this.registry.define(
        row,
        { ...row.definition, rights, budgets: budgetsOut(this.o.principals.budgets(id)) },
        row.spawnedBy,
      );
    } catch (e) {
      this.o.log.warn({ agent: a.def.name, err: (e as Error).message }, 'cannot persist the agent rights');
    }
  }

  /**
   * Kernel start-up, once the sockets listen: what a previous kernel on this data dir left. Processes of
   * its agents still running are killed (its cgroup roots were emptied by the sandbox already); every
   * persisted agent whose restart policy is not `never` is started again — same name, identity, rights
   * and budgets, a new id, its parent's new id when its parent came back too (else 0, the kernel). A
   * `never` agent's identity stays, dormant, until an operator spawns its name; so does one that fails
   * to start (logged, not fatal).
   */
  async restore(): Promise<void> {
    for (const l of this.o.sandbox.cgroupRoot()?.leftovers ?? [])
      this.o.log.warn(
        { cgroup: l.dir, pids: l.pids },
        'killed the processes a dead kernel left in its cgroups',
      );
    const rows = this.registry.all();
    // Re-adopted agents run on; what else a dead kernel left running is killed and started again.
    await Promise.all(rows.filter((r) => !this.held.has(r.identity)).map((r) => this.killLeftover(r)));
    for (const row of rows) {
      if (this.held.has(row.identity) || this.registry.live(row.name) !== row) continue;
      const d = row.definition;
      if (!d) {
        // Its first start never completed (the kernel died during the SPAWN): it never lived.
        this.o.log.warn({ agent: row.name, identity: row.identity }, 'identity never started: ended');
        this.endIdentity(row);
        continue;
      }
      if (d.policy.policy === 'never') {
        this.o.log.info(
          { agent: row.name, identity: row.identity },
          'agent not restored (restart_policy never): its identity stays, dormant',
        );
        continue;
      }
      try {
        const a = await this.restoreOne(row, d);
        this.o.log.info(
          { agent: row.name, identity: row.identity, id: a.def.id, pid: a.pid, parent_id: a.def.parentId },
          'agent restored',
        );
      } catch (e) {
        this.o.log.error(
          { agent: row.name, identity: row.identity, err: (e as Error).message },
          'agent not restored: its identity stays, dormant',
        );
      }
    }
  }

  /**
   * Kernel start-up, BEFORE the sockets listen (docs/restart.md): every agent a previous kernel on this
   * data dir left running — the pid it recorded still names the same process — is re-adopted: listed as
   * RUNNING under its identity, name, rights, budgets and its old agent id, its process watched without
   * being restarted, so its SDK reconnects to an agent the kernel knows. One that cannot be re-adopted is
   * killed and started again by `restore`. A clustered kernel re-adopts nothing (its ids are the
   * cluster's).
   */
  async adopt(): Promise<void> {
    if (this.cluster) return;
    for (const row of this.registry.all()) {
      const d = row.definition;
      if (!d || !row.pid || this.held.has(row.identity) || !sameProcess(row.pid, row.pidStart)) continue;
      try {
        const a = await this.adoptOne(row, d, row.pid);
        this.o.log.info(
          { agent: row.name, identity: row.identity, id: a.def.id, pid: a.pid, parent_id: a.def.parentId },
          'agent re-adopted: it kept running while no kernel did',
        );
      } catch (e) {
        this.o.log.warn(
          { agent: row.name, identity: row.identity, pid: row.pid, err: (e as Error).message },
          'agent not re-adopted: it is killed and started again',
        );
      }
    }
  }

  private async adoptOne(row: IdentityRow, d: PersistedAgent, pid: number): Promise<AgentRecord> {
    const spawner = this.o.sandbox.spawner();
    if (!spawner.adopt) throw new SpawnFailedError(`the ${spawner.kind} spawner cannot re-adopt agents`);
    const id = this.keptId(row);
    const def = this.restoredDef(row, d, id, d.account);
    const proc = await spawner.adopt({ ...def, agentId: id }, pid);
    this.o.mail.register(id, def.name);
    this.o.principals.setRights(id, d.rights);
    this.o.principals.setBudgets(id, budgetsIn(d.budgets, this.o.principals.defaultBudgets));
    const a = this.o.supervisor.adopt(def, proc, startedAtMs(pid) ?? Date.now());
    this.held.set(row.identity, id);
    this.takeNames(row, id);
    this.identityBack(row.identity, id);
    return a;
  }

  /** The agent id an identity's agent had, when no agent holds it now (else a new one). */
  private keptId(row: IdentityRow): number {
    const was = row.agentId;
    if (was !== null && !this.cluster && !this.o.supervisor.get(was)) return was;
    return this.o.principals.allocate();
  }

  private identityBack(identity: string, id: number): void {
    try {
      this.o.onIdentityBack?.(identity, id);
    } catch (e) {
      this.o.log.error({ identity, id, err: (e as Error).message }, 'cannot hand the identity its state');
    }
  }

  /** The definition of an identity's agent as persisted, run as agent `id` (a restore or a re-adoption). */
  private restoredDef(row: IdentityRow, d: PersistedAgent, id: number, account: Account | null): AgentDef {
    const parent = row.spawnedBy === 'operator' || row.spawnedBy === 'client' ? undefined : row.spawnedBy;
    return {
      id,
      name: row.name,
      identity: row.identity,
      argv: d.argv,
      env: {
        ...d.env,
        CLOVE_SOCKET: this.o.agentSocket,
        CLOVE_AGENT_ID: String(id),
        CLOVE_AGENT_NAME: row.name,
      },
      cwd: d.cwd,
      sandboxed: d.sandboxed,
      network: d.network,
      limits: d.limits,
      parentId: (parent !== undefined ? this.held.get(parent) : undefined) ?? 0,
      policy: { ...DEFAULT_POLICY, ...d.policy },
      spawner: this.o.sandbox.spawner(),
      account,
      share: d.share,
      labels: d.labels ?? {},
      durable: d.durable ?? false,
      standby: d.standby,
      spare: d.spare,
    };
  }

  private async restoreOne(row: IdentityRow, d: PersistedAgent): Promise<AgentRecord> {
    const id = this.keptId(row);
    const account = this.o.sandbox.account(id, d.sandboxed);
    const def = this.restoredDef(row, d, id, account);
    if (d.cwd === this.workDirOf(row.name)) this.prepareWorkDir(row.name, d.account, account);
    const a = await this.start(
      def,
      row,
      d.rights,
      budgetsIn(d.budgets, this.o.principals.defaultBudgets),
      row.spawnedBy,
      d.request,
    );
    this.takeNames(row, id);
    this.identityBack(row.identity, id);
    return a;
  }

  /**
   * SIGKILLs the process a dead kernel recorded for the identity, and its process group (plain agents
   * lead their own), if the pid still names that process (same start time; a zombie leader still holds
   * its group together).
   */
  private async killLeftover(row: IdentityRow): Promise<void> {
    const pid = row.pid;
    if (!pid || !row.pidStart || startTime(pid) !== row.pidStart) return;
    if (!zombieOrGone(pid))
      this.o.log.warn(
        { agent: row.name, identity: row.identity, pid },
        'killing a process left by a dead kernel',
      );
    for (const target of [-pid, pid]) {
      try {
        process.kill(target, 'SIGKILL');
      } catch {
        /* gone, or no such group */
      }
    }
    for (let i = 0; i < 200 && startTime(pid) === row.pidStart && !zombieOrGone(pid); i++)
      await new Promise((r) => setTimeout(r, 10));
  }

  /** The new agent's rights: as asked (never more than the caller's), else the caller's own. */
  private rightsFor(caller: Caller, req: SpawnArgs): Permissions {
    if (req.permissions !== undefined || req.level !== undefined) {
      const perms = parsePermissions(req.permissions ?? req.level);
      if (caller.role !== 'operator' && !within(perms, caller.perms)) {
        throw new PermissionDeniedError(
          'Permission denied: a spawned agent cannot get rights its parent does not have',
        );
      }
      return perms;
    }
    return caller.role === 'operator' ? parsePermissions('standard') : structuredClone(caller.perms);
  }

  /**
   * The script's directory, shared with the new agent (idmapped by the sandbox when the agent's uid
   * could not read it) only when the caller may hand it out: an operator, or an agent that owns it.
   * An agent can never let a child see a directory it does not own.
   */
  private shareable(caller: Caller, dir: string): string[] {
    if (caller.role === 'operator') return [dir];
    const own = caller.role === 'agent' ? this.o.supervisor.get(caller.id)?.def.account : undefined;
    try {
      return own && fs.statSync(dir).uid === own.uid ? [dir] : [];
    } catch {
      return [];
    }
  }

  /** An agent's own work directory (its default cwd), `<data-dir>/work/<name>`: its identity's. */
  private workDirOf(name: string): string {
    return path.join(this.o.dataDir, 'work', name);
  }

  /**
   * Creates the work directory (or re-owns it), owned by the uid the agent runs as. A dir an identity
   * already had (a restore, a dormant identity taken back) is handed from the uid it last ran as to its
   * new one.
   */
  private prepareWorkDir(name: string, was: Account | null, now: Account | null): void {
    const dir = this.workDirOf(name);
    this.o.sandbox.prepareWorkDir(dir, now);
    reownTree(dir, was, now);
  }

  /** argv for a script: `.py` with python3, `.js`/`.mjs`/`.cjs` with node, anything else executed directly. */
  private argvFor(script: string, interpreter: string | undefined): string[] {
    try {
      fs.accessSync(script, fs.constants.R_OK);
    } catch {
      throw new SpawnFailedError(`script not found or not readable: ${script}`);
    }
    if (interpreter) return [interpreter, script];
    const ext = path.extname(script);
    if (ext === '.py') {
      if (!this.o.python)
        throw new SpawnFailedError('no python3 interpreter found on PATH (set CLOVE_PYTHON)');
      return [this.o.python, script];
    }
    if (ext === '.js' || ext === '.mjs' || ext === '.cjs') return [process.execPath, script];
    try {
      fs.accessSync(script, fs.constants.X_OK);
    } catch {
      throw new SpawnFailedError(`script is not executable and has no known interpreter: ${script}`);
    }
    return [script];
  }

  /** The agent's whole environment: nothing of the kernel's own but PATH, HOME and LANG. */
  private envFor(id: number, name: string, extra: Record<string, string>): Record<string, string> {
    const env: Record<string, string> = {};
    for (const [key, v] of Object.entries(extra)) {
      if (PROTECTED_ENV.test(key)) throw new InvalidRequestError(`invalid request: env may not set ${key}`);
      env[key] = v;
    }
    const pyPath = [
      path.join(this.o.installDir, 'sdk', 'python'),
      ...this.o.pythonPath,
      ...(extra.PYTHONPATH ? [extra.PYTHONPATH] : []),
    ];
    return {
      ...env,
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: process.env.HOME ?? '/',
      LANG: extra.LANG ?? process.env.LANG ?? 'C.UTF-8',
      PYTHONPATH: pyPath.join(':'),
      PYTHONUNBUFFERED: extra.PYTHONUNBUFFERED ?? '1',
      NODE_PATH: extra.NODE_PATH ?? path.join(this.o.installDir, 'node_modules'),
      CLOVE_SOCKET: this.o.agentSocket,
      CLOVE_AGENT_ID: String(id),
      CLOVE_AGENT_NAME: name,
    };
  }
}

const POLICIES: Record<SpawnArgs['restart_policy'], RestartPolicyName> = {
  never: 'never',
  always: 'always',
  'on-failure': 'on-failure',
  on_failure: 'on-failure',
};

/** LIST's `spare` field: present only for an agent that keeps a spare sandbox. */
function withSpare(spare: { ready: boolean; pid: number } | undefined): { spare?: typeof spare } {
  return spare ? { spare } : {};
}

function policyOf(req: SpawnArgs): RestartPolicy {
  return {
    ...DEFAULT_POLICY,
    policy: POLICIES[req.restart_policy],
    maxRestarts: req.max_restarts,
    windowMs: req.restart_window * 1000,
    backoffInitialMs: req.backoff_initial_ms,
    backoffMultiplier: req.backoff_multiplier,
    backoffMaxMs: req.backoff_max_ms,
    minUptimeMs: req.min_uptime_ms,
    watchdogMs: req.watchdog_ms,
  };
}

function resolveOnPath(cmd: string): string {
  if (cmd.includes('/')) return path.resolve(cmd);
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const f = path.join(dir, cmd);
    try {
      fs.accessSync(f, fs.constants.X_OK);
      return f;
    } catch {
      // next
    }
  }
  throw new SpawnFailedError(`command not found on PATH: ${cmd}`);
}

/** What is persisted of an agent (registry.ts). */
function persisted(
  def: AgentDef,
  rights: Permissions,
  budgets: Budgets,
  request: SpawnArgs | undefined,
): PersistedAgent {
  return {
    v: 1,
    name: def.name,
    identity: def.identity,
    argv: def.argv,
    env: def.env,
    cwd: def.cwd,
    sandboxed: def.sandboxed,
    network: def.network,
    limits: def.limits,
    share: def.share ?? [],
    policy: def.policy,
    budgets: budgetsOut(budgets),
    rights,
    account: def.account,
    labels: def.labels,
    durable: def.durable,
    ...(def.standby ? { standby: def.standby } : {}),
    ...(def.spare === false ? { spare: false } : {}),
    ...(request ? { request } : {}),
  };
}

/** Budgets as JSON: an unlimited one is null. */
function budgetsOut(b: Budgets): Record<string, number | null> {
  return Object.fromEntries(Object.entries(b).map(([k, v]) => [k, Number.isFinite(v) ? v : null]));
}

function budgetsIn(b: Record<string, number | null>, defaults: Budgets): Budgets {
  const out = { ...defaults };
  for (const k of Object.keys(out) as (keyof Budgets)[]) {
    const v = b[k];
    if (v === null) out[k] = Number.POSITIVE_INFINITY;
    else if (typeof v === 'number') out[k] = v;
  }
  return out;
}

/** True when `pid` still names the process recorded with start time `start` (and is not a zombie). */
function sameProcess(pid: number, start: string | null): boolean {
  return start !== null && startTime(pid) === start && !zombieOrGone(pid);
}

/**
 * Pids of the agents a previous kernel on `dataDir` left running (their recorded pid still names the same
 * process): what the sandbox keeps at start instead of emptying (NativeSpawnerOptions.keepPids), for
 * AgentService.adopt to re-adopt.
 */
export function survivingPids(dataDir: string, durability?: 'normal' | 'full'): Set<number> {
  const registry = new IdentityRegistry({ path: path.join(dataDir, 'state.db'), durability });
  try {
    const out = new Set<number>();
    for (const r of registry.all())
      if (r.definition && r.pid && sameProcess(r.pid, r.pidStart)) out.add(r.pid);
    return out;
  } finally {
    registry.close();
  }
}
