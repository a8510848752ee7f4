// Tests of the HTTP handlers through HttpServer::Dispatch (no sockets), with a
// real SQLite file and FakePeers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "backend/api.h"
#include "backend/json.h"
#include "tests/backend/fake_peers.h"

namespace ferry::backend {
namespace {

class ApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry_api_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    auto d = db::Database::Open(dir_ + "/map.db");
    ASSERT_TRUE(d.ok());
    db_ = std::move(d).value();
    log_ = std::make_unique<EventLog>(db_.get());
    Rebuild(BackendOptions{});
  }
  // A new Backend (and routes) with these options on the same database.
  void Rebuild(BackendOptions bo) {
    server_.reset();
    be_ = std::make_unique<Backend>(db_.get(), log_.get(), &peers_, bo, Logger("t", LogLevel::kError));
    HttpServer::Options o;
    o.token = "sekrit";
    server_ = std::make_unique<HttpServer>(o, Logger("t", LogLevel::kError));
    RegisterV1Routes(*server_, *be_, ApiOptions{"sekrit"});
    RegisterCompatRoutes(*server_, *be_, ApiOptions{"sekrit"});
  }
  void TearDown() override {
    server_.reset();
    be_.reset();
    std::filesystem::remove_all(dir_);
  }
  HttpResponse Call(const std::string& method, const std::string& path, const std::string& body = "",
                    bool token = true, std::map<std::string, std::string> query = {}) {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = body;
    r.query = std::move(query);
    if (token) r.headers["x-ferry-token"] = "sekrit";
    return server_->Dispatch(r);
  }
  JObj Obj(const HttpResponse& r) {
    auto o = ParseObject(r.body);
    EXPECT_TRUE(o.ok()) << r.body;
    return o.ok() ? *o : NewObj();
  }
  void Cluster() {
    ASSERT_EQ(Call("PUT", "/tgtmaster/register/gateway", "", true, {{"gateway", "127.0.0.1:8585:8686"}}).status, 200);
    ASSERT_EQ(Call("PUT", "/tgtmaster/register/tgt", "", true,
                   {{"tgt", "127.0.0.2"}, {"port", "3260"}, {"admin", "127.0.0.2:8890"}}).status, 200);
  }
  std::string dir_;
  FakePeers peers_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<Backend> be_;
  std::unique_ptr<HttpServer> server_;
};

