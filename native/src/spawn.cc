// spawn(): on a spawn thread of the addon's own (never on the event loop, see SpawnJob), clone3 into new
// namespaces (and, on cgroup v2, straight into the agent's cgroup), wait until the agent exec'd, and
// resolve a promise with a Child, which the reaper below watches without an fd per agent. Exit is
// observed on libuv's loop (SIGCHLD, or a pidfd readable) and the child reaped with waitid by pid or
// pidfd, never by "any child", so there is neither a SIGCHLD race with libuv nor a PID-reuse window (see
// Child).
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

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
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
  p.outliveKernel = o.Get("outliveKernel").IsUndefined() ? false : Bool(o, "outliveKernel");
  p.park = o.Get("park").IsUndefined() ? false : Bool(o, "park");
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
  // A parked clove-init reports the agent's start on the shared exit pipe, which only clove-init gets.
  if (p.park && p.initPath.empty()) throw OptionError(env, "park requires initPath");
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
// The spawn threads clone the children, but waitid on the main thread sees every child of the process;
// a child is ours (in `children`) only once the event loop adopted it (CompleteSpawn), and until then
// only its spawn thread may reap it (by pidfd, when the spawn fails).

class Child;

struct Reaper {
  uv_loop_t* loop = nullptr;
  uv_signal_t signal;
  uv_poll_t poll;
  uv_timer_t timer;
  UniqueFd rd, wr;
  std::unordered_map<pid_t, Child*> children;  // spawned and not reaped yet
  std::unordered_map<int32_t, int> statuses;   // exit token -> the agent's wait status (until reaped)
  std::unordered_map<int32_t, Child*> byToken; // exit token -> its child (until reaped)
  int32_t nextToken = 1;
  size_t watched = 0;  // children with a watch(): the loop stays alive while there are any
};

static Reaper* reaper = nullptr;

void ReapAll();
void AgentEnded(Child* c, int status);
void AgentStarted(Child* c, int agentPid);

