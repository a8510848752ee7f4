// HttpServer: a small JSON-over-HTTP(S) server on Poco with a route table.
//
// Promise: handlers are plain functions Request -> Response and never see Poco.
// The server owns its thread pool and queue (sized by Options; Poco's shared
// default pool is never used), counts connections refused because the queue was
// full, rejects bodies over max_body_bytes with 413, answers unknown paths with
// 404 and known paths with the wrong method with 405, always as JSON
// {"error": "..."}. When a token is set, every route marked `mutating` (and any
// route marked `auth`) requires `X-Ferry-Token: T` or `Authorization: Bearer T`,
// else 401. A handler that throws gets a 500 JSON error; the server stays up.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "target/common/logger.h"
#include "target/common/status.h"

namespace Poco::Net {
class HTTPServer;
}

namespace ferry {

struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // decoded path, no query
  std::map<std::string, std::string> query;    // decoded query parameters
  std::map<std::string, std::string> params;   // path parameters from "{name}" segments
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string peer;                            // client address "ip:port"

  // Query parameter or "" when absent.
  std::string Query(const std::string& k) const {
    auto it = query.find(k);
    return it == query.end() ? std::string() : it->second;
  }
  bool HasQuery(const std::string& k) const { return query.count(k) != 0; }
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";

  static HttpResponse Json(int status, std::string body) { return {status, std::move(body), "application/json"}; }
  static HttpResponse Text(int status, std::string body) { return {status, std::move(body), "text/plain; version=0.0.4"}; }
  // {"error": msg} with the Status's HTTP code.
  static HttpResponse Error(const Status& s);
  static HttpResponse Error(int status, const std::string& msg);
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 0;            // 0 = pick a free port (see port())
    std::string token;            // empty = no auth
    int threads = 8;              // worker threads
    int queue = 256;              // accepted connections waiting for a worker
    size_t max_body_bytes = 1 << 20;
    std::string tls_cert;         // PEM; both set = HTTPS
    std::string tls_key;
    bool reads_need_token = false;  // also require the token on GET routes
  };
  struct RouteOpts {
    bool mutating = false;  // requires the token (when one is configured)
  };

  HttpServer(Options opts, Logger log);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Pattern segments "{name}" match one path segment. GET/HEAD/DELETE/PUT/POST...
  // By default POST/PUT/DELETE/PATCH routes are mutating.
  void Route(const std::string& method, const std::string& pattern, HttpHandler h);
  void Route(const std::string& method, const std::string& pattern, HttpHandler h, RouteOpts o);

  Status Start();
  void Stop();
  uint16_t port() const { return bound_port_; }
  uint64_t refused() const;  // connections dropped because the queue was full
  uint64_t requests() const { return requests_.load(); }

  // Dispatches without a socket (used by tests of handlers and by the server itself).
  HttpResponse Dispatch(HttpRequest& req) const;

 private:
  struct RouteEntry {
    std::string method;
    std::vector<std::string> segments;
    HttpHandler handler;
    bool mutating;
  };
  bool Authorized(const HttpRequest& req) const;

  class Factory;
  Options opts_;
  Logger log_;
  std::vector<RouteEntry> routes_;
  std::unique_ptr<Poco::Net::HTTPServer> server_;
  struct PoolHolder;
  std::unique_ptr<PoolHolder> pool_;
  uint16_t bound_port_ = 0;
  mutable std::atomic<uint64_t> requests_{0};
};

// JSON helpers so handlers need not touch Poco directly.
std::string JsonEscape(const std::string& s);  // returns a quoted JSON string

}  // namespace ferry
