// The mechanics of READ and WRITE (kernel/sandbox/files.ts owns defaults and validation, the files
// family owns policy):
//
//  - Paths are resolved with openat2() below a root directory fd — an agent's /proc/<init pid>/root, so
//    a path means what it means inside the agent's mount namespace, or the kernel's own / — with
//    RESOLVE_IN_ROOT (an absolute symlink or a `..` stays inside the root) and RESOLVE_NO_MAGICLINKS
//    (no /proc/<pid>/fd or /proc/<pid>/root jumps), plus RESOLVE_NO_SYMLINKS when the caller asks.
//  - Every path operation runs on a short-lived thread of our own that first takes the agent's fsuid and
//    fsgid, no supplementary groups, and an empty capability set — raw syscalls, which change only the
//    calling thread (glibc's setgroups() would broadcast to every thread of the process). So the kernel
//    never opens anything the agent could not open itself. Node's threads never change credentials, and
//    the thread is gone when the call is over (nothing can leak into a thread-pool thread). A slow file
//    system blocks that thread only, never the event loop nor libuv's pool.
//  - The result comes back to the event loop through a thread-safe function that settles a promise.
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <limits.h>

#include <algorithm>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "errors.h"
#include "exports.h"
#include "fd.h"

namespace clove {
namespace {

constexpr uint64_t kResolveInRoot = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
constexpr uint64_t kResolveChild = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS;

// What went wrong on the worker thread: becomes a SysError (syscall, errno, code) on the event loop.
struct Failure {
  std::string syscall;
  int err = 0;
  // EFBIG: the file's size (or the bytes seen before giving up), for the "too large" reply.
  int64_t size = -1;
};

// One call: its inputs, the work done on its own thread, and the value its promise resolves to.
class Job {
 public:
  Job(Napi::Env env, UniqueFd root, int64_t uid, int64_t gid)
      : deferred(Napi::Promise::Deferred::New(env)), root_(std::move(root)), uid_(uid), gid_(gid) {}
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  // On the worker thread: take the credentials, then do the work. Nothing may escape the thread (an
  // exception there would terminate the kernel): an allocation failure is ENOMEM.
  void Execute() noexcept {
    try {
      if (AssumeCredentials()) Run();
    } catch (...) {
      failure.err = ENOMEM;
      try {
        failure.syscall = "files worker";
      } catch (...) {
      }
    }
  }
  // On the event loop: the promise's value (only called when nothing failed).
  virtual Napi::Value Result(Napi::Env env) = 0;

  Napi::Promise::Deferred deferred;
  Failure failure;

 protected:
  virtual void Run() = 0;
  bool Fail(const std::string& syscall, int err) {
    failure.syscall = syscall;
    failure.err = err ? err : EIO;
    return false;
  }
  int Root() const { return root_.Get(); }

