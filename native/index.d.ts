/**
 * Types of native/build/Release/clove_native.node. The addon is mechanical (syscalls and fds); every
 * default and every validation lives in kernel/sandbox/*.ts. Errors it throws are plain Errors with
 * `syscall` (e.g. "clone3", "mount(/proc)"), `errno` (number) and `code` ("EPERM"); kernel/sandbox/errors.ts
 * turns them into SyscallError.
 */

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** [resource (RLIMIT_* number), soft, hard]; a negative limit means RLIM_INFINITY. */
export type RlimitTuple = [resource: number, soft: number, hard: number];

/**
 * A directory bound read-only (nosuid, nodev) into the agent's mount namespace through an idmapped
 * mount (Linux >= 5.12, root mode only: it needs CAP_SYS_ADMIN on the host and a file system that
 * supports idmapping, e.g. ext4, btrfs, xfs, tmpfs >= 6.3). Files owned by ids the user namespace maps
 * appear owned by the ids they map to; ids it does not map appear as the overflow id (65534).
 */
export interface NativeIdmappedMount {
  /** Absolute path: the source directory and, in the agent's namespace, its mount point. */
  path: string;
  /** A user namespace fd from createIdmapUserns(); still owned (and closed) by the caller. */
  usernsFd: number;
}

/**
 * Every field is required (except those marked optional): the addon applies no defaults. The fds in it
 * (stdoutFd, netnsFd, idmapped[].usernsFd) are duplicated when spawn() is called: the caller may close
 * its own as soon as spawn() returned its promise.
 */
