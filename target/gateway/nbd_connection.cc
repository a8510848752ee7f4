#include "target/gateway/nbd_connection.h"

#include <poll.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "target/gateway/fault_injector.h"

namespace ferry::gateway {

using nbd::Buffer;
using nbd::Request;
using nbd::RequestParser;

uint32_t NbdErrorFor(const Status& st) {
  switch (st.code()) {
    case Status::Code::kOk:
      return 0;
    case Status::Code::kFenced:
    case Status::Code::kPermissionDenied:
      return nbd::kEPERM;
    case Status::Code::kNoSpace:
      return nbd::kENOSPC;
    case Status::Code::kInvalidArgument:
      return nbd::kEINVAL;
    default:
      return nbd::kEIO;
  }
}

NbdConnection::NbdConnection(int fd, std::string peer, store::Store* store, WorkerPool* pool,
                             const std::vector<char>* zeros, Options opts, Logger log)
    : fd_(fd),
      peer_(std::move(peer)),
      store_(store),
      pool_(pool),
      zeros_(zeros),
      opts_(opts),
      log_(std::move(log)),
      slots_(kBatch) {
  iov_.reserve(2 * kBatch);
}

NbdConnection::~NbdConnection() {
  if (fd_ >= 0) ::close(fd_);
}

void NbdConnection::Shutdown() {
  dead_ = true;
  ::shutdown(fd_, SHUT_RDWR);
}

void NbdConnection::Run() {
  struct timeval tv;
  tv.tv_sec = opts_.send_timeout.count() / 1000;
  tv.tv_usec = (opts_.send_timeout.count() % 1000) * 1000;
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  std::string leftover;
  if (Handshake(&leftover)) {
    log_.Info("client " + peer_ + " opened export '" + session_.export_name + "'" +
              (session_.tflags & nbd::kTFlagReadOnly ? " read-only" : "") +
              (session_.structured ? " structured" : ""));
    Serve(leftover);
  }
  FlushBatch();
  std::unique_lock<std::mutex> l(inflight_mu_);
  inflight_cv_.wait(l, [this] { return inflight_ == 0; });
  log_.Debug("client " + peer_ + " closed");
}

bool NbdConnection::Handshake(std::string* leftover) {
  VolumeExports exports(store_);
  nbd::ServerHandshake hs(&exports, nbd::ServerHandshake::Options{});
  std::string out;
  hs.Greeting(&out);
  auto deadline = std::chrono::steady_clock::now() + opts_.handshake_timeout;
  uint8_t buf[4096];
  for (;;) {
    if (!out.empty()) {
      struct iovec iov = {out.data(), out.size()};
      std::lock_guard<std::mutex> l(send_mu_);
      if (!SendIov(&iov, 1)) return false;
      out.clear();
    }
    if (hs.done()) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      log_.Warn("client " + peer_ + ": handshake timed out");
      return false;
    }
    struct pollfd p = {fd_, POLLIN, 0};
    int pr = ::poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;  // timeout is caught at the top of the loop
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    size_t used = hs.Consume(buf, static_cast<size_t>(n), &out);
    if (hs.state() == nbd::ServerHandshake::State::kTransmission) {
      leftover->assign(reinterpret_cast<char*>(buf) + used, static_cast<size_t>(n) - used);
    }
  }
  if (hs.state() != nbd::ServerHandshake::State::kTransmission) {
    log_.Info("client " + peer_ + ": handshake ended: " + hs.close_reason());
    return false;
  }
  session_ = hs.session();
  handle_ = exports.handle();
  return handle_ != nullptr;
}

