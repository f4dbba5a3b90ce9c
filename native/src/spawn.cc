// spawn(): clone3 into new namespaces (and, on cgroup v2, straight into the agent's cgroup), wait until
// the agent exec'd, and hand back a Child that owns the pidfd and the status pipe. Exit is observed by
// polling the pidfd on libuv's loop and reaped with waitid(P_PIDFD), so there is neither a SIGCHLD race
// with libuv nor a PID-reuse window.
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

#include <sys/mman.h>

#include "clone3.h"
#include "errors.h"
#include "exports.h"
#include "fd.h"
#include "handle.h"
#include "plan.h"
#include "proc.h"


namespace clove {
namespace {

// ---- option parsing: the TypeScript layer validated everything, these only guard against garbage ----

Napi::Value Field(const Napi::Object& o, const char* key) { return o.Get(key); }

std::string Str(const Napi::Object& o, const char* key) {
  Napi::Value v = Field(o, key);
  if (!v.IsString()) throw OptionError(o.Env(), std::string(key) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw OptionError(o.Env(), std::string(key) + " contains NUL");
  return s;
}

int64_t Int(const Napi::Object& o, const char* key) {
  Napi::Value v = Field(o, key);
  if (!v.IsNumber()) throw OptionError(o.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().Int64Value();
}

bool Bool(const Napi::Object& o, const char* key) {
  Napi::Value v = Field(o, key);
  if (!v.IsBoolean()) throw OptionError(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::vector<std::string> StrArray(const Napi::Object& o, const char* key) {
  Napi::Value v = Field(o, key);
  if (!v.IsArray()) throw OptionError(o.Env(), std::string(key) + " must be an array of strings");
  Napi::Array a = v.As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsString()) throw OptionError(o.Env(), std::string(key) + " must be an array of strings");
    std::string s = e.As<Napi::String>().Utf8Value();
    if (s.find('\0') != std::string::npos) throw OptionError(o.Env(), std::string(key) + " contains NUL");
    out.push_back(std::move(s));
  }
  return out;
}

// Like StrArray, but an absent field reads as [] (callers built before the field existed keep working).
std::vector<std::string> OptStrArray(const Napi::Object& o, const char* key) {
  if (Field(o, key).IsUndefined()) return {};
  return StrArray(o, key);
}

// idmapped: [{path, usernsFd}]. An absent field reads as [] so that callers built before the field
// existed keep working; anything else must have the declared shape.
std::vector<IdmappedMount> IdmappedArray(const Napi::Object& o) {
  Napi::Value v = Field(o, "idmapped");
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
  p.seccomp = Field(o, "seccomp").IsUndefined() ? false : Bool(o, "seccomp");
  p.uid = (int)Int(o, "uid");
  p.gid = (int)Int(o, "gid");
  Napi::Value rl = Field(o, "rlimits");
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

// ---- Child: owner of one agent's pidfd and status pipe ----

class Child : public Napi::ObjectWrap<Child> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Child",
                       {InstanceAccessor<&Child::Pid>("pid"), InstanceAccessor<&Child::Exited>("exited"),
                        InstanceMethod<&Child::Kill>("kill"), InstanceMethod<&Child::Watch>("watch")});
  }

  explicit Child(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Child>(info) {}

  void Adopt(pid_t pid, UniqueFd pidfd, UniqueFd status, int agentPid) {
    pid_ = pid;
    pidfd_ = std::move(pidfd);
    status_ = std::move(status);
    agentPid_ = agentPid;
  }

 private:
  Napi::Value Pid(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pid_); }
  Napi::Value Exited(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), reaped_); }

