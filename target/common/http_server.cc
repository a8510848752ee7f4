#include "target/common/http_server.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/ThreadPool.h>
#include <Poco/URI.h>

#include <sstream>

namespace ferry {
namespace {

std::vector<std::string> SplitPath(const std::string& p) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : p) {
    if (c == '/') {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

std::string JsonEscape(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': o += "\\\""; break;
      case '\\': o += "\\\\"; break;
      case '\n': o += "\\n"; break;
      case '\r': o += "\\r"; break;
      case '\t': o += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          snprintf(buf, sizeof buf, "\\u%04x", c);
          o += buf;
        } else {
          o += static_cast<char>(c);
        }
    }
  }
  return o + "\"";
}

HttpResponse HttpResponse::Error(const Status& s) { return Error(s.http_status(), s.message()); }

HttpResponse HttpResponse::Error(int status, const std::string& msg) {
  return Json(status, "{\"error\": " + JsonEscape(msg) + "}");
}

struct HttpServer::PoolHolder {
  explicit PoolHolder(int threads) : pool(2, threads < 2 ? 2 : threads) {}
  Poco::ThreadPool pool;
};

class HttpServer::Factory : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit Factory(const HttpServer* s) : s_(s) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(const Poco::Net::HTTPServerRequest&) override {
    return new Handler(s_);
  }

 private:
  class Handler : public Poco::Net::HTTPRequestHandler {
   public:
    explicit Handler(const HttpServer* s) : s_(s) {}
    void handleRequest(Poco::Net::HTTPServerRequest& rq, Poco::Net::HTTPServerResponse& rs) override {
      HttpResponse out;
      try {
        HttpRequest req;
        req.method = rq.getMethod();
        req.peer = rq.clientAddress().toString();
        Poco::URI uri(rq.getURI());
        req.path = uri.getPath();
        for (const auto& [k, v] : uri.getQueryParameters()) req.query[k] = v;
        for (const auto& [k, v] : rq) req.headers[Lower(k)] = v;
        std::streamsize limit = static_cast<std::streamsize>(s_->opts_.max_body_bytes);
        if (rq.hasContentLength() && rq.getContentLength64() > limit) {
          out = HttpResponse::Error(413, "request body larger than " + std::to_string(limit) + " bytes");
        } else if (!rq.hasContentLength() && !rq.getChunkedTransferEncoding()) {
          // No Content-Length and not chunked (e.g. `curl -X PUT URL`): the body
          // is empty. Reading the stream would wait for the keep-alive timeout.
          out = s_->Dispatch(req);
        } else {
          std::istream& in = rq.stream();
          std::string body;
          char buf[8192];
          bool too_big = false;
          while (in.read(buf, sizeof buf) || in.gcount() > 0) {
            body.append(buf, static_cast<size_t>(in.gcount()));
            if (static_cast<std::streamsize>(body.size()) > limit) {
              too_big = true;
              break;
            }
          }
          if (too_big) {
            out = HttpResponse::Error(413, "request body larger than " + std::to_string(limit) + " bytes");
          } else {
            req.body = std::move(body);
            out = s_->Dispatch(req);
          }
        }
      } catch (const std::exception& e) {
        out = HttpResponse::Error(400, std::string("bad request: ") + e.what());
      }
      rs.setStatus(static_cast<Poco::Net::HTTPResponse::HTTPStatus>(out.status));
      rs.setContentType(out.content_type);
      // Header and body in two socket writes: through rs.send()'s stream the
      // body went out in 4 KiB send() calls (86 for a 350 KB status answer).
      rs.sendBuffer(out.body.data(), out.body.size());
    }

   private:
    const HttpServer* s_;
  };
  const HttpServer* s_;
};

HttpServer::HttpServer(Options opts, Logger log) : opts_(std::move(opts)), log_(std::move(log)) {}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Route(const std::string& method, const std::string& pattern, HttpHandler h) {
  RouteOpts o;
  o.mutating = method != "GET" && method != "HEAD";
  Route(method, pattern, std::move(h), o);
}

