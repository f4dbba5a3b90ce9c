// The code between clone3 and execve. It runs in a copy of Node's address space with only one thread,
// while Node's other threads may have held malloc or stdio locks at clone time: so only raw syscalls and
// async-signal-safe libc wrappers here, no allocation, no C++ exceptions.
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "plan.h"
#include "rawchild.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
// The new mount API (Linux >= 5.12 for MOUNT_ATTR_IDMAP); the syscall numbers are the same on every
// architecture.
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef OPEN_TREE_CLOEXEC
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOUNT_ATTR_IDMAP
#define MOUNT_ATTR_IDMAP 0x00100000
#endif

namespace clove {

void Plan::Finalize() {
  auto fill = [](std::vector<std::string>& src, std::vector<char*>& dst) {
    dst.clear();
    for (auto& s : src) dst.push_back(s.data());
    dst.push_back(nullptr);
  };
  fill(argv, argvPtrs);
  fill(envp, envpPtrs);
  fill(cgroupProcs, cgroupProcPtrs);
  fill(writable, writablePtrs);
  fill(masks, maskPtrs);
  fill(keep, keepPtrs);
  fill(hideFiles, hidePtrs);
}

namespace {

int MountSetattr(const char* path, unsigned flags, uint64_t set, uint64_t clr) {
  struct mount_attr attr {};
  attr.attr_set = set;
  attr.attr_clr = clr;
  return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof(attr));
}

// mkdir -p without allocation (paths are at most PATH_MAX); what names the step on failure.
void MkdirP(const char* path, int statusFd, const char* what) {
  char buf[4096];
  size_t n = strlen(path);
  if (n >= sizeof(buf)) Fail(statusFd, what, ENAMETOOLONG);
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == 0) {
      char c = buf[i];
      buf[i] = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) Fail(statusFd, what, errno);
      buf[i] = c;
    }
  }
}

// "/proc/self/fd/<fd>" into out (>= 32 bytes), without snprintf.
void FdPath(int fd, char* out) {
  const char* prefix = "/proc/self/fd/";
  size_t n = strlen(prefix);
  memcpy(out, prefix, n);
  char digits[16];
  int d = 0;
  do digits[d++] = (char)('0' + fd % 10); while ((fd /= 10) > 0);
  while (d > 0) out[n++] = digits[--d];
  out[n] = 0;
}

