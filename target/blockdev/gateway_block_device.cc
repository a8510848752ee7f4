#include "target/blockdev/gateway_block_device.h"

#include <algorithm>
#include <deque>
#include <cerrno>
#include <vector>

#include "target/common/config.h"
#include "target/nbd/protocol.h"

namespace ferry::blockdev {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr int kMaxEioAttempts = 3;
constexpr milliseconds kBackoffMin{100};
constexpr milliseconds kBackoffMax{2000};
constexpr milliseconds kProbePeriod{1000};
constexpr milliseconds kProbeConnectTimeout{1000};
constexpr milliseconds kProbeHandshakeTimeout{2000};

enum class ErrClass { kOk, kRetry, kEio, kGatewayGone, kFatal };

// NBD errors on the wire are errno-like; the table is in docs/failover.md.
ErrClass Classify(uint32_t e) {
  switch (e) {
    case 0: return ErrClass::kOk;
    case EAGAIN: case EINTR: case nbd::kENOMEM: case EBUSY: case ETIMEDOUT: return ErrClass::kRetry;
    case nbd::kEIO: return ErrClass::kEio;
    case nbd::kESHUTDOWN: return ErrClass::kGatewayGone;
    default: return ErrClass::kFatal;
  }
}

Status MapError(uint32_t e, const std::string& what) {
  switch (e) {
    case nbd::kEPERM: return Status::Fenced(what + ": refused by the gateway (fenced: a newer epoch holds the volume)");
    case nbd::kEINVAL: case nbd::kEOVERFLOW: case nbd::kENOTSUP:
      return Status::InvalidArgument(what + ": gateway says invalid request (errno " + std::to_string(e) + ")");
    case nbd::kENOSPC: case EDQUOT: return Status::NoSpace(what + ": no space on the gateway");
    default: return Status::IoError(what + ": gateway I/O error (errno " + std::to_string(e) + ")");
  }
}

const char* CmdName(uint16_t t) {
  switch (t) {
    case nbd::kCmdRead: return "read";
    case nbd::kCmdWrite: return "write";
    case nbd::kCmdFlush: return "flush";
    case nbd::kCmdTrim: return "trim";
    case nbd::kCmdWriteZeroes: return "write-zeroes";
    default: return "request";
  }
}

std::string DefaultExportName(const std::string& vol, uint64_t epoch) {
  return epoch == 0 ? vol : vol + "@" + std::to_string(epoch);
}

// A count over a window of `secs` (>= 1) seconds, per second, rounded.
uint64_t PerSec(uint64_t n, double secs) { return static_cast<uint64_t>(n / secs + 0.5); }

int64_t Us(Clock::duration d) { return std::chrono::duration_cast<std::chrono::microseconds>(d).count(); }

}  // namespace

std::vector<std::pair<std::string, std::string>> VolumeStats::ToStrings() const {
  auto n = [](uint64_t v) { return std::to_string(v); };
  return {{"volumeName", volumeName}, {"perferGw", perferGw},     {"currentGw", currentGw},
          {"status", std::to_string(status)}, {"readError", n(readError)}, {"writeError", n(writeError)},
          {"ioCnt", n(ioCnt)},        {"ioTotal", n(ioTotal)},       {"readIops", n(readIops)},
          {"readKBps", n(readKBps)},  {"readDelayAvg", n(readDelayAvg)}, {"writeIops", n(writeIops)},
          {"writeKBps", n(writeKBps)}, {"writeDelayAvg", n(writeDelayAvg)},
          {"switchable", switchable ? "1" : "0"}, {"epoch", n(epoch)}};
}

// ---------------------------------------------------------------------------
// Impl: all mutable state. Threads: callers (submit), one reader per
// connection (replies), and three scheduler tasks that run on the shared
// DeviceScheduler only when something is due: the manager (timeouts,
// switching, reconnect, fail-back, rates), the prober (health probes of failed
// and preferred gateways) and the sender (requests issued from callbacks). Locks: mu_ guards everything below it; it is never held while
// sending, connecting, closing a connection or running a callback.
class GatewayBlockDevice::Impl {
 public:
  struct Op {
    uint64_t seq = 0;
    uint16_t type = 0;
    uint16_t flags = 0;
    uint64_t offset = 0;
    uint32_t length = 0;
    const char* wbuf = nullptr;
    char* rbuf = nullptr;
    SplicedData* sdest = nullptr;  // a spliced read's pipe (owned by cb)
    Callback cb;
    Clock::time_point issued;
    Clock::time_point retry_deadline;
    milliseconds io_timeout{0};
    uint64_t gen = 0;  // connection generation it is in flight on; 0 = waiting to be sent
    Clock::time_point sent_at;
    Clock::time_point retry_at;
    milliseconds backoff{0};
    int eio = 0;
    bool answered_error = false;
    Status last_error;
    std::atomic<int> sending{0};
  };
  using OpPtr = std::shared_ptr<Op>;

  struct GwHealth {
    bool failed = false;
    std::optional<Clock::time_point> ok_since;  // continuous successful probes since
    bool probing = false;
  };

  explicit Impl(GatewayBlockDevice* d) : d_(d), cfg_(d->cfg_), log_(cfg_.logger) {}

  // ---- setup
  Status Init() {
    if (cfg_.volume.empty()) return Status::InvalidArgument("volume name is empty");
    if (cfg_.gateways.empty()) return Status::InvalidArgument("no gateways given");
    if (!cfg_.timeouts) return Status::InvalidArgument("timeouts object missing");
    for (const auto& g : cfg_.gateways) {
      auto hp = ParseHostPort(g);
      if (!hp.ok()) return Status::InvalidArgument("gateway '" + g + "': " + hp.status().message());
      health_[g];
    }
    preferred_ = cfg_.preferred.empty() ? cfg_.gateways.front() : cfg_.preferred;
    if (!health_.count(preferred_)) return Status::InvalidArgument("preferred gateway not in the list: " + preferred_);
    current_ = cfg_.current.empty() ? preferred_ : cfg_.current;
    auto hp = ParseHostPort(current_);
    if (!hp.ok()) return Status::InvalidArgument("current gateway '" + current_ + "': " + hp.status().message());
    epoch_ = cfg_.epoch;
    if (!cfg_.export_name) cfg_.export_name = DefaultExportName;
    d_->size_.store(cfg_.size_hint);
    d_->switchable_.store(cfg_.switchable);
    return Status::Ok();
  }

