// SEND, SEND_BATCH, RECV and BROADCAST served without JavaScript (docs/fastpath.md, Rule 1): a call is
// completed here only when it is in the plain shape and succeeds; anything else is handed to JavaScript
// untouched (Verdict::ToJs), which serves it over the same store with the kernel's errors and audit.
//
// Parsing: the kernel's own depth scan (kernel/core/validate.ts checkDepth), then a simdjson DOM parse of
// the whole payload (syntax, UTF-8, numbers in range, anywhere), then an On-Demand pass over the envelope
// for the fields and the message's raw bytes, which are queued byte for byte.
#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>
#include <limits>

#include "fast.h"

namespace clove::fast {

namespace {

using simdjson::error_code;
namespace od = simdjson::ondemand;

// Per thread: the payload copied with simdjson's padding, and the parsers (reused: no allocation per call).
struct Parsers {
  std::string padded;
  od::parser ondemand;
  simdjson::dom::parser dom;
};
thread_local Parsers tl;

// kernel/core/validate.ts checkDepth, byte for byte: brackets outside strings, deeper than `max` refuses.
bool DepthOk(std::string_view p, int max) {
  int depth = 0;
  const char* s = p.data();
  size_t n = p.size();
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '"') {
      size_t j = i;
      for (;;) {
        const void* q = std::memchr(s + j + 1, '"', n - j - 1);
        if (!q) return true;  // unterminated: the parser says so
        j = static_cast<const char*>(q) - s;
        size_t k = j - 1;
        while (k < n && s[k] == '\\') k--;
        if ((j - 1 - k) % 2 == 0) break;
      }
      i = j;
    } else if (c == '[' || c == '{') {
      if (++depth > max) return false;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  return true;
}

// Copies `p` into the thread's padded buffer (simdjson reads past the end of its input).
simdjson::padded_string_view Pad(std::string_view p) {
  tl.padded.resize(p.size() + simdjson::SIMDJSON_PADDING);
  std::memcpy(tl.padded.data(), p.data(), p.size());
  std::memset(tl.padded.data() + p.size(), 0, simdjson::SIMDJSON_PADDING);
  return simdjson::padded_string_view(tl.padded.data(), p.size(), tl.padded.size());
}

// Pads `p` and checks it completely (depth, then syntax and numbers).
bool Prepare(std::string_view p, int max_depth, simdjson::padded_string_view& out) {
  if (!DepthOk(p, max_depth)) return false;
  out = Pad(p);
  simdjson::dom::element e;
  if (tl.dom.parse(tl.padded.data(), p.size(), false).get(e)) return false;
  return e.is_object();
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The bytes of one value as they stand in the payload (without the whitespace after it).
bool RawValue(od::value v, std::string_view& raw) {
  od::json_type t;
  if (v.type().get(t)) return false;
  if (t == od::json_type::object) {
    od::object o;
    if (v.get_object().get(o) || o.raw_json().get(raw)) return false;
  } else if (t == od::json_type::array) {
    od::array a;
    if (v.get_array().get(a) || a.raw_json().get(raw)) return false;
  } else {
    raw = v.raw_json_token();
  }
  while (!raw.empty() && IsSpace(raw.back())) raw.remove_suffix(1);
  return !raw.empty();
}

// JavaScript's Number.MAX_SAFE_INTEGER: the contract's bound of an integer a client may send.
constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;

// One SEND (or SEND_BATCH item): where to, and the message's bytes.
struct Target {
  uint64_t to = 0;
  bool has_name = false;
  std::string to_name;
  bool has_message = false;
  std::string_view message;
};

// Reads `to`, `to_name`, `message` of one object; false for anything not in the plain shape.
bool ReadTarget(od::object obj, Target& t) {
  bool seen_to = false;
  for (auto f : obj) {
    od::field field;
    if (std::move(f).get(field)) return false;
    std::string_view key;
    if (field.unescaped_key().get(key)) return false;
    if (key == "to") {
      if (seen_to) return false;
      seen_to = true;
      if (field.value().get_uint64().get(t.to) || t.to > std::numeric_limits<uint32_t>::max()) return false;
    } else if (key == "to_name") {
      if (t.has_name) return false;
      t.has_name = true;
      std::string_view n;
      if (field.value().get_string().get(n)) return false;
      t.to_name.assign(n);
    } else if (key == "message") {
      if (t.has_message) return false;
      t.has_message = true;
      if (!RawValue(field.value(), t.message)) return false;
    }
    // Other fields: allowed by the contract, already validated by the DOM pass, skipped.
  }
  return true;
}

// SEND's target resolution (kernel/syscalls/ipc/index.ts): `to` wins (0 is absent), then `to_name`.
bool Resolve(MailStore& store, const Target& t, uint32_t& to) {
  if (t.to) {
    to = static_cast<uint32_t>(t.to);
    return true;
  }
  if (!t.has_name || t.to_name.empty()) return false;
  int64_t id = store.Resolve(t.to_name);
  if (id < 0) return false;
  to = static_cast<uint32_t>(id);
  return true;
}

std::string_view MessageOf(const Target& t) { return t.has_message ? t.message : std::string_view("{}"); }

// JSON.stringify of a string (the escapes V8 writes), appended to `s`.
void AppendJsonString(std::string& s, std::string_view v) {
  static const char* hex = "0123456789abcdef";
  s += '"';
  // Names are plain: one append when nothing needs escaping.
  if (std::none_of(v.begin(), v.end(), [](char ch) {
        auto c = static_cast<unsigned char>(ch);
        return c < 0x20 || c == '"' || c == '\\';
      })) {
    s.append(v);
    s += '"';
    return;
  }
  for (unsigned char c : v) {
    switch (c) {
      case '"': s += "\\\""; break;
      case '\\': s += "\\\\"; break;
      case '\b': s += "\\b"; break;
      case '\f': s += "\\f"; break;
      case '\n': s += "\\n"; break;
      case '\r': s += "\\r"; break;
      case '\t': s += "\\t"; break;
      default:
        if (c < 0x20) {
          s += "\\u00";
          s += hex[c >> 4];
          s += hex[c & 15];
        } else {
          s += static_cast<char>(c);
        }
    }
  }
  s += '"';
}

// Appends the decimal digits of `n` (std::to_string without the temporary).
template <typename T>
void AppendNumber(std::string& s, T n) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, n);
  s.append(buf, r.ptr);
}

// One message as RECV's reply carries it (push: with "kind":"message" in front, as kernel/ipc/push.ts).
void AppendMessage(std::string& s, const Message& m, int64_t now, bool push) {
  s += push ? "{\"kind\":\"message\",\"from\":" : "{\"from\":";
  AppendNumber(s, m.from);
  s += ",\"from_name\":";
  AppendJsonString(s, m.from_name);
  s += ",\"message\":";
  s += m.json;
  s += ",\"age_ms\":";
  AppendNumber(s, now - m.sent_at_ms);
  s += ",\"seq\":";
  AppendNumber(s, m.seq);
  s += '}';
}

// `"messages":[RECV's items],"count":n}`: the end of a RECV reply and of a batched PUSH alike.
void AppendMessageList(std::string& s, const std::vector<Message>& ms, int64_t now) {
  s += "\"messages\":[";
  for (size_t i = 0; i < ms.size(); i++) {
    if (i) s += ',';
    AppendMessage(s, ms[i], now, false);
  }
  s += "],\"count\":";
  AppendNumber(s, ms.size());
  s += '}';
}

// A frame written in place (no copy of its payload): BeginFrame writes the header of AppendFrame,
// FinishFrame sets its size once the payload is appended after it.
size_t BeginFrame(std::string& out, uint32_t id, uint8_t opcode) {
  size_t at = out.size();
  AppendFrame(out, id, opcode, {});
  return at;
}

void FinishFrame(std::string& out, size_t at) {
  uint64_t size = out.size() - at - kHeaderSize;
  std::memcpy(out.data() + at + 9, &size, 8);
}

// RECV's reply frame for what was taken; counts the call.
void ReplyRecv(MailStore& store, uint32_t id, const std::vector<Message>& ms, std::string& out) {
  int64_t now = NowMs();
  size_t total = 64;
  for (const Message& m : ms) total += m.json.size() + m.from_name.size() + 80;
  out.reserve(out.size() + kHeaderSize + total);
  size_t at = BeginFrame(out, id, kOpRecv);
  out += "{\"success\":true,";
  AppendMessageList(out, ms, now);
  FinishFrame(out, at);
  store.Count(id, 1, 0, ms.size());
}

Verdict ServeSend(MailStore& store, const Call& call, od::document& doc, std::string& out) {
  od::object obj;
  if (doc.get_object().get(obj)) return Verdict::ToJs;
  Target t;
  if (!ReadTarget(obj, t)) return Verdict::ToJs;
  uint32_t to;
  if (!Resolve(store, t, to)) return Verdict::ToJs;
  thread_local std::vector<MailStore::Delivery> one(1);
  one[0] = {to, MessageOf(t)};
  if (store.DeliverAll(call.caller, one, true).why != Refusal::None) return Verdict::ToJs;
  store.Count(call.caller, 1, 1, 0);
  size_t at = BeginFrame(out, call.caller, call.opcode);
  out += "{\"success\":true,\"delivered_to\":";
  AppendNumber(out, to);
  out += '}';
  FinishFrame(out, at);
  return Verdict::Done;
}

Verdict ServeSendBatch(MailStore& store, const Call& call, od::document& doc, std::string& out) {
  od::object obj;
  if (doc.get_object().get(obj)) return Verdict::ToJs;
  std::vector<Target> items;
  bool seen = false, seen_results = false, seen_ref = false, all = true, quiet = false;
  for (auto f : obj) {
    od::field field;
    if (std::move(f).get(field)) return Verdict::ToJs;
    std::string_view key;
    if (field.unescaped_key().get(key)) return Verdict::ToJs;
    if (key == "results") {
      // "all" (the default), "refused" or "none"; anything else is JavaScript's to refuse.
      std::string_view v;
      if (seen_results || field.value().get_string().get(v)) return Verdict::ToJs;
      if (v != "all" && v != "refused" && v != "none") return Verdict::ToJs;
      seen_results = true;
      all = v == "all";
      quiet = v == "none";
      continue;
    }
    if (key == "ref") {
      // Only echoed in a SEND_REFUSED (JavaScript's): checked here as the contract checks it.
      uint64_t ref;
      if (seen_ref || field.value().get_uint64().get(ref) || ref > kMaxSafeInteger) return Verdict::ToJs;
      seen_ref = true;
      continue;
    }
    if (key != "messages") continue;
    if (seen) return Verdict::ToJs;
    seen = true;
    od::array arr;
    if (field.value().get_array().get(arr)) return Verdict::ToJs;
    for (auto e : arr) {
      od::object item;
      if (e.get_object().get(item)) return Verdict::ToJs;
      if (items.size() >= 4096) return Verdict::ToJs;
      items.emplace_back();
      if (!ReadTarget(item, items.back())) return Verdict::ToJs;
    }
  }
  if (items.empty()) return Verdict::ToJs;
  std::vector<MailStore::Delivery> ds;
  ds.reserve(items.size());
  for (const Target& t : items) {
    uint32_t to;
    if (!Resolve(store, t, to)) return Verdict::ToJs;
    ds.push_back({to, MessageOf(t)});
  }
  if (store.DeliverAll(call.caller, ds, true).why != Refusal::None) return Verdict::ToJs;
  store.Count(call.caller, 1, ds.size(), 0);
  // "none": a batch whose every item was queued is not answered (a refusal is JavaScript's SEND_REFUSED).
  if (quiet) return Verdict::Done;
  out.reserve(out.size() + kHeaderSize + 96 + (all ? ds.size() * 28 : 0));
  size_t at = BeginFrame(out, call.caller, call.opcode);
  out += "{\"success\":true,\"delivered_count\":";
  AppendNumber(out, ds.size());
  out += ",\"failed_count\":0,\"results\":[";
  // Only a batch whose every item was delivered is served here: `refused` lists none.
  for (size_t i = 0; all && i < ds.size(); i++) {
    if (i) out += ',';
    out += "{\"delivered_to\":";
    AppendNumber(out, ds[i].to);
    out += '}';
  }
  out += "]}";
  FinishFrame(out, at);
  return Verdict::Done;
}

Verdict ServeBroadcast(MailStore& store, const Call& call, od::document& doc, std::string& out) {
  if (store.broadcast_to_js()) return Verdict::ToJs;
  od::object obj;
  if (doc.get_object().get(obj)) return Verdict::ToJs;
  bool has_message = false, has_self = false, include_self = false;
  std::string_view message = "{}";
  for (auto f : obj) {
    od::field field;
    if (std::move(f).get(field)) return Verdict::ToJs;
    std::string_view key;
    if (field.unescaped_key().get(key)) return Verdict::ToJs;
    if (key == "message") {
      if (has_message) return Verdict::ToJs;
      has_message = true;
      if (!RawValue(field.value(), message)) return Verdict::ToJs;
    } else if (key == "include_self") {
      if (has_self) return Verdict::ToJs;
      has_self = true;
      if (field.value().get_bool().get(include_self)) return Verdict::ToJs;
    }
  }
  std::vector<MailStore::Delivery> ds;
  for (uint32_t id : store.Named()) {
    if ((id == call.caller && !include_self) || !store.Reachable(id)) continue;
    ds.push_back({id, message});
  }
  // Reachability is checked again under the lock: a target gone in between sends the call to JavaScript.
  if (!ds.empty() && store.DeliverAll(call.caller, ds, true).why != Refusal::None) return Verdict::ToJs;
  store.Count(call.caller, 1, ds.size(), 0);
  size_t at = BeginFrame(out, call.caller, call.opcode);
  out += "{\"success\":true,\"delivered_count\":";
  AppendNumber(out, ds.size());
  out += ",\"failed_count\":0}";
  FinishFrame(out, at);
  return Verdict::Done;
}

Verdict ServeRecv(MailStore& store, const Call& call, od::document& doc, std::string& out, ParkedRecv* park) {
  od::object obj;
  if (doc.get_object().get(obj)) return Verdict::ToJs;
  uint64_t max = 10, timeout_ms = 30000;
  bool wait = false, lease = false;
  unsigned seen = 0;
  for (auto f : obj) {
    od::field field;
    if (std::move(f).get(field)) return Verdict::ToJs;
    std::string_view key;
    if (field.unescaped_key().get(key)) return Verdict::ToJs;
    unsigned bit = key == "max" ? 1 : key == "wait" ? 2 : key == "timeout_ms" ? 4 : key == "lease" ? 8 : 0;
    if (!bit) continue;
    if (seen & bit) return Verdict::ToJs;
    seen |= bit;
    od::value v = field.value();
    bool bad = bit == 1   ? v.get_uint64().get(max) != simdjson::SUCCESS
               : bit == 2 ? v.get_bool().get(wait) != simdjson::SUCCESS
               : bit == 4 ? v.get_uint64().get(timeout_ms) != simdjson::SUCCESS
                          : v.get_bool().get(lease) != simdjson::SUCCESS;
    if (bad) return Verdict::ToJs;
  }
  if (max > 10000 || timeout_ms > 300000) return Verdict::ToJs;
  if (wait && max > 0 && store.Size(call.caller) == 0) {
    if (!park) return Verdict::ToJs;
    park->id = call.caller;
    park->holder = call.holder;
    park->max = max;
    park->lease = lease;
    park->deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    return Verdict::Park;
  }
  ReplyRecv(store, call.caller, store.Take(call.caller, max, call.holder, lease, store.max_reply_bytes()), out);
  return Verdict::Done;
}

}  // namespace