void SetupMounts(const Plan& p, int statusFd) {
  // Nothing we do below may propagate back to the host's mount namespace.
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) Fail(statusFd, "mount(/, MS_REC|MS_PRIVATE)", errno);
  if (p.readOnlyRoot) {
    if (MountSetattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0) != 0)
      Fail(statusFd, "mount_setattr(/, RDONLY|NOSUID, AT_RECURSIVE)", errno);
  }
  for (size_t i = 0; p.writablePtrs[i]; i++) {
    const char* dir = p.writablePtrs[i];
    if (mount(dir, dir, nullptr, MS_BIND, nullptr) != 0) Fail(statusFd, "mount(<writable>, MS_BIND)", errno);
    if (MountSetattr(dir, 0, 0, MOUNT_ATTR_RDONLY) != 0) Fail(statusFd, "mount_setattr(<writable>, clear RDONLY)", errno);
  }
  if (p.mountProc) {
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) Fail(statusFd, "mount(/proc)", errno);
  }
  // Masks hide a directory behind an empty tmpfs: /tmp (private scratch space) and directories the
  // agent's uid could not traverse (e.g. /root). What the agent needs below them (its cwd, the kernel's
  // socket dir, its program and script) is held by O_PATH fds first and bound back in afterwards.
  constexpr size_t kMaxKeep = 32;
  int keep[kMaxKeep];
  size_t nkeep = 0;
  for (size_t i = 0; p.keepPtrs[i]; i++) {
    if (nkeep == kMaxKeep) Fail(statusFd, "open(<kept dir>, O_PATH)", E2BIG);
    keep[nkeep] = open(p.keepPtrs[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (keep[nkeep] < 0) Fail(statusFd, "open(<kept dir>, O_PATH)", errno);
    nkeep++;
  }
  // Idmapped binds are detached copies taken while the directories are still visible (the masks would
  // hide them), made read-only and idmapped while detached (MOUNT_ATTR_IDMAP only applies to a mount
  // never attached to a namespace), and attached last so neither a mask nor a kept bind covers them.
  constexpr size_t kMaxIdmapped = 8;
  int idm[kMaxIdmapped];
  size_t nidm = p.idmapped.size();
  if (nidm > kMaxIdmapped) Fail(statusFd, "open_tree(<idmapped dir>)", E2BIG);
  for (size_t i = 0; i < nidm; i++) {
    const IdmappedMount& m = p.idmapped[i];
    idm[i] = (int)syscall(SYS_open_tree, AT_FDCWD, m.path.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (idm[i] < 0) Fail(statusFd, "open_tree(<idmapped dir>, OPEN_TREE_CLONE)", errno);
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.userns_fd = (uint64_t)(int64_t)m.usernsFd;  // a negative fd becomes huge: EINVAL, never fd 0
    if (syscall(SYS_mount_setattr, idm[i], "", AT_EMPTY_PATH, &attr, sizeof(attr)) != 0)
      Fail(statusFd, "mount_setattr(<idmapped dir>, IDMAP|RDONLY)", errno);
  }
  for (size_t i = 0; p.maskPtrs[i]; i++) {
    bool tmp = strcmp(p.maskPtrs[i], "/tmp") == 0;
    const char* opts = tmp ? p.tmpfsOptions.c_str() : "mode=0755,size=65536,nr_inodes=4096";
    if (mount("tmpfs", p.maskPtrs[i], "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) Fail(statusFd, tmp ? "mount(/tmp, tmpfs)" : "mount(<mask>, tmpfs)", errno);
  }
  for (size_t i = 0; i < nkeep; i++) {
    MkdirP(p.keepPtrs[i], statusFd, "mkdir(<kept dir>)");
    char src[64];
    FdPath(keep[i], src);
    if (mount(src, p.keepPtrs[i], nullptr, MS_BIND | MS_REC, nullptr) != 0) Fail(statusFd, "mount(<kept dir>, MS_BIND)", errno);
    close(keep[i]);
  }
  for (size_t i = 0; i < nidm; i++) {
    const char* dir = p.idmapped[i].path.c_str();
    MkdirP(dir, statusFd, "mkdir(<idmapped dir>)");
    if (syscall(SYS_move_mount, idm[i], "", AT_FDCWD, dir, MOVE_MOUNT_F_EMPTY_PATH) != 0)
      Fail(statusFd, "move_mount(<idmapped dir>)", errno);
    close(idm[i]);
  }
  if (!p.tmpfsOptions.empty()) {
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode)) {
      if (mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, p.tmpfsOptions.c_str()) != 0)
        Fail(statusFd, "mount(/dev/shm, tmpfs)", errno);
    }
  }
  // Host Unix sockets still visible after the masks and keeps (the parent lists them from
  // /proc/net/unix): each is covered by a bind of /dev/null, so connect() finds a character device, not
  // a socket (ECONNREFUSED), and sendto() on a datagram path fails the same way. Last, so that no kept
  // or idmapped bind covers the cover again. Read-only and nosuid like everything (inherited from the
  // read-only /dev), plus nodev and noexec: the agent cannot even open the device through it. A socket
  // removed since the scan needs no cover: the bind finds nothing (ENOENT), or, when the host unlinks
  // the file right after the bind, the kernel detaches the bind with it and the path no longer names
  // our mount (ENOENT, or EINVAL when a new file took its place).
  constexpr size_t kMaxHidden = 256;
  constexpr uint64_t kHideAttrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
  if (p.hideFiles.size() > kMaxHidden) Fail(statusFd, "mount(<hidden socket>, MS_BIND)", E2BIG);
  for (size_t i = 0; p.hidePtrs[i]; i++) {
    if (mount("/dev/null", p.hidePtrs[i], nullptr, MS_BIND, nullptr) != 0) {
      if (errno == ENOENT) continue;
      Fail(statusFd, "mount(<hidden socket>, MS_BIND)", errno);
    }
    if (MountSetattr(p.hidePtrs[i], 0, kHideAttrs, 0) != 0 && errno != ENOENT && errno != EINVAL)
      Fail(statusFd, "mount_setattr(<hidden socket>, RDONLY|NODEV)", errno);
  }
}

// Moves fd above the stdio/status slots so the dup2 sequence below cannot clobber it.
int Lift(int fd, int statusFd, const char* what) {
  int out = fcntl(fd, F_DUPFD, 10);
  if (out < 0) Fail(statusFd, what, errno);
  return out;
}

}  // namespace

