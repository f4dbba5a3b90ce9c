// The JS class MailStore (native/index.d.ts NativeMailStore) over the C++ store of fast.h. Refusals are
// returned as objects, never thrown. Wake-ups for JavaScript waiters (onMail) go through a thread-safe
// function, so JavaScript is never re-entered from inside a store call, whichever thread delivered.
#include <cmath>
#include <limits>
#include <unordered_set>

#include "../exports.h"
#include "napi_store.h"

namespace clove::fast {

namespace {

constexpr uint64_t kUnbounded = std::numeric_limits<uint64_t>::max();

// Budgets and limits from JavaScript: Infinity (an operator's outbox) and anything past 2^64 are unbounded.
uint64_t ToU64(const Napi::Value& v) {
  double d = v.As<Napi::Number>().DoubleValue();
  if (std::isnan(d) || d <= 0) return 0;
  if (!std::isfinite(d) || d >= 18446744073709551615.0) return kUnbounded;
  return static_cast<uint64_t>(d);
}

Napi::Value FromU64(Napi::Env env, uint64_t v) {
  return Napi::Number::New(env, v == kUnbounded ? INFINITY : static_cast<double>(v));
}

uint32_t Id(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "MailStore: id must be a number");
  return info[i].As<Napi::Number>().Uint32Value();
}

std::string Str(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString())
    throw Napi::TypeError::New(info.Env(), std::string("MailStore: ") + what + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

Holder HolderOf(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || !info[i].IsNumber())
    throw Napi::TypeError::New(info.Env(), "MailStore: holder must be a number");
  return static_cast<Holder>(info[i].As<Napi::Number>().Int64Value());
}

Napi::Object MessageObject(Napi::Env env, const Message& m) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("from", Napi::Number::New(env, m.from));
  o.Set("fromName", Napi::String::New(env, m.from_name));
  o.Set("json", Napi::String::New(env, m.json));
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(m.bytes())));
  o.Set("seq", Napi::Number::New(env, static_cast<double>(m.seq)));
  o.Set("sentAt", Napi::Number::New(env, static_cast<double>(m.sent_at_ms)));
  return o;
}

const char* RefusalName(Refusal r) {
  switch (r) {
    case Refusal::MailboxFull: return "mailbox_full";
    case Refusal::OutboxBytes: return "outbox_bytes";
    case Refusal::KernelQueuedBytes: return "kernel_queued_bytes";
    case Refusal::NoBudgets: return "no_budgets";
    case Refusal::Unreachable: return "unreachable";
    default: return "none";
  }
}

// What the listener (any thread) shares with the JS object: the watched ids and the pending wake-ups.
struct Watch : std::enable_shared_from_this<Watch> {
  std::mutex mu;
  bool alive = false;  // a thread-safe function is set
  bool scheduled = false;
  Napi::ThreadSafeFunction tsfn;
  std::unordered_set<uint32_t> watched;
  std::vector<uint32_t> pending;
  std::unordered_set<uint32_t> pending_set;

  void Gained(uint32_t id) {
    std::lock_guard<std::mutex> g(mu);
    if (!alive || !watched.count(id) || !pending_set.insert(id).second) return;
    pending.push_back(id);
    if (scheduled) return;
    scheduled = true;
    std::weak_ptr<Watch> self = weak_from_this();
    auto drain = [self](Napi::Env env, Napi::Function fn) {
      auto w = self.lock();
      if (!w || !fn) return;
      std::vector<uint32_t> ids;
      {
        std::lock_guard<std::mutex> g(w->mu);
        ids.swap(w->pending);
        w->pending_set.clear();
        w->scheduled = false;
      }
      if (ids.empty()) return;
      Napi::Array a = Napi::Array::New(env, ids.size());
      for (size_t i = 0; i < ids.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ids[i]));
      fn.Call({a});
    };
    if (tsfn.NonBlockingCall(drain) != napi_ok) scheduled = false;
  }
};

class JsMailStore : public Napi::ObjectWrap<JsMailStore> {
 public:
  static Napi::FunctionReference ctor;