export interface NativeSpawnOptions {
  /** Absolute path of the agent executable. */
  file: string;
  argv: string[];
  /** Complete environment, "KEY=value". */
  env: string[];
  cwd: string;
  /** Becomes fd 1 and fd 2 of the agent; fd 0 is /dev/null. */
  stdoutFd: number;
  /** Path of clove-init (PID 1 of the agent's PID namespace), or "" to exec the agent directly. */
  initPath: string;
  newPid: boolean;
  newMount: boolean;
  newUts: boolean;
  newIpc: boolean;
  /** A new, empty network namespace per agent (rootless mode; as root use netnsFd). */
  newNet: boolean;
  newCgroup: boolean;
  /** A new user namespace; uidMap/gidMap are written by the parent before the child goes on. */
  newUser: boolean;
  uidMap: string;
  gidMap: string;
  /** setns(CLONE_NEWNET) into this namespace, -1 to stay. */
  netnsFd: number;
  /** sethostname in the new UTS namespace, "" to leave it. */
  hostname: string;
  /** cgroup v2 directory the child is born in (CLONE_INTO_CGROUP), "" for none. */
  cgroupDir: string;
  /** cgroup v1 `cgroup.procs` files the child writes itself into before anything else. */
  cgroupProcs: string[];
  /** Recursively remount the (private copy of the) root read-only and nosuid. Requires newMount. */
  readOnlyRoot: boolean;
  /** Mount a fresh proc on /proc. Requires newMount and newPid. */
  mountProc: boolean;
  /** tmpfs options for private /tmp and /dev/shm, "" for none. Requires newMount. */
  tmpfsOptions: string;
  /** Directories bind-mounted read-write on top of the read-only root. */
  writable: string[];
  /**
   * Directories hidden behind a fresh tmpfs: "/tmp" (sized by tmpfsOptions); "/run" (and a real
   * "/var/run") for agents without network; untraversable ancestors (mode 0755, 64 KiB). Paths without
   * symlinks (the mount follows them).
   */
  masks: string[];
  /** Directories below a mask bound back in (the agent's cwd, socket dir, program, script). At most 32. */
  keep: string[];
  /**
   * Directories mounted read-only with an idmapping, e.g. a 0700 script directory owned by root made to
   * appear owned by the agent's uid. Cloned before the masks hide them, attached after the masks and the
   * `keep` binds (so an entry covers any kept dir below it). At most 8. The fds are closed in the agent.
   */
  idmapped: NativeIdmappedMount[];
  /**
   * Files (the host's pathname Unix sockets) each covered by a bind mount of /dev/null, read-only,
   * nosuid, nodev, noexec, after every other mount: connect() to the path then fails with ECONNREFUSED
   * (not a socket any more). Absolute paths without symlinks (the mount follows them). A file gone since
   * it was listed is skipped (ENOENT, or its bind already detached by the host's unlink); any other
   * failure fails the spawn naming "mount(<hidden socket>, MS_BIND)". At most 256 (E2BIG beyond).
   * Requires newMount. May be empty; the addon reads an absent field as [] (callers built before it
   * existed).
   */
  hideFiles: string[];
  setsid: boolean;
  noNewPrivs: boolean;
  /** Empty the bounding, ambient, permitted and effective capability sets. */
  dropCaps: boolean;
  /**
   * clove-init installs the agents' seccomp filter (native/src/seccomp.cc, docs/sandbox.md "System
   * calls") before it forks the agent: denied calls fail with EPERM (clone3 with ENOSYS), calls of
   * another ABI kill the process. Requires initPath and noNewPrivs (OptionError otherwise); clove-init
   * also refuses to start the agent when NO_NEW_PRIVS is not set. x86_64 and aarch64 only (elsewhere the
   * spawn fails with ENOSYS naming "seccomp"). The addon reads an absent field as false (callers built
   * before it existed).
   */
  seccomp?: boolean;
  /**
   * clove-init is started with `--outlive-kernel`: it does not ask for SIGKILL when the kernel goes
   * (PR_SET_PDEATHSIG), so the agent survives a kernel crash or upgrade and the next kernel re-adopts it
   * (`watchPid`). Absent reads as false.
   */
  outliveKernel?: boolean;
  /**
   * clove-init is started with `--park` (needs `initPath`): a sandbox made in advance. The spawn settles
   * once everything before the agent's fork is done, with `agentPid` 0; SIGUSR1 to the child starts the
   * agent, and its start record (the new `agentPid`) comes on the exit pipe. It dies with the kernel
   * while parked, even with `outliveKernel`. Absent reads as false.
   */
  park?: boolean;
  /** setresuid/setresgid targets (setgroups to none), -1 to keep. */
  uid: number;
  gid: number;
  rlimits: RlimitTuple[];
  /** How long spawn() waits for the agent's exec before killing it and rejecting with ETIMEDOUT. */
  startTimeoutMs: number;
  /**
   * Tests only: the path of a FIFO. The spawn thread first opens it for reading and waits until it can
   * read one byte, or EOF (the writer closed), before it does anything else, so a test can hold a spawn
   * in flight and show the event loop serving meanwhile. Absent or "" for none (the kernel sets it from
   * $CLOVE_TEST_SPAWN_GATE). Failures reject naming "open(testGate)" / "read(testGate)".
   */
  testGate?: string;
}

export interface NativeExitStatus {
  code: number | null;
  /** Signal number. */
  signal: number | null;
}

export interface NativeExit extends NativeExitStatus {
  /** pid of the reaped child (clove-init or the agent). */
  pid: number;
  /** The agent's own status as clove-init reported it; null without init or when init was killed. */
  agent: NativeExitStatus | null;
  /** Set when waitid failed (the child was reaped by someone else). */
  waitError?: Error;
}

/** Owner of one spawned child's pidfd and status pipe. */
export interface NativeChild {
  readonly pid: number;
  readonly exited: boolean;
  /**
   * The agent program's pid in its PID namespace, as clove-init reported it when it started it (-1 for a
   * child without clove-init; 0 while a parked clove-init has not started it).
   */
  readonly agentPid: number;
  /** pidfd_send_signal; false when the child is already gone. */
  kill(signal: number): boolean;
  /**
   * Starts watching the child; cb runs once, after it was reaped. Call exactly once. `ended` (children
   * with clove-init) runs at most once before cb, as soon as init reported the agent's own exit: init's
   * exit, and the teardown of the namespace with it, come later.
   */
  watch(cb: (exit: NativeExit) => void, ended?: (agent: NativeExitStatus) => void): void;
}

