#include "errors.h"

#include <string.h>

namespace clove {

std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  if (name) return name;
  std::string out = "E";
  out += std::to_string(err);
  return out;
}

Napi::Error SysError(Napi::Env env, const std::string& syscall, int err) {
  std::string code = ErrnoName(err);
  Napi::Error e = Napi::Error::New(env, syscall + ": " + code + " (" + strerror(err) + ")");
  e.Set("syscall", Napi::String::New(env, syscall));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, code));
  return e;
}

Napi::TypeError OptionError(Napi::Env env, const std::string& what) {
  return Napi::TypeError::New(env, "clove_native: invalid option: " + what);
}

}  // namespace clove
