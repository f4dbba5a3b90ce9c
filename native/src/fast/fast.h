// The native fast path (issue 12, docs/fastpath.md): the interface between the reactor
// (reactor.cc: sockets, frames, writes, parked calls, the bridge to JavaScript) and the mail store with
// its syscalls (store.cc, ops.cc: mailboxes, names, budgets, leases, and SEND / SEND_BATCH / RECV /
// BROADCAST served without JavaScript). Both sides include only this header of each other.
//
// The rule of the fast path: it completes only calls that succeed. A call it cannot complete exactly as
// the TypeScript handler would (a refusal, an unusual payload, an id it has no budgets for) is handed to
// JavaScript untouched, where the same store serves it with the kernel's own errors and audit.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace clove::fast {

// Wire constants (protocol/wire.json); kept here so that the fast path never includes the addon's JS glue.
inline constexpr uint32_t kMagic = 0x41474E54;  // protocol MAGIC (wire.json); read as a u32 LE
inline constexpr size_t kHeaderSize = 17;       // magic u32 LE, agent id u32 LE, opcode u8, size u64 LE
inline constexpr uint8_t kOpSend = 0x20;
inline constexpr uint8_t kOpRecv = 0x21;
inline constexpr uint8_t kOpBroadcast = 0x22;
inline constexpr uint8_t kOpPush = 0x24;
inline constexpr uint8_t kOpSendBatch = 0x25;
inline constexpr uint8_t kOpPushBinary = 0x26;

// Appends one complete frame (header + payload) to `out`.
void AppendFrame(std::string& out, uint32_t agent_id, uint8_t opcode, std::string_view payload);

// Milliseconds since the epoch (Date.now()'s clock): what age_ms and sentAt are measured in.
int64_t NowMs();

struct Budgets {
  uint64_t mailbox_messages = 0;
  uint64_t mailbox_bytes = 0;
  uint64_t outbox_bytes = 0;
};

// One queued message: its JSON text byte for byte as the sender wrote it.
struct Message {
  uint32_t from = 0;
  std::string from_name;
  std::string json;
  uint64_t seq = 0;
  int64_t sent_at_ms = 0;
  size_t bytes() const { return json.size(); }
};

// Counters the fast path keeps for the calls it completes (JavaScript adds them to its own).
struct Stats {
  uint64_t syscalls = 0;
  uint64_t sent = 0;
  uint64_t received = 0;
  int64_t last_active_ms = 0;
};

// Why a delivery was refused (the JS facade formats the kernel's error text from these).
enum class Refusal : uint8_t { None, MailboxFull, OutboxBytes, KernelQueuedBytes, NoBudgets, Unreachable };

struct Refused {
  Refusal why = Refusal::None;
  uint64_t used = 0;   // messages or bytes held now (mailbox: messages in `used`, bytes in `bytes`)
  uint64_t bytes = 0;
  uint64_t limit = 0;  // the limit that refused (mailbox: messages in `limit`, bytes in `limit_bytes`)
  uint64_t limit_bytes = 0;
};

// Told when an id's mailbox gains messages (a delivery, or leases put back). Called after the store's
// lock is released, on whichever thread delivered.
using MailListener = std::function<void(uint32_t id)>;

// Holders (of leases) are 64-bit: a reactor connection's id, or a number the JS facade gives an object.
using Holder = uint64_t;

// Mailboxes, names and budgets, shared by the reactor thread and the JS thread: every public method takes
// the store's mutex and is safe from either. Semantics are those of kernel/ipc/mailboxes.ts (PostOffice).
class MailStore {
 public:
  MailStore(uint64_t queued_bytes_limit, size_t max_reply_bytes, int max_depth);
  ~MailStore();

  void SetListener(MailListener l);
  // A second listener slot, for the JS MailStore object (store_napi.cc): both are called.
  void SetJsListener(MailListener l);
  size_t max_reply_bytes() const;
  int max_depth() const;
  // A clustered kernel's BROADCAST also goes to the other nodes: the reactor hands it to JavaScript then.
  void SetBroadcastToJs(bool on);
  bool broadcast_to_js() const;

  // Identities: budgets must be set before an id can receive or send on the fast path.
  void SetBudgets(uint32_t id, const Budgets& b);
  void SetReachable(uint32_t id, bool reachable);
  bool Reachable(uint32_t id);

