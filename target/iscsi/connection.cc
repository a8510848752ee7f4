#include "target/iscsi/connection.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "target/common/batch_scope.h"
#include "target/common/spliced_data.h"
#include "target/iscsi/crc32c.h"

namespace ferry::iscsi {

namespace {
using Clock = std::chrono::steady_clock;
constexpr uint32_t kMaxWriteLen = 64u << 20;   // largest write we buffer for one command
constexpr uint64_t kMaxWriteBuffered = 512ull << 20;  // all Data-Out buffers of one connection
constexpr uint32_t kMaxImmediateInflight = 16;
constexpr uint8_t kF = 0x80;

std::string Hex(uint64_t v, int digits) {
  char b[24];
  std::snprintf(b, sizeof b, "%0*llx", digits, static_cast<unsigned long long>(v));
  return b;
}

int MsUntil(Clock::time_point t) {
  auto d = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  if (d < 0) return 0;
  return d > 1000 ? 1000 : int(d);
}
}  // namespace

Connection::Connection(int fd, ConnectionEnv env)
    : fd_(fd), env_(std::move(env)), log_(env_.log), framer_(65536) {
  FramerLimits l;
  l.max_data_len = std::max<size_t>(8192, env_.opts.negotiation.max_recv_data_segment_length);
  framer_.set_limits(l);
  LoginContext ctx;
  ctx.directory = env_.directory;
  ctx.limits = env_.opts.negotiation;
  ctx.queue_depth = env_.opts.queue_depth;
  ctx.initiator_addr = env_.peer_ip;
  ctx.local_portal = env_.local_addr;
  ConnectionOwner* owner = env_.owner;
  ctx.allocate_tsih = [owner] { return owner ? owner->AllocateTsih() : uint16_t(1); };
  ctx.tsih_exists = [owner](uint16_t t) { return owner && owner->TsihExists(t); };
  login_ = std::make_unique<LoginMachine>(std::move(ctx));
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

Connection::~Connection() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
  std::lock_guard<std::mutex> g(fd_mu_);
  if (!fd_closed_) {
    ::close(fd_);
    fd_closed_ = true;
  }
}

void Connection::Close() {
  closing_ = true;
  std::lock_guard<std::mutex> g(fd_mu_);
  if (!fd_closed_) ::shutdown(fd_, SHUT_RDWR);
}

SessionInfo Connection::Info() const {
  SessionInfo s;
  s.initiator_addr = env_.peer_addr;
  s.local_portal = env_.local_addr;
  if (ffp_.load()) {
    s.target_iqn = target_iqn_;
    s.initiator_name = initiator_name_;
    s.isid = Hex(isid_, 12);
    s.tsih = tsih_;
    s.discovery = discovery_;
  }
  return s;
}

// ---------------------------------------------------------------- sending

void Connection::FillSeq(OutPdu* p, bool advance_statsn) {
  uint8_t op = p->bhs[0] & 0x3f;
  if (advance_statsn) {
    Put32(p->bhs + 24, statsn_++);
  } else if (op != kOpDataIn) {
    Put32(p->bhs + 24, statsn_);
  }
  Put32(p->bhs + 28, exp_cmdsn_.load());
  Put32(p->bhs + 32, max_cmdsn_.load());
}

bool Connection::SendPdus(OutPdu* pdus, size_t n, std::shared_ptr<const void> keep, bool raw) {
  static constexpr uint8_t kZero[4] = {0, 0, 0, 0};
  std::unique_lock<std::mutex> g(send_mu_);
  if (dead_) return false;
  bool was_empty = outq_.empty();
  std::shared_ptr<std::vector<uint8_t>> copy;
  if (!keep) {
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) total += pdus[i].data_len;
    if (total) {
      copy = std::make_shared<std::vector<uint8_t>>();
      copy->reserve(total);
      for (size_t i = 0; i < n; ++i)
        if (!pdus[i].spliced) copy->insert(copy->end(), pdus[i].data, pdus[i].data + pdus[i].data_len);
    }
  }
  size_t copy_off = 0;
  for (size_t i = 0; i < n; ++i) {
    OutPdu* p = &pdus[i];
    if (!raw) FillSeq(p, p->carries_status);
    OutChunk c;
    std::memcpy(c.head, p->bhs, kBhsLen);
    c.head_len = kBhsLen;
    if (header_digest_ && !raw) {
      uint32_t crc = Crc32c(p->bhs, kBhsLen);
      for (int k = 0; k < 4; ++k) c.head[kBhsLen + k] = uint8_t(crc >> (8 * k));
      c.head_len += 4;
    }
    if (p->data_len && p->spliced) {
      c.spliced = p->spliced;
      c.keep = keep;
      c.data_len = p->data_len;
      size_t pad = Pad4(p->data_len) - p->data_len;
      std::memset(c.tail, 0, sizeof c.tail);
      c.tail_len = pad;  // DataDigest is never on for spliced data (see OnScsiCommand)
    } else if (p->data_len) {
      if (copy) {
        c.data = copy->data() + copy_off;
        copy_off += p->data_len;
        c.keep = copy;
      } else {
        c.data = p->data;
        c.keep = keep;
      }
      c.data_len = p->data_len;
      size_t pad = Pad4(p->data_len) - p->data_len;
      std::memset(c.tail, 0, sizeof c.tail);
      c.tail_len = pad;
      if (data_digest_ && !raw) {
        uint32_t crc = Crc32cExtend(Crc32c(c.data, c.data_len), kZero, pad);
        for (int k = 0; k < 4; ++k) c.tail[pad + k] = uint8_t(crc >> (8 * k));
        c.tail_len += 4;
      }
    }
    outq_bytes_ += c.total();
    outq_.push_back(std::move(c));
  }
  if (was_empty) last_progress_ = Clock::now();
  if (corked_) return true;  // the connection's thread flushes at the end of its batch
  if (BatchScope* scope = BatchScope::Current()) {
    if (std::shared_ptr<Connection> self = weak_from_this().lock()) {
      g.unlock();
      scope->Defer(this, [self] { self->FlushDeferred(); });
      return true;
    }
  }
  if (!FlushLocked()) return false;
  bool backlog = !outq_.empty();
  g.unlock();
  if (backlog) Wake();  // the connection's thread waits for POLLOUT and flushes
  return true;
}

