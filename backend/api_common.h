// Shared bits of the two HTTP APIs (internal to backend/).
#pragma once

#include <string>

#include "backend/json.h"
#include "target/common/http_server.h"

namespace ferry::backend {

inline bool Pretty(const HttpRequest& r) {
  std::string p = r.Query("pretty");
  return p == "y" || p == "yes" || p == "1" || p == "true";
}
inline HttpResponse Reply(const HttpRequest& r, const JObj& o, int status = 200) {
  return HttpResponse::Json(status, Render(o, Pretty(r)));
}
inline HttpResponse Reply(const HttpRequest& r, const JArr& a, int status = 200) {
  return HttpResponse::Json(status, Render(a, Pretty(r)));
}
inline HttpResponse Fail(const Status& s) { return HttpResponse::Error(s); }
inline bool HasToken(const HttpRequest& r, const std::string& token) {
  if (token.empty()) return true;
  auto it = r.headers.find("x-ferry-token");
  if (it != r.headers.end() && it->second == token) return true;
  it = r.headers.find("authorization");
  return it != r.headers.end() && it->second == "Bearer " + token;
}
inline HttpResponse Unauthorized() {
  return HttpResponse::Error(401, "missing or wrong token (X-Ferry-Token or Authorization: Bearer)");
}

}  // namespace ferry::backend