  // Queues a message for `to`, or refuses with nothing queued. Counts nothing in Stats. Its from_name is
  // `from_name` when given (the kernel's own messages, tasks), else the sender's first name. Reachability
  // is not checked (PostOffice.deliver does not either: the SEND handler does).
  Refused Deliver(uint32_t to, uint32_t from, std::string_view json, Message* out = nullptr,
                  const std::string* from_name = nullptr);
  // All or nothing under one lock: queues every item (in order, as consecutive Deliver calls would) only
  // when every one fits; with `reachable_only`, an unreachable target refuses all (Refusal::Unreachable).
  struct Delivery {
    uint32_t to = 0;
    std::string_view json;
  };
  Refused DeliverAll(uint32_t from, const std::vector<Delivery>& items, bool reachable_only);
  // Takes up to `max` messages, at most `max_bytes` of them (but always the first), for `holder`;
  // acknowledges the holder's previous lease; with `lease`, keeps what it returns leased to `holder`.
  std::vector<Message> Take(uint32_t id, size_t max, Holder holder, bool lease, size_t max_bytes);
  size_t RequeueLeases(uint32_t id, Holder holder);
  size_t Size(uint32_t id);
  uint64_t Bytes(uint32_t id);
  uint64_t QueuedBytes();

  // Names. Register returns "" on success, else "invalid" | "taken:<id>" | "budget:<held>:<max>".
  std::string Register(uint32_t id, std::string_view name, int64_t max_extra /* -1: unbounded */);
  bool Unregister(uint32_t id, std::string_view name);
  int64_t Resolve(std::string_view name);  // -1: none
  std::string NameOf(uint32_t id);
  std::vector<uint32_t> Named();
  void Release(uint32_t id);

  Stats StatsOf(uint32_t id);
  void Count(uint32_t id, uint64_t syscalls, uint64_t sent, uint64_t received);

  struct Impl;  // store.cc

 private:
  std::unique_ptr<Impl> impl_;
};

// One frame for the fast path, from an admitted connection with nothing of it pending in JavaScript.
struct Call {
  uint32_t caller = 0;  // the connection's principal id (never the header's agent id)
  Holder holder = 0;    // the connection's lease holder
  uint8_t opcode = 0;
  std::string_view payload;
};

// A RECV that waits in the kernel (wait: true, nothing queued): the reactor parks it and calls Resume.
struct ParkedRecv {
  uint32_t id = 0;
  Holder holder = 0;
  size_t max = 0;
  bool lease = false;
  std::chrono::steady_clock::time_point deadline;
};

enum class Verdict : uint8_t {
  Done,  // the reply frame is in `out`
  ToJs,  // not served here: hand the frame to JavaScript as it came
  Park,  // a RECV that waits: `park` is filled; nothing in `out`
};

// Serves SEND, SEND_BATCH, RECV or BROADCAST (ops.cc). Any other opcode: ToJs.
Verdict Serve(MailStore& store, const Call& call, std::string& out, ParkedRecv* park);
// Answers a parked RECV (after a MailListener wake-up, or at its deadline): true when the reply frame
// was appended to `out` (messages arrived, or `timed_out`); false to keep waiting.
bool Resume(MailStore& store, const ParkedRecv& park, bool timed_out, std::string& out);
// Where each message's JSON text stands in a payload already checked by JavaScript's JSON.parse: SEND's
// or BROADCAST's top-level "message" (`batch` false: one span) or each item's of SEND_BATCH's "messages"
// (one span per item), as [start, end) byte pairs; [0, 0) for an absent message. The same bytes the
// reactor queues for a call it serves (RawValue: trailing whitespace dropped), so that a call JavaScript
// serves keeps the sender's text too. False for anything else (a duplicate key, another shape).
bool MessageSpans(std::string_view payload, bool batch, std::vector<uint32_t>& spans);
// How pushed messages are written (HELLO push.format): PUSH JSON, or PUSH_BINARY (protocol/push-binary.ts).
enum class PushFormat : uint8_t { Json, Binary };

// Push delivery: takes up to `max` of `id`'s messages (no lease; holder is the pusher's; at least one, and
// no more than `max_bytes` and the reply byte limit of message text) and appends one frame each or, `batch`,
// one frame for all. Json: PUSH with RECV's message fields and "kind":"message", or batched
// {"kind":"messages","messages":[RECV's items],"count":n}. Binary: PUSH_BINARY, u32 count then per message
// a 24-byte head (from, age_ms, seq, name and message lengths), the name, the message. Returns how many.
size_t PushMessages(MailStore& store, uint32_t id, Holder holder, size_t max, size_t max_bytes, bool batch,
                    PushFormat format, std::string& out);

}  // namespace clove::fast
