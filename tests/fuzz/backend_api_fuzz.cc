// libFuzzer target: arbitrary requests into ferry-backend's two HTTP APIs
// (v1 and tgtmaster-compatible) through HttpServer::Dispatch, over a real
// SQLite map. Peers are all unreachable (every call fails), so the paths
// exercised are parsing, validation, the map and error rendering.
// Input: byte 0 picks the method; then "path\nquery\nbody".
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "backend/api.h"
#include "backend/backend.h"
#include "backend/events.h"
#include "db/database.h"

namespace {

using namespace ferry;
using namespace ferry::backend;

class NoPeers : public PeerApi {
  static Status Down() { return Status::Unavailable("fuzz: no peers"); }
 public:
  Result<VolInfo> GwCreateVolume(const std::string&, const std::string&, int64_t, const std::string&,
                                 const std::string&) override { return Down(); }
  Result<VolInfo> GwGetVolume(const std::string&, const std::string&) override { return Down(); }
  Status GwDeleteVolume(const std::string&, const std::string&) override { return Down(); }
  Result<VolInfo> GwExtend(const std::string&, const std::string&, int64_t) override { return Down(); }
  Status GwCreateSnapshot(const std::string&, const std::string&, const std::string&) override { return Down(); }
  Status GwDeleteSnapshot(const std::string&, const std::string&, const std::string&) override { return Down(); }
  Status GwRevert(const std::string&, const std::string&, const std::string&) override { return Down(); }
  Result<int64_t> GwFence(const std::string&, const std::string&, int64_t) override { return Down(); }
  Result<int64_t> TgtCreateTarget(const std::string&, const std::string&, const TargetAccess&) override {
    return Down();
  }
  Status TgtSetAcl(const std::string&, const std::string&, const std::vector<std::string>&) override {
    return Down();
  }
  Status TgtSetChap(const std::string&, const std::string&, const std::string&, const std::string&) override {
    return Down();
  }
  Status TgtDeleteTarget(const std::string&, const std::string&) override { return Down(); }
  Result<LunInfo> TgtAddLun(const std::string&, const std::string&, const LunSpec&) override { return Down(); }
  Status TgtDeleteLun(const std::string&, const std::string&, int64_t) override { return Down(); }
  Result<int64_t> TgtResize(const std::string&, const std::string&) override { return Down(); }
  Status TgtSwitchable(const std::string&, const std::string&, bool) override { return Down(); }
  Status TgtSetTimeout(const std::string&, const std::string&, int64_t) override { return Down(); }
  Status TgtSetFixed(const std::string&, const std::string&) override { return Down(); }
  Status TgtClearFixed(const std::string&) override { return Down(); }
  Result<std::string> TgtStatusJson(const std::string&) override { return Down(); }
  Result<std::string> TgtSessionsJson(const std::string&) override { return Down(); }
  Result<std::vector<TargetVolumeStatus>> TgtStatus(const std::string&) override { return Down(); }
};

struct World {
  std::unique_ptr<db::Database> db;
  std::unique_ptr<EventLog> log;
  NoPeers peers;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<HttpServer> server;
  World() {
    char tmpl[] = "/tmp/ferry_backend_fuzz.XXXXXX";
    std::string dir = mkdtemp(tmpl);
    auto d = db::Database::Open(dir + "/map.db");
    if (!d.ok()) abort();
    db = std::move(d).value();
    log = std::make_unique<EventLog>(db.get());
    backend = std::make_unique<Backend>(db.get(), log.get(), &peers, BackendOptions{}, Logger("fuzz", LogLevel::kError));
    server = std::make_unique<HttpServer>(HttpServer::Options{}, Logger("fuzz", LogLevel::kError));
    RegisterV1Routes(*server, *backend, ApiOptions{});
    RegisterCompatRoutes(*server, *backend, ApiOptions{});
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static World* w = new World();
  if (size < 1) return 0;
  static const char* kMethods[] = {"GET", "POST", "PUT", "DELETE"};
  HttpRequest r;
  r.method = kMethods[data[0] % 4];
  std::string rest(reinterpret_cast<const char*>(data + 1), size - 1);
  size_t a = rest.find('\n');
  r.path = rest.substr(0, a);
  std::string query, body;
  if (a != std::string::npos) {
    size_t b = rest.find('\n', a + 1);
    query = rest.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    if (b != std::string::npos) body = rest.substr(b + 1);
  }
  size_t pos = 0;
  while (pos <= query.size() && !query.empty()) {
    size_t amp = query.find('&', pos);
    std::string kv = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    size_t eq = kv.find('=');
    r.query[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (amp == std::string::npos) break;
    pos = amp + 1;
  }
  r.body = body;
  HttpResponse out = w->server->Dispatch(r);
  if (out.status < 200 || out.status > 599) abort();
  return 0;
}