  // kill(sig): pidfd_send_signal to the child we cloned (the namespace init, or the agent itself when it
  // runs without one). false when it is already gone; other failures throw.
  Napi::Value Kill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsNumber()) throw OptionError(env, "kill(sig: number)");
    int sig = info[0].As<Napi::Number>().Int32Value();
    if (reaped_ || !pidfd_.Valid()) return Napi::Boolean::New(env, false);
    if (syscall(SYS_pidfd_send_signal, pidfd_.Get(), sig, nullptr, 0) != 0) {
      if (errno == ESRCH) return Napi::Boolean::New(env, false);
      throw SysError(env, "pidfd_send_signal", errno);
    }
    return Napi::Boolean::New(env, true);
  }

  // watch(cb): polls the pidfd on Node's own loop; cb runs once, after the child was reaped.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw OptionError(env, "watch(cb: function)");
    if (poll_ || reaped_) throw Napi::Error::New(env, "watch() may be called once");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || !loop) throw Napi::Error::New(env, "napi_get_uv_event_loop failed");
    cb_ = Napi::Persistent(info[0].As<Napi::Function>());
    poll_ = new uv_poll_t;
    poll_->data = this;
    int rc = uv_poll_init(loop, poll_, pidfd_.Get());
    if (rc == 0) rc = uv_poll_start(poll_, UV_READABLE, OnReadable);
    if (rc != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(poll_), FreePoll);
      poll_ = nullptr;
      throw SysError(env, "uv_poll_start(pidfd)", -rc);
    }
    Ref();  // the JS object must outlive the poll handle
    return env.Undefined();
  }

  static void FreePoll(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }

  static void OnReadable(uv_poll_t* h, int, int) { static_cast<Child*>(h->data)->Reap(); }

  void Reap() {
    // Readable means exited; WNOHANG anyway, so a spurious wake-up can never block Node's loop.
    siginfo_t si{};
    int rc;
    while ((rc = waitid((idtype_t)P_PIDFD, pidfd_.Get(), &si, WEXITED | WNOHANG)) < 0 && errno == EINTR) {
    }
    int waitErr = rc < 0 ? errno : 0;
    if (rc == 0 && si.si_pid == 0) return;  // still running: keep polling

    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), FreePoll);
    poll_ = nullptr;

    // The last kRecordExited init wrote (absent when init itself was SIGKILLed).
    int agentStatus = -1;
    Record r;
    while (read(status_.Get(), &r, sizeof(r)) == (ssize_t)sizeof(r)) {
      if (r.kind == kRecordExited) agentStatus = r.value;
    }
    reaped_ = true;
    pidfd_.Reset();
    status_.Reset();

    Napi::Object res = Napi::Object::New(env);
    res.Set("pid", Napi::Number::New(env, pid_));
    if (waitErr) {
      res.Set("code", env.Null());
      res.Set("signal", env.Null());
      res.Set("waitError", SysError(env, "waitid(P_PIDFD)", waitErr).Value());
    } else {
      bool exited = si.si_code == CLD_EXITED;
      res.Set("code", exited ? Napi::Number::New(env, si.si_status) : env.Null());
      res.Set("signal", exited ? env.Null() : Napi::Number::New(env, si.si_status));
    }
    if (agentStatus >= 0) {
      Napi::Object a = Napi::Object::New(env);
      bool exited = WIFEXITED(agentStatus);
      a.Set("code", exited ? Napi::Number::New(env, WEXITSTATUS(agentStatus)) : env.Null());
      a.Set("signal", WIFSIGNALED(agentStatus) ? Napi::Number::New(env, WTERMSIG(agentStatus)) : env.Null());
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
  UniqueFd pidfd_;
  UniqueFd status_;
  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference cb_;
  bool reaped_ = false;
};

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
  if (fcntl(rd.Get(), F_SETFL, O_NONBLOCK) != 0) {
    int err = errno;
    KillAndReap(pidfd.Get());
    throw SysError(env, "fcntl(status pipe, O_NONBLOCK)", err);
  }
  Napi::Object obj = childCtor->New({});
  Child::Unwrap(obj)->Adopt((pid_t)pid, std::move(pidfd), std::move(rd), agentPid);
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
