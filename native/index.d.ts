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

/** Every field is required: the addon applies no defaults. */
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
  /** setresuid/setresgid targets (setgroups to none), -1 to keep. */
  uid: number;
  gid: number;
  rlimits: RlimitTuple[];
  /** How long spawn() waits for the agent's exec before killing it and throwing ETIMEDOUT. */
  startTimeoutMs: number;
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
  /** pidfd_send_signal; false when the child is already gone. */
  kill(signal: number): boolean;
  /** Starts watching the pidfd; cb runs once, after waitid reaped the child. Call exactly once. */
  watch(cb: (exit: NativeExit) => void): void;
}

export interface CloveNative {
  /** getsockopt(SO_PEERCRED) on a connected Unix socket. */
  peerCred(fd: number): PeerCred;
  /** An fd (O_CLOEXEC) to a new empty network namespace; the caller owns it. */
  createEmptyNetns(): number;
  /**
   * An fd (O_CLOEXEC) to a new user namespace whose uid_map/gid_map are these strings (the format of
   * /proc/<pid>/uid_map: "inside outside count" lines), for NativeIdmappedMount.usernsFd: with
   * "0 200007 1" files owned by uid 0 appear owned by uid 200007. No process stays in it; the caller
   * owns the fd and closes it (fs.closeSync) once the spawns that use it returned.
   */
  createIdmapUserns(uidMap: string, gidMap: string): number;
  /** clone3 + sandbox setup + exec; returns once the agent exec'd, throws otherwise. */
  spawn(options: NativeSpawnOptions): NativeChild;
}