TEST_F(ApiTest, RoutingErrorsAreJson) {
  auto r = Call("GET", "/v1/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(Obj(r)->has("error"));
  r = Call("PATCH", "/v1/volumes");
  EXPECT_EQ(r.status, 405);
  EXPECT_TRUE(Obj(r)->has("error"));
  r = Call("POST", "/v1/volumes", R"({"name":"a","size_gb":1})", false);
  EXPECT_EQ(r.status, 401);
  r = Call("GET", "/sys/iscsi", "", false, {{"ops", "add_lun"}, {"name", "a"}});
  EXPECT_EQ(r.status, 401);
  r = Call("PUT", "/tgtmaster/register/gateway", "", false, {{"gateway", "127.0.0.1:1:2"}});
  EXPECT_EQ(r.status, 401);
  // Read-only queries are open.
  EXPECT_EQ(Call("GET", "/v1/volumes", "", false).status, 200);
  EXPECT_EQ(Call("PUT", "/tgtmaster/tgtmap", "", false).status, 200);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", false, {{"ops", "show"}}).status, 200);
}

TEST_F(ApiTest, V1VolumeLifecycleAndBadBodies) {
  Cluster();
  for (const char* bad : {"", "not json", "[1]", R"({"name":1,"size_gb":1})", R"({"name":"a"})",
                          R"({"name":"a","size_gb":"1"})", R"({"name":"a","size_gb":0})",
                          R"({"name":"a","size_gb":1,"source":{}})", R"({"name":"a/b","size_gb":1})"}) {
    auto r = Call("POST", "/v1/volumes", bad);
    EXPECT_EQ(r.status, 400) << bad << " -> " << r.body;
    EXPECT_TRUE(Obj(r)->has("error"));
  }
  EXPECT_EQ(*db_->CountVolumes(), 0);
  auto r = Call("POST", "/v1/volumes", R"({"name":"a","size_gb":2})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(IntOr(Obj(r), "size_gb"), 2);
  EXPECT_EQ(Call("POST", "/v1/volumes", R"({"name":"a","size_gb":2})").status, 200);
  EXPECT_EQ(Call("POST", "/v1/volumes", R"({"name":"a","size_gb":3})").status, 409);
  EXPECT_EQ(Call("GET", "/v1/volumes/a").status, 200);
  EXPECT_EQ(Call("GET", "/v1/volumes/zz").status, 404);
  EXPECT_EQ(Call("POST", "/v1/volumes/a/extend", R"({"size_gb":1})").status, 400);
  r = Call("POST", "/v1/volumes/a/extend", R"({"size_gb":4})");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(IntOr(Obj(r), "size_gb"), 4);
  EXPECT_EQ(Call("POST", "/v1/volumes/a/snapshots", R"({"name":"s1"})").status, 201);
  EXPECT_EQ(Call("POST", "/v1/volumes/a/snapshots", R"({})").status, 400);
  r = Call("POST", "/v1/volumes", R"({"name":"c","size_gb":4,"source":{"snapshot":{"volume":"a","name":"s1"}}})");
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(StrOr(Obj(r), "source"), "a@s1");
  EXPECT_EQ(Call("POST", "/v1/volumes/a/revert", R"({"snapshot":"s1"})").status, 200);
  EXPECT_EQ(Call("POST", "/v1/volumes/a/revert", R"({"snapshot":"nope"})").status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/volumes/a/snapshots/s1").status, 200);
  EXPECT_EQ(Call("DELETE", "/v1/volumes/a/snapshots/s1").status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/volumes/a").status, 200);
  EXPECT_EQ(Call("DELETE", "/v1/volumes/a").status, 404);
}

TEST_F(ApiTest, AttachmentsGiveOsBrickConnectionInfo) {
  Cluster();
  ASSERT_EQ(Call("POST", "/v1/volumes", R"({"name":"v","size_gb":1})").status, 201);
  EXPECT_EQ(Call("POST", "/v1/volumes/v/attachments", R"({})").status, 400);
  EXPECT_EQ(Call("POST", "/v1/volumes/v/attachments", R"({"connector":{"ip":5}})").status, 400);
  auto r = Call("POST", "/v1/volumes/v/attachments",
                R"({"connector":{"ip":"127.0.0.2","host":"h1","initiator":"iqn.1994-05.com.redhat:h1"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  JObj o = Obj(r);
  EXPECT_EQ(StrOr(o, "driver_volume_type"), "iscsi");
  JObj d = o->getObject("data");
  ASSERT_TRUE(d);
  EXPECT_EQ(StrOr(d, "target_portal"), "127.0.0.2:3260");
  EXPECT_EQ(StrOr(d, "target_iqn"), "iqn.2026-11.io.ferry:v");
  EXPECT_EQ(IntOr(d, "target_lun"), 1);
  EXPECT_EQ(d->getArray("target_portals")->size(), 1u);
  // CHAP (on by default): os-brick's fields, the same secret the target was given.
  EXPECT_EQ(StrOr(d, "auth_method"), "CHAP");
  std::string user = StrOr(d, "auth_username"), pass = StrOr(d, "auth_password");
  EXPECT_EQ(pass.size(), 32u);
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].access["iqn.2026-11.io.ferry:v"].chap_user, user);
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].access["iqn.2026-11.io.ferry:v"].chap_secret, pass);
  EXPECT_FALSE(d->has("discovery_auth_method"));
  // The secret is in the map but never in the read-only event view.
  std::string events = Call("GET", "/v1/events", "", false).body;
  EXPECT_NE(events.find("chap.set"), std::string::npos);
  EXPECT_EQ(events.find(pass), std::string::npos) << events;
  EXPECT_NE(events.find("(redacted)"), std::string::npos);
  // Not an iSCSI name: refused, nothing attached.
  EXPECT_EQ(Call("POST", "/v1/volumes/v/attachments", R"({"connector":{"host":"h2","initiator":"bad name"}})").status,
            400);
  EXPECT_EQ(db_->AttachmentsOf("v")->size(), 1u);
  r = Call("DELETE", "/v1/volumes/v/attachments", R"({"connector":{"host":"h1"}})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(Obj(r)->getValue<bool>("shared"));
  EXPECT_EQ(Call("DELETE", "/v1/volumes/v/attachments", R"({"connector":{"host":"h1"}})").status, 404);
}

TEST_F(ApiTest, CompatShapes) {
  Cluster();
  ASSERT_EQ(Call("POST", "/v1/volumes", R"({"name":"test001","size_gb":1})").status, 201);
  auto r = Call("GET", "/sys/iscsi", "", true, {{"name", "test001"}, {"ops", "add_lun"}, {"tgt", "127.0.0.2"}});
  ASSERT_EQ(r.status, 200) << r.body;
  JObj o = Obj(r);
  EXPECT_EQ(StrOr(o, "Result"), "success");
  EXPECT_EQ(StrOr(o, "ip"), "127.0.0.2");
  EXPECT_EQ(StrOr(o, "iqn"), "iqn.2026-11.io.ferry:test001");
  r = Call("PUT", "/tgtmaster/tgtmap", "", false, {{"pretty", "y"}});
  EXPECT_NE(r.body.find("{\n  \"ServerCount\": 1,\n"), std::string::npos) << r.body;
  o = Obj(r);
  EXPECT_EQ(IntOr(o->getArray("ServerInfos")->getObject(0), "VolumeCount"), 1);
  o = Obj(Call("PUT", "/tgtmaster/detailtgt", "", false, {{"tgt", "127.0.0.2"}}));
  EXPECT_EQ(IntOr(o->getObject("Info"), "VolumeCount"), 1);
  EXPECT_EQ(StrOr(o->getArray("Volumes")->getObject(0), "VolumeName"), "test001");
  EXPECT_EQ(StrOr(o->getArray("Volumes")->getObject(0), "GateWay"), "127.0.0.1:8585");
  o = Obj(Call("PUT", "/tgtmaster/volume", "", false, {{"volname", "test001"}}));
  EXPECT_EQ(StrOr(o, "TgtServer"), "127.0.0.2");
  o = Obj(Call("PUT", "/tgtmaster/gatewaymap", "", false));
  EXPECT_EQ(IntOr(o, "ServerCount"), 1);
  EXPECT_EQ(IntOr(o->getArray("ServerInfos")->getObject(0), "VolumeCount"), 1);
  o = Obj(Call("PUT", "/tgtmaster/detailgateway", "", false, {{"gw", "127.0.0.1:8585"}}));
  EXPECT_EQ(StrOr(o->getArray("Volumes")->getObject(0), "TgtServer"), "127.0.0.2");
  EXPECT_EQ(Call("PUT", "/tgtmaster/gateway", "", false, {{"gw", "1.2.3.4:1"}}).status, 404);
  EXPECT_EQ(Call("PUT", "/tgtmaster/tgt", "", false).status, 400);
  o = Obj(Call("GET", "/sys/iscsi", "", false, {{"ops", "show"}, {"name", "x"}}));
  JObj t0 = o->getArray("Iscsi")->getObject(0);
  EXPECT_EQ(StrOr(t0, "Ip"), "127.0.0.2");
  EXPECT_EQ(IntOr(t0, "Status"), 0);
  EXPECT_EQ(StrOr(t0->getArray("Names")->getObject(0), "VolName"), "test001");
  EXPECT_TRUE(o->has("Tgt"));
  o = Obj(Call("GET", "/sys/iscsi", "", false, {{"ops", "get_lun"}, {"name", "test001"}}));
  EXPECT_EQ(IntOr(o, "capacity"), 1LL << 30);
  // volume/status: one row per volume and target, naming its target.
  r = Call("GET", "/tgtmaster/volume/status", "", false);
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("\"tgt\":\"127.0.0.2\""), std::string::npos) << r.body;
  // Errors.
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "frob"}}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "add_lun"}}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "add_lun"}, {"name", "nope"}}).status, 404);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "switchable_lun"}, {"name", "test001"}, {"flag", "maybe"}}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "timeout"}, {"type", "read"}, {"duration", "x"}}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "timeout"}, {"type", "reconnect"}, {"duration", "15"}}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "mov_lun"}, {"name", "test001"}}).status, 400);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "del_iqn"}, {"iqn", "bogus"}}).status, 400);
  EXPECT_EQ(Call("PUT", "/sys/debug/fixedmode", "", true).status, 400);
  EXPECT_EQ(Call("PUT", "/tgtmaster/register/tgt", "", true, {{"tgt", "127.0.0.5"}, {"admin", "nope"}}).status, 400);
  // Switchable, timeouts, del_lun.
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "switchable_lun"}, {"name", "test001"}, {"flag", "off"}}).status, 200);
  EXPECT_FALSE(db_->LunsOfVolume("test001")->at(0).switchable);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "timeout"}, {"type", "readretry"}, {"duration", "864000"}}).status, 200);
  o = Obj(Call("GET", "/sys/iscsi", "", false, {{"ops", "timeout"}, {"type", "show"}, {"tgt", "127.0.0.2"}}));
  EXPECT_EQ(IntOr(o->getArray("Timeouts")->getObject(0), "readretry"), 864000);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "del_lun"}, {"name", "test001"}, {"tgt", "127.0.0.2"}}).status, 200);
  EXPECT_EQ(Call("GET", "/sys/iscsi", "", true, {{"ops", "del_lun"}, {"name", "test001"}}).status, 404);
  EXPECT_EQ(Call("DELETE", "/tgtmaster/register/gateway", "", true, {{"gateway", "127.0.0.1:8585:8686"}}).status, 200);
  EXPECT_EQ(Call("DELETE", "/tgtmaster/register/gateway", "", true, {{"gateway", "127.0.0.1:8585:8686"}}).status, 404);
}

