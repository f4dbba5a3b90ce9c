#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <thread>

#include "errors.h"
#include "exports.h"

namespace clove {

// createEmptyNetns(): an fd to a fresh network namespace with nothing in it (not even lo up). Made on a
// throw-away thread, because unshare(CLONE_NEWNET) moves only the calling thread and we must not move
// Node's. Created once per kernel: creating a netns per agent is slow and serialised in the kernel.
static Napi::Value CreateEmptyNetns(const Napi::CallbackInfo& info) {
  int fd = -1;
  int err = 0;
  const char* step = "";
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      err = errno;
      step = "unshare(CLONE_NEWNET)";
      return;
    }
    fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      err = errno;
      step = "open(/proc/thread-self/ns/net)";
    }
  });
  t.join();
  if (fd < 0) throw SysError(info.Env(), step, err);
  return Napi::Number::New(info.Env(), fd);
}

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("createEmptyNetns", Napi::Function::New(env, CreateEmptyNetns, "createEmptyNetns"));
}

}  // namespace clove
