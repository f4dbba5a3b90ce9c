// execInAgent(): start a command INSIDE a running agent's sandbox (EXEC), never in the kernel process.
// resolvePaths(): realpath(3) of paths as a process whose root is `root` sees them (the agent's view).
// createPipe(): pipe2(O_CLOEXEC), for the command's stdio.
//
// How a command enters the agent (see docs/sandbox.md "EXEC"):
//
//   Node ──clone3──> E (the "entering" child: kernel pid namespace, born in / moved into the agent's
//                      cgroups, then setns(pidfd of the agent's clove-init, its namespaces))
//                    E ──clone3(CLONE_PARENT)──> C (the command: born in the agent's PID namespace,
//                      because setns(CLONE_NEWPID) only applies to children; its parent is Node)
//                    E exits; C: setsid, child subreaper, stdio = the pipes, every other fd closed,
//                      the agent's rlimits, no capabilities, NO_NEW_PRIVS, the agent's uid/gid, chdir,
//                      the agents' seccomp filter when the agent has it, execve.
//
// C is Node's child (CLONE_PARENT), so it is reaped through a pidfd like any spawned agent (the Child
// handle of spawn.cc). In root mode E and C share Node's address space until C execs (CLONE_VM |
// CLONE_VFORK twice, as spawn() does): no page-table copy of Node, and Node waits the few hundred
// microseconds until C exec'd. Joining a user namespace (rootless mode) needs an unshared mm, so there E
// is a fork-style clone3. Between clone and exec only raw syscalls run (child.cc's rules): no
// allocation, no locks, no C++ exceptions; everything is prepared here before the clone.
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "clone3.h"
#include "errors.h"
#include "exports.h"
#include "fd.h"
#include "handle.h"
#include "options.h"
#include "plan.h"
#include "rawchild.h"
#include "proc.h"
#include "seccomp.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#ifndef RESOLVE_NO_MAGICLINKS
#define RESOLVE_NO_MAGICLINKS 0x02
#endif
#ifndef RESOLVE_IN_ROOT
#define RESOLVE_IN_ROOT 0x10
#endif
#ifndef PR_SET_CHILD_SUBREAPER
#define PR_SET_CHILD_SUBREAPER 36
#endif

namespace clove {

namespace {

// ---- options (options.h reads the fields) ----

std::vector<char*> Ptrs(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// ---- the plan: everything E and C need, prepared before the clone ----

struct EnterPlan {
  // E
  int nsFd = -1;                         // pidfd of the process whose namespaces are joined, -1 = none
  int nsFlags = 0;                       // CLONE_NEW* to join through it
  std::vector<std::string> cgroupProcs;  // v1 `tasks` files E writes itself into before anything else
  bool shareVm = false;                  // C is a CLONE_VM|CLONE_VFORK child of E (else fork-style)
  void* cStack = nullptr;
  size_t cStackSize = 0;
  // C
  std::string file;
  std::vector<std::string> argv, envp;
  std::string cwd;
  int stdinFd = -1, stdoutFd = -1, stderrFd = -1;
  int uid = -1, gid = -1;
  std::vector<RlimitItem> rlimits;
  bool seccomp = false;
  std::vector<char*> argvPtrs, envpPtrs, cgroupPtrs;
};

// ---- between clone and exec: raw syscalls only ----

int Lift(int fd, int statusFd, const char* what) {
  int out = fcntl(fd, F_DUPFD, 10);
  if (out < 0) Fail(statusFd, what, errno);
  return out;
}

// C: the command. Runs in the agent's namespaces (E joined them), as Node's child.
[[noreturn]] void CommandMain(const EnterPlan& p, int statusFd) {
  // Its own session and process group (a terminal's signals never reach it; the kernel signals the
  // group), and the reaper of its own orphans, so its whole tree stays below it until it exits.
  if (setsid() < 0) Fail(statusFd, "setsid", errno);
  if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) Fail(statusFd, "prctl(PR_SET_CHILD_SUBREAPER)", errno);
  int in = Lift(p.stdinFd, statusFd, "fcntl(stdin, F_DUPFD)");
  int out = Lift(p.stdoutFd, statusFd, "fcntl(stdout, F_DUPFD)");
  int err = Lift(p.stderrFd, statusFd, "fcntl(stderr, F_DUPFD)");
  int st = Lift(statusFd, statusFd, "fcntl(status, F_DUPFD)");
  statusFd = st;
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0 || dup2(st, 3) < 0) Fail(statusFd, "dup2", errno);
  statusFd = 3;
  // Nothing of the kernel's reaches the command: the pipes are its stdio, the status pipe goes at exec.
  if (syscall(SYS_close_range, 4U, ~0U, 0U) != 0) Fail(statusFd, "close_range", errno);
  if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0) Fail(statusFd, "fcntl(status, FD_CLOEXEC)", errno);
  for (const auto& r : p.rlimits) {
    if (prlimit(0, (__rlimit_resource)r.resource, &r.limit, nullptr) != 0) Fail(statusFd, "prlimit", errno);
  }
  DropPrivileges(p.uid, p.gid, /*noNewPrivs=*/true, /*dropCaps=*/true, statusFd);
  // After the uid change (which clears it): the command dies with the kernel, like the agents do.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) Fail(statusFd, "prctl(PR_SET_PDEATHSIG)", errno);
  // As the agent: a directory its uid cannot enter is refused here, with EACCES.
  if (chdir(p.cwd.c_str()) != 0) Fail(statusFd, "chdir", errno);
  if (p.seccomp) {
    SeccompResult r = InstallAgentSeccomp();
    if (r.err != 0) Fail(statusFd, r.what ? r.what : "seccomp", r.err);
  }
  execve(p.file.c_str(), p.argvPtrs.data(), p.envpPtrs.data());
  Fail(statusFd, "execve", errno);
}

