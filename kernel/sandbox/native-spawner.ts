/**
 * NativeSpawner: the sandboxed implementation of the supervisor's Spawner (kind "native").
 *
 * Per agent: clone3 into new PID, mount, UTS and IPC namespaces (network: one shared empty netns unless
 * granted), born into its cgroups (v2 CLONE_INTO_CGROUP; v1 joins before exec), read-only root with a
 * writable cwd and a private /tmp, private /proc, no capabilities, NO_NEW_PRIVS, an unprivileged uid.
 * Without network, the host's Unix sockets are out of reach too: /run and /var/run are masked and every
 * other pathname socket still visible is covered by /dev/null (only the kernel's agent socket stays).
 * PID 1 of the namespace is native clove-init, which forwards signals and reports the agent's status,
 * and installs the seccomp filter (native/src/seccomp.cc) under which it and the agent run.
 * See docs/sandbox.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AgentProcess, ExitInfo, IsolationReport, SpawnSpec, Spawner } from './types.js';
import type {
  CloveNative,
  NativeChild,
  NativeExit,
  NativeSpawnOptions,
  RlimitTuple,
} from '../../native/index.js';
import { exposure, hostUnixSockets, modeAllows, reachableBy, runtimeDirs, socketsToHide } from './access.js';
import { REPO_ROOT } from '../config.js';
import { nofileLimit } from '../core/rlimits.js';
import { AgentCgroup, CgroupRoot, detectHostLayout, type CgroupLayout } from './cgroups.js';
import {
  fromNative,
  PolicyError,
  SandboxSpawnError,
  SandboxUnavailableError,
  SyscallError,
} from './errors.js';
import { initHelperPath, loadNative } from './native.js';
import { exitingStatus, innermostPid, parentPid } from './procfs.js';
import {
  agentHostname,
  cgroupLeafName,
  checkAbsolute,
  resolveLimits,
  resolvePolicy,
  sharesToWeight,
  type SandboxPolicy,
} from './policy.js';

const RLIMIT_CORE = 4;
/** How long a replaced agent's cgroup removal waits (AgentProcess.replaced): past its successor's first calls. */
const REPLACED_TEARDOWN_DELAY_MS = 20;

/**
 * Clove's own installation (the SDKs, the compiled TypeScript, node_modules, clove-init) stays visible
 * to every agent, read-only, even when it lives under the masked /tmp or an unreadable home.
 */
const INSTALLATION = [REPO_ROOT];
const RLIMIT_NOFILE = 7;
const NOFILE_HARD = nofileLimit('hard');

/** NativeSpawnOptions.hideFiles holds at most this many sockets (the addon fails with E2BIG beyond). */
export const MAX_HIDDEN_SOCKETS = 256;

/** How a spawner isolates, decided once at start-up. */
export type SandboxMode = 'root' | 'rootless' | 'plain';

export interface NativeSpawnerOptions extends Partial<SandboxPolicy> {
  /** Where loud warnings go (degraded modes). Default console.warn. */
  warn?: (message: string) => void;
  /**
   * Sandboxed agents (root and rootless mode) run under the seccomp filter of docs/sandbox.md "System
   * calls". Default true; false turns it off for every agent of this spawner (reported as
   * `isolation.seccomp: false`, not fully isolated). Plain mode and unsandboxed agents never get it.
   */
  seccomp?: boolean;
  /**
   * Tests only: every spawn waits at this FIFO before it clones (NativeSpawnOptions.testGate), so a
   * test can hold spawns in flight. Default $CLOVE_TEST_SPAWN_GATE, else none.
   */
  testGate?: string;
  /**
   * Sandboxed agents outlive the kernel (clove-init without PR_SET_PDEATHSIG): a kernel that dies or is
   * upgraded leaves them running for the next one to re-adopt (`adopt`, docs/restart.md). Default false:
   * they die with the process that spawned them.
   */
  outliveKernel?: boolean;
  /**
   * Pids of agents a dead kernel left that this spawner re-adopts: their cgroups in stale roots are kept
   * at init() instead of being emptied (CgroupRoot.init).
   */
  keepPids?: ReadonlySet<number>;
  /**
   * The data dir's tag of the cgroup root (CgroupRoot.tag): set by a kernel, so that only a later kernel
   * of the same data dir empties or re-adopts what its root holds.
   */
  rootTag?: string;
}

/** Architectures the filter is built for (native/src/seccomp.cc). */
const SECCOMP_ARCHES: readonly string[] = ['x64', 'arm64'];

let instanceCounter = 0;

const SIGNALS = os.constants.signals as Record<string, number>;
function signalName(n: number | null): NodeJS.Signals | null {
  if (n === null) return null;
  for (const [k, v] of Object.entries(SIGNALS)) if (v === n) return k as NodeJS.Signals;
  return null;
}

/** Host pids of every process below `root` (inclusive), through /proc/<pid>/task/<tid>/children. */
export function processTree(root: number): number[] {
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0 && out.length < 100_000) {
    const pid = todo.pop()!;
    out.push(pid);
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        for (const c of fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').split(' '))
          if (c.trim()) todo.push(Number(c));
      } catch {
        /* gone */
      }
    }
  }
  return out;
}

