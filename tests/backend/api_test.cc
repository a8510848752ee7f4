// Tests of the HTTP handlers through HttpServer::Dispatch (no sockets), with a
// real SQLite file and FakePeers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

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
    be_ = std::make_unique<Backend>(db_.get(), log_.get(), &peers_, BackendOptions{}, Logger("t", LogLevel::kError));
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