bool Connection::FlushLocked() {
  constexpr int kMaxIov = 256;
  auto broken = [this] {
    dead_ = true;
    outq_.clear();
    outq_bytes_ = 0;
    std::lock_guard<std::mutex> f(fd_mu_);
    if (!fd_closed_) ::shutdown(fd_, SHUT_RDWR);
    return false;
  };
  while (!outq_.empty()) {
    OutChunk& front = outq_.front();
    size_t moved = 0;
    if (front.spliced && front.sent >= front.head_len && front.sent < front.head_len + front.data_len) {
      // The front chunk is at its spliced data: move it pipe -> socket.
      size_t left = front.head_len + front.data_len - front.sent;
      ssize_t r = front.spliced->SpliceTo(fd_, left, front.tail_len > 0 || outq_.size() > 1);
      if (r == 0) return true;  // socket full: the connection's thread waits for POLLOUT
      if (r < 0) return broken();
      moved = size_t(r);
    } else {
      // Everything up to the next spliced data goes out in one writev.
      struct iovec iov[kMaxIov];
      int cnt = 0;
      bool stop = false;
      for (auto it = outq_.begin(); it != outq_.end() && cnt + 3 <= kMaxIov && !stop; ++it) {
        size_t skip = it->sent;
        auto add = [&](const uint8_t* p, size_t len) {
          if (skip >= len) {
            skip -= len;
            return;
          }
          iov[cnt++] = {const_cast<uint8_t*>(p + skip), len - skip};
          skip = 0;
        };
        add(it->head, it->head_len);
        if (it->spliced && it->data_len) {
          if (skip < it->data_len) {
            stop = true;  // its data is spliced next
            break;
          }
          skip -= it->data_len;
        } else if (it->data_len) {
          add(it->data, it->data_len);
        }
        if (it->tail_len) add(it->tail, it->tail_len);
      }
      ssize_t w = ::writev(fd_, iov, cnt);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
        return broken();
      }
      moved = size_t(w);
    }
    size_t left = moved;
    if (left) last_progress_ = Clock::now();
    outq_bytes_ -= left;
    while (left && !outq_.empty()) {
      OutChunk& c = outq_.front();
      size_t rest = c.total() - c.sent;
      if (left >= rest) {
        left -= rest;
        outq_.pop_front();
      } else {
        c.sent += left;
        left = 0;
      }
    }
    // A chunk whose head and data are out but whose empty tail remains
    // is complete too.
    while (!outq_.empty() && outq_.front().sent == outq_.front().total()) outq_.pop_front();
  }
  return true;
}

void Connection::FlushDeferred() {
  std::unique_lock<std::mutex> g(send_mu_);
  if (dead_ || corked_) return;  // corked: the connection's own thread flushes soon
  if (!FlushLocked()) return;
  bool backlog = !outq_.empty();
  g.unlock();
  if (backlog) Wake();
}

void Connection::Wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

bool Connection::SendSimple(OutPdu& p, bool advances_statsn) {
  p.carries_status = advances_statsn;
  return SendPdus(&p, 1, nullptr);
}

void Connection::SendReject(const uint8_t* bhs, RejectReason reason) {
  OutPdu p;
  p.set_opcode(kOpReject);
  p.set_flags(kF);
  p.bhs[2] = reason;
  p.set_itt(kReservedTag);
  p.set_data(bhs, kBhsLen);
  log_.Debug("reject opcode 0x" + Hex(bhs[0] & 0x3f, 2) + " reason 0x" + Hex(reason, 2));
  SendSimple(p, true);
}

// ---------------------------------------------------------------- main loop

