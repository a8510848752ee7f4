#include "target/gateway/nbd_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace ferry::gateway {

NbdServer::NbdServer(store::Store* store, Options opts, Logger log)
    : store_(store), opts_(std::move(opts)), log_(std::move(log)), zeros_(1 << 20, '\0') {}

NbdServer::~NbdServer() { Stop(); }

Status NbdServer::Start() {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  struct addrinfo* res = nullptr;
  std::string port = std::to_string(opts_.port);
  int rc = ::getaddrinfo(opts_.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) return Status::InvalidArgument("cannot resolve " + opts_.host + ": " + gai_strerror(rc));
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ::freeaddrinfo(res);
    return Status::FromErrno(errno, "socket");
  }
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
    int err = errno;
    ::freeaddrinfo(res);
    ::close(fd);
    return Status::Unavailable("cannot listen on " + opts_.host + ":" + port + ": " + std::strerror(err));
  }
  ::freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  listen_fd_ = fd;
  pool_ = std::make_unique<WorkerPool>(opts_.io_threads);
  acceptor_ = std::thread([this] { AcceptLoop(); });
  log_.Info("NBD listening on " + opts_.host + ":" + std::to_string(port_) + " (at most " +
            std::to_string(opts_.max_connections) + " connections)");
  return Status::Ok();
}

void NbdServer::AcceptLoop() {
  while (!stopping_) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) break;
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        log_.Warn(std::string("accept: ") + std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // back off; no condition to poll
        continue;
      }
      if (errno == EINVAL) break;  // listener shut down
      log_.Warn(std::string("accept: ") + std::strerror(errno));
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char host[INET6_ADDRSTRLEN] = "?";
    uint16_t port = 0;
    if (ss.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      port = ntohs(a->sin6_port);
    }
    std::string peer = std::string(host) + ":" + std::to_string(port);
    std::unique_lock<std::mutex> l(mu_);
    if (threads_ >= opts_.max_connections) {
      l.unlock();
      log_.Warn("refusing " + peer + ": " + std::to_string(opts_.max_connections) + " connections already");
      ::close(fd);
      continue;
    }
    auto c = std::make_shared<NbdConnection>(fd, peer, store_, pool_.get(), &zeros_, opts_.conn,
                                             log_.Child("conn"));
    conns_.insert(c);
    ++threads_;
    l.unlock();
    try {
      std::thread([this, c] { RunConnection(c); }).detach();
    } catch (const std::system_error& e) {
      // Out of threads (ulimit -u, kernel.threads-max, vm.max_map_count):
      // refuse this client as if at max_connections rather than die.
      log_.Warn("refusing " + peer + ": cannot start its thread: " + e.what());
      std::lock_guard<std::mutex> g(mu_);
      conns_.erase(c);
      --threads_;
      cv_.notify_all();
    }
  }
}

void NbdServer::RunConnection(std::shared_ptr<NbdConnection> c) {
  c->Run();
  std::lock_guard<std::mutex> l(mu_);
  conns_.erase(c);
  c.reset();
  --threads_;
  cv_.notify_all();
}

int NbdServer::connections() const {
  std::lock_guard<std::mutex> l(mu_);
  return threads_;
}

void NbdServer::Stop() {
  if (listen_fd_ < 0) return;
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  listen_fd_ = -1;
  {
    std::unique_lock<std::mutex> l(mu_);
    for (auto& c : conns_) c->Shutdown();
    if (!cv_.wait_for(l, std::chrono::seconds(10), [this] { return threads_ == 0; })) {
      log_.Warn("stop: " + std::to_string(threads_) + " connections did not finish in 10 s");
    }
  }
  if (threads_ == 0 && pool_) pool_->Stop();
}

}  // namespace ferry::gateway