struct CommandCtx {
  const EnterPlan* plan;
  int statusFd;
};

int CommandTrampoline(void* arg) {
  auto* c = static_cast<CommandCtx*>(arg);
  CommandMain(*c->plan, c->statusFd);
}

// E: joins the agent's cgroups and namespaces, starts C, reports C's pid (in the kernel's PID
// namespace, which E is still in) and exits.
int EnterMain(const EnterPlan& p, int statusFd) {
  ResetSignals();
  // v1 cgroups first (v2: E was born in the agent's cgroup), while the host's cgroup file system is
  // still the one mounted at these paths (in the agent's mount namespace it is read-only).
  for (size_t i = 0; p.cgroupPtrs[i]; i++) {
    int fd = open(p.cgroupPtrs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0) Fail(statusFd, "open(cgroup tasks)", errno);
    if (write(fd, "0", 1) != 1) Fail(statusFd, "write(cgroup tasks)", errno);
    close(fd);
  }
  if (p.nsFd >= 0 && p.nsFlags != 0 && setns(p.nsFd, p.nsFlags) != 0) Fail(statusFd, "setns(agent namespaces)", errno);
  CloneArgs args{};
  args.flags = CLONE_PARENT;
  args.exit_signal = 0;  // CLONE_PARENT: the command inherits E's exit signal (SIGCHLD, to Node)
  long pid;
  CommandCtx ctx{&p, statusFd};
  if (p.shareVm) {
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = reinterpret_cast<uint64_t>(p.cStack);
    args.stack_size = p.cStackSize;
    pid = CloneVm(&args, CommandTrampoline, &ctx);
    if (pid < 0) Fail(statusFd, "clone3(command)", (int)-pid);
  } else {
    pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) CommandMain(p, statusFd);
    if (pid < 0) Fail(statusFd, "clone3(command)", errno);
  }
  Record r{};
  r.kind = kRecordStarted;
  r.value = (int32_t)pid;
  ssize_t n;
  do n = write(statusFd, &r, sizeof(r)); while (n < 0 && errno == EINTR);
  return 0;
}

struct EnterCtx {
  const EnterPlan* plan;
  int statusFd;
};

int EnterTrampoline(void* arg) {
  auto* c = static_cast<EnterCtx*>(arg);
  return EnterMain(*c->plan, c->statusFd);
}

// ---- parent side ----

void Reap(int pidfd) {
  siginfo_t si;
  while (waitid((idtype_t)P_PIDFD, pidfd, &si, WEXITED) < 0 && errno == EINTR) {
  }
}

void KillAndReapPid(pid_t pid) {
  kill(pid, SIGKILL);  // our own unreaped child: the pid cannot have been reused
  siginfo_t si;
  while (waitid(P_PID, pid, &si, WEXITED) < 0 && errno == EINTR) {
  }
}

