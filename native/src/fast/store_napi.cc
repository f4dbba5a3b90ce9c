// STUB (issue 12 helper "store" replaces this file): the JS MailStore class.
#include "napi_store.h"

#include "../exports.h"

namespace clove::fast {

namespace {
class JsMailStore : public Napi::ObjectWrap<JsMailStore> {
 public:
  static Napi::FunctionReference ctor;
  explicit JsMailStore(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsMailStore>(info) {
    store = std::make_shared<MailStore>(1 << 30, 8 << 20, 64);
  }
  std::shared_ptr<MailStore> store;
};
Napi::FunctionReference JsMailStore::ctor;
}  // namespace

std::shared_ptr<MailStore> UnwrapMailStore(const Napi::Value& v) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(JsMailStore::ctor.Value()))
    throw Napi::TypeError::New(v.Env(), "store: expected a MailStore");
  return JsMailStore::Unwrap(v.As<Napi::Object>())->store;
}

}  // namespace clove::fast

namespace clove {
void InitMailStore(Napi::Env env, Napi::Object exports) {
  using fast::JsMailStore;
  Napi::Function f = JsMailStore::DefineClass(env, "MailStore", {});
  JsMailStore::ctor = Napi::Persistent(f);
  exports.Set("MailStore", f);
}
}  // namespace clove
