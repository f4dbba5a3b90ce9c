/**
 * exec family: EXEC (docs/protocol.md §5 "Exec"). The command runs INSIDE the calling agent's own
 * sandbox — its mount, PID, UTS, IPC and network namespaces, its cgroups (so its pids and memory
 * limits), its uid, no capabilities, NO_NEW_PRIVS, its seccomp filter — never in the kernel process and
 * never through a shell the caller's rights do not allow (policy.ts). The mechanism is the sandbox
 * layer's (kernel/sandbox/exec.ts, reached as `exec` through family.ts; native/src/enter.cc).
 *
 * A call never blocks the event loop: the command is started (a clone and an exec, like a spawn), its
 * output read from pipes by libuv, its exit seen through its pidfd, its timeout a timer that kills its
 * whole process tree.
 */
import path from 'node:path';
import { Op, type ArgsOf, type Replies } from '../../../protocol/index.js';
import {
  acceptAsync,
  defineFamily,
  exec as sandbox,
  InvalidRequestError,
  InvalidStateError,
  KernelError,
  NotFoundError,
  PermissionDeniedError,
  QuotaExceededError,
  SpawnFailedError,
  type Services,
  type SyscallContext,
} from '../../core/family.js';
import { decideCwd, decideProgram, DEFAULT_PATH, type Program } from './policy.js';

type ExecSite = sandbox.ExecSite;
type ExecArgs = ArgsOf['EXEC'];
export type ExecReply = Replies['EXEC'];

/** Default timeout (seconds), as the public kernel's. */
export const DEFAULT_TIMEOUT_S = 30;
/** Commands one caller may have running at once (each holds pipes and up to 3 × max_output bytes). */
export const MAX_RUNNING_PER_CALLER = 8;

const FILLER = { stdout: '', stderr: '', exit_code: -1 };

/** A request checked and resolved: everything but the running. */
export interface PreparedExec {
  callerId: number;
  site: ExecSite;
  program: Program;
  cwd: string;
  env: Record<string, string>;
  stdin?: string;
  timeoutMs: number;
  maxOutput: number;
}

function checkEnv(env: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env ?? {})) {
    if (!k || k.includes('=') || k.includes('\0') || v.includes('\0'))
      throw new InvalidRequestError(`invalid request: env variable ${JSON.stringify(k)} is invalid`, FILLER);
    out[k] = v;
  }
  return out;
}

/** A failure of the mechanism as a typed error reply. */
function failure(e: unknown): unknown {
  if (e instanceof KernelError) return e;
  if (e instanceof sandbox.ExecSiteError) return new InvalidStateError(e.message, FILLER);
  const err = e as { syscall?: string; code?: string; message?: string };
  if (typeof err.syscall !== 'string') return e;
  const msg = err.message ?? String(e);
  const s = err.syscall;
  const code = err.code;
  if (s === 'chdir') {
    if (code === 'EACCES') return new PermissionDeniedError(`Permission denied: cwd: ${msg}`, FILLER);
    return new NotFoundError(`cwd not usable: ${msg}`, FILLER);
  }
  if (s === 'execve') {
    if (code === 'EACCES' || code === 'EPERM')
      return new PermissionDeniedError(`Permission denied: ${msg}`, FILLER);
    if (code === 'ENOENT') return new NotFoundError(`program (or its interpreter) not found: ${msg}`, FILLER);
  }
  if ((s.startsWith('setns') || s.startsWith('pidfd_open(agent)')) && (code === 'ESRCH' || code === 'EINVAL'))
    return new InvalidStateError('the agent is not running', FILLER);
  if (s.startsWith('clone3') && code === 'EAGAIN')
    return new SpawnFailedError(
      `cannot start the command: the agent's process limit is reached (${msg})`,
      FILLER,
    );
  return new SpawnFailedError(`cannot start the command: ${msg}`, FILLER);
}

export class ExecRunner {
  private readonly running = new Map<number, number>();
  private readonly stopping = new AbortController();
  private readonly live = new Set<Promise<unknown>>();

  constructor(private readonly services: Services) {}

  /**
   * Everything EXEC checks before running: who calls, where the command runs, which program (shell or
   * not), cwd, environment, timeout. Synchronous; throws the error reply's KernelError. (An `async: true`
   * EXEC does this before it accepts the call.)
   */
  prepare(ctx: SyscallContext, req: ExecArgs): PreparedExec {
    const { caller } = ctx;
    const perms = caller.perms;
    let site: ExecSite;
    let baseEnv: Record<string, string>;
    let baseCwd: string;
    if (caller.role === 'agent') {
      const a = this.services.agents.get(caller.id);
      if (!a?.proc) throw new InvalidStateError('the agent is not running', FILLER);
      // A frozen cgroup would freeze the command while it is being started, and the kernel with it.
      if (a.state === 'PAUSED') throw new InvalidStateError('the agent is paused', FILLER);
      try {
        site = sandbox.ExecSite.ofAgent(a.proc, a.def.account);
      } catch (e) {
        throw failure(e);
      }
      baseEnv = { ...a.def.env };
      baseCwd = a.def.cwd;
    } else if (caller.role === 'operator') {
      site = sandbox.ExecSite.host();
      baseEnv = {
        PATH: process.env.PATH ?? DEFAULT_PATH,
        HOME: process.env.HOME ?? '/',
        LANG: process.env.LANG ?? 'C.UTF-8',
      };
      baseCwd = process.cwd();
    } else {
      throw new PermissionDeniedError(
        "Permission denied: EXEC runs inside an agent's own sandbox (or, for an operator, as the kernel's uid); a client has neither",
        FILLER,
      );
    }
    const env = { ...baseEnv, ...checkEnv(req.env) };
    const searchPath = env.PATH || DEFAULT_PATH;
    const homes = [env.HOME, process.env.HOME].filter((h): h is string => !!h && path.isAbsolute(h));
    try {
      const cwd = decideCwd(perms, site, req.cwd, baseCwd, homes.length ? homes : ['/']);
      const program = decideProgram(
        perms,
        site,
        req,
        { command: searchPath, entries: baseEnv.PATH || DEFAULT_PATH },
        cwd,
      );
      const wantMs = req.timeout > 0 ? req.timeout * 1000 : DEFAULT_TIMEOUT_S * 1000;
      const timeoutMs = Math.max(1, Math.min(Math.round(wantMs), perms.max_exec_time_ms));
      return {
        callerId: caller.id,
        site,
        program,
        cwd,
        env,
        stdin: req.stdin,
        timeoutMs,
        maxOutput: req.max_output,
      };
    } catch (e) {
      throw failure(e);
    }
  }

