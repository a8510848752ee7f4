#include "target/blockdev/nbd_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#include "target/common/batch_scope.h"
#include "target/nbd/protocol.h"

namespace ferry::blockdev {
namespace {

using Clock = std::chrono::steady_clock;
// An option reply larger than this is garbage from our point of view.
constexpr uint32_t kMaxOptReply = 64 * 1024;

int RemainingMs(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// Waits for `events` on fd until the deadline.
Status WaitFd(int fd, short events, Clock::time_point deadline, const char* what) {
  for (;;) {
    pollfd p{fd, events, 0};
    int ms = RemainingMs(deadline);
    int r = poll(&p, 1, ms);
    if (r > 0) return Status::Ok();
    if (r == 0) return Status::Timeout(std::string(what) + ": timed out");
    if (errno != EINTR) return Status::FromErrno(errno, what);
  }
}

// Reads exactly n bytes from a non-blocking socket before the deadline.
Status ReadFullDeadline(int fd, void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0) return Status::Unavailable("handshake: connection closed by server");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Status::Unavailable(std::string("handshake: ") + strerror(errno));
    FERRY_RETURN_IF_ERROR(WaitFd(fd, POLLIN, deadline, "handshake"));
  }
  return Status::Ok();
}

Status WriteFullDeadline(int fd, const void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return Status::Unavailable(std::string("handshake: ") + strerror(errno));
    FERRY_RETURN_IF_ERROR(WaitFd(fd, POLLOUT, deadline, "handshake"));
  }
  return Status::Ok();
}

// Blocking socket helpers for the transmission phase.
bool ReadFull(int fd, void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r > 0) {
      p += r;
      n -= static_cast<size_t>(r);
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else {
      return false;
    }
  }
  return true;
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { int f = fd_; fd_ = -1; return f; }
  void reset(int fd) { if (fd_ >= 0) close(fd_); fd_ = fd; }

 private:
  int fd_;
};

// Opens a TCP connection (non-blocking fd returned) before the deadline.
Result<int> TcpConnect(const std::string& host, uint16_t port, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string ps = std::to_string(port);
  int g = getaddrinfo(host.c_str(), ps.c_str(), &hints, &res);
  if (g != 0) return Status::Unavailable("resolve " + host + ": " + gai_strerror(g));
  Status last = Status::Unavailable("connect " + host + ":" + ps + ": no address");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    Fd fd(socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) {
      last = Status::FromErrno(errno, "socket");
      continue;
    }
    int r = connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (r < 0 && errno != EINPROGRESS) {
      last = Status::Unavailable("connect " + host + ":" + ps + ": " + strerror(errno));
      continue;
    }
    if (r < 0) {
      Status w = WaitFd(fd.get(), POLLOUT, deadline, "connect");
      if (!w.ok()) {
        last = Status::Timeout("connect " + host + ":" + ps + ": timed out");
        continue;
      }
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        last = Status::Unavailable("connect " + host + ":" + ps + ": " + strerror(err));
        continue;
      }
    }
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    freeaddrinfo(res);
    return fd.release();
  }
  freeaddrinfo(res);
  return last;
}