void Connection::Run() {
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int fl = ::fcntl(fd_, F_GETFL);
  if (fl >= 0) ::fcntl(fd_, F_SETFL, fl | O_NONBLOCK);

  auto login_deadline = Clock::now() + std::chrono::milliseconds(env_.opts.login_timeout_ms);
  const auto send_timeout = std::chrono::milliseconds(env_.opts.send_timeout_ms);
  last_rx_ = Clock::now();
  while (!closing_) {
    PduView pdu;
    bool stop = false;
    {
      // Responses produced while this batch of PDUs is handled go out in one writev.
      std::lock_guard<std::mutex> g(send_mu_);
      corked_ = true;
    }
    {
      BatchScope scope;  // the NBD requests this batch causes leave together at its end
      for (;;) {
        auto r = framer_.Next(&pdu);
        if (r == PduFramer::Result::kNeedMore) break;
        if (r == PduFramer::Result::kError) {
          log_.Warn(env_.peer_addr + ": " + framer_.error() + "; dropping the connection");
          stop = true;
          break;
        }
        bool ok = ffp_.load() ? Dispatch(pdu) : DoLogin(pdu);
        if (!ok) {
          stop = true;
          break;
        }
      }
    }
    {
      std::lock_guard<std::mutex> g(send_mu_);
      corked_ = false;
      if (!dead_ && !FlushLocked()) stop = true;
    }
    if (stop || closing_) break;

    int timeout_ms = 1000;
    auto now = Clock::now();
    if (!ffp_.load()) {
      if (now >= login_deadline) {
        log_.Info(env_.peer_addr + ": login timed out");
        break;
      }
      timeout_ms = MsUntil(login_deadline);
    } else if (env_.opts.nop_interval_ms > 0) {
      bool outstanding = ping_outstanding_ && last_rx_ <= ping_sent_;
      auto when = outstanding ? last_rx_ + std::chrono::milliseconds(env_.opts.nop_timeout_ms)
                              : last_rx_ + std::chrono::milliseconds(env_.opts.nop_interval_ms);
      timeout_ms = MsUntil(when);
      if (timeout_ms == 0) {
        PingIfIdle();
        if (closing_) break;
        continue;
      }
    }
    bool want_out, stuck;
    {
      std::lock_guard<std::mutex> g(send_mu_);
      if (dead_) break;
      want_out = !outq_.empty();
      stuck = want_out && now - last_progress_ > send_timeout;
    }
    if (stuck) {
      log_.Warn(env_.peer_addr + ": peer took no data for " + std::to_string(env_.opts.send_timeout_ms) +
                " ms; dropping the connection");
      break;
    }
    struct pollfd pfds[2] = {{fd_, short(POLLIN | (want_out ? POLLOUT : 0)), 0}, {wake_fd_, POLLIN, 0}};
    int n = ::poll(pfds, wake_fd_ >= 0 ? 2 : 1, timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n == 0) continue;
    if (wake_fd_ >= 0 && pfds[1].revents) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(wake_fd_, &v, sizeof v);
    }
    if (pfds[0].revents & POLLOUT) {
      std::lock_guard<std::mutex> g(send_mu_);
      if (!FlushLocked()) break;
    }
    if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      size_t avail = 0;
      uint8_t* buf = framer_.Buffer(65536, &avail);
      ssize_t got = ::recv(fd_, buf, avail, 0);
      if (got == 0) break;
      if (got < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        break;
      }
      framer_.Commit(size_t(got));
      last_rx_ = Clock::now();
    }
  }
  {
    std::lock_guard<std::mutex> g(send_mu_);
    corked_ = false;
  }
  // A last response (logout, login failure, reject) still queued gets a short grace period.
  auto grace_end = Clock::now() + std::chrono::milliseconds(std::min(1000, env_.opts.send_timeout_ms));
  for (;;) {
    {
      std::lock_guard<std::mutex> g(send_mu_);
      if (dead_ || outq_.empty() || !FlushLocked() || outq_.empty()) break;
    }
    int left = MsUntil(grace_end);
    if (left <= 0) break;
    struct pollfd p = {fd_, POLLOUT, 0};
    if (::poll(&p, 1, left) <= 0) break;
  }
  Teardown();
}

void Connection::PingIfIdle() {
  auto now = Clock::now();
  bool outstanding = ping_outstanding_ && last_rx_ <= ping_sent_;
  if (outstanding) {
    if (now - last_rx_ >= std::chrono::milliseconds(env_.opts.nop_timeout_ms)) {
      log_.Warn(env_.peer_addr + ": no answer to NOP-In within " + std::to_string(env_.opts.nop_timeout_ms) +
                " ms; dropping the connection");
      closing_ = true;
    }
    return;
  }
  if (now - last_rx_ < std::chrono::milliseconds(env_.opts.nop_interval_ms)) return;
  OutPdu p;
  p.set_opcode(kOpNopIn);
  p.set_flags(kF);
  p.set_itt(kReservedTag);
  ping_ttt_ = (ping_ttt_ + 1) & 0x7fffffff;
  if (ping_ttt_ == 0) ping_ttt_ = 1;
  p.set_u32(20, 0x80000000u | ping_ttt_);
  ping_outstanding_ = true;
  ping_sent_ = now;
  if (!SendSimple(p, false)) closing_ = true;
}

void Connection::Teardown() {
  closing_ = true;
  {
    std::lock_guard<std::mutex> g(send_mu_);
    dead_ = true;
    outq_.clear();
    outq_bytes_ = 0;
  }
  {
    std::lock_guard<std::mutex> g(fd_mu_);
    if (!fd_closed_) {
      ::close(fd_);
      fd_closed_ = true;
    }
  }
  {
    std::lock_guard<std::mutex> g(state_mu_);
    tasks_.clear();
    write_buffered_ = 0;
    ahead_.clear();
  }
  if (ffp_.load() && !discovery_ && sink_ && nexus_) sink_->NexusLost(*nexus_);
  finished_ = true;
}

// ---------------------------------------------------------------- login

bool Connection::DoLogin(const PduView& pdu) {
  OutPdu reply;
  std::string data;
  auto step = login_->Handle(pdu, &reply, &data);
  if (step == LoginMachine::Step::kFullFeature) {
    params_ = login_->params();
    discovery_ = login_->discovery();
    initiator_name_ = login_->initiator_name();
    isid_ = login_->isid();
    tsih_ = login_->tsih();
    cid_ = login_->cid();
    if (const auto& t = login_->target()) {
      target_iqn_ = t->iqn;
      sink_ = t->sink;
      auto nx = std::make_shared<scsi::Nexus>();
      nx->id = env_.nexus_id;
      nx->initiator_name = initiator_name_;
      nx->initiator_port = initiator_name_ + ",i,0x" + Hex(isid_, 12);
      nx->target_port = t->iqn + ",t,0x" + Hex(t->tpgt, 4);
      nx->relative_target_port = t->tpgt;
      nexus_ = nx;
    }
    {
      std::lock_guard<std::mutex> g(state_mu_);
      window_ = CmdWindow(login_->exp_cmdsn(), env_.opts.queue_depth);
      exp_cmdsn_ = window_.exp_cmdsn();
      max_cmdsn_ = window_.max_cmdsn();
    }
    FramerLimits l = framer_.limits();
    l.header_digest = params_.header_digest;
    l.data_digest = params_.data_digest;
    framer_.set_limits(l);
    ffp_ = true;
    if (env_.owner) env_.owner->EnteredFullFeature(shared_from_this());
    if (!discovery_ && sink_ && nexus_) sink_->NexusAdded(*nexus_);
  }
  // Login responses are sent as built (their sequence numbers come from the login machine).
  if (!SendPdus(&reply, 1, nullptr, /*raw=*/true)) return false;
  if (step == LoginMachine::Step::kFullFeature) {
    std::lock_guard<std::mutex> g(send_mu_);
    statsn_ = login_->next_statsn();
    header_digest_ = params_.header_digest;
    data_digest_ = params_.data_digest;
  }
  if (step == LoginMachine::Step::kFailed) {
    log_.Info(env_.peer_addr + ": login refused (0x" + Hex(login_->failure_status(), 4) + "): " + login_->failure());
    return false;
  }
  if (step == LoginMachine::Step::kFullFeature) {
    log_.Info(env_.peer_addr + ": " + (discovery_ ? std::string("discovery session") : "session to " + target_iqn_) +
              " for " + initiator_name_ + " isid 0x" + Hex(isid_, 12) + " tsih " + std::to_string(tsih_) +
              " (MRDSL " + std::to_string(params_.initiator_mrdsl) + ", MBL " + std::to_string(params_.max_burst_length) +
              ", FBL " + std::to_string(params_.first_burst_length) + ", ImmediateData " +
              (params_.immediate_data ? "Yes" : "No") + ", InitialR2T " + (params_.initial_r2t ? "Yes" : "No") +
              ", digests " + (params_.header_digest ? "H" : "-") + (params_.data_digest ? "D" : "-") + ")");
  }
  return true;
}

