/**
 * Agents as the syscall families see them: a SPAWN request turned into a supervised process, who may
 * control whom (operators everything, an agent what it transitively spawned), the agent a pid belongs
 * to, and the public description of an agent. It composes the supervisor (lifecycle), the post office
 * (names), the principals (rights) and the sandbox runtime (uids, the spawner).
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import type { AgentInfo, SpawnArgs, SpawnReply } from '../../protocol/index.js';
import type { Caller } from '../core/context.js';
import {
  InvalidRequestError,
  NameTakenError,
  NotFoundError,
  PermissionDeniedError,
  SpawnFailedError,
} from '../core/errors.js';
import type { Principals } from '../core/principals.js';
import type { PostOffice } from '../ipc/mailboxes.js';
import { parsePermissions, within, type Permissions } from '../perms/permissions.js';
import type { SandboxRuntime } from '../sandbox/runtime.js';
import type { AgentLogs } from '../supervisor/logs.js';
import {
  DEFAULT_POLICY,
  type AgentRecord,
  type RestartPolicy,
  type RestartPolicyName,
  type Supervisor,
} from '../supervisor/supervisor.js';

const PROTECTED_ENV = /^(CLOVE_|PATH$|HOME$)/;

export interface AgentServiceOptions {
  supervisor: Supervisor;
  mail: PostOffice;
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
}

export class AgentService {
  constructor(private readonly o: AgentServiceOptions) {}

  get(id: number): AgentRecord | undefined {
    return this.o.supervisor.get(id);
  }

  list(): AgentRecord[] {
    return this.o.supervisor.list();
  }

  /** The agent a pid belongs to: by the sandbox's cgroup, else by its parent chain in /proc. */
  agentOfPid(pid: number): { id: number; name: string } | undefined {
    if (pid <= 0) return undefined;
    const viaSandbox = this.o.sandbox.ownerOf(pid);
    const a =
      viaSandbox !== undefined
        ? this.o.supervisor.get(viaSandbox)
        : this.byParentChain(pid, this.o.supervisor);
    return a ? { id: a.def.id, name: a.def.name } : undefined;
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
    const byName = (name: string) =>
      this.o.mail.resolve(name) ?? this.o.supervisor.list().find((a) => a.def.name === name)?.def.id;
    const id = t.id ?? (t.name !== undefined ? byName(t.name) : undefined);
    const a = id !== undefined ? this.o.supervisor.get(id) : undefined;
    if (!a)
      throw new NotFoundError(
        t.name !== undefined ? `agent not found: ${t.name}` : `agent not found: ${t.id}`,
        { agent_id: t.id ?? 0 },
      );
    return a;
  }

  /** `find`, then refuse unless the caller may control the agent. */
  controlled(caller: Caller, t: { id?: number; name?: string }): AgentRecord {
    const a = this.find(t);
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
      ...(forOperator ? { log_file: this.o.logs.file(a.def.name) } : {}),
    };
  }

  /**
   * SPAWN: checks the caller's rights, resolves the request (validated against the contract already)
   * into the agent's definition, and starts it. The only place a SPAWN request is interpreted.
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

    const sup = this.o.supervisor;
    const id = this.o.principals.allocate();
    const name = req.name ?? `agent_${id}`;
    const holder = this.o.mail.resolve(name);
    if (holder !== undefined) throw new NameTakenError(`name already in use: ${name}`, { agent_id: holder });
    // An escalated agent of the same name gives way to the new one.
    const failed = sup.list().find((a) => a.def.name === name);
    if (failed) {
      if (failed.state !== 'FAILED')
        throw new NameTakenError(`name already in use: ${name}`, { agent_id: failed.def.id });
      sup.kill(failed.def.id, caller.id);
    }

    const account = this.o.sandbox.account(id, req.sandboxed);
    const cwd = req.cwd ? path.resolve(req.cwd) : this.workDir(name, account);
    const scriptPath = req.script ? path.resolve(cwd, req.script) : undefined;
    const argv = req.command?.length ? [...req.command] : this.argvFor(scriptPath!, req.python);
    if (req.command?.length && !path.isAbsolute(argv[0])) argv[0] = resolveOnPath(argv[0]);
    const args = req.args ?? (req.command?.length ? [] : [this.o.agentSocket]);
    const env = this.envFor(id, name, req.env ?? {});

    this.o.mail.register(id, name);
    this.o.principals.setRights(id, perms);
    let a: AgentRecord;
    try {
      a = await sup.create({
        id,
        name,
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
      });
    } catch (e) {
      this.o.mail.release(id);
      this.o.principals.forget(id);
      throw e;
    }
    this.o.log.info({ agent: name, id, pid: a.pid, by: caller.id }, 'agent spawned');
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

  /**
   * An agent's own work directory (its default cwd), `<data-dir>/work/<name>`: kept across restarts,
   * owned by the uid it runs as.
   */
  private workDir(name: string, account: { uid: number; gid: number } | null): string {
    const dir = path.join(this.o.dataDir, 'work', name);
    this.o.sandbox.prepareWorkDir(dir, account);
    return dir;
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

function parentPid(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm may hold spaces and parentheses: the fields after the last ')' are fixed.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    return Number.isInteger(ppid) ? ppid : null;
  } catch {
    return null;
  }
}
