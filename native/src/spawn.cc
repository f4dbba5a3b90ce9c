// spawn(): clone3 into new namespaces (and, on cgroup v2, straight into the agent's cgroup), wait until
// the agent exec'd, and hand back a Child that keeps one fd while the agent runs: the status pipe under
// clove-init, else the pidfd. Exit is observed on libuv's loop (EOF of the pipe, or the pidfd readable)
// and the child reaped with waitid by pid or pidfd, never by "any child", so there is neither a SIGCHLD
// race with libuv nor a PID-reuse window (see Child).
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <string>
#include <unordered_map>

#include <sys/mman.h>

#include "clone3.h"
#include "errors.h"
#include "exports.h"
#include "fd.h"
#include "handle.h"
#include "options.h"
#include "plan.h"
#include "proc.h"


namespace clove {
namespace {

// ---- option parsing beyond options.h ----

// Like StrArray, but an absent field reads as [] (callers built before the field existed keep working).
std::vector<std::string> OptStrArray(const Napi::Object& o, const char* key) {
  if (o.Get(key).IsUndefined()) return {};
  return StrArray(o, key);
}

// idmapped: [{path, usernsFd}]. An absent field reads as [] so that callers built before the field
// existed keep working; anything else must have the declared shape.
std::vector<IdmappedMount> IdmappedArray(const Napi::Object& o) {
  Napi::Value v = o.Get("idmapped");
  std::vector<IdmappedMount> out;
  if (v.IsUndefined()) return out;
  const char* shape = "idmapped must be an array of {path: string, usernsFd: number}";
  if (!v.IsArray()) throw OptionError(o.Env(), shape);
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) throw OptionError(o.Env(), shape);
    Napi::Object m = e.As<Napi::Object>();
    if (!m.Get("path").IsString() || !m.Get("usernsFd").IsNumber()) throw OptionError(o.Env(), shape);
    IdmappedMount im;
    im.path = Str(m, "path");
    im.usernsFd = (int)Int(m, "usernsFd");
    out.push_back(std::move(im));
  }
  return out;
}

Plan ParsePlan(const Napi::Object& o) {
  Napi::Env env = o.Env();
  Plan p;
  p.file = Str(o, "file");
  p.argv = StrArray(o, "argv");
  p.envp = StrArray(o, "env");
  p.cwd = Str(o, "cwd");
  p.initPath = Str(o, "initPath");
  p.stdoutFd = (int)Int(o, "stdoutFd");
  if (Bool(o, "newPid")) p.cloneFlags |= CLONE_NEWPID;
  if (Bool(o, "newMount")) p.cloneFlags |= CLONE_NEWNS;
  if (Bool(o, "newUts")) p.cloneFlags |= CLONE_NEWUTS;
  if (Bool(o, "newIpc")) p.cloneFlags |= CLONE_NEWIPC;
  if (Bool(o, "newNet")) p.cloneFlags |= CLONE_NEWNET;
  if (Bool(o, "newCgroup")) p.cloneFlags |= CLONE_NEWCGROUP;
  p.newUser = Bool(o, "newUser");
  if (p.newUser) p.cloneFlags |= CLONE_NEWUSER;
  p.netnsFd = (int)Int(o, "netnsFd");
  p.hostname = Str(o, "hostname");
  p.cgroupProcs = StrArray(o, "cgroupProcs");
  p.readOnlyRoot = Bool(o, "readOnlyRoot");
  p.mountProc = Bool(o, "mountProc");
  p.tmpfsOptions = Str(o, "tmpfsOptions");
  p.writable = StrArray(o, "writable");
  p.masks = StrArray(o, "masks");
  p.keep = StrArray(o, "keep");
  p.idmapped = IdmappedArray(o);
  p.hideFiles = OptStrArray(o, "hideFiles");
  p.setsid = Bool(o, "setsid");
  p.noNewPrivs = Bool(o, "noNewPrivs");
  p.dropCaps = Bool(o, "dropCaps");
  // Absent reads as false (callers built before the field existed).
  p.seccomp = o.Get("seccomp").IsUndefined() ? false : Bool(o, "seccomp");
  p.uid = (int)Int(o, "uid");
  p.gid = (int)Int(o, "gid");
  Napi::Value rl = o.Get("rlimits");
  if (!rl.IsArray()) throw OptionError(env, "rlimits must be an array of [resource, soft, hard]");
  Napi::Array ra = rl.As<Napi::Array>();
  for (uint32_t i = 0; i < ra.Length(); i++) {
    Napi::Value e = ra.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 3) throw OptionError(env, "rlimits entries are [resource, soft, hard]");
    Napi::Array t = e.As<Napi::Array>();
    auto lim = [&](uint32_t k) -> rlim_t {
      double d = t.Get(k).As<Napi::Number>().DoubleValue();
      return d < 0 ? RLIM_INFINITY : (rlim_t)d;
    };
    p.rlimits.push_back({t.Get(0u).As<Napi::Number>().Int32Value(), {lim(1), lim(2)}});
  }
  if (p.argv.empty()) throw OptionError(env, "argv must not be empty");
  if (p.stdoutFd < 0) throw OptionError(env, "stdoutFd must be an open fd");
  // A cover that would silently not be applied is an error.
  if (!p.hideFiles.empty() && !(p.cloneFlags & CLONE_NEWNS)) throw OptionError(env, "hideFiles requires newMount");
  // clove-init installs the filter; without it nothing would.
  if (p.seccomp && p.initPath.empty()) throw OptionError(env, "seccomp requires initPath");
  if (p.seccomp && !p.noNewPrivs) throw OptionError(env, "seccomp requires noNewPrivs");
  p.Finalize();
  return p;
}