// ---------------------------------------------------------------- full feature

bool Connection::Dispatch(const PduView& pdu) {
  BhsView h = pdu.h();
  if (pdu.data_digest_error) {
    log_.Warn(env_.peer_addr + ": data digest error; rejecting and dropping the connection (ERL 0)");
    SendReject(pdu.bhs, kRejectDataDigest);
    return false;
  }
  switch (h.opcode()) {
    case kOpScsiCmd:
      if (discovery_) {
        SendReject(pdu.bhs, kRejectProtocolError);
        return true;
      }
      return OnScsiCommand(pdu);
    case kOpDataOut:
      return OnDataOut(pdu);
    case kOpNopOut:
      return OnNopOut(pdu);
    case kOpTmfReq:
      if (discovery_) {
        SendReject(pdu.bhs, kRejectProtocolError);
        return true;
      }
      return OnTmf(pdu);
    case kOpTextReq:
      return OnText(pdu);
    case kOpLogoutReq:
      return OnLogout(pdu);
    case kOpSnack:
      SendReject(pdu.bhs, kRejectSnack);
      return true;
    case kOpLoginReq:
      SendReject(pdu.bhs, kRejectProtocolError);
      return true;
    default:
      SendReject(pdu.bhs, kRejectCmdNotSupported);
      return true;
  }
}

bool Connection::AcceptNonTask(const BhsView& h) {
  if (h.immediate()) return true;
  uint32_t cmdsn = h.u32(24);
  std::vector<std::unique_ptr<scsi::ScsiCommand>> ready;
  std::vector<uint64_t> serials;
  bool accept = true;
  {
    std::lock_guard<std::mutex> g(state_mu_);
    if (cmdsn == window_.exp_cmdsn()) {
      window_.Advance(false);
      ReleaseAhead(&ready, &serials);
    } else if (SnLess(cmdsn, window_.exp_cmdsn()) || SnLess(window_.max_cmdsn(), cmdsn)) {
      accept = false;  // outside the window: silently ignored (RFC 7143 §4.2.2.1)
    } else {
      ahead_[cmdsn] = kReservedTag;  // processed now; the window skips it when its turn comes
    }
    exp_cmdsn_ = window_.exp_cmdsn();
    max_cmdsn_ = window_.max_cmdsn();
  }
  SubmitReady(ready, serials);
  return accept;
}

void Connection::ReleaseAhead(std::vector<std::unique_ptr<scsi::ScsiCommand>>* ready,
                              std::vector<uint64_t>* serials) {
  for (;;) {
    auto it = ahead_.find(window_.exp_cmdsn());
    if (it == ahead_.end()) return;
    uint32_t itt = it->second;
    ahead_.erase(it);
    auto t = itt == kReservedTag ? tasks_.end() : tasks_.find(itt);
    if (t == tasks_.end()) {
      window_.Advance(false);
      continue;
    }
    window_.Advance(true);
    t->second->holds_slot = true;
    t->second->accepted = true;
    MaybeReady(t->second.get(), ready, serials);
  }
}

void Connection::MaybeReady(Task* t, std::vector<std::unique_ptr<scsi::ScsiCommand>>* ready,
                            std::vector<uint64_t>* serials) {
  if (!t->accepted || t->submitted || t->unsolicited_open || !t->r2ts.empty() || t->received < t->write_len)
    return;
  t->submitted = true;
  ready->push_back(std::move(t->cmd));
  serials->push_back(t->serial);
}

void Connection::SubmitReady(std::vector<std::unique_ptr<scsi::ScsiCommand>>& ready,
                             std::vector<uint64_t>& serials) {
  for (size_t i = 0; i < ready.size(); ++i) {
    uint32_t itt = ready[i]->tag;
    uint64_t serial = serials[i];
    std::weak_ptr<Connection> weak = weak_from_this();
    sink_->Submit(std::move(ready[i]), [weak, itt, serial](scsi::ScsiResult r) {
      if (auto self = weak.lock()) self->Complete(itt, serial, std::move(r));
    });
  }
  ready.clear();
  serials.clear();
}

void Connection::SendR2ts(Task* t, std::vector<OutPdu>* out) {
  R2tRequest r;
  while (t->r2t.Next(&r)) {
    uint32_t ttt = next_ttt_++;
    if (next_ttt_ == kReservedTag) next_ttt_ = 1;
    t->r2ts.push_back({ttt, r.offset, r.length, 0, 0});
    OutPdu p;
    p.set_opcode(kOpR2t);
    p.set_flags(kF);
    p.set_lun(t->lun);
    p.set_itt(t->itt);
    p.set_u32(20, ttt);
    p.set_u32(36, r.r2tsn);
    p.set_u32(40, r.offset);
    p.set_u32(44, r.length);
    out->push_back(p);
  }
}

