// Unit tests of the admin HTTP API handlers (through HttpServer::Dispatch, no
// sockets) over a Registry with RAM volumes.
#include <gtest/gtest.h>

#include <cstdlib>

#include "target/common/http_server.h"
#include "target/server/admin_api.h"
#include "target/server/json_util.h"
#include "tests/target/fake_volume.h"

namespace ferry::server {
namespace {

class AdminApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-admin-XXXXXX";
    dir_ = mkdtemp(tmpl);
    file_ = std::make_unique<StateFile>(dir_);
    ASSERT_TRUE(file_->Init().ok());
    Registry::Options o;
    o.log = Logger("registry", LogLevel::kError);
    reg_ = std::make_unique<Registry>(o, file_.get(), &factory_);
    ASSERT_TRUE(reg_->Restore().ok());
    api_ = std::make_unique<AdminApi>(reg_.get(), [] {
      iscsi::SessionInfo s;
      s.target_iqn = "iqn.2026-11.io.ferry:t";
      s.initiator_name = "iqn.init:a";
      s.isid = "400001370000";
      s.initiator_addr = "127.0.0.1:40000";
      s.local_portal = "127.0.0.1:3260";
      iscsi::SessionInfo d = s;
      d.discovery = true;
      return std::vector<iscsi::SessionInfo>{s, d};
    });
    api_->SetInfo({{"127.0.0.1:3260"}, "127.0.0.1:8890"});
    HttpServer::Options ho;
    ho.token = "tok";
    http_ = std::make_unique<HttpServer>(ho, Logger("admin", LogLevel::kError));
    api_->Install(http_.get());
  }
  void TearDown() override {
    reg_.reset();
    std::string cmd = "rm -rf '" + dir_ + "'";
    EXPECT_EQ(system(cmd.c_str()), 0);
  }
  HttpResponse Call(const std::string& method, const std::string& path, const std::string& body = "",
                    bool token = true, std::map<std::string, std::string> query = {}) {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.body = body;
    r.query = std::move(query);
    if (token) r.headers["x-ferry-token"] = "tok";
    return http_->Dispatch(r);
  }
  JsonObject J(const HttpResponse& r) {
    auto o = ParseJsonObject(r.body);
    EXPECT_TRUE(o.ok()) << r.body;
    return o.ok() ? o.value() : NewObject();
  }

  std::string dir_;
  std::unique_ptr<StateFile> file_;
  testing::FakeFactory factory_;
  std::unique_ptr<Registry> reg_;
  std::unique_ptr<AdminApi> api_;
  std::unique_ptr<HttpServer> http_;
};

const std::string kT = "iqn.2026-11.io.ferry:t";

TEST_F(AdminApiTest, Healthz) {
  auto r = Call("GET", "/healthz", "", false);
  EXPECT_EQ(r.status, 200);
  auto o = J(r);
  EXPECT_EQ(o->getValue<std::string>("status"), "ok");
  EXPECT_EQ(o->getValue<int>("pid"), getpid());
  EXPECT_EQ(o->getArray("portals")->getElement<std::string>(0), "127.0.0.1:3260");
  EXPECT_EQ(o->getValue<std::string>("admin"), "127.0.0.1:8890");
}

TEST_F(AdminApiTest, TargetLifecycle) {
  auto r = Call("POST", "/v1/targets",
                "{\"iqn\":\"" + kT +
                    "\",\"acl\":{\"initiators\":[\"iqn.init:a\"]},\"chap\":{\"user\":\"u\",\"secret\":\"s3cret-s3cret\","
                    "\"mutual_user\":\"m\",\"mutual_secret\":\"mutual-s3cret\"}}");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(J(r)->getValue<int>("tid"), 1);
  r = Call("POST", "/v1/targets",
           "{\"iqn\":\"" + kT +
               "\",\"acl\":{\"initiators\":[\"iqn.init:a\"]},\"chap\":{\"user\":\"u\",\"secret\":\"s3cret-s3cret\","
               "\"mutual_user\":\"m\",\"mutual_secret\":\"mutual-s3cret\"}}");
  EXPECT_EQ(r.status, 200) << r.body;
  r = Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\",\"open\":true}");
  EXPECT_EQ(r.status, 409) << r.body;

  r = Call("GET", "/v1/targets", "", false);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body.find("s3cret"), std::string::npos) << "secrets must never be shown";
  auto t = J(r)->getArray("targets")->getObject(0);
  EXPECT_EQ(t->getValue<std::string>("iqn"), kT);
  EXPECT_EQ(t->getObject("chap")->getValue<std::string>("user"), "u");
  EXPECT_EQ(t->getObject("chap")->getValue<std::string>("mutual_user"), "m");
  EXPECT_FALSE(t->getValue<bool>("open"));

  r = Call("PUT", "/v1/targets/" + kT + "/acl", "{\"initiators\":[\"iqn.init:b\"],\"addresses\":[\"127.0.0.1\"]}");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(reg_->Admits(kT, "iqn.init:b", "127.0.0.1"));
  EXPECT_FALSE(reg_->Admits(kT, "iqn.init:a", "127.0.0.1"));
  r = Call("PUT", "/v1/targets/" + kT + "/chap", "{}");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(reg_->Find(kT)->auth.chap_required());

  r = Call("GET", "/v1/targets/" + kT, "", false);
  EXPECT_EQ(r.status, 200);
  r = Call("DELETE", "/v1/targets/" + kT);
  EXPECT_EQ(r.status, 200) << r.body;
  r = Call("DELETE", "/v1/targets/" + kT);
  EXPECT_EQ(r.status, 404) << r.body;
  r = Call("GET", "/v1/targets/" + kT, "", false);
  EXPECT_EQ(r.status, 404);
}