/**
 * READ/WRITE mechanics (native/src/files.cc). Paths are resolved below `rootFd` (from fsOpenRoot) with
 * openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, plus RESOLVE_NO_SYMLINKS when asked), on a short-lived
 * thread of the addon's own that first takes fsuid `uid`, fsgid `gid`, no supplementary groups and no
 * capabilities (uid and gid -1: the kernel's own credentials). The addon dups `rootFd`: the caller may
 * close it once the call returned its promise. Failures reject with an Error carrying `syscall`, `errno`
 * and `code` (EFBIG also `size`); "S_ISREG" + EINVAL is "not a regular file".
 */
export interface NativeFsCall {
  rootFd: number;
  uid: number;
  gid: number;
}

export interface NativeFsResolveOptions extends NativeFsCall {
  /** Absolute (inside the root) path; no NUL. */
  path: string;
  noSymlinks: boolean;
}

export interface NativeFsResolved {
  /** readlink of /proc/self/fd/N: the path inside the root's mount namespace. */
  realPath: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
}

export interface NativeFsReadOptions extends NativeFsCall {
  path: string;
  noSymlinks: boolean;
  /**
   * A read of more than this (the smaller of `length` and the rest of the file) fails with EFBIG, from
   * the file's size alone or once maxBytes + 1 bytes were read (a file that grew, or /proc).
   */
  maxBytes: number;
  offset: number;
  /** Bytes to read from `offset` (at most maxBytes), -1 for the rest of the file. */
  length: number;
}

export interface NativeFsRead {
  data: Buffer;
  /** st_size when it was opened. */
  fileSize: number;
  realPath: string;
}

export interface NativeFsWriteOptions extends NativeFsCall {
  /** Directory of the target; resolved with RESOLVE_NO_SYMLINKS. */
  dir: string;
  /** One path component; a symlink there is refused (ELOOP, syscall "target"). */
  name: string;
  data: Buffer;
  /** O_APPEND; otherwise an atomic replacement (O_TMPFILE or an O_EXCL temporary name, then renameat). */
  append: boolean;
  /** Mode of a new file (a replaced file keeps its own mode). */
  fileMode: number;
}

export interface NativeFsWritten {
  bytesWritten: number;
  realDir: string;
  created: boolean;
}

/**
 * EXEC (native/src/enter.cc): a command started INSIDE a running agent's sandbox. A first child joins
 * the agent's cgroups (v2: born in `cgroupDir`; v1: writes itself into `cgroupProcs`) and, through a
 * pidfd of `nsPid`, its `namespaces`; its own child — the command, born in the agent's PID namespace and
 * re-parented to the kernel (CLONE_PARENT) — leads a session of its own, is the subreaper of its orphans,
 * gets stdin/stdout/stderr from the fds given (every other fd closed), `rlimits`, no capabilities,
 * NO_NEW_PRIVS, `uid`/`gid`, chdir(`cwd`) as that uid, the agents' seccomp filter when `seccomp`, and
 * execve(`file`). Every field is required: the addon applies no defaults.
 */
export interface NativeExecOptions {
  /** Host pid whose namespaces are joined (the agent's clove-init), -1 with no namespaces. */
  nsPid: number;
  /** Which of nsPid's namespaces to join (those that differ from the kernel's); [] for none. */
  namespaces: Array<'user' | 'mnt' | 'pid' | 'uts' | 'ipc' | 'net' | 'cgroup'>;
  /** cgroup v2 directory the command is born in (CLONE_INTO_CGROUP), "" for none. */
  cgroupDir: string;
  /** cgroup v1 `tasks` files joined before anything else (while the host's paths are still visible). */
  cgroupProcs: string[];
  /** Absolute path, as the agent sees it (after setns into its mount namespace). */
  file: string;
  argv: string[];
  /** Complete environment, "KEY=value". */
  env: string[];
  /** Absolute; chdir'd into as `uid` (EACCES, ENOENT reported with syscall "chdir"). */
  cwd: string;
  stdinFd: number;
  stdoutFd: number;
  stderrFd: number;
  /** setresuid/setresgid targets (setgroups to none), -1 to keep. */
  uid: number;
  gid: number;
  rlimits: RlimitTuple[];
  /** Install the agents' seccomp filter (seccomp.h) right before execve. */
  seccomp: boolean;
  /** How long execInAgent() waits for the exec before killing the attempt and throwing ETIMEDOUT. */
  startTimeoutMs: number;
}

