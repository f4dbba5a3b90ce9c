// The reactor (docs/fastpath.md, "The reactor: how it is built"): one thread per JS Reactor owns the
// adopted connections. It reads and frames them, serves the fast calls through ops.cc (Serve / Resume /
// PushMessages), forwards every other frame to JavaScript in one thread-safe call per epoll turn, and
// writes replies with one writev per connection per turn. JavaScript talks to it through a locked
// command queue and an eventfd; write() from JavaScript writes at once when it can.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "../errors.h"
#include "../exports.h"
#include "../fd.h"
#include "napi_store.h"

namespace clove::fast {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 64 * 1024;         // one read per connection per turn (Rule 9)
constexpr size_t kFlushAt = 64 * 1024;           // the reactor's own replies leave at this size
constexpr size_t kMaxHeld = 256;                 // requests held (reactor + JavaScript) before reading stops
constexpr size_t kMaxUnsent = 8 * 1024 * 1024;   // unsent bytes before reading stops
constexpr size_t kResumeUnsent = kMaxUnsent / 2; // ...and starts again below this
constexpr size_t kDrainMark = 64 * 1024;         // JavaScript gets `drain` when unsent falls below this
constexpr size_t kPushRoom = 1024 * 1024;        // PUSH frames are written while unsent stays below this
constexpr size_t kPushBatch = 64;                // messages taken per PushMessages call
constexpr size_t kPushBatchFrame = 4096;         // at most this many in one batched PUSH frame
// ...and at most this much message text (the frame is about twice that at 64-byte messages): the client
// turns a frame into one string, and V8 allocates strings over 128 KiB outside its young generation,
// measured 6-8x slower per byte (bench/messaging.ts; reports/fastpath.md).
constexpr size_t kPushBatchBytes = 48 * 1024;
constexpr auto kProbeEvery = std::chrono::milliseconds(250);
constexpr int kMaxIov = 64;

struct Event {
  enum Type : uint8_t { Data, End, Drain, Close } type;
  uint64_t conn;
  std::string data;  // Data: frames; Close: the error, if any
  size_t unsent = 0;
};

// A frame the reactor holds back to keep replies in request order (Rule 2), or, after a framing error,
// the rest of the stream (`raw`: forwarded as it is, answered by nobody).
struct Held {
  std::string bytes;
  bool raw = false;
};

struct Conn {
  uint64_t id = 0;
  uint32_t principal = 0;

  // Shared with the JS thread (write()), under `mu`.
  std::mutex mu;
  UniqueFd fd;
  bool closed = false;
  std::deque<std::string> out;  // unsent bytes, in order; out.front() from offset `out_off`
  size_t out_off = 0;
  std::atomic<size_t> unsent{0};
  bool above_mark = false;  // JavaScript's write left bytes unsent: it gets `drain` below kDrainMark
  int write_error = 0;      // a write from JavaScript failed: the reactor closes the connection

  // The reactor thread's own.
  bool fast = true;
  bool push = false;
  bool push_batch = false;   // HELLO push.batch: several messages to a PUSH frame
  bool push_binary = false;  // HELLO push.format "binary": PUSH_BINARY frames
  std::string in;  // bytes of an incomplete frame
  std::deque<Held> held;
  size_t pending_js = 0;  // frames forwarded to JavaScript and not yet answered
  bool parked = false;
  ParkedRecv park;
  std::string replies;      // the reactor's replies of this turn, not yet queued in `out`
  bool js_paused = false;   // reactor.pause()
  bool unsent_stop = false; // reading stopped for unsent bytes
  bool eof = false;         // the peer shut down its write side
  bool end_sent = false;    // JavaScript was told `end`
  bool end_requested = false;
  bool wr_shut = false;
  bool bad = false;  // a framing error: nothing more is read
  uint32_t interest = 0;
  Clock::time_point next_probe{};
  bool dirty = false;  // in this turn's flush list
};

using ConnPtr = std::shared_ptr<Conn>;

// SetPush's bits: push messages, several to a frame, as PUSH_BINARY.
constexpr uint64_t kPushBitOn = 1, kPushBitBatch = 2, kPushBitBinary = 4;

struct Command {
  enum Type : uint8_t { Adopt, Answered, SetFast, SetPush, Pause, Resume, End, Destroy } type;
  uint64_t conn;
  uint64_t n = 0;  // Answered: how many; SetFast: 0 or 1; SetPush: kPushBit* bits
  std::string initial;
};

class Reactor : public Napi::ObjectWrap<Reactor> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Reactor(const Napi::CallbackInfo& info);
  ~Reactor() override {
    if (!cleaned_up_) cleanup_.Remove(Env());
    Stop();
  }

