#include "bench/httpload/http_connection.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bench/httpload/response_parser.h"

namespace ferry::httpload {

namespace {

std::string Errno(int err) { return std::strerror(err); }

// Waits until fd is ready for `events` or the deadline passes.
Status WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Status::Timeout("no answer within the timeout");
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left > 1000000 ? 1000000 : left));
    if (r > 0) return Status::Ok();
    if (r < 0 && errno != EINTR) return Status::IoError("poll: " + Errno(errno));
  }
}

bool IsBrokenErrno(int err) { return err == EPIPE || err == ECONNRESET || err == ECONNABORTED || err == ENOTCONN; }

}  // namespace

Result<Endpoint> Endpoint::Resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) return Status::InvalidArgument("cannot resolve '" + host + "': " + gai_strerror(rc));
  Endpoint ep;
  std::memcpy(&ep.addr, res->ai_addr, res->ai_addrlen);
  ep.addr_len = static_cast<socklen_t>(res->ai_addrlen);
  ::freeaddrinfo(res);
  bool v6 = host.find(':') != std::string::npos;
  ep.host_header = (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  return ep;
}

void HttpConnection::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Status HttpConnection::Connect(Clock::time_point deadline) {
  Close();
  int fd = ::socket(ep_.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::IoError("socket: " + Errno(errno));
  auto fail = [&](Status s) {
    ::close(fd);
    return s;
  };
  std::string where = "connect to " + ep_.host_header + ": ";
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&ep_.addr), ep_.addr_len) != 0) {
    if (errno != EINPROGRESS) return fail(Status::Unavailable(where + Errno(errno)));
    Status w = WaitFor(fd, POLLOUT, deadline);
    if (!w.ok()) return fail(w.code() == Status::Code::kTimeout ? Status::Timeout(where + "timed out") : w);
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return fail(Status::Unavailable(where + Errno(err)));
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) return fail(Status::IoError("fcntl: " + Errno(errno)));
  int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    return fail(Status::IoError("TCP_NODELAY: " + Errno(errno)));
  fd_ = fd;
  return Status::Ok();
}

Status HttpConnection::SendAll(const std::string& data, Clock::time_point deadline, bool* broken) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd_, data.data() + sent, data.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      FERRY_RETURN_IF_ERROR(WaitFor(fd_, POLLOUT, deadline));
      continue;
    }
    *broken = n < 0 && IsBrokenErrno(errno);
    return Status::Unavailable("send: " + Errno(n < 0 ? errno : EPIPE));
  }
  return Status::Ok();
}

Result<Reply> HttpConnection::Attempt(const std::string& request, bool head_request, Clock::time_point deadline,
                                      bool* broken) {
  *broken = false;
  if (fd_ < 0) FERRY_RETURN_IF_ERROR(Connect(deadline));
  FERRY_RETURN_IF_ERROR(SendAll(request, deadline, broken));
  ResponseParser parser(head_request);
  char buf[65536];
  while (parser.state() == ResponseParser::State::kNeedMore) {
    FERRY_RETURN_IF_ERROR(WaitFor(fd_, POLLIN, deadline));
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      size_t used = parser.Feed(buf, static_cast<size_t>(n));
      if (used < static_cast<size_t>(n) && parser.state() == ResponseParser::State::kDone)
        return Status::IoError("bad response: bytes after the end of the response");
    } else if (n == 0) {
      parser.FeedEof();
      if (parser.state() == ResponseParser::State::kError) {
        *broken = true;
        return Status::Unavailable(parser.error());
      }
    } else if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) {
      continue;
    } else {
      *broken = IsBrokenErrno(errno);
      return Status::Unavailable("recv: " + Errno(errno));
    }
  }
  if (parser.state() == ResponseParser::State::kError) return Status::IoError("bad response: " + parser.error());
  if (!parser.keep_alive()) Close();
  return Reply{parser.status(), parser.body()};
}

Result<Reply> HttpConnection::Exchange(const std::string& request, bool head_request, Clock::time_point deadline) {
  bool broken = false;
  Result<Reply> r = Attempt(request, head_request, deadline, &broken);
  if (!r.ok() && broken) {
    Close();
    r = Attempt(request, head_request, deadline, &broken);
  }
  if (!r.ok()) Close();
  return r;
}

}  // namespace ferry::httpload