void Connection::DropTask(uint32_t itt) {
  auto it = tasks_.find(itt);
  if (it == tasks_.end()) return;
  Task* t = it->second.get();
  if (t->holds_slot) window_.Release();
  if (t->immediate && immediate_inflight_ > 0) --immediate_inflight_;
  write_buffered_ -= t->write_len;
  if (!t->immediate && !t->accepted) {
    auto a = ahead_.find(t->cmdsn);
    if (a != ahead_.end()) a->second = kReservedTag;
  }
  tasks_.erase(it);
  exp_cmdsn_ = window_.exp_cmdsn();
  max_cmdsn_ = window_.max_cmdsn();
}

bool Connection::OnScsiCommand(const PduView& pdu) {
  BhsView h = pdu.h();
  uint8_t flags = h.flags();
  bool final_bit = flags & 0x80, rd = flags & 0x40, wr = flags & 0x20;
  uint32_t itt = h.itt(), edtl = h.u32(20), cmdsn = h.u32(24);
  bool immediate = h.immediate();

  uint8_t cdb[32] = {};
  std::memcpy(cdb, pdu.bhs + 32, 16);
  uint8_t cdb_len = 16;
  uint32_t bidi_read_len = 0;
  for (size_t off = 0; off + 4 <= pdu.ahs_len;) {
    const uint8_t* a = pdu.ahs + off;
    size_t alen = Get16(a);
    uint8_t type = a[2];
    size_t total = Pad4(alen + 3);
    if (off + total > pdu.ahs_len || alen == 0) {
      SendReject(pdu.bhs, kRejectInvalidPduField);
      return true;
    }
    if (type == 1) {  // extended CDB: AHSLength counts the reserved byte
      size_t ext = alen - 1;
      if (16 + ext > sizeof cdb) {
        SendReject(pdu.bhs, kRejectInvalidPduField);
        return true;
      }
      std::memcpy(cdb + 16, a + 4, ext);
      cdb_len = uint8_t(16 + ext);
    } else if (type == 2 && alen >= 5) {  // bidirectional read expected length
      bidi_read_len = Get32(a + 4);
    }
    off += total;
  }

  uint32_t write_len = wr ? edtl : 0;
  uint32_t read_len = rd ? (wr ? bidi_read_len : edtl) : 0;
  uint32_t imm = uint32_t(pdu.data_len);
  bool bad = (imm > 0 && (!wr || !params_.immediate_data)) || imm > write_len ||
             imm > params_.first_burst_length || (!final_bit && (!wr || params_.initial_r2t));
  if (bad) {
    SendReject(pdu.bhs, kRejectProtocolError);
    return true;
  }
  if (write_len > kMaxWriteLen) {
    SendReject(pdu.bhs, kRejectOutOfResources);
    return true;
  }

  std::vector<std::unique_ptr<scsi::ScsiCommand>> ready;
  std::vector<uint64_t> serials;
  std::vector<OutPdu> r2ts;
  RejectReason reject = RejectReason(0);
  {
    std::lock_guard<std::mutex> g(state_mu_);
    CmdWindow::Verdict v = CmdWindow::Verdict::kNow;
    if (tasks_.count(itt)) {
      reject = kRejectTaskInProgress;
    } else if (write_buffered_ + write_len > kMaxWriteBuffered) {
      reject = kRejectOutOfResources;
    } else if (immediate) {
      if (immediate_inflight_ >= kMaxImmediateInflight) reject = kRejectImmediateCmd;
    } else {
      v = window_.Classify(cmdsn);
      if (v == CmdWindow::Verdict::kOutside) {
        log_.Debug(env_.peer_addr + ": CmdSN " + std::to_string(cmdsn) + " outside window [" +
                   std::to_string(window_.exp_cmdsn()) + "," + std::to_string(window_.max_cmdsn()) + "], ignored");
        return true;
      }
    }
    if (reject == 0) {
      auto t = std::make_unique<Task>();
      t->serial = next_serial_++;
      t->itt = itt;
      t->cmdsn = cmdsn;
      t->immediate = immediate;
      t->lun = DecodeLun(h.lun_field());
      t->read = rd;
      t->read_len = read_len;
      t->write_len = write_len;
      write_buffered_ += write_len;
      t->received = imm;
      t->unsolicited_open = wr && !final_bit;
      t->unsolicited_limit = std::min(params_.first_burst_length, write_len);
      auto cmd = std::make_unique<scsi::ScsiCommand>();
      cmd->nexus = nexus_;
      cmd->lun = t->lun;
      std::memcpy(cmd->cdb, cdb, sizeof cdb);
      cmd->cdb_len = cdb_len;
      cmd->tag = itt;
      uint8_t attr = flags & 7;
      cmd->attr = attr <= 4 ? scsi::TaskAttr(attr) : scsi::TaskAttr::kSimple;
      cmd->dir = rd && wr ? scsi::DataDir::kBidi : rd ? scsi::DataDir::kRead : wr ? scsi::DataDir::kWrite
                                                                            : scsi::DataDir::kNone;
      cmd->expected_length = edtl;
      cmd->accepts_spliced = rd && !wr && !data_digest_ && env_.opts.splice_reads;
      if (write_len) {
        cmd->data_out.resize(write_len);
        if (imm) std::memcpy(cmd->data_out.data(), pdu.data, imm);
      }
      t->cmd = std::move(cmd);
      if (immediate) {
        ++immediate_inflight_;
        t->accepted = true;
      } else if (v == CmdWindow::Verdict::kNow) {
        window_.Advance(true);
        t->holds_slot = true;
        t->accepted = true;
      } else {
        ahead_[cmdsn] = itt;
      }
      Task* tp = t.get();
      tasks_[itt] = std::move(t);
      if (!tp->unsolicited_open && tp->received < tp->write_len) {
        tp->r2t = R2tPlanner(tp->received, tp->write_len, params_.max_burst_length, params_.max_outstanding_r2t);
        SendR2ts(tp, &r2ts);
      }
      MaybeReady(tp, &ready, &serials);
      if (v == CmdWindow::Verdict::kNow && !immediate) ReleaseAhead(&ready, &serials);
      exp_cmdsn_ = window_.exp_cmdsn();
      max_cmdsn_ = window_.max_cmdsn();
    }
  }
  if (reject != 0) {
    SendReject(pdu.bhs, reject);
    return true;
  }
  if (!r2ts.empty()) SendPdus(r2ts.data(), r2ts.size(), nullptr);
  SubmitReady(ready, serials);
  return true;
}

