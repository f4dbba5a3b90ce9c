// The mail store of fast.h: kernel/ipc/mailboxes.ts (PostOffice) in C++, shared by the reactor thread and
// the JS thread. One mutex guards everything; listeners are called only after it is released, so a
// listener may call back into the store.
#include <algorithm>
#include <atomic>
#include <unordered_set>

#include "fast.h"

namespace clove::fast {

namespace {

struct Box {
  std::deque<Message> queue;
  // Bytes held for this id: queued messages and messages taken under a lease not yet acknowledged.
  uint64_t bytes = 0;
  std::unordered_map<Holder, std::vector<Message>> leases;
};

// NAME_PATTERN of protocol/wire.json: ^[A-Za-z0-9_.:-]{1,64}$
bool ValidName(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

struct MailStore::Impl {
  std::mutex mu;
  // Shared so that Notify copies a pointer, not the function, under the lock.
  std::shared_ptr<const MailListener> listener;
  std::shared_ptr<const MailListener> js_listener;
  size_t max_reply_bytes;
  int max_depth;
  std::atomic<bool> broadcast_to_js{false};
  uint64_t queued_limit;
  uint64_t queued = 0;
  std::unordered_map<uint32_t, Box> boxes;
  std::unordered_map<std::string, uint32_t> name_to_id;
  std::unordered_map<uint32_t, std::vector<std::string>> id_to_names;
  // Ids in the order they first got a name (PostOffice's Map order: BROADCAST's order).
  std::vector<uint32_t> named_order;
  std::unordered_map<uint32_t, uint64_t> seqs;
  std::unordered_map<uint32_t, uint64_t> outbox;
  std::unordered_map<uint32_t, Budgets> budgets;
  std::unordered_set<uint32_t> reachable;
  std::unordered_map<uint32_t, Stats> stats;

  // A message leaves the kernel (received and acknowledged, or its mailbox is gone): its bytes come free.
  void Settle(Box& b, const Message& m) {
    b.bytes -= m.bytes();
    queued -= std::min<uint64_t>(queued, m.bytes());
    auto it = outbox.find(m.from);
    if (it != outbox.end()) {
      if (it->second > m.bytes())
        it->second -= m.bytes();
      else
        outbox.erase(it);
    }
  }

  std::string FirstName(uint32_t id) {
    auto it = id_to_names.find(id);
    return it == id_to_names.end() || it->second.empty() ? std::string() : it->second.front();
  }

  // Appends the message to `to`'s box (every check already passed).
  Message& Commit(uint32_t to, uint32_t from, std::string_view json, const std::string& from_name,
                  int64_t now) {
    Box& b = boxes[to];
    uint64_t n = json.size();
    outbox[from] += n;
    queued += n;
    uint64_t seq = ++seqs[from];
    b.queue.push_back(Message{from, from_name, std::string(json), seq, now});
    b.bytes += n;
    return b.queue.back();
  }

  // Deliver and DeliverAll: checks every item, in order, as consecutive PostOffice.deliver calls would;
  // commits all of them only when all fit. `out`: a copy of the last message queued.
  Refused DeliverItems(uint32_t from, const std::vector<MailStore::Delivery>& items, bool reachable_only,
                       const std::string* from_name, Message* out) {
    std::unique_lock<std::mutex> lock(mu);
    auto fb = budgets.find(from);
    if (fb == budgets.end()) return {Refusal::NoBudgets};
    struct Added {
      uint64_t messages = 0, bytes = 0;
    };
    // What earlier items of this call add to each mailbox (a linear list: calls name few mailboxes;
    // a map once they name many).
    std::pair<uint32_t, Added> few[16];
    size_t nfew = 0;
    std::unordered_map<uint32_t, Added> many;
    auto added_to = [&](uint32_t id) -> Added& {
      if (many.empty()) {
        for (size_t i = 0; i < nfew; i++)
          if (few[i].first == id) return few[i].second;
        if (nfew < 16) {
          few[nfew] = {id, Added{}};
          return few[nfew++].second;
        }
        for (size_t i = 0; i < nfew; i++) many[few[i].first] = few[i].second;
      }
      return many[id];
    };
    uint64_t sent = 0;
    auto ob = outbox.find(from);
    uint64_t sent0 = ob == outbox.end() ? 0 : ob->second;
    for (const MailStore::Delivery& d : items) {
      auto tb = budgets.find(d.to);
      if (tb == budgets.end()) return {Refusal::NoBudgets};
      if (reachable_only && !reachable.count(d.to)) return {Refusal::Unreachable};
      uint64_t n = d.json.size();
      Added& a = added_to(d.to);
      auto bi = boxes.find(d.to);
      uint64_t held = (bi == boxes.end() ? 0 : bi->second.queue.size()) + a.messages;
      uint64_t bytes = (bi == boxes.end() ? 0 : bi->second.bytes) + a.bytes;
      const Budgets& dest = tb->second;
      if (held >= dest.mailbox_messages || bytes + n > dest.mailbox_bytes)
        return {Refusal::MailboxFull, held, bytes, dest.mailbox_messages, dest.mailbox_bytes};
      if (sent0 + sent + n > fb->second.outbox_bytes)
        return {Refusal::OutboxBytes, sent0 + sent, 0, fb->second.outbox_bytes, 0};
      if (queued + sent + n > queued_limit) return {Refusal::KernelQueuedBytes, queued + sent, 0, queued_limit, 0};
      a.messages++;
      a.bytes += n;
      sent += n;
    }
    std::string name = from_name ? *from_name : FirstName(from);
    int64_t now = NowMs();
    if (items.size() == 1) {
      Message& m = Commit(items[0].to, from, items[0].json, name, now);
      if (out) *out = m;
      uint32_t to = items[0].to;
      Notify(&to, 1, lock);
      return {};
    }
    std::vector<uint32_t> gained;
    std::unordered_set<uint32_t> seen;
    for (const MailStore::Delivery& d : items) {
      Message& m = Commit(d.to, from, d.json, name, now);
      if (out) *out = m;
      if (seen.insert(d.to).second) gained.push_back(d.to);
    }
    Notify(gained.data(), gained.size(), lock);
    return {};
  }

  void Notify(const uint32_t* ids, size_t n, std::unique_lock<std::mutex>& lock) {
    std::shared_ptr<const MailListener> l = listener, jl = js_listener;
    lock.unlock();
    for (size_t i = 0; i < n; i++) {
      uint32_t id = ids[i];
      if (l && *l) (*l)(id);
      if (jl && *jl) (*jl)(id);
    }
  }
};

MailStore::MailStore(uint64_t queued_bytes_limit, size_t max_reply_bytes, int max_depth)
    : impl_(std::make_unique<Impl>()) {
  impl_->queued_limit = queued_bytes_limit;
  impl_->max_reply_bytes = max_reply_bytes;
  impl_->max_depth = max_depth;
}
MailStore::~MailStore() = default;

void MailStore::SetListener(MailListener l) {
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->listener = std::make_shared<const MailListener>(std::move(l));
}
void MailStore::SetJsListener(MailListener l) {
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->js_listener = std::make_shared<const MailListener>(std::move(l));
}
size_t MailStore::max_reply_bytes() const { return impl_->max_reply_bytes; }
int MailStore::max_depth() const { return impl_->max_depth; }
void MailStore::SetBroadcastToJs(bool on) { impl_->broadcast_to_js.store(on); }
bool MailStore::broadcast_to_js() const { return impl_->broadcast_to_js.load(); }

void MailStore::SetBudgets(uint32_t id, const Budgets& b) {
  std::lock_guard<std::mutex> g(impl_->mu);
  impl_->budgets[id] = b;
}

void MailStore::SetReachable(uint32_t id, bool reachable) {
  std::lock_guard<std::mutex> g(impl_->mu);
  if (reachable)
    impl_->reachable.insert(id);
  else
    impl_->reachable.erase(id);
}

bool MailStore::Reachable(uint32_t id) {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->reachable.count(id) > 0;
}

Refused MailStore::Deliver(uint32_t to, uint32_t from, std::string_view json, Message* out,
                           const std::string* from_name) {
  return impl_->DeliverItems(from, {Delivery{to, json}}, false, from_name, out);
}

Refused MailStore::DeliverAll(uint32_t from, const std::vector<Delivery>& items, bool reachable_only) {
  return impl_->DeliverItems(from, items, reachable_only, nullptr, nullptr);
}

std::vector<Message> MailStore::Take(uint32_t id, size_t max, Holder holder, bool lease, size_t max_bytes) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> g(s.mu);
  auto bi = s.boxes.find(id);
  if (bi == s.boxes.end()) return {};
  Box& b = bi->second;
  auto acked = b.leases.find(holder);
  if (acked != b.leases.end()) {
    for (const Message& m : acked->second) s.Settle(b, m);
    b.leases.erase(acked);
  }
  size_t n = 0;
  uint64_t bytes = 0;
  size_t available = std::min(max, b.queue.size());
  while (n < available) {
    const Message& m = b.queue[n];
    if (n > 0 && bytes + m.bytes() > max_bytes) break;
    bytes += m.bytes();
    n++;
  }
  std::vector<Message> out;
  out.reserve(n);
  for (size_t i = 0; i < n; i++) {
    out.push_back(std::move(b.queue.front()));
    b.queue.pop_front();
  }
  if (lease && !out.empty())
    b.leases[holder] = out;
  else
    for (const Message& m : out) s.Settle(b, m);
  return out;
}

size_t MailStore::RequeueLeases(uint32_t id, Holder holder) {
  Impl& s = *impl_;
  std::unique_lock<std::mutex> lock(s.mu);
  auto bi = s.boxes.find(id);
  if (bi == s.boxes.end()) return 0;
  Box& b = bi->second;
  auto it = b.leases.find(holder);
  if (it == b.leases.end()) return 0;
  std::vector<Message> leased = std::move(it->second);
  b.leases.erase(it);
  for (auto m = leased.rbegin(); m != leased.rend(); ++m) b.queue.push_front(std::move(*m));
  size_t n = leased.size();
  s.Notify(&id, 1, lock);
  return n;
}

size_t MailStore::Size(uint32_t id) {
  std::lock_guard<std::mutex> g(impl_->mu);
  auto bi = impl_->boxes.find(id);
  return bi == impl_->boxes.end() ? 0 : bi->second.queue.size();
}

uint64_t MailStore::Bytes(uint32_t id) {
  std::lock_guard<std::mutex> g(impl_->mu);
  auto bi = impl_->boxes.find(id);
  return bi == impl_->boxes.end() ? 0 : bi->second.bytes;
}

uint64_t MailStore::QueuedBytes() {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->queued;
}

std::string MailStore::Register(uint32_t id, std::string_view name, int64_t max_extra) {
  if (!ValidName(name)) return "invalid";
  Impl& s = *impl_;
  std::lock_guard<std::mutex> g(s.mu);
  std::string key(name);
  auto held = s.name_to_id.find(key);
  if (held != s.name_to_id.end() && held->second != id) return "taken:" + std::to_string(held->second);
  if (held != s.name_to_id.end()) return "";
  auto names = s.id_to_names.find(id);
  size_t count = names == s.id_to_names.end() ? 0 : names->second.size();
  if (max_extra >= 0 && count >= static_cast<uint64_t>(max_extra) + 1)
    return "budget:" + std::to_string(count > 0 ? count - 1 : 0) + ":" + std::to_string(max_extra);
  s.name_to_id[key] = id;
  if (names == s.id_to_names.end()) {
    s.id_to_names[id] = {key};
    s.named_order.push_back(id);
  } else {
    names->second.push_back(key);
  }
  return "";
}

bool MailStore::Unregister(uint32_t id, std::string_view name) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> g(s.mu);
  auto names = s.id_to_names.find(id);
  if (names == s.id_to_names.end()) return false;
  auto it = std::find(names->second.begin(), names->second.end(), name);
  if (it == names->second.end()) return false;
  s.name_to_id.erase(*it);
  names->second.erase(it);
  return true;
}

int64_t MailStore::Resolve(std::string_view name) {
  std::lock_guard<std::mutex> g(impl_->mu);
  auto it = impl_->name_to_id.find(std::string(name));
  return it == impl_->name_to_id.end() ? -1 : static_cast<int64_t>(it->second);
}

std::string MailStore::NameOf(uint32_t id) {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->FirstName(id);
}

std::vector<uint32_t> MailStore::Named() {
  std::lock_guard<std::mutex> g(impl_->mu);
  return impl_->named_order;
}

void MailStore::Release(uint32_t id) {
  Impl& s = *impl_;
  std::lock_guard<std::mutex> g(s.mu);
  auto names = s.id_to_names.find(id);
  if (names != s.id_to_names.end()) {
    for (const std::string& n : names->second) s.name_to_id.erase(n);
    s.id_to_names.erase(names);
    s.named_order.erase(std::remove(s.named_order.begin(), s.named_order.end(), id), s.named_order.end());
  }
  auto bi = s.boxes.find(id);
  if (bi != s.boxes.end()) {
    Box& b = bi->second;
    for (const Message& m : b.queue) s.Settle(b, m);
    for (auto& [holder, leased] : b.leases)
      for (const Message& m : leased) s.Settle(b, m);
    s.boxes.erase(bi);
  }
  s.seqs.erase(id);
  // Budgets and counters of an id gone for good; reachability is the kernel's to clear (SetReachable).
  s.budgets.erase(id);
  s.stats.erase(id);
}

Stats MailStore::StatsOf(uint32_t id) {
  std::lock_guard<std::mutex> g(impl_->mu);
  auto it = impl_->stats.find(id);
  return it == impl_->stats.end() ? Stats{} : it->second;
}

void MailStore::Count(uint32_t id, uint64_t syscalls, uint64_t sent, uint64_t received) {
  std::lock_guard<std::mutex> g(impl_->mu);
  Stats& st = impl_->stats[id];
  st.syscalls += syscalls;
  st.sent += sent;
  st.received += received;
  // Activity is a call of the id's own (a push it did not ask for in that moment is not).
  if (syscalls) st.last_active_ms = NowMs();
}

}  // namespace clove::fast
