#include "target/iscsi/portal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>

#include "target/iscsi/connection.h"

namespace ferry::iscsi {

namespace {

std::string AddrToString(const sockaddr_storage& ss, std::string* ip_out) {
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    *ip_out = host;
    return std::string(host) + ":" + std::to_string(port);
  }
  auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
  port = ntohs(a->sin6_port);
  *ip_out = host;
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

// "host:port" or "[v6]:port"; unlike ParseHostPort, port 0 (= any) is allowed.
Result<HostPort> ParseListen(const std::string& spec) {
  size_t colon = spec.rfind(':');
  if (colon == std::string::npos || colon + 1 >= spec.size()) return Status::InvalidArgument("expected host:port");
  std::string host = spec.substr(0, colon), port = spec.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return Status::InvalidArgument("expected host:port");
  int p = std::stoi(port);
  if (p > 65535) return Status::InvalidArgument("port out of range");
  HostPort hp;
  hp.host = host;
  hp.port = uint16_t(p);
  return hp;
}

}  // namespace

class IscsiServer::Impl : public ConnectionOwner {
 public:
  Impl(IscsiServerOptions opts, std::shared_ptr<TargetDirectory> dir, Logger log)
      : opts_(std::move(opts)), dir_(std::move(dir)), log_(std::move(log)) {}
  ~Impl() override { Stop(); }

  Status Start();
  void Stop();
  std::vector<HostPort> Bound() const {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<HostPort> v;
    for (const auto& l : listeners_) v.push_back(l.addr);
    return v;
  }
  std::vector<SessionInfo> Sessions() const {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<SessionInfo> v;
    for (const auto& c : conns_)
      if (c.conn->full_feature() && !c.conn->finished()) v.push_back(c.conn->Info());
    return v;
  }
  template <typename F>
  size_t ForTarget(const std::string& iqn, F f) {
    std::vector<std::shared_ptr<Connection>> hit;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (const auto& c : conns_)
        if (c.conn->full_feature() && !c.conn->finished() && !c.conn->discovery() && c.conn->target_iqn() == iqn)
          hit.push_back(c.conn);
    }
    for (auto& c : hit) f(*c);
    return hit.size();
  }

  // ConnectionOwner
  uint16_t AllocateTsih() override;
  bool TsihExists(uint16_t tsih) override;
  void EnteredFullFeature(const std::shared_ptr<Connection>& c) override;
  std::vector<std::string> Portals(const std::string& local_ip) override;

 private:
  struct Listener {
    int fd;
    HostPort addr;
  };
  struct Slot {
    std::shared_ptr<Connection> conn;
    std::thread thread;
    bool done = false;
  };
  void AcceptLoop();
  void Accept(int lfd);
  void ReapLocked(std::vector<std::thread>* out);

  IscsiServerOptions opts_;
  std::shared_ptr<TargetDirectory> dir_;
  Logger log_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Listener> listeners_;
  std::list<Slot> conns_;
  std::thread accept_thread_;
  int wake_[2] = {-1, -1};
  bool running_ = false;
  uint16_t next_tsih_ = 1;
  uint64_t next_nexus_ = 1;
};

Status IscsiServer::Impl::Start() {
  std::lock_guard<std::mutex> g(mu_);
  if (running_) return Status::Conflict("iSCSI server already started");
  if (opts_.listen.empty()) return Status::InvalidArgument("no iSCSI listen address");
  std::vector<Listener> ls;
  auto cleanup = [&ls] {
    for (auto& l : ls) ::close(l.fd);
  };
  for (const auto& spec : opts_.listen) {
    auto hp = ParseListen(spec);
    if (!hp.ok()) {
      cleanup();
      return Status::InvalidArgument("bad iSCSI listen address '" + spec + "': " + hp.status().message());
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    addrinfo* res = nullptr;
    std::string host = hp->host;
    if (int e = getaddrinfo(host.c_str(), std::to_string(hp->port).c_str(), &hints, &res); e != 0) {
      cleanup();
      return Status::InvalidArgument("iSCSI listen address '" + spec + "': " + gai_strerror(e));
    }
    int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || ::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      int err = errno;
      if (fd >= 0) ::close(fd);
      freeaddrinfo(res);
      cleanup();
      return Status::FromErrno(err, "iSCSI listen on " + spec);
    }
    freeaddrinfo(res);
    sockaddr_storage ss{};
    socklen_t sl = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &sl);
    std::string ip;
    AddrToString(ss, &ip);
    HostPort bound;
    bound.host = ip;
    bound.port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                               : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    ls.push_back({fd, bound});
  }
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    int err = errno;
    cleanup();
    return Status::FromErrno(err, "pipe");
  }
  listeners_ = std::move(ls);
  running_ = true;
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  std::string names;
  for (const auto& l : listeners_) names += " " + l.addr.ToString();
  log_.Info("iSCSI portals:" + names);
  return Status::Ok();
}

