// Reading the addon's one options object (spawn.cc, enter.cc): the TypeScript layer validated
// everything, these only guard against garbage and name the field that was wrong.
#pragma once
#include <napi.h>

#include <string>
#include <vector>

#include "errors.h"

namespace clove {

inline std::string Str(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) throw OptionError(o.Env(), std::string(key) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos) throw OptionError(o.Env(), std::string(key) + " contains NUL");
  return s;
}

inline int64_t Int(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw OptionError(o.Env(), std::string(key) + " must be a number");
  return v.As<Napi::Number>().Int64Value();
}

inline bool Bool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsBoolean()) throw OptionError(o.Env(), std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

inline std::vector<std::string> StrArray(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
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

}  // namespace clove