bool Connection::OnDataOut(const PduView& pdu) {
  BhsView h = pdu.h();
  uint32_t itt = h.itt(), ttt = h.u32(20), datasn = h.u32(36), offset = h.u32(40);
  uint32_t len = uint32_t(pdu.data_len);
  bool final_bit = h.final_bit();
  std::vector<std::unique_ptr<scsi::ScsiCommand>> ready;
  std::vector<uint64_t> serials;
  std::vector<OutPdu> r2ts;
  const char* error = nullptr;
  {
    std::lock_guard<std::mutex> g(state_mu_);
    auto it = tasks_.find(itt);
    if (it == tasks_.end()) return true;  // aborted or unknown task: data discarded
    Task* t = it->second.get();
    if (t->submitted || !t->cmd) {
      error = "Data-Out for a command that has all its data";
    } else if (uint64_t(offset) + len > t->write_len) {
      error = "Data-Out beyond the expected length";
    } else if (ttt == kReservedTag) {
      if (!t->unsolicited_open) error = "unsolicited Data-Out not expected";
      else if (uint64_t(offset) + len > t->unsolicited_limit) error = "unsolicited data beyond FirstBurstLength";
      else if (offset != t->received) error = "unsolicited Data-Out out of order";
      else if (datasn != t->unsolicited_datasn) error = "unsolicited Data-Out DataSN out of order";
      if (!error) {
        std::memcpy(t->cmd->data_out.data() + offset, pdu.data, len);
        t->received += len;
        ++t->unsolicited_datasn;
        if (final_bit) {
          t->unsolicited_open = false;
          t->r2t = R2tPlanner(t->received, t->write_len, params_.max_burst_length, params_.max_outstanding_r2t);
          SendR2ts(t, &r2ts);
        }
      }
    } else {
      auto s = std::find_if(t->r2ts.begin(), t->r2ts.end(), [ttt](const R2tSlot& x) { return x.ttt == ttt; });
      if (s == t->r2ts.end()) error = "Data-Out with an unknown Target Transfer Tag";
      else if (offset != s->offset + s->received) error = "Data-Out out of order";
      else if (uint64_t(offset) + len > uint64_t(s->offset) + s->length) error = "Data-Out beyond its R2T";
      else if (datasn != s->next_datasn) error = "Data-Out DataSN out of order";
      if (!error) {
        std::memcpy(t->cmd->data_out.data() + offset, pdu.data, len);
        s->received += len;
        ++s->next_datasn;
        t->received += len;
        if (s->received == s->length) {
          t->r2ts.erase(s);
          t->r2t.SequenceDone();
          SendR2ts(t, &r2ts);
        } else if (final_bit) {
          error = "Data-Out F bit before the R2T's data is complete";
        }
      }
    }
    if (!error) MaybeReady(t, &ready, &serials);
  }
  if (error) {
    // The command cannot complete: reject the PDU (the initiator fails the
    // task on it) and forget the task; later Data-Out for it is discarded.
    log_.Warn(env_.peer_addr + ": " + error + " (ITT 0x" + Hex(itt, 8) + "); command dropped");
    {
      std::lock_guard<std::mutex> g(state_mu_);
      DropTask(itt);
    }
    SendReject(pdu.bhs, kRejectProtocolError);
    return true;
  }
  if (!r2ts.empty()) SendPdus(r2ts.data(), r2ts.size(), nullptr);
  SubmitReady(ready, serials);
  return true;
}