void IscsiServer::Impl::Stop() {
  std::vector<std::thread> threads;
  std::vector<std::shared_ptr<Connection>> conns;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!running_) return;
    running_ = false;
    char c = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_[1], &c, 1);
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& l : listeners_) ::close(l.fd);
    listeners_.clear();
    for (auto& s : conns_) conns.push_back(s.conn);
  }
  for (auto& c : conns) c->Close();
  {
    // The slots stay until their threads are joined: each thread marks its slot done at exit.
    std::lock_guard<std::mutex> g(mu_);
    for (auto& s : conns_)
      if (s.thread.joinable()) threads.push_back(std::move(s.thread));
  }
  for (auto& t : threads) t.join();
  {
    std::lock_guard<std::mutex> g(mu_);
    conns_.clear();
  }
  ::close(wake_[0]);
  ::close(wake_[1]);
  wake_[0] = wake_[1] = -1;
}

void IscsiServer::Impl::ReapLocked(std::vector<std::thread>* out) {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if (it->done) {
      if (it->thread.joinable()) out->push_back(std::move(it->thread));
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void IscsiServer::Impl::AcceptLoop() {
  for (;;) {
    std::vector<pollfd> pfds;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!running_) return;
      for (const auto& l : listeners_) pfds.push_back({l.fd, POLLIN, 0});
    }
    pfds.push_back({wake_[0], POLLIN, 0});
    int n = ::poll(pfds.data(), pfds.size(), 1000);
    std::vector<std::thread> finished;
    {
      std::lock_guard<std::mutex> g(mu_);
      ReapLocked(&finished);
      if (!running_) {
        for (auto& t : finished) t.join();
        return;
      }
    }
    for (auto& t : finished) t.join();
    if (n <= 0) continue;
    if (pfds.back().revents) {
      char buf[64];
      while (::read(wake_[0], buf, sizeof buf) > 0) {
      }
    }
    for (size_t i = 0; i + 1 < pfds.size(); ++i)
      if (pfds[i].revents & POLLIN) Accept(pfds[i].fd);
  }
}

void IscsiServer::Impl::Accept(int lfd) {
  sockaddr_storage peer{};
  socklen_t pl = sizeof peer;
  int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_CLOEXEC);
  if (fd < 0) return;
  sockaddr_storage local{};
  socklen_t ll = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll);
  ConnectionEnv env;
  env.opts = opts_;
  env.directory = dir_.get();
  env.owner = this;
  env.peer_addr = AddrToString(peer, &env.peer_ip);
  env.local_addr = AddrToString(local, &env.local_ip);
  std::lock_guard<std::mutex> g(mu_);
  size_t logging_in = 0;
  for (const auto& s : conns_)
    if (!s.conn->full_feature()) ++logging_in;
  if (logging_in >= opts_.max_connections_pending_login || conns_.size() >= opts_.max_sessions + opts_.max_connections_pending_login) {
    log_.Warn("refusing connection from " + env.peer_addr + ": too many connections");
    ::close(fd);
    return;
  }
  env.nexus_id = next_nexus_++;
  env.log = log_.Child(env.peer_addr);
  const std::string peer_name = env.peer_addr;
  auto conn = std::make_shared<Connection>(fd, std::move(env));
  conns_.push_back(Slot{conn, std::thread(), false});
  Slot* slot = &conns_.back();
  try {
    slot->thread = std::thread([this, conn, slot] {
      conn->Run();
      std::lock_guard<std::mutex> g(mu_);
      slot->done = true;
      cv_.notify_all();
      if (wake_[1] >= 0) {
        char c = 0;
        [[maybe_unused]] ssize_t n = ::write(wake_[1], &c, 1);
      }
    });
  } catch (const std::system_error& e) {
    // Out of threads: refuse this initiator (it retries its login) rather
    // than end the process and every other session with it.
    log_.Warn("refusing connection from " + peer_name + ": cannot start its thread: " + e.what());
    conns_.pop_back();  // the connection's destructor closes the socket
  }
}

