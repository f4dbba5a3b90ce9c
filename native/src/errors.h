// Errors thrown by the addon carry the failing syscall and errno, so TypeScript can map them to typed
// classes (kernel/sandbox/errors.ts) without parsing messages.
#pragma once
#include <napi.h>

#include <string>

namespace clove {

// Returns a JS Error: message "<syscall>: <ENAME> (<strerror>)", properties syscall, errno, code.
Napi::Error SysError(Napi::Env env, const std::string& syscall, int err);

// Returns a JS TypeError for a malformed options object (the TypeScript layer validates first;
// this only guards the addon against being called directly with garbage).
Napi::TypeError OptionError(Napi::Env env, const std::string& what);

// Name of an errno value ("EPERM"), or "E<number>" for unknown values.
std::string ErrnoName(int err);

}  // namespace clove
