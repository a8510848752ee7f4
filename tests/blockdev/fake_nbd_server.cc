#include "tests/blockdev/fake_nbd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ferry::blockdev::testing {
namespace {

bool ReadN(int fd, void* b, size_t n) {
  auto* p = static_cast<char*>(b);
  while (n) {
    ssize_t r = recv(fd, p, n, 0);
    if (r <= 0) return false;
    p += r;
    n -= r;
  }
  return true;
}
bool WriteN(int fd, const void* b, size_t n) {
  auto* p = static_cast<const char*>(b);
  while (n) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r <= 0) return false;
    p += r;
    n -= r;
  }
  return true;
}
bool OptReply(int fd, uint32_t opt, uint32_t type, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b(20 + data.size());
  nbd::Put64(b.data(), nbd::kOptReplyMagic);
  nbd::Put32(b.data() + 8, opt);
  nbd::Put32(b.data() + 12, type);
  nbd::Put32(b.data() + 16, data.size());
  std::copy(data.begin(), data.end(), b.begin() + 20);
  return WriteN(fd, b.data(), b.size());
}

}  // namespace

FakeNbdServer::FakeNbdServer(uint64_t size, uint16_t port) : disk_(size, 0), port_(port) {
  script_ = [](const nbd::Request&) { return Action{}; };
  Listen();
}

FakeNbdServer::~FakeNbdServer() {
  Down();
}

bool FakeNbdServer::Listen() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port_);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(fd, 16) != 0) {
    close(fd);
    return false;
  }
  socklen_t len = sizeof(a);
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  lfd_ = fd;
  acceptor_ = std::thread([this, fd] { AcceptLoop(fd); });
  return true;
}

bool FakeNbdServer::Up() { return Listen(); }

void FakeNbdServer::Down() {
  if (lfd_ >= 0) {
    shutdown(lfd_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    close(lfd_);
    lfd_ = -1;
  }
  DropAll();
}

void FakeNbdServer::DropAll() {
  std::list<std::thread> threads;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    threads.swap(conns_);
  }
  for (auto& t : threads) t.join();
}

void FakeNbdServer::SetExports(std::vector<std::string> names) {
  std::lock_guard<std::mutex> l(mu_);
  exports_ = std::move(names);
}
void FakeNbdServer::SetScript(Script s) {
  std::lock_guard<std::mutex> l(mu_);
  script_ = std::move(s);
}
void FakeNbdServer::SetSize(uint64_t size) {
  std::lock_guard<std::mutex> l(mu_);
  disk_.resize(size);
}
void FakeNbdServer::SetInfoName(std::string name) {
  std::lock_guard<std::mutex> l(mu_);
  info_name_ = std::move(name);
}

std::vector<std::string> FakeNbdServer::exports_asked() {
  std::lock_guard<std::mutex> l(mu_);
  return asked_;
}
std::vector<char> FakeNbdServer::Data() {
  std::lock_guard<std::mutex> l(mu_);
  return disk_;
}

void FakeNbdServer::AcceptLoop(int lfd) {
  for (;;) {
    int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    std::lock_guard<std::mutex> l(mu_);
    fds_.push_back(fd);
    conns_.emplace_back([this, fd] { Serve(fd); });
  }
}

