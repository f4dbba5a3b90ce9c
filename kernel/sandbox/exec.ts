/**
 * EXEC's mechanism (the exec family, kernel/syscalls/exec/, owns the policy): where a command runs — an
 * agent's own sandbox, or the kernel's view for callers that have none — how a program or a directory
 * is found in that view, and how one command runs: inside the agent's namespaces and cgroups with its
 * uid (native/src/enter.cc), its stdout and stderr read from pipes on the event loop, capped, killed
 * with its whole process tree at its timeout. Nothing here blocks the event loop for longer than the
 * clone and exec (the same few hundred microseconds as a spawn); see docs/sandbox.md "EXEC".
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { CloveNative, NativeChild, NativeExecOptions, RlimitTuple } from '../../native/index.js';
import type { AgentCgroup } from './cgroups.js';
import { fromNative, SyscallError } from './errors.js';
import { processTree } from './native-spawner.js';
import { loadNative } from './native.js';
import type { Account, AgentProcess } from './types.js';

/** A path found in a site's view: its real path there, its type and mode bits. */
export interface FoundPath {
  path: string;
  type: 'file' | 'dir' | 'other';
  mode: number;
  uid: number;
  gid: number;
}

/** Why a path could not be found (ENOENT, ENOTDIR, EACCES: a directory on the way its uid cannot search). */
export interface PathProblem {
  errno: number;
  code: string;
  syscall: string;
}

export type Lookup = FoundPath | PathProblem;

export const isFound = (l: Lookup): l is FoundPath => 'path' in l;

/** One command to run at a site. */
export interface CommandSpec {
  /** Absolute, real path in the site's view (from `find`/`which`). */
  file: string;
  argv: string[];
  env: Record<string, string>;
  /** Absolute, in the site's view. */
  cwd: string;
  /** Written to the command's stdin, which is then closed; absent: /dev/null. */
  stdin?: string;
  /** Killed (with every process below it) after this long. */
  timeoutMs: number;
  /** Bytes kept of stdout, of stderr, and of the merged `output`, each. */
  maxOutput: number;
  /** Kills the command early (the caller's connection closed, the kernel stops). */
  signal?: AbortSignal;
}

export interface CommandResult {
  /** The exit status; null when a signal ended it. */
  exitCode: number | null;
  /** The signal's name when one ended it (SIGKILL at the timeout). */
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Killed through `signal` before it finished. */
  aborted: boolean;
  stdout: Buffer;
  stderr: Buffer;
  /** stdout and stderr in the order the kernel read them. */
  output: Buffer;
  /** Some stream was longer than `maxOutput` (the rest was read and dropped). */
  truncated: boolean;
  durationMs: number;
}

/**
 * Bytes of one stream the kernel reads at most, kept or not: past it the kernel closes its end and the
 * command gets EPIPE (SIGPIPE) on that stream, as under `| head`. Reading costs the kernel's CPU, which
 * no cgroup of the agent's bounds.
 */
export const MAX_DRAIN_BYTES = 64 * 1024 * 1024;

/** How long output keeps being read after the command exited (a daemon it left may hold the pipes). */
export const DRAIN_AFTER_EXIT_MS = 100;

const NAMESPACES = ['user', 'mnt', 'pid', 'uts', 'ipc', 'net', 'cgroup'] as const;
type Ns = (typeof NAMESPACES)[number];

/** /proc/<pid>/limits names → RLIMIT_* numbers (Linux, every architecture). */
const RLIMITS: Record<string, number> = {
  'Max cpu time': 0,
  'Max file size': 1,
  'Max data size': 2,
  'Max stack size': 3,
  'Max core file size': 4,
  'Max resident set': 5,
  'Max processes': 6,
  'Max open files': 7,
  'Max locked memory': 8,
  'Max address space': 9,
  'Max file locks': 10,
  'Max pending signals': 11,
  'Max msgqueue size': 12,
  'Max nice priority': 13,
  'Max realtime priority': 14,
  'Max realtime timeout': 15,
};

/** The resource limits of a running process, as tuples for the addon. */
export function rlimitsOf(pid: number): RlimitTuple[] {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
  } catch {
    return [];
  }
  const out: RlimitTuple[] = [];
  for (const line of text.split('\n')) {
    const name = Object.keys(RLIMITS).find((n) => line.startsWith(n + ' '));
    if (!name) continue;
    const [soft, hard] = line.slice(name.length).trim().split(/\s+/);
    const num = (v: string | undefined) => (v === 'unlimited' ? -1 : Number(v));
    if (Number.isFinite(num(soft)) && Number.isFinite(num(hard)))
      out.push([RLIMITS[name], num(soft), num(hard)]);
  }
  return out;
}