  Status Start() {
    // The tasks exist before the first connection can report anything.
    sched_ = cfg_.scheduler ? cfg_.scheduler : std::make_shared<DeviceScheduler>();
    mgr_task_ = sched_->NewTask([this] { ManagerRun(); });
    probe_task_ = sched_->NewTask([this] { ProbeRun(); });
    send_task_ = sched_->NewTask([this] { SenderRun(); });
    // First connection: at the given epoch (joining), or at a new one the
    // gateway grants (raise_epoch).
    uint64_t gen = NewGen();
    auto c = ConnectTo(current_, epoch_, gen, cfg_.raise_epoch);
    if (cfg_.raise_epoch) {
      if (c.ok()) {
        auto granted = GrantedEpoch(c.value()->info().name);
        if (!granted.ok()) c = granted.status();  // closes the connection
        else {
          std::lock_guard<std::mutex> l(mu_);
          epoch_ = *granted;
        }
      }
      if (!c.ok()) {
        std::lock_guard<std::mutex> l(mu_);
        start_error_ = "gateway " + current_ + ": " + c.status().message();
        // Unavailable whatever the cause (as a join that finds no gateway):
        // the backend reads other codes of an add as answers about the target.
        return Status::Unavailable("volume " + cfg_.volume + ": cannot open it at a new epoch on " + start_error_);
      }
    }
    if (c.ok()) {
      Activate(std::move(c.value()), gen, current_, epoch_, "start", /*notify=*/false);
    } else {
      log_.Warn("volume " + cfg_.volume + ": cannot open gateway " + current_ + " at epoch " +
                std::to_string(epoch_) + ": " + c.status().ToString());
      std::lock_guard<std::mutex> l(mu_);
      health_[current_].failed = true;
      start_error_ = "gateway " + current_ + ": " + c.status().message();
      need_failover_ = "start: " + c.status().message();
      d_->status_.store(static_cast<int>(VolumeStatus::kSwitch));
    }
    if (cfg_.fixed_mode) fixed_sub_ = cfg_.fixed_mode->Subscribe([this] { mgr_task_->WakeNow(); });
    {
      std::lock_guard<std::mutex> l(rates_mu_);
      last_roll_ = Clock::now();
      next_rates_ = last_roll_ + milliseconds(1000);
    }
    mgr_task_->WakeNow();
    return Status::Ok();
  }

  // The epoch a raise was granted, from the gateway's NBD_INFO_NAME
  // ("VOL@GRANTED"); at least the floor asked for.
  Result<uint64_t> GrantedEpoch(const std::string& name) const {
    nbd::ExportName e;
    if (name.empty() || !nbd::ParseExportName(name, &e) || e.raise || e.volume != cfg_.volume ||
        !e.snapshot.empty() || e.epoch < cfg_.epoch)
      return Status::Unavailable("the gateway did not name the epoch it granted (got '" + name +
                                 "'; a gateway older than raise_epoch?)");
    return e.epoch;
  }