void FakeNbdServer::Serve(int fd) {
  auto done = [&] {
    std::lock_guard<std::mutex> l(mu_);
    fds_.erase(std::remove(fds_.begin(), fds_.end(), fd), fds_.end());
    close(fd);
  };
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (mute_.load()) {
    char c;
    while (recv(fd, &c, 1, 0) > 0) {
    }
    return done();
  }
  uint8_t g[18];
  nbd::Put64(g, nbd::kNbdMagic);
  nbd::Put64(g + 8, nbd::kIHaveOpt);
  nbd::Put16(g + 16, nbd::kFlagFixedNewstyle | nbd::kFlagNoZeroes);
  uint8_t cf[4];
  if (!WriteN(fd, g, sizeof(g)) || !ReadN(fd, cf, 4)) return done();
  for (;;) {  // options
    uint8_t h[16];
    if (!ReadN(fd, h, 16) || nbd::Get64(h) != nbd::kIHaveOpt) return done();
    uint32_t opt = nbd::Get32(h + 8), len = nbd::Get32(h + 12);
    if (len > 65536) return done();
    std::vector<uint8_t> d(len);
    if (len && !ReadN(fd, d.data(), len)) return done();
    if (opt == nbd::kOptAbort) {
      OptReply(fd, opt, nbd::kRepAck, {});
      return done();
    }
    if (opt != nbd::kOptGo && opt != nbd::kOptInfo) {
      if (!OptReply(fd, opt, nbd::kRepErrUnsup, {})) return done();
      continue;
    }
    if (len < 6) return done();
    uint32_t nl = nbd::Get32(d.data());
    if (nl > len - 6) return done();
    std::string name(d.begin() + 4, d.begin() + 4 + nl);
    bool ok;
    uint64_t size;
    std::string info_name;
    {
      std::lock_guard<std::mutex> l(mu_);
      asked_.push_back(name);
      ok = exports_.empty() || std::find(exports_.begin(), exports_.end(), name) != exports_.end();
      size = disk_.size();
      info_name = info_name_;
    }
    if (!ok) {
      if (!OptReply(fd, opt, nbd::kRepErrUnknown, {})) return done();
      continue;
    }
    std::vector<uint8_t> info(12);
    nbd::Put16(info.data(), nbd::kInfoExport);
    nbd::Put64(info.data() + 2, size);
    nbd::Put16(info.data() + 10, nbd::kTFlagHasFlags | nbd::kTFlagSendFlush | nbd::kTFlagSendFua |
                                      nbd::kTFlagSendTrim | nbd::kTFlagSendWriteZeroes);
    if (!OptReply(fd, opt, nbd::kRepInfo, info)) return done();
    if (!info_name.empty()) {
      std::vector<uint8_t> nm(2 + info_name.size());
      nbd::Put16(nm.data(), nbd::kInfoName);
      std::copy(info_name.begin(), info_name.end(), nm.begin() + 2);
      if (!OptReply(fd, opt, nbd::kRepInfo, nm)) return done();
    }
    if (!OptReply(fd, opt, nbd::kRepAck, {})) return done();
    if (opt == nbd::kOptGo) break;
  }
  for (;;) {  // transmission, served in order on this thread
    uint8_t rq[nbd::kRequestSize];
    nbd::Request r;
    if (!ReadN(fd, rq, sizeof(rq)) || !nbd::DecodeRequest(rq, &r)) return done();
    if (r.type == nbd::kCmdDisc) return done();
    std::vector<char> payload;
    if (r.type == nbd::kCmdWrite) {
      payload.resize(r.length);
      if (!ReadN(fd, payload.data(), r.length)) return done();
    }
    requests_.fetch_add(1);
    Action a;
    {
      std::lock_guard<std::mutex> l(mu_);
      a = script_(r);
    }
    uint8_t rep[nbd::kSimpleReplySize];
    nbd::SimpleReply sr;
    sr.cookie = r.cookie;
    switch (a.kind) {
      case Kind::kHang:
        continue;  // never answered
      case Kind::kDrop:
        shutdown(fd, SHUT_RDWR);
        return done();
      case Kind::kGarbageMagic:
        memset(rep, 0xab, sizeof(rep));
        WriteN(fd, rep, sizeof(rep));
        continue;
      case Kind::kUnknownCookie:
        sr.cookie = r.cookie ^ 0xdeadbeef00ull;
        nbd::EncodeSimpleReply(sr, rep);
        WriteN(fd, rep, sizeof(rep));
        continue;
      case Kind::kShortRead:
        nbd::EncodeSimpleReply(sr, rep);
        WriteN(fd, rep, sizeof(rep));
        WriteN(fd, "abc", 3);
        shutdown(fd, SHUT_RDWR);
        return done();
      case Kind::kReply:
        break;
    }
    sr.error = a.error;
    std::vector<char> data;
    if (a.error == 0) {
      std::lock_guard<std::mutex> l(mu_);
      bool in = r.offset + r.length <= disk_.size();
      if (!in) {
        sr.error = nbd::kEINVAL;
      } else if (r.type == nbd::kCmdRead) {
        data.assign(disk_.begin() + r.offset, disk_.begin() + r.offset + r.length);
      } else if (r.type == nbd::kCmdWrite) {
        std::copy(payload.begin(), payload.end(), disk_.begin() + r.offset);
        writes_.fetch_add(1);
      } else if (r.type == nbd::kCmdWriteZeroes || r.type == nbd::kCmdTrim) {
        std::fill(disk_.begin() + r.offset, disk_.begin() + r.offset + r.length, 0);
      }
    }
    nbd::EncodeSimpleReply(sr, rep);
    if (!WriteN(fd, rep, sizeof(rep))) return done();
    if (!data.empty() && !WriteN(fd, data.data(), data.size())) return done();
  }
}

}  // namespace ferry::blockdev::testing
