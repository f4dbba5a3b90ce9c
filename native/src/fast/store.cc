// STUB (issue 12 helper "store" replaces this file): the mail store of fast.h.
#include "fast.h"

namespace clove::fast {

struct MailStore::Impl {
  MailListener listener;
  size_t max_reply_bytes;
  int max_depth;
};

MailStore::MailStore(uint64_t, size_t max_reply_bytes, int max_depth)
    : impl_(std::make_unique<Impl>(Impl{{}, max_reply_bytes, max_depth})) {}
MailStore::~MailStore() = default;
void MailStore::SetListener(MailListener l) { impl_->listener = std::move(l); }
size_t MailStore::max_reply_bytes() const { return impl_->max_reply_bytes; }
int MailStore::max_depth() const { return impl_->max_depth; }
void MailStore::SetBudgets(uint32_t, const Budgets&) {}
void MailStore::SetReachable(uint32_t, bool) {}
bool MailStore::Reachable(uint32_t) { return false; }
Refused MailStore::Deliver(uint32_t, uint32_t, std::string_view, Message*) { return {Refusal::NoBudgets}; }
std::vector<Message> MailStore::Take(uint32_t, size_t, Holder, bool, size_t) { return {}; }
size_t MailStore::RequeueLeases(uint32_t, Holder) { return 0; }
size_t MailStore::Size(uint32_t) { return 0; }
uint64_t MailStore::Bytes(uint32_t) { return 0; }
uint64_t MailStore::QueuedBytes() { return 0; }
std::string MailStore::Register(uint32_t, std::string_view, int64_t) { return "invalid"; }
bool MailStore::Unregister(uint32_t, std::string_view) { return false; }
int64_t MailStore::Resolve(std::string_view) { return -1; }
std::string MailStore::NameOf(uint32_t) { return ""; }
std::vector<uint32_t> MailStore::Named() { return {}; }
void MailStore::Release(uint32_t) {}
Stats MailStore::StatsOf(uint32_t) { return {}; }
void MailStore::Count(uint32_t, uint64_t, uint64_t, uint64_t) {}

}  // namespace clove::fast