void NbdConnection::Serve(const std::string& leftover) {
  RequestParser parser;
  Buffer rbuf;
  rbuf.Resize(std::max<size_t>(256 * 1024, leftover.size()));
  std::memcpy(rbuf.data(), leftover.data(), leftover.size());
  size_t rpos = 0, rlen = leftover.size();
  auto* in = reinterpret_cast<const uint8_t*>(rbuf.data());
  for (;;) {
    while (rpos < rlen) {
      rpos += parser.Consume(in + rpos, rlen - rpos);
      if (parser.state() == RequestParser::State::kBroken) {
        log_.Warn("client " + peer_ + ": " + parser.error() + "; closing");
        return;
      }
      if (parser.state() != RequestParser::State::kReady) break;
      if (!Dispatch(parser, rpos < rlen)) return;
      parser.Next();
    }
    if (dead_) return;
    size_t missing = 0;
    char* dst = parser.payload_tail(&missing);
    if (dst != nullptr && missing >= 64 * 1024) {
      // A large write payload: receive it in place, no copy.
      FlushBatch();
      ssize_t n = ::recv(fd_, dst, missing, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      parser.PayloadFilled(static_cast<size_t>(n));
      if (parser.state() == RequestParser::State::kReady) {
        if (!Dispatch(parser, false)) return;
        parser.Next();
      }
      continue;
    }
    FlushBatch();
    ssize_t n = ::recv(fd_, rbuf.data(), rbuf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    rpos = 0;
    rlen = static_cast<size_t>(n);
  }
}

bool NbdConnection::Dispatch(RequestParser& parser, bool /*more_buffered*/) {
  const Request& req = parser.request();
  if (req.type == nbd::kCmdDisc) return false;
  uint32_t err = nbd::CheckRequest(req, handle_->size(), session_);
  if (err != 0) {
    ReplyError(req, err, "request refused");
    return true;
  }
  // Fault injection (off unless armed): answer with the error, do not execute.
  if (opts_.faults != nullptr && (err = opts_.faults->Check(session_.export_name, req.type)) != 0) {
    ReplyError(req, err, "injected fault");
    return true;
  }
  // READs always run on this connection's own thread: their replies are
  // what a client that stops reading blocks on, and a blocked pool worker
  // would stall every other connection's writes (the pool is shared).
  bool heavy = req.type == nbd::kCmdFlush || (req.type != nbd::kCmdRead && req.length > opts_.inline_max) ||
               (req.type == nbd::kCmdWrite && ((req.flags & nbd::kCmdFlagFua) || req.length > opts_.inline_write_max));
  if (!heavy) {
    if (req.type == nbd::kCmdRead) {
      Execute(req, &slots_[batched_].data, true);
    } else {
      Execute(req, &parser.payload(), true);
    }
    return true;
  }
  auto buf = std::make_shared<Buffer>(TakeBuffer());
  if (req.type == nbd::kCmdWrite) std::swap(*buf, parser.payload());
  {
    std::lock_guard<std::mutex> l(inflight_mu_);
    ++inflight_;
  }
  auto self = shared_from_this();
  Request r = req;
  pool_->Submit([self, r, buf] {
    self->Execute(r, buf.get(), false);
    self->GiveBuffer(std::move(*buf));
    self->TaskDone();
  });
  return true;
}

void NbdConnection::Execute(const Request& req, Buffer* buf, bool batch) {
  Status st;
  const bool fua = req.flags & nbd::kCmdFlagFua;
  switch (req.type) {
    case nbd::kCmdRead:
      if (opts_.zero_copy_min != 0 && req.length >= opts_.zero_copy_min && TrySendPlannedRead(req, batch)) return;
      buf->Resize(req.length);
      st = handle_->Read(req.offset, req.length, buf->data());
      if (st.ok()) {
        QueueReply(req, buf, batch);
        return;
      }
      break;
    case nbd::kCmdWrite:
      st = handle_->Write(req.offset, req.length, buf->data(), fua);
      break;
    case nbd::kCmdFlush:
      st = handle_->Flush();
      break;
    case nbd::kCmdTrim:
      st = handle_->Trim(req.offset, req.length);
      if (st.ok() && fua) st = handle_->Flush();
      break;
    case nbd::kCmdWriteZeroes:
      st = DoWriteZeroes(req);
      break;
    case nbd::kCmdCache:
      break;
    case nbd::kCmdBlockStatus:
      ReplyBlockStatus(req);
      return;
    default:
      st = Status::InvalidArgument("unknown command");
  }
  if (!st.ok()) log_.Debug("client " + peer_ + ": command " + std::to_string(req.type) + " failed: " + st.ToString());
  ReplyStatus(req, st, batch);
}

Status NbdConnection::DoWriteZeroes(const Request& req) {
  const bool fua = req.flags & nbd::kCmdFlagFua;
  if (!(req.flags & nbd::kCmdFlagNoHole)) return handle_->WriteZeroes(req.offset, req.length, fua);
  // NO_HOLE: the range must end up allocated, so write real zeros.
  uint64_t off = req.offset, left = req.length;
  while (left > 0) {
    uint64_t n = std::min<uint64_t>(left, zeros_->size());
    FERRY_RETURN_IF_ERROR(handle_->Write(off, n, zeros_->data(), false));
    off += n;
    left -= n;
  }
  return fua ? handle_->Flush() : Status::Ok();
}

void NbdConnection::ReplyBlockStatus(const Request& req) {
  auto m = handle_->Map(req.offset, req.length);
  if (!m.ok()) {
    ReplyError(req, NbdErrorFor(m.status()), m.status().message());
    return;
  }
  // Merge neighbours of the same kind, clip to the request.
  std::vector<std::pair<uint32_t, uint32_t>> desc;  // length, flags
  const uint64_t end = req.offset + req.length;
  for (const auto& e : m.value()) {
    uint64_t s = std::max(e.offset, req.offset), t = std::min(e.offset + e.length, end);
    if (t <= s) continue;
    uint32_t flags = e.allocated ? 0 : 3;  // NBD_STATE_HOLE | NBD_STATE_ZERO
    uint32_t len = static_cast<uint32_t>(t - s);
    if (!desc.empty() && desc.back().second == flags) {
      desc.back().first += len;
    } else {
      desc.emplace_back(len, flags);
    }
  }
  if (desc.empty()) {
    ReplyError(req, nbd::kEIO, "empty allocation map");
    return;
  }
  if (req.flags & nbd::kCmdFlagReqOne) desc.resize(1);
  std::string out(nbd::kStructuredReplyHeaderSize + 4 + 8 * desc.size(), '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  nbd::EncodeStructuredHeader({nbd::kReplyFlagDone, nbd::kReplyTypeBlockStatus, req.cookie,
                               static_cast<uint32_t>(4 + 8 * desc.size())},
                              p);
  p += nbd::kStructuredReplyHeaderSize;
  nbd::Put32(p, nbd::kMetaContextBaseAllocation);
  p += 4;
  for (const auto& [len, flags] : desc) {
    nbd::Put32(p, len);
    nbd::Put32(p + 4, flags);
    p += 8;
  }
  struct iovec iov = {out.data(), out.size()};
  std::lock_guard<std::mutex> l(send_mu_);
  SendIov(&iov, 1);
}

void NbdConnection::ReplyStatus(const Request& req, const Status& st, bool batch) {
  if (st.ok()) {
    QueueReply(req, nullptr, batch);
  } else {
    ReplyError(req, NbdErrorFor(st), st.message());
  }
}

void NbdConnection::ReplyError(const Request& req, uint32_t err, const std::string& msg) {
  std::string out;
  if (session_.structured && (req.type == nbd::kCmdRead || req.type == nbd::kCmdBlockStatus)) {
    std::string m = msg.substr(0, 200);
    out.resize(nbd::kStructuredReplyHeaderSize + 6 + m.size());
    auto* p = reinterpret_cast<uint8_t*>(out.data());
    nbd::EncodeStructuredHeader(
        {nbd::kReplyFlagDone, nbd::kReplyTypeError, req.cookie, static_cast<uint32_t>(6 + m.size())}, p);
    nbd::Put32(p + 20, err);
    nbd::Put16(p + 24, static_cast<uint16_t>(m.size()));
    std::memcpy(p + 26, m.data(), m.size());
  } else {
    out.resize(nbd::kSimpleReplySize);
    nbd::EncodeSimpleReply({err, req.cookie}, reinterpret_cast<uint8_t*>(out.data()));
  }
  struct iovec iov = {out.data(), out.size()};
  std::lock_guard<std::mutex> l(send_mu_);
  SendIov(&iov, 1);
}

size_t NbdConnection::EncodeSuccessHeader(const Request& req, bool with_data, size_t data_len,
                                          uint8_t* hdr) const {
  if (with_data && session_.structured) {
    nbd::EncodeStructuredHeader({nbd::kReplyFlagDone, nbd::kReplyTypeOffsetData, req.cookie,
                                 static_cast<uint32_t>(8 + data_len)},
                                hdr);
    nbd::Put64(hdr + nbd::kStructuredReplyHeaderSize, req.offset);
    return nbd::kStructuredReplyHeaderSize + 8;
  }
  nbd::EncodeSimpleReply({0, req.cookie}, hdr);
  return nbd::kSimpleReplySize;
}

// A success reply; `data` (READ only) follows the header.
void NbdConnection::QueueReply(const Request& req, Buffer* data, bool batch) {
  uint8_t local[32];
  uint8_t* hdr = batch ? slots_[batched_].hdr : local;
  size_t hlen = EncodeSuccessHeader(req, data != nullptr, data ? data->size() : 0, hdr);
  if (batch) {
    iov_.push_back({hdr, hlen});
    if (data != nullptr) iov_.push_back({data->data(), data->size()});
    if (++batched_ == kBatch) FlushBatch();
    return;
  }
  struct iovec iov[2] = {{hdr, hlen}, {data ? data->data() : nullptr, data ? data->size() : 0}};
  std::lock_guard<std::mutex> l(send_mu_);
  SendIov(iov, data ? 2 : 1);
}

bool NbdConnection::TrySendPlannedRead(const Request& req, bool batch) {
  auto plan = handle_->PlanRead(req.offset, req.length);
  if (!plan.ok()) {
    if (plan.status().code() == Status::Code::kConflict) return false;  // not plannable: pread path
    log_.Debug("client " + peer_ + ": read failed: " + plan.status().ToString());
    ReplyError(req, NbdErrorFor(plan.status()), plan.status().message());
    return true;
  }
  uint8_t hdr[32];
  size_t hlen = EncodeSuccessHeader(req, true, req.length, hdr);
  std::lock_guard<std::mutex> l(send_mu_);
  bool ok;
  if (batch) {  // replies batched so far go out first, in the same sendmsg as this header
    iov_.push_back({hdr, hlen});
    ok = SendIov(iov_.data(), static_cast<int>(iov_.size()), MSG_MORE);
    iov_.clear();
    batched_ = 0;
  } else {
    struct iovec iov = {hdr, hlen};
    ok = SendIov(&iov, 1, MSG_MORE);
  }
  const auto& segs = plan.value();
  for (size_t i = 0; ok && i < segs.size(); ++i) {
    const bool more = i + 1 < segs.size();
    if (segs[i].kind == store::ReadSegment::Kind::kFile) {
      ok = SendFileRange(segs[i].fd.get(), segs[i].file_offset, segs[i].length, more);
    } else {
      ok = SendZeros(segs[i].length, more);
    }
  }
  // A failure after the header leaves the stream mid-reply: the connection
  // was shut down by the failing send; never send a second header.
  return true;
}

bool NbdConnection::SendFileRange(int fd, uint64_t off, uint64_t len, bool more) {
  auto pos = static_cast<off_t>(off);
  while (len > 0) {
    if (dead_) return false;
    ssize_t w = ::sendfile(fd_, fd, &pos, std::min<uint64_t>(len, 1u << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      // EAGAIN: the send timeout (SO_SNDTIMEO) expired, as in SendIov.
      log_.Warn("client " + peer_ + ": sendfile failed: " + std::strerror(errno) + "; closing");
      Shutdown();
      return false;
    }
    if (w == 0) return SendZeros(len, more);  // the file was truncated meanwhile: the rest reads as zeros
    len -= static_cast<uint64_t>(w);
  }
  return true;
}

bool NbdConnection::SendZeros(uint64_t len, bool more) {
  while (len > 0) {
    uint64_t n = std::min<uint64_t>(len, zeros_->size());
    struct iovec iov = {const_cast<char*>(zeros_->data()), n};
    if (!SendIov(&iov, 1, (more || n < len) ? MSG_MORE : 0)) return false;
    len -= n;
  }
  return true;
}

void NbdConnection::FlushBatch() {
  if (batched_ == 0) return;
  {
    std::lock_guard<std::mutex> l(send_mu_);
    SendIov(iov_.data(), static_cast<int>(iov_.size()));
  }
  iov_.clear();
  batched_ = 0;
}

bool NbdConnection::SendIov(struct iovec* iov, int n, int flags) {
  if (dead_) return false;
  while (n > 0) {
    struct msghdr mh = {};
    mh.msg_iov = iov;
    mh.msg_iovlen = static_cast<size_t>(n);
    ssize_t w = ::sendmsg(fd_, &mh, MSG_NOSIGNAL | flags);
    if (w < 0) {
      if (errno == EINTR) continue;
      log_.Warn("client " + peer_ + ": send failed: " + std::strerror(errno) + "; closing");
      Shutdown();
      return false;
    }
    size_t left = static_cast<size_t>(w);
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --n;
    }
    if (n > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

Buffer NbdConnection::TakeBuffer() {
  std::lock_guard<std::mutex> l(bufs_mu_);
  if (free_bufs_.empty()) return Buffer();
  Buffer b = std::move(free_bufs_.back());
  free_bufs_.pop_back();
  return b;
}

void NbdConnection::GiveBuffer(Buffer b) {
  // Keep a few buffers of ordinary size; a rare 32 MiB one is freed, not hoarded.
  if (b.capacity() > (4u << 20)) return;
  std::lock_guard<std::mutex> l(bufs_mu_);
  if (free_bufs_.size() < 16) free_bufs_.push_back(std::move(b));
}

void NbdConnection::TaskDone() {
  std::lock_guard<std::mutex> l(inflight_mu_);
  if (--inflight_ == 0) inflight_cv_.notify_all();
}

}  // namespace ferry::gateway