function nsLink(pid: number | 'self', ns: Ns): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/${ns}`);
  } catch {
    return undefined;
  }
}

/** True when the process runs under a seccomp filter (Seccomp: 2 in /proc/<pid>/status). */
function hasSeccompFilter(pid: number): boolean {
  try {
    return /^Seccomp:\s*2$/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Thrown when a site cannot run anything (the agent is gone, or is not a process the kernel knows). */
export class ExecSiteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExecSiteError';
  }
}

/**
 * Where a command runs, and the view its paths are resolved in: an agent's (its namespaces, cgroups,
 * uid, rlimits, seccomp filter), or the kernel's (an operator's EXEC).
 */
export class ExecSite {
  private constructor(
    private readonly native: CloveNative,
    /**
     * The command is confined the way its agent is, away from the kernel's uid: inside the agent's own
     * mount and PID namespaces (root and rootless mode), or as a uid of its own (plain mode as root).
     * False for an operator's EXEC and for agents that run as the kernel's uid (`sandboxed: false`,
     * `--sandbox off`).
     */
    readonly confined: boolean,
    /** Host pid whose namespaces are joined, -1 for none. */
    private readonly nsPid: number,
    private readonly namespaces: Ns[],
    /** The root paths are resolved below (/proc/<pid>/root or /). */
    private readonly root: string,
    private readonly cgroup: AgentCgroup | undefined,
    /** The uid/gid the command takes; -1 keeps the kernel's. */
    readonly uid: number,
    readonly gid: number,
    private readonly rlimits: RlimitTuple[],
    private readonly seccomp: boolean,
  ) {}

  /**
   * The site of a running agent: `proc` is its process (the native spawner's SandboxedAgent, or a plain
   * one), `account` the uid/gid it runs as (null: the kernel's).
   */
  static ofAgent(proc: AgentProcess, account: Account | null): ExecSite {
    const native = loadNative();
    const p = proc as AgentProcess & { cgroup?: AgentCgroup; exited?: boolean };
    if (p.exited || !Number.isInteger(proc.pid) || proc.pid <= 0)
      throw new ExecSiteError('the agent is not running');
    // The namespace root is clove-init (the native spawner's tree root) whenever the agent has a PID
    // namespace; a plain agent is its own root. Either is the kernel's child, not reaped while `exited`
    // is false, so its pid names it.
    const pid = proc.pid;
    const own = NAMESPACES.filter((n) => {
      const theirs = nsLink(pid, n);
      return theirs !== undefined && theirs !== nsLink('self', n);
    });
    if (nsLink(pid, 'mnt') === undefined) throw new ExecSiteError('the agent is not running');
    const uid = own.includes('user') ? -1 : (account?.uid ?? -1);
    const gid = own.includes('user') ? -1 : (account?.gid ?? -1);
    const kernelUid = process.geteuid?.() ?? 0;
    const confined = (own.includes('mnt') && own.includes('pid')) || (uid >= 0 && uid !== kernelUid);
    return new ExecSite(
      native,
      confined,
      own.length ? pid : -1,
      own,
      own.includes('mnt') ? `/proc/${pid}/root` : '/',
      p.cgroup,
      uid,
      gid,
      // A plain-spawner agent (no native addon involved) inherited the kernel's own limits.
      p.cgroup !== undefined || own.length ? rlimitsOf(pid) : [],
      hasSeccompFilter(pid),
    );
  }

  /** The kernel's own view, uid and limits, no cgroup (an operator's EXEC). */
  static host(): ExecSite {
    return new ExecSite(loadNative(), false, -1, [], '/', undefined, -1, -1, [], false);
  }

  /** Real paths of absolute `paths` in this site's view, each directory on the way searchable by its uid. */
  find(paths: string[]): Lookup[] {
    if (paths.length === 0) return [];
    try {
      return this.native.resolvePaths(this.root, paths, this.uid === 0 ? -1 : this.uid, this.gid);
    } catch (err) {
      // The only failure of the call itself: the agent's root (/proc/<pid>/root) went with the agent.
      const e = fromNative(err);
      if (e instanceof SyscallError && e.syscall === 'open(root)')
        throw new ExecSiteError('the agent is not running');
      throw e;
    }
  }

  /** Whether the mode bits of `f` let this site's uid execute it (root: any x bit). */
  mayExecute(f: FoundPath): boolean {
    const uid = this.uid >= 0 ? this.uid : (process.geteuid?.() ?? 0);
    const gid = this.gid >= 0 ? this.gid : (process.getegid?.() ?? 0);
    if (uid === 0) return (f.mode & 0o111) !== 0;
    const bits = f.uid === uid ? (f.mode >> 6) & 7 : f.gid === gid ? (f.mode >> 3) & 7 : f.mode & 7;
    return (bits & 1) !== 0;
  }

  /**
   * `name` (no slash) looked up in `searchPath` (PATH syntax; relative entries are skipped) the way
   * execvp does: the first regular file this site's uid may execute. Undefined when there is none.
   */
  which(name: string, searchPath: string): FoundPath | undefined {
    return this.whichMany([name], searchPath).get(name);
  }

  /** `which` for several names at once (one walk of the agent's view: shared directories cost once). */
  whichMany(names: string[], searchPath: string): Map<string, FoundPath | undefined> {
    const dirs = searchPath.split(':').filter((d) => path.isAbsolute(d));
    const found = this.find(names.flatMap((n) => dirs.map((d) => path.posix.join(d, n))));
    const out = new Map<string, FoundPath | undefined>();
    names.forEach((n, i) => {
      const mine = found.slice(i * dirs.length, (i + 1) * dirs.length);
      out.set(
        n,
        mine.find((f): f is FoundPath => isFound(f) && f.type === 'file' && this.mayExecute(f)),
      );
    });
    return out;
  }

  /**
   * Starts `spec` here (synchronously: the clone and exec happen before this returns) and resolves once
   * it exited, was killed at its timeout, or aborted; rejects with the SyscallError of a failed start.
   */
  async run(spec: CommandSpec): Promise<CommandResult> {
    return new Command(this.native, spec).start(this.nativeOptions(spec));
  }

  private nativeOptions(spec: CommandSpec): Omit<NativeExecOptions, 'stdinFd' | 'stdoutFd' | 'stderrFd'> {
    const env: string[] = [];
    for (const [k, v] of Object.entries(spec.env)) env.push(`${k}=${v}`);
    return {
      nsPid: this.nsPid,
      namespaces: this.namespaces,
      cgroupDir: this.cgroup?.v2Dir ?? '',
      cgroupProcs: this.cgroup?.v1Procs ?? [],
      file: spec.file,
      argv: spec.argv,
      env,
      cwd: spec.cwd,
      uid: this.uid,
      gid: this.gid,
      rlimits: this.rlimits,
      seccomp: this.seccomp,
      startTimeoutMs: 10_000,
    };
  }
}

/** Bytes kept up to a cap; what comes beyond is counted, not kept. */
class Capped {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  /** Every byte pushed, kept or not. */
  seen = 0;
  truncated = false;
  constructor(private readonly cap: number) {}
  push(b: Buffer): void {
    this.seen += b.length;
    const room = this.cap - this.size;
    if (b.length > room) this.truncated = true;
    if (room <= 0) return;
    const part = b.length > room ? b.subarray(0, room) : b;
    this.chunks.push(part);
    this.size += part.length;
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* already closed */
  }
}

const SIGNALS = os.constants.signals as Record<string, number>;
function signalName(n: number | null): NodeJS.Signals | null {
  if (n === null) return null;
  for (const [k, v] of Object.entries(SIGNALS)) if (v === n) return k as NodeJS.Signals;
  return null;
}

/** One running command: its pipes, its timers, and the kill of its whole tree. */
class Command {
  private child?: NativeChild;
  private readonly out: Capped;
  private readonly err: Capped;
  private readonly merged: Capped;
  private timedOut = false;
  private aborted = false;
  private exit?: { code: number | null; signal: number | null };
  private open = 0;
  private streams: net.Socket[] = [];
  private timers: NodeJS.Timeout[] = [];
  private readonly started = performance.now();
  private settle?: (r: CommandResult) => void;

  constructor(
    private readonly native: CloveNative,
    private readonly spec: CommandSpec,
  ) {
    this.out = new Capped(spec.maxOutput);
    this.err = new Capped(spec.maxOutput);
    this.merged = new Capped(spec.maxOutput);
  }

  async start(opts: Omit<NativeExecOptions, 'stdinFd' | 'stdoutFd' | 'stderrFd'>): Promise<CommandResult> {
    const n = this.native;
    const fds: number[] = [];
    const ours: number[] = [];
    try {
      const [outR, outW] = n.createPipe();
      ours.push(outR);
      fds.push(outW);
      const [errR, errW] = n.createPipe();
      ours.push(errR);
      fds.push(errW);
      let stdinFd: number;
      let stdinW = -1;
      if (this.spec.stdin !== undefined) {
        const [inR, inW] = n.createPipe();
        fds.push(inR);
        ours.push(inW);
        stdinFd = inR;
        stdinW = inW;
      } else {
        stdinFd = fs.openSync('/dev/null', 'r'); // libuv opens with O_CLOEXEC
        fds.push(stdinFd);
      }
      // Cloned on the addon's enter thread, never on the event loop; our ends stay open until then.
      this.child = await n.execInAgent({ ...opts, stdinFd, stdoutFd: outW, stderrFd: errW });
      // The command holds its ends now; ours go to libuv (non-blocking pipe streams).
      for (const fd of fds.splice(0)) closeQuietly(fd);
      this.read(outR, this.out);
      this.read(errR, this.err);
      if (stdinW >= 0) {
        const s = new net.Socket({ fd: stdinW, readable: false, writable: true });
        this.streams.push(s);
        s.on('error', () => undefined); // EPIPE: the command did not read it all
        s.end(this.spec.stdin ?? '');
      }
      ours.length = 0;
    } catch (e) {
      for (const fd of [...fds, ...ours]) closeQuietly(fd);
      for (const s of this.streams) s.destroy();
      throw fromNative(e);
    }
    return new Promise((resolve) => {
      this.settle = resolve;
      this.child!.watch((exit) => {
        // What it left in its process group ends with it (one atomic group kill: nothing forks through
        // it). A process that left the group (setsid) on purpose lives on, inside the agent's sandbox.
        try {
          process.kill(-exit.pid, 'SIGKILL');
        } catch {
          /* nothing left */
        }
        this.exit = { code: exit.code, signal: exit.signal };
        // Output still in the pipes is read; a background process holding them open is not waited for.
        this.timers.push(setTimeout(() => this.closeStreams(), DRAIN_AFTER_EXIT_MS));
        this.maybeDone();
      });
      this.timers.push(
        setTimeout(() => {
          this.timedOut = true;
          this.kill();
        }, this.spec.timeoutMs),
      );
      const sig = this.spec.signal;
      if (sig) {
        const onAbort = () => {
          this.aborted = true;
          this.kill();
        };
        if (sig.aborted) onAbort();
        else {
          sig.addEventListener('abort', onAbort, { once: true });
          this.cleanups.push(() => sig.removeEventListener('abort', onAbort));
        }
      }
    });
  }

  private readonly cleanups: (() => void)[] = [];

  private read(fd: number, into: Capped): void {
    const s = new net.Socket({ fd, readable: true, writable: false });
    this.streams.push(s);
    this.open++;
    s.on('data', (b: Buffer) => {
      into.push(b);
      this.merged.push(b);
      if (into.seen > MAX_DRAIN_BYTES) s.destroy();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      this.open--;
      this.maybeDone();
    });
  }

  private closeStreams(): void {
    for (const s of this.streams) s.destroy();
  }

  /**
   * SIGKILLs the command and everything below it. The command is the subreaper of its orphans, so while
   * it lives nothing it started leaves its tree: the tree is stopped first, top-down, until no new
   * process shows up (a stopped process can neither fork nor reap, so the pids seen stay theirs); then
   * its process group is killed in one atomic kill (a fork bomb cannot outrun it), then every process
   * seen (those that left the group with setsid).
   */
  kill(): void {
    const child = this.child;
    if (!child || this.exit) {
      if (this.exit) this.closeStreams();
      return;
    }
    const root = child.pid;
    // The command itself is stopped first of all: alive, it keeps its orphans below it.
    const seen = new Set<number>();
    for (let round = 0; round < 16; round++) {
      let fresh = 0;
      for (const p of processTree(root)) {
        if (seen.has(p)) continue;
        seen.add(p);
        fresh++;
        try {
          process.kill(p, 'SIGSTOP');
        } catch {
          /* gone */
        }
      }
      if (fresh === 0) break;
    }
    try {
      process.kill(-root, 'SIGKILL'); // the whole group atomically: a fork bomb cannot outrun it
    } catch {
      /* no group */
    }
    child.kill(SIGNALS.SIGKILL);
    for (const p of seen) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }

  private maybeDone(): void {
    if (!this.exit || this.open > 0 || !this.settle) return;
    for (const t of this.timers) clearTimeout(t);
    for (const c of this.cleanups) c();
    this.closeStreams();
    const settle = this.settle;
    this.settle = undefined;
    const killedByUs = this.timedOut || this.aborted;
    settle({
      exitCode: this.exit.code,
      signal: signalName(this.exit.signal) ?? (this.exit.code === null && killedByUs ? 'SIGKILL' : null),
      timedOut: this.timedOut,
      aborted: this.aborted,
      stdout: this.out.bytes,
      stderr: this.err.bytes,
      output: this.merged.bytes,
      truncated: this.out.truncated || this.err.truncated,
      durationMs: Math.round(performance.now() - this.started),
    });
  }
}