int NsFlag(Napi::Env env, const std::string& name) {
  if (name == "user") return CLONE_NEWUSER;
  if (name == "mnt") return CLONE_NEWNS;
  if (name == "pid") return CLONE_NEWPID;
  if (name == "uts") return CLONE_NEWUTS;
  if (name == "ipc") return CLONE_NEWIPC;
  if (name == "net") return CLONE_NEWNET;
  if (name == "cgroup") return CLONE_NEWCGROUP;
  throw OptionError(env, "namespaces: unknown namespace " + name);
}

using EnterStack = MappedStack<64 * 1024>;
using CommandStack = MappedStack<256 * 1024>;

struct EnterJob;
void CompleteEnter(Napi::Env env, Napi::Function, std::nullptr_t*, EnterJob* raw);
using EnterTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, EnterJob, CompleteEnter>;

// One EXEC start: its plan from the options (JS thread), the clone and the wait for the command's exec
// (the enter thread), its Child or its error (JS thread again).
struct EnterJob {
  EnterPlan p;
  int nsPid = 0;
  std::string cgroupDir;
  int timeoutMs = 0;
  // the outcome
  pid_t cmd = -1;
  int failErr = 0;
  std::string failWhat;
  Napi::Promise::Deferred deferred;
  EnterTsfn tsfn;
  explicit EnterJob(Napi::Env env) : deferred(Napi::Promise::Deferred::New(env)) {}
};

// Clones E (and through it the command C) and waits until C exec'd: on the enter thread, never on
// Node's loop. Sets job->cmd, or job->failErr and failWhat naming the failing step.
void RunEnter(EnterJob* job) {
  EnterPlan& p = job->p;
  const int nsPid = job->nsPid;
  const std::string& cgroupDir = job->cgroupDir;
  const int timeoutMs = job->timeoutMs;
  auto fail = [job](const char* what, int err) {
    job->failWhat = what;
    job->failErr = err;
  };

  // The agent's clove-init, pinned: while its pidfd is open the namespaces it names cannot be another
  // process's, and setns through it fails (ESRCH) once it is gone.
  UniqueFd nsFd;
  if (nsPid > 0 && p.nsFlags != 0) {
    nsFd.Reset((int)syscall(SYS_pidfd_open, nsPid, 0));
    if (!nsFd.Valid()) return fail("pidfd_open(agent)", errno);
    p.nsFd = nsFd.Get();
  }
  UniqueFd cg;
  if (!cgroupDir.empty()) {
    cg.Reset(open(cgroupDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg.Valid()) return fail("open(cgroup dir)", errno);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return fail("pipe2(status)", errno);
  UniqueFd rd(fds[0]), wr(fds[1]);

  // Entering a user namespace needs an mm of one's own (mm_users == 1): fork-style there.
  p.shareVm = !(p.nsFlags & CLONE_NEWUSER) && CloneVmSupported();
  EnterStack eStack;
  CommandStack cStack;
  if (p.shareVm && (!eStack.Base() || !cStack.Base())) return fail("mmap(child stack)", errno);
  p.cStack = cStack.Base();
  p.cStackSize = CommandStack::kSize;

  int pidfdRaw = -1;
  CloneArgs args{};
  args.flags = CLONE_PIDFD | (cg.Valid() ? CLONE_INTO_CGROUP : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfdRaw);
  args.exit_signal = SIGCHLD;
  args.cgroup = cg.Valid() ? (uint64_t)cg.Get() : 0;
  EnterCtx ctx{&p, wr.Get()};

  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid;
  int cloneErr = 0;
  if (p.shareVm) {
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = reinterpret_cast<uint64_t>(eStack.Base());
    args.stack_size = EnterStack::kSize;
    pid = CloneVm(&args, EnterTrampoline, &ctx);
    if (pid < 0) {
      cloneErr = (int)-pid;
      pid = -1;
    }
  } else {
    pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) _exit(EnterMain(p, wr.Get()));
    cloneErr = errno;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return fail("clone3(enter)", cloneErr);
  UniqueFd enterFd(pidfdRaw);
  wr.Reset();

  // Records until EOF: E's kRecordStarted (the command's pid), or an error of E or of the command. EOF
  // comes once E exited and the command exec'd (its copy is O_CLOEXEC) or died. With CLONE_VFORK all of
  // it is already in the pipe.
  pid_t cmd = -1;
  int failErr = 0;
  std::string failWhat;
  int64_t deadline = NowMs() + timeoutMs;
  for (;;) {
    struct pollfd pfd {rd.Get(), POLLIN, 0};
    int left = (int)(deadline - NowMs());
    int rc = left > 0 ? poll(&pfd, 1, left) : 0;
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) {
      failErr = rc == 0 ? ETIMEDOUT : errno;
      failWhat = rc == 0 ? "exec (the command did not start in time)" : "poll(status pipe)";
      syscall(SYS_pidfd_send_signal, enterFd.Get(), SIGKILL, nullptr, 0);
      break;
    }
    Record r;
    ssize_t n = read(rd.Get(), &r, sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) break;
    if (n != (ssize_t)sizeof(r)) {
      failErr = n < 0 ? errno : EPROTO;
      failWhat = "read(status pipe)";
      break;
    }
    if (r.kind == kRecordStarted) cmd = r.value;
    if (r.kind == kRecordError && !failErr) {
      r.what[sizeof(r.what) - 1] = 0;
      failErr = r.err;
      failWhat = r.what;
    }
  }
  Reap(enterFd.Get());
  if (!failErr && cmd <= 0) {
    failErr = ECHILD;
    failWhat = "clone3(command) (no pid reported)";
  }
  if (failErr) {
    if (cmd > 0) KillAndReapPid(cmd);
    job->failWhat = failWhat;
    job->failErr = failErr;
    return;
  }
  job->cmd = cmd;
}

// The enter thread: EXEC starts, one after another. It never ends: the thread that clones is the
// parent of E, and through CLONE_PARENT of the command, whose PR_SET_PDEATHSIG would fire if it ended.
struct EnterQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<EnterJob*> jobs;
  bool started = false;
};
// Never destroyed: the detached enter thread waits on it until the process exits (destroying a
// condition variable a thread waits on would hang the process's exit).
EnterQueue* enterQueue = new EnterQueue;