// The map queries' answers are reused while the map is unchanged, and every
// kind of change (add_lun, del_lun, register, offline, online) shows in the
// very next answer.
TEST_F(ApiTest, MapAnswersAreReusedOnlyUntilTheMapChanges) {
  BackendOptions bo;
  bo.heartbeat_period = std::chrono::milliseconds(50);
  bo.heartbeat_miss = 1;
  Rebuild(bo);
  Cluster();
  ASSERT_EQ(Call("POST", "/v1/volumes", R"({"name":"v1","size_gb":1})").status, 201);
  const std::string gw = "127.0.0.1:8585", tgt = "127.0.0.2";
  auto get = [&](const std::string& path, std::map<std::string, std::string> q = {}) {
    auto r = Call("PUT", path, "", false, std::move(q));
    EXPECT_EQ(r.status, 200) << path << " " << r.body;
    return r;
  };
  auto count = [&](const std::string& path) {
    JObj o = Obj(get(path));
    return IntOr(o->getArray("ServerInfos")->getObject(0), "VolumeCount");
  };
  auto status = [&](const std::string& path) {
    JObj o = Obj(get(path));
    return IntOr(o->getArray("ServerInfos")->getObject(0), "Status", -1);
  };

  // Unchanged map: the same answer, computed once (compact and pretty are
  // two answers, each kept).
  auto c0 = be_->MapAnswerCounters();
  auto g1 = get("/tgtmaster/gatewaymap");
  auto g2 = get("/tgtmaster/gatewaymap");
  auto p1 = get("/tgtmaster/gatewaymap", {{"pretty", "y"}});
  auto p2 = get("/tgtmaster/gatewaymap", {{"pretty", "y"}});
  EXPECT_EQ(g1.body, g2.body);
  EXPECT_EQ(p1.body, p2.body);
  EXPECT_EQ(g1.body.find('\n'), std::string::npos) << g1.body;
  EXPECT_NE(p1.body.find("{\n  \"ServerCount\": 1,\n"), std::string::npos) << p1.body;
  auto c1 = be_->MapAnswerCounters();
  EXPECT_EQ(c1.misses - c0.misses, 2u);
  EXPECT_EQ(c1.hits - c0.hits, 2u);
  // Every cached query, answered once before the change.
  EXPECT_EQ(count("/tgtmaster/gatewaymap"), 0);
  EXPECT_EQ(count("/tgtmaster/tgtmap"), 0);
  EXPECT_EQ(IntOr(Obj(get("/tgtmaster/tgt", {{"tgt", tgt}})), "VolumeCount"), 0);
  EXPECT_EQ(IntOr(Obj(get("/tgtmaster/gateway", {{"gw", gw}})), "VolumeCount"), 0);
  EXPECT_EQ(Obj(get("/tgtmaster/detailtgt", {{"tgt", tgt}}))->getArray("Volumes")->size(), 0u);
  EXPECT_EQ(Obj(get("/tgtmaster/detailgateway", {{"gw", gw}}))->getArray("Volumes")->size(), 0u);
  auto c2 = be_->MapAnswerCounters();
  EXPECT_EQ(c2.hits - c1.hits, 1u);    // gatewaymap (compact) was kept
  EXPECT_EQ(c2.misses - c1.misses, 5u);  // the others were new

  // add_lun: the very next answers show the LUN.
  ASSERT_EQ(Call("GET", "/sys/iscsi", "", true, {{"name", "v1"}, {"ops", "add_lun"}, {"tgt", tgt}}).status, 200);
  EXPECT_EQ(count("/tgtmaster/gatewaymap"), 1);
  EXPECT_EQ(count("/tgtmaster/tgtmap"), 1);
  EXPECT_EQ(IntOr(Obj(get("/tgtmaster/tgt", {{"tgt", tgt}})), "VolumeCount"), 1);
  EXPECT_EQ(IntOr(Obj(get("/tgtmaster/gateway", {{"gw", gw}})), "VolumeCount"), 1);
  JObj d = Obj(get("/tgtmaster/detailtgt", {{"tgt", tgt}}));
  ASSERT_EQ(d->getArray("Volumes")->size(), 1u);
  EXPECT_EQ(StrOr(d->getArray("Volumes")->getObject(0), "VolumeName"), "v1");
  d = Obj(get("/tgtmaster/detailgateway", {{"gw", gw}}));
  ASSERT_EQ(d->getArray("Volumes")->size(), 1u);
  EXPECT_EQ(StrOr(d->getArray("Volumes")->getObject(0), "TgtServer"), tgt);
  auto p3 = get("/tgtmaster/gatewaymap", {{"pretty", "y"}});
  EXPECT_NE(p3.body, p1.body);
  EXPECT_NE(p3.body.find("\"VolumeCount\": 1"), std::string::npos) << p3.body;
  // ... and are kept again from then on.
  auto c3 = be_->MapAnswerCounters();
  EXPECT_EQ(count("/tgtmaster/gatewaymap"), 1);
  EXPECT_EQ(be_->MapAnswerCounters().hits - c3.hits, 1u);

  // del_lun.
  ASSERT_EQ(Call("GET", "/sys/iscsi", "", true, {{"name", "v1"}, {"ops", "del_lun"}, {"tgt", tgt}}).status, 200);
  EXPECT_EQ(count("/tgtmaster/gatewaymap"), 0);
  EXPECT_EQ(count("/tgtmaster/tgtmap"), 0);
  EXPECT_EQ(Obj(get("/tgtmaster/detailtgt", {{"tgt", tgt}}))->getArray("Volumes")->size(), 0u);

  // A gateway registers.
  EXPECT_EQ(IntOr(Obj(get("/tgtmaster/gatewaymap")), "ServerCount"), 1);
  ASSERT_EQ(Call("PUT", "/tgtmaster/register/gateway", "", true, {{"gateway", "127.0.0.1:8586:8687"}}).status, 200);
  EXPECT_EQ(IntOr(Obj(get("/tgtmaster/gatewaymap")), "ServerCount"), 2);

  // Unknown names are errors, never kept: once the target exists it is found.
  EXPECT_EQ(Call("PUT", "/tgtmaster/tgt", "", false, {{"tgt", "127.0.0.9"}}).status, 404);
  ASSERT_EQ(Call("PUT", "/tgtmaster/register/tgt", "", true,
                 {{"tgt", "127.0.0.9"}, {"port", "3260"}, {"admin", "127.0.0.9:8890"}}).status, 200);
  EXPECT_EQ(Call("PUT", "/tgtmaster/tgt", "", false, {{"tgt", "127.0.0.9"}}).status, 200);

  // Offline (the heartbeat sweeper) and back online (a beat).
  EXPECT_EQ(status("/tgtmaster/tgtmap"), 0);
  EXPECT_EQ(status("/tgtmaster/gatewaymap"), 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while ((*db_->GetTarget(tgt))->online && std::chrono::steady_clock::now() < deadline) {
    be_->CheckHeartbeats();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_FALSE((*db_->GetTarget(tgt))->online);
  EXPECT_EQ(status("/tgtmaster/tgtmap"), 1);
  EXPECT_EQ(status("/tgtmaster/gatewaymap"), 1);  // the gateways stopped beating too
  ASSERT_EQ(Call("PUT", "/tgtmaster/register/tgt", "", true,
                 {{"tgt", tgt}, {"port", "3260"}, {"admin", "127.0.0.2:8890"}}).status, 200);
  EXPECT_EQ(status("/tgtmaster/tgtmap"), 0);
  ASSERT_EQ(Call("PUT", "/tgtmaster/register/gateway", "", true, {{"gateway", "127.0.0.1:8585:8686"}}).status, 200);
  EXPECT_EQ(status("/tgtmaster/gatewaymap"), 0);

  // A change made below the Backend (an event applied straight to the log,
  // as a second backend's Kafka consumer would) shows too.
  ASSERT_TRUE(log_->Commit(Event{"target.offline", {{"ip", tgt}, {"at", "1"}}}).ok());
  EXPECT_EQ(status("/tgtmaster/tgtmap"), 1);

  // The counters are in /metrics.
  auto n = be_->MapAnswerCounters();
  auto m = Call("GET", "/metrics", "", false);
  EXPECT_NE(m.body.find("ferry_backend_answers_total{cache=\"map\",how=\"hit\"} " + std::to_string(n.hits) + "\n"),
            std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("ferry_backend_answers_total{cache=\"map\",how=\"miss\"} " + std::to_string(n.misses) + "\n"),
            std::string::npos)
      << m.body;
}

// Readers hammering the cached maps never hide a change from the writer's
// next read: each add_lun/del_lun is in the answer that follows it, while
// other threads keep computing and sharing answers at older generations.
TEST_F(ApiTest, ConcurrentReadersNeverHideACommittedChange) {
  Cluster();
  const int kVols = 12;
  for (int i = 0; i < kVols; ++i)
    ASSERT_EQ(Call("POST", "/v1/volumes", "{\"name\":\"c" + std::to_string(i) + "\",\"size_gb\":1}").status, 201);
  std::atomic<bool> stop{false};
  std::atomic<int> reads{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t)
    readers.emplace_back([&, t] {
      const char* path = t % 2 ? "/tgtmaster/gatewaymap" : "/tgtmaster/tgtmap";
      while (!stop.load()) {
        HttpRequest r;
        r.method = "PUT";
        r.path = path;
        if (t >= 2) r.query["pretty"] = "y";
        auto resp = server_->Dispatch(r);
        if (resp.status != 200) ++bad;
        ++reads;
      }
    });
  auto lun_count = [&](const std::string& path) {
    JObj o = Obj(Call("PUT", path, "", false));
    return IntOr(o->getArray("ServerInfos")->getObject(0), "VolumeCount");
  };
  for (int i = 0; i < kVols; ++i) {
    ASSERT_EQ(Call("GET", "/sys/iscsi", "", true,
                   {{"name", "c" + std::to_string(i)}, {"ops", "add_lun"}, {"tgt", "127.0.0.2"}}).status,
              200);
    EXPECT_EQ(lun_count("/tgtmaster/tgtmap"), i + 1);
    EXPECT_EQ(lun_count("/tgtmaster/gatewaymap"), i + 1);
  }
  for (int i = 0; i < kVols; ++i) {
    ASSERT_EQ(Call("GET", "/sys/iscsi", "", true,
                   {{"name", "c" + std::to_string(i)}, {"ops", "del_lun"}, {"tgt", "127.0.0.2"}}).status,
              200);
    EXPECT_EQ(lun_count("/tgtmaster/tgtmap"), kVols - i - 1);
    EXPECT_EQ(lun_count("/tgtmaster/gatewaymap"), kVols - i - 1);
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(reads.load(), 0);
}

// volume/status: the text is made once per round of target bodies and reused
// while the bodies are the same; a new round gives a new text.
TEST_F(ApiTest, VolumeStatusTextIsReusedWhileTheBodiesAreTheSame) {
  BackendOptions bo;
  bo.status_max_age = std::chrono::milliseconds(60000);
  Rebuild(bo);
  Cluster();
  ASSERT_EQ(Call("POST", "/v1/volumes", R"({"name":"v1","size_gb":1})").status, 201);
  ASSERT_EQ(Call("GET", "/sys/iscsi", "", true, {{"name", "v1"}, {"ops", "add_lun"}, {"tgt", "127.0.0.2"}}).status,
            200);
  auto c0 = be_->StatusAnswerCounters();
  auto a = Call("GET", "/tgtmaster/volume/status", "", false);
  auto b = Call("GET", "/tgtmaster/volume/status", "", false);
  auto pa = Call("GET", "/tgtmaster/volume/status", "", false, {{"pretty", "y"}});
  auto pb = Call("GET", "/tgtmaster/volume/status", "", false, {{"pretty", "y"}});
  ASSERT_EQ(a.status, 200);
  ASSERT_EQ(pa.status, 200);
  EXPECT_EQ(a.body, b.body);
  EXPECT_EQ(pa.body, pb.body);
  EXPECT_NE(a.body.find(R"("volumeName":"v1")"), std::string::npos) << a.body;
  EXPECT_NE(a.body.find(R"("tgt":"127.0.0.2")"), std::string::npos) << a.body;
  EXPECT_NE(pa.body.find("\"volumeName\": \"v1\""), std::string::npos) << pa.body;
  auto c1 = be_->StatusAnswerCounters();
  EXPECT_EQ(c1.misses - c0.misses, 2u);  // compact and pretty, once each
  EXPECT_EQ(c1.hits - c0.hits, 2u);
  EXPECT_EQ(peers_.Count("tgt.status"), 1);

  // Coalesce only (no reuse of bodies): each request is a new round, so a new
  // text, and a change at the target shows at once.
  bo.status_max_age = std::chrono::milliseconds(0);
  Rebuild(bo);
  Cluster();
  ASSERT_EQ(Call("POST", "/v1/volumes", R"({"name":"v2","size_gb":1})").status, 201);
  ASSERT_EQ(Call("GET", "/sys/iscsi", "", true, {{"name", "v2"}, {"ops", "add_lun"}, {"tgt", "127.0.0.2"}}).status,
            200);
  auto c2 = be_->StatusAnswerCounters();
  auto x = Call("GET", "/tgtmaster/volume/status", "", false);
  EXPECT_NE(x.body.find(R"("volumeName":"v2")"), std::string::npos) << x.body;
  ASSERT_EQ(Call("GET", "/sys/iscsi", "", true, {{"name", "v2"}, {"ops", "del_lun"}, {"tgt", "127.0.0.2"}}).status,
            200);
  auto y = Call("GET", "/tgtmaster/volume/status", "", false);
  EXPECT_EQ(y.body.find(R"("volumeName":"v2")"), std::string::npos) << y.body;
  EXPECT_NE(y.body.find(R"("volumeName":"v1")"), std::string::npos) << y.body;
  auto c3 = be_->StatusAnswerCounters();
  EXPECT_EQ(c3.misses - c2.misses, 2u);
  EXPECT_EQ(c3.hits - c2.hits, 0u);
}

TEST(JsonSplice, AddsTheFieldToEveryRowAndRefusesMalformedBodies) {
  std::string out = "[";
  bool first = true;
  ASSERT_TRUE(AppendObjectsWithField(R"({"other":{"volumes":1},"volumes":[{"a":"x\"}","b":[1,{"c":null}]}, {} ]})",
                                     "volumes", "tgt", "127.0.0.2", &out, &first));
  ASSERT_TRUE(AppendObjectsWithField(R"( {"volumes":[]} )", "volumes", "tgt", "127.0.0.3", &out, &first));
  ASSERT_TRUE(AppendObjectsWithField(R"({"volumes":[{"a":-1.5e3}]})", "volumes", "tgt", "127.0.0.4", &out, &first));
  out += "]";
  EXPECT_EQ(out, R"([{"a":"x\"}","b":[1,{"c":null}],"tgt":"127.0.0.2"},{"tgt":"127.0.0.2"},{"a":-1.5e3,"tgt":"127.0.0.4"}])");
  auto parsed = ParseObject("{\"rows\":" + out + "}");
  EXPECT_TRUE(parsed.ok()) << out;
  for (const char* bad : {"", "[]", R"({"volumes":{}})", R"({"volumes":[1]})", R"({"volumes":[{"a":}]})",
                          R"({"volumes":[{"a":1}])", R"({"volumes":[{"a":1}]} x)", R"({"volumes":[{"a":tru}]})",
                          R"({"x":1})", R"({"volumes":[{"a":"unterminated}]})"}) {
    std::string o = "[";
    bool f = true;
    EXPECT_FALSE(AppendObjectsWithField(bad, "volumes", "tgt", "ip", &o, &f)) << bad;
    EXPECT_EQ(o, "[");
    EXPECT_TRUE(f);
  }
}