Verdict Serve(MailStore& store, const Call& call, std::string& out, ParkedRecv* park) {
  if (call.opcode != kOpSend && call.opcode != kOpSendBatch && call.opcode != kOpRecv &&
      call.opcode != kOpBroadcast)
    return Verdict::ToJs;
  // A huge frame (a big SEND_BATCH) grows the thread's buffers: give that memory back afterwards.
  struct Shrink {
    size_t n;
    ~Shrink() {
      if (n <= (1u << 20)) return;
      std::string().swap(tl.padded);
      tl.dom = simdjson::dom::parser();
      tl.ondemand = od::parser();
    }
  } shrink{call.payload.size()};
  try {
    simdjson::padded_string_view json;
    if (!Prepare(call.payload, store.max_depth(), json)) return Verdict::ToJs;
    od::document doc;
    if (tl.ondemand.iterate(json).get(doc)) return Verdict::ToJs;
    switch (call.opcode) {
      case kOpSend: return ServeSend(store, call, doc, out);
      case kOpSendBatch: return ServeSendBatch(store, call, doc, out);
      case kOpBroadcast: return ServeBroadcast(store, call, doc, out);
      default: return ServeRecv(store, call, doc, out, park);
    }
  } catch (...) {
    // Nothing was committed before a throw (commits are the last step): JavaScript serves it.
    return Verdict::ToJs;
  }
}

