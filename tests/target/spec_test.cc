// Unit tests of the target's configuration model, state file and heartbeat.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "target/common/http_server.h"
#include "target/server/heartbeat.h"
#include "target/server/spec.h"
#include "target/server/state_file.h"

namespace ferry::server {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/ferry-target-test-XXXXXX";
  char* d = mkdtemp(tmpl);
  EXPECT_NE(d, nullptr);
  return d;
}

LunSpec GoodLun() {
  LunSpec l;
  l.lun = 1;
  l.volume = "vol-1";
  l.gateways = {"127.0.0.1:8585", "127.0.0.1:8586"};
  l.preferred = "127.0.0.1:8585";
  l.current = "127.0.0.1:8586";
  l.epoch = 7;
  l.switchable = false;
  l.size = 1 << 30;
  return l;
}

TEST(Spec, IqnValidation) {
  EXPECT_TRUE(ValidateIqn("iqn.2026-11.io.ferry:vol-1").ok());
  EXPECT_TRUE(ValidateIqn("eui.02004567A425678D").ok());
  EXPECT_FALSE(ValidateIqn("").ok());
  EXPECT_FALSE(ValidateIqn("foo").ok());
  EXPECT_FALSE(ValidateIqn("iqn.2026-11.io.ferry:Vol").ok());  // iqn names are lower case
  EXPECT_FALSE(ValidateIqn("iqn.2026-11.io.ferry:a b").ok());
  EXPECT_FALSE(ValidateIqn("iqn.2026-11.io.ferry:a/../b").ok());
  EXPECT_FALSE(ValidateIqn("iqn." + std::string(300, 'a')).ok());
}

TEST(Spec, VolumeNames) {
  EXPECT_TRUE(ValidateVolumeName("Vol_1.a-b").ok());
  EXPECT_FALSE(ValidateVolumeName("..").ok());
  EXPECT_FALSE(ValidateVolumeName("a/b").ok());
  EXPECT_FALSE(ValidateVolumeName("").ok());
  EXPECT_FALSE(ValidateVolumeName(std::string(129, 'a')).ok());
}

TEST(Spec, LunValidation) {
  LunSpec l = GoodLun();
  EXPECT_TRUE(ValidateLun(l).ok());
  l.preferred = "127.0.0.1:9999";
  EXPECT_EQ(ValidateLun(l).code(), Status::Code::kInvalidArgument);
  l = GoodLun();
  l.gateways.push_back(l.gateways.front());
  EXPECT_FALSE(ValidateLun(l).ok());
  l = GoodLun();
  l.gateways = {"nope"};
  EXPECT_FALSE(ValidateLun(l).ok());
  l = GoodLun();
  l.gateways.clear();
  EXPECT_FALSE(ValidateLun(l).ok());
  l = GoodLun();
  l.lun = kMaxLun + 1;
  EXPECT_FALSE(ValidateLun(l).ok());
}

TEST(Spec, ChapValidation) {
  Chap c;
  EXPECT_TRUE(ValidateChap(c).ok());  // no CHAP
  c.user = "u";
  EXPECT_FALSE(ValidateChap(c).ok());  // user without secret
  c.secret = "short";
  EXPECT_FALSE(ValidateChap(c).ok());  // RFC 7143: at least 12 bytes
  c.secret = "twelve-chars";
  EXPECT_TRUE(ValidateChap(c).ok());
  c.mutual_user = "t";
  c.mutual_secret = "twelve-chars";
  EXPECT_FALSE(ValidateChap(c).ok());  // same secret both ways
  c.mutual_secret = "another-secret";
  EXPECT_TRUE(ValidateChap(c).ok());
  Chap m;
  m.mutual_user = "t";
  m.mutual_secret = "another-secret";
  EXPECT_FALSE(ValidateChap(m).ok());  // mutual without one-way
}