void ChildMain(const Plan& p, int statusFd, int syncFd) {
  ResetSignals();
  if (syncFd >= 0) {  // rootless: wait until the parent wrote our uid/gid maps
    char c;
    ssize_t n;
    do n = read(syncFd, &c, 1); while (n < 0 && errno == EINTR);
    if (n != 1) Fail(statusFd, "read(sync pipe)", n < 0 ? errno : EPIPE);
    close(syncFd);
  }
  // v1 cgroups first, so every process the agent ever has is accounted and limited.
  for (size_t i = 0; p.cgroupProcPtrs[i]; i++) {
    int fd = open(p.cgroupProcPtrs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) Fail(statusFd, "open(cgroup.procs)", errno);
    if (write(fd, "0", 1) != 1) Fail(statusFd, "write(cgroup.procs)", errno);
    close(fd);
  }
  if (p.setsid && setsid() < 0) Fail(statusFd, "setsid", errno);
  if (p.netnsFd >= 0 && setns(p.netnsFd, CLONE_NEWNET) != 0) Fail(statusFd, "setns(CLONE_NEWNET)", errno);
  if (!p.hostname.empty() && sethostname(p.hostname.data(), p.hostname.size()) != 0) Fail(statusFd, "sethostname", errno);
  if (p.cloneFlags & CLONE_NEWNS) SetupMounts(p, statusFd);
  if (chdir(p.cwd.c_str()) != 0) Fail(statusFd, "chdir", errno);

  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull < 0) Fail(statusFd, "open(/dev/null)", errno);
  int out = Lift(p.stdoutFd, statusFd, "fcntl(logFd, F_DUPFD)");
  int in = Lift(devnull, statusFd, "fcntl(/dev/null, F_DUPFD)");
  int st = Lift(statusFd, statusFd, "fcntl(status, F_DUPFD)");
  const bool exitPipe = !p.initPath.empty() && p.exitFd >= 0;
  int ex = exitPipe ? Lift(p.exitFd, statusFd, "fcntl(exit pipe, F_DUPFD)") : -1;
  statusFd = st;
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0 || dup2(st, 3) < 0) Fail(statusFd, "dup2", errno);
  statusFd = 3;
  if (exitPipe && dup2(ex, 4) < 0) Fail(statusFd, "dup2(exit pipe)", errno);
  // No kernel fd may reach the agent: everything past stdio+status (+ clove-init's exit pipe) goes now,
  // status goes at exec (clove-init keeps it until the agent runs, a directly exec'd agent closes it,
  // which tells the parent exec succeeded); clove-init marks the exit pipe close-on-exec for the agent.
  if (syscall(SYS_close_range, exitPipe ? 5U : 4U, ~0U, 0U) != 0) Fail(statusFd, "close_range", errno);
  if (p.initPath.empty() && fcntl(3, F_SETFD, FD_CLOEXEC) != 0) Fail(statusFd, "fcntl(status, FD_CLOEXEC)", errno);
  // Limits only now: the kernel may hold more fds than RLIMIT_NOFILE allows, and moving ours out of
  // the way above them (F_DUPFD) must not fail with EMFILE.
  for (const auto& r : p.rlimits) {
    if (prlimit(0, (__rlimit_resource)r.resource, &r.limit, nullptr) != 0) Fail(statusFd, "prlimit", errno);
  }

  DropPrivileges(p.uid, p.gid, p.noNewPrivs, p.dropCaps, statusFd);

  if (!p.initPath.empty()) {
    // clove-init [--seccomp] [--outlive-kernel] [--park] [--exit-token=<n>] <agent file> <agent argv...>
    const char* initArgv[p.argvPtrs.size() + 6];
    size_t k = 0;
    initArgv[k++] = "clove-init";
    if (p.seccomp) initArgv[k++] = "--seccomp";
    if (p.outliveKernel) initArgv[k++] = "--outlive-kernel";
    if (p.park && exitPipe) initArgv[k++] = "--park";
    if (exitPipe) initArgv[k++] = p.exitTokenArg.c_str();
    initArgv[k++] = p.file.c_str();
    for (size_t i = 0; i < p.argvPtrs.size(); i++) initArgv[k + i] = p.argvPtrs[i];
    execve(p.initPath.c_str(), (char* const*)initArgv, p.envpPtrs.data());
    Fail(statusFd, "execve(clove-init)", errno);
  }
  execve(p.file.c_str(), p.argvPtrs.data(), p.envpPtrs.data());
  Fail(statusFd, "execve", errno);
}

}  // namespace clove