 private:
  // JavaScript API (native/index.d.ts NativeReactor).
  Napi::Value Adopt(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  void SetFast(const Napi::CallbackInfo& info) { Post(Command{Command::SetFast, ConnArg(info), Bool(info, 1)}); }
  void SetPush(const Napi::CallbackInfo& info);
  void Pause(const Napi::CallbackInfo& info) { Post(Command{Command::Pause, ConnArg(info)}); }
  void Resume(const Napi::CallbackInfo& info) { Post(Command{Command::Resume, ConnArg(info)}); }
  void End(const Napi::CallbackInfo& info) { Post(Command{Command::End, ConnArg(info)}); }
  void Destroy(const Napi::CallbackInfo& info) { Post(Command{Command::Destroy, ConnArg(info)}); }
  void Close(const Napi::CallbackInfo&) { Stop(); }
  Napi::Value PollStats(const Napi::CallbackInfo& info);

  static uint64_t ConnArg(const Napi::CallbackInfo& info);
  static uint64_t Bool(const Napi::CallbackInfo& info, size_t i) {
    return info.Length() > i && info[i].ToBoolean().Value() ? 1 : 0;
  }
  ConnPtr Find(uint64_t id);
  void Post(Command c);
  void Wake();
  void Stop();

  // The reactor thread.
  void Run();
  int Wait(epoll_event* evs, int cap, int timeout_ms);
  bool Crowded(Clock::time_point now);
  void RunCommands();
  void RunMail();
  void RunTimers();
  bool OnReadable(const ConnPtr& c);
  void OnWritable(const ConnPtr& c);
  void Ingest(const ConnPtr& c, const char* data, size_t n);
  void Process(const ConnPtr& c);
  void Forward(const ConnPtr& c, std::string_view bytes);
  void MaybeEnd(const ConnPtr& c);
  void PushMail(const ConnPtr& c);
  void Reply(const ConnPtr& c);
  void Unpark(const ConnPtr& c, const std::string& reply);
  void Flush(const ConnPtr& c);
  size_t WriteOut(Conn& c);  // under c.mu: writes what is queued; returns errno or 0
  void Interest(const ConnPtr& c);
  void Shutdown(const ConnPtr& c);
  void CloseConn(const ConnPtr& c, const std::string& error);
  void SendBatch();

  std::shared_ptr<MailStore> store_;
  uint64_t max_payload_ = 0;
  Napi::ThreadSafeFunction tsfn_;
  UniqueFd epoll_;
  UniqueFd wake_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;
  Napi::Env::CleanupHook<void (*)(Reactor*), Reactor> cleanup_;
  bool cleaned_up_ = false;  // the environment's cleanup hook ran (it is not to be removed then)

  // Connections by id: the JS thread looks them up (write), the reactor thread adds and removes them.
  std::mutex conns_mu_;
  std::unordered_map<uint64_t, ConnPtr> conns_;
  uint64_t next_id_ = 1;  // JS thread only

  std::mutex cmd_mu_;
  std::vector<Command> cmds_;
  std::mutex mail_mu_;
  std::unordered_set<uint32_t> mail_;  // ids whose mailbox gained messages
  bool own_mail_ = false;               // reactor thread only: its own deliveries added to mail_
  bool woken_ = false;                  // under cmd_mu_: the eventfd was written and not yet read

  // Reactor thread only.
  std::unordered_map<uint32_t, std::vector<ConnPtr>> by_principal_;
  std::unordered_set<Conn*> parked_;
  std::vector<ConnPtr> dirty_;
  std::vector<Event> batch_;
  std::string rbuf_;

  // Polling before sleeping (Wait). poll_max_ns_ is set once, before the thread starts; 0 is off.
  int64_t poll_max_ns_ = 0;
  static constexpr auto kPollEpoch = std::chrono::milliseconds(50);
  static constexpr int kPollMaxBackoff = 5;  // at most 2^5 epochs (1.6 s) without polling
  static constexpr uint64_t kPollJudged = 4;  // an epoch with fewer polls is not judged
  // Reactor thread only: this epoch's polls, and the backing off of the last bad ones.
  Clock::time_point epoch_end_{}, off_until_{};
  uint64_t epoch_polls_ = 0, epoch_caught_ = 0;
  int backoff_ = 0;
  UniqueFd loadavg_;            // /proc/loadavg, read for the number of runnable tasks
  long cpus_ = 1;
  Clock::time_point crowded_until_{};  // reactor thread only: a crowded reading holds until then
  // Read by pollStats() on the JavaScript thread.
  std::atomic<uint64_t> polls_{0}, polls_caught_{0}, polls_skipped_{0}, polls_backed_off_{0}, polled_ns_{0};
};

// The Reactor whose thread this is (null on every other thread): tells its own deliveries from others'.
thread_local const Reactor* running_reactor = nullptr;

uint64_t Reactor::ConnArg(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw OptionError(info.Env(), "conn: expected a connection id");
  return static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
}

Reactor::Reactor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Reactor>(info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw OptionError(env, "Reactor: expected an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  store_ = UnwrapMailStore(o.Get("store"));
  Napi::Value mp = o.Get("maxPayload");
  if (!mp.IsNumber() || mp.As<Napi::Number>().DoubleValue() < 0) throw OptionError(env, "maxPayload");
  max_payload_ = static_cast<uint64_t>(mp.As<Napi::Number>().DoubleValue());
  Napi::Value cb = o.Get("onEvents");
  if (!cb.IsFunction()) throw OptionError(env, "onEvents: expected a function");

  epoll_.Reset(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_.Valid()) throw SysError(env, "epoll_create1", errno);
  wake_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.Valid()) throw SysError(env, "eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // connection ids start at 1
  if (epoll_ctl(epoll_.Get(), EPOLL_CTL_ADD, wake_.Get(), &ev) != 0) throw SysError(env, "epoll_ctl", errno);

  Napi::Value poll = o.Get("pollUs");
  if (!poll.IsUndefined()) {
    if (!poll.IsNumber() || poll.As<Napi::Number>().DoubleValue() < 0) throw OptionError(env, "pollUs");
    poll_max_ns_ = static_cast<int64_t>(poll.As<Napi::Number>().DoubleValue() * 1000);
  }
  if (poll_max_ns_ > 0) {
    // Without /proc the machine's load cannot be read: Crowded() then says so, and nothing polls.
    loadavg_.Reset(open("/proc/loadavg", O_RDONLY | O_CLOEXEC));
    cpus_ = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  }

  tsfn_ = Napi::ThreadSafeFunction::New(env, cb.As<Napi::Function>(), "clove-reactor", 0, 1);
  tsfn_.Unref(env);  // the reactor alone never keeps Node alive
  // Deliveries on any thread (the reactor's own, or JavaScript's through the store) reach parked RECVs
  // and push connections through this set and the eventfd.
  store_->SetListener([this](uint32_t id) {
    {
      std::lock_guard<std::mutex> l(mail_mu_);
      mail_.insert(id);
    }
    // The reactor's own deliveries (SEND / SEND_BATCH it served) are pushed at the end of this very turn
    // (Run); only another thread's need the eventfd, which would cost a write, a read and a turn.
    if (running_reactor == this)
      own_mail_ = true;
    else
      Wake();
  });
  rbuf_.resize(kReadChunk);
  thread_ = std::thread([this] { Run(); });
  // At process exit the object may never be collected: the thread is joined by the environment's
  // cleanup instead, so no thread is left behind.
  cleanup_ = env.AddCleanupHook(
      +[](Reactor* r) {
        r->cleaned_up_ = true;
        r->Stop();
      },
      this);
}

void Reactor::Wake() {
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    if (woken_) return;
    woken_ = true;
  }
  uint64_t one = 1;
  ssize_t r = ::write(wake_.Get(), &one, sizeof one);
  (void)r;  // EAGAIN: the counter is full, the reactor wakes anyway
}

void Reactor::Post(Command c) {
  if (stopped_) return;
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    cmds_.push_back(std::move(c));
  }
  Wake();
}