 private:
  // setgroups(none), setfsgid, setfsuid, then an empty capability set, for this thread only. Each is
  // checked: a thread that could not become the agent does nothing.
  bool AssumeCredentials() {
    if (uid_ < 0 && gid_ < 0) return true;
    if (syscall(SYS_setgroups, 0, nullptr) != 0) return Fail("setgroups(thread)", errno);
    if (gid_ >= 0) {
      syscall(SYS_setfsgid, (gid_t)gid_);
      if (syscall(SYS_setfsgid, (gid_t)-1) != gid_) return Fail("setfsgid", EPERM);
    }
    if (uid_ >= 0) {
      syscall(SYS_setfsuid, (uid_t)uid_);
      if (syscall(SYS_setfsuid, (uid_t)-1) != uid_) return Fail("setfsuid", EPERM);
    }
    __user_cap_header_struct head{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (syscall(SYS_capset, &head, data) != 0) return Fail("capset(thread)", errno);
    return true;
  }

  UniqueFd root_;
  int64_t uid_;
  int64_t gid_;
};

void Complete(Napi::Env env, Napi::Function, std::nullptr_t*, Job* raw);
using Tsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, Job, Complete>;

// openat2 with the retries the kernel asks for: EAGAIN when a concurrent rename made it unsure the
// resolution stayed in the root (RESOLVE_IN_ROOT), EINTR.
int Openat2(int dirfd, const char* path, uint64_t flags, uint64_t mode, uint64_t resolve) {
  struct open_how how{};
  how.flags = flags;
  how.mode = mode;
  how.resolve = resolve;
  for (int i = 0;; i++) {
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0) return (int)fd;
    if ((errno != EAGAIN && errno != EINTR) || i >= 32) return -1;
  }
}

// The path of an open fd as the kernel names it (readlink of /proc/self/fd/N). For a file inside an
// agent's mount namespace this is its path in that namespace: d_path stops at that namespace's root.
bool FdPath(int fd, std::string* out, int* err) {
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  std::vector<char> buf(PATH_MAX + 1);
  ssize_t n = readlink(link.c_str(), buf.data(), buf.size());
  if (n < 0) {
    *err = errno;
    return false;
  }
  if ((size_t)n >= buf.size()) {
    *err = ENAMETOOLONG;
    return false;
  }
  out->assign(buf.data(), (size_t)n);
  return true;
}

const char* TypeOf(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "symlink";
  return "other";
}

bool WriteAll(int fd, const std::string& data, int64_t* written, int* err) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return false;
    }
    off += (size_t)n;
    *written = (int64_t)off;
  }
  return true;
}

std::string TempName() {
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
    r = ((uint64_t)getpid() << 32) ^ (uint64_t)gettid() ^ (uint64_t)time(nullptr);
  char name[48];
  snprintf(name, sizeof name, ".clove-write-%016llx.tmp", (unsigned long long)r);
  return name;
}

// ---- fsResolve ----------------------------------------------------------------------------------

class ResolveJob : public Job {
 public:
  ResolveJob(Napi::Env env, UniqueFd root, int64_t uid, int64_t gid, std::string path, bool noSymlinks)
      : Job(env, std::move(root), uid, gid), path_(std::move(path)), noSymlinks_(noSymlinks) {}

  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("realPath", realPath_);
    o.Set("type", TypeOf(st_.st_mode));
    o.Set("size", Napi::Number::New(env, (double)st_.st_size));
    return o;
  }

 protected:
  void Run() override {
    UniqueFd fd(Openat2(Root(), path_.c_str(), O_PATH | O_CLOEXEC, 0,
                        kResolveInRoot | (noSymlinks_ ? RESOLVE_NO_SYMLINKS : 0)));
    if (!fd.Valid()) return (void)Fail("openat2", errno);
    if (fstat(fd.Get(), &st_) != 0) return (void)Fail("fstat", errno);
    int err = 0;
    if (!FdPath(fd.Get(), &realPath_, &err)) return (void)Fail("readlink(/proc/self/fd)", err);
  }

 private:
  std::string path_;
  bool noSymlinks_;
  std::string realPath_;
  struct stat st_{};
};

// ---- fsRead -------------------------------------------------------------------------------------