/** resolvePaths(): a path resolved inside a root, or why not. */
export type NativeResolvedPath =
  | { path: string; type: 'file' | 'dir' | 'other'; mode: number; uid: number; gid: number }
  | { errno: number; code: string; syscall: string };

/* ---- The fast path (docs/fastpath.md; native/src/fast/) ---- */

export interface NativeMailBudgets {
  mailboxMessages: number;
  mailboxBytes: number;
  outboxBytes: number;
}

/** A queued message: `json` is the sender's text byte for byte; `bytes` its UTF-8 length. */
export interface NativeMessage {
  from: number;
  fromName: string;
  json: string;
  bytes: number;
  seq: number;
  sentAt: number;
}

/** Why MailStore.deliver refused (nothing was queued). */
export interface NativeRefusal {
  refused: 'mailbox_full' | 'outbox_bytes' | 'kernel_queued_bytes' | 'no_budgets' | 'unreachable';
  /** mailbox_full: messages queued; otherwise bytes held. */
  used: number;
  /** mailbox_full: bytes queued. */
  bytes: number;
  /** mailbox_full: the message limit; otherwise the byte limit. */
  limit: number;
  /** mailbox_full: the byte limit. */
  limitBytes: number;
}

export interface NativeMailStats {
  syscalls: number;
  sent: number;
  received: number;
  /** Date.now() of its last fast-path call; 0 when none. */
  lastActiveMs: number;
}

/**
 * Mailboxes, names and budgets shared by the reactor thread and JavaScript (semantics of
 * kernel/ipc/mailboxes.ts); every method is synchronous and thread-safe. Holders of leases are numbers.
 */
export declare class NativeMailStore {
  /** `broadcastToJs`: the reactor hands every BROADCAST to JavaScript (a clustered kernel's go to other nodes too). */
  constructor(o: {
    queuedBytesLimit: number;
    maxReplyBytes: number;
    maxDepth: number;
    broadcastToJs?: boolean;
  });
  setBudgets(id: number, b: NativeMailBudgets): void;
  setReachable(id: number, reachable: boolean): void;
  /** `fromName`: the message's from_name (default: the sender's first name); reachability is not checked. */
  deliver(to: number, from: number, json: string, fromName?: string): NativeMessage | NativeRefusal;
  take(id: number, max: number, holder: number, lease: boolean, maxBytes: number): NativeMessage[];
  requeueLeases(id: number, holder: number): number;
  size(id: number): number;
  bytes(id: number): number;
  queuedBytes(): number;
  /** "" on success, else "invalid" | "taken:<id>" | "budget:<held>:<max>"; maxExtra -1: unbounded. */
  register(id: number, name: string, maxExtra: number): string;
  unregister(id: number, name: string): boolean;
  /** -1 when no id holds the name. */
  resolve(name: string): number;
  nameOf(id: number): string;
  named(): number[];
  release(id: number): void;
  stats(id: number): NativeMailStats;
  /** Ids (watched ones only) whose mailbox gained messages, in batches, on the JS thread. */
  onMail(fn: (ids: number[]) => void): void;
  watch(id: number, on: boolean): void;
  /**
   * Test-only (kernel/ipc/native-ops.test.ts): the fast path's Serve() for one frame's payload, without a
   * reactor. `out` holds the reply frame (verdict 'done'); `park` what a parked RECV waits for.
   */
  serve(
    caller: number,
    holder: number,
    opcode: number,
    payload: Buffer,
  ): {
    verdict: 'done' | 'tojs' | 'park';
    out: Buffer;
    park?: { id: number; holder: number; max: number; lease: boolean; timeoutMs: number };
  };
  /** Test-only: Resume() of a parked RECV; the reply frame, or null while it keeps waiting. */
  resume(park: { id: number; holder: number; max: number; lease: boolean }, timedOut: boolean): Buffer | null;
  /**
   * Test-only: PushMessages(); the PUSH frames written (one per message, or one for all with `batch`;
   * PUSH_BINARY frames with `binary`).
   * `maxBytes`: message text taken at most (at least one message; default: the reply byte limit only).
   */
  pushMessages(
    id: number,
    holder: number,
    max: number,
    batch?: boolean,
    maxBytes?: number,
    binary?: boolean,
  ): Buffer;
}

