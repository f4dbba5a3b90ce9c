#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

#include "clone3.h"
#include "errors.h"
#include "exports.h"
#include "fd.h"
#include "proc.h"


namespace clove {
namespace {

// Body of the short-lived userns holder. It shares our memory (CLONE_VM) and fd table (CLONE_FILES) and
// runs with every signal blocked, so it only makes raw syscalls: it blocks until the parent closes the
// pipe's write end (read returns 0, errno untouched), then returns, which exits it.
int HoldUserns(void* arg) {
  int fd = (int)(intptr_t)arg;
  char c;
  syscall(SYS_read, fd, &c, 1);
  return 0;
}

// Owns the holder while it lives: releasing it (closing the write end it waits on) and reaping it are
// tied to scope, so no error path can leave it blocked or a zombie. Destroyed before its stack.
class Holder {
 public:
  Holder(UniqueFd release, UniqueFd pidfd) : release_(std::move(release)), pidfd_(std::move(pidfd)) {}
  Holder(const Holder&) = delete;
  Holder& operator=(const Holder&) = delete;
  ~Holder() {
    release_.Reset();
    siginfo_t si;
    while (waitid((idtype_t)P_PIDFD, pidfd_.Get(), &si, WEXITED) < 0 && errno == EINTR) {
    }
  }

 private:
  UniqueFd release_;
  UniqueFd pidfd_;
};

using HolderStack = MappedStack<64 * 1024>;

// createIdmapUserns(uidMap, gidMap): an fd to a new user namespace with these maps, for
// mount_setattr(MOUNT_ATTR_IDMAP) in spawn(). No process ever runs in it: it only describes an idmapping.
// unshare(CLONE_NEWUSER) is refused to a multithreaded process (Node), so a child cloned with
// CLONE_NEWUSER holds the namespace while we write its maps and open /proc/<pid>/ns/user; then it is
// released and reaped. CLONE_VM|CLONE_FILES (where CloneVm exists) spare the copy of Node's page tables
// and fd table.
Napi::Value CreateIdmapUserns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsString())
    throw OptionError(env, "createIdmapUserns(uidMap: string, gidMap: string)");
  std::string uidMap = info[0].As<Napi::String>().Utf8Value();
  std::string gidMap = info[1].As<Napi::String>().Utf8Value();

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw SysError(env, "pipe2(userns holder)", errno);
  UniqueFd rd(fds[0]), wr(fds[1]);
  HolderStack stack;
  bool shareVm = CloneVmSupported();
  if (shareVm && !stack.Base()) throw SysError(env, "mmap(userns holder stack)", errno);

  int pidfdRaw = -1;
  CloneArgs args{};
  args.flags = CLONE_PIDFD | CLONE_NEWUSER | CLONE_FILES;
  args.pidfd = reinterpret_cast<uint64_t>(&pidfdRaw);
  args.exit_signal = SIGCHLD;

  // All signals stay blocked in the holder (it inherits this mask and never changes it): none of Node's
  // handlers may run on its stack in our address space.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  long pid;
  int cloneErr = 0;
  if (shareVm) {
    args.flags |= CLONE_VM;
    args.stack = reinterpret_cast<uint64_t>(stack.Base());
    args.stack_size = HolderStack::kSize;
    pid = CloneVm(&args, HoldUserns, (void*)(intptr_t)rd.Get());
    if (pid < 0) {
      cloneErr = (int)-pid;
      pid = -1;
    }
  } else {
    pid = syscall(SYS_clone3, &args, sizeof(args));
    if (pid == 0) _exit(HoldUserns((void*)(intptr_t)rd.Get()));
    cloneErr = errno;
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) throw SysError(env, "clone3(CLONE_NEWUSER)", cloneErr);

  UniqueFd ns;
  {
    Holder holder(std::move(wr), UniqueFd(pidfdRaw));
    WriteProcFile(env, (pid_t)pid, "uid_map", uidMap);
    WriteProcFile(env, (pid_t)pid, "gid_map", gidMap);
    std::string path = "/proc/" + std::to_string(pid) + "/ns/user";
    ns.Reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.Valid()) throw SysError(env, "open(/proc/<pid>/ns/user)", errno);
  }  // holder released and reaped here, before rd and the stack go
  return Napi::Number::New(env, ns.Release());
}

}  // namespace

void InitUserns(Napi::Env env, Napi::Object exports) {
  exports.Set("createIdmapUserns", Napi::Function::New(env, CreateIdmapUserns, "createIdmapUserns"));
}

}  // namespace clove