struct OptReply {
  uint32_t option = 0;
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

Status SendOption(int fd, uint32_t opt, const std::vector<uint8_t>& data, Clock::time_point dl) {
  std::vector<uint8_t> b(16 + data.size());
  nbd::Put64(b.data(), nbd::kIHaveOpt);
  nbd::Put32(b.data() + 8, opt);
  nbd::Put32(b.data() + 12, static_cast<uint32_t>(data.size()));
  if (!data.empty()) memcpy(b.data() + 16, data.data(), data.size());
  return WriteFullDeadline(fd, b.data(), b.size(), dl);
}

Result<OptReply> ReadOptReply(int fd, Clock::time_point dl) {
  uint8_t h[20];
  FERRY_RETURN_IF_ERROR(ReadFullDeadline(fd, h, sizeof(h), dl));
  if (nbd::Get64(h) != nbd::kOptReplyMagic) return Status::Unavailable("handshake: bad option reply magic");
  OptReply r;
  r.option = nbd::Get32(h + 8);
  r.type = nbd::Get32(h + 12);
  uint32_t len = nbd::Get32(h + 16);
  if (len > kMaxOptReply) return Status::Unavailable("handshake: option reply too long");
  r.data.resize(len);
  if (len) FERRY_RETURN_IF_ERROR(ReadFullDeadline(fd, r.data.data(), len, dl));
  return r;
}

Status OptError(const OptReply& r, const std::string& export_name) {
  std::string msg(r.data.begin(), r.data.end());
  std::string what = "export '" + export_name + "'";
  if (r.type == nbd::kRepErrUnknown) return Status::NotFound(what + " unknown to the server" + (msg.empty() ? "" : ": " + msg));
  if (r.type == nbd::kRepErrUnsup) return Status::InvalidArgument(what + ": option unsupported");
  return Status::Unavailable(what + ": server refused (" + std::to_string(r.type & 0x7fffffff) + ")" +
                             (msg.empty() ? "" : ": " + msg));
}

Status Greet(int fd, Clock::time_point deadline);

// Greeting and client flags. Returns the fd ready for options.
Result<int> OpenAndGreet(const NbdConnectOptions& o, Clock::time_point* hs_deadline) {
  auto cdl = Clock::now() + o.connect_timeout;
  auto fdr = TcpConnect(o.host, o.port, cdl);
  if (!fdr.ok()) return fdr.status();
  Fd fd(fdr.value());
  *hs_deadline = Clock::now() + o.handshake_timeout;
  FERRY_RETURN_IF_ERROR(Greet(fd.get(), *hs_deadline));
  return fd.release();
}

// Reads the server greeting and answers with the client flags.
Status Greet(int fd, Clock::time_point deadline) {
  auto* hs_deadline = &deadline;
  uint8_t g[18];
  FERRY_RETURN_IF_ERROR(ReadFullDeadline(fd, g, sizeof(g), *hs_deadline));
  if (nbd::Get64(g) != nbd::kNbdMagic) return Status::Unavailable("handshake: not an NBD server");
  if (nbd::Get64(g + 8) != nbd::kIHaveOpt) return Status::Unavailable("handshake: oldstyle server unsupported");
  uint16_t sflags = nbd::Get16(g + 16);
  if (!(sflags & nbd::kFlagFixedNewstyle)) return Status::Unavailable("handshake: server is not fixed-newstyle");
  uint32_t cflags = nbd::kClientFlagFixedNewstyle;
  if (sflags & nbd::kFlagNoZeroes) cflags |= nbd::kClientFlagNoZeroes;
  uint8_t c[4];
  nbd::Put32(c, cflags);
  return WriteFullDeadline(fd, c, 4, *hs_deadline);
}

std::vector<uint8_t> InfoRequest(const std::string& name) {
  std::vector<uint8_t> d(4 + name.size() + 4);
  nbd::Put32(d.data(), static_cast<uint32_t>(name.size()));
  memcpy(d.data() + 4, name.data(), name.size());
  nbd::Put16(d.data() + 4 + name.size(), 1);  // one request: the server's name for the export
  nbd::Put16(d.data() + 4 + name.size() + 2, nbd::kInfoName);
  return d;
}

// Sends INFO or GO and collects replies until ACK or error.
Result<NbdExportInfo> InfoOrGo(int fd, uint32_t opt, const std::string& name, Clock::time_point dl) {
  if (name.size() > 4096) return Status::InvalidArgument("export name too long");
  FERRY_RETURN_IF_ERROR(SendOption(fd, opt, InfoRequest(name), dl));
  NbdExportInfo info;
  bool have_export = false;
  for (int n = 0; n < 64; ++n) {
    auto r = ReadOptReply(fd, dl);
    if (!r.ok()) return r.status();
    if (r->option != opt) return Status::Unavailable("handshake: reply to an option not asked");
    if (r->type == nbd::kRepAck) {
      if (!have_export) return Status::Unavailable("handshake: no export info before ACK");
      return info;
    }
    if (r->type & nbd::kRepFlagError) return OptError(r.value(), name);
    if (r->type == nbd::kRepInfo && r->data.size() >= 2) {
      uint16_t it = nbd::Get16(r->data.data());
      if (it == nbd::kInfoExport) {
        if (r->data.size() != 12) return Status::Unavailable("handshake: bad NBD_INFO_EXPORT");
        info.size = nbd::Get64(r->data.data() + 2);
        info.flags = nbd::Get16(r->data.data() + 10);
        have_export = true;
      } else if (it == nbd::kInfoName) {
        info.name.assign(r->data.begin() + 2, r->data.end());
      }
    }
    // other informational replies are ignored
  }
  return Status::Unavailable("handshake: too many option replies");
}

}  // namespace