void HttpServer::Route(const std::string& method, const std::string& pattern, HttpHandler h,
                       RouteOpts o) {
  routes_.push_back({method, SplitPath(pattern), std::move(h), o.mutating});
}

bool HttpServer::Authorized(const HttpRequest& req) const {
  if (opts_.token.empty()) return true;
  auto it = req.headers.find("x-ferry-token");
  if (it != req.headers.end() && it->second == opts_.token) return true;
  it = req.headers.find("authorization");
  if (it != req.headers.end() && it->second == "Bearer " + opts_.token) return true;
  return false;
}

HttpResponse HttpServer::Dispatch(HttpRequest& req) const {
  requests_.fetch_add(1, std::memory_order_relaxed);
  std::vector<std::string> segs = SplitPath(req.path);
  bool path_matched = false;
  for (const auto& r : routes_) {
    if (r.segments.size() != segs.size()) continue;
    std::map<std::string, std::string> params;
    bool match = true;
    for (size_t i = 0; i < segs.size() && match; ++i) {
      const std::string& p = r.segments[i];
      if (p.size() > 2 && p.front() == '{' && p.back() == '}')
        params[p.substr(1, p.size() - 2)] = segs[i];
      else
        match = p == segs[i];
    }
    if (!match) continue;
    path_matched = true;
    if (r.method != req.method) continue;
    if ((r.mutating || opts_.reads_need_token) && !Authorized(req))
      return HttpResponse::Error(401, "missing or wrong token (X-Ferry-Token or Authorization: Bearer)");
    req.params = std::move(params);
    try {
      return r.handler(req);
    } catch (const std::exception& e) {
      log_.Error("handler for " + req.method + " " + req.path + " threw: " + e.what());
      return HttpResponse::Error(500, std::string("internal error: ") + e.what());
    }
  }
  if (path_matched) return HttpResponse::Error(405, "method " + req.method + " not allowed on " + req.path);
  return HttpResponse::Error(404, "no such endpoint: " + req.path);
}

Status HttpServer::Start() {
  try {
    Poco::Net::SocketAddress addr(opts_.host, opts_.port);
    std::unique_ptr<Poco::Net::ServerSocket> sock;
    if (!opts_.tls_cert.empty() && !opts_.tls_key.empty()) {
      Poco::Net::Context::Ptr ctx = new Poco::Net::Context(
          Poco::Net::Context::TLS_SERVER_USE, opts_.tls_key, opts_.tls_cert, "",
          Poco::Net::Context::VERIFY_NONE);
      sock = std::make_unique<Poco::Net::SecureServerSocket>(addr, 64, ctx);
    } else {
      sock = std::make_unique<Poco::Net::ServerSocket>(addr, 64);
    }
    bound_port_ = sock->address().port();
    auto* params = new Poco::Net::HTTPServerParams;
    params->setMaxThreads(opts_.threads);
    params->setMaxQueued(opts_.queue);
    params->setKeepAlive(true);
    params->setTimeout(Poco::Timespan(30, 0));
    pool_ = std::make_unique<PoolHolder>(opts_.threads);
    server_ = std::make_unique<Poco::Net::HTTPServer>(new Factory(this), pool_->pool, *sock, params);
    server_->start();
    log_.Info("HTTP" + std::string(opts_.tls_cert.empty() ? "" : "S") + " listening on " +
              opts_.host + ":" + std::to_string(bound_port_));
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Unavailable("cannot listen on " + opts_.host + ":" + std::to_string(opts_.port) +
                               ": " + e.what());
  }
}

void HttpServer::Stop() {
  if (server_) {
    server_->stopAll(true);
    server_.reset();
  }
  if (pool_) {
    pool_->pool.joinAll();
    pool_.reset();
  }
}

uint64_t HttpServer::refused() const {
  return server_ ? static_cast<uint64_t>(server_->refusedConnections()) : 0;
}

}  // namespace ferry