/**
 * Directories an agent must be able to reach: its cwd, the agent socket's directory, its program's
 * installation prefix (the parent of a `bin` dir, so an interpreter finds its libraries), the
 * directories of absolute paths among its arguments (its script) and of PYTHONPATH/NODE_PATH entries.
 */
export function neededDirs(file: string, argv: string[], env: Record<string, string>, cwd: string): string[] {
  const out = [cwd];
  const dirOf = (p: string): string | undefined => {
    try {
      return fs.statSync(p).isDirectory() ? p : path.dirname(p);
    } catch {
      return undefined;
    }
  };
  let real = file;
  try {
    real = fs.realpathSync(file);
  } catch {
    /* reported at exec */
  }
  for (const f of new Set([file, real])) {
    const d = path.dirname(f);
    out.push(path.basename(d) === 'bin' ? path.dirname(d) : d);
  }
  if (env.CLOVE_SOCKET && path.isAbsolute(env.CLOVE_SOCKET)) out.push(path.dirname(env.CLOVE_SOCKET));
  for (const a of argv.slice(1)) if (path.isAbsolute(a)) out.push(dirOf(a) ?? '');
  for (const k of ['PYTHONPATH', 'NODE_PATH'])
    for (const p of (env[k] ?? '').split(':')) if (path.isAbsolute(p)) out.push(dirOf(p) ?? '');
  return out.filter(Boolean);
}