void Connection::Complete(uint32_t itt, uint64_t serial, scsi::ScsiResult r) {
  bool read, aborted;
  uint32_t read_len, write_len;
  uint64_t lun;
  {
    std::lock_guard<std::mutex> g(state_mu_);
    auto it = tasks_.find(itt);
    if (it == tasks_.end() || it->second->serial != serial) return;
    Task* t = it->second.get();
    read = t->read;
    aborted = t->aborted;
    read_len = t->read_len;
    write_len = t->write_len;
    lun = t->lun;
    if (t->holds_slot) window_.Release();
    if (t->immediate && immediate_inflight_ > 0) --immediate_inflight_;
    write_buffered_ -= t->write_len;
    tasks_.erase(it);
    exp_cmdsn_ = window_.exp_cmdsn();
    max_cmdsn_ = window_.max_cmdsn();
  }
  if (aborted) return;  // aborted by this session's TMF: no response (SAM-5)
  // The result stays alive while its PDUs wait in the output queue.
  struct Keep {
    scsi::ScsiResult r;
    std::vector<uint8_t> sense;
  };
  auto keep = std::make_shared<Keep>();
  keep->r = std::move(r);
  const scsi::ScsiResult& res = keep->r;

  SplicedData* spliced = res.data_in_spliced.get();
  uint32_t produced =
      uint32_t(std::min<size_t>(spliced ? spliced->size() : res.data_in.size(), 0xffffffffu));
  uint32_t send_len = read ? std::min(produced, read_len) : 0;
  uint8_t resid_flags = 0;
  uint32_t residual = 0;
  auto set_residual = [&](uint64_t wanted, uint64_t expected) {
    if (wanted < expected) {
      resid_flags = 0x02;  // U: less than the initiator expected
      residual = uint32_t(std::min<uint64_t>(expected - wanted, 0xffffffffu));
    } else if (wanted > expected) {
      resid_flags = 0x04;  // O: the command wanted more than EDTL allowed
      residual = uint32_t(std::min<uint64_t>(wanted - expected, 0xffffffffu));
    }
  };
  if (read || produced > 0) {
    set_residual(produced, read ? read_len : 0);
  } else if (res.data_out_length >= 0) {
    set_residual(uint64_t(res.data_out_length), write_len);
  }
  auto segs = SplitDataIn(send_len, params_.initiator_mrdsl, params_.max_burst_length);
  bool collapse = res.status == scsi::kStatusGood && res.sense.empty() && !segs.empty();
  std::vector<OutPdu> pdus(segs.size() + (collapse ? 0 : 1));
  for (size_t i = 0; i < segs.size(); ++i) {
    OutPdu& p = pdus[i];
    p.set_opcode(kOpDataIn);
    uint8_t f = segs[i].final_in_sequence ? kF : 0;
    if (collapse && i + 1 == segs.size()) {
      f |= kF | 0x01 | resid_flags;  // S: status follows in this PDU
      p.bhs[3] = res.status;
      p.set_u32(44, residual);
      p.carries_status = true;
    }
    p.set_flags(f);
    p.set_lun(lun);
    p.set_itt(itt);
    p.set_u32(20, kReservedTag);
    p.set_u32(36, uint32_t(i));
    p.set_u32(40, segs[i].offset);
    if (spliced) {
      p.set_spliced(spliced, segs[i].length);  // segments leave the pipe in order
    } else {
      p.set_data(res.data_in.data() + segs[i].offset, segs[i].length);
    }
  }
  std::vector<uint8_t>& sense = keep->sense;
  if (!collapse) {
    OutPdu& p = pdus.back();
    p.set_opcode(kOpScsiResp);
    p.set_flags(kF | resid_flags);
    p.bhs[2] = 0;  // command completed at target
    p.bhs[3] = res.status;
    p.set_itt(itt);
    p.set_u32(36, uint32_t(segs.size()));  // ExpDataSN
    p.set_u32(44, residual);
    if (!res.sense.empty()) {
      size_t sl = std::min<size_t>(res.sense.size(), 0xffff);
      sense.resize(2 + sl);
      Put16(sense.data(), uint16_t(sl));
      std::memcpy(sense.data() + 2, res.sense.data(), sl);
      p.set_data(sense.data(), sense.size());
    }
    p.carries_status = true;
  }
  SendPdus(pdus.data(), pdus.size(), keep);
}

bool Connection::OnNopOut(const PduView& pdu) {
  BhsView h = pdu.h();
  uint32_t itt = h.itt(), ttt = h.u32(20);
  if (itt == kReservedTag) {
    if (ttt != kReservedTag && (ttt & 0x7fffffff) == ping_ttt_) ping_outstanding_ = false;
    return true;  // an answer to our ping, or a ping that wants no answer
  }
  if (ttt != kReservedTag) {
    SendReject(pdu.bhs, kRejectInvalidPduField);
    return true;
  }
  if (!AcceptNonTask(h)) return true;
  OutPdu p;
  p.set_opcode(kOpNopIn);
  p.set_flags(kF);
  std::memcpy(p.bhs + 8, pdu.bhs + 8, 8);  // LUN echoed
  p.set_itt(itt);
  p.set_u32(20, kReservedTag);
  size_t n = std::min<size_t>(pdu.data_len, params_.initiator_mrdsl);
  p.set_data(pdu.data, n);
  SendSimple(p, true);
  return true;
}

bool Connection::OnTmf(const PduView& pdu) {
  BhsView h = pdu.h();
  uint8_t function = h.flags() & 0x7f;
  uint32_t itt = h.itt(), rtt = h.u32(20), refcmdsn = h.u32(32);
  uint64_t lun = DecodeLun(h.lun_field());
  if (!AcceptNonTask(h)) return true;
  scsi::TmfResult res = scsi::TmfResult::kComplete;
  auto mark = [this](bool all, uint64_t l) {
    std::vector<uint32_t> drop;
    for (auto& [tag, t] : tasks_) {
      if (!all && t->lun != l) continue;
      if (t->submitted) t->aborted = true;
      else drop.push_back(tag);
    }
    for (uint32_t tag : drop) DropTask(tag);
  };
  switch (function) {
    case 1: {  // ABORT TASK
      bool call_sink = false;
      {
        std::lock_guard<std::mutex> g(state_mu_);
        auto it = tasks_.find(rtt);
        if (it != tasks_.end()) {
          if (it->second->submitted) {
            it->second->aborted = true;
            call_sink = true;
          } else {
            DropTask(rtt);
          }
        } else {
          // Not received yet but inside the window: considered received and aborted.
          bool pending = SnLessEq(window_.exp_cmdsn(), refcmdsn) && SnLessEq(refcmdsn, window_.max_cmdsn());
          res = pending ? scsi::TmfResult::kComplete : scsi::TmfResult::kTaskDoesNotExist;
        }
      }
      if (call_sink) {
        scsi::TmfResult s = sink_->AbortTask(*nexus_, rtt);
        // Its response is suppressed either way, so the task is gone for the initiator.
        res = (s == scsi::TmfResult::kTaskDoesNotExist) ? scsi::TmfResult::kComplete : s;
      }
      break;
    }
    case 2:  // ABORT TASK SET
    case 4:  // CLEAR TASK SET
    case 5: {  // LOGICAL UNIT RESET
      {
        std::lock_guard<std::mutex> g(state_mu_);
        mark(false, lun);
      }
      res = function == 2 ? sink_->AbortTaskSet(*nexus_, lun)
            : function == 4 ? sink_->ClearTaskSet(*nexus_, lun) : sink_->LunReset(*nexus_, lun);
      break;
    }
    case 6:    // TARGET WARM RESET
    case 7: {  // TARGET COLD RESET
      {
        std::lock_guard<std::mutex> g(state_mu_);
        mark(true, 0);
      }
      res = sink_->TargetReset(*nexus_, function == 7);
      break;
    }
    case 3:  // CLEAR ACA
      res = scsi::TmfResult::kNotSupported;
      break;
    case 8:  // TASK REASSIGN (ERL 0)
      res = scsi::TmfResult::kReassignUnsupported;
      break;
    default:
      res = scsi::TmfResult::kRejected;
  }
  OutPdu p;
  p.set_opcode(kOpTmfResp);
  p.set_flags(kF);
  p.bhs[2] = uint8_t(res);
  p.set_itt(itt);
  SendSimple(p, true);
  if (function == 7 && res == scsi::TmfResult::kComplete) return false;  // cold reset drops the connection
  return true;
}