Result<std::unique_ptr<NbdConnection>> NbdConnection::Connect(const NbdConnectOptions& o, ReplyFn on_reply,
                                                              DeadFn on_dead) {
  Clock::time_point dl;
  auto fdr = OpenAndGreet(o, &dl);
  if (!fdr.ok()) return fdr.status();
  Fd fd(fdr.value());
  auto info = InfoOrGo(fd.get(), nbd::kOptGo, o.export_name, dl);
  if (!info.ok()) return info.status();
  // Transmission phase: blocking socket; deadlines are the owner's business.
  int fl = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return Adopt(fd.release(), info.value(), std::move(on_reply), std::move(on_dead));
}

Result<std::unique_ptr<NbdConnection>> NbdConnection::Adopt(int fd, const NbdExportInfo& info, ReplyFn on_reply,
                                                             DeadFn on_dead) {
  try {
    return std::unique_ptr<NbdConnection>(new NbdConnection(fd, info, std::move(on_reply), std::move(on_dead)));
  } catch (const std::system_error& e) {
    // No thread for the reader (ulimit -u, threads-max, address space): a
    // failed connection, not a dead process.
    ::close(fd);
    return Status::Unavailable(std::string("cannot start the connection's reader thread: ") + e.what());
  }
}

Result<std::unique_ptr<NbdConnection>> NbdConnection::ConnectFd(int raw, const NbdConnectOptions& o,
                                                                ReplyFn on_reply, DeadFn on_dead) {
  Fd fd(raw);
  int fl = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK);
  auto dl = Clock::now() + o.handshake_timeout;
  FERRY_RETURN_IF_ERROR(Greet(fd.get(), dl));
  auto info = InfoOrGo(fd.get(), nbd::kOptGo, o.export_name, dl);
  if (!info.ok()) return info.status();
  fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK);
  return Adopt(fd.release(), info.value(), std::move(on_reply), std::move(on_dead));
}

Result<NbdExportInfo> NbdConnection::Probe(const NbdConnectOptions& o) {
  Clock::time_point dl;
  auto fdr = OpenAndGreet(o, &dl);
  if (!fdr.ok()) return fdr.status();
  Fd fd(fdr.value());
  auto info = InfoOrGo(fd.get(), nbd::kOptInfo, o.export_name, dl);
  if (info.ok()) {
    SendOption(fd.get(), nbd::kOptAbort, {}, dl);  // polite; the reply does not matter
    return info;
  }
  if (info.status().code() != Status::Code::kInvalidArgument) return info.status();
  // Server without NBD_OPT_INFO: reconnect with GO, then disconnect.
  fdr = OpenAndGreet(o, &dl);
  if (!fdr.ok()) return fdr.status();
  fd.reset(fdr.value());
  info = InfoOrGo(fd.get(), nbd::kOptGo, o.export_name, dl);
  if (info.ok()) {
    uint8_t req[nbd::kRequestSize];
    nbd::Request r;
    r.type = nbd::kCmdDisc;
    nbd::EncodeRequest(r, req);
    WriteFullDeadline(fd.get(), req, sizeof(req), dl);
  }
  return info;
}

NbdConnection::NbdConnection(int fd, NbdExportInfo info, ReplyFn on_reply, DeadFn on_dead)
    : fd_(fd), info_(info), on_reply_(std::move(on_reply)), on_dead_(std::move(on_dead)) {
  reader_ = std::thread([this] { ReaderLoop(); });
}

NbdConnection::~NbdConnection() {
  Close();
  close(fd_);
}

void NbdConnection::MarkDead(const Status& why) {
  bool was = dead_.exchange(true);
  if (was) return;
  shutdown(fd_, SHUT_RDWR);
  if (on_dead_ && !closed_.load()) on_dead_(why);
}

