// setNofile(): the kernel daemon's own RLIMIT_NOFILE (Node can read it from /proc but cannot set it).
#include <errno.h>
#include <sys/resource.h>

#include "errors.h"
#include "exports.h"

namespace clove {

// setNofile(soft, hard): setrlimit(RLIMIT_NOFILE) of this process. Raising the hard limit needs
// CAP_SYS_RESOURCE (EPERM otherwise) and stays at most fs.nr_open (EPERM too); the caller decides what
// to ask for (kernel/core/rlimits.ts).
static Napi::Value SetNofile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) throw OptionError(env, "setNofile(soft: number, hard: number)");
  double soft = info[0].As<Napi::Number>().DoubleValue();
  double hard = info[1].As<Napi::Number>().DoubleValue();
  if (!(soft >= 0) || !(hard >= soft)) throw OptionError(env, "setNofile: need 0 <= soft <= hard");
  struct rlimit rl {(rlim_t)soft, (rlim_t)hard};
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0) throw SysError(env, "setrlimit(RLIMIT_NOFILE)", errno);
  return env.Undefined();
}

void InitRlimit(Napi::Env env, Napi::Object exports) {
  exports.Set("setNofile", Napi::Function::New(env, SetNofile, "setNofile"));
}

}  // namespace clove