  void Stop() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopped_) return;
      stopped_ = true;
      stopping_ = true;
    }
    cv_.notify_all();
    if (cfg_.fixed_mode) cfg_.fixed_mode->Unsubscribe(fixed_sub_);
    mgr_task_->Cancel();
    probe_task_->Cancel();
    std::shared_ptr<NbdConnection> c;
    {
      std::lock_guard<std::mutex> l(mu_);
      c = std::move(conn_);
      published_ = false;
    }
    if (c) c->Close();
    send_task_->Cancel();
    std::vector<OpPtr> left;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& [s, op] : ops_) left.push_back(op);
      ops_.clear();
    }
    for (auto& op : left) {
      while (op->sending.load() > 0) std::this_thread::yield();  // the connection is closed: Send returns at once
      Complete(op, Status::IoError("device stopped"));
    }
  }

  // ---- submission
  void Submit(uint16_t type, uint16_t flags, uint64_t offset, uint32_t length, const char* wbuf, char* rbuf,
              Callback cb, SplicedData* sdest = nullptr) {
    auto op = std::make_shared<Op>();
    op->type = type;
    op->flags = flags;
    op->offset = offset;
    op->length = length;
    op->wbuf = wbuf;
    op->rbuf = rbuf;
    op->sdest = sdest;
    op->cb = std::move(cb);
    op->issued = Clock::now();
    bool is_read = type == nbd::kCmdRead;
    const Timeouts& t = *cfg_.timeouts;
    op->io_timeout = t.Get(is_read ? TimeoutKind::kRead : TimeoutKind::kWrite);
    op->retry_deadline = op->issued + t.Get(is_read ? TimeoutKind::kReadRetry : TimeoutKind::kWriteRetry);
    std::shared_ptr<NbdConnection> c;
    bool deferred = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopped_) {
        // fall through to complete outside the lock
      } else {
        op->seq = ++next_seq_;
        ops_.emplace(op->seq, op);
        inflight_.fetch_add(1);
        if (published_ && conn_ && conn_->OnReaderThread()) {
          // Issued from a completion callback: sending here could block the
          // thread that must read the replies (full socket buffers both
          // ways). The sender thread sends it.
          op->retry_at = op->issued;
          defer_q_.push_back(op);
          deferred = true;
        } else if (published_ && conn_) {
          c = conn_;
          op->gen = conn_gen_;
          op->sent_at = op->issued;
          op->sending.fetch_add(1);
        }
      }
    }
    if (op->seq == 0) {
      Finish(op, Status::IoError("device stopped"));
      return;
    }
    if (c) SendOp(c, op);
    if (deferred) send_task_->WakeNow();
  }

  // Sends an op the caller marked sending (gen set). A failure means the
  // connection died; the manager re-sends everything of that generation.
  void SendOp(const std::shared_ptr<NbdConnection>& c, const OpPtr& op) {
    auto deadline = op->sent_at + op->io_timeout + milliseconds(1);
    c->Send(op->type, op->flags, op->seq, op->offset, op->length, op->wbuf, op->rbuf, op->sdest);
    op->sending.fetch_sub(1);
    mgr_task_->WakeAt(deadline);  // the hung-gateway check (a no-op when one is due sooner)
  }

  // Sends what completion callbacks issued (see Submit). If the volume is
  // between connections, the op simply waits: the next Activate sends it.
  void SenderRun() {
    {
      std::vector<OpPtr> batch;
      std::shared_ptr<NbdConnection> c;
      {
        std::unique_lock<std::mutex> l(mu_);
        if (stopping_ || defer_q_.empty()) return;
        if (!published_ || !conn_) {
          defer_q_.clear();  // still waiting (gen 0): Activate or RetryWaiting sends them
          return;
        }
        c = conn_;
        auto now = Clock::now();
        for (auto& op : defer_q_) {
          if (op->gen != 0 || !ops_.count(op->seq)) continue;  // already sent or done
          op->gen = conn_gen_;
          op->sent_at = now;
          op->sending.fetch_add(1);
          batch.push_back(op);
        }
        defer_q_.clear();
      }
      for (auto& op : batch) SendOp(c, op);
    }
  }

  // ---- replies (reader thread of connection `gen`)
  void OnReply(uint64_t gen, uint64_t cookie, uint32_t err) {
    OpPtr op;
    Status fatal;
    // A planned move (MoveTo) waits for the ops of its connection to finish.
    struct NotifyOnExit {
      std::condition_variable& cv;
      ~NotifyOnExit() { cv.notify_all(); }
    } notify{cv_};
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = ops_.find(cookie);
      if (it == ops_.end() || it->second->gen != gen) return;  // stale (already handled elsewhere)
      op = it->second;
      ErrClass ec = Classify(err);
      if (ec == ErrClass::kEio && ++op->eio >= kMaxEioAttempts) ec = ErrClass::kFatal;
      switch (ec) {
        case ErrClass::kOk:
          ops_.erase(it);
          break;
        case ErrClass::kRetry:
        case ErrClass::kEio: {
          op->answered_error = true;
          op->last_error = MapError(err, CmdName(op->type));
          op->gen = 0;
          op->backoff = std::min(kBackoffMax, op->backoff.count() ? op->backoff * 2 : kBackoffMin);
          op->retry_at = Clock::now() + op->backoff;
          retry_events_++;
          mgr_task_->WakeAt(op->retry_at);
          return;
        }
        case ErrClass::kGatewayGone:
          // The gateway is shutting down: treat it like a dead connection.
          op->gen = 0;
          op->retry_at = Clock::now();
          if (gen == conn_gen_ && dead_reason_.empty()) dead_reason_ = "gateway shutting down (ESHUTDOWN)";
          mgr_task_->WakeNow();
          return;
        case ErrClass::kFatal:
          ops_.erase(it);
          fatal = MapError(err, CmdName(op->type));
          break;
      }
    }
    Complete(op, fatal);
  }

  void OnDead(uint64_t gen, const Status& why) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (gen != conn_gen_ || !dead_reason_.empty()) return;
      dead_reason_ = "connection lost: " + why.message();
    }
    cv_.notify_all();
    mgr_task_->WakeNow();
  }

  // ---- completion and counters
  void Complete(const OpPtr& op, const Status& s) {
    // A reply can overtake the return of the sendmsg() that carried its
    // request (the kernel already copied the buffer). Wait for that return
    // so no thread is inside a call that names the caller's buffer when the
    // callback runs; this wait is microseconds, never on the network.
    while (op->sending.load() > 0) std::this_thread::yield();
    inflight_.fetch_sub(1);
    Finish(op, s);
  }

  void Finish(const OpPtr& op, const Status& s) {
    int64_t lat = Us(Clock::now() - op->issued);
    bool is_read = op->type == nbd::kCmdRead;
    if (!s.ok()) {
      (is_read ? read_err_ : write_err_).fetch_add(1);
    } else if (is_read) {
      read_ops_.fetch_add(1);
      read_bytes_.fetch_add(op->length);
      read_lat_us_.fetch_add(lat);
    } else if (op->type == nbd::kCmdWrite || op->type == nbd::kCmdWriteZeroes) {
      write_ops_.fetch_add(1);
      if (op->type == nbd::kCmdWrite) write_bytes_.fetch_add(op->length);
      write_lat_us_.fetch_add(lat);
    }
    total_.fetch_add(1);
    Callback cb = std::move(op->cb);
    if (cb) cb(s);
  }

  // ---- connections
  uint64_t NewGen() {
    std::lock_guard<std::mutex> l(mu_);
    return ++next_gen_;
  }

  Result<std::unique_ptr<NbdConnection>> ConnectTo(const std::string& gw, uint64_t epoch, uint64_t gen,
                                                    bool raise = false) {
    auto hp = ParseHostPort(gw);
    if (!hp.ok()) return hp.status();
    NbdConnectOptions o;
    o.host = hp->host;
    o.port = hp->port;
    o.export_name = raise ? nbd::FormatExportName(nbd::ExportName{cfg_.volume, "", epoch, true})
                          : cfg_.export_name(cfg_.volume, epoch);
    o.connect_timeout = cfg_.connect_timeout;
    o.handshake_timeout = cfg_.handshake_timeout;
    return NbdConnection::Connect(
        o, [this, gen](uint64_t cookie, uint32_t err) { OnReply(gen, cookie, err); },
        [this, gen](const Status& why) { OnDead(gen, why); });
  }

  // Makes `c` the current connection and sends every waiting op on it in
  // issue order before new submissions may use it directly.
  void Activate(std::unique_ptr<NbdConnection> uc, uint64_t gen, const std::string& gw, uint64_t epoch,
                const std::string& why, bool notify) {
    std::shared_ptr<NbdConnection> c(std::move(uc));
    d_->size_.store(c->info().size);
    tflags_.store(c->info().flags);
    std::string from;
    uint64_t old_epoch;
    size_t waiting = 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      from = current_;
      old_epoch = epoch_;
      current_ = gw;
      epoch_ = epoch;
      conn_ = c;
      conn_gen_ = gen;
      dead_reason_.clear();
      published_ = false;
      health_[gw].failed = false;
      ResetUnprobedLocked();
      for (auto& [s, op] : ops_) waiting += op->gen == 0;
      d_->status_.store(static_cast<int>(VolumeStatus::kNormal));
    }
    if (!notify) {
      log_.Info("volume " + cfg_.volume + ": on gateway " + gw + " at epoch " + std::to_string(epoch) +
                " (size " + std::to_string(c->info().size) + ")");
    } else {
      log_.Warn("volume " + cfg_.volume + ": " + why + ": from " + from + " (epoch " + std::to_string(old_epoch) +
                ") to " + gw + " (epoch " + std::to_string(epoch) + "), re-sending " + std::to_string(waiting) +
                " request(s)");
      if (cfg_.on_change && (from != gw || old_epoch != epoch)) cfg_.on_change(gw, epoch);
    }
    // Everything waiting goes out in issue order before new submissions may
    // use the connection directly.
    std::unique_lock<std::mutex> l(mu_);
    for (;;) {
      if (conn_gen_ != gen) return;  // died and replaced meanwhile (manager only: cannot happen)
      std::vector<OpPtr> batch;
      auto now = Clock::now();
      for (auto& [s, op] : ops_) {
        if (op->gen != 0) continue;
        op->gen = gen;
        op->sent_at = now;
        op->sending.fetch_add(1);
        batch.push_back(op);
      }
      if (batch.empty()) {
        published_ = true;
        return;
      }
      l.unlock();
      for (auto& op : batch) SendOp(c, op);
      l.lock();
    }
  }

  // Detaches and closes the current connection; every op in flight on it
  // waits to be re-sent. Returns the gateway it was on.
  void DropConnection() {
    std::shared_ptr<NbdConnection> c;
    uint64_t gen;
    {
      std::lock_guard<std::mutex> l(mu_);
      c = std::move(conn_);
      gen = conn_gen_;
      conn_gen_ = 0;
      published_ = false;
    }
    if (c) c->Close();  // joins the reader: no reply of `gen` runs after this
    std::vector<OpPtr> wait;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto now = Clock::now();
      for (auto& [s, op] : ops_)
        if (op->gen == gen && gen != 0) {
          op->gen = 0;
          op->retry_at = now;
          wait.push_back(op);
        }
    }
    // A submitter may still be inside Send on the closed connection; it
    // returns at once. Wait so no op is in flight on two connections.
    for (auto& op : wait)
      while (op->sending.load() > 0) std::this_thread::yield();
  }

  // ---- manager: one run per event or deadline (scheduler task), never a
  // periodic tick. Deadlines: hung-request checks and retry back-offs while
  // requests exist, reconnects in fault, fail-back/fixed-mode moves, and the
  // rate window while I/O happens. An idle volume on its preferred gateway
  // schedules nothing.
  void ManagerRun() {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      kick_ = false;
    }
    CheckConnection();
    if (Stopping()) return;
    RetryWaiting();
    ExpireWindows();
    if (Clock::now() >= next_policy_) {
      Policy();
      next_policy_ = Clock::now() + milliseconds(1000);
    }
    RollRates(Clock::now());
    ScheduleNext();
  }

  // Whether the prober has work: a failed gateway, or the volume is away from
  // its preferred one. Clears the probe history of the others (mu_ held).
  bool ProbeWantedLocked() {
    bool any = false;
    for (auto& [gw, h] : health_) any |= h.failed || (gw == preferred_ && current_ != preferred_);
    return any;
  }
  void ResetUnprobedLocked() {
    for (auto& [gw, h] : health_)
      if (!(h.failed || (gw == preferred_ && current_ != preferred_))) h.ok_since.reset();
  }

  void ScheduleNext() {
    auto now = Clock::now();
    auto next = Clock::time_point::max();
    auto fixed = FixedGateway();
    bool switchable = d_->switchable_.load();
    auto recovery = cfg_.timeouts->Get(TimeoutKind::kRecovery);
    bool probe;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      if (!need_failover_.empty() || (conn_ && !dead_reason_.empty()) || kick_) next = now;
      if (in_fault_ && !conn_) next = std::min(next, next_reconnect_);
      for (auto& [sq, op] : ops_) {
        if (op->gen != 0 && conn_ && op->gen == conn_gen_) {
          next = std::min(next, op->sent_at + op->io_timeout + milliseconds(1));
        } else if (op->gen == 0) {
          next = std::min(next, op->retry_deadline);
          if (published_) next = std::min(next, std::max(op->retry_at, now));
        }
      }
      // Safety net while requests exist (this is active work, not idle cost).
      if (!ops_.empty()) next = std::min(next, now + milliseconds(1000));
      if (rates_active_) next = std::min(next, next_rates_);
      if (switchable && conn_) {
        if (fixed && *fixed != current_) {
          next = std::min(next, next_policy_);
        } else if (!fixed && current_ != preferred_ && health_[preferred_].ok_since) {
          next = std::min(next, std::max(next_policy_, *health_[preferred_].ok_since + recovery));
        }
      }
      probe = ProbeWantedLocked();
    }
    if (next != Clock::time_point::max()) mgr_task_->WakeAt(next);
    if (probe) probe_task_->WakeAt(now + kProbePeriod);
  }

  // Rates over the last window (about a second while I/O happens; when the
  // volume was idle, the average since the last window). Computed from the
  // counters when due or when Stats() reads them; nothing runs when idle.
  void RollRates(Clock::time_point now) {
    std::lock_guard<std::mutex> l(rates_mu_);
    if (now < next_rates_) return;
    uint64_t ro = read_ops_.load(), rb = read_bytes_.load(), rl = read_lat_us_.load();
    uint64_t wo = write_ops_.load(), wb = write_bytes_.load(), wl = write_lat_us_.load();
    uint64_t tot = total_.load();
    uint64_t dro = ro - last_ro_, dwo = wo - last_wo_;
    double secs = std::max(1.0, std::chrono::duration<double>(now - last_roll_).count());
    r_iops_.store(PerSec(dro, secs));
    r_kbps_.store(PerSec((rb - last_rb_) / 1024, secs));
    r_delay_.store(dro ? (rl - last_rl_) / dro / 1000 : 0);
    w_iops_.store(PerSec(dwo, secs));
    w_kbps_.store(PerSec((wb - last_wb_) / 1024, secs));
    w_delay_.store(dwo ? (wl - last_wl_) / dwo / 1000 : 0);
    bool active = tot != last_total_ || inflight_.load() > 0;
    last_ro_ = ro; last_rb_ = rb; last_rl_ = rl;
    last_wo_ = wo; last_wb_ = wb; last_wl_ = wl;
    last_total_ = tot;
    last_roll_ = now;
    next_rates_ = now + milliseconds(1000);
    std::lock_guard<std::mutex> l2(mu_);
    rates_active_ = active;
  }

  bool Stopping() {
    std::lock_guard<std::mutex> l(mu_);
    return stopping_;
  }

  // Dead connection, hung gateway, or no connection at all.
  void CheckConnection() {
    std::string reason;
    bool have_conn;
    bool fault_due = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      have_conn = conn_ != nullptr;
      if (!need_failover_.empty()) {
        reason = need_failover_;
        need_failover_.clear();
      } else if (have_conn && !dead_reason_.empty()) {
        reason = dead_reason_;
      } else if (have_conn) {
        auto now = Clock::now();
        for (auto& [s, op] : ops_) {
          if (op->gen == conn_gen_ && now - op->sent_at > op->io_timeout) {
            reason = std::string(CmdName(op->type)) + " timed out after " +
                     std::to_string(op->io_timeout.count()) + " ms (gateway hung)";
            break;
          }
        }
      } else if (in_fault_ && Clock::now() >= next_reconnect_) {
        fault_due = true;
      }
    }
    if (!reason.empty()) {
      Failover(reason);
    } else if (fault_due) {
      Reconnect();
    }
  }

  std::optional<std::string> FixedGateway() const {
    if (!cfg_.fixed_mode) return std::nullopt;
    return cfg_.fixed_mode->Get();
  }

  // The current gateway failed (or never came up). Switch, or reconnect when
  // the volume may not switch.
  void Failover(const std::string& reason) {
    std::string failed;
    {
      std::lock_guard<std::mutex> l(mu_);
      failed = current_;
      health_[failed].failed = true;
      health_[failed].ok_since.reset();
    }
    DropConnection();
    auto fixed = FixedGateway();
    bool frozen = !d_->switchable_.load();
    if (frozen || (fixed && *fixed == failed)) {
      d_->status_.store(static_cast<int>(VolumeStatus::kSwitch));
      uint64_t e = frozen ? Epoch() : Epoch() + 1;
      log_.Warn("volume " + cfg_.volume + ": gateway " + failed + " failed (" + reason + "); " +
                (frozen ? "not switchable" : "fixed mode") + ": reconnecting to it at epoch " + std::to_string(e));
      if (TryOne(failed, e, "reconnect after failure (" + reason + ")")) return;
      EnterFault(failed, reason);
      return;
    }
    d_->status_.store(static_cast<int>(VolumeStatus::kSwitch));
    log_.Warn("volume " + cfg_.volume + ": gateway " + failed + " failed at epoch " + std::to_string(Epoch()) +
              ": " + reason + "; switching");
    if (!WaitSwitchDelay()) return;
    std::vector<std::string> order;
    if (fixed) {
      order.push_back(*fixed);
    } else {
      order = Candidates(failed);
    }
    for (const auto& gw : order) {
      if (Stopping()) return;
      if (TryOne(gw, Epoch() + 1, "switch (" + reason + ")")) return;
    }
    EnterFault(failed, reason);
  }

  // Healthy gateways after `failed` in list order, then the failed-marked
  // ones (a gateway may have come back), `failed` itself last.
  std::vector<std::string> Candidates(const std::string& failed) {
    std::lock_guard<std::mutex> l(mu_);
    const auto& g = cfg_.gateways;
    size_t start = 0;
    for (size_t i = 0; i < g.size(); ++i)
      if (g[i] == failed) start = i + 1;
    std::vector<std::string> healthy, marked;
    for (size_t k = 0; k < g.size(); ++k) {
      const std::string& gw = g[(start + k) % g.size()];
      if (gw == failed) continue;
      (health_[gw].failed ? marked : healthy).push_back(gw);
    }
    healthy.insert(healthy.end(), marked.begin(), marked.end());
    healthy.push_back(failed);
    return healthy;
  }

  bool TryOne(const std::string& gw, uint64_t epoch, const std::string& why) {
    uint64_t gen = NewGen();
    auto c = ConnectTo(gw, epoch, gen);
    if (!c.ok()) {
      log_.Warn("volume " + cfg_.volume + ": gateway " + gw + " at epoch " + std::to_string(epoch) +
                " unavailable: " + c.status().ToString());
      std::lock_guard<std::mutex> l(mu_);
      health_[gw].failed = true;
      health_[gw].ok_since.reset();
      return false;
    }
    bool was_fault;
    {
      std::lock_guard<std::mutex> l(mu_);
      was_fault = in_fault_;
      in_fault_ = false;
    }
    Activate(std::move(c.value()), gen, gw, epoch, was_fault ? "recovered from fault via " + why : why, true);
    return true;
  }

  void EnterFault(const std::string& from, const std::string& reason) {
    auto every = cfg_.timeouts->Get(TimeoutKind::kReconnect);
    bool was;
    {
      std::lock_guard<std::mutex> l(mu_);
      was = in_fault_;
      in_fault_ = true;
      next_reconnect_ = Clock::now() + every;
    }
    d_->status_.store(static_cast<int>(VolumeStatus::kFault));
    if (!was)
      log_.Error("volume " + cfg_.volume + ": fault: no gateway reachable (from " + from + ", epoch " +
                 std::to_string(Epoch()) + ", reason: " + reason + "); I/O held, reconnecting every " +
                 std::to_string(every.count() / 1000) + " s");
  }

  void Reconnect() {
    auto fixed = FixedGateway();
    std::string cur = CurrentGw();
    std::vector<std::string> order;
    uint64_t epoch = Epoch() + 1;
    if (!d_->switchable_.load()) {
      order.push_back(cur);
      epoch = Epoch();
    } else if (fixed) {
      order.push_back(*fixed);
    } else {
      // Preferred first, then the list order.
      order.push_back(preferred_);
      for (const auto& g : cfg_.gateways)
        if (g != preferred_) order.push_back(g);
    }
    for (const auto& gw : order) {
      if (Stopping()) return;
      if (TryOne(gw, epoch, "reconnect")) return;
    }
    EnterFault(cur, "reconnect failed");
  }

  // Waits `switch` seconds, still expiring retry windows. False if stopping.
  bool WaitSwitchDelay() {
    auto end = Clock::now() + cfg_.timeouts->Get(TimeoutKind::kSwitch);
    while (Clock::now() < end) {
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait_for(l, std::min<Clock::duration>(cfg_.tick, end - Clock::now()), [this] { return stopping_; });
        if (stopping_) return false;
      }
      ExpireWindows();
    }
    return true;
  }

  // Ops waiting after a retryable error go out again on the live connection.
  void RetryWaiting() {
    std::shared_ptr<NbdConnection> c;
    std::vector<OpPtr> batch;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (!published_ || !conn_) return;
      c = conn_;
      auto now = Clock::now();
      for (auto& [s, op] : ops_) {
        if (op->gen != 0 || op->retry_at > now) continue;
        op->gen = conn_gen_;
        op->sent_at = now;
        op->sending.fetch_add(1);
        batch.push_back(op);
      }
    }
    for (auto& op : batch) SendOp(c, op);
  }

  // Ops not in flight whose retry window is over fail now.
  void ExpireWindows() {
    std::vector<std::pair<OpPtr, Status>> done;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto now = Clock::now();
      for (auto it = ops_.begin(); it != ops_.end();) {
        auto& op = it->second;
        if (op->gen == 0 && op->sending.load() == 0 && now >= op->retry_deadline) {
          Status s = op->answered_error
                         ? Status::IoError(op->last_error.message() + " (retry window expired)")
                         : Status::Timeout(std::string(CmdName(op->type)) + ": retry window expired without an answer");
          done.emplace_back(op, s);
          it = ops_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [op, s] : done) Complete(op, s);
  }

  // Fail-back and fixed mode, once a second.
  void Policy() {
    if (!d_->switchable_.load()) return;
    auto fixed = FixedGateway();
    std::string cur;
    bool live;
    std::optional<Clock::time_point> pref_ok;
    {
      std::lock_guard<std::mutex> l(mu_);
      cur = current_;
      live = conn_ != nullptr && published_ && dead_reason_.empty();
      pref_ok = health_[preferred_].ok_since;
    }
    if (!live) return;
    if (fixed) {
      if (*fixed != cur) MoveTo(*fixed, "fixed mode");
      return;
    }
    if (cur == preferred_ || !pref_ok) return;
    auto recovery = cfg_.timeouts->Get(TimeoutKind::kRecovery);
    if (Clock::now() - *pref_ok >= recovery)
      MoveTo(preferred_, "fail-back (preferred healthy for " + std::to_string(recovery.count() / 1000) + " s)");
  }

  // Planned move: hold new I/O, drain what is in flight, then switch at epoch+1.
  void MoveTo(const std::string& gw, const std::string& why) {
    std::lock_guard<std::mutex> pl(probe_mu_);
    d_->status_.store(static_cast<int>(VolumeStatus::kSwitch));
    std::string from;
    uint64_t gen;
    {
      std::lock_guard<std::mutex> l(mu_);
      published_ = false;  // new I/O waits
      gen = conn_gen_;
      from = current_;
    }
    auto drain_end = Clock::now() + std::max(cfg_.timeouts->Get(TimeoutKind::kRead),
                                             cfg_.timeouts->Get(TimeoutKind::kWrite));
    for (;;) {
      std::unique_lock<std::mutex> l(mu_);
      bool busy = false;
      for (auto& [s, op] : ops_)
        if (op->gen == gen) busy = true;
      if (!busy || stopping_ || !dead_reason_.empty() || Clock::now() >= drain_end) break;
      cv_.wait_until(l, drain_end);  // signalled by every reply, a dead connection and Stop
    }
    bool dead;
    {
      std::lock_guard<std::mutex> l(mu_);
      dead = !dead_reason_.empty();
      if (stopping_) return;
    }
    if (dead) {  // the old connection failed meanwhile: ordinary failover
      CheckConnection();
      return;
    }
    DropConnection();
    uint64_t epoch = Epoch() + 1;
    if (TryOne(gw, epoch, why)) return;
    // Could not reach the target gateway: go back where we were, fenced anew.
    if (TryOne(from, epoch, "return after failed " + why)) return;
    {
      std::lock_guard<std::mutex> l(mu_);
      need_failover_ = why + " failed and " + from + " unreachable";
    }
  }

  // ---- prober: failed gateways (so switches prefer live ones) and the
  // preferred one (fail-back). Handshake at epoch 0: never raises the epoch.
  void ProbeRun() {
    std::vector<std::string> targets;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      ResetUnprobedLocked();
      for (auto& [gw, h] : health_) {
        bool want = h.failed || (gw == preferred_ && current_ != preferred_);
        if (want && gw != current_) targets.push_back(gw);
        if (want && gw == current_ && conn_ == nullptr) targets.push_back(gw);
      }
    }
    for (const auto& gw : targets) {
      // A planned move holds probe_mu_: no probe overlaps it, and a gateway
      // the volume has just moved to is not probed any more.
      std::lock_guard<std::mutex> pl(probe_mu_);
      {
        std::lock_guard<std::mutex> l(mu_);
        if (stopping_) return;
        auto& h = health_[gw];
        bool want = h.failed || (gw == preferred_ && current_ != preferred_);
        if (!want || (gw == current_ && conn_ != nullptr)) continue;
      }
      bool ok = ProbeOk(gw);
      std::lock_guard<std::mutex> l(mu_);
      auto& h = health_[gw];
      if (ok) {
        if (h.failed) log_.Info("volume " + cfg_.volume + ": gateway " + gw + " answers probes again");
        h.failed = false;
        if (!h.ok_since) h.ok_since = Clock::now();
      } else {
        h.ok_since.reset();
      }
      if (stopping_) return;
    }
    bool again;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_) return;
      again = ProbeWantedLocked();
    }
    // The manager decides on fail-back from the probe history.
    if (!targets.empty()) mgr_task_->WakeNow();
    if (again) probe_task_->WakeAt(Clock::now() + kProbePeriod);
  }

  bool ProbeOk(const std::string& gw) {
    auto hp = ParseHostPort(gw);
    if (!hp.ok()) return false;
    NbdConnectOptions o;
    o.host = hp->host;
    o.port = hp->port;
    o.export_name = cfg_.export_name(cfg_.volume, 0);
    o.connect_timeout = std::min(cfg_.connect_timeout, kProbeConnectTimeout);
    o.handshake_timeout = std::min(cfg_.handshake_timeout, kProbeHandshakeTimeout);
    return NbdConnection::Probe(o).ok();
  }

  Result<uint64_t> RefreshSize() {
    auto hp = ParseHostPort(CurrentGw());
    if (!hp.ok()) return hp.status();
    NbdConnectOptions o;
    o.host = hp->host;
    o.port = hp->port;
    o.export_name = cfg_.export_name(cfg_.volume, 0);
    o.connect_timeout = cfg_.connect_timeout;
    o.handshake_timeout = cfg_.handshake_timeout;
    auto info = NbdConnection::Probe(o);
    if (!info.ok()) return info.status();
    uint64_t old = d_->size_.exchange(info->size);
    if (old != info->size)
      log_.Info("volume " + cfg_.volume + ": size " + std::to_string(old) + " -> " + std::to_string(info->size));
    return info->size;
  }

  uint64_t Epoch() {
    std::lock_guard<std::mutex> l(mu_);
    return epoch_;
  }
  std::string CurrentGw() {
    std::lock_guard<std::mutex> l(mu_);
    return current_;
  }
  std::string StartError() {
    std::lock_guard<std::mutex> l(mu_);
    return start_error_;
  }

  void FillStats(VolumeStats* s) {
    RollRates(Clock::now());
    {
      std::lock_guard<std::mutex> l(mu_);
      s->perferGw = preferred_;
      s->currentGw = current_;
      s->epoch = epoch_;
    }
    s->volumeName = cfg_.volume;
    s->status = d_->status_.load();
    s->readError = read_err_.load();
    s->writeError = write_err_.load();
    s->ioCnt = inflight_.load();
    s->ioTotal = total_.load();
    s->readIops = r_iops_.load();
    s->readKBps = r_kbps_.load();
    s->readDelayAvg = r_delay_.load();
    s->writeIops = w_iops_.load();
    s->writeKBps = w_kbps_.load();
    s->writeDelayAvg = w_delay_.load();
    s->switchable = d_->switchable_.load();
  }

  uint16_t tflags() const { return tflags_.load(); }
  void Kick() {
    {
      std::lock_guard<std::mutex> l(mu_);
      kick_ = true;
    }
    cv_.notify_all();
    if (mgr_task_) mgr_task_->WakeNow();
  }
  const Logger& log() const { return log_; }

 private:
  GatewayBlockDevice* d_;
  GatewayBlockDeviceConfig& cfg_;
  Logger log_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool stopped_ = false;
  std::map<uint64_t, OpPtr> ops_;  // by issue order
  uint64_t next_seq_ = 0;
  uint64_t next_gen_ = 0;
  std::shared_ptr<NbdConnection> conn_;
  uint64_t conn_gen_ = 0;
  bool published_ = false;
  bool kick_ = false;
  std::string dead_reason_;
  std::string need_failover_;
  std::string start_error_;  // mu_
  bool in_fault_ = false;
  Clock::time_point next_reconnect_;
  std::string preferred_, current_;
  uint64_t epoch_ = 0;
  std::map<std::string, GwHealth> health_;
  uint64_t retry_events_ = 0;

  std::shared_ptr<DeviceScheduler> sched_;
  std::shared_ptr<DeviceScheduler::Task> mgr_task_, probe_task_, send_task_;
  uint64_t fixed_sub_ = 0;
  std::mutex probe_mu_;  // one probe, or one planned move; taken before mu_
  Clock::time_point next_policy_{};  // manager only
  bool rates_active_ = false;        // under mu_
  std::deque<OpPtr> defer_q_;
  // Until a gateway has answered, assume the commands Ferry's gateway
  // supports, so early flushes are queued rather than skipped.
  std::atomic<uint16_t> tflags_{nbd::kTFlagHasFlags | nbd::kTFlagSendFlush | nbd::kTFlagSendFua |
                                nbd::kTFlagSendTrim | nbd::kTFlagSendWriteZeroes};

  std::atomic<uint64_t> inflight_{0}, total_{0}, read_err_{0}, write_err_{0};
  std::atomic<uint64_t> read_ops_{0}, read_bytes_{0}, read_lat_us_{0};
  std::atomic<uint64_t> write_ops_{0}, write_bytes_{0}, write_lat_us_{0};
  std::atomic<uint64_t> r_iops_{0}, r_kbps_{0}, r_delay_{0}, w_iops_{0}, w_kbps_{0}, w_delay_{0};
  std::mutex rates_mu_;  // guards the window below; taken before mu_
  uint64_t last_ro_ = 0, last_rb_ = 0, last_rl_ = 0, last_wo_ = 0, last_wb_ = 0, last_wl_ = 0, last_total_ = 0;
  Clock::time_point last_roll_{}, next_rates_{};
};