function nsInode(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

class SandboxedAgent implements AgentProcess {
  readonly pid: number;
  private exitInfo?: ExitInfo;
  private readonly callbacks: Array<(info: ExitInfo) => void> = [];
  /** onEnded's callbacks, and the exit they were given (the agent's own end, before the teardown). */
  private readonly endedCallbacks: Array<(info: ExitInfo) => void> = [];
  private endedInfo?: ExitInfo;
  private frozen = false;
  /** A promoted standby took over (replaced()): the cgroup's removal is not urgent. */
  private unhurried = false;
  /** A spare sandbox's clove-init waits for release() (SpawnSpec `park`). */
  private waiting: boolean;

  constructor(
    private readonly spawner: NativeSpawner,
    readonly agentId: number,
    private readonly child: NativeChild,
    readonly isolation: IsolationReport,
    readonly cgroup: AgentCgroup | undefined,
    /** The tree root is a clove-init in its own PID namespace (true) or the agent itself (false). */
    private readonly hasInit: boolean,
    readonly pidNamespace: string | undefined,
    /** Started by a dead kernel and re-adopted by this one (NativeSpawner.adopt): not our child. */
    private readonly adopted = false,
  ) {
    this.pid = child.pid;
    this.waiting = hasInit && child.agentPid === 0;
    child.watch(
      (exit) => void this.finish(exit),
      (agent) => this.ended(this.exitOf(agent)),
    );
  }

  /** Host pid of the agent program itself (below clove-init), when it is still running. */
  mainPid(): number | undefined {
    if (!this.hasInit) return this.exitInfo ? undefined : this.pid;
    const tree = processTree(this.pid);
    return tree.length > 1 ? tree[1] : undefined;
  }

  get exited(): boolean {
    return this.exitInfo !== undefined;
  }

  get parked(): boolean {
    return this.waiting && !this.exited;
  }

  /** Starts a parked sandbox's program: clove-init forks and execs it on SIGUSR1. */
  release(): void {
    if (!this.waiting) return;
    this.waiting = false;
    if (!this.exitInfo) this.child.kill(SIGNALS.SIGUSR1!);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.exitInfo || this.child.exited) return;
    try {
      this.deliver(sig);
    } catch {
      /* never throws for a dead (or dying) agent */
    }
  }

  private deliver(sig: NodeJS.Signals): void {
    if (sig === 'SIGSTOP' || sig === 'SIGTSTP') {
      if (this.cgroup?.freeze(true)) {
        this.frozen = true;
        return;
      }
      this.signalTree('SIGSTOP');
      return;
    }
    if (sig === 'SIGCONT') {
      if (this.frozen) this.cgroup?.freeze(false);
      this.frozen = false;
      this.signalTree('SIGCONT');
      return;
    }
    const num = SIGNALS[sig];
    if (num === undefined) throw new PolicyError('signal', `unknown signal ${sig}`);
    if (this.hasInit) {
      // SIGKILL ends clove-init, and the kernel then kills its whole namespace; other signals are
      // forwarded by clove-init to every process of the namespace.
      this.child.kill(num);
    } else {
      // Plain mode: the agent leads its own session/process group; its cgroup (if any) catches the rest.
      try {
        process.kill(-this.pid, sig);
      } catch {
        this.child.kill(num);
      }
      if (sig === 'SIGKILL') this.cgroup?.killAll();
    }
    // A frozen agent cannot act on a signal: thaw it for the ones that end it (KILL of a paused agent
    // must not leave a stopped orphan behind).
    if (this.frozen && ['SIGKILL', 'SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'].includes(sig)) {
      this.cgroup?.freeze(false);
      this.frozen = false;
    }
  }

  private signalTree(sig: NodeJS.Signals): void {
    const pids = this.cgroup?.procs() ?? processTree(this.pid);
    for (const p of pids) {
      try {
        process.kill(p, sig);
      } catch {
        /* gone */
      }
    }
  }

  onExit(cb: (info: ExitInfo) => void): void {
    if (this.exitInfo) {
      const info = this.exitInfo;
      queueMicrotask(() => cb(info));
    } else {
      this.callbacks.push(cb);
    }
  }

  onEnded(cb: (info: ExitInfo) => void): void {
    if (!this.endedInfo) this.endedCallbacks.push(cb);
  }

  replaced(): void {
    this.unhurried = true;
  }

  peerEnded(pid: number): void {
    if (this.endedInfo || this.exitInfo || this.adopted) return;
    // Most often clove-init has reaped the program already and its record waits on the exit pipe.
    if (this.hasInit) this.spawner.drainExitRecords();
    if (this.endedInfo) return;
    // Else the program may be exiting, not reaped yet: the root, or the child clove-init started it as
    // (by the pid init reported; an orphan of the agent is init's child too).
    const program = this.hasInit
      ? this.child.agentPid > 0 && parentPid(pid) === this.pid && innermostPid(pid) === this.child.agentPid
      : pid === this.pid;
    const status = program ? exitingStatus(pid) : null;
    if (status === null) return;
    const sig = status & 0x7f;
    this.ended(this.exitOf(sig ? { code: null, signal: sig } : { code: (status >> 8) & 0xff, signal: null }));
  }

  /**
   * The agent's exit as ExitInfo: its status (`unknown` without one, for a re-adopted agent), and the
   * cgroup's OOM / pids.max counters, which the kernel raised before the process died.
   */
  private exitOf(status: { code: number | null; signal: number | null }, unknown = false): ExitInfo {
    let code = status.code;
    let signal = signalName(status.signal);
    if (code === null && signal === null && !unknown) signal = 'SIGKILL'; // reaped by someone else: assume killed
    let reason: ExitInfo['reason'] = unknown ? 'unknown' : signal ? 'signal' : 'exit';
    const cg = this.cgroup;
    if (cg) {
      const abnormal = signal !== null || code !== 0;
      if (cg.oomKills() > 0 && abnormal) reason = 'oom';
      else if (cg.pidsMaxEvents() > 0 && abnormal) reason = 'pids';
    }
    if (code !== null) signal = null;
    else code = null;
    return { code, signal, reason };
  }

  /** The agent's own program ended (its sandbox is still being torn down): onEnded's callbacks, once. */
  private ended(info: ExitInfo): void {
    if (this.endedInfo || this.exitInfo) return;
    this.endedInfo = info;
    callEach(this.endedCallbacks.splice(0), info);
  }

  private async finish(exit: NativeExit): Promise<void> {
    // Not our child (re-adopted from a dead kernel): only its parent knew how it ended.
    const unknown = this.adopted && exit.waitError !== undefined && !exit.agent;
    // What onEnded said stands (init's record, read first); without init the agent itself was reaped.
    const info =
      this.endedInfo ?? this.exitOf(exit.agent ?? { code: exit.code, signal: exit.signal }, unknown);
    // Said now if it was not yet (init's record read only with its own exit, or no init at all): what
    // waits for the program's end (a restart) need not wait for the cgroup's removal below.
    if (!unknown) this.ended(info);
    const cg = this.cgroup;
    if (cg) {
      if (!this.hasInit) await this.spawner.drainCgroup(cg);
      // Its rmdirs (a third of a millisecond) would land as the promoted standby makes its first calls.
      if (this.unhurried) await new Promise((r) => setTimeout(r, REPLACED_TEARDOWN_DELAY_MS));
      await this.spawner.removeCgroup(cg);
    } else if (!this.hasInit) {
      try {
        process.kill(-this.pid, 'SIGKILL'); // what the plain agent left in its process group
      } catch {
        /* none */
      }
    }
    this.exitInfo = info;
    this.endedCallbacks.length = 0;
    this.spawner.forget(this);
    callEach(this.callbacks.splice(0), info);
  }
}

/** Calls every callback with `info`; one that throws does not stop the others (its error is rethrown apart). */
function callEach(cbs: Array<(info: ExitInfo) => void>, info: ExitInfo): void {
  for (const cb of cbs) {
    try {
      cb(info);
    } catch (err) {
      queueMicrotask(() => {
        throw err;
      });
    }
  }
}

