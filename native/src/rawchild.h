// The two steps every child between clone and execve starts with (child.cc for agents, enter.cc for
// EXEC): report a failure on the status pipe, and reset the signal state Node left. Raw syscalls only.
#pragma once
#include <signal.h>
#include <string.h>
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

}  // namespace clove
