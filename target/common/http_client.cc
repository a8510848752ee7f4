#include "target/common/http_client.h"

#include <Poco/Net/Context.h>
#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/HTTPSClientSession.h>
#include <Poco/Net/NetException.h>
#include <Poco/StreamCopier.h>
#include <Poco/Exception.h>
#include <Poco/URI.h>

#include <memory>
#include <sstream>

namespace ferry {

std::string UrlEncode(const std::string& s) {
  std::string out;
  Poco::URI::encode(s, "!#$&'()*+,/:;=?@[]%", out);
  return out;
}

Result<HttpReply> HttpClient::Do(const std::string& method, const std::string& url,
                                 const std::string& body) const {
  try {
    Poco::URI uri(url);
    std::unique_ptr<Poco::Net::HTTPClientSession> session;
    if (uri.getScheme() == "https") {
      Poco::Net::Context::Ptr ctx = new Poco::Net::Context(
          Poco::Net::Context::TLS_CLIENT_USE, "", "", opts_.ca_file,
          opts_.verify_tls ? Poco::Net::Context::VERIFY_RELAXED : Poco::Net::Context::VERIFY_NONE);
      session = std::make_unique<Poco::Net::HTTPSClientSession>(uri.getHost(), uri.getPort(), ctx);
    } else if (uri.getScheme() == "http") {
      session = std::make_unique<Poco::Net::HTTPClientSession>(uri.getHost(), uri.getPort());
    } else {
      return Status::InvalidArgument("unsupported URL scheme in " + url);
    }
    Poco::Timespan t(static_cast<long>(opts_.timeout.count() / 1000),
                     static_cast<long>((opts_.timeout.count() % 1000) * 1000));
    session->setTimeout(t);
    std::string path = uri.getPathEtc();
    if (path.empty()) path = "/";
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
    std::ostringstream ss;
    Poco::StreamCopier::copyStream(is, ss);
    r.body = ss.str();
    return r;
  } catch (const Poco::TimeoutException& e) {
    return Status::Timeout(method + " " + url + ": " + e.displayText());
  } catch (const Poco::Exception& e) {
    return Status::Unavailable(method + " " + url + ": " + e.displayText());
  } catch (const std::exception& e) {
    return Status::Unavailable(method + " " + url + ": " + e.what());
  }
}

}  // namespace ferry