ConnPtr Reactor::Find(uint64_t id) {
  std::lock_guard<std::mutex> l(conns_mu_);
  auto it = conns_.find(id);
  return it == conns_.end() ? nullptr : it->second;
}

// Stops the thread (it closes every connection first) and lets the JS callback go; idempotent.
void Reactor::Stop() {
  if (stopped_) return;
  stopped_ = true;
  store_->SetListener(nullptr);
  stopping_ = true;
  uint64_t one = 1;
  ssize_t r = ::write(wake_.Get(), &one, sizeof one);
  (void)r;
  if (thread_.joinable()) thread_.join();
  tsfn_.Release();
}

// setPush(conn, {messages, batch, binary}): what the reactor pushes of the connection's messages.
void Reactor::SetPush(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[1].IsObject())
    throw OptionError(info.Env(), "setPush(conn, {messages, batch, binary})");
  Napi::Object o = info[1].As<Napi::Object>();
  auto flag = [&](const char* key, uint64_t bit) { return o.Get(key).ToBoolean().Value() ? bit : 0; };
  uint64_t n = flag("messages", kPushBitOn);
  if (n) n |= flag("batch", kPushBitBatch) | flag("binary", kPushBitBinary);
  Post(Command{Command::SetPush, ConnArg(info), n});
}

Napi::Value Reactor::Adopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (stopped_) throw Napi::Error::New(env, "reactor: closed");
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsObject())
    throw OptionError(env, "adopt(fd, {principal, fast, initial?})");
  int fd = info[0].As<Napi::Number>().Int32Value();
  Napi::Object o = info[1].As<Napi::Object>();
  Napi::Value p = o.Get("principal");
  if (!p.IsNumber()) throw OptionError(env, "principal");
  Command cmd{Command::Adopt, 0};
  Napi::Value initial = o.Get("initial");
  if (initial.IsBuffer()) {
    auto b = initial.As<Napi::Buffer<char>>();
    cmd.initial.assign(b.Data(), b.Length());
  }
  UniqueFd dup(fcntl(fd, F_DUPFD_CLOEXEC, 3));
  if (!dup.Valid()) throw SysError(env, "fcntl(F_DUPFD_CLOEXEC)", errno);
  int flags = fcntl(dup.Get(), F_GETFL);
  if (flags < 0 || fcntl(dup.Get(), F_SETFL, flags | O_NONBLOCK) != 0) throw SysError(env, "fcntl(F_SETFL)", errno);
  auto c = std::make_shared<Conn>();
  c->id = next_id_++;
  c->principal = static_cast<uint32_t>(p.As<Napi::Number>().Int64Value());
  c->fast = o.Get("fast").ToBoolean().Value();
  c->fd = std::move(dup);
  {
    std::lock_guard<std::mutex> l(conns_mu_);
    conns_[c->id] = c;
  }
  cmd.conn = c->id;
  Post(std::move(cmd));
  return Napi::Number::New(env, static_cast<double>(c->id));
}