  /** Runs a prepared command to its end; `signal` kills it early (the caller's connection closed). */
  async execute(p: PreparedExec, signal?: AbortSignal): Promise<ExecReply> {
    const n = this.running.get(p.callerId) ?? 0;
    if (n >= MAX_RUNNING_PER_CALLER)
      throw new QuotaExceededError(
        `too many commands running at once (at most ${MAX_RUNNING_PER_CALLER} per caller)`,
        { ...FILLER, budget: 'exec_running', limit: MAX_RUNNING_PER_CALLER, used: n },
      );
    this.running.set(p.callerId, n + 1);
    const signals = [this.stopping.signal, ...(signal ? [signal] : [])];
    const run = p.site.run({
      file: p.program.file,
      argv: p.program.argv,
      env: p.env,
      cwd: p.cwd,
      stdin: p.stdin,
      timeoutMs: p.timeoutMs,
      maxOutput: p.maxOutput,
      signal: AbortSignal.any(signals),
    });
    this.live.add(run);
    try {
      const r = await run;
      const exitCode = r.exitCode ?? -1;
      return {
        success: r.exitCode === 0 && !r.timedOut && !r.aborted,
        stdout: r.stdout.toString('utf8'),
        stderr: r.stderr.toString('utf8'),
        output: r.output.toString('utf8'),
        exit_code: exitCode,
        ...(r.signal ? { signal: r.signal } : {}),
        timed_out: r.timedOut,
        truncated: r.truncated,
        duration_ms: r.durationMs,
        shell: p.program.shell,
        program: p.program.file,
      };
    } catch (e) {
      throw failure(e);
    } finally {
      this.live.delete(run);
      const left = (this.running.get(p.callerId) ?? 1) - 1;
      if (left > 0) this.running.set(p.callerId, left);
      else this.running.delete(p.callerId);
    }
  }

  /** prepare + execute: the EXEC reply a synchronous call gives (and an async result would carry). */
  run(ctx: SyscallContext, req: ExecArgs, signal: AbortSignal | undefined = ctx.signal): Promise<ExecReply> {
    const p = this.admit(ctx, req);
    return this.execute(p, signal);
  }

  /** prepare, with the exec_count quota: a reached deny quota refuses, an admitted command is counted. */
  admit(ctx: SyscallContext, req: ExecArgs): PreparedExec {
    const { quotas } = this.services;
    try {
      quotas.check(ctx.caller.id, 'exec_count');
    } catch (e) {
      if (e instanceof KernelError) Object.assign(e.extra, FILLER);
      throw e;
    }
    const p = this.prepare(ctx, req);
    quotas.charge(ctx.caller.id, 'exec_count', 1);
    return p;
  }

  /** Kernel shutdown: kills every command still running and waits for them. */
  async close(): Promise<void> {
    this.stopping.abort();
    await Promise.allSettled([...this.live]);
  }
}

export default defineFamily(({ services }) => {
  const runner = new ExecRunner(services);
  return {
    name: 'exec',
    handlers: {
      EXEC: async (ctx, req) => {
        // A world's member: its command mocks and chaos, else the real EXEC under its own rights.
        if (services.worlds.of(ctx.caller.id)) {
          const real = (signal: AbortSignal) => () => runner.execute(runner.admit(ctx, req), signal);
          if (req.async)
            return acceptAsync(ctx, { code: Op.EXEC, name: 'EXEC' }, req.request_id, async (signal) =>
              services.worlds.exec(ctx.caller, req, real(signal), signal),
            );
          let out: ExecReply | undefined;
          let failed: unknown;
          const done = services.worlds.exec(ctx.caller, req, real(ctx.signal), ctx.signal).then(
            (r) => (out = r),
            (e: unknown) => (failed = e ?? new Error('EXEC failed')),
          );
          await ctx.park(
            () => out !== undefined || failed !== undefined,
            () => done,
            24 * 3600 * 1000,
          );
          await done;
          if (failed !== undefined) throw failed;
          if (out) return out;
        }
        if (req.async) {
          // Every check first: a refused EXEC is an error reply, not an accepted call.
          const prepared = runner.admit(ctx, req);
          return acceptAsync(ctx, { code: Op.EXEC, name: 'EXEC' }, req.request_id, (signal) =>
            runner.execute(prepared, signal),
          );
        }
        // A long command is a blocking wait: the watchdog must not take the silent agent for hung.
        let reply: ExecReply | undefined;
        let failed: unknown;
        const done = runner.run(ctx, req).then(
          (r) => (reply = r),
          (e: unknown) => (failed = e ?? new Error('EXEC failed')),
        );
        await ctx.park(
          () => reply !== undefined || failed !== undefined,
          () => done,
          24 * 3600 * 1000,
        );
        await done;
        if (failed !== undefined) throw failed;
        return reply!;
      },
    },
    close: () => runner.close(),
  };
});