// The "message" of one object (the last one would win in JSON.parse: a second one is refused), or absent.
static bool SpanOfMessage(od::object obj, const char* base, std::vector<uint32_t>& spans) {
  bool seen = false;
  std::string_view raw;
  for (auto f : obj) {
    od::field field;
    if (std::move(f).get(field)) return false;
    std::string_view key;
    if (field.unescaped_key().get(key)) return false;
    if (key != "message") continue;
    if (seen || !RawValue(field.value(), raw)) return false;
    seen = true;
  }
  spans.push_back(seen ? static_cast<uint32_t>(raw.data() - base) : 0);
  spans.push_back(seen ? static_cast<uint32_t>(raw.data() - base + raw.size()) : 0);
  return true;
}

bool MessageSpans(std::string_view payload, bool batch, std::vector<uint32_t>& spans) {
  if (payload.size() >= std::numeric_limits<uint32_t>::max()) return false;
  try {
    simdjson::padded_string_view json = Pad(payload);
    od::document doc;
    if (tl.ondemand.iterate(json).get(doc)) return false;
    od::object obj;
    if (doc.get_object().get(obj)) return false;
    const char* base = tl.padded.data();
    if (!batch) return SpanOfMessage(obj, base, spans);
    bool seen = false;
    for (auto f : obj) {
      od::field field;
      if (std::move(f).get(field)) return false;
      std::string_view key;
      if (field.unescaped_key().get(key)) return false;
      if (key != "messages") continue;
      if (seen) return false;
      seen = true;
      od::array arr;
      if (field.value().get_array().get(arr)) return false;
      for (auto e : arr) {
        od::object item;
        if (e.get_object().get(item) || !SpanOfMessage(item, base, spans)) return false;
      }
    }
    return seen;
  } catch (...) {
    return false;
  }
}