// Writes at once what the socket takes, queues the rest (the reactor writes it on EPOLLOUT), and tells
// the reactor how many forwarded requests this answers. A zero-length write probes the peer (EPIPE when
// it is gone), as Connection.probePeer does on a net.Socket.
Napi::Value Reactor::Write(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t id = ConnArg(info);
  if (info.Length() < 2 || !info[1].IsBuffer()) throw OptionError(env, "write(conn, data: Buffer, answered)");
  auto b = info[1].As<Napi::Buffer<char>>();
  uint64_t answered = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0;
  ConnPtr c = Find(id);
  if (!c || stopped_) return Napi::Number::New(env, 0);
  size_t unsent;
  bool need_reactor = answered > 0;
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->closed) return Napi::Number::New(env, 0);
    size_t done = 0;
    if (c->out.empty() && !c->write_error) {
      ssize_t n = ::send(c->fd.Get(), b.Data(), b.Length(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) {
        done = static_cast<size_t>(n);
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        c->write_error = errno;
        need_reactor = true;
      }
    }
    if (!c->write_error && done < b.Length()) {
      c->out.emplace_back(b.Data() + done, b.Length() - done);
      c->unsent += b.Length() - done;
      need_reactor = true;  // EPOLLOUT is armed by the reactor
    }
    unsent = c->unsent;
    if (unsent > 0) c->above_mark = true;
  }
  if (need_reactor) Post(Command{Command::Answered, id, answered});
  return Napi::Number::New(env, static_cast<double>(unsent));
}

// ---- the reactor thread ----

// Whether more tasks are runnable on the machine than it has CPUs (the fourth field of /proc/loadavg,
// which counts this thread too): then a CPU spent polling is taken from a task that waits for one. A
// crowded reading holds for a millisecond, so that a busy machine costs one read per millisecond.
bool Reactor::Crowded(Clock::time_point now) {
  if (now < crowded_until_) return true;
  char buf[128];
  ssize_t r = loadavg_.Valid() ? pread(loadavg_.Get(), buf, sizeof buf - 1, 0) : -1;
  bool crowded = true;
  if (r > 0) {
    buf[r] = 0;
    const char* p = buf;
    for (int field = 0; field < 3 && p != nullptr; field++) {
      p = strchr(p, ' ');
      if (p != nullptr) p++;
    }
    if (p != nullptr) crowded = strtol(p, nullptr, 10) > cpus_;
  }
  if (crowded) crowded_until_ = now + std::chrono::milliseconds(1);
  return crowded;
}

// epoll_wait, polling first when polling is on (docs/fastpath.md, "Polling"). Why: a reactor that sleeps
// is woken through the scheduler, and on a VM whose idle CPUs halt that costs tens of microseconds, once
// for each of a round trip's two hops through the kernel. So the reactor first asks epoll without
// sleeping, yielding the CPU between asks, for up to poll_max_ns_. It judges its polls every kPollEpoch:
// when fewer than half found work (traffic with gaps longer than a poll, or none), it stops polling for
// one epoch, then two, four, up to kPollMaxBackoff, and tries again; a good epoch resets that. Nothing
// polls while the machine has more runnable tasks than CPUs (Crowded).
int Reactor::Wait(epoll_event* evs, int cap, int timeout_ms) {
  if (poll_max_ns_ == 0 || timeout_ms == 0) return epoll_wait(epoll_.Get(), evs, cap, timeout_ms);
  auto start = Clock::now();
  if (start >= epoch_end_) {
    if (epoch_polls_ >= kPollJudged && epoch_caught_ * 2 < epoch_polls_) {
      off_until_ = start + kPollEpoch * (1 << std::min(backoff_, kPollMaxBackoff));
      backoff_++;
    } else if (epoch_polls_ >= kPollJudged) {
      backoff_ = 0;
    }
    epoch_polls_ = epoch_caught_ = 0;
    epoch_end_ = start + kPollEpoch;
  }
  if (start < off_until_) {
    polls_backed_off_.fetch_add(1, std::memory_order_relaxed);
  } else if (Crowded(start)) {
    polls_skipped_.fetch_add(1, std::memory_order_relaxed);
  } else {
    polls_.fetch_add(1, std::memory_order_relaxed);
    epoch_polls_++;
    int64_t budget = poll_max_ns_;
    if (timeout_ms > 0) budget = std::min<int64_t>(budget, int64_t{timeout_ms} * 1000000);
    for (int i = 1;; i++) {
      int n = epoll_wait(epoll_.Get(), evs, cap, 0);
      auto now = Clock::now();
      int64_t spent = std::chrono::duration_cast<std::chrono::nanoseconds>(now - start).count();
      if (n != 0) {
        polled_ns_.fetch_add(spent, std::memory_order_relaxed);
        if (n > 0) {
          polls_caught_.fetch_add(1, std::memory_order_relaxed);
          epoch_caught_++;
        }
        return n;
      }
      if (spent >= budget || (i % 16 == 0 && Crowded(now))) {
        polled_ns_.fetch_add(spent, std::memory_order_relaxed);
        break;
      }
      // Node's thread of this kernel may want this CPU (tasks of other cgroups are not helped by this).
      sched_yield();
    }
  }
  return epoll_wait(epoll_.Get(), evs, cap, timeout_ms);
}