// Reads the agents' exit records clove-init wrote on the shared exit pipe. A record comes as soon as
// init reaped the agent, before init's own exit tears the namespace down (milliseconds later): the
// child's watcher hears of the agent's end at once (watch()'s second callback), its full exit later.
void DrainRecords() {
  Record buf[64];
  std::vector<std::pair<int32_t, int>> ended;
  for (;;) {
    ssize_t n = read(reaper->rd.Get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n / (ssize_t)sizeof(Record); i++) {
      if (buf[i].kind == kRecordExited) {
        reaper->statuses[buf[i].err] = buf[i].value;
        ended.emplace_back(buf[i].err, buf[i].value);
      } else if (buf[i].kind == kRecordStarted) {
        // A parked clove-init (--park) started its agent: the child's agentPid from now on.
        auto it = reaper->byToken.find(buf[i].err);
        if (it != reaper->byToken.end()) AgentStarted(it->second, buf[i].value);
      }
    }
  }
  // After the reads: a callback may spawn or reap, which changes the maps.
  for (auto [token, status] : ended) {
    auto it = reaper->byToken.find(token);
    if (it != reaper->byToken.end()) AgentEnded(it->second, status);
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
                        InstanceAccessor<&Child::AgentPidValue>("agentPid"),
                        InstanceMethod<&Child::Kill>("kill"), InstanceMethod<&Child::Watch>("watch")});
  }

  explicit Child(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Child>(info) {}

  ~Child() {
    if (reaper && registered_) {
      reaper->children.erase(pid_);
      reaper->byToken.erase(token_);
    }
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
    if (token >= 0) reaper->byToken[token] = this;
  }

  // ReapAll() reaped us: record it, deliver now if watched, else when watch() is called.
  void Reaped(const siginfo_t& si) {
    registered_ = false;
    reaper->byToken.erase(token_);
    reaped_ = true;
    si_ = si;
    auto it = reaper->statuses.find(token_);
    if (it != reaper->statuses.end()) {
      agentStatus_ = it->second;
      reaper->statuses.erase(it);
    }
    if (watching_) Deliver();
  }

  // DrainRecords() read a parked clove-init's start record: its agent runs now, as `agentPid`.
  void Started(int agentPid) { agentPid_ = agentPid; }

  // DrainRecords() read the agent's exit record: hands it to watch()'s second callback, once.
  void Ended(int status) {
    if (!watching_ || delivered_ || endCb_.IsEmpty()) return;
    Napi::FunctionReference cb = std::move(endCb_);
    Napi::Env env = Env();
    try {
      Napi::HandleScope scope(env);
      napi_value argv[] = {StatusObject(env, status)};
      napi_value ignored;
      if (napi_make_callback(env, nullptr, env.Global(), cb.Value(), 1, argv, &ignored) == napi_pending_exception) {
        napi_value exc;
        if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
      }
    } catch (const Napi::Error&) {
    }
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pid_); }
  Napi::Value Exited(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), reaped_); }
  Napi::Value AgentPidValue(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), agentPid_); }

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

  // watch(cb, ended?): cb runs once, on Node's own loop, after the child was reaped; `ended` (clove-init
  // children only) at most once before it, as soon as init reported the agent's own exit.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction() || (info.Length() > 1 && !info[1].IsFunction() && !info[1].IsUndefined()))
      throw OptionError(env, "watch(cb: function, ended?: function)");
    if (watching_) throw Napi::Error::New(env, "watch() may be called once");
    if (info.Length() > 1 && info[1].IsFunction()) endCb_ = Napi::Persistent(info[1].As<Napi::Function>());
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
    } else {
      keepsLoop_ = true;
      if (reaper->watched++ == 0)
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

  // Runs the watch callback with the exit (once). Called from libuv callbacks, so nothing may be thrown
  // out of it: a failure to build the exit means the environment is going away (nobody left to tell).
  void Deliver() {
    if (!watching_ || delivered_) return;
    delivered_ = true;
    endCb_.Reset();
    if (timer_) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer_), FreeTimer);
      timer_ = nullptr;
    }
    // Only a watch that counted itself (a child not reaped yet when watched) uncounts itself.
    if (keepsLoop_ && --reaper->watched == 0) uv_unref(reinterpret_cast<uv_handle_t*>(&reaper->signal));
    keepsLoop_ = false;
    Napi::Env env = Env();
    try {
      Napi::HandleScope scope(env);
      CallWatcher(env, ExitObject(env));
    } catch (const Napi::Error&) {
    }
  }

  // The exit as watch() hands it over (NativeExit).
  Napi::Object ExitObject(Napi::Env env) {
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
      res.Set("agent", StatusObject(env, agentStatus_));
    } else {
      res.Set("agent", env.Null());
    }
    return res;
  }

  // A wait status as NativeExitStatus.
  static Napi::Object StatusObject(Napi::Env env, int status) {
    Napi::Object a = Napi::Object::New(env);
    a.Set("code", WIFEXITED(status) ? Napi::Number::New(env, WEXITSTATUS(status)) : env.Null());
    a.Set("signal", WIFSIGNALED(status) ? Napi::Number::New(env, WTERMSIG(status)) : env.Null());
    return a;
  }

  // Calls the watch callback once: an exception it throws is an uncaught exception, as for any callback;
  // a call the environment refuses (it is going away) is dropped.
  void CallWatcher(Napi::Env env, Napi::Object res) {
    Napi::FunctionReference cb = std::move(cb_);
    Unref();
    napi_value argv[] = {res};
    napi_value ignored;
    if (napi_make_callback(env, nullptr, env.Global(), cb.Value(), 1, argv, &ignored) == napi_pending_exception) {
      napi_value exc;
      if (napi_get_and_clear_last_exception(env, &exc) == napi_ok) napi_fatal_exception(env, exc);
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
  Napi::FunctionReference endCb_;  // watch()'s `ended`, until called
  bool clone_ = false;       // reaper mode (spawn())
  bool keepsLoop_ = false;   // counted in reaper->watched (watched before it was reaped)
  bool registered_ = false;  // in reaper->children
  bool watching_ = false;
  bool delivered_ = false;
  bool reaped_ = false;
};

void AgentEnded(Child* c, int status) { c->Ended(status); }
void AgentStarted(Child* c, int agentPid) { c->Started(agentPid); }

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

// ---- spawn(): the work on a spawn thread, the result on the event loop ----
//
// Everything between the options and the agent running — opening the cgroup, clone3, the uid maps of
// rootless mode, waiting for the exec handshake (up to startTimeoutMs) — runs on a spawn thread, so a
// slow spawn never stalls the kernel's event loop (every other agent's syscalls). The event loop only
// parses the options (a TypeError throws at once), allocates the exit token, and, once the thread is
// done, registers the child with the reaper and settles the promise.

class SpawnJob;
void CompleteSpawn(Napi::Env env, Napi::Function, std::nullptr_t*, SpawnJob* raw);
using SpawnTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, SpawnJob, CompleteSpawn>;

// One spawn(). It owns duplicates of every fd the caller handed over (the log, the netns, the idmap user
// namespaces), so the caller may close its own as soon as spawn() returned, and closes them once the
// agent runs (or the spawn failed).
class SpawnJob {
 public:
  SpawnJob(Napi::Env env, Plan plan) : deferred(Napi::Promise::Deferred::New(env)), plan_(std::move(plan)) {
    plan_.Finalize();  // the child's pointer arrays, into our own strings
  }
  SpawnJob(const SpawnJob&) = delete;
  SpawnJob& operator=(const SpawnJob&) = delete;

  // On the event loop: the options beyond the plan, and our own copies of the caller's fds. False (with
  // `failure` set) when an fd cannot be duplicated.
  bool Prepare(const Napi::Object& o) {
    cgroupDir_ = Str(o, "cgroupDir");
    uidMap_ = Str(o, "uidMap");
    gidMap_ = Str(o, "gidMap");
    timeoutMs_ = (int)Int(o, "startTimeoutMs");
    if (!o.Get("testGate").IsUndefined()) testGate_ = Str(o, "testGate");
    if (!Dup(&stdoutFd_, &plan_.stdoutFd, "fcntl(stdoutFd, F_DUPFD_CLOEXEC)")) return false;
    if (plan_.netnsFd >= 0 && !Dup(&netnsFd_, &plan_.netnsFd, "fcntl(netnsFd, F_DUPFD_CLOEXEC)")) return false;
    for (IdmappedMount& m : plan_.idmapped) {
      if (m.usernsFd < 0) continue;  // left to fail in mount_setattr, naming it, as before
      userns_.emplace_back();
      if (!Dup(&userns_.back(), &m.usernsFd, "fcntl(usernsFd, F_DUPFD_CLOEXEC)")) return false;
    }
    return true;
  }

  // On the event loop, last: the reaper's exit pipe and this spawn's token on it (clove-init only).
  void UseExitPipe(int exitFd, int32_t token) {
    token_ = token;
    if (plan_.initPath.empty()) return;
    plan_.exitFd = exitFd;
    plan_.exitTokenArg = "--exit-token=" + std::to_string(token);
  }

  // On a spawn thread. Nothing may escape it (an exception there would end the kernel): an allocation
  // failure becomes ENOMEM.
  void Run() noexcept {
    try {
      Clone();
    } catch (...) {
      KillChild();
      failure.err = ENOMEM;
      try {
        failure.syscall = "spawn thread";
      } catch (...) {
      }
    }
    // The agent has its own copies now (or there is no agent): ours go at once.
    stdoutFd_.Reset();
    netnsFd_.Reset();
    userns_.clear();
  }

  // The child, once the event loop adopted it (the reaper finds it by pid from then on).
  pid_t Pid() const { return pid_; }
  int AgentPid() const { return agentPid_; }
  int32_t Token() const { return token_; }
  void Adopted() { pidfd_.Reset(); }
  // Kills a child nobody will adopt (the environment is going away).
  void KillChild() {
    if (pidfd_.Valid()) KillAndReap(pidfd_.Get());
    pidfd_.Reset();
    pid_ = -1;
  }

  Napi::Promise::Deferred deferred;
  SpawnTsfn tsfn;
  struct {
    std::string syscall;
    int err = 0;
  } failure;

 private:
  bool Dup(UniqueFd* own, int* fd, const char* what) {
    own->Reset(fcntl(*fd, F_DUPFD_CLOEXEC, 3));
    if (!own->Valid()) return Fail(what, errno);
    *fd = own->Get();
    return true;
  }

  bool Fail(const std::string& syscall, int err) {
    failure.syscall = syscall;
    failure.err = err ? err : EIO;
    return false;
  }

  // A failure after clone3: the child is killed and reaped first (by its pidfd: nobody else reaps it).
  bool Abort(const std::string& syscall, int err) {
    KillChild();
    return Fail(syscall, err);
  }

  // Test hook (NativeSpawnOptions.testGate): before anything else, wait until one byte, or EOF, can be
  // read from the FIFO at that path, so that a test holds a spawn in flight for as long as it likes.
  bool WaitAtGate() {
    UniqueFd gate(open(testGate_.c_str(), O_RDONLY | O_CLOEXEC));  // a FIFO: until a writer opens it
    if (!gate.Valid()) return Fail("open(testGate)", errno);
    char c;
    ssize_t n;
    do n = read(gate.Get(), &c, 1); while (n < 0 && errno == EINTR);
    if (n < 0) return Fail("read(testGate)", errno);
    return true;
  }

  bool Clone() {
    if (!testGate_.empty() && !WaitAtGate()) return false;
    UniqueFd cg;
    if (!cgroupDir_.empty()) {
      cg.Reset(open(cgroupDir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!cg.Valid()) return Fail("open(cgroup dir)", errno);
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return Fail("pipe2(status)", errno);
    UniqueFd rd(fds[0]), wr(fds[1]);
    UniqueFd syncR, syncW;
    if (plan_.newUser) {
      if (pipe2(fds, O_CLOEXEC) != 0) return Fail("pipe2(sync)", errno);
      syncR.Reset(fds[0]);
      syncW.Reset(fds[1]);
    }

    int pidfdRaw = -1;
    CloneArgs args{};
    args.flags = CLONE_PIDFD | plan_.cloneFlags | (cg.Valid() ? CLONE_INTO_CGROUP : 0);
    args.pidfd = reinterpret_cast<uint64_t>(&pidfdRaw);
    args.exit_signal = SIGCHLD;
    args.cgroup = cg.Valid() ? (uint64_t)cg.Get() : 0;

    // Root mode shares our address space with the child until it execs (CLONE_VM|CLONE_VFORK, like
    // posix_spawn): no page-table copy of Node; only this thread waits for the exec. Rootless mode needs
    // the parent to run while the child waits for its uid map, so it uses a fork-style clone3.
    bool shareVm = !plan_.newUser && CloneVmSupported();
    ChildStack stack;
    if (shareVm && !stack.Base()) return Fail("mmap(child stack)", errno);
    ChildCtx ctx{&plan_, wr.Get(), syncR.Get()};

    // This thread runs with every signal blocked already; the mask is set again around clone3 anyway, so
    // that none of Node's handlers can ever run in the child before it resets them to SIG_DFL.
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
      if (pid == 0) ChildMain(plan_, wr.Get(), syncR.Get());
      cloneErr = errno;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) return Fail("clone3", cloneErr);
    pid_ = (pid_t)pid;
    pidfd_.Reset(pidfdRaw);
    wr.Reset();
    syncR.Reset();

    if (plan_.newUser) {
      std::string what;
      int err = TryWriteProcFile(pid_, "setgroups", "deny", &what);
      if (err == 0) err = TryWriteProcFile(pid_, "gid_map", gidMap_, &what);
      if (err == 0) err = TryWriteProcFile(pid_, "uid_map", uidMap_, &what);
      if (err != 0) return Abort(what, err);
      if (write(syncW.Get(), "1", 1) != 1) return Abort("write(sync pipe)", errno);
      syncW.Reset();
    }
    return AwaitStart(rd.Get());
  }

  // Reads records until the agent is known to run (agentPid_: its pid as clove-init reported it, -1 when
  // exec'd directly); on anything else the child is killed and the failure kept.
  bool AwaitStart(int rd) {
    int64_t deadline = NowMs() + timeoutMs_;
    for (;;) {
      struct pollfd pfd {rd, POLLIN, 0};
      int left = (int)(deadline - NowMs());
      int rc = left > 0 ? poll(&pfd, 1, left) : 0;
      if (rc < 0 && errno == EINTR) continue;
      if (rc < 0) return Abort("poll(status pipe)", errno);
      if (rc == 0) return Abort("spawn (agent did not start in time)", ETIMEDOUT);
      Record r;
      ssize_t n = read(rd, &r, sizeof(r));
      if (n < 0 && errno == EINTR) continue;
      if (n == (ssize_t)sizeof(r) && r.kind == kRecordError) {
        r.what[sizeof(r.what) - 1] = 0;
        return Abort(r.what, r.err);
      }
      if (n == (ssize_t)sizeof(r) && r.kind == kRecordStarted) {
        agentPid_ = r.value;
        return true;
      }
      if (n == (ssize_t)sizeof(r) && r.kind == kRecordParked) {
        agentPid_ = 0;  // no agent yet: its kRecordStarted comes on the exit pipe (DrainRecords)
        return true;
      }
      if (n == 0) {
        if (plan_.initPath.empty()) return true;  // exec closed the CLOEXEC status pipe: the agent runs
        return Abort("clove-init (exited before the agent started)", ECHILD);
      }
      return Abort("read(status pipe)", n < 0 ? errno : EPROTO);
    }
  }

  Plan plan_;
  std::string cgroupDir_, uidMap_, gidMap_, testGate_;
  int timeoutMs_ = 0;
  int32_t token_ = -1;
  UniqueFd stdoutFd_, netnsFd_;
  std::vector<UniqueFd> userns_;
  pid_t pid_ = -1;
  int agentPid_ = -1;
  UniqueFd pidfd_;  // until the event loop adopted the child
};

// The spawn threads. At most kThreads, started when a spawn finds none idle, and never ended: the
// thread that clones a process is its parent in the kernel's eyes, and clove-init asks for SIGKILL when
// its parent goes (PR_SET_PDEATHSIG), so a thread that ended would take its agents with it. They are
// the addon's own, not libuv's pool: a spawn waiting for a slow exec must not hold up the file system
// calls of the whole kernel.
class SpawnThreads {
 public:
  static constexpr size_t kThreads = 4;

  // Queues `job`; throws a SysError when no thread exists and none could be started.
  void Submit(Napi::Env env, SpawnJob* job) {
    std::unique_lock<std::mutex> lock(mu_);
    queue_.push_back(job);
    if (queue_.size() > idle_ && threads_ < kThreads) {
      // Started with every signal blocked: Node's handlers must not run on it, nor in the children.
      sigset_t all, old;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, &old);
      try {
        std::thread([this]() { Loop(); }).detach();
        threads_++;
      } catch (const std::system_error& e) {
        pthread_sigmask(SIG_SETMASK, &old, nullptr);
        if (threads_ == 0) {
          queue_.pop_back();
          throw SysError(env, "pthread_create(spawn)", e.code().value());
        }
        // The threads there are will take it.
      }
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
    }
    lock.unlock();
    cv_.notify_one();
  }

 private:
  [[noreturn]] void Loop() {
    for (;;) {
      SpawnJob* job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        idle_++;
        cv_.wait(lock, [this] { return !queue_.empty(); });
        idle_--;
        job = queue_.front();
        queue_.pop_front();
      }
      job->Run();
      SpawnTsfn tsfn = job->tsfn;  // CompleteSpawn frees the job
      if (tsfn.BlockingCall(job) != napi_ok) {
        job->KillChild();
        delete job;
      }
      tsfn.Release();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<SpawnJob*> queue_;
  size_t idle_ = 0;
  size_t threads_ = 0;
};

// Never destroyed: detached threads wait on it until the process exits.
SpawnThreads* spawnThreads = new SpawnThreads;

// On the event loop: the child joins the reaper and the promise resolves with it, or rejects with the
// step that failed.
void CompleteSpawn(Napi::Env env, Napi::Function, std::nullptr_t*, SpawnJob* raw) {
  std::unique_ptr<SpawnJob> job(raw);
  if (env == nullptr) {  // the environment is going away: nobody will watch this agent
    job->KillChild();
    return;
  }
  Napi::HandleScope scope(env);
  if (job->failure.err) {
    job->deferred.Reject(SysError(env, job->failure.syscall, job->failure.err).Value());
    return;
  }
  try {
    Napi::Object obj = childCtor->New({});
    Child::Unwrap(obj)->AdoptClone(job->Pid(), job->Token(), job->AgentPid());
    job->Adopted();
    // It may have exited already: that SIGCHLD found it unregistered and left it for us.
    ReapOne(job->Pid());
    job->deferred.Resolve(obj);
  } catch (const Napi::Error& e) {
    job->KillChild();
    job->deferred.Reject(e.Value());
  }
}

Napi::Value Spawn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw OptionError(env, "spawn(options: object)");
  Napi::Object o = info[0].As<Napi::Object>();
  auto job = std::make_unique<SpawnJob>(env, ParsePlan(o));
  Napi::Promise promise = job->deferred.Promise();
  if (!job->Prepare(o)) {
    job->deferred.Reject(SysError(env, job->failure.syscall, job->failure.err).Value());
    return promise;
  }
  EnsureReaper(env);
  const int32_t token = reaper->nextToken;
  reaper->nextToken = token == INT32_MAX ? 1 : token + 1;
  job->UseExitPipe(reaper->wr.Get(), token);
  job->tsfn = SpawnTsfn::New(env, "clove_spawn", 0, 1);
  try {
    spawnThreads->Submit(env, job.get());
  } catch (...) {
    job->tsfn.Release();
    throw;
  }
  job.release();  // the spawn thread owns it, then CompleteSpawn
  return promise;
}

}  // namespace

