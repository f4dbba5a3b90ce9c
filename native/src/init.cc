// clove-init: PID 1 of an agent's PID namespace.
//
// Why it exists: the PID-namespace init ignores every signal it has no handler for, even from the
// kernel daemon (so a plain agent as PID 1 would shrug off SIGTERM), and orphans are re-parented to it
// (so someone must reap them). clove-init runs with the agent's credentials (the sandbox dropped them
// before exec'ing us), forks the agent, forwards catchable signals to every process of the namespace
// and reports the agent's exit status on fd 3 before exiting, which tears the namespace down.
//
// Usage (exec'd by the addon, never by hand):
//   clove-init [--seccomp] [--outlive-kernel] [--park] [--exit-token=<n>] <agent file> <agent argv...>
// fd 3 = status pipe to the kernel (records of native/src/plan.h). The agent file is an absolute path,
// so options (before it) cannot be mistaken for it.
//
// --exit-token=<n>: fd 4 is the kernel's exit pipe, shared by every agent (the kernel keeps no fd per
// agent, native/src/spawn.cc): fd 3 is closed once the agent runs, and the agent's exit status goes on
// fd 4 as a kRecordExited whose err is <n>.
//
// --outlive-kernel: no PR_SET_PDEATHSIG. Without it clove-init (and with it the agent's namespace) is
// SIGKILLed when the kernel thread that cloned it dies; with it the agent keeps running through a kernel
// crash or upgrade, and the next kernel re-adopts it (docs/restart.md). Its exit record then finds no
// reader on fd 4 (EPIPE, SIGPIPE stays blocked): the new kernel sees the exit through a pidfd.
//
// --park (with --exit-token): a sandbox made in advance for the agent's next restart
// (docs/supervision.md "Spare sandbox"). Everything up to the agent's fork is done, then a kRecordParked
// on fd 3 tells the kernel it is ready, and clove-init waits for SIGUSR1 to start the agent; any other
// catchable signal ends it (there is no agent to forward it to). It dies with the kernel while parked
// (PR_SET_PDEATHSIG even with --outlive-kernel: a parked sandbox is nothing to re-adopt), and the agent's
// kRecordStarted goes on fd 4 with the token, since the kernel stopped reading fd 3 at the park.
//
// --seccomp: install the agents' seccomp filter (seccomp.h) before forking the agent. clove-init itself
// runs under it too: nothing it does (signals, fork, exec, wait, write) is denied.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plan.h"
#include "seccomp.h"

using clove::Record;

static void Send(const Record& r, int fd = 3) {
  ssize_t n;
  do n = write(fd, &r, sizeof(r)); while (n < 0 && errno == EINTR);
}

static void SendError(const char* what, int err) {
  Record r{};
  r.kind = clove::kRecordError;
  r.err = err;
  strncpy(r.what, what, sizeof(r.what) - 1);
  Send(r);
}

static void Noop(int) {}

// The agent's file and argv, in static storage: locals live across vfork() may be clobbered.
static char* agentFile;
static char** agentArgv;
// --exit-token, or -1 (static for the same reason).
static long exitToken = -1;

// Options before the agent file; returns the argv index of the agent file, or -1 on an unknown option.
static int ParseOptions(int argc, char** argv, bool* seccomp, bool* outlive, bool* park, long* exitToken) {
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (strcmp(argv[i], "--seccomp") == 0) {
      *seccomp = true;
    } else if (strcmp(argv[i], "--outlive-kernel") == 0) {
      *outlive = true;
    } else if (strcmp(argv[i], "--park") == 0) {
      *park = true;
    } else if (strncmp(argv[i], "--exit-token=", 13) == 0) {
      char* end = nullptr;
      *exitToken = strtol(argv[i] + 13, &end, 10);
      if (*end != 0 || *exitToken < 0 || *exitToken > INT32_MAX) return -1;
    } else {
      return -1;
    }
  }
  return i;
}

int main(int argc, char** argv, char** envp) {
  bool seccomp = false;
  bool outlive = false;
  bool park = false;
  const int first = ParseOptions(argc, argv, &seccomp, &outlive, &park, &exitToken);  // argv index of the agent file
  if (first < 0 || (park && exitToken < 0)) {
    SendError(first < 0 ? "clove-init: unknown option" : "clove-init: --park needs --exit-token", EINVAL);
    return 127;
  }
  if (argc - first < 2) return 127;
  agentFile = argv[first];
  agentArgv = argv + first + 1;
  // Not dumpable: the agent (same uid) may not ptrace us or forge records through our fd 3.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  // Unless asked to outlive it: if the kernel daemon dies, its agents die with it instead of running
  // unsupervised.
  if (!outlive || park) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  fcntl(3, F_SETFD, FD_CLOEXEC);
  if (exitToken >= 0) fcntl(4, F_SETFD, FD_CLOEXEC);

  // A handler (not SIG_DFL) is what makes the kernel deliver signals to a namespace init at all; we
  // keep them blocked and collect them with sigwaitinfo.
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  struct sigaction sa {};
  sa.sa_handler = Noop;
  sigfillset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; sig++) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    sigaction(sig, &sa, nullptr);
  }

  // Last thing before the agent: the filter denies nothing clove-init needs from here on. It checks
  // that NO_NEW_PRIVS was set by the sandbox before we were exec'd and refuses to run otherwise.
  if (seccomp) {
    clove::SeccompResult r = clove::InstallAgentSeccomp();
    if (r.err != 0) {
      SendError(r.what, r.err);
      return 127;
    }
  }

  if (park) {
    Record parked{};
    parked.kind = clove::kRecordParked;
    Send(parked);
    for (;;) {
      siginfo_t si;
      int sig = sigwaitinfo(&all, &si);
      if (sig < 0 || sig == SIGCHLD) continue;
      if (sig == SIGUSR1) break;
      return 128 + sig;
    }
    if (outlive) prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
  }

  volatile int execErr = 0;
  pid_t agent = vfork();
  if (agent == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(agentFile, agentArgv, envp);
    execErr = errno;
    _exit(127);
  }
  if (agent < 0) {
    SendError("fork(agent)", errno);
    return 127;
  }
  if (execErr != 0) {
    SendError("execve", execErr);
    waitpid(agent, nullptr, 0);
    return 127;
  }
  Record started{};
  started.kind = clove::kRecordStarted;
  started.value = agent;
  if (park) {
    started.err = (int32_t)exitToken;
    Send(started, 4);
  } else {
    Send(started);
  }
  // With an exit token the exit goes on the kernel's shared pipe (fd 4): fd 3 is not needed any more,
  // and the kernel closed its end of it.
  if (exitToken >= 0) close(3);
  const bool nsInit = getpid() == 1;

  for (;;) {
    siginfo_t si;
    int sig = sigwaitinfo(&all, &si);
    if (sig < 0) continue;
    if (sig == SIGCHLD) {
      int status;
      pid_t p;
      while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
        if (p != agent) continue;
        Record r{};
        r.kind = clove::kRecordExited;
        r.value = status;
        if (exitToken >= 0) {
          r.err = (int32_t)exitToken;
          Send(r, 4);
        } else {
          Send(r);
        }
        // Our exit kills whatever the agent left behind in the namespace.
        if (WIFEXITED(status)) return WEXITSTATUS(status);
        return 128 + WTERMSIG(status);
      }
      continue;
    }
    // Forward to every process of the namespace except ourselves (kill(-1) from a namespace init). Outside
    // a PID namespace kill(-1) would hit every process of the uid, so only the agent gets it then.
    kill(nsInit ? -1 : agent, sig);
  }
}