export type NativeReactorEvent =
  | { type: 'data'; conn: number; data: Buffer }
  | { type: 'end'; conn: number }
  | { type: 'drain'; conn: number; unsent: number }
  | { type: 'close'; conn: number; error?: string };

/** The reactor thread: owns adopted connections, serves the fast calls, hands the rest to `onEvents`. */
/** What the reactor pushes to a connection (HELLO `push`): its messages, several to a frame, in binary. */
export interface NativePushMode {
  messages: boolean;
  /** Several messages to a frame (push.batch). */
  batch: boolean;
  /** PUSH_BINARY frames (push.format "binary") instead of PUSH JSON. */
  binary: boolean;
}

export declare class NativeReactor {
  constructor(o: {
    store: NativeMailStore;
    maxPayload: number;
    onEvents: (events: NativeReactorEvent[]) => void;
    /** The most microseconds the reactor polls before it sleeps (docs/fastpath.md, "Polling"); 0 or absent: never. */
    pollUs?: number;
  });
  /** Takes a dup of `fd` (the caller still closes its own); returns the connection's id. */
  adopt(fd: number, o: { principal: number; fast: boolean; initial?: Buffer }): number;
  /** Queues `data` (written at once when possible); `answered`: forwarded requests it answers. Returns bytes unsent. */
  write(conn: number, data: Buffer, answered: number): number;
  setFast(conn: number, fast: boolean): void;
  /** What the reactor pushes of `conn`'s messages. */
  setPush(conn: number, mode: NativePushMode): void;
  pause(conn: number): void;
  resume(conn: number): void;
  /** Shuts down the kernel's write side once everything queued is written. */
  end(conn: number): void;
  destroy(conn: number): void;
  /** Stops the thread and closes every connection. */
  close(): void;
  /** What polling did since the reactor started. */
  pollStats(): NativePollStats;
}

/** NativeReactor.pollStats(): counts since the reactor started (docs/fastpath.md, "Polling"). */
export interface NativePollStats {
  /** The most it polls before sleeping (the option); 0: it never polls. */
  maxUs: number;
  /** Waits that polled. */
  polls: number;
  /** Polls that found work before their window ran out (the sleep and its wake-up saved). */
  caught: number;
  /** Waits that did not poll because the machine had more runnable tasks than CPUs. */
  skipped: number;
  /** Waits that did not poll because, in a recent 50 ms, fewer than half of the polls found work. */
  backedOff: number;
  /** Microseconds spent polling, caught or not. */
  polledUs: number;
}

