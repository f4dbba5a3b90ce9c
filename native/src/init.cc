// clove-init: PID 1 of an agent's PID namespace.
//
// Why it exists: the PID-namespace init ignores every signal it has no handler for, even from the
// kernel daemon (so a plain agent as PID 1 would shrug off SIGTERM), and orphans are re-parented to it
// (so someone must reap them). clove-init runs with the agent's credentials (the sandbox dropped them
// before exec'ing us), forks the agent, forwards catchable signals to every process of the namespace
// and reports the agent's exit status on fd 3 before exiting, which tears the namespace down.
//
// Usage (exec'd by the addon, never by hand): clove-init <agent file> <agent argv...>
// fd 3 = status pipe to the kernel (records of native/src/plan.h).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "plan.h"

using clove::Record;

static void Send(const Record& r) {
  ssize_t n;
  do n = write(3, &r, sizeof(r)); while (n < 0 && errno == EINTR);
}

static void SendError(const char* what, int err) {
  Record r{};
  r.kind = clove::kRecordError;
  r.err = err;
  strncpy(r.what, what, sizeof(r.what) - 1);
  Send(r);
}

static void Noop(int) {}

int main(int argc, char** argv, char** envp) {
  if (argc < 3) return 127;
  // Not dumpable: the agent (same uid) may not ptrace us or forge records through our fd 3.
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  // If the kernel daemon dies, its agents die with it instead of running unsupervised.
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  fcntl(3, F_SETFD, FD_CLOEXEC);

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

  volatile int execErr = 0;
  pid_t agent = vfork();
  if (agent == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[1], argv + 2, envp);
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
  Send(started);
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
        Send(r);
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
