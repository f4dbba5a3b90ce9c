/**
 * Process syscalls: SPAWN, KILL, LIST, PAUSE, RESUME. Who may act on whom is decided here: operators
 * on every agent, an agent on the agents it (transitively) spawned, nobody else.
 */
import fs from 'node:fs';
import path from 'node:path';
import {
  InvalidRequestError,
  NameTakenError,
  NotFoundError,
  PermissionDeniedError,
  SpawnError,
} from '../errors.js';
import type { Caller, Kernel } from '../kernel.js';
import { NAME_RE } from '../ipc/mailboxes.js';
import { parsePermissions, within, type Permissions } from '../perms/permissions.js';
import {
  DEFAULT_POLICY,
  type AgentRecord,
  type RestartPolicy,
  type RestartPolicyName,
} from '../supervisor/supervisor.js';
import type { ResourceLimits } from '../supervisor/spawner.js';
import { REPO_ROOT } from '../config.js';
import {
  type Payload,
  optBool,
  optInt,
  optNumber,
  optObject,
  optString,
  optStringArray,
  optStringMap,
  target,
} from '../validate.js';
import type { HandlerTable } from './index.js';

const POLICIES: Record<string, RestartPolicyName> = {
  never: 'never',
  always: 'always',
  'on-failure': 'on-failure',
  on_failure: 'on-failure',
};

const PROTECTED_ENV = /^(CLOVE_|PATH$|HOME$)/;

function policyFrom(p: Payload): RestartPolicy {
  const name = optString(p, 'restart_policy');
  let policy: RestartPolicyName = 'never';
  if (name !== undefined) {
    const v = POLICIES[name];
    if (!v)
      throw new InvalidRequestError(
        `invalid request: restart_policy must be one of never, on-failure, always`,
      );
    policy = v;
  }
  const d = DEFAULT_POLICY;
  return {
    policy,
    maxRestarts: optInt(p, 'max_restarts', 0, 1_000_000) ?? d.maxRestarts,
    windowMs: (optNumber(p, 'restart_window', { min: 0, max: 86_400 * 30 }) ?? d.windowMs / 1000) * 1000,
    backoffInitialMs: optInt(p, 'backoff_initial_ms', 0, 3_600_000) ?? d.backoffInitialMs,
    backoffMultiplier: optNumber(p, 'backoff_multiplier', { min: 1, max: 100 }) ?? d.backoffMultiplier,
    backoffMaxMs: optInt(p, 'backoff_max_ms', 0, 86_400_000) ?? d.backoffMaxMs,
    minUptimeMs: optInt(p, 'min_uptime_ms', 0, 86_400_000) ?? d.minUptimeMs,
    watchdogMs: optInt(p, 'watchdog_ms', 0, 86_400_000) ?? d.watchdogMs,
  };
}

function limitsFrom(p: Payload): ResourceLimits {
  const l = optObject(p, 'limits');
  if (!l) return {};
  const out: ResourceLimits = {};
  for (const k of ['memory', 'max_pids', 'cpu_quota', 'cpu_period', 'cpu_shares'] as const) {
    const v = optInt(l, k, 0);
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/** argv for a script: `.py` with python3, `.js`/`.mjs`/`.cjs` with node, anything else executed directly. */
function argvFor(k: Kernel, script: string, interpreter: string | undefined): string[] {
  try {
    fs.accessSync(script, fs.constants.R_OK);
  } catch {
    throw new SpawnError(`script not found or not readable: ${script}`);
  }
  if (interpreter) return [interpreter, script];
  const ext = path.extname(script);
  if (ext === '.py') return [k.pythonInterpreter(), script];
  if (ext === '.js' || ext === '.mjs' || ext === '.cjs') return [process.execPath, script];
  try {
    fs.accessSync(script, fs.constants.X_OK);
  } catch {
    throw new SpawnError(`script is not executable and has no known interpreter: ${script}`);
  }
  return [script];
}

function agentEnv(
  k: Kernel,
  id: number,
  name: string,
  extra: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, v] of Object.entries(extra)) {
    if (PROTECTED_ENV.test(key)) throw new InvalidRequestError(`invalid request: env may not set ${key}`);
    env[key] = v;
  }
  const pyPath = [
    path.join(REPO_ROOT, 'sdk', 'python'),
    ...k.opts.pythonPath,
    ...(extra.PYTHONPATH ? [extra.PYTHONPATH] : []),
  ];
  return {
    ...env,
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: process.env.HOME ?? '/',
    LANG: extra.LANG ?? process.env.LANG ?? 'C.UTF-8',
    PYTHONPATH: pyPath.join(':'),
    PYTHONUNBUFFERED: extra.PYTHONUNBUFFERED ?? '1',
    NODE_PATH: extra.NODE_PATH ?? path.join(REPO_ROOT, 'node_modules'),
    CLOVE_SOCKET: k.agentSocketPath,
    CLOVE_AGENT_ID: String(id),
    CLOVE_AGENT_NAME: name,
  };
}