class ReadJob : public Job {
 public:
  ReadJob(Napi::Env env, UniqueFd root, int64_t uid, int64_t gid, std::string path, bool noSymlinks,
          int64_t maxBytes, int64_t offset, int64_t length)
      : Job(env, std::move(root), uid, gid),
        path_(std::move(path)),
        noSymlinks_(noSymlinks),
        maxBytes_(maxBytes),
        offset_(offset),
        length_(length) {}

  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("data", Napi::Buffer<char>::Copy(env, data_.data(), data_.size()));
    o.Set("fileSize", Napi::Number::New(env, (double)fileSize_));
    o.Set("realPath", realPath_);
    return o;
  }

 protected:
  void Run() override {
    UniqueFd pathFd(Openat2(Root(), path_.c_str(), O_PATH | O_CLOEXEC, 0,
                            kResolveInRoot | (noSymlinks_ ? RESOLVE_NO_SYMLINKS : 0)));
    if (!pathFd.Valid()) return (void)Fail("openat2", errno);
    struct stat st;
    if (fstat(pathFd.Get(), &st) != 0) return (void)Fail("fstat", errno);
    // Only regular files: a FIFO would block, a device could do anything on open.
    if (S_ISDIR(st.st_mode)) return (void)Fail("read", EISDIR);
    if (!S_ISREG(st.st_mode)) return (void)Fail("S_ISREG", EINVAL);
    int err = 0;
    if (!FdPath(pathFd.Get(), &realPath_, &err)) return (void)Fail("readlink(/proc/self/fd)", err);
    // Re-open the very inode we resolved, for reading: the permission check is the agent's.
    std::string self = "/proc/self/fd/" + std::to_string(pathFd.Get());
    UniqueFd fd(open(self.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd.Valid()) return (void)Fail("open", errno);
    fileSize_ = st.st_size;
    // Refused from its size alone when what is asked for is too large; otherwise at most maxBytes + 1
    // bytes are read, so a file that grows (or lies about its size, like /proc files) is caught without
    // being loaded.
    int64_t rest = fileSize_ > offset_ ? fileSize_ - offset_ : 0;
    int64_t limit = length_ >= 0 ? length_ : INT64_MAX;
    int64_t expect = std::min(limit, rest);
    if (expect > maxBytes_) {
      failure.size = fileSize_;
      return (void)Fail("size", EFBIG);
    }
    int64_t cap = std::min(limit, maxBytes_ + 1);
    data_.resize((size_t)std::max<int64_t>(std::min(cap, expect + 1), 1));
    int64_t got = 0;
    while (got < cap) {
      if (got == (int64_t)data_.size()) data_.resize((size_t)std::min<int64_t>(cap, got * 2 + 4096));
      ssize_t n = pread(fd.Get(), data_.data() + got, data_.size() - (size_t)got, offset_ + got);
      if (n < 0) {
        if (errno == EINTR) continue;
        return (void)Fail("pread", errno);
      }
      if (n == 0) break;
      got += n;
    }
    if (got > maxBytes_) {
      failure.size = std::max<int64_t>(offset_ + got, fileSize_);
      return (void)Fail("size", EFBIG);
    }
    data_.resize((size_t)got);
  }

 private:
  std::string path_;
  bool noSymlinks_;
  int64_t maxBytes_;
  int64_t offset_;
  int64_t length_;
  std::vector<char> data_;
  int64_t fileSize_ = 0;
  std::string realPath_;
};

// ---- fsWrite ------------------------------------------------------------------------------------