TEST(Spec, Addresses) {
  EXPECT_TRUE(AddressMatches("127.0.0.0/8", "127.0.0.2"));
  EXPECT_FALSE(AddressMatches("127.0.0.0/8", "10.0.0.1"));
  EXPECT_TRUE(AddressMatches("10.1.2.3", "10.1.2.3"));
  EXPECT_FALSE(AddressMatches("10.1.2.3", "10.1.2.4"));
  EXPECT_TRUE(AddressMatches("fd00::/8", "fd12::1"));
  EXPECT_FALSE(AddressMatches("fd00::/8", "10.0.0.1"));
  EXPECT_FALSE(AddressMatches("garbage", "10.0.0.1"));
  EXPECT_TRUE(IsLoopback("127.9.9.9"));
  EXPECT_TRUE(IsLoopback("::1"));
  EXPECT_FALSE(IsLoopback("192.168.0.1"));
  EXPECT_EQ(PeerIp("127.0.0.1:5000"), "127.0.0.1");
  EXPECT_EQ(PeerIp("[::1]:5000"), "::1");
  EXPECT_EQ(PeerIp("::1"), "::1");
  Acl a;
  a.addresses = {"10.0.0.0/33"};
  EXPECT_FALSE(ValidateAcl(a).ok());
}

TEST(Spec, Timeouts) {
  TimeoutValues t;
  EXPECT_EQ(*t.Get("read"), 60);
  EXPECT_EQ(*t.Get("readretry"), 86400);
  EXPECT_EQ(*t.Get("switch"), 0);
  EXPECT_EQ(*t.Get("recovery"), 120);
  EXPECT_EQ(*t.Get("reconnect"), 60);
  EXPECT_TRUE(t.Set("switch", 0).ok());
  EXPECT_FALSE(t.Set("switch", -1).ok());
  EXPECT_FALSE(t.Set("read", 0).ok());
  EXPECT_FALSE(t.Set("recovery", 15).ok());
  EXPECT_FALSE(t.Set("reconnect", 5).ok());
  EXPECT_FALSE(t.Set("bogus", 5).ok());
  TimeoutValues before = t;
  EXPECT_FALSE(t.Set("write", -3).ok());
  EXPECT_EQ(t, before);  // nothing changed
  EXPECT_TRUE(t.Set("recovery", 30).ok());
  EXPECT_EQ(*t.Get("recovery"), 30);
}

ServerState SampleState() {
  ServerState s;
  TargetSpec t;
  t.iqn = "iqn.2026-11.io.ferry:a";
  t.tid = 3;
  t.open = true;
  t.acl.initiators = {"iqn.1994-05.com.redhat:x"};
  t.acl.addresses = {"127.0.0.0/8"};
  t.chap = {"user", "secret-123456", "tuser", "tsecret-123456"};
  t.luns[1] = GoodLun();
  s.targets[t.iqn] = t;
  TargetSpec t2;
  t2.iqn = "iqn.2026-11.io.ferry:b";
  t2.tid = 1;
  s.targets[t2.iqn] = t2;
  EXPECT_TRUE(s.timeouts.Set("read", 5).ok());
  s.fixed_gateway = "127.0.0.1:8586";
  return s;
}

TEST(StateJson, RoundTrip) {
  ServerState s = SampleState();
  auto back = StateFromJson(StateToJson(s));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back.value(), s);
}

TEST(StateJson, RejectsGarbage) {
  EXPECT_FALSE(StateFromJson("").ok());
  EXPECT_FALSE(StateFromJson("{").ok());
  EXPECT_FALSE(StateFromJson("[]").ok());
  EXPECT_FALSE(StateFromJson("{\"version\":2,\"targets\":[]}").ok());
  EXPECT_FALSE(StateFromJson("{\"version\":1,\"targets\":[{\"iqn\":\"bad\",\"tid\":1,\"luns\":[]}]}").ok());
  // duplicate tid
  EXPECT_FALSE(StateFromJson("{\"version\":1,\"targets\":[{\"iqn\":\"iqn.a:x\",\"tid\":1,\"luns\":[]},"
                             "{\"iqn\":\"iqn.a:y\",\"tid\":1,\"luns\":[]}]}")
                   .ok());
  EXPECT_TRUE(StateFromJson("{\"version\":1,\"targets\":[]}").ok());
}