// pollStats(): what polling did (docs/fastpath.md, "Polling"), for the kernel's metrics.
Napi::Value Reactor::PollStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("maxUs", static_cast<double>(poll_max_ns_) / 1000);
  o.Set("polls", static_cast<double>(polls_.load(std::memory_order_relaxed)));
  o.Set("caught", static_cast<double>(polls_caught_.load(std::memory_order_relaxed)));
  o.Set("skipped", static_cast<double>(polls_skipped_.load(std::memory_order_relaxed)));
  o.Set("backedOff", static_cast<double>(polls_backed_off_.load(std::memory_order_relaxed)));
  o.Set("polledUs", static_cast<double>(polled_ns_.load(std::memory_order_relaxed)) / 1000);
  return o;
}

void Reactor::Run() {
  // Named so that top, perf and /proc/<pid>/task show the fast path's thread apart from Node's.
  pthread_setname_np(pthread_self(), "clove-reactor");
  running_reactor = this;
  std::vector<epoll_event> evs(256);
  while (!stopping_) {
    int timeout = -1;
    auto now = Clock::now();
    for (Conn* c : parked_) {
      auto until = c->park.deadline;
      if (c->eof && c->next_probe < until) until = c->next_probe;
      int ms = until <= now ? 0
                            : static_cast<int>(std::min<int64_t>(
                                  INT_MAX, std::chrono::ceil<std::chrono::milliseconds>(until - now).count()));
      if (timeout < 0 || ms < timeout) timeout = ms;
    }
    int n = Wait(evs.data(), static_cast<int>(evs.size()), timeout);
    if (n < 0 && errno != EINTR) {
      // Cannot happen with a valid epoll fd; stop rather than spin.
      break;
    }
    // Commands first: what JavaScript asked before a frame arrived (setFast, answered replies) applies
    // to that frame, whichever order epoll reports the wake-up and the frame in.
    bool woke = false;
    for (int i = 0; i < n; i++) woke = woke || evs[i].data.u64 == 0;
    if (woke) {
      uint64_t v;
      ssize_t r = ::read(wake_.Get(), &v, sizeof v);
      (void)r;
      {
        std::lock_guard<std::mutex> l(cmd_mu_);
        woken_ = false;
      }
      RunCommands();
      RunMail();
    } else {
      // Posted after epoll_wait returned: the wake-up comes next turn, the commands apply now.
      RunCommands();
    }
    for (int i = 0; i < n; i++) {
      uint64_t id = evs[i].data.u64;
      if (id == 0) continue;
      ConnPtr c = Find(id);
      if (!c) continue;
      uint32_t e = evs[i].events;
      if (e & (EPOLLHUP | EPOLLERR)) {
        // The peer is gone (or both sides are done): what it sent before is still served, then close.
        while (!c->eof && !c->bad && c->fd.Valid() && OnReadable(c)) {
        }
        bool normal = c->wr_shut || c->end_requested;
        bool found = Find(id) != nullptr;
        if (found) CloseConn(c, normal ? "" : (e & EPOLLERR ? "EPOLLERR" : "EPOLLHUP"));
        continue;
      }
      if (e & EPOLLIN) OnReadable(c);
      if ((e & EPOLLOUT) && Find(id)) OnWritable(c);
    }
    RunTimers();
    // Messages this turn delivered go out with this turn's writes (pushes, parked RECVs answered); what
    // they unblock may deliver more.
    for (int rounds = 0; own_mail_ && rounds < 8; rounds++) {
      own_mail_ = false;
      RunMail();
    }
    if (own_mail_) Wake();  // still more: the next turn, after the other connections had theirs
    for (auto& c : dirty_) {
      c->dirty = false;
      if (!c->fd.Valid()) continue;
      Flush(c);
    }
    dirty_.clear();
    SendBatch();
  }
  // Closing: every connection goes, and JavaScript hears of it.
  RunCommands();
  std::vector<ConnPtr> all;
  {
    std::lock_guard<std::mutex> l(conns_mu_);
    for (auto& [id, c] : conns_) all.push_back(c);
  }
  for (auto& c : all) CloseConn(c, "");
  SendBatch();
}

void Reactor::RunCommands() {
  std::vector<Command> cmds;
  {
    std::lock_guard<std::mutex> l(cmd_mu_);
    cmds.swap(cmds_);
  }
  for (auto& cmd : cmds) {
    ConnPtr c = Find(cmd.conn);
    if (!c) continue;
    switch (cmd.type) {
      case Command::Adopt: {
        epoll_event ev{};
        ev.events = c->interest = EPOLLIN;
        ev.data.u64 = c->id;
        if (epoll_ctl(epoll_.Get(), EPOLL_CTL_ADD, c->fd.Get(), &ev) != 0) {
          CloseConn(c, std::string("epoll_ctl: ") + ErrnoName(errno));
          break;
        }
        by_principal_[c->principal].push_back(c);
        if (!cmd.initial.empty()) Ingest(c, cmd.initial.data(), cmd.initial.size());
        break;
      }
      case Command::Answered: {
        int err;
        {
          std::lock_guard<std::mutex> l(c->mu);
          err = c->write_error;
        }
        if (err) {
          CloseConn(c, ErrnoName(err));
          break;
        }
        c->pending_js -= std::min<uint64_t>(c->pending_js, cmd.n);
        Process(c);
        break;
      }
      case Command::SetFast:
        c->fast = cmd.n != 0;
        Process(c);
        break;
      case Command::SetPush:
        c->push = (cmd.n & kPushBitOn) != 0;
        c->push_batch = (cmd.n & kPushBitBatch) != 0;
        c->push_binary = (cmd.n & kPushBitBinary) != 0;
        PushMail(c);
        break;
      case Command::Pause:
        c->js_paused = true;
        break;
      case Command::Resume:
        c->js_paused = false;
        break;
      case Command::End:
        c->end_requested = true;
        break;
      case Command::Destroy:
        CloseConn(c, "");
        continue;
    }
    if (c->fd.Valid()) {
      Shutdown(c);
      Interest(c);
    }
  }
}