export interface CloveNative {
  MailStore: typeof NativeMailStore;
  Reactor: typeof NativeReactor;
  /**
   * Where each message's JSON text stands in a SEND / BROADCAST payload (`batch` false: its "message") or
   * a SEND_BATCH one (`batch` true: each item's), as [start, end) byte pairs, [0, 0) for an absent
   * message: the bytes the reactor would queue. Null for a payload not in that shape (a duplicate key).
   * The payload must already have passed JSON.parse.
   */
  messageSpans(payload: Buffer, batch: boolean): Uint32Array | null;
  /** getsockopt(SO_PEERCRED) on a connected Unix socket. */
  peerCred(fd: number): PeerCred;
  /**
   * setrlimit(RLIMIT_NOFILE, {soft, hard}) of this process (SysError EPERM when raising the hard limit
   * without CAP_SYS_RESOURCE or above fs.nr_open).
   */
  setNofile(soft: number, hard: number): void;
  /** An fd (O_CLOEXEC) to a new empty network namespace; the caller owns it. */
  createEmptyNetns(): number;
  /**
   * An fd (O_CLOEXEC) to a new user namespace whose uid_map/gid_map are these strings (the format of
   * /proc/<pid>/uid_map: "inside outside count" lines), for NativeIdmappedMount.usernsFd: with
   * "0 200007 1" files owned by uid 0 appear owned by uid 200007. No process stays in it; the caller
   * owns the fd and closes it (fs.closeSync) once the spawns that use it returned.
   */
  createIdmapUserns(uidMap: string, gidMap: string): number;
  /**
   * clone3 + sandbox setup + exec, on a spawn thread of the addon's own (never on the event loop): the
   * promise resolves once the agent exec'd (the Child is then watched by the addon's reaper), or rejects
   * with an Error naming the failing step (`syscall`, `errno`, `code`: "clone3", "mount(/proc)",
   * "execve", "spawn (agent did not start in time)" ETIMEDOUT, …). A malformed options object throws a
   * TypeError at once. Up to 4 spawns run at the same time; more wait their turn.
   */
  spawn(options: NativeSpawnOptions): Promise<NativeChild>;
  /**
   * A Child for a running process that is not this process's child (an agent a dead kernel started):
   * pidfd_open, its exit watched on the pidfd. Only its parent may reap it, so its exit comes without a
   * status (`code` and `signal` null, `waitError` ECHILD). Throws SysError "pidfd_open" (ESRCH: gone).
   */
  watchPid(pid: number): NativeChild;
  /**
   * Reads the agents' exit records clove-init has written (the shared exit pipe) now, instead of at the
   * event loop's next poll: watch()'s `ended` callbacks of the agents found run before it returns.
   */
  drainExitRecords(): void;
  /**
   * An O_PATH fd (O_CLOEXEC) of /proc/<pid>/root, or of / for pid 0; the caller owns it. With `pidNs`
   * ("pid:[…]", "" to skip) the process must still be in that PID namespace (ESRCH otherwise), read
   * through the same /proc/<pid> fd, so a reused pid never lends its root.
   */
  fsOpenRoot(pid: number, pidNs: string): number;
  /** openat2(O_PATH) + fstat + readlink, as `uid`/`gid`. */
  fsResolve(options: NativeFsResolveOptions): Promise<NativeFsResolved>;
  /** A regular file's bytes, as `uid`/`gid`. */
  fsRead(options: NativeFsReadOptions): Promise<NativeFsRead>;
  /** Appends to, or atomically replaces, a regular file, as `uid`/`gid`. */
  fsWrite(options: NativeFsWriteOptions): Promise<NativeFsWritten>;
  /**
   * Starts a command inside an agent's sandbox (NativeExecOptions) on the addon's enter thread (never on
   * the event loop; the options' fds must stay open until it settles): resolves once it exec'd, as a
   * Child whose `pid` is the command's host pid (its process group and session id too). Rejects with the
   * failing step's SyscallError otherwise (e.g. "setns(agent namespaces)", "clone3(command)" EAGAIN at
   * the pids limit, "chdir", "execve"); a malformed options object throws a TypeError at once.
   */
  execInAgent(options: NativeExecOptions): Promise<NativeChild>;
  /** pipe2(O_CLOEXEC): [read end, write end], both owned by the caller (for a command's stdio). */
  createPipe(): [readFd: number, writeFd: number];
  /**
   * realpath(3) of absolute `paths` as seen below the directory `root` (e.g. /proc/<pid>/root: the
   * agent's mount namespace), every step with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), symlinks
   * followed (at most 40), every directory walked searchable by `uid`/`gid` by its mode bits (EACCES
   * otherwise; uid -1: no check). Synchronous; one result per path, failures as {errno, code, syscall}.
   */
  resolvePaths(root: string, paths: string[], uid: number, gid: number): NativeResolvedPath[];
}