/** True when `caller` may act on `agent`: an operator, or an ancestor through the spawn chain. */
export function mayControl(k: Kernel, caller: Caller, agent: AgentRecord): boolean {
  if (caller.principal.role === 'operator') return true;
  for (let p = agent.def.parentId, depth = 0; p && depth < 256; depth++) {
    if (p === caller.principal.id) return true;
    p = k.supervisor.get(p)?.def.parentId ?? 0;
  }
  return false;
}

export function findAgent(k: Kernel, t: { id?: number; name?: string }): AgentRecord {
  const id = t.id ?? (t.name !== undefined ? (k.post.resolve(t.name) ?? failedByName(k, t.name)) : undefined);
  const a = id !== undefined ? k.supervisor.get(id) : undefined;
  if (!a)
    throw new NotFoundError(
      t.name !== undefined ? `agent not found: ${t.name}` : `agent not found: ${t.id}`,
      { agent_id: t.id ?? 0 },
    );
  return a;
}

/** Escalated agents have released their names but are still listed: find them by name too. */
function failedByName(k: Kernel, name: string): number | undefined {
  return k.supervisor.list().find((a) => a.def.name === name)?.def.id;
}

function controlled(k: Kernel, c: Caller, p: Payload): AgentRecord {
  const a = findAgent(k, target(p));
  if (!mayControl(k, c, a)) {
    throw new PermissionDeniedError(
      `Permission denied: agent ${a.def.id} (${a.def.name}) is not yours to control`,
      { agent_id: a.def.id },
    );
  }
  return a;
}