void Reactor::RunMail() {
  std::unordered_set<uint32_t> ids;
  {
    std::lock_guard<std::mutex> l(mail_mu_);
    ids.swap(mail_);
  }
  for (uint32_t id : ids) {
    auto it = by_principal_.find(id);
    if (it == by_principal_.end()) continue;
    auto conns = it->second;  // Resume / push may close a connection
    for (auto& c : conns) {
      if (!c->fd.Valid()) continue;
      if (c->parked) {
        std::string out;
        if (fast::Resume(*store_, c->park, false, out)) Unpark(c, out);
      }
      PushMail(c);
    }
  }
}

void Reactor::RunTimers() {
  if (parked_.empty()) return;
  auto now = Clock::now();
  std::vector<ConnPtr> due;
  for (Conn* p : parked_) {
    if (p->park.deadline <= now || (p->eof && p->next_probe <= now)) {
      ConnPtr c = Find(p->id);
      if (c) due.push_back(c);
    }
  }
  for (auto& c : due) {
    if (!c->fd.Valid() || !c->parked) continue;
    if (c->eof && c->next_probe <= now) {
      // A half-closed peer with a parked RECV: a zero-length write fails once it is gone (Rule 8).
      c->next_probe = now + kProbeEvery;
      int err = 0;
      {
        std::lock_guard<std::mutex> l(c->mu);
        if (c->out.empty() && ::send(c->fd.Get(), "", 0, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN)
          err = errno;
      }
      if (err) {
        CloseConn(c, ErrnoName(err));
        continue;
      }
    }
    if (c->park.deadline <= now) {
      std::string out;
      fast::Resume(*store_, c->park, true, out);
      Unpark(c, out);
      Interest(c);
    }
  }
}

// Reads once (64 KiB); true when it read bytes.
bool Reactor::OnReadable(const ConnPtr& c) {
  ssize_t n;
  do {
    n = ::recv(c->fd.Get(), rbuf_.data(), rbuf_.size(), MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) CloseConn(c, ErrnoName(errno));
    return false;
  }
  if (n == 0) {
    // EOF: a partial frame can never complete; JavaScript hears `end` once the reactor's frames are done.
    c->eof = true;
    c->in.clear();
    c->next_probe = Clock::now();
    MaybeEnd(c);
    Interest(c);
    return false;
  }
  Ingest(c, rbuf_.data(), static_cast<size_t>(n));
  Interest(c);
  return true;
}

// Splits complete frames off the stream; a bad header (Rule 7) ends decoding, and the rest of the stream
// goes to JavaScript (whose FrameDecoder finds the same error) after every frame before it.
void Reactor::Ingest(const ConnPtr& c, const char* data, size_t n) {
  if (c->bad) return;
  c->in.append(data, n);
  size_t off = 0;
  const char* p = c->in.data();
  size_t len = c->in.size();
  while (len - off >= kHeaderSize) {
    uint32_t magic;
    uint64_t size;
    std::memcpy(&magic, p + off, 4);
    std::memcpy(&size, p + off + 9, 8);
    if (magic != kMagic || size > max_payload_) {
      c->bad = true;
      c->held.push_back(Held{std::string(p + off, len - off), true});
      off = len;
      // The connection is condemned: a RECV parked here is woken and takes nothing (as Connection does
      // in TypeScript), so that the error reply after it is not held back until the RECV's deadline.
      if (c->parked) {
        std::string out;
        AppendFrame(out, c->principal, kOpRecv, R"({"success":true,"messages":[],"count":0})");
        Unpark(c, out);
      }
      break;
    }
    if (len - off - kHeaderSize < size) break;
    c->held.push_back(Held{std::string(p + off, kHeaderSize + size), false});
    off += kHeaderSize + size;
  }
  c->in.erase(0, off);
  Process(c);
}

static bool FastOpcode(uint8_t op) {
  return op == kOpSend || op == kOpRecv || op == kOpBroadcast || op == kOpSendBatch;
}

// Serves or forwards held frames in order (Rule 2): a fast frame waits while anything of its connection
// is pending in JavaScript; a parked RECV holds everything after it.
void Reactor::Process(const ConnPtr& c) {
  while (!c->held.empty() && !c->parked && c->fd.Valid()) {
    if (!c->held.front().raw) {
      uint8_t op = static_cast<uint8_t>(c->held.front().bytes[8]);
      if (c->fast && FastOpcode(op) && c->pending_js > 0) break;
    }
    Held h = std::move(c->held.front());
    c->held.pop_front();
    if (h.raw) {
      Forward(c, h.bytes);
      continue;
    }
    uint8_t op = static_cast<uint8_t>(h.bytes[8]);
    Verdict v = Verdict::ToJs;
    ParkedRecv park;
    if (c->fast && FastOpcode(op)) {
      Call call{c->principal, c->id, op, std::string_view(h.bytes).substr(kHeaderSize)};
      v = Serve(*store_, call, c->replies, &park);
    }
    if (v == Verdict::Done) {
      if (c->replies.size() >= kFlushAt) Flush(c);
      else Reply(c);
    } else if (v == Verdict::Park) {
      c->parked = true;
      c->park = park;
      c->next_probe = Clock::now();
      parked_.insert(c.get());
    } else {
      Forward(c, h.bytes);
      c->pending_js++;
    }
  }
  MaybeEnd(c);
}

void Reactor::Forward(const ConnPtr& c, std::string_view bytes) {
  if (!batch_.empty() && batch_.back().type == Event::Data && batch_.back().conn == c->id)
    batch_.back().data.append(bytes);
  else
    batch_.push_back(Event{Event::Data, c->id, std::string(bytes)});
}

void Reactor::MaybeEnd(const ConnPtr& c) {
  if (c->eof && !c->end_sent && c->held.empty() && !c->parked && c->fd.Valid()) {
    c->end_sent = true;
    batch_.push_back(Event{Event::End, c->id});
  }
}

// Push delivery (Rule 6): messages of the connection's principal, while it has room.
void Reactor::PushMail(const ConnPtr& c) {
  if (!c->push || !c->fd.Valid() || c->bad) return;
  while (c->unsent + c->replies.size() < kPushRoom) {
    PushFormat f = c->push_binary ? PushFormat::Binary : PushFormat::Json;
    size_t n = c->push_batch ? PushMessages(*store_, c->principal, c->id, kPushBatchFrame, kPushBatchBytes, true, f,
                                            c->replies)
                             : PushMessages(*store_, c->principal, c->id, kPushBatch, SIZE_MAX, false, f, c->replies);
    if (n == 0) break;
    if (c->replies.size() >= kFlushAt) Flush(c);
  }
  Reply(c);
}

// A parked RECV is answered (`reply`: its whole frame) and the frames held behind it are served.
void Reactor::Unpark(const ConnPtr& c, const std::string& reply) {
  c->parked = false;
  parked_.erase(c.get());
  c->replies += reply;
  Reply(c);
  Process(c);
}

void Reactor::Reply(const ConnPtr& c) {
  if (!c->replies.empty() && !c->dirty) {
    c->dirty = true;
    dirty_.push_back(c);
  }
}

// Queues the reactor's replies behind what is already queued and writes what the socket takes (one
// writev for the whole queue).
void Reactor::Flush(const ConnPtr& c) {
  if (c->replies.empty()) return;
  int err = 0;
  bool drain = false;
  size_t unsent = 0;
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->closed) {
      c->replies.clear();
      return;
    }
    c->unsent += c->replies.size();
    c->out.push_back(std::move(c->replies));
    c->replies = std::string();
    err = static_cast<int>(WriteOut(*c));
    unsent = c->unsent;
    drain = c->above_mark && unsent < kDrainMark;
    if (drain) c->above_mark = false;
  }
  if (err) {
    CloseConn(c, ErrnoName(err));
    return;
  }
  if (drain) batch_.push_back(Event{Event::Drain, c->id, {}, unsent});
  Shutdown(c);
  Interest(c);
}