// ---- helpers on the parent side ----

void KillAndReap(int pidfd) {
  syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
  siginfo_t si;
  while (waitid((idtype_t)P_PIDFD, pidfd, &si, WEXITED) < 0 && errno == EINTR) {
  }
}

// The child's stack for CloneVm.
using ChildStack = MappedStack<256 * 1024>;

struct ChildCtx {
  const Plan* plan;
  int statusFd;
  int syncFd;
};

int ChildTrampoline(void* p) {
  auto* c = static_cast<ChildCtx*>(p);
  ChildMain(*c->plan, c->statusFd, c->syncFd);
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace

// ---- The reaper: exits of spawned agents without a descriptor per agent ----
//
// A kernel of 10,000 agents must not hold 10,000 more fds (its RLIMIT_NOFILE may be 20,000 and each
// agent's connection takes one already), so spawn() keeps none. Exits are found on SIGCHLD (a libuv
// signal watcher beside libuv's own): waitid(P_ALL, WNOWAIT) shows an exited child without reaping it;
// ours (in `children`) is reaped by pid, anything else is left to its owner (libuv waits only for the
// pids it spawned) and our children are then looked at one by one. Nothing but us reaps our children,
// so until we do, a child's pid is still its own (kill by pid is safe). clove-init reports the agent's
// own status on one pipe shared by all agents (records tagged with the spawn's token; it is each init's
// fd 4, close-on-exec for the agent and out of its reach since init is not dumpable), written before
// init exits, so it is in the pipe when init is reaped. One loop owns the reaper: the main thread's.

class Child;

struct Reaper {
  uv_loop_t* loop = nullptr;
  uv_signal_t signal;
  uv_poll_t poll;
  uv_timer_t timer;
  UniqueFd rd, wr;
  std::unordered_map<pid_t, Child*> children;  // spawned and not reaped yet
  std::unordered_map<int32_t, int> statuses;   // exit token -> the agent's wait status (until reaped)
  int32_t nextToken = 1;
  size_t watched = 0;  // children with a watch(): the loop stays alive while there are any
};

static Reaper* reaper = nullptr;

void ReapAll();

void DrainRecords() {
  Record buf[64];
  for (;;) {
    ssize_t n = read(reaper->rd.Get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    for (ssize_t i = 0; i < n / (ssize_t)sizeof(Record); i++)
      if (buf[i].kind == kRecordExited) reaper->statuses[buf[i].err] = buf[i].value;
  }
}

// Sets up the reaper on `env`'s loop before the first clone3, so that no exit can go unseen. Its
// handles live as long as the process.
void EnsureReaper(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
  if (reaper) {
    if (reaper->loop != loop) throw Napi::Error::New(env, "spawn() is available on one event loop per process");
    return;
  }
  auto* r = new Reaper;
  r->loop = loop;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    delete r;
    throw SysError(env, "pipe2(exit pipe)", errno);
  }
  r->rd.Reset(fds[0]);
  r->wr.Reset(fds[1]);
  // Room for many exits at once (a full pipe only makes inits wait); best effort.
  fcntl(fds[0], F_SETPIPE_SZ, 1 << 20);
  if (fcntl(fds[0], F_SETFL, O_NONBLOCK) != 0) {
    int err = errno;
    delete r;
    throw SysError(env, "fcntl(exit pipe, O_NONBLOCK)", err);
  }
  int rc = uv_signal_init(loop, &r->signal);
  if (rc != 0) {
    delete r;
    throw SysError(env, "uv_signal_init", -rc);
  }
  rc = uv_signal_start(&r->signal, [](uv_signal_t*, int) { ReapAll(); }, SIGCHLD);
  if (rc != 0) {
    // Nothing was spawned with it; the initialised handle is closed, and `r` freed, by the loop.
    r->signal.data = r;
    uv_close(reinterpret_cast<uv_handle_t*>(&r->signal), [](uv_handle_t* h) { delete static_cast<Reaper*>(h->data); });
    throw SysError(env, "uv_signal_start(SIGCHLD)", -rc);
  }
  uv_unref(reinterpret_cast<uv_handle_t*>(&r->signal));
  uv_poll_init(loop, &r->poll, fds[0]);
  uv_poll_start(&r->poll, UV_READABLE, [](uv_poll_t*, int, int) { DrainRecords(); });
  uv_unref(reinterpret_cast<uv_handle_t*>(&r->poll));
  // A backstop (SIGCHLDs coalesce, a foreign zombie may hide ours for a moment): one waitid every 2 s
  // costs nothing when idle.
  uv_timer_init(loop, &r->timer);
  uv_timer_start(&r->timer, [](uv_timer_t*) { ReapAll(); }, 2000, 2000);
  uv_unref(reinterpret_cast<uv_handle_t*>(&r->timer));
  reaper = r;
}

// ---- Child: one spawned agent (no fd), or a command with its pidfd (execInAgent) ----

class Child : public Napi::ObjectWrap<Child> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Child",
                       {InstanceAccessor<&Child::Pid>("pid"), InstanceAccessor<&Child::Exited>("exited"),
                        InstanceMethod<&Child::Kill>("kill"), InstanceMethod<&Child::Watch>("watch")});
  }

  explicit Child(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Child>(info) {}

  ~Child() {
    if (reaper && registered_) reaper->children.erase(pid_);
    if (timer_) uv_close(reinterpret_cast<uv_handle_t*>(timer_), FreeTimer);
  }

  // pidfd mode: the exit is watched on `pidfd`; `status` (may be empty) is read once at exit.
  void Adopt(pid_t pid, UniqueFd pidfd, UniqueFd status, int agentPid) {
    pid_ = pid;
    pidfd_ = std::move(pidfd);
    status_ = std::move(status);
    agentPid_ = agentPid;
  }

  // Reaper mode: a child of spawn(), found by ReapAll(); `token` keys its agent's exit record.
  void AdoptClone(pid_t pid, int32_t token, int agentPid) {
    pid_ = pid;
    token_ = token;
    agentPid_ = agentPid;
    clone_ = true;
    registered_ = true;
    reaper->children[pid] = this;
  }

  // ReapAll() reaped us: record it, deliver now if watched, else when watch() is called.
  void Reaped(const siginfo_t& si) {
    registered_ = false;
    reaped_ = true;
    si_ = si;
    auto it = reaper->statuses.find(token_);
    if (it != reaper->statuses.end()) {
      agentStatus_ = it->second;
      reaper->statuses.erase(it);
    }
    if (watching_) Deliver();
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pid_); }
  Napi::Value Exited(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), reaped_); }

  // kill(sig): to the child we cloned (the namespace init, or the agent itself when it runs without one),
  // through its pidfd, or by pid for spawn()'s: nothing but ReapAll() reaps it, so until `exited` the
  // pid is still its own. false when it is already gone; other failures throw.
  Napi::Value Kill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw OptionError(env, "kill(sig: number)");
    int sig = info[0].As<Napi::Number>().Int32Value();
    if (reaped_ || (!pidfd_.Valid() && !registered_)) return Napi::Boolean::New(env, false);
    int rc = pidfd_.Valid() ? (int)syscall(SYS_pidfd_send_signal, pidfd_.Get(), sig, nullptr, 0) : kill(pid_, sig);
    if (rc != 0) {
      if (errno == ESRCH) return Napi::Boolean::New(env, false);
      throw SysError(env, pidfd_.Valid() ? "pidfd_send_signal" : "kill", errno);
    }
    return Napi::Boolean::New(env, true);
  }

  // watch(cb): cb runs once, on Node's own loop, after the child was reaped.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw OptionError(env, "watch(cb: function)");
    if (watching_) throw Napi::Error::New(env, "watch() may be called once");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
    if (pidfd_.Valid()) {
      poll_ = new uv_poll_t;
      poll_->data = this;
      int rc = uv_poll_init(loop, poll_, pidfd_.Get());
      if (rc == 0) rc = uv_poll_start(poll_, UV_READABLE, OnReadable);
      if (rc != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(poll_), FreePoll);
        poll_ = nullptr;
        throw SysError(env, "uv_poll_start(pidfd)", -rc);
      }
    } else if (reaped_) {
      // Reaped before anyone watched: deliver on the next loop turn, never inside watch().
      timer_ = new uv_timer_t;
      timer_->data = this;
      uv_timer_init(loop, timer_);
      uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Child*>(t->data)->Deliver(); }, 0, 0);
    } else if (!registered_) {
      throw Napi::Error::New(env, "watch(): this child is not watchable");
    } else if (reaper->watched++ == 0) {
      uv_ref(reinterpret_cast<uv_handle_t*>(&reaper->signal));  // an awaited exit keeps the loop alive
    }
    cb_ = Napi::Persistent(info[0].As<Napi::Function>());
    watching_ = true;
    Ref();  // the JS object must outlive the watch
    return env.Undefined();
  }

  static void FreePoll(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }
  static void FreeTimer(uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); }

  static void OnReadable(uv_poll_t* h, int, int) { static_cast<Child*>(h->data)->ReapPidfd(); }

  void ReapPidfd() {
    // Readable means exited; WNOHANG anyway, so a spurious wake-up can never block Node's loop.
    siginfo_t si{};
    int rc;
    while ((rc = waitid((idtype_t)P_PIDFD, pidfd_.Get(), &si, WEXITED | WNOHANG)) < 0 && errno == EINTR) {
    }
    if (rc == 0 && si.si_pid == 0) return;  // still running: keep polling
    waitErr_ = rc < 0 ? errno : 0;
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), FreePoll);
    poll_ = nullptr;
    // The last kRecordExited init wrote (absent when init itself was SIGKILLed).
    Record r;
    while (status_.Valid() && read(status_.Get(), &r, sizeof(r)) == (ssize_t)sizeof(r)) {
      if (r.kind == kRecordExited) agentStatus_ = r.value;
    }
    reaped_ = true;
    si_ = si;
    pidfd_.Reset();
    status_.Reset();
    Deliver();
  }

  // Runs the watch callback with the exit (once).
  void Deliver() {
    if (!watching_ || delivered_) return;
    delivered_ = true;
    if (timer_) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer_), FreeTimer);
      timer_ = nullptr;
    }
    if (clone_ && --reaper->watched == 0)
      uv_unref(reinterpret_cast<uv_handle_t*>(&reaper->signal));
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Object res = Napi::Object::New(env);
    res.Set("pid", Napi::Number::New(env, pid_));
    if (waitErr_) {
      res.Set("code", env.Null());
      res.Set("signal", env.Null());
      res.Set("waitError", SysError(env, "waitid", waitErr_).Value());
    } else {
      bool exited = si_.si_code == CLD_EXITED;
      res.Set("code", exited ? Napi::Number::New(env, si_.si_status) : env.Null());
      res.Set("signal", exited ? env.Null() : Napi::Number::New(env, si_.si_status));
    }
    if (agentStatus_ >= 0) {
      Napi::Object a = Napi::Object::New(env);
      bool exited = WIFEXITED(agentStatus_);
      a.Set("code", exited ? Napi::Number::New(env, WEXITSTATUS(agentStatus_)) : env.Null());
      a.Set("signal", WIFSIGNALED(agentStatus_) ? Napi::Number::New(env, WTERMSIG(agentStatus_)) : env.Null());
      res.Set("agent", a);
    } else {
      res.Set("agent", env.Null());
    }
    Napi::FunctionReference cb = std::move(cb_);
    Unref();
    try {
      cb.MakeCallback(env.Global(), {res});
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  pid_t pid_ = -1;
  int agentPid_ = -1;
  int32_t token_ = -1;
  int agentStatus_ = -1;
  int waitErr_ = 0;
  siginfo_t si_{};
  UniqueFd pidfd_;
  UniqueFd status_;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* timer_ = nullptr;
  Napi::FunctionReference cb_;
  bool clone_ = false;       // reaper mode (spawn())
  bool registered_ = false;  // in reaper->children
  bool watching_ = false;
  bool delivered_ = false;
  bool reaped_ = false;
};

