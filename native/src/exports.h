// One initialiser per source file; addon.cc calls them all.
#pragma once
#include <napi.h>

namespace clove {
void InitPeerCred(Napi::Env env, Napi::Object exports);
void InitSpawn(Napi::Env env, Napi::Object exports);
void InitNetns(Napi::Env env, Napi::Object exports);
void InitUserns(Napi::Env env, Napi::Object exports);
void InitFiles(Napi::Env env, Napi::Object exports);
void InitEnter(Napi::Env env, Napi::Object exports);
void InitRlimit(Napi::Env env, Napi::Object exports);
// The fast path (src/fast/, docs/fastpath.md).
void InitMailStore(Napi::Env env, Napi::Object exports);
void InitReactor(Napi::Env env, Napi::Object exports);
}  // namespace clove