// ---------------------------------------------------------------------------

GatewayBlockDevice::GatewayBlockDevice(GatewayBlockDeviceConfig cfg) : cfg_(std::move(cfg)) {
  impl_ = std::make_unique<Impl>(this);
}

GatewayBlockDevice::~GatewayBlockDevice() { Stop(); }

Status GatewayBlockDevice::Start() {
  if (started_) return Status::Conflict("already started");
  FERRY_RETURN_IF_ERROR(impl_->Init());
  started_ = true;
  Status st = impl_->Start();
  if (!st.ok()) impl_->Stop();
  return st;
}

void GatewayBlockDevice::Stop() {
  if (started_) impl_->Stop();
}

namespace {
Status CheckRange(uint64_t offset, uint64_t length, uint64_t size, uint32_t bs, const char* what) {
  if (offset % bs || length % bs) return Status::InvalidArgument(std::string(what) + ": not block aligned");
  if (offset > size || length > size - offset) return Status::InvalidArgument(std::string(what) + ": beyond the end of the device");
  return Status::Ok();
}
}  // namespace

void GatewayBlockDevice::Read(uint64_t offset, uint32_t length, char* buf, Callback cb) {
  Status s = CheckRange(offset, length, size_bytes(), block_size(), "read");
  if (s.ok() && length > nbd::kMaxPayload) s = Status::InvalidArgument("read: larger than 32 MiB");
  if (s.ok() && !started_) s = Status::IoError("device not started");
  if (!s.ok() || length == 0) return cb(s);
  impl_->Submit(nbd::kCmdRead, 0, offset, length, nullptr, buf, std::move(cb));
}