Napi::Object AdoptChild(Napi::Env, pid_t pid, UniqueFd pidfd, UniqueFd status, int agentPid) {
  Napi::Object obj = childCtor->New({});
  Child::Unwrap(obj)->Adopt(pid, std::move(pidfd), std::move(status), agentPid);
  return obj;
}

// watchPid(pid): a Child for a process that is NOT ours (an agent a dead kernel started, re-adopted by
// this one): its exit is seen through a pidfd (pidfd_open works on any process), but only its parent can
// reap it, so the exit comes without a status (waitid fails ECHILD: `waitError`, code and signal null).
static Napi::Value WatchPid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw OptionError(env, "watchPid(pid: number)");
  const int64_t pid = info[0].As<Napi::Number>().Int64Value();
  if (pid <= 0 || pid > INT32_MAX) throw OptionError(env, "watchPid: pid must be a positive integer");
  UniqueFd pidfd((int)syscall(SYS_pidfd_open, (pid_t)pid, 0));
  if (!pidfd.Valid()) throw SysError(env, "pidfd_open", errno);
  return AdoptChild(env, (pid_t)pid, std::move(pidfd), UniqueFd(), -1);
}

// drainExitRecords(): reads the exit pipe now instead of at the loop's next poll. The kernel calls it when
// an agent's connection ends: the program that held it is often just reaped, its record already waiting.
static Napi::Value DrainExitRecords(const Napi::CallbackInfo& info) {
  if (reaper) DrainRecords();
  return info.Env().Undefined();
}

void InitSpawn(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = Child::Define(env);
  childCtor = new Napi::FunctionReference(Napi::Persistent(ctor));
  exports.Set("Child", ctor);
  exports.Set("spawn", Napi::Function::New(env, Spawn, "spawn"));
  exports.Set("watchPid", Napi::Function::New(env, WatchPid, "watchPid"));
  exports.Set("drainExitRecords", Napi::Function::New(env, DrainExitRecords, "drainExitRecords"));
}

}  // namespace clove