TEST_F(AdminApiTest, BadInputIsRejectedWithoutChange) {
  EXPECT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\"}", false).status, 401);
  EXPECT_EQ(Call("POST", "/v1/targets", "not json").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "[1,2]").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "{}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "{\"iqn\":42}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"bad iqn\"}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\",\"open\":\"yes\"}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\",\"acl\":{\"initiators\":\"x\"}}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\",\"chap\":{\"user\":\"u\",\"secret\":\"short\"}}").status,
            400);
  EXPECT_EQ(Call("GET", "/v1/targets", "", false).body, "{\"targets\":[]}");
  EXPECT_EQ(Call("PATCH", "/v1/targets").status, 405);
  EXPECT_EQ(Call("GET", "/v1/nothing").status, 404);

  ASSERT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\"}").status, 201);
  const std::string luns = "/v1/targets/" + kT + "/luns";
  EXPECT_EQ(Call("POST", luns, "{\"gateways\":[\"127.0.0.1:8585\"]}").status, 400);  // no volume
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\"}").status, 400);                    // no gateways
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[]}").status, 400);
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[\"nohost\"]}").status, 400);
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"../x\",\"gateways\":[\"127.0.0.1:8585\"]}").status, 400);
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[\"127.0.0.1:8585\"],\"lun\":-1}").status, 400);
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[\"127.0.0.1:8585\"],\"lun\":99999}").status, 400);
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[\"127.0.0.1:8585\"],\"epoch\":-2}").status, 400);
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[\"127.0.0.1:8585\"],\"switchable\":1}").status, 400);
  EXPECT_EQ(
      Call("POST", luns, "{\"volume\":\"v\",\"gateways\":[\"127.0.0.1:8585\"],\"preferred\":\"127.0.0.1:1\"}").status,
      400);
  EXPECT_EQ(Call("POST", "/v1/targets/iqn.2026-11.io.ferry:none/luns",
                 "{\"volume\":\"v\",\"gateways\":[\"127.0.0.1:8585\"]}")
                .status,
            404);
  factory_.Unreachable("down");
  EXPECT_EQ(Call("POST", luns, "{\"volume\":\"down\",\"gateways\":[\"127.0.0.1:8585\"]}").status, 503);
  EXPECT_EQ(Call("DELETE", luns + "/abc").status, 400);
  EXPECT_EQ(Call("DELETE", luns + "/3").status, 404);
  EXPECT_TRUE(reg_->Targets().front().luns.empty());

  EXPECT_EQ(Call("PUT", "/v1/timeouts", "{\"type\":\"read\",\"duration\":0}").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/timeouts", "{\"type\":\"recovery\",\"duration\":25}").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/timeouts", "{\"type\":\"nope\",\"duration\":25}").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/timeouts", "{\"type\":\"read\"}").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/timeouts", "{\"type\":\"read\",\"duration\":\"5\"}").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/timeouts", "{\"type\":\"read\",\"duration\":5}", false).status, 401);
  EXPECT_EQ(Call("PUT", "/v1/fixedmode", "{}").status, 400);
  EXPECT_EQ(Call("PUT", "/v1/fixedmode", "{\"gateway\":\"x\"}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/volumes/v/switchable", "{}").status, 400);
  EXPECT_EQ(Call("POST", "/v1/volumes/v/switchable", "{\"switchable\":false}").status, 404);
  EXPECT_EQ(Call("POST", "/v1/volumes/v/resize", "{}").status, 404);
  EXPECT_EQ(Call("POST", "/v1/volumes/v/resize", "{oops").status, 400);
  EXPECT_EQ(Call("GET", "/v1/timeouts", "", false).body,
            "{\"read\":60,\"write\":60,\"readretry\":86400,\"writeretry\":86400,\"switch\":0,"
            "\"recovery\":120,\"reconnect\":60}");
}