bool GatewayBlockDevice::ReadSpliced(uint64_t offset, uint32_t length, SplicedCallback cb) {
  if (!cfg_.pipes || length < cfg_.splice_min || length > cfg_.pipes->max_payload() || !started_) return false;
  if (!CheckRange(offset, length, size_bytes(), block_size(), "read").ok()) return false;
  auto made = SplicedData::Create(length, cfg_.pipes);
  if (!made.ok()) return false;  // e.g. the pipe memory limit: the copying path still works
  std::shared_ptr<SplicedData> data(std::move(made.value()));
  SplicedData* dest = data.get();
  impl_->Submit(
      nbd::kCmdRead, 0, offset, length, nullptr, nullptr,
      [data = std::move(data), cb = std::move(cb)](Status st) mutable {
        if (!st.ok()) return cb(st, nullptr);
        cb(st, std::move(data));
      },
      dest);
  return true;
}

void GatewayBlockDevice::Write(uint64_t offset, uint32_t length, const char* buf, bool fua, Callback cb) {
  Status s = CheckRange(offset, length, size_bytes(), block_size(), "write");
  if (s.ok() && length > nbd::kMaxPayload) s = Status::InvalidArgument("write: larger than 32 MiB");
  if (s.ok() && !started_) s = Status::IoError("device not started");
  if (!s.ok() || length == 0) return cb(s);
  uint16_t tf = impl_->tflags();
  if (fua && !(tf & nbd::kTFlagSendFua) && (tf & nbd::kTFlagSendFlush)) {
    // Gateway without FUA: write, then flush.
    impl_->Submit(nbd::kCmdWrite, 0, offset, length, buf, nullptr, [this, cb = std::move(cb)](Status st) mutable {
      if (!st.ok()) return cb(st);
      Flush(std::move(cb));
    });
    return;
  }
  impl_->Submit(nbd::kCmdWrite, fua && (tf & nbd::kTFlagSendFua) ? nbd::kCmdFlagFua : 0, offset, length, buf,
                nullptr, std::move(cb));
}

