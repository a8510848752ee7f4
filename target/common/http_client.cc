#include "target/common/http_client.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/Exception.h>
#include <Poco/URI.h>

#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace ferry {

std::string UrlEncode(const std::string& s) {
  std::string out;
  Poco::URI::encode(s, "!#$&'()*+,/:;=?@[]%", out);
  return out;
}

// Idle kept-alive sessions by "scheme://host:port".
class HttpClient::Pool {
 public:
  explicit Pool(size_t max_idle) : max_idle_(max_idle) {}
  std::unique_ptr<Poco::Net::HTTPClientSession> Take(const std::string& key) {
    std::lock_guard<std::mutex> l(mu_);
    auto& v = idle_[key];
    if (v.empty()) return nullptr;
    auto s = std::move(v.back());
    v.pop_back();
    return s;
  }
  void Give(const std::string& key, std::unique_ptr<Poco::Net::HTTPClientSession> s) {
    std::lock_guard<std::mutex> l(mu_);
    auto& v = idle_[key];
    if (v.size() < max_idle_) v.push_back(std::move(s));
  }

 private:
  size_t max_idle_;
  std::mutex mu_;
  std::map<std::string, std::vector<std::unique_ptr<Poco::Net::HTTPClientSession>>> idle_;
};

HttpClient::HttpClient() = default;
HttpClient::HttpClient(Options o) : opts_(std::move(o)) {
  if (opts_.keep_alive_idle > 0) pool_ = std::make_shared<Pool>(opts_.keep_alive_idle);
}
HttpClient::~HttpClient() = default;

namespace {

bool Idempotent(const std::string& method) {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE";
}

}  // namespace

Result<HttpReply> HttpClient::Do(const std::string& method, const std::string& url,
                                 const std::string& body) const {
  try {
    Poco::URI uri(url);
    if (uri.getScheme() != "https" && uri.getScheme() != "http")
      return Status::InvalidArgument("unsupported URL scheme in " + url);
    const std::string key = uri.getScheme() + "://" + uri.getHost() + ":" + std::to_string(uri.getPort());
    auto fresh = [&]() -> std::unique_ptr<Poco::Net::HTTPClientSession> {
      std::unique_ptr<Poco::Net::HTTPClientSession> session;
      if (uri.getScheme() == "https") {
        Poco::Net::Context::Ptr ctx = new Poco::Net::Context(
            Poco::Net::Context::TLS_CLIENT_USE, "", "", opts_.ca_file,
            opts_.verify_tls ? Poco::Net::Context::VERIFY_RELAXED : Poco::Net::Context::VERIFY_NONE);
        session = std::make_unique<Poco::Net::HTTPSClientSession>(uri.getHost(), uri.getPort(), ctx);
      } else {
        session = std::make_unique<Poco::Net::HTTPClientSession>(uri.getHost(), uri.getPort());
      }
      Poco::Timespan t(static_cast<long>(opts_.timeout.count() / 1000),
                       static_cast<long>((opts_.timeout.count() % 1000) * 1000));
      session->setTimeout(t);
      if (pool_) {
        session->setKeepAlive(true);
        session->setKeepAliveTimeout(Poco::Timespan(
            static_cast<long>(opts_.keep_alive_for.count() / 1000),
            static_cast<long>((opts_.keep_alive_for.count() % 1000) * 1000)));
      }
      return session;
    };
    std::string path = uri.getPathEtc();
    if (path.empty()) path = "/";
    std::unique_ptr<Poco::Net::HTTPClientSession> session = pool_ ? pool_->Take(key) : nullptr;
    bool reused = session != nullptr;
    if (!session) session = fresh();
    for (;;) {
      try {
        Poco::Net::HTTPRequest req(method, path, Poco::Net::HTTPMessage::HTTP_1_1);
        if (!opts_.token.empty()) req.set("X-Ferry-Token", opts_.token);
        if (!body.empty()) req.setContentType("application/json");
        req.setContentLength64(static_cast<Poco::Int64>(body.size()));
        std::ostream& os = session->sendRequest(req);
        os << body;
        Poco::Net::HTTPResponse resp;
        std::istream& is = session->receiveResponse(resp);
        HttpReply r;
        r.status = static_cast<int>(resp.getStatus());
        // Straight into the string, sized from Content-Length when there is
        // one (a target's status for 1,000 LUNs is ~335 KB).
        if (resp.hasContentLength()) {
          const auto n = resp.getContentLength64();
          if (n > 0 && n <= (64ll << 20)) r.body.reserve(static_cast<size_t>(n));
        }
        char chunk[64 * 1024];
        while (is.read(chunk, sizeof chunk) || is.gcount() > 0) r.body.append(chunk, static_cast<size_t>(is.gcount()));
        if (pool_ && resp.getKeepAlive()) pool_->Give(key, std::move(session));
        return r;
      } catch (const Poco::TimeoutException&) {
        throw;  // a slow server is not a stale connection: never re-send
      } catch (const Poco::Exception&) {
        // The server may have closed a kept-alive connection while it was idle.
        if (!reused || !Idempotent(method)) throw;
        reused = false;
        session = fresh();
      }
    }
  } catch (const Poco::TimeoutException& e) {
    return Status::Timeout(method + " " + url + ": " + e.displayText());
  } catch (const Poco::Exception& e) {
    return Status::Unavailable(method + " " + url + ": " + e.displayText());
  } catch (const std::exception& e) {
    return Status::Unavailable(method + " " + url + ": " + e.what());
  }
}

}  // namespace ferry
