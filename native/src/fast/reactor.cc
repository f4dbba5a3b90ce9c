// STUB (issue 12 helper "reactor" replaces this file): the reactor thread and the JS Reactor class.
#include "../exports.h"
#include "napi_store.h"

namespace clove {
void InitReactor(Napi::Env, Napi::Object) {}
}  // namespace clove
