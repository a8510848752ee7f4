// AdminApi: the ferry-target's admin HTTP API (docs/target.md), as thin
// handlers over the Registry: parse and validate JSON, call, render.
//
// Promise: every error is JSON {"error": "..."} with 400 (bad input), 404
// (unknown target/LUN/volume), 409 (conflict), 502/503 (gateway unreachable)
// or 500; a rejected call changes nothing. Mutating routes need the token when
// one is configured (ferry::HttpServer enforces it). Secrets never appear in
// any answer.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "target/common/http_server.h"
#include "target/iscsi/portal.h"
#include "target/server/registry.h"

namespace ferry::server {

class AdminApi {
 public:
  struct Info {
    std::vector<std::string> portals;  // "ip:port" as bound
    std::string admin;                 // "ip:port" as bound
  };
  using SessionSource = std::function<std::vector<iscsi::SessionInfo>()>;

  AdminApi(Registry* registry, SessionSource sessions);
  void SetInfo(Info info) { info_ = std::move(info); }
  // Adds every route to `server` (before Start()).
  void Install(HttpServer* server);

  HttpResponse Healthz(const HttpRequest& r) const;
  HttpResponse ListTargets(const HttpRequest& r) const;
  HttpResponse GetTarget(const HttpRequest& r) const;
  HttpResponse CreateTarget(const HttpRequest& r);
  HttpResponse DeleteTarget(const HttpRequest& r);
  HttpResponse PutAcl(const HttpRequest& r);
  HttpResponse PutChap(const HttpRequest& r);
  HttpResponse AddLun(const HttpRequest& r);
  HttpResponse RemoveLun(const HttpRequest& r);
  HttpResponse Resize(const HttpRequest& r);
  HttpResponse Switchable(const HttpRequest& r);
  HttpResponse GetTimeouts(const HttpRequest& r) const;
  HttpResponse PutTimeouts(const HttpRequest& r);
  HttpResponse GetFixedMode(const HttpRequest& r) const;
  HttpResponse PutFixedMode(const HttpRequest& r);
  HttpResponse DeleteFixedMode(const HttpRequest& r);
  HttpResponse GetStatus(const HttpRequest& r) const;
  HttpResponse GetSessions(const HttpRequest& r) const;

 private:
  Registry* reg_;
  SessionSource sessions_;
  Info info_;
};

}  // namespace ferry::server
