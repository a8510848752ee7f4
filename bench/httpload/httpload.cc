// ferry-httpload: a closed-loop HTTP/1.1 load generator for the control-plane
// benchmark (bench/control). Wires flags to a LoadRunner and prints its report
// as one JSON object on stdout. All logic lives in LoadRunner, HttpConnection,
// ResponseParser and ItemTemplate.
#include <cctype>
#include <iostream>

#include "bench/httpload/load_runner.h"
#include "target/common/config.h"

namespace {

using ferry::Result;
using ferry::Status;
using namespace ferry::httpload;

const char* kUsage = R"(usage: ferry-httpload --url http://HOST:PORT --path TEMPLATE --count N [flags]
  --url http://HOST:PORT  server to load (plain HTTP)
  --method M              request method (default GET)
  --path TEMPLATE         request path and query, e.g. '/v1/volumes/vol{i:05}'
  --body TEMPLATE         JSON body, e.g. '{"name": "vol{i:05}", "size_gb": 1}' (sent with
                          Content-Type: application/json; without it, Content-Length: 0)
  --token T               sent as X-Ferry-Token
  --clients N             concurrent clients, one keep-alive connection each (default 16)
  --from I --count N      item numbers I .. I+N-1, one request each (default from 0; count required)
  --timeout-ms MS         per-request timeout (default 120000)
  --keep-errors N         how many failed requests to describe in first_errors (default 5)
Templates replace {i} with the item number and {i:0N} with it zero-padded to N digits.
Prints {"n","errors","p50_ms","p90_ms","p99_ms","max_ms","seconds","rps","first_errors"} and
exits 0 when the run happened (errors included); 2 on bad arguments, 1 when it cannot connect.
)";

Result<int64_t> Int(const ferry::Config& cfg, const std::string& key, int64_t def, int64_t lo, int64_t hi) {
  auto v = cfg.GetInt("httpload", key, def);
  if (!v.ok() || *v < lo || *v > hi)
    return Status::InvalidArgument("--" + key + " must be an integer in " + std::to_string(lo) + ".." +
                                   std::to_string(hi));
  return *v;
}

Result<Endpoint> ParseUrl(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return Status::InvalidArgument("--url must start with http:// (got '" + url + "')");
  std::string hostport = url.substr(scheme.size());
  if (!hostport.empty() && hostport.back() == '/') hostport.pop_back();
  if (hostport.find('/') != std::string::npos)
    return Status::InvalidArgument("--url takes no path (put it in --path): '" + url + "'");
  auto hp = ferry::ParseHostPort(hostport);
  if (!hp.ok()) return Status::InvalidArgument("--url: " + hp.status().message());
  return Endpoint::Resolve(hp->host, hp->port);
}

bool IsToken(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  return true;
}

bool HasCtlOrSpace(const std::string& s, bool allow_space) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F || (!allow_space && c == ' ')) return true;
  return false;
}

Result<LoadSpec> BuildSpec(const ferry::Config& cfg) {
  auto get = [&](const std::string& k) { return cfg.Get("httpload", k); };
  if (!cfg.Has("httpload", "url")) return Status::InvalidArgument("--url is required");
  if (!cfg.Has("httpload", "path")) return Status::InvalidArgument("--path is required");
  if (!cfg.Has("httpload", "count")) return Status::InvalidArgument("--count is required");
  LoadSpec spec;
  auto ep = ParseUrl(get("url"));
  if (!ep.ok()) return ep.status();
  spec.endpoint = *ep;
  spec.method = cfg.Get("httpload", "method", "GET");
  if (!IsToken(spec.method)) return Status::InvalidArgument("--method must be a token such as GET or POST");
  std::string path = get("path");
  if (path.empty() || path[0] != '/' || HasCtlOrSpace(path, false))
    return Status::InvalidArgument("--path must start with '/' and contain no spaces or control characters");
  auto pt = ItemTemplate::Parse(path);
  if (!pt.ok()) return Status::InvalidArgument("--path: " + pt.status().message());
  spec.path = *pt;
  if (cfg.Has("httpload", "body")) {
    auto bt = ItemTemplate::Parse(get("body"));
    if (!bt.ok()) return Status::InvalidArgument("--body: " + bt.status().message());
    spec.body = *bt;
  }
  spec.token = get("token");
  if (HasCtlOrSpace(spec.token, true)) return Status::InvalidArgument("--token must not contain control characters");
  auto clients = Int(cfg, "clients", 16, 1, 1024);
  auto from = Int(cfg, "from", 0, 0, int64_t{1} << 50);
  auto count = Int(cfg, "count", 0, 1, int64_t{1} << 30);
  auto timeout = Int(cfg, "timeout_ms", 120000, 1, 86400000);
  auto keep = Int(cfg, "keep_errors", 5, 0, 1000);
  for (const Status* s : {&clients.status(), &from.status(), &count.status(), &timeout.status(), &keep.status()})
    if (!s->ok()) return *s;
  spec.clients = static_cast<int>(*clients);
  spec.from = *from;
  spec.count = *count;
  spec.timeout = std::chrono::milliseconds(*timeout);
  spec.keep_errors = static_cast<int>(*keep);
  return spec;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::Config cfg;
  Status st = cfg.ParseArgs(argc, argv, "httpload",
                            {"url", "method", "path", "body", "token", "clients", "from", "count", "timeout-ms",
                             "keep-errors"});
  if (st.ok() && cfg.Has("httpload", "help")) {
    std::cout << kUsage;
    return 0;
  }
  Result<LoadSpec> spec = st.ok() ? BuildSpec(cfg) : Result<LoadSpec>(st);
  if (!spec.ok()) {
    std::cerr << "ferry-httpload: " << spec.status().message() << " (see --help)\n";
    return 2;
  }
  {  // Fail clearly, before any thread starts, when the server is not there at all.
    HttpConnection probe(spec->endpoint);
    auto limit = std::min(spec->timeout, std::chrono::milliseconds(10000));
    Status c = probe.Connect(Clock::now() + limit);
    if (!c.ok()) {
      std::cerr << "ferry-httpload: cannot connect: " << c.message() << "\n";
      return 1;
    }
  }
  LoadRunner runner(std::move(*spec));
  std::cout << runner.Run().ToJson() << std::endl;
  return 0;
}