Status NbdConnection::Send(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length,
                           const char* payload, char* read_buf, SplicedData* splice_dest) {
  if (dead_.load()) return Status::Unavailable("connection is dead");
  if (type != nbd::kCmdRead) splice_dest = nullptr;
  {
    std::lock_guard<std::mutex> l(pending_mu_);
    if (!pending_.emplace(cookie, Pending{type, length, read_buf, splice_dest}).second)
      return Status::Internal("cookie already in flight");
    if (splice_dest) splice_pending_.fetch_add(1);
  }
  uint8_t hdr[nbd::kRequestSize];
  nbd::Request r;
  r.type = type;
  r.flags = flags;
  r.cookie = cookie;
  r.offset = offset;
  r.length = length;
  nbd::EncodeRequest(r, hdr);
  const bool has_payload = type == nbd::kCmdWrite && length > 0;
  BatchScope* scope = BatchScope::Current();
  if (scope != nullptr && (!has_payload || length <= kBatchMaxPayload) && !OnReaderThread()) {
    if (std::shared_ptr<NbdConnection> self = weak_from_this().lock()) {
      {
        std::lock_guard<std::mutex> l(send_mu_);
        batched_.insert(batched_.end(), reinterpret_cast<const char*>(hdr),
                        reinterpret_cast<const char*>(hdr) + sizeof(hdr));
        if (has_payload) batched_.insert(batched_.end(), payload, payload + length);
      }
      scope->Defer(this, [self] { self->FlushBatched(); });
      return Status::Ok();
    }
  }
  iovec iov[2];
  iov[0].iov_base = hdr;
  iov[0].iov_len = sizeof(hdr);
  int iovcnt = 1;
  if (has_payload) {
    iov[1].iov_base = const_cast<char*>(payload);
    iov[1].iov_len = length;
    iovcnt = 2;
  }
  std::lock_guard<std::mutex> l(send_mu_);
  return SendLocked(iov, iovcnt);
}

void NbdConnection::FlushBatched() {
  std::lock_guard<std::mutex> l(send_mu_);
  SendLocked(nullptr, 0);
}

Status NbdConnection::SendLocked(const iovec* req, int reqcnt) {
  // Batched requests first, so requests leave in the order they were sent.
  iovec iov[3];
  int iovcnt = 0;
  if (!batched_.empty()) iov[iovcnt++] = {batched_.data(), batched_.size()};
  for (int i = 0; i < reqcnt; ++i) iov[iovcnt++] = req[i];
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  size_t done = 0;
  Status st;
  while (done < total) {
    msghdr m{};
    iovec cur[3];
    int n = 0;
    size_t skip = done;
    for (int i = 0; i < iovcnt; ++i) {
      if (skip >= iov[i].iov_len) {
        skip -= iov[i].iov_len;
        continue;
      }
      cur[n].iov_base = static_cast<char*>(iov[i].iov_base) + skip;
      cur[n].iov_len = iov[i].iov_len - skip;
      skip = 0;
      ++n;
    }
    m.msg_iov = cur;
    m.msg_iovlen = n;
    ssize_t w = sendmsg(fd_, &m, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      st = Status::Unavailable(std::string("send: ") + (w < 0 ? strerror(errno) : "closed"));
      break;
    }
    done += static_cast<size_t>(w);
  }
  batched_.clear();
  if (!st.ok()) MarkDead(st);
  return st;
}