void GatewayBlockDevice::Flush(Callback cb) {
  if (!started_) return cb(Status::IoError("device not started"));
  if (!(impl_->tflags() & nbd::kTFlagSendFlush)) return cb(Status::Ok());  // nothing volatile to flush
  impl_->Submit(nbd::kCmdFlush, 0, 0, 0, nullptr, nullptr, std::move(cb));
}

void GatewayBlockDevice::Trim(uint64_t offset, uint32_t length, Callback cb) {
  Status s = CheckRange(offset, length, size_bytes(), block_size(), "trim");
  if (s.ok() && !started_) s = Status::IoError("device not started");
  if (!s.ok() || length == 0) return cb(s);
  if (!(impl_->tflags() & nbd::kTFlagSendTrim)) return cb(Status::Ok());  // advisory
  impl_->Submit(nbd::kCmdTrim, 0, offset, length, nullptr, nullptr, std::move(cb));
}

void GatewayBlockDevice::WriteZeroes(uint64_t offset, uint32_t length, bool may_trim, bool fua, Callback cb) {
  Status s = CheckRange(offset, length, size_bytes(), block_size(), "write-zeroes");
  if (s.ok() && !started_) s = Status::IoError("device not started");
  if (!s.ok() || length == 0) return cb(s);
  uint16_t tf = impl_->tflags();
  if (!(tf & nbd::kTFlagSendWriteZeroes)) {
    if (length > nbd::kMaxPayload) return cb(Status::InvalidArgument("write-zeroes: larger than 32 MiB"));
    auto zeros = std::make_shared<std::vector<char>>(length, 0);
    const char* p = zeros->data();
    Write(offset, length, p, fua, [zeros, cb = std::move(cb)](Status st) { cb(st); });
    return;
  }
  uint16_t flags = (may_trim ? 0 : nbd::kCmdFlagNoHole) | (fua && (tf & nbd::kTFlagSendFua) ? nbd::kCmdFlagFua : 0);
  impl_->Submit(nbd::kCmdWriteZeroes, flags, offset, length, nullptr, nullptr, std::move(cb));
}

Result<uint64_t> GatewayBlockDevice::RefreshSize() {
  if (!started_) return Status::Conflict("device not started");
  return impl_->RefreshSize();
}

void GatewayBlockDevice::SetSwitchable(bool on) {
  bool was = switchable_.exchange(on);
  if (was != on) impl_->log().Info("volume " + cfg_.volume + ": switchable " + (on ? "on" : "off"));
  impl_->Kick();
}

uint64_t GatewayBlockDevice::epoch() const { return impl_->Epoch(); }
std::string GatewayBlockDevice::current_gateway() const { return impl_->CurrentGw(); }
std::string GatewayBlockDevice::start_error() const { return impl_->StartError(); }

VolumeStats GatewayBlockDevice::Stats() const {
  VolumeStats s;
  impl_->FillStats(&s);
  return s;
}

}  // namespace ferry::blockdev