// Reaps one of our children if it exited and hands it its exit; false while it runs.
bool ReapOne(pid_t pid) {
  siginfo_t si{};
  int rc;
  while ((rc = waitid(P_PID, pid, &si, WEXITED | WNOHANG)) < 0 && errno == EINTR) {
  }
  if (rc == 0 && si.si_pid == 0) return false;
  if (rc < 0) {  // ECHILD: someone else reaped it after all; report it killed (agent status unknown)
    si = {};
    si.si_pid = pid;
    si.si_code = CLD_KILLED;
    si.si_status = SIGKILL;
  }
  DrainRecords();  // init wrote the agent's record before it exited
  auto it = reaper->children.find(pid);
  if (it == reaper->children.end()) return true;
  Child* c = it->second;
  reaper->children.erase(it);
  c->Reaped(si);
  return true;
}

// Reaps every exited child of ours (see the reaper above) and hands each its exit.
void ReapAll() {
  if (!reaper) return;
  for (;;) {
    siginfo_t si{};
    int rc = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0 || si.si_pid == 0) return;  // ECHILD: no children; 0: none exited
    if (reaper->children.count(si.si_pid)) {
      ReapOne(si.si_pid);
      continue;
    }
    // Someone else's child heads the list until its owner reaps it: look at ours one by one.
    std::vector<pid_t> pids;
    pids.reserve(reaper->children.size());
    for (auto& [pid, c] : reaper->children) pids.push_back(pid);
    for (pid_t pid : pids) ReapOne(pid);
    return;
  }
}