bool Connection::OnLogout(const PduView& pdu) {
  BhsView h = pdu.h();
  uint8_t reason = h.flags() & 0x7f;
  uint16_t cid = h.u16(20);
  if (!AcceptNonTask(h)) return true;
  uint8_t response;
  if (reason == 0) response = 0;
  else if (reason == 1) response = cid == cid_ ? 0 : 1;
  else if (reason == 2) response = 2;  // connection recovery not supported (ERL 0)
  else {
    SendReject(pdu.bhs, kRejectProtocolError);
    return true;
  }
  OutPdu p;
  p.set_opcode(kOpLogoutResp);
  p.set_flags(kF);
  p.bhs[2] = response;
  p.set_itt(h.itt());
  p.set_u16(40, 0);  // Time2Wait
  p.set_u16(42, 0);  // Time2Retain
  SendSimple(p, true);
  if (response == 0) {
    logout_ = true;
    log_.Info(env_.peer_addr + ": logout of " + initiator_name_);
    return false;
  }
  return true;
}

bool Connection::OnText(const PduView& pdu) {
  BhsView h = pdu.h();
  uint32_t itt = h.itt(), ttt = h.u32(20);
  bool cont = h.flags() & 0x40;
  if (!AcceptNonTask(h)) return true;
  uint32_t mrdsl = std::max<uint32_t>(512, params_.initiator_mrdsl);
  auto send_part = [&](uint32_t reply_itt) {
    OutPdu p;
    p.set_opcode(kOpTextResp);
    p.set_itt(reply_itt);
    size_t n = std::min<size_t>(text_pending_.size(), mrdsl);
    std::string part = text_pending_.substr(0, n);
    text_pending_.erase(0, n);
    if (text_pending_.empty()) {
      p.set_flags(kF);
      p.set_u32(20, kReservedTag);
      text_ttt_ = kReservedTag;
    } else {
      p.set_flags(0x40);  // C: more follows
      text_ttt_ = next_ttt_++;
      if (next_ttt_ == kReservedTag) next_ttt_ = 1;
      p.set_u32(20, text_ttt_);
    }
    p.set_data(reinterpret_cast<const uint8_t*>(part.data()), part.size());
    SendSimple(p, true);
  };
  if (ttt != kReservedTag) {
    if (ttt != text_ttt_ || itt != text_itt_ || text_pending_.empty()) {
      SendReject(pdu.bhs, kRejectInvalidPduField);
      return true;
    }
    send_part(itt);
    return true;
  }
  if (cont) {  // long text requests are not needed by any key we answer
    SendReject(pdu.bhs, kRejectCmdNotSupported);
    return true;
  }
  auto kv = ParseTextKeys(pdu.data, pdu.data_len);
  if (!kv.ok()) {
    SendReject(pdu.bhs, kRejectProtocolError);
    return true;
  }
  KeyValues out;
  for (const auto& [k, v] : *kv) {
    if (k == "SendTargets") {
      if (!discovery_ && v == "All") {
        out.emplace_back(k, "Reject");
        continue;
      }
      std::string only = discovery_ ? (v == "All" ? "" : v) : (v.empty() ? target_iqn_ : v);
      if (!discovery_ && only != target_iqn_) {
        continue;  // a normal session sees only its own target
      }
      auto found = env_.directory->Discover(initiator_name_, env_.peer_ip, env_.local_addr);
      for (const auto& d : found) {
        if (!only.empty() && d.iqn != only) continue;
        out.emplace_back("TargetName", d.iqn);
        if (!d.addresses.empty()) {
          for (const auto& a : d.addresses) out.emplace_back("TargetAddress", a);
        } else if (env_.owner) {
          for (const auto& a : env_.owner->Portals(env_.local_ip))
            out.emplace_back("TargetAddress", a + "," + std::to_string(d.tpgt));
        }
      }
    } else if (KeyNegotiator::IsLoginKey(k)) {
      out.emplace_back(k, "Irrelevant");
    } else if (KeyNegotiator::IsOperationalKey(k)) {
      out.emplace_back(k, "Reject");  // no renegotiation in the full-feature phase
    } else {
      out.emplace_back(k, "NotUnderstood");
    }
  }
  text_pending_ = SerializeTextKeys(out);
  text_itt_ = itt;
  send_part(itt);
  return true;
}

void Connection::SendAsync(AsyncEvent event, uint64_t lun, const std::vector<uint8_t>& sense, uint16_t p1,
                           uint16_t p2, uint16_t p3) {
  if (!ffp_.load() || finished_.load()) return;
  OutPdu p;
  p.set_opcode(kOpAsync);
  p.set_flags(kF);
  p.set_lun(lun);
  p.set_itt(kReservedTag);
  p.bhs[36] = uint8_t(event);
  p.set_u16(38, p1);
  p.set_u16(40, p2);
  p.set_u16(42, p3);
  std::vector<uint8_t> data;
  if (event == AsyncEvent::kScsiEvent) {
    size_t sl = std::min<size_t>(sense.size(), 0xffff);
    data.resize(2 + sl);
    Put16(data.data(), uint16_t(sl));
    if (sl) std::memcpy(data.data() + 2, sense.data(), sl);
    p.set_data(data.data(), data.size());
  }
  SendSimple(p, true);
}

}  // namespace ferry::iscsi