size_t Reactor::WriteOut(Conn& c) {
  while (!c.out.empty()) {
    iovec iov[kMaxIov];
    int k = 0;
    for (auto it = c.out.begin(); it != c.out.end() && k < kMaxIov; ++it, ++k) {
      size_t skip = k == 0 ? c.out_off : 0;
      iov[k].iov_base = const_cast<char*>(it->data() + skip);
      iov[k].iov_len = it->size() - skip;
    }
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = k;
    ssize_t n = ::sendmsg(c.fd.Get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return static_cast<size_t>(errno);
    }
    size_t left = static_cast<size_t>(n);
    c.unsent -= left;
    while (left > 0) {
      size_t avail = c.out.front().size() - c.out_off;
      if (left >= avail) {
        left -= avail;
        c.out.pop_front();
        c.out_off = 0;
      } else {
        c.out_off += left;
        left = 0;
      }
    }
  }
  return 0;
}

void Reactor::OnWritable(const ConnPtr& c) {
  int err;
  bool drain = false;
  size_t unsent;
  {
    std::lock_guard<std::mutex> l(c->mu);
    err = static_cast<int>(WriteOut(*c));
    unsent = c->unsent;
    if (c->above_mark && unsent < kDrainMark) {
      c->above_mark = false;
      drain = true;
    }
  }
  if (err) {
    CloseConn(c, ErrnoName(err));
    return;
  }
  if (drain) batch_.push_back(Event{Event::Drain, c->id, {}, unsent});
  if (unsent < kPushRoom) PushMail(c);
  Shutdown(c);
  Interest(c);
}