void EnterLoop() {
  EnterQueue& q = *enterQueue;
  for (;;) {
    EnterJob* job;
    {
      std::unique_lock<std::mutex> lock(q.mu);
      q.cv.wait(lock, [&q] { return !q.jobs.empty(); });
      job = q.jobs.front();
      q.jobs.pop_front();
    }
    try {
      RunEnter(job);
    } catch (...) {
      job->failErr = ENOMEM;
      job->failWhat = "exec thread";
    }
    EnterTsfn tsfn = job->tsfn;  // CompleteEnter frees the job
    if (tsfn.BlockingCall(job) != napi_ok) {
      if (job->cmd > 0) KillAndReapPid(job->cmd);
      delete job;
    }
    tsfn.Release();
  }
}

// Starts the enter thread once, with every signal blocked (Node's handlers must not run on it).
void EnsureEnterThread() {
  std::lock_guard<std::mutex> lock(enterQueue->mu);
  if (enterQueue->started) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  std::thread(EnterLoop).detach();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  enterQueue->started = true;
}

// On Node's loop: the command as a Child (watched through its pidfd), or the failing step's SysError.
void CompleteEnter(Napi::Env env, Napi::Function, std::nullptr_t*, EnterJob* raw) {
  std::unique_ptr<EnterJob> job(raw);
  if (!env) {  // the environment is going away
    if (job->cmd > 0) KillAndReapPid(job->cmd);
    return;
  }
  Napi::HandleScope scope(env);
  if (job->failErr) {
    job->deferred.Reject(SysError(env, job->failWhat, job->failErr).Value());
    return;
  }
  // Our own child, not reaped yet: the pid names it until we wait for it.
  UniqueFd cmdFd((int)syscall(SYS_pidfd_open, job->cmd, 0));
  if (!cmdFd.Valid()) {
    int e = errno;
    KillAndReapPid(job->cmd);
    job->deferred.Reject(SysError(env, "pidfd_open(command)", e).Value());
    return;
  }
  try {
    job->deferred.Resolve(AdoptChild(env, job->cmd, std::move(cmdFd), UniqueFd(), -1));
  } catch (const Napi::Error& e) {
    job->deferred.Reject(e.Value());
  }
}


