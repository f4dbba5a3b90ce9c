// What every child between clone and execve does (child.cc for agents, enter.cc for EXEC): report a
// failure on the status pipe, reset the signal state Node left, and drop privileges. Raw syscalls only.
#pragma once
#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "plan.h"

namespace clove {

// Writes a kRecordError naming the failed step and exits; the parent turns it into a SyscallError.
[[noreturn]] inline void Fail(int statusFd, const char* what, int err) {
  Record r{};
  r.kind = kRecordError;
  r.err = err;
  size_t n = strlen(what);
  if (n >= sizeof(r.what)) n = sizeof(r.what) - 1;
  memcpy(r.what, what, n);
  ssize_t ignored = write(statusFd, &r, sizeof(r));
  (void)ignored;
  _exit(127);
}

// Default dispositions and an empty mask: Node's handlers and blocked signals must not reach the agent.
inline void ResetSignals() {
  struct sigaction sa {};
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &sa, nullptr);  // EINVAL for KILL/STOP is fine
  sigset_t none;
  sigemptyset(&none);
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, _NSIG / 8);
}

// no_new_privs, the capability bounding and ambient sets emptied, then the ids (groups first), then the
// effective/permitted/inheritable sets cleared. Raw syscalls: glibc's set*id broadcast to "all threads"
// would wait for Node's threads, which do not exist in this process. uid/gid < 0: keep the current one.
inline void DropPrivileges(int uid, int gid, bool noNewPrivs, bool dropCaps, int statusFd) {
  if (noNewPrivs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) Fail(statusFd, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
  if (dropCaps) {
    for (int cap = 0; cap < 64; cap++) {
      if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
        if (errno == EINVAL) break;  // past CAP_LAST_CAP
        Fail(statusFd, "prctl(PR_CAPBSET_DROP)", errno);
      }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
      Fail(statusFd, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)", errno);
  }
  if (gid >= 0) {
    if (syscall(SYS_setgroups, 0, nullptr) != 0) Fail(statusFd, "setgroups", errno);
    if (syscall(SYS_setresgid, gid, gid, gid) != 0) Fail(statusFd, "setresgid", errno);
  }
  if (uid >= 0 && syscall(SYS_setresuid, uid, uid, uid) != 0) Fail(statusFd, "setresuid", errno);
  if (dropCaps) {
    struct __user_cap_header_struct hdr {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] {};
    if (syscall(SYS_capset, &hdr, data) != 0) Fail(statusFd, "capset", errno);
  }
}

}  // namespace clove