class WriteJob : public Job {
 public:
  WriteJob(Napi::Env env, UniqueFd root, int64_t uid, int64_t gid, std::string dir, std::string name,
           std::string data, bool append, int fileMode)
      : Job(env, std::move(root), uid, gid),
        dir_(std::move(dir)),
        name_(std::move(name)),
        data_(std::move(data)),
        append_(append),
        fileMode_(fileMode) {}

  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("bytesWritten", Napi::Number::New(env, (double)written_));
    o.Set("realDir", realDir_);
    o.Set("created", Napi::Boolean::New(env, created_));
    return o;
  }

 protected:
  void Run() override {
    // The directory: no symlink anywhere on the way (the caller resolved and checked any first).
    UniqueFd dir(Openat2(Root(), dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC, 0,
                         kResolveInRoot | RESOLVE_NO_SYMLINKS));
    if (!dir.Valid()) return (void)Fail("openat2(dir)", errno);
    int err = 0;
    if (!FdPath(dir.Get(), &realDir_, &err)) return (void)Fail("readlink(/proc/self/fd)", err);
    struct stat st;
    bool exists = fstatat(dir.Get(), name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (!exists && errno != ENOENT) return (void)Fail("fstatat", errno);
    if (exists) {
      // Never through a symlink at the target; only regular files.
      if (S_ISLNK(st.st_mode)) return (void)Fail("target", ELOOP);
      if (S_ISDIR(st.st_mode)) return (void)Fail("target", EISDIR);
      if (!S_ISREG(st.st_mode)) return (void)Fail("S_ISREG", EINVAL);
      // A file the agent may not write is not replaced for it either (a rename would only need the
      // directory's permission).
      if (syscall(SYS_faccessat2, dir.Get(), name_.c_str(), W_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) != 0 &&
          errno != ENOSYS)
        return (void)Fail("faccessat2", errno);
    }
    created_ = !exists;
    if (append_) return Append(dir.Get());
    Replace(dir.Get(), exists ? &st : nullptr);
  }

 private:
  void Append(int dir) {
    constexpr uint64_t kFlags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    UniqueFd fd(Openat2(dir, name_.c_str(), kFlags | O_CREAT | O_EXCL, (uint64_t)fileMode_, kResolveChild));
    bool made = fd.Valid();
    if (!made && errno == EEXIST) fd.Reset(Openat2(dir, name_.c_str(), kFlags, 0, kResolveChild));
    if (!fd.Valid()) return (void)Fail("openat2(target)", errno);
    created_ = made;
    struct stat st;
    if (fstat(fd.Get(), &st) != 0) return (void)Fail("fstat", errno);
    if (!S_ISREG(st.st_mode)) return (void)Fail("S_ISREG", EINVAL);
    if (made && fchmod(fd.Get(), (mode_t)fileMode_) != 0) return (void)Fail("fchmod", errno);
    int err = 0;
    if (!WriteAll(fd.Get(), data_, &written_, &err)) return (void)Fail("write", err);
  }

  // Atomic replacement: the new content goes into an unnamed file (O_TMPFILE) in the same directory,
  // which is then linked under a unique temporary name and renamed over the target. A reader sees the
  // old file or the new one, never a part. Where O_TMPFILE is not supported, a uniquely named file
  // created with O_EXCL takes its place. The temporary name is removed on every failure.
  void Replace(int dir, const struct stat* old) {
    std::string tmpName;
    bool linked = false;
    UniqueFd fd(openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
    if (!fd.Valid()) {
      if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return (void)Fail("openat(O_TMPFILE)", errno);
      for (int i = 0; i < 16 && !fd.Valid(); i++) {
        tmpName = TempName();
        fd.Reset(Openat2(dir, tmpName.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600,
                         kResolveChild));
        if (!fd.Valid() && errno != EEXIST) return (void)Fail("openat2(temporary)", errno);
      }
      if (!fd.Valid()) return (void)Fail("openat2(temporary)", EEXIST);
      linked = true;
    }
    // From here on a named temporary file is removed whatever happens.
    struct Cleanup {
      int dir;
      const std::string* name;
      const bool* linked;
      bool keep = false;
      ~Cleanup() {
        if (*linked && !keep) unlinkat(dir, name->c_str(), 0);
      }
    } cleanup{dir, &tmpName, &linked};

    int err = 0;
    if (!WriteAll(fd.Get(), data_, &written_, &err)) return (void)Fail("write", err);
    mode_t mode = old ? (old->st_mode & 0777) : (mode_t)fileMode_;
    if (fchmod(fd.Get(), mode) != 0) return (void)Fail("fchmod", errno);
    // Keep the replaced file's owner where we may (the kernel's own credentials); an agent's file is
    // its own anyway.
    if (old) {
      struct stat now;
      if (fstat(fd.Get(), &now) == 0 && (now.st_uid != old->st_uid || now.st_gid != old->st_gid) &&
          fchown(fd.Get(), old->st_uid, old->st_gid) == 0)
        fchmod(fd.Get(), mode);  // chown clears set-id bits; the mode has none, but stay exact
    }
    if (fdatasync(fd.Get()) != 0 && errno != EINVAL && errno != EROFS) return (void)Fail("fdatasync", errno);
    if (!linked) {
      std::string self = "/proc/self/fd/" + std::to_string(fd.Get());
      for (int i = 0; i < 16 && !linked; i++) {
        tmpName = TempName();
        if (linkat(AT_FDCWD, self.c_str(), dir, tmpName.c_str(), AT_SYMLINK_FOLLOW) == 0)
          linked = true;
        else if (errno != EEXIST)
          return (void)Fail("linkat", errno);
      }
      if (!linked) return (void)Fail("linkat", EEXIST);
    }
    if (renameat(dir, tmpName.c_str(), dir, name_.c_str()) != 0) return (void)Fail("renameat", errno);
    cleanup.keep = true;
  }

  std::string dir_;
  std::string name_;
  std::string data_;
  bool append_;
  int fileMode_;
  int64_t written_ = 0;
  bool created_ = false;
  std::string realDir_;
};

// ---- plumbing -----------------------------------------------------------------------------------

void Complete(Napi::Env env, Napi::Function, std::nullptr_t*, Job* raw) {
  std::unique_ptr<Job> job(raw);
  if (env == nullptr) return;  // the environment is going away: nobody waits for the promise
  Napi::HandleScope scope(env);
  try {
    if (job->failure.err) {
      Napi::Error e = SysError(env, job->failure.syscall, job->failure.err);
      if (job->failure.size >= 0) e.Set("size", Napi::Number::New(env, (double)job->failure.size));
      job->deferred.Reject(e.Value());
    } else {
      job->deferred.Resolve(job->Result(env));
    }
  } catch (const Napi::Error& e) {
    job->deferred.Reject(e.Value());
  }
}

// Runs `job` on a thread of its own and returns its promise. The thread starts with every signal
// blocked (Node's handlers must not run on it) and is detached: it ends once it handed the job back.
Napi::Value Start(Napi::Env env, std::unique_ptr<Job> job) {
  Napi::Promise promise = job->deferred.Promise();
  Tsfn tsfn = Tsfn::New(env, "clove_files", 0, 1);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  Job* raw = job.get();
  try {
    std::thread([raw, tsfn]() {
      raw->Execute();
      if (tsfn.BlockingCall(raw) != napi_ok) delete raw;
      tsfn.Release();
    }).detach();
    job.release();
  } catch (const std::system_error& e) {
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    tsfn.Release();
    throw SysError(env, "pthread_create(files)", e.code().value());
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return promise;
}

// ---- options (validated by kernel/sandbox/files.ts; these only guard against garbage) -------------

Napi::Object Options(const Napi::CallbackInfo& info, const char* fn) {
  if (info.Length() < 1 || !info[0].IsObject()) throw OptionError(info.Env(), std::string(fn) + "(options)");
  return info[0].As<Napi::Object>();
}

std::string StrOpt(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw OptionError(o.Env(), std::string(key) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.empty() || s.find('\0') != std::string::npos)
    throw OptionError(o.Env(), std::string(key) + " must be a non-empty string without NUL");
  return s;
}

int64_t IntOpt(const Napi::Object& o, const char* key, int64_t min) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw OptionError(o.Env(), std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != (double)(int64_t)d || (int64_t)d < min)
    throw OptionError(o.Env(), std::string(key) + " out of range");
  return (int64_t)d;
}

bool BoolOpt(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw OptionError(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

// The root fd is duplicated: the job owns its copy, the caller may close its own at once.
UniqueFd RootOpt(const Napi::Object& o) {
  int fd = (int)IntOpt(o, "rootFd", 0);
  UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 3));
  if (!dup.Valid()) throw SysError(o.Env(), "fcntl(rootFd, F_DUPFD_CLOEXEC)", errno);
  return dup;
}

// fsOpenRoot(pid, pidNs): an O_PATH fd of /proc/<pid>/root (pid 0: of /). With pidNs, the process must
// be in that PID namespace: both are read through one /proc/<pid> fd, so a pid reused by another
// process is refused instead of lending us its root.
Napi::Value FsOpenRoot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsString())
    throw OptionError(env, "fsOpenRoot(pid: number, pidNs: string)");
  int64_t pid = info[0].As<Napi::Number>().Int64Value();
  std::string pidNs = info[1].As<Napi::String>().Utf8Value();
  if (pid < 0 || pid > INT32_MAX) throw OptionError(env, "pid out of range");
  if (pid == 0) {
    int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw SysError(env, "open(/)", errno);
    return Napi::Number::New(env, fd);
  }
  std::string procPath = "/proc/" + std::to_string(pid);
  UniqueFd proc(open(procPath.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc.Valid()) throw SysError(env, "open(/proc/<pid>)", errno);
  if (!pidNs.empty()) {
    char buf[128];
    ssize_t n = readlinkat(proc.Get(), "ns/pid", buf, sizeof buf - 1);
    if (n < 0) throw SysError(env, "readlink(/proc/<pid>/ns/pid)", errno);
    if (std::string(buf, (size_t)n) != pidNs) throw SysError(env, "readlink(/proc/<pid>/ns/pid)", ESRCH);
  }
  int fd = openat(proc.Get(), "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw SysError(env, "open(/proc/<pid>/root)", errno);
  return Napi::Number::New(env, fd);
}

Napi::Value FsResolve(const Napi::CallbackInfo& info) {
  Napi::Object o = Options(info, "fsResolve");
  Napi::Env env = info.Env();
  auto job = std::make_unique<ResolveJob>(env, RootOpt(o), IntOpt(o, "uid", -1), IntOpt(o, "gid", -1),
                                          StrOpt(o, "path"), BoolOpt(o, "noSymlinks"));
  return Start(env, std::move(job));
}

Napi::Value FsRead(const Napi::CallbackInfo& info) {
  Napi::Object o = Options(info, "fsRead");
  Napi::Env env = info.Env();
  auto job = std::make_unique<ReadJob>(env, RootOpt(o), IntOpt(o, "uid", -1), IntOpt(o, "gid", -1),
                                       StrOpt(o, "path"), BoolOpt(o, "noSymlinks"), IntOpt(o, "maxBytes", 0),
                                       IntOpt(o, "offset", 0), IntOpt(o, "length", -1));
  return Start(env, std::move(job));
}

Napi::Value FsWrite(const Napi::CallbackInfo& info) {
  Napi::Object o = Options(info, "fsWrite");
  Napi::Env env = info.Env();
  Napi::Value d = o.Get("data");
  if (!d.IsBuffer()) throw OptionError(env, "data must be a Buffer");
  Napi::Buffer<char> buf = d.As<Napi::Buffer<char>>();
  std::string name = StrOpt(o, "name");
  if (name.find('/') != std::string::npos || name == "." || name == "..")
    throw OptionError(env, "name must be one path component");
  int64_t mode = IntOpt(o, "fileMode", 0);
  if (mode > 0777) throw OptionError(env, "fileMode out of range");
  auto job = std::make_unique<WriteJob>(env, RootOpt(o), IntOpt(o, "uid", -1), IntOpt(o, "gid", -1),
                                        StrOpt(o, "dir"), std::move(name), std::string(buf.Data(), buf.Length()),
                                        BoolOpt(o, "append"), (int)mode);
  return Start(env, std::move(job));
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("fsOpenRoot", Napi::Function::New(env, FsOpenRoot, "fsOpenRoot"));
  exports.Set("fsResolve", Napi::Function::New(env, FsResolve, "fsResolve"));
  exports.Set("fsRead", Napi::Function::New(env, FsRead, "fsRead"));
  exports.Set("fsWrite", Napi::Function::New(env, FsWrite, "fsWrite"));
}

}  // namespace clove