bool Resume(MailStore& store, const ParkedRecv& park, bool timed_out, std::string& out) {
  if (!timed_out && store.Size(park.id) == 0) return false;
  std::vector<Message> ms = store.Take(park.id, park.max, park.holder, park.lease, store.max_reply_bytes());
  // Another taker was first: keep waiting (the take acknowledged the holder's lease, as this RECV would).
  if (ms.empty() && !timed_out) return false;
  ReplyRecv(store, park.id, ms, out);
  return true;
}

// PUSH_BINARY's payload for ms[begin, end): u32 count, then per message its 24-byte head, name, message.
static void AppendBinaryPush(std::string& out, const std::vector<Message>& ms, size_t begin, size_t end,
                             int64_t now) {
  auto u32 = [&out](uint32_t v) { out.append(reinterpret_cast<const char*>(&v), 4); };
  u32(static_cast<uint32_t>(end - begin));
  for (size_t i = begin; i < end; i++) {
    const Message& m = ms[i];
    int64_t age = now - m.sent_at_ms;
    u32(m.from);
    u32(static_cast<uint32_t>(std::clamp<int64_t>(age, 0, UINT32_MAX)));
    out.append(reinterpret_cast<const char*>(&m.seq), 8);
    u32(static_cast<uint32_t>(m.from_name.size()));
    u32(static_cast<uint32_t>(m.json.size()));
    out += m.from_name;
    out += m.json;
  }
}