namespace {

Napi::FunctionReference* childCtor = nullptr;

// Reads records until the agent is known to run. Returns the agent's pid as init reported it (-1 when
// exec'd directly), or throws the child's failure as a SysError.
int AwaitStart(Napi::Env env, const Plan& p, int rd, int pidfd, int timeoutMs) {
  int64_t deadline = NowMs() + timeoutMs;
  for (;;) {
    struct pollfd pfd {rd, POLLIN, 0};
    int left = (int)(deadline - NowMs());
    int rc = left > 0 ? poll(&pfd, 1, left) : 0;
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      int err = errno;
      KillAndReap(pidfd);
      throw SysError(env, "poll(status pipe)", err);
    }
    if (rc == 0) {
      KillAndReap(pidfd);
      throw SysError(env, "spawn (agent did not start in time)", ETIMEDOUT);
    }
    Record r;
    ssize_t n = read(rd, &r, sizeof(r));
    if (n < 0 && errno == EINTR) continue;
    if (n == (ssize_t)sizeof(r) && r.kind == kRecordError) {
      KillAndReap(pidfd);
      r.what[sizeof(r.what) - 1] = 0;
      throw SysError(env, r.what, r.err);
    }
    if (n == (ssize_t)sizeof(r) && r.kind == kRecordStarted) return r.value;
    if (n == 0) {
      if (p.initPath.empty()) return -1;  // exec closed the CLOEXEC status pipe: the agent runs
      KillAndReap(pidfd);
      throw SysError(env, "clove-init (exited before the agent started)", ECHILD);
    }
    KillAndReap(pidfd);
    throw SysError(env, "read(status pipe)", n < 0 ? errno : EPROTO);
  }
}

Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw OptionError(env, "spawn(options: object)");
  Napi::Object o = info[0].As<Napi::Object>();
  Plan plan = ParsePlan(o);
  std::string cgroupDir = Str(o, "cgroupDir");
  std::string uidMap = Str(o, "uidMap");
  std::string gidMap = Str(o, "gidMap");
  int timeoutMs = (int)Int(o, "startTimeoutMs");
  EnsureReaper(env);
  const int32_t token = reaper->nextToken;
  reaper->nextToken = token == INT32_MAX ? 1 : token + 1;
  if (!plan.initPath.empty()) {
    plan.exitFd = reaper->wr.Get();
    plan.exitTokenArg = "--exit-token=" + std::to_string(token);
  }

  UniqueFd cg;
  if (!cgroupDir.empty()) {
    cg.Reset(open(cgroupDir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!cg.Valid()) throw SysError(env, "open(cgroup dir)", errno);
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw SysError(env, "pipe2(status)", errno);
  UniqueFd rd(fds[0]), wr(fds[1]);
  UniqueFd syncR, syncW;
  if (plan.newUser) {
    if (pipe2(fds, O_CLOEXEC) != 0) throw SysError(env, "pipe2(sync)", errno);
    syncR.Reset(fds[0]);
    syncW.Reset(fds[1]);
  }

  int pidfdRaw = -1;
  CloneArgs args{};
  args.flags = CLONE_PIDFD | plan.cloneFlags | (cg.Valid() ? CLONE_INTO_CGROUP : 0);
  args.pidfd = reinterpret_cast<uint64_t>(&pidfdRaw);
  args.exit_signal = SIGCHLD;
  args.cgroup = cg.Valid() ? (uint64_t)cg.Get() : 0;

  // Root mode shares our address space with the child until it execs (CLONE_VM|CLONE_VFORK, like
  // posix_spawn): no page-table copy of Node. Rootless mode needs the parent to run while the child waits
  // for its uid map, so it uses a fork-style clone3.
  bool shareVm = !plan.newUser && CloneVmSupported();
  ChildStack stack;
  if (shareVm && !stack.Base()) throw SysError(env, "mmap(child stack)", errno);
  ChildCtx ctx{&plan, wr.Get(), syncR.Get()};

  // Signals stay blocked across clone3 so none of Node's handlers can run in the child before it resets
  // them to SIG_DFL.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid;
  int cloneErr = 0;
  if (shareVm) {
    args.flags |= CLONE_VM | CLONE_VFORK;
    args.stack = reinterpret_cast<uint64_t>(stack.Base());
    args.stack_size = ChildStack::kSize;
    pid = CloneVm(&args, ChildTrampoline, &ctx);
    if (pid < 0) {
      cloneErr = (int)-pid;
      pid = -1;
    }
  } else {
    pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) ChildMain(plan, wr.Get(), syncR.Get());
    cloneErr = errno;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) throw SysError(env, "clone3", cloneErr);
  UniqueFd pidfd(pidfdRaw);
  wr.Reset();
  syncR.Reset();

  if (plan.newUser) {
    try {
      WriteProcFile(env, (pid_t)pid, "setgroups", "deny");
      WriteProcFile(env, (pid_t)pid, "gid_map", gidMap);
      WriteProcFile(env, (pid_t)pid, "uid_map", uidMap);
    } catch (...) {
      KillAndReap(pidfd.Get());
      throw;
    }
    if (write(syncW.Get(), "1", 1) != 1) {
      int err = errno;
      KillAndReap(pidfd.Get());
      throw SysError(env, "write(sync pipe)", err);
    }
    syncW.Reset();
  }

  int agentPid = AwaitStart(env, plan, rd.Get(), pidfd.Get(), timeoutMs);
  // No fd kept per agent: the exit comes through the reaper (clove-init closed its end of the status
  // pipe, or the agent's exec did).
  Napi::Object obj = childCtor->New({});
  Child::Unwrap(obj)->AdoptClone((pid_t)pid, token, agentPid);
  return obj;
}

}  // namespace

Napi::Object AdoptChild(Napi::Env, pid_t pid, UniqueFd pidfd, UniqueFd status, int agentPid) {
  Napi::Object obj = childCtor->New({});
  Child::Unwrap(obj)->Adopt(pid, std::move(pidfd), std::move(status), agentPid);
  return obj;
}

void InitSpawn(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = Child::Define(env);
  childCtor = new Napi::FunctionReference(Napi::Persistent(ctor));
  exports.Set("Child", ctor);
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
}

}  // namespace clove