Napi::Value ExecInAgent(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw OptionError(env, "execInAgent(options: object)");
  Napi::Object o = info[0].As<Napi::Object>();
  auto job = std::make_unique<EnterJob>(env);
  EnterPlan& p = job->p;
  job->nsPid = (int)Int(o, "nsPid");
  const int nsPid = job->nsPid;
  for (const auto& n : StrArray(o, "namespaces")) p.nsFlags |= NsFlag(env, n);
  job->cgroupDir = Str(o, "cgroupDir");
  p.cgroupProcs = StrArray(o, "cgroupProcs");
  p.file = Str(o, "file");
  p.argv = StrArray(o, "argv");
  p.envp = StrArray(o, "env");
  p.cwd = Str(o, "cwd");
  p.stdinFd = (int)Int(o, "stdinFd");
  p.stdoutFd = (int)Int(o, "stdoutFd");
  p.stderrFd = (int)Int(o, "stderrFd");
  p.uid = (int)Int(o, "uid");
  p.gid = (int)Int(o, "gid");
  p.seccomp = Bool(o, "seccomp");
  job->timeoutMs = (int)Int(o, "startTimeoutMs");
  Napi::Value rl = o.Get("rlimits");
  if (!rl.IsArray()) throw OptionError(env, "rlimits must be an array of [resource, soft, hard]");
  Napi::Array ra = rl.As<Napi::Array>();
  for (uint32_t i = 0; i < ra.Length(); i++) {
    Napi::Value e = ra.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 3) throw OptionError(env, "rlimits entries are [resource, soft, hard]");
    Napi::Array t = e.As<Napi::Array>();
    for (uint32_t k = 0; k < 3; k++)
      if (!t.Get(k).IsNumber()) throw OptionError(env, "rlimits entries are [resource, soft, hard]");
    auto lim = [&](uint32_t k) -> rlim_t {
      double d = t.Get(k).As<Napi::Number>().DoubleValue();
      return d < 0 ? RLIM_INFINITY : (rlim_t)d;
    };
    p.rlimits.push_back({t.Get(0u).As<Napi::Number>().Int32Value(), {lim(1), lim(2)}});
  }
  if (p.file.empty() || p.file[0] != '/') throw OptionError(env, "file must be an absolute path");
  if (p.argv.empty()) throw OptionError(env, "argv must not be empty");
  if (p.cwd.empty() || p.cwd[0] != '/') throw OptionError(env, "cwd must be an absolute path");
  if (p.stdinFd < 0 || p.stdoutFd < 0 || p.stderrFd < 0) throw OptionError(env, "stdinFd, stdoutFd and stderrFd must be open fds");
  if (p.nsFlags != 0 && nsPid <= 0) throw OptionError(env, "namespaces require nsPid");
  p.argvPtrs = Ptrs(p.argv);
  p.envpPtrs = Ptrs(p.envp);
  p.cgroupPtrs = Ptrs(p.cgroupProcs);

  Napi::Promise promise = job->deferred.Promise();
  EnsureEnterThread();
  EnterJob* raw = job.get();
  raw->tsfn = EnterTsfn::New(env, "clove_exec", 0, 1);
  {
    std::lock_guard<std::mutex> lock(enterQueue->mu);
    enterQueue->jobs.push_back(raw);
  }
  enterQueue->cv.notify_one();
  job.release();  // the enter thread owns it, then CompleteEnter
  return promise;
}

// ---- resolvePaths ----

struct Resolved {
  int err = 0;
  std::string what;
  std::string path;
  struct stat st {};
};

struct OpenHow {
  uint64_t flags, mode, resolve;
};

