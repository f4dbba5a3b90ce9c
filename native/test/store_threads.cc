// The mail store and Serve() from several threads at once (kernel/ipc/native-threads.test.ts builds and
// runs it, with ThreadSanitizer when the compiler has it): what JavaScript cannot test. Senders SEND,
// SEND_BATCH and BROADCAST through Serve while receivers take under leases; afterwards every message
// arrived exactly once, in each sender's order, every byte came free, and the counters add up. The
// listener calls back into the store, which holds only if it is called without the lock.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "../src/fast/fast.h"

using namespace clove::fast;

namespace {

constexpr int kSends = 20000;
constexpr int kBatches = 500;    // of 8 messages each
constexpr int kBroadcasts = 500;  // from id 5 to 1..4

void Fail(const char* what, long a = 0, long b = 0) {
  std::fprintf(stderr, "FAIL: %s (%ld, %ld)\n", what, a, b);
  std::exit(1);
}

Verdict Call1(MailStore& s, uint32_t caller, uint8_t op, const std::string& payload, std::string& out) {
  Call c;
  c.caller = caller;
  c.holder = caller;
  c.opcode = op;
  c.payload = payload;
  out.clear();
  return Serve(s, c, out, nullptr);
}

}  // namespace

int main() {
  MailStore store(1ull << 32, 1 << 20, 64);
  Budgets b{1u << 30, 1ull << 40, 1ull << 40};
  for (uint32_t id = 1; id <= 5; id++) {
    store.SetBudgets(id, b);
    store.SetReachable(id, true);
    if (!store.Register(id, "a" + std::to_string(id), -1).empty()) Fail("register");
  }
  std::atomic<uint64_t> woken{0};
  // Re-enters the store: deadlocks if a listener were called under the lock.
  store.SetListener([&](uint32_t id) {
    woken++;
    (void)store.Size(id);
  });
  store.SetJsListener([&](uint32_t id) { (void)store.Bytes(id); });

  // Senders 1 and 2 to mailbox 3 (by id and by name, single and batched); 5 broadcasts to 1..4.
  auto sender = [&](uint32_t from) {
    std::string out;
    for (int i = 0; i < kSends; i++) {
      std::string p = "{\"to\":3,\"message\":{\"from\":" + std::to_string(from) + ",\"i\":" + std::to_string(i) + "}}";
      if (Call1(store, from, kOpSend, p, out) != Verdict::Done) Fail("send", from, i);
      if (i < kBatches) {
        std::string batch = "{\"messages\":[";
        for (int k = 0; k < 8; k++) batch += std::string(k ? "," : "") + "{\"to_name\":\"a4\",\"message\":[" + std::to_string(k) + "]}";
        batch += "]}";
        if (Call1(store, from, kOpSendBatch, batch, out) != Verdict::Done) Fail("batch", from, i);
      }
    }
  };
  auto broadcaster = [&]() {
    std::string out;
    for (int i = 0; i < kBroadcasts; i++)
      if (Call1(store, 5, kOpBroadcast, "{\"message\":\"all\"}", out) != Verdict::Done) Fail("broadcast", i);
  };
  // Takes from `id` under a lease (each take acknowledges the last) until `want` arrived; checks order.
  auto receiver = [&](uint32_t id, size_t want, std::atomic<size_t>& got) {
    uint64_t last_seq[6] = {0, 0, 0, 0, 0, 0};
    Holder h = 100 + id;
    while (got < want) {
      std::vector<Message> ms = store.Take(id, 64, h, true, 1 << 16);
      for (const Message& m : ms) {
        if (m.from > 5) Fail("from", m.from);
        if (m.seq <= last_seq[m.from]) Fail("order", m.from, static_cast<long>(m.seq));
        last_seq[m.from] = m.seq;
      }
      got += ms.size();
      if (ms.empty()) std::this_thread::yield();
    }
    store.Take(id, 0, h, false, 0);  // acknowledges the last lease
  };

  std::atomic<size_t> got3{0}, got4{0}, got1{0}, got2{0};
  std::vector<std::thread> ts;
  ts.emplace_back(sender, 1);
  ts.emplace_back(sender, 2);
  ts.emplace_back(broadcaster);
  ts.emplace_back(receiver, 3, size_t(2 * kSends + kBroadcasts), std::ref(got3));
  ts.emplace_back(receiver, 4, size_t(2 * kBatches * 8 + kBroadcasts), std::ref(got4));
  ts.emplace_back(receiver, 1, size_t(kBroadcasts), std::ref(got1));
  ts.emplace_back(receiver, 2, size_t(kBroadcasts), std::ref(got2));
  for (auto& t : ts) t.join();

  if (got3 != size_t(2 * kSends + kBroadcasts)) Fail("count 3", static_cast<long>(got3.load()));
  for (uint32_t id = 1; id <= 5; id++)
    if (store.Size(id) != 0 || store.Bytes(id) != 0) Fail("left", id, static_cast<long>(store.Size(id)));
  if (store.QueuedBytes() != 0) Fail("queued bytes", static_cast<long>(store.QueuedBytes()));
  Stats s1 = store.StatsOf(1), s5 = store.StatsOf(5);
  if (s1.syscalls != uint64_t(kSends + kBatches) || s1.sent != uint64_t(kSends + kBatches * 8))
    Fail("stats 1", static_cast<long>(s1.syscalls), static_cast<long>(s1.sent));
  if (s5.syscalls != uint64_t(kBroadcasts) || s5.sent != uint64_t(4 * kBroadcasts)) Fail("stats 5");
  if (woken == 0) Fail("listener");
  std::printf("ok %llu wake-ups\n", static_cast<unsigned long long>(woken.load()));
  return 0;
}