  explicit JsMailStore(const Napi::CallbackInfo& info) : Napi::ObjectWrap<JsMailStore>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsObject())
      throw Napi::TypeError::New(env, "MailStore: options { queuedBytesLimit, maxReplyBytes, maxDepth } required");
    Napi::Object o = info[0].As<Napi::Object>();
    for (const char* k : {"queuedBytesLimit", "maxReplyBytes", "maxDepth"})
      if (!o.Get(k).IsNumber()) throw Napi::TypeError::New(env, std::string("MailStore: ") + k + " must be a number");
    store = std::make_shared<MailStore>(ToU64(o.Get("queuedBytesLimit")),
                                        static_cast<size_t>(ToU64(o.Get("maxReplyBytes"))),
                                        o.Get("maxDepth").As<Napi::Number>().Int32Value());
    if (o.Has("broadcastToJs")) store->SetBroadcastToJs(o.Get("broadcastToJs").ToBoolean().Value());
    watch = std::make_shared<Watch>();
    std::weak_ptr<Watch> w = watch;
    store->SetJsListener([w](uint32_t id) {
      if (auto s = w.lock()) s->Gained(id);
    });
  }

  ~JsMailStore() override {
    store->SetJsListener(nullptr);
    std::lock_guard<std::mutex> g(watch->mu);
    if (watch->alive) {
      watch->alive = false;
      watch->tsfn.Release();
    }
  }

  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "MailStore",
                       {
                           InstanceMethod<&JsMailStore::SetBudgets>("setBudgets"),
                           InstanceMethod<&JsMailStore::SetReachable>("setReachable"),
                           InstanceMethod<&JsMailStore::Deliver>("deliver"),
                           InstanceMethod<&JsMailStore::Take>("take"),
                           InstanceMethod<&JsMailStore::RequeueLeases>("requeueLeases"),
                           InstanceMethod<&JsMailStore::Size>("size"),
                           InstanceMethod<&JsMailStore::Bytes>("bytes"),
                           InstanceMethod<&JsMailStore::QueuedBytes>("queuedBytes"),
                           InstanceMethod<&JsMailStore::Register>("register"),
                           InstanceMethod<&JsMailStore::Unregister>("unregister"),
                           InstanceMethod<&JsMailStore::Resolve>("resolve"),
                           InstanceMethod<&JsMailStore::NameOf>("nameOf"),
                           InstanceMethod<&JsMailStore::Named>("named"),
                           InstanceMethod<&JsMailStore::Release>("release"),
                           InstanceMethod<&JsMailStore::StatsOf>("stats"),
                           InstanceMethod<&JsMailStore::OnMail>("onMail"),
                           InstanceMethod<&JsMailStore::Watch_>("watch"),
                           InstanceMethod<&JsMailStore::Serve_>("serve"),
                           InstanceMethod<&JsMailStore::Resume_>("resume"),
                           InstanceMethod<&JsMailStore::Push_>("pushMessages"),
                       });
  }

  std::shared_ptr<MailStore> store;
  std::shared_ptr<Watch> watch;

 private:
  void SetBudgets(const Napi::CallbackInfo& info) {
    uint32_t id = Id(info, 0);
    if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(info.Env(), "MailStore: budgets required");
    Napi::Object o = info[1].As<Napi::Object>();
    for (const char* k : {"mailboxMessages", "mailboxBytes", "outboxBytes"})
      if (!o.Get(k).IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("MailStore: ") + k + " must be a number");
    store->SetBudgets(id, {ToU64(o.Get("mailboxMessages")), ToU64(o.Get("mailboxBytes")), ToU64(o.Get("outboxBytes"))});
  }

  void SetReachable(const Napi::CallbackInfo& info) { store->SetReachable(Id(info, 0), info[1].ToBoolean()); }

  Napi::Value Deliver(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t to = Id(info, 0), from = Id(info, 1);
    std::string json = Str(info, 2, "json");
    std::string name;
    bool named = info.Length() > 3 && info[3].IsString();
    if (named) name = info[3].As<Napi::String>().Utf8Value();
    Message m;
    Refused r = store->Deliver(to, from, json, &m, named ? &name : nullptr);
    if (r.why == Refusal::None) return MessageObject(env, m);
    Napi::Object o = Napi::Object::New(env);
    o.Set("refused", RefusalName(r.why));
    o.Set("used", FromU64(env, r.used));
    o.Set("bytes", FromU64(env, r.bytes));
    o.Set("limit", FromU64(env, r.limit));
    o.Set("limitBytes", FromU64(env, r.limit_bytes));
    return o;
  }

  Napi::Value Take(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t id = Id(info, 0);
    size_t max = static_cast<size_t>(ToU64(info[1]));
    Holder h = HolderOf(info, 2);
    bool lease = info[3].ToBoolean();
    size_t max_bytes = info.Length() > 4 && info[4].IsNumber() ? static_cast<size_t>(ToU64(info[4])) : SIZE_MAX;
    std::vector<Message> ms = store->Take(id, max, h, lease, max_bytes);
    Napi::Array a = Napi::Array::New(env, ms.size());
    for (size_t i = 0; i < ms.size(); i++) a.Set(static_cast<uint32_t>(i), MessageObject(env, ms[i]));
    return a;
  }

  Napi::Value RequeueLeases(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store->RequeueLeases(Id(info, 0), HolderOf(info, 1))));
  }
  Napi::Value Size(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store->Size(Id(info, 0))));
  }
  Napi::Value Bytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store->Bytes(Id(info, 0))));
  }
  Napi::Value QueuedBytes(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store->QueuedBytes()));
  }
  Napi::Value Register(const Napi::CallbackInfo& info) {
    int64_t max_extra = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : -1;
    if (info.Length() > 2 && info[2].IsNumber() && !std::isfinite(info[2].As<Napi::Number>().DoubleValue()))
      max_extra = -1;
    return Napi::String::New(info.Env(), store->Register(Id(info, 0), Str(info, 1, "name"), max_extra));
  }
  Napi::Value Unregister(const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), store->Unregister(Id(info, 0), Str(info, 1, "name")));
  }
  Napi::Value Resolve(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(store->Resolve(Str(info, 0, "name"))));
  }
  Napi::Value NameOf(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), store->NameOf(Id(info, 0))); }
  Napi::Value Named(const Napi::CallbackInfo& info) {
    std::vector<uint32_t> ids = store->Named();
    Napi::Array a = Napi::Array::New(info.Env(), ids.size());
    for (size_t i = 0; i < ids.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), ids[i]));
    return a;
  }
  void Release(const Napi::CallbackInfo& info) { store->Release(Id(info, 0)); }
  Napi::Value StatsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Stats s = store->StatsOf(Id(info, 0));
    Napi::Object o = Napi::Object::New(env);
    o.Set("syscalls", Napi::Number::New(env, static_cast<double>(s.syscalls)));
    o.Set("sent", Napi::Number::New(env, static_cast<double>(s.sent)));
    o.Set("received", Napi::Number::New(env, static_cast<double>(s.received)));
    o.Set("lastActiveMs", Napi::Number::New(env, static_cast<double>(s.last_active_ms)));
    return o;
  }

  // The batch of ids reaches `fn` on the JS thread; the function is unref'd (it never keeps Node alive).
  void OnMail(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "MailStore: onMail needs a function");
    auto tsfn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "clove.MailStore.onMail", 0, 1);
    tsfn.Unref(env);
    std::lock_guard<std::mutex> g(watch->mu);
    if (watch->alive) watch->tsfn.Release();
    watch->tsfn = tsfn;
    watch->alive = true;
    watch->scheduled = false;
  }

  void Watch_(const Napi::CallbackInfo& info) {
    uint32_t id = Id(info, 0);
    bool on = info[1].ToBoolean();
    std::lock_guard<std::mutex> g(watch->mu);
    if (on)
      watch->watched.insert(id);
    else
      watch->watched.erase(id);
  }

  // Test-only (index.d.ts): Serve() for one frame's payload, without a reactor.
  Napi::Value Serve_(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 4 || !info[3].IsBuffer()) throw Napi::TypeError::New(env, "MailStore.serve: payload must be a Buffer");
    auto buf = info[3].As<Napi::Buffer<char>>();
    Call c;
    c.caller = Id(info, 0);
    c.holder = HolderOf(info, 1);
    c.opcode = static_cast<uint8_t>(info[2].As<Napi::Number>().Uint32Value());
    c.payload = std::string_view(buf.Data(), buf.Length());
    std::string out;
    ParkedRecv park;
    Verdict v = Serve(*store, c, out, &park);
    Napi::Object o = Napi::Object::New(env);
    o.Set("verdict", v == Verdict::Done ? "done" : v == Verdict::ToJs ? "tojs" : "park");
    o.Set("out", Napi::Buffer<char>::Copy(env, out.data(), out.size()));
    if (v == Verdict::Park) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("id", Napi::Number::New(env, park.id));
      p.Set("holder", Napi::Number::New(env, static_cast<double>(park.holder)));
      p.Set("max", Napi::Number::New(env, static_cast<double>(park.max)));
      p.Set("lease", Napi::Boolean::New(env, park.lease));
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(park.deadline - std::chrono::steady_clock::now());
      p.Set("timeoutMs", Napi::Number::New(env, static_cast<double>(left.count())));
      o.Set("park", p);
    }
    return o;
  }

  // Test-only: Resume() of a parked RECV ({id, holder, max, lease} as serve() returned it).
  Napi::Value Resume_(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object p = info[0].As<Napi::Object>();
    ParkedRecv park;
    park.id = p.Get("id").As<Napi::Number>().Uint32Value();
    park.holder = static_cast<Holder>(p.Get("holder").As<Napi::Number>().Int64Value());
    park.max = static_cast<size_t>(p.Get("max").As<Napi::Number>().Int64Value());
    park.lease = p.Get("lease").ToBoolean();
    std::string out;
    if (!Resume(*store, park, info[1].ToBoolean(), out)) return env.Null();
    return Napi::Buffer<char>::Copy(env, out.data(), out.size());
  }

  // Test-only: PushMessages(); the PUSH frames it wrote.
  Napi::Value Push_(const Napi::CallbackInfo& info) {
    std::string out;
    size_t max_bytes = info.Length() > 4 && !info[4].IsUndefined() ? static_cast<size_t>(ToU64(info[4])) : SIZE_MAX;
    PushFormat format = info.Length() > 5 && info[5].ToBoolean().Value() ? PushFormat::Binary : PushFormat::Json;
    PushMessages(*store, Id(info, 0), HolderOf(info, 1), static_cast<size_t>(ToU64(info[2])), max_bytes,
                 info.Length() > 3 && info[3].ToBoolean().Value(), format, out);
    return Napi::Buffer<char>::Copy(info.Env(), out.data(), out.size());
  }
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
namespace {
// messageSpans(payload, batch): fast::MessageSpans for JavaScript, a Uint32Array of pairs, or null.
Napi::Value MessageSpansJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsBoolean())
    throw Napi::TypeError::New(env, "messageSpans(payload: Buffer, batch: boolean)");
  auto buf = info[0].As<Napi::Buffer<char>>();
  std::vector<uint32_t> spans;
  if (!fast::MessageSpans(std::string_view(buf.Data(), buf.Length()), info[1].As<Napi::Boolean>().Value(), spans))
    return env.Null();
  Napi::Uint32Array out = Napi::Uint32Array::New(env, spans.size());
  std::copy(spans.begin(), spans.end(), out.Data());
  return out;
}
}  // namespace

void InitMailStore(Napi::Env env, Napi::Object exports) {
  using fast::JsMailStore;
  Napi::Function f = JsMailStore::Define(env);
  JsMailStore::ctor = Napi::Persistent(f);
  exports.Set("MailStore", f);
  exports.Set("messageSpans", Napi::Function::New(env, MessageSpansJs));
}
}  // namespace clove
