// HttpConnection: one keep-alive HTTP/1.1 connection to one server, used by
// one thread at a time.
//
// Promise: Exchange() sends one ready-made request and reads its whole
// response before the deadline, or returns an error and never waits past it.
// The socket is a plain blocking TCP socket with TCP_NODELAY; every wait is a
// poll() bounded by the deadline. When the kept-alive connection turns out to
// be closed or broken (the send fails, or the peer closes before the response
// is complete), it reconnects once and sends the request again; a second
// failure is returned. A timeout or a malformed response is returned at once
// and closes the connection, so the next request starts on a fresh one.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <string>

#include "target/common/status.h"

namespace ferry::httpload {

using Clock = std::chrono::steady_clock;

// A resolved server address and the Host header that names it.
struct Endpoint {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::string host_header;  // "host:port"

  // Resolves host (a name or a numeric address) and port.
  static Result<Endpoint> Resolve(const std::string& host, uint16_t port);
};

struct Reply {
  int status = 0;
  std::string body;
};

class HttpConnection {
 public:
  explicit HttpConnection(const Endpoint& ep) : ep_(ep) {}
  ~HttpConnection() { Close(); }
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // Opens the connection now (Exchange() opens it itself when needed).
  Status Connect(Clock::time_point deadline);
  Result<Reply> Exchange(const std::string& request, bool head_request, Clock::time_point deadline);
  void Close();
  bool connected() const { return fd_ >= 0; }

 private:
  // One try on the current connection. `*broken` tells a closed or broken
  // connection (worth one retry) from other failures.
  Result<Reply> Attempt(const std::string& request, bool head_request, Clock::time_point deadline, bool* broken);
  Status SendAll(const std::string& data, Clock::time_point deadline, bool* broken);

  const Endpoint& ep_;
  int fd_ = -1;
};

}  // namespace ferry::httpload