size_t PushMessages(MailStore& store, uint32_t id, Holder holder, size_t max, size_t max_bytes, bool batch,
                    PushFormat format, std::string& out) {
  std::vector<Message> ms = store.Take(id, max, holder, false, std::min(max_bytes, store.max_reply_bytes()));
  if (ms.empty()) return 0;
  int64_t now = NowMs();
  if (format == PushFormat::Binary) {
    // At most a frame per message: its header, the count, the 24-byte head, the name and the message.
    size_t total = 0;
    for (const Message& m : ms) total += kHeaderSize + 4 + 24 + m.from_name.size() + m.json.size();
    out.reserve(out.size() + total);
    size_t step = batch ? ms.size() : 1;
    for (size_t i = 0; i < ms.size(); i += step) {
      size_t at = BeginFrame(out, id, kOpPushBinary);
      AppendBinaryPush(out, ms, i, i + step, now);
      FinishFrame(out, at);
    }
  } else if (batch) {
    size_t at = BeginFrame(out, id, kOpPush);
    out += "{\"kind\":\"messages\",";
    AppendMessageList(out, ms, now);
    FinishFrame(out, at);
  } else {
    for (const Message& m : ms) {
      size_t at = BeginFrame(out, id, kOpPush);
      AppendMessage(out, m, now, true);
      FinishFrame(out, at);
    }
  }
  store.Count(id, 0, 0, ms.size());
  return ms.size();
}

}  // namespace clove::fast