uint16_t IscsiServer::Impl::AllocateTsih() {
  std::lock_guard<std::mutex> g(mu_);
  size_t sessions = 0;
  for (const auto& s : conns_)
    if (s.conn->full_feature() && !s.conn->finished()) ++sessions;
  if (sessions >= opts_.max_sessions) return 0;
  for (int tries = 0; tries < 65536; ++tries) {
    uint16_t t = next_tsih_++;
    if (next_tsih_ == 0) next_tsih_ = 1;
    if (t == 0) continue;
    bool used = false;
    for (const auto& s : conns_)
      if (s.conn->full_feature() && !s.conn->finished() && s.conn->tsih() == t) used = true;
    if (!used) return t;
  }
  return 0;
}

bool IscsiServer::Impl::TsihExists(uint16_t tsih) {
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& s : conns_)
    if (s.conn->full_feature() && !s.conn->finished() && s.conn->tsih() == tsih) return true;
  return false;
}

void IscsiServer::Impl::EnteredFullFeature(const std::shared_ptr<Connection>& c) {
  if (c->discovery()) return;
  std::vector<std::shared_ptr<Connection>> old;
  {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& s : conns_) {
      const auto& o = s.conn;
      if (o != c && o->full_feature() && !o->finished() && !o->discovery() && o->isid() == c->isid() &&
          o->initiator_name() == c->initiator_name() && o->target_iqn() == c->target_iqn())
        old.push_back(o);
    }
  }
  // Session reinstatement (RFC 7143 §6.3.5): the old session ends before the new one works.
  for (auto& o : old) {
    log_.Info("reinstating session of " + c->initiator_name() + " to " + c->target_iqn() + " (tsih " +
              std::to_string(o->tsih()) + " closed)");
    o->Close();
  }
  std::unique_lock<std::mutex> g(mu_);
  cv_.wait_for(g, std::chrono::seconds(10), [&old] {
    return std::all_of(old.begin(), old.end(), [](const auto& o) { return o->finished(); });
  });
}

std::vector<std::string> IscsiServer::Impl::Portals(const std::string& local_ip) {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<std::string> out;
  for (const auto& l : listeners_) {
    std::string host = l.addr.host;
    if (host == "0.0.0.0" || host == "::") host = local_ip;
    bool v6 = host.find(':') != std::string::npos;
    std::string a = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(l.addr.port);
    if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
  }
  return out;
}

IscsiServer::IscsiServer(IscsiServerOptions opts, std::shared_ptr<TargetDirectory> directory, Logger log)
    : impl_(std::make_unique<Impl>(std::move(opts), std::move(directory), std::move(log))) {}
IscsiServer::~IscsiServer() { impl_->Stop(); }
Status IscsiServer::Start() { return impl_->Start(); }
void IscsiServer::Stop() { impl_->Stop(); }
std::vector<HostPort> IscsiServer::BoundAddresses() const { return impl_->Bound(); }
std::vector<SessionInfo> IscsiServer::Sessions() const { return impl_->Sessions(); }
size_t IscsiServer::DropTarget(const std::string& iqn) {
  return impl_->ForTarget(iqn, [](Connection& c) { c.Close(); });
}
size_t IscsiServer::SendAsync(const std::string& iqn, AsyncEvent event, uint64_t lun,
                              const std::vector<uint8_t>& sense, uint16_t p1, uint16_t p2, uint16_t p3) {
  return impl_->ForTarget(iqn, [&](Connection& c) { c.SendAsync(event, lun, sense, p1, p2, p3); });
}
size_t IscsiServer::RequestLogout(const std::string& iqn, uint16_t seconds) {
  return SendAsync(iqn, AsyncEvent::kRequestLogout, 0, {}, 0, 0, seconds);
}

}  // namespace ferry::iscsi