void NbdConnection::ReaderLoop() {
  // Replies are read in chunks of up to kChunk bytes; a read payload that is
  // not yet buffered and is large goes straight into the caller's buffer.
  constexpr size_t kChunk = 256 * 1024;
  constexpr size_t kDirect = 64 * 1024;
  // Not zero-filled, and touched only as far as replies reach: zeroing it
  // cost every LUN 256 KiB of resident memory and the add its CPU.
  struct {
    std::unique_ptr<char[]> bytes{new char[kChunk]};
    char* data() { return bytes.get(); }
    size_t size() const { return kChunk; }
  } buf;
  size_t pos = 0, len = 0;
  auto fill = [&]() -> bool {  // more bytes after the unread ones; false on EOF/error
    if (pos > 0) {
      std::memmove(buf.data(), buf.data() + pos, len - pos);
      len -= pos;
      pos = 0;
    }
    // While a spliced read is in flight, read no further than the next
    // reply header, so its payload stays in the socket for splice().
    size_t want = buf.size() - len;
    if (splice_pending_.load() > 0 && len < nbd::kSimpleReplySize) want = nbd::kSimpleReplySize - len;
    for (;;) {
      ssize_t r = recv(fd_, buf.data() + len, want, 0);
      if (r > 0) {
        len += static_cast<size_t>(r);
        return true;
      }
      if (r < 0 && errno == EINTR) continue;
      return false;
    }
  };
  for (;;) {
    if (len - pos < nbd::kSimpleReplySize && !fill()) {
      MarkDead(Status::Unavailable("connection closed"));
      return;
    }
    // Every reply complete in the buffer is delivered inside one scope, so
    // what the callbacks send leaves together.
    BatchScope scope;
    while (len - pos >= nbd::kSimpleReplySize) {
      const auto* h = reinterpret_cast<const uint8_t*>(buf.data() + pos);
      nbd::SimpleReply rep;
      if (!nbd::DecodeSimpleReply(h, &rep)) {
        MarkDead(Status::Unavailable(nbd::Get32(h) == nbd::kStructuredReplyMagic
                                         ? "structured reply not negotiated"
                                         : "bad reply magic"));
        return;
      }
      Pending p;
      {
        std::lock_guard<std::mutex> l(pending_mu_);
        auto it = pending_.find(rep.cookie);
        if (it == pending_.end()) {
          MarkDead(Status::Unavailable("reply for unknown cookie " + std::to_string(rep.cookie)));
          return;
        }
        p = it->second;
        pending_.erase(it);
      }
      pos += nbd::kSimpleReplySize;
      if (p.splice_dest) splice_pending_.fetch_sub(1);
      if (p.splice_dest && rep.error == 0 && p.length > 0) {
        SplicedData* d = p.splice_dest;
        Status st = d->Reset();  // a payload left by a connection that died mid-way
        size_t have = std::min<size_t>(len - pos, p.length);
        if (st.ok() && have > 0) st = d->Append(buf.data() + pos, have);
        pos += have;
        if (st.ok() && p.length > have) {
          scope.Flush();  // about to wait: let the earlier replies' data leave first
          st = d->FillFrom(fd_, p.length - have);
        }
        if (!st.ok()) {
          MarkDead(Status::Unavailable("read payload: " + st.message()));
          return;
        }
      } else if (p.type == nbd::kCmdRead && rep.error == 0 && p.length > 0) {
        size_t have = std::min<size_t>(len - pos, p.length);
        std::memcpy(p.read_buf, buf.data() + pos, have);
        pos += have;
        size_t rest = p.length - have;
        if (rest > 0) {
          scope.Flush();  // about to block: let the earlier replies' data leave first
          if (rest >= kDirect) {  // kDirect < buf.size(): smaller rests fit the buffer
            if (!ReadFull(fd_, p.read_buf + have, rest)) {
              MarkDead(Status::Unavailable("connection closed in read payload"));
              return;
            }
          } else {
            while (len - pos < rest) {
              if (!fill()) {
                MarkDead(Status::Unavailable("connection closed in read payload"));
                return;
              }
            }
            std::memcpy(p.read_buf + have, buf.data() + pos, rest);
            pos += rest;
          }
        }
      }
      if (dead_.load()) return;  // Close() raced with us: deliver nothing more
      on_reply_(rep.cookie, rep.error);
    }
  }
}

void NbdConnection::Close() {
  if (closed_.exchange(true)) {
    if (reader_.joinable() && reader_.get_id() != std::this_thread::get_id()) reader_.join();
    return;
  }
  if (!dead_.load()) {
    // Best effort NBD_CMD_DISC so a healthy server logs a clean close. Bounded:
    // MSG_DONTWAIT never blocks on a full socket buffer.
    uint8_t req[nbd::kRequestSize];
    nbd::Request r;
    r.type = nbd::kCmdDisc;
    nbd::EncodeRequest(r, req);
    std::unique_lock<std::mutex> l(send_mu_, std::try_to_lock);
    if (l.owns_lock()) send(fd_, req, sizeof(req), MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  dead_.store(true);
  shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable() && reader_.get_id() != std::this_thread::get_id()) reader_.join();
}

}  // namespace ferry::blockdev
