// HTTP handlers of ferry-backend: the v1 API (Cinder driver, ferryctl) and
// the tgtmaster-compatible API, registered on a ferry::HttpServer.
//
// Promise: handlers are thin — parse and validate the request, call Backend,
// render JSON (indented when ?pretty=y). Every error is {"error": "..."} with
// a fitting status. Mutating calls need the token (the compatibility API's
// GET /sys/iscsi mutations included); read-only queries are open.
#pragma once

#include <string>

#include "backend/backend.h"
#include "target/common/http_server.h"

namespace ferry::backend {

struct ApiOptions {
  std::string token;  // "" = no auth
};

void RegisterV1Routes(HttpServer& server, Backend& backend, const ApiOptions& opts);
void RegisterCompatRoutes(HttpServer& server, Backend& backend, const ApiOptions& opts);

}  // namespace ferry::backend
