// Helpers shared by the two places that clone a child (spawn.cc, userns.cc): a private stack for a
// CLONE_VM child, and writing a /proc/<pid>/ file (uid_map, gid_map, setgroups) with the error naming it.
#pragma once
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <unistd.h>

#include <string>

#include "errors.h"
#include "fd.h"

namespace clove {

// An anonymous stack for a CLONE_VM child, unmapped when the clone is over (the child exec'd or exited).
template <size_t N>
class MappedStack {
 public:
  static constexpr size_t kSize = N;
  MappedStack() {
    void* p = mmap(nullptr, N, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    base_ = p == MAP_FAILED ? nullptr : p;
  }
  ~MappedStack() {
    if (base_) munmap(base_, N);
  }
  MappedStack(const MappedStack&) = delete;
  MappedStack& operator=(const MappedStack&) = delete;
  void* Base() const { return base_; }

 private:
  void* base_ = nullptr;
};

// Writes /proc/<pid>/<name>. Returns 0, or the errno of the step that failed with *what naming it; no
// JavaScript involved, so a spawn thread may call it.
inline int TryWriteProcFile(pid_t pid, const char* name, const std::string& content, std::string* what) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  UniqueFd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd.Valid()) {
    int err = errno;
    *what = std::string("open(/proc/<pid>/") + name + ")";
    return err;
  }
  ssize_t n = write(fd.Get(), content.data(), content.size());
  if (n != (ssize_t)content.size()) {
    int err = n < 0 ? errno : EIO;
    *what = std::string("write(/proc/<pid>/") + name + ")";
    return err;
  }
  return 0;
}

inline void WriteProcFile(Napi::Env env, pid_t pid, const char* name, const std::string& content) {
  std::string what;
  int err = TryWriteProcFile(pid, name, content, &what);
  if (err != 0) throw SysError(env, what, err);
}

}  // namespace clove