TEST_F(ApiTest, EventsAndMetrics) {
  Cluster();
  ASSERT_EQ(Call("POST", "/v1/volumes", R"({"name":"v","size_gb":1})").status, 201);
  auto r = Call("GET", "/v1/events", "", false, {{"after", "0"}});
  ASSERT_EQ(r.status, 200);
  JObj o = Obj(r);
  JArr es = o->getArray("events");
  ASSERT_GE(es->size(), 4u);
  EXPECT_EQ(IntOr(es->getObject(0), "seq"), 1);
  std::string last_type = StrOr(es->getObject(static_cast<unsigned>(es->size() - 1)), "type");
  EXPECT_EQ(last_type, "volume.created");
  int64_t last = IntOr(o, "last");
  EXPECT_EQ(Obj(Call("GET", "/v1/events", "", false, {{"after", std::to_string(last)}}))->getArray("events")->size(), 0u);
  EXPECT_EQ(Call("GET", "/v1/events", "", false, {{"after", "-1"}}).status, 400);
  EXPECT_EQ(Call("GET", "/v1/events", "", false, {{"after", "x"}}).status, 400);
  r = Call("GET", "/metrics", "", false);
  EXPECT_NE(r.body.find("ferry_backend_volumes 1"), std::string::npos) << r.body;
  o = Obj(Call("GET", "/v1/stats", "", false));
  EXPECT_EQ(IntOr(o, "volume_count"), 1);
  EXPECT_EQ(IntOr(o, "provisioned_capacity_gb"), 1);
  EXPECT_EQ(StrOr(o, "total_capacity_gb"), "infinite");
}

}  // namespace
}  // namespace ferry::backend