TEST(StateFile, SaveLoadAtomicAndPrivate) {
  std::string dir = TempDir() + "/state";
  StateFile f(dir, StateFile::Options{0});  // every change writes a snapshot (state_journal_test covers the journal)
  ASSERT_TRUE(f.Init().ok());
  auto empty = f.Load();
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->targets.empty());
  ServerState s = SampleState();
  ASSERT_TRUE(f.Save(*empty, s).ok());
  struct stat st;
  ASSERT_EQ(stat(f.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_NE(access((f.path() + ".tmp").c_str(), F_OK), 0);  // no leftover temp file
  auto back = f.Load();
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back.value(), s);
  // A leftover temp file from a crash mid-save is ignored; the old state stands.
  { std::ofstream(f.path() + ".tmp") << "{ half"; }
  back = f.Load();
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back.value(), s);
  // A corrupt state file is an error, never silently an empty state.
  { std::ofstream(f.path()) << "{ corrupt"; }
  back = f.Load();
  EXPECT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("state.json"), std::string::npos);
  std::string cmd = "rm -rf '" + dir.substr(0, dir.rfind('/')) + "'";
  EXPECT_EQ(system(cmd.c_str()), 0);
}

TEST(StateFile, InitRejectsAFile) {
  std::string dir = TempDir();
  std::string file = dir + "/f";
  { std::ofstream(file) << "x"; }
  StateFile f(file);
  EXPECT_FALSE(f.Init().ok());
  std::string cmd = "rm -rf '" + dir + "'";
  EXPECT_EQ(system(cmd.c_str()), 0);
}

// Heartbeat against a real HTTP server standing in for the backend.
TEST(Heartbeat, RegistersRepeatedlyAndSurvivesBackendOutage) {
  std::mutex mu;
  std::vector<std::string> seen;
  HttpServer::Options so;
  so.port = 0;
  HttpServer backend(so, Logger("fake-backend", LogLevel::kError));
  backend.Route("PUT", "/tgtmaster/register/tgt", [&](const HttpRequest& r) {
    std::lock_guard<std::mutex> l(mu);
    seen.push_back(r.Query("tgt") + "|" + r.Query("port") + "|" + r.Query("admin") + "|" +
                   (r.headers.count("x-ferry-token") ? r.headers.at("x-ferry-token") : ""));
    return HttpResponse::Json(200, "{\"Result\":\"success\"}");
  });
  ASSERT_TRUE(backend.Start().ok());
  Heartbeat::Options o;
  o.backend_url = "http://127.0.0.1:" + std::to_string(backend.port()) + "/";
  o.token = "tok";
  o.tgt_ip = "127.0.0.2";
  o.port = 3261;
  o.admin = "127.0.0.2:8890";
  o.interval = std::chrono::milliseconds(50);
  o.log = Logger("hb", LogLevel::kError);
  Heartbeat hb(o);
  hb.Start();
  auto wait_for = [&](size_t n) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < end) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (seen.size() >= n) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(wait_for(3));
  {
    std::lock_guard<std::mutex> l(mu);
    EXPECT_EQ(seen.front(), "127.0.0.2|3261|127.0.0.2:8890|tok");
  }
  backend.Stop();
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (hb.failed() < 2 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(hb.failed(), 2u);
  auto t0 = std::chrono::steady_clock::now();
  hb.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
}

TEST(Heartbeat, NoBackendNoThread) {
  Heartbeat::Options o;
  Heartbeat hb(o);
  hb.Start();
  hb.Stop();
  EXPECT_EQ(hb.sent_ok(), 0u);
}

}  // namespace
}  // namespace ferry::server