export class NativeSpawner implements Spawner {
  readonly kind = 'native';
  readonly policy: SandboxPolicy;
  private readonly warn: (m: string) => void;
  /** Whether sandboxed agents get the seccomp filter (the option, less what init() found missing). */
  private seccomp: boolean;
  private native?: CloveNative;
  /** init() under way or done (undefined again after a failure or close()). */
  private starting?: Promise<void>;
  private ready = false;
  private modeValue: SandboxMode = 'plain';
  private readonly reasons: string[] = [];
  private netnsFd = -1;
  /** /run and /var/run as real paths (runtimeDirs()), masked for agents without network. */
  private runDirs: string[] = [];
  private cgroups?: CgroupRoot;
  private readonly live = new Set<SandboxedAgent>();
  /** cgroup path (identity hierarchy) -> agent id. */
  private readonly byCgroup = new Map<string, number>();
  /** PID namespace inode -> agent id (identity without cgroups). */
  private readonly byPidNs = new Map<string, number>();
  /** Spawns under way (close() waits for them before it kills what is alive). */
  private readonly pending = new Set<Promise<unknown>>();
  private readonly testGate: string;
  private readonly outliveKernel: boolean;
  private readonly keepPids: ReadonlySet<number>;
  private readonly rootTag?: string;
  readonly instance: string;

  constructor(options: NativeSpawnerOptions = {}) {
    const { warn, seccomp, testGate, outliveKernel, keepPids, rootTag, ...policy } = options;
    this.outliveKernel = outliveKernel === true;
    if (rootTag !== undefined && !/^[0-9a-f]{8}$/.test(rootTag))
      throw new PolicyError('rootTag', 'must be 8 hex digits');
    this.rootTag = rootTag;
    this.keepPids = keepPids ?? new Set();
    this.policy = resolvePolicy(policy);
    this.warn = warn ?? ((m) => console.warn(m));
    if (seccomp !== undefined && typeof seccomp !== 'boolean')
      throw new PolicyError('seccomp', `must be a boolean, got ${JSON.stringify(seccomp)}`);
    this.seccomp = seccomp !== false;
    const gate = testGate ?? process.env.CLOVE_TEST_SPAWN_GATE ?? '';
    this.testGate = gate === '' ? '' : checkAbsolute('testGate', gate);
    this.instance = `${process.pid}.${instanceCounter++}`;
  }

  /** The isolation mode chosen at start-up (after init()). */
  get mode(): SandboxMode {
    return this.modeValue;
  }

  /** The cgroup layout in use (after init()). */
  get layout(): CgroupLayout | undefined {
    return this.cgroups?.layout;
  }

  /** The cgroup root of this spawner (after init()); used by metrics to confine client paths. */
  get cgroupRoot(): CgroupRoot | undefined {
    return this.cgroups;
  }

  /** Why the sandbox is degraded, empty when it is complete. */
  get degradedReasons(): readonly string[] {
    return this.reasons;
  }

  /**
   * Start-up: loads the addon, picks the mode (probing namespaces), detects cgroups per controller and
   * creates this spawner's cgroup root, creates the shared empty netns. Idempotent; spawn() calls it.
   */
  init(): Promise<void> {
    this.starting ??= this.start().catch((err: unknown) => {
      this.starting = undefined;
      throw err;
    });
    return this.starting;
  }

  private async start(): Promise<void> {
    if (this.ready) return;
    this.native = loadNative();
    this.runDirs = runtimeDirs();
    const want = this.policy.mode;
    const isRoot = process.geteuid?.() === 0;
    if (this.seccomp && !SECCOMP_ARCHES.includes(process.arch)) {
      this.seccomp = false;
      this.reasons.push(`seccomp filter unavailable on ${process.arch}`);
    }
    const candidates: SandboxMode[] =
      want === 'auto' ? (isRoot ? ['root', 'rootless', 'plain'] : ['rootless', 'plain']) : [want];
    for (const m of candidates) {
      try {
        if (m === 'root') {
          if (!isRoot) throw new Error('not running as root');
          this.netnsFd = this.native.createEmptyNetns();
        }
        this.modeValue = m;
        await this.probeSeccomp();
        break;
      } catch (err) {
        this.reasons.push(`${m} sandbox unavailable: ${(err as Error).message}`);
        if (this.netnsFd >= 0) fs.closeSync(this.netnsFd);
        this.netnsFd = -1;
        if (m === candidates[candidates.length - 1]) throw fromNative(err);
      }
    }
    if (this.modeValue !== 'root') this.reasons.push(`running in ${this.modeValue} mode`);
    if (isRoot || this.modeValue !== 'plain') {
      try {
        this.cgroups = new CgroupRoot(detectHostLayout(), this.instance, this.rootTag);
        this.cgroups.init(this.keepPids);
        this.reasons.push(...this.cgroups.problems);
        if (this.cgroups.roots.size === 0) this.cgroups = undefined;
        else
          for (const c of ['memory', 'cpu', 'pids'] as const)
            if (!this.cgroups.layout.controllers[c]) this.reasons.push(`cgroup controller ${c} unavailable`);
      } catch (err) {
        this.reasons.push(`cgroups unavailable: ${(err as Error).message}`);
        this.cgroups = undefined;
      }
    } else {
      this.reasons.push('cgroups unavailable without root');
    }
    this.ready = true;
    if (this.reasons.length > 0) {
      const msg = `clove sandbox DEGRADED (${this.modeValue}): ${this.reasons.join('; ')}`;
      if (this.policy.require) {
        this.release();
        throw new SandboxUnavailableError(msg);
      }
      this.warn(`WARNING: ${msg}`);
    }
  }