// A canonical path (no symlink, "" for the root) opened from the root with RESOLVE_IN_ROOT: never
// leaves the root, whatever changed since it was found.
int OpenIn(int root, const std::string& rel) {
  OpenHow how{(uint64_t)(O_PATH | O_NOFOLLOW | O_CLOEXEC), 0, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
  return (int)syscall(SYS_openat2, root, rel.empty() ? "." : rel.c_str(), &how, sizeof(how));
}

// Whether the mode bits of `st` grant search (x) to uid/gid (no supplementary groups: the agent has none).
bool Searchable(const struct stat& st, int uid, int gid) {
  if (uid < 0) return true;
  unsigned bits = (unsigned)st.st_uid == (unsigned)uid   ? (st.st_mode >> 6) & 7
                  : (unsigned)st.st_gid == (unsigned)gid ? (st.st_mode >> 3) & 7
                                                         : st.st_mode & 7;
  return (bits & 1) != 0;
}

// Walks paths below one root. Directories already walked (by their canonical path) keep an O_PATH fd
// and their stat, symlinks their target, so the paths of one call that share a prefix (a name looked up
// in every PATH entry) cost one openat + fstat per new component.
class Walker {
 public:
  Walker(int root, int uid, int gid) : root_(root), uid_(uid), gid_(gid) {}

  // realpath of the absolute `in` below the root. A component is opened by name (openat, O_NOFOLLOW:
  // one name cannot lead anywhere else) from its directory's fd; `..` and a symlink's target restart
  // from canonical paths, opened with RESOLVE_IN_ROOT, so neither ever leaves the root. With uid >= 0
  // every directory looked up in must be searchable by uid/gid (EACCES otherwise), as it would be for
  // the agent's own lookup: the kernel's privileges reveal nothing its uid could not see.
  Resolved Resolve(const std::string& in) {
    Resolved out;
    std::vector<std::string> todo;  // components still to walk, last one first
    Push(todo, in);
    std::string cur;  // canonical, "" for the root; components joined by "/", no leading slash
    int links = 0;
    while (!todo.empty()) {
      std::string c = std::move(todo.back());
      todo.pop_back();
      if (c == ".") continue;
      const Dir* dir = DirOf(cur, out);
      if (!dir) return out;
      if (!Searchable(dir->st, uid_, gid_)) return Fail(out, EACCES, "search(/" + cur + ")");
      if (c == "..") {
        size_t k = cur.rfind('/');
        cur = k == std::string::npos ? "" : cur.substr(0, k);
        continue;
      }
      std::string next = cur.empty() ? c : cur + "/" + c;
      if (dirs_.count(next)) {  // walked before in this call
        cur = std::move(next);
        continue;
      }
      auto link = links_.find(next);
      if (link != links_.end()) {
        if (++links > 40) return Fail(out, ELOOP, "readlink(/" + next + ")");
        if (!link->second.empty() && link->second[0] == '/') cur = "";
        Push(todo, link->second);
        continue;
      }
      UniqueFd fd(openat(dir->fd.Get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      struct stat st;
      if (!fd.Valid() || fstat(fd.Get(), &st) != 0) return Fail(out, errno, "openat(/" + next + ")");
      if (S_ISLNK(st.st_mode)) {
        if (++links > 40) return Fail(out, ELOOP, "readlink(/" + next + ")");
        char buf[4096];
        ssize_t n = readlinkat(fd.Get(), "", buf, sizeof(buf));
        if (n < 0 || n >= (ssize_t)sizeof(buf)) return Fail(out, n < 0 ? errno : ENAMETOOLONG, "readlink(/" + next + ")");
        std::string target(buf, (size_t)n);
        links_.emplace(next, target);
        if (!target.empty() && target[0] == '/') cur = "";
        Push(todo, target);
        continue;
      }
      if (S_ISDIR(st.st_mode)) {
        if (!dirs_.count(next)) dirs_.emplace(next, Dir{std::move(fd), st});
      } else if (!todo.empty()) {
        return Fail(out, ENOTDIR, "openat(/" + next + ")");
      } else {
        out.st = st;
      }
      cur = std::move(next);
    }
    if (auto it = dirs_.find(cur); it != dirs_.end()) {
      out.st = it->second.st;
    } else if (cur.empty()) {
      const Dir* d = DirOf(cur, out);
      if (!d) return out;
      out.st = d->st;
    }
    out.path = "/" + cur;
    return out;
  }

 private:
  struct Dir {
    UniqueFd fd;
    struct stat st;
  };

  static void Push(std::vector<std::string>& todo, const std::string& s) {
    std::vector<std::string> parts;
    size_t i = 0;
    while (i <= s.size()) {
      size_t j = s.find('/', i);
      if (j == std::string::npos) j = s.size();
      if (j > i) parts.push_back(s.substr(i, j - i));
      i = j + 1;
    }
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) todo.push_back(*it);
  }

  static Resolved& Fail(Resolved& out, int err, std::string what) {
    out.err = err;
    out.what = std::move(what);
    return out;
  }

  // The directory at canonical `cur`, from the cache or opened from the root.
  const Dir* DirOf(const std::string& cur, Resolved& out) {
    auto it = dirs_.find(cur);
    if (it != dirs_.end()) return &it->second;
    UniqueFd fd(OpenIn(root_, cur));
    struct stat st;
    if (!fd.Valid() || fstat(fd.Get(), &st) != 0) {
      Fail(out, errno, "openat2(/" + cur + ")");
      return nullptr;
    }
    if (!S_ISDIR(st.st_mode)) {
      Fail(out, ENOTDIR, "openat2(/" + cur + ")");
      return nullptr;
    }
    return &dirs_.emplace(cur, Dir{std::move(fd), st}).first->second;
  }

  int root_, uid_, gid_;
  std::map<std::string, Dir> dirs_;           // canonical path -> directory walked
  std::map<std::string, std::string> links_;  // canonical path -> symlink target read
};

Napi::Value ResolvePaths(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 4 || !info[0].IsString() || !info[1].IsArray() || !info[2].IsNumber() || !info[3].IsNumber())
    throw OptionError(env, "resolvePaths(root: string, paths: string[], uid: number, gid: number)");
  int uid = info[2].As<Napi::Number>().Int32Value();
  int gid = info[3].As<Napi::Number>().Int32Value();
  std::string root = info[0].As<Napi::String>().Utf8Value();
  if (root.find('\0') != std::string::npos || root.empty() || root[0] != '/') throw OptionError(env, "root must be an absolute path");
  Napi::Array in = info[1].As<Napi::Array>();
  std::vector<std::string> paths;
  for (uint32_t i = 0; i < in.Length(); i++) {
    Napi::Value v = in.Get(i);
    if (!v.IsString()) throw OptionError(env, "paths must be an array of strings");
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos || s.empty() || s[0] != '/') throw OptionError(env, "paths must be absolute");
    paths.push_back(std::move(s));
  }
  // Follows the magic link of /proc/<pid>/root: the agent's root in the agent's mount namespace.
  UniqueFd rootFd(open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!rootFd.Valid()) throw SysError(env, "open(root)", errno);
  Walker walker(rootFd.Get(), uid, gid);
  Napi::Array out = Napi::Array::New(env, paths.size());
  for (uint32_t i = 0; i < paths.size(); i++) {
    Resolved r = walker.Resolve(paths[i]);
    Napi::Object e = Napi::Object::New(env);
    if (r.err) {
      e.Set("errno", Napi::Number::New(env, r.err));
      e.Set("code", Napi::String::New(env, ErrnoName(r.err)));
      e.Set("syscall", Napi::String::New(env, r.what));
    } else {
      e.Set("path", Napi::String::New(env, r.path));
      const char* type = S_ISREG(r.st.st_mode) ? "file" : S_ISDIR(r.st.st_mode) ? "dir" : "other";
      e.Set("type", Napi::String::New(env, type));
      e.Set("mode", Napi::Number::New(env, r.st.st_mode & 07777));
      e.Set("uid", Napi::Number::New(env, r.st.st_uid));
      e.Set("gid", Napi::Number::New(env, r.st.st_gid));
    }
    out.Set(i, e);
  }
  return out;
}

// pipe2(O_CLOEXEC): [read end, write end]; the caller owns both. For a command's stdio: the kernel's end
// becomes a libuv pipe stream (net.Socket), never a threadpool read.
Napi::Value CreatePipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw SysError(env, "pipe2", errno);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, Napi::Number::New(env, fds[0]));
  out.Set(1u, Napi::Number::New(env, fds[1]));
  return out;
}

}  // namespace

void InitEnter(Napi::Env env, Napi::Object exports) {
  exports.Set("createPipe", Napi::Function::New(env, CreatePipe, "createPipe"));
  exports.Set("execInAgent", Napi::Function::New(env, ExecInAgent, "execInAgent"));
  exports.Set("resolvePaths", Napi::Function::New(env, ResolvePaths, "resolvePaths"));
}

}  // namespace clove
