// HttpClient: one blocking HTTP(S) request with a timeout and the Ferry token.
//
// Promise: never throws; a transport failure or timeout is a non-ok Status
// (kUnavailable / kTimeout); any HTTP answer, 4xx/5xx included, is a value.
// Thread-safe: each call opens its own connection.
#pragma once

#include <chrono>
#include <map>
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
  };
  HttpClient() = default;
  explicit HttpClient(Options o) : opts_(std::move(o)) {}

  // url: "http://host:port/path?query" or "https://...". body sent as JSON when non-empty.
  Result<HttpReply> Do(const std::string& method, const std::string& url,
                       const std::string& body = "") const;
  Result<HttpReply> Get(const std::string& url) const { return Do("GET", url); }
  Result<HttpReply> Post(const std::string& url, const std::string& body) const { return Do("POST", url, body); }
  Result<HttpReply> Put(const std::string& url, const std::string& body = "") const { return Do("PUT", url, body); }
  Result<HttpReply> Delete(const std::string& url, const std::string& body = "") const { return Do("DELETE", url, body); }

 private:
  Options opts_;
};

// Percent-encodes a query-string component.
std::string UrlEncode(const std::string& s);

}  // namespace ferry