TEST_F(AdminApiTest, LunsStatusTimeoutsFixedModeSessions) {
  ASSERT_EQ(Call("POST", "/v1/targets", "{\"iqn\":\"" + kT + "\"}").status, 201);
  const std::string luns = "/v1/targets/" + kT + "/luns";
  auto r = Call("POST", luns,
                "{\"volume\":\"vol1\",\"gateways\":[\"127.0.0.1:8585\",\"127.0.0.1:8586\"],"
                "\"preferred\":\"127.0.0.1:8585\",\"current\":\"127.0.0.1:8586\",\"epoch\":4,\"switchable\":false}");
  ASSERT_EQ(r.status, 201) << r.body;
  auto o = J(r);
  EXPECT_EQ(o->getValue<int>("lun"), 1);
  EXPECT_EQ(o->getValue<uint64_t>("size"), factory_.default_size);
  EXPECT_EQ(o->getValue<int>("epoch"), 4);
  EXPECT_EQ(o->getValue<std::string>("current"), "127.0.0.1:8586");

  r = Call("GET", "/v1/targets", "", false);
  auto lun = J(r)->getArray("targets")->getObject(0)->getArray("luns")->getObject(0);
  EXPECT_EQ(lun->getValue<std::string>("volume"), "vol1");
  EXPECT_EQ(lun->getValue<std::string>("preferred"), "127.0.0.1:8585");
  EXPECT_FALSE(lun->getValue<bool>("switchable"));
  EXPECT_EQ(lun->getArray("gateways")->size(), 2u);

  r = Call("GET", "/v1/status", "", false);
  ASSERT_EQ(r.status, 200);
  auto row = J(r)->getArray("volumes")->getObject(0);
  for (const char* k : {"volumeName", "perferGw", "currentGw", "status", "readError", "writeError", "ioCnt",
                        "ioTotal", "readIops", "readKBps", "readDelayAvg", "writeIops", "writeKBps",
                        "writeDelayAvg", "switchable", "epoch", "iqn", "lun"})
    EXPECT_TRUE(row->has(k)) << k;
  EXPECT_EQ(row->getValue<std::string>("volumeName"), "vol1");
  EXPECT_EQ(row->getValue<std::string>("switchable"), "0");
  EXPECT_EQ(row->getValue<std::string>("iqn"), kT);

  factory_.Last("vol1")->SetNextSize(32 << 20);
  r = Call("POST", "/v1/volumes/vol1/resize", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r)->getValue<uint64_t>("size"), 32u << 20);
  r = Call("POST", "/v1/volumes/vol1/switchable", "{\"switchable\":true}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(factory_.Last("vol1")->switchable());

  r = Call("PUT", "/v1/timeouts", "{\"type\":\"write\",\"duration\":3}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(J(r)->getValue<int>("write"), 3);
  r = Call("GET", "/v1/timeouts", "", false, {{"type", "write"}});
  EXPECT_EQ(r.body, "{\"write\":3}");
  EXPECT_EQ(Call("GET", "/v1/timeouts", "", false, {{"type", "bogus"}}).status, 400);

  r = Call("PUT", "/v1/fixedmode", "{\"gateway\":\"127.0.0.1:8586\"}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Call("GET", "/v1/fixedmode", "", false).body, "{\"enabled\":true,\"gateway\":\"127.0.0.1:8586\"}");
  EXPECT_EQ(factory_.fixed(), "127.0.0.1:8586");
  r = Call("DELETE", "/v1/fixedmode");
  EXPECT_EQ(r.body, "{\"enabled\":false,\"gateway\":\"\"}");

  r = Call("GET", "/v1/sessions", "", false);
  auto sessions = J(r)->getArray("sessions");
  ASSERT_EQ(sessions->size(), 1u);  // discovery sessions are not listed
  EXPECT_EQ(sessions->getObject(0)->getValue<std::string>("isid"), "400001370000");
  EXPECT_EQ(sessions->getObject(0)->getValue<std::string>("initiator"), "iqn.init:a");

  r = Call("DELETE", luns + "/1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Call("GET", "/v1/status", "", false).body, "{\"volumes\":[]}");
}

}  // namespace
}  // namespace ferry::server