// The kernel's side ends once everything queued is out (Rule 8); with the peer's side already ended,
// the connection is done.
void Reactor::Shutdown(const ConnPtr& c) {
  if (!c->end_requested || c->wr_shut || !c->fd.Valid() || !c->replies.empty()) return;
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (!c->out.empty()) return;
    ::shutdown(c->fd.Get(), SHUT_WR);
  }
  c->wr_shut = true;
  if (c->eof) CloseConn(c, "");
}

// Level-triggered epoll: interest in EPOLLIN only while the connection may be read (bounds, pause, EOF,
// framing error), in EPOLLOUT only while bytes are queued. Unread input then simply waits in the socket.
void Reactor::Interest(const ConnPtr& c) {
  if (!c->fd.Valid()) return;
  size_t unsent = c->unsent;
  if (unsent >= kMaxUnsent) c->unsent_stop = true;
  else if (unsent < kResumeUnsent) c->unsent_stop = false;
  bool in = !c->eof && !c->bad && !c->js_paused && !c->unsent_stop &&
            c->held.size() + c->pending_js < kMaxHeld;
  bool out;
  {
    std::lock_guard<std::mutex> l(c->mu);
    out = !c->out.empty();
  }
  uint32_t want = (in ? uint32_t{EPOLLIN} : 0u) | (out ? uint32_t{EPOLLOUT} : 0u);
  if (want == c->interest) return;
  epoll_event ev{};
  ev.events = want;
  ev.data.u64 = c->id;
  if (epoll_ctl(epoll_.Get(), EPOLL_CTL_MOD, c->fd.Get(), &ev) != 0) {
    CloseConn(c, std::string("epoll_ctl: ") + ErrnoName(errno));
    return;
  }
  c->interest = want;
}

// Closes at once: a parked RECV takes nothing, leases go back to the mailbox, JavaScript hears `close`.
void Reactor::CloseConn(const ConnPtr& c, const std::string& error) {
  {
    std::lock_guard<std::mutex> l(c->mu);
    if (c->closed) return;
    c->closed = true;
    c->out.clear();
    c->unsent = 0;
    c->fd.Reset();  // also leaves the epoll set
  }
  if (c->parked) {
    c->parked = false;
    parked_.erase(c.get());
  }
  c->held.clear();
  c->replies.clear();
  store_->RequeueLeases(c->principal, c->id);
  auto it = by_principal_.find(c->principal);
  if (it != by_principal_.end()) {
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), c), v.end());
    if (v.empty()) by_principal_.erase(it);
  }
  {
    std::lock_guard<std::mutex> l(conns_mu_);
    conns_.erase(c->id);
  }
  batch_.push_back(Event{Event::Close, c->id, error});
}

// One call into JavaScript for everything this turn produced.
void Reactor::SendBatch() {
  if (batch_.empty()) return;
  auto* events = new std::vector<Event>(std::move(batch_));
  batch_ = {};
  napi_status s = tsfn_.NonBlockingCall(events, [](Napi::Env env, Napi::Function fn, std::vector<Event>* evs) {
    std::unique_ptr<std::vector<Event>> owned(evs);
    if (static_cast<napi_env>(env) == nullptr || fn.IsEmpty()) return;  // the environment is going away
    try {
      Napi::Array arr = Napi::Array::New(env, evs->size());
      static const char* kTypes[] = {"data", "end", "drain", "close"};
      for (size_t i = 0; i < evs->size(); i++) {
        Event& e = (*evs)[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set("type", kTypes[e.type]);
        o.Set("conn", Napi::Number::New(env, static_cast<double>(e.conn)));
        if (e.type == Event::Data) o.Set("data", Napi::Buffer<char>::Copy(env, e.data.data(), e.data.size()));
        if (e.type == Event::Drain) o.Set("unsent", Napi::Number::New(env, static_cast<double>(e.unsent)));
        if (e.type == Event::Close && !e.data.empty()) o.Set("error", e.data);
        arr[i] = o;
      }
      fn.Call({arr});
    } catch (const Napi::Error& e) {
      // An exception of the kernel's handler is the kernel's uncaught exception; while the environment
      // shuts down (nothing can run any more) the events are dropped.
      try {
        e.ThrowAsJavaScriptException();
      } catch (...) {
      }
    }
  });
  if (s != napi_ok) delete events;
}

Napi::Function Reactor::Define(Napi::Env env) {
  return DefineClass(env, "Reactor",
                     {InstanceMethod<&Reactor::Adopt>("adopt"), InstanceMethod<&Reactor::Write>("write"),
                      InstanceMethod<&Reactor::SetFast>("setFast"), InstanceMethod<&Reactor::SetPush>("setPush"),
                      InstanceMethod<&Reactor::Pause>("pause"), InstanceMethod<&Reactor::Resume>("resume"),
                      InstanceMethod<&Reactor::End>("end"), InstanceMethod<&Reactor::Destroy>("destroy"),
                      InstanceMethod<&Reactor::Close>("close"),
                      InstanceMethod<&Reactor::PollStats>("pollStats")});
}

}  // namespace
}  // namespace clove::fast

namespace clove {
void InitReactor(Napi::Env env, Napi::Object exports) { exports.Set("Reactor", fast::Reactor::Define(env)); }
}  // namespace clove