  /**
   * probe(), and when only the seccomp filter failed (a kernel without seccomp filters), the same mode
   * again without it: a missing filter degrades the sandbox, it does not cost the namespaces.
   */
  private async probeSeccomp(): Promise<void> {
    try {
      await this.probe();
    } catch (err) {
      const syscall = (err as { syscall?: unknown }).syscall;
      if (
        !this.seccomp ||
        typeof syscall !== 'string' ||
        !/^(seccomp|prctl\(PR_GET_NO_NEW_PRIVS)/.test(syscall)
      )
        throw err;
      this.seccomp = false;
      this.reasons.push(`seccomp filter unavailable: ${(err as Error).message}`);
      await this.probe();
    }
  }

  /** Spawns /bin/true in the chosen mode; throws when the mode does not work on this host. */
  private async probe(): Promise<void> {
    const log = fs.openSync('/dev/null', 'w');
    try {
      const opts = this.nativeOptions(
        {
          file: '/bin/true',
          argv: ['true'],
          env: [],
          cwd: '/',
          logFd: log,
          network: false,
          sandboxed: true,
          name: 'probe',
        },
        undefined,
        2,
      );
      const child = await this.native!.spawn(opts);
      child.kill(9);
      child.watch(() => undefined);
    } finally {
      fs.closeSync(log);
    }
  }

  private nativeOptions(
    s: {
      file: string;
      argv: string[];
      env: string[];
      cwd: string;
      logFd: number;
      network: boolean;
      sandboxed: boolean;
      name: string;
      keep?: string[];
      uid?: number;
      gid?: number;
      idmapped?: { path: string; usernsFd: number }[];
      /** CLOVE_SOCKET of the agent's environment: its directory stays reachable. */
      agentSocket?: string;
      /** A spare sandbox: clove-init waits for SIGUSR1 before it starts the program (ns mode only). */
      park?: boolean;
    },
    cg: AgentCgroup | undefined,
    _maxPids: number,
  ): NativeSpawnOptions {
    const m = this.modeValue;
    const ns = s.sandboxed && m !== 'plain';
    const writable: string[] = [];
    if (ns && this.policy.writableCwd && s.cwd !== '/') writable.push(s.cwd);
    if (ns) writable.push(...this.policy.writablePaths);
    // Without network the agent must not reach the host's Unix sockets either (the empty network
    // namespace only stops IP and abstract sockets): /run and /var/run are masked, what stays visible
    // of the rest is covered one by one.
    const noSockets = ns && !s.network;
    const view = ns
      ? this.mounts(s.keep ?? [], writable, s.uid, s.gid, s.idmapped ?? [], [
          ...this.policy.privatePaths,
          ...(noSockets ? this.runDirs : []),
        ])
      : { masks: [], keep: [] };
    const hideFiles = noSockets ? this.socketsToCover(view, s) : [];
    const rlimits: RlimitTuple[] = [
      // Never above the kernel's own hard limit: raising it would fail (EPERM) once capabilities are gone.
      [
        RLIMIT_NOFILE,
        Math.min(this.policy.maxOpenFiles, NOFILE_HARD),
        Math.min(this.policy.maxOpenFiles, NOFILE_HARD),
      ],
      [RLIMIT_CORE, 0, 0],
    ];
    return {
      file: s.file,
      argv: s.argv,
      env: s.env,
      cwd: s.cwd,
      stdoutFd: s.logFd,
      initPath: ns ? initHelperPath() : '',
      outliveKernel: ns && this.outliveKernel,
      park: ns && s.park === true,
      newPid: ns,
      newMount: ns,
      newUts: ns,
      newIpc: ns,
      newNet: ns && m === 'rootless' && !s.network,
      newCgroup: false,
      newUser: ns && m === 'rootless',
      uidMap: `0 ${process.geteuid?.() ?? 0} 1`,
      gidMap: `0 ${process.getegid?.() ?? 0} 1`,
      netnsFd: ns && m === 'root' && !s.network ? this.netnsFd : -1,
      hostname: ns ? agentHostname(s.name) : '',
      cgroupDir: cg?.v2Dir ?? '',
      cgroupProcs: cg?.v1Procs ?? [],
      readOnlyRoot: ns,
      mountProc: ns,
      tmpfsOptions: ns ? `size=${this.policy.tmpSize},mode=1777,nr_inodes=65536` : '',
      writable,
      masks: view.masks,
      keep: view.keep,
      idmapped: ns ? (s.idmapped ?? []) : [],
      hideFiles,
      // Always a session of its own: a terminal's Ctrl-C (or `timeout`) signals the kernel, which stops agents in order.
      setsid: true,
      noNewPrivs: true,
      dropCaps: true,
      // clove-init installs it: agents with a namespace of their own (root and rootless mode).
      seccomp: ns && this.seccomp,
      // Rootless mode maps only the kernel's uid: an account cannot be applied there.
      uid: m !== 'rootless' && s.uid !== undefined ? s.uid : -1,
      gid: m !== 'rootless' && s.gid !== undefined ? s.gid : -1,
      rlimits,
      startTimeoutMs: this.policy.startTimeoutMs,
    };
  }

  /**
   * The agent's view of the file system: what to mask and what to bind back in (exposure()), minus what
   * an idmapped mount covers (it goes on top of any kept directory at or below it). `privateDirs` are
   * masked besides /tmp (the policy's privatePaths; the runtime dirs for an agent without network).
   */
  private mounts(
    needed: string[],
    writable: string[],
    uid: number | undefined,
    gid: number | undefined,
    idmapped: { path: string }[],
    privateDirs: string[],
  ): { masks: string[]; keep: string[] } {
    const e = exposure(
      [...writable, ...needed, ...idmapped.map((i) => i.path), ...INSTALLATION],
      uid ?? process.geteuid?.() ?? 0,
      gid ?? process.getegid?.() ?? 0,
      true,
      privateDirs,
    );
    const covered = (k: string) => idmapped.some((i) => k === i.path || k.startsWith(i.path + '/'));
    return { masks: e.masks, keep: e.keep.filter((k) => !covered(k)) };
  }

  /**
   * The host's pathname Unix sockets (this process's /proc/net/unix, read once per spawn) that stay
   * visible in the agent's mount namespace, for NativeSpawnOptions.hideFiles: not below a mask (unless
   * bound back in), not in the agent socket's directory. Should a host have more than the addon takes,
   * only those the agent's uid could connect to by their mode bits are covered.
   */
  private socketsToCover(
    view: { masks: string[]; keep: string[] },
    s: {
      idmapped?: { path: string }[];
      agentSocket?: string;
      uid?: number;
      gid?: number;
    },
  ): string[] {
    const exempt = s.agentSocket && path.isAbsolute(s.agentSocket) ? [path.dirname(s.agentSocket)] : [];
    const hide = socketsToHide(hostUnixSockets(), {
      masks: [...view.masks, '/dev/shm'],
      visible: [...view.keep, ...(s.idmapped ?? []).map((i) => i.path)],
      exempt,
    });
    if (hide.length <= MAX_HIDDEN_SOCKETS) return hide;
    const uid = s.uid ?? process.geteuid?.() ?? 0;
    const gid = s.gid ?? process.getegid?.() ?? 0;
    return hide.filter((p) => reachableBy(p, uid, gid, 2));
  }

  /**
   * Shared directories the agent's uid cannot read as they are (a script in a 0700 `mktemp -d`): each
   * gets a user namespace mapping its owner to the agent's uid, for an idmapped read-only mount. The
   * caller closes the returned fds once the agent has started.
   */
  private idmapShares(share: string[], uid: number, gid: number): { path: string; usernsFd: number }[] {
    const out: { path: string; usernsFd: number }[] = [];
    try {
      for (const raw of share) {
        const dir = checkAbsolute('share', raw);
        let st: fs.Stats;
        try {
          st = fs.statSync(dir);
        } catch {
          continue;
        }
        if (!st.isDirectory() || modeAllows(dir, uid, gid, 5) || out.some((o) => o.path === dir)) continue;
        const usernsFd = this.native!.createIdmapUserns(`${st.uid} ${uid} 1`, `${st.gid} ${gid} 1`);
        out.push({ path: dir, usernsFd });
      }
    } catch (err) {
      for (const o of out) fs.closeSync(o.usernsFd);
      throw fromNative(err);
    }
    return out;
  }

  /**
   * Starts an agent. The addon clones and waits for the agent's exec on a thread of its own, so the
   * event loop keeps serving while this is under way; what runs here is the preparation (checks, the
   * cgroup, the mount plan) and the bookkeeping once the agent runs.
   */
  canPark(sandboxed: boolean | undefined): boolean {
    return sandboxed !== false && this.modeValue !== 'plain';
  }

  spawn(spec: SpawnSpec): Promise<SandboxedAgent> {
    const p = this.spawnAgent(spec);
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
    return p;
  }

  private async spawnAgent(spec: SpawnSpec): Promise<SandboxedAgent> {
    await this.init();
    const argv = spec.argv;
    if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string'))
      throw new PolicyError('argv', 'must be a non-empty array of strings');
    const file = checkAbsolute('argv[0]', argv[0]);
    const cwd = checkAbsolute('cwd', spec.cwd);
    if (!Number.isInteger(spec.logFd) || spec.logFd < 0) throw new PolicyError('logFd', 'must be an open fd');
    if (!Number.isInteger(spec.agentId) || spec.agentId < 0)
      throw new PolicyError('agentId', 'must be a non-negative integer');
    const env: string[] = [];
    for (const [k, v] of Object.entries(spec.env ?? {})) {
      if (!k || k.includes('=') || k.includes('\0') || typeof v !== 'string' || v.includes('\0'))
        throw new PolicyError(`env.${k}`, 'invalid variable');
      env.push(`${k}=${v}`);
    }
    const limits = resolveLimits(spec.limits);
    const sandboxed = spec.sandboxed !== false;
    const ns = sandboxed && this.modeValue !== 'plain';
    const account = this.modeValue === 'rootless' ? null : spec.account;
    if (
      account &&
      (!Number.isInteger(account.uid) ||
        account.uid <= 0 ||
        !Number.isInteger(account.gid) ||
        account.gid <= 0)
    )
      throw new PolicyError('account', 'uid and gid must be positive integers');
    const uid = account?.uid ?? process.geteuid?.() ?? 0;
    const gid = account?.gid ?? process.getegid?.() ?? 0;
    // In a mount namespace, directories the uid cannot traverse are masked and what is needed re-exposed
    // (see exposure()), so only the file's own mode matters there.
    const canRun = ns ? modeAllows(file, uid, gid, 1) : reachableBy(file, uid, gid, 1);
    if (!canRun) {
      throw new SandboxSpawnError(
        `${file} is not executable by the agent uid ${uid} (check the mode of every parent directory)`,
        'EACCES',
        { syscall: 'execve', errno: os.constants.errno.EACCES },
      );
    }
    if (!(ns ? modeAllows(cwd, uid, gid, 1) : reachableBy(cwd, uid, gid, 1))) {
      throw new SandboxSpawnError(`cwd ${cwd} is not reachable by the agent uid ${uid}`, 'EACCES', {
        syscall: 'chdir',
        errno: os.constants.errno.EACCES,
      });
    }

    let cg: AgentCgroup | undefined;
    // Warm standby (kernel/supervisor/standby.ts): a second process of the agent, in a leaf of its own.
    const leaf = cgroupLeafName(spec.name, spec.agentId) + (spec.instance ? `_${spec.instance}` : '');
    if (this.cgroups) {
      try {
        cg = this.cgroups.create(leaf, {
          memory: limits.memory,
          // clove-init is one more process of the agent's cgroup.
          maxPids: limits.max_pids + (ns ? 1 : 0),
          cpuQuota: limits.cpu_quota,
          cpuPeriod: limits.cpu_period,
          cpuShares: limits.cpu_shares,
          cpuWeight: sharesToWeight(limits.cpu_shares),
        });
      } catch (err) {
        throw new SandboxSpawnError(
          `cannot create the agent's cgroup: ${(err as Error).message}`,
          (err as { code?: string }).code ?? 'ECGROUP',
          { cause: err },
        );
      }
    }
    let child: NativeChild;
    let idmapped: { path: string; usernsFd: number }[] = [];
    try {
      idmapped = ns && account ? this.idmapShares(spec.share ?? [], uid, gid) : [];
      const keep = neededDirs(file, argv, spec.env ?? {}, cwd);
      const options = this.nativeOptions(
        {
          file,
          argv,
          env,
          cwd,
          logFd: spec.logFd,
          network: spec.network,
          sandboxed,
          name: spec.name,
          keep,
          ...(account ? { uid, gid } : {}),
          idmapped,
          agentSocket: spec.env?.CLOVE_SOCKET,
          park: spec.park === true,
        },
        cg,
        limits.max_pids,
      );
      child = await this.native!.spawn(this.testGate ? { ...options, testGate: this.testGate } : options);
    } catch (err) {
      cg?.remove();
      const e = fromNative(err);
      if (e instanceof SyscallError)
        throw new SandboxSpawnError(`cannot start agent ${spec.name}: ${e.message}`, e.code, {
          cause: e,
          syscall: e.syscall,
          errno: e.errno,
        });
      throw e;
    } finally {
      // The agent holds its idmapped mounts; the namespaces that described them are no longer needed.
      for (const i of idmapped) fs.closeSync(i.usernsFd);
    }
    const isolation = this.report(spec, ns, cg);
    const agent = new SandboxedAgent(
      this,
      spec.agentId,
      child,
      isolation,
      cg,
      ns,
      ns ? nsInode(child.pid) : undefined,
    );
    return this.track(agent, cg);
  }

  /** `agent` is live: its processes (by cgroup, else by PID namespace) are its agent's from now on. */
  private track(agent: SandboxedAgent, cg: AgentCgroup | undefined): SandboxedAgent {
    this.live.add(agent);
    if (cg) {
      const h = this.cgroups!.identityHierarchy();
      const rel = h ? cg.relPaths.get(h) : undefined;
      if (rel) this.byCgroup.set(rel, agent.agentId);
    }
    if (agent.pidNamespace) this.byPidNs.set(agent.pidNamespace, agent.agentId);
    return agent;
  }

  /**
   * Re-adopts an agent a dead kernel started (docs/restart.md): `pid` is the process that kernel recorded
   * (clove-init for a sandboxed agent, else the agent), still running. Nothing is started: its exit is
   * watched through a pidfd (without a status: reason `unknown`), its cgroup is the one init() kept, and
   * connections from its processes are its own again. Throws SyscallError (pidfd_open ESRCH) when it is
   * gone.
   */
  async adopt(spec: Omit<SpawnSpec, 'logFd'>, pid: number): Promise<SandboxedAgent> {
    await this.init();
    let child: NativeChild;
    try {
      child = this.native!.watchPid(pid);
    } catch (err) {
      throw fromNative(err);
    }
    const ns = spec.sandboxed !== false && this.modeValue !== 'plain';
    const pidNs = nsInode(pid);
    const hasInit = ns && pidNs !== undefined && pidNs !== nsInode(process.pid);
    const cg = this.cgroups?.adopt(pid);
    const agent = new SandboxedAgent(
      this,
      spec.agentId,
      child,
      this.report({ ...spec, logFd: -1 }, ns, cg),
      cg,
      hasInit,
      hasInit ? pidNs : undefined,
      true,
    );
    return this.track(agent, cg);
  }

  /**
   * A kernel hand-over (SIGHUP, `clove kernel --upgrade`): the agents keep running and their cgroups stay
   * for the next kernel; only this process's own resources go (the shared netns fd). No agent is signalled.
   */
  detach(): void {
    if (this.netnsFd >= 0) fs.closeSync(this.netnsFd);
    this.netnsFd = -1;
    this.ready = false;
    this.starting = undefined;
  }

  private report(spec: SpawnSpec, ns: boolean, cg: AgentCgroup | undefined): IsolationReport {
    const netIsolated = ns && !spec.network;
    const cgroups = {
      available: cg !== undefined,
      memory_limit: cg?.applied.memory ?? false,
      cpu_quota: cg?.applied.cpu ?? false,
      pids_limit: cg?.applied.pids ?? false,
      version: this.cgroups?.layout.version ?? 'none',
    };
    const reasons = [...this.reasons];
    if (spec.sandboxed === false) reasons.push('sandboxed: false requested');
    // Same rule as nativeOptions(): the filter goes with the namespaces.
    const seccomp = ns && this.seccomp;
    if (ns && !seccomp && !reasons.some((r) => r.startsWith('seccomp filter')))
      reasons.push('seccomp filter off');
    const fully =
      ns &&
      seccomp &&
      this.modeValue === 'root' &&
      cgroups.memory_limit &&
      cgroups.cpu_quota &&
      cgroups.pids_limit &&
      (netIsolated || spec.network);
    const r: IsolationReport = {
      fully_isolated: fully,
      namespaces: {
        pid: ns,
        net: netIsolated,
        mnt: ns,
        uts: ns,
        ipc: ns,
        user: ns && this.modeValue === 'rootless',
      },
      cgroups,
      seccomp,
    };
    if (!fully || reasons.length > 0) r.degraded_reason = reasons.join('; ') || 'incomplete isolation';
    return r;
  }

  ownerOf(pid: number): number | undefined {
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    if (this.cgroups && this.byCgroup.size > 0) {
      const p = this.cgroups.identityPathOf(pid);
      if (p !== undefined) {
        for (let cur = p; cur.length > 1; cur = path.posix.dirname(cur)) {
          const id = this.byCgroup.get(cur);
          if (id !== undefined) return id;
        }
      }
    }
    if (this.byPidNs.size > 0) {
      const ino = nsInode(pid);
      if (ino) return this.byPidNs.get(ino);
    }
    return undefined;
  }

  /** Live agents (for metrics and shutdown). */
  agents(): ReadonlySet<SandboxedAgent> {
    return this.live;
  }

  /** @internal An agent's process is gone: off the tables, by its own keys (no walk over every agent's). */
  forget(agent: SandboxedAgent): void {
    this.live.delete(agent);
    for (const k of agent.cgroup?.relPaths.values() ?? [])
      if (this.byCgroup.get(k) === agent.agentId) this.byCgroup.delete(k);
    if (agent.pidNamespace && this.byPidNs.get(agent.pidNamespace) === agent.agentId)
      this.byPidNs.delete(agent.pidNamespace);
  }

  /** @internal Kills what a plain-mode agent left in its cgroup and waits until the cgroup is empty. */
  async drainCgroup(cg: AgentCgroup): Promise<void> {
    for (let i = 0; i < 200 && cg.procs().length > 0; i++) {
      cg.killAll();
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Reads the exit records waiting on clove-init's shared pipe now (NativeChild.watch's `ended`). */
  drainExitRecords(): void {
    this.native?.drainExitRecords();
  }

  /** @internal Removes an agent's cgroups, retrying while the kernel still finishes tearing them down. */
  async removeCgroup(cg: AgentCgroup): Promise<void> {
    for (let i = 0; i < 200; i++) {
      if (cg.remove()) {
        this.cgroups?.pruneOld();
        return;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    this.warn(`clove sandbox: could not remove cgroup ${[...cg.dirs.values()].join(', ')}`);
  }

  /**
   * Waits for the spawns under way, kills the agents still alive, waits for them, removes the cgroup root
   * and closes the netns fd.
   */
  async close(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    const pending = [...this.live].map((a) => new Promise<void>((resolve) => a.onExit(() => resolve())));
    for (const a of this.live) a.signal('SIGKILL');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(pending), new Promise((r) => (timer = setTimeout(r, 5000)))]);
    // The fallback timer must not keep the process alive once every agent is gone.
    clearTimeout(timer);
    this.release();
    this.starting = undefined;
  }

  /** Removes the cgroup root and closes the netns fd (init() may start the spawner again). */
  private release(): void {
    this.cgroups?.close();
    if (this.netnsFd >= 0) fs.closeSync(this.netnsFd);
    this.netnsFd = -1;
    this.ready = false;
  }
}

export type { SandboxedAgent };