async function spawnAgent(k: Kernel, c: Caller, p: Payload) {
  const operator = c.principal.role === 'operator';
  if (!operator && !c.perms.can_spawn)
    throw new PermissionDeniedError('Permission denied: spawning agents is not allowed');
  const script = optString(p, 'script');
  const command = optStringArray(p, 'command');
  const interpreter = optString(p, 'python');
  if ((command || interpreter) && !operator) {
    throw new PermissionDeniedError(
      'Permission denied: only an operator may choose the executable (command, python)',
    );
  }
  if (!script && !command?.length) throw new InvalidRequestError('script path required');
  const sandboxed = optBool(p, 'sandboxed') ?? true;
  if (!sandboxed && !operator)
    throw new PermissionDeniedError('Permission denied: only an operator may spawn unsandboxed agents');
  const network = optBool(p, 'network') ?? false;
  if (network && !operator && !c.perms.can_http)
    throw new PermissionDeniedError('Permission denied: cannot grant network access you do not have');

  let perms: Permissions;
  if (p.permissions !== undefined || p.level !== undefined) {
    perms = parsePermissions(p.permissions ?? p.level);
    if (!operator && !within(perms, c.perms)) {
      throw new PermissionDeniedError(
        'Permission denied: a spawned agent cannot get rights its parent does not have',
      );
    }
  } else {
    perms = operator ? parsePermissions('standard') : structuredClone(c.perms);
  }

  const id = k.allocateId();
  const name = optString(p, 'name') ?? `agent_${id}`;
  if (!NAME_RE.test(name))
    throw new InvalidRequestError(`invalid request: name must match ${NAME_RE.source}`);
  const requestedCwd = optString(p, 'cwd');
  const cwd = requestedCwd ? path.resolve(requestedCwd) : k.workDir(name, id);
  const holder = k.post.resolve(name);
  if (holder !== undefined) throw new NameTakenError(`name already in use: ${name}`, { agent_id: holder });
  // An escalated agent of the same name gives way to the new one.
  const failed = k.supervisor.list().find((a) => a.def.name === name);
  if (failed) {
    if (failed.state !== 'FAILED')
      throw new NameTakenError(`name already in use: ${name}`, { agent_id: failed.def.id });
    k.supervisor.kill(failed.def.id, c.principal.id);
  }

  const scriptPath = script ? path.resolve(cwd, script) : undefined;
  const argv = command?.length ? [...command] : argvFor(k, scriptPath!, interpreter);
  if (command?.length && !path.isAbsolute(argv[0])) argv[0] = resolveOnPath(argv[0]);
  const args = optStringArray(p, 'args') ?? (command?.length ? [] : [k.agentSocketPath]);
  const env = agentEnv(k, id, name, optStringMap(p, 'env') ?? {});

  k.post.register(id, name);
  k.perms.set(id, perms);
  let a: AgentRecord;
  try {
    a = await k.supervisor.create({
      id,
      name,
      argv: [...argv, ...args],
      env,
      cwd,
      sandboxed,
      network,
      limits: limitsFrom(p),
      parentId: c.principal.id,
      perms,
      policy: policyFrom(p),
      spawner: k.sandbox.spawner(sandboxed),
      account: k.sandbox.agentUid(id) ?? undefined,
    });
  } catch (e) {
    k.post.release(id);
    k.perms.delete(id);
    throw e;
  }
  k.log.info({ agent: name, id, pid: a.pid, by: c.principal.id }, 'agent spawned');
  return {
    success: true,
    id,
    name,
    pid: a.pid,
    status: 'running',
    restart_policy: a.def.policy.policy,
    isolation: a.isolation,
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
  throw new SpawnError(`command not found on PATH: ${cmd}`);
}

export function describeAgent(k: Kernel, a: AgentRecord, forOperator: boolean) {
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
    mailbox: k.post.size(a.def.id),
    ...(forOperator ? { log_file: k.logs.file(a.def.name) } : {}),
  };
}

export const lifecycle: HandlerTable = {
  SPAWN: { fn: (k, c, p) => spawnAgent(k, c, p) },
  KILL: {
    fn: async (k, c, p) => {
      const a = controlled(k, c, p);
      const grace = optInt(p, 'grace_ms', 0, 600_000);
      const wait = optBool(p, 'wait') ?? true;
      const exited = k.supervisor.waitExit(a.def.id);
      k.supervisor.kill(a.def.id, c.principal.id, grace);
      if (wait) await exited;
      k.log.info({ agent: a.def.name, id: a.def.id, by: c.principal.id }, 'agent killed');
      return { success: true, killed: true, agent_id: a.def.id };
    },
  },
  LIST: {
    fn: (k, c) => k.supervisor.list().map((a) => describeAgent(k, a, c.principal.role === 'operator')),
  },
  PAUSE: {
    fn: (k, c, p) => {
      const a = controlled(k, c, p);
      k.supervisor.pause(a.def.id);
      return { success: true, paused: true, agent_id: a.def.id };
    },
  },
  RESUME: {
    fn: (k, c, p) => {
      const a = controlled(k, c, p);
      k.supervisor.resume(a.def.id);
      return { success: true, resumed: true, agent_id: a.def.id };
    },
  },
};
