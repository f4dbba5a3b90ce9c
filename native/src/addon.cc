// clove_native: the mechanical half of the sandbox. Syscalls and fds only; every default, every
// policy decision and every validation lives in kernel/sandbox/*.ts.
#include <napi.h>

#include "exports.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  clove::InitPeerCred(env, exports);
  clove::InitSpawn(env, exports);
  clove::InitNetns(env, exports);
  clove::InitUserns(env, exports);
  clove::InitFiles(env, exports);
  clove::InitEnter(env, exports);
  clove::InitRlimit(env, exports);
  clove::InitMailStore(env, exports);
  clove::InitReactor(env, exports);
  return exports;
}

NODE_API_MODULE(clove_native, Init)
