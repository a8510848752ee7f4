// HttpClient: one blocking HTTP(S) request with a timeout and the Ferry token.
//
// Promise: never throws; a transport failure or timeout is a non-ok Status
// (kUnavailable / kTimeout); any HTTP answer, 4xx/5xx included, is a value.
// Thread-safe. By default each call opens its own connection; with
// keep_alive_idle > 0, connections the server keeps open are reused (at most
// keep_alive_idle idle ones per host, each for keep_alive_for). A request that
// fails on a reused connection is sent again on a new one only when it is
// idempotent (GET, HEAD, PUT, DELETE): a POST is never sent twice.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "target/common/status.h"

namespace ferry {

struct HttpReply {
  int status = 0;
  std::string body;
};

class HttpClient {
 public:
  struct Options {
    std::string token;                                   // sent as X-Ferry-Token when non-empty
    std::chrono::milliseconds timeout{5000};
    bool verify_tls = false;                             // loopback/self-signed by default
    std::string ca_file;                                 // when verify_tls
    size_t keep_alive_idle = 0;                          // idle connections kept per host (0: none)
    std::chrono::milliseconds keep_alive_for{2000};      // below the servers' keep-alive timeout
  };
  HttpClient();
  explicit HttpClient(Options o);
  ~HttpClient();

  // url: "http://host:port/path?query" or "https://...". body sent as JSON when non-empty.
  Result<HttpReply> Do(const std::string& method, const std::string& url,
                       const std::string& body = "") const;
  Result<HttpReply> Get(const std::string& url) const { return Do("GET", url); }
  Result<HttpReply> Post(const std::string& url, const std::string& body) const { return Do("POST", url, body); }
  Result<HttpReply> Put(const std::string& url, const std::string& body = "") const { return Do("PUT", url, body); }
  Result<HttpReply> Delete(const std::string& url, const std::string& body = "") const { return Do("DELETE", url, body); }

 private:
  class Pool;
  Options opts_;
  std::shared_ptr<Pool> pool_;
};

// Percent-encodes a query-string component.
std::string UrlEncode(const std::string& s);

}  // namespace ferry
