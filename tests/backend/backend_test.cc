// Unit tests of backend::Backend on a real SQLite file, with FakePeers
// standing in for gateways and targets.
#include "backend/backend.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <filesystem>
#include <thread>

#include "tests/backend/fake_peers.h"

namespace ferry::backend {
namespace {

constexpr int64_t kGiB = 1LL << 30;

// By value, so a range-for over it does not dangle.
template <typename T>
T Val(Result<T> r) {
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? std::move(r).value() : T{};
}

// Polls f (up to 20 s) and returns its last value.
bool Until(const std::function<bool()>& f) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!f() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  return f();
}

// Holds every target status call (before its answer is read) until Release().
struct StatusGate {
  std::mutex m;
  std::condition_variable cv;
  bool released = false;
  std::atomic<int> entered{0};
  void HoldEveryCallOf(FakePeers& peers) {
    peers.before_status_json = [this] {
      ++entered;
      std::unique_lock<std::mutex> l(m);
      cv.wait_for(l, std::chrono::seconds(20), [this] { return released; });
    };
  }
  void Release() {
    {
      std::lock_guard<std::mutex> l(m);
      released = true;
    }
    cv.notify_all();
  }
};

class BackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry_backend_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    Reopen();
  }
  void TearDown() override {
    be_.reset();
    log_.reset();
    db_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen(BackendOptions o = {}) {
    be_.reset();
    log_.reset();
    db_.reset();
    auto d = db::Database::Open(dir_ + "/map.db");
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    db_ = std::move(d).value();
    log_ = std::make_unique<EventLog>(db_.get());
    be_ = std::make_unique<Backend>(db_.get(), log_.get(), &peers_, o, Logger("test", LogLevel::kError));
  }
  void Cluster() {
    ASSERT_TRUE(be_->RegisterGateway("127.0.0.1:8585:8686").ok());
    ASSERT_TRUE(be_->RegisterGateway("127.0.0.1:8586:8687").ok());
    ASSERT_TRUE(be_->RegisterTarget("127.0.0.2", 3260, "127.0.0.2:8890").ok());
    ASSERT_TRUE(be_->RegisterTarget("127.0.0.3", 3260, "127.0.0.3:8890").ok());
  }
  void Offline(const std::string& ip) {
    ASSERT_TRUE(log_->Commit(Event{"target.offline", {{"ip", ip}, {"at", "1"}}}).ok());
  }
  db::LunRow Lun(const std::string& vol, const std::string& ip) {
    for (auto& l : Val(db_->LunsOfVolume(vol)))
      if (l.target == ip) return l;
    ADD_FAILURE() << "no lun " << vol << "@" << ip;
    return {};
  }
  std::string dir_;
  FakePeers peers_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<EventLog> log_;
  std::unique_ptr<Backend> be_;
};

TEST_F(BackendTest, CreateIsSafeToRetryAndRefusesDifferentParameters) {
  Cluster();
  auto v = be_->CreateVolume("vol1", kGiB, "", "");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_TRUE(v->created);
  EXPECT_EQ(v->row.state, "available");
  EXPECT_EQ(peers_.vols.count("vol1"), 1u);
  auto again = be_->CreateVolume("vol1", kGiB, "", "");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(peers_.Count("gw.create"), 1);
  EXPECT_EQ(be_->CreateVolume("vol1", 2 * kGiB, "", "").status().code(), Status::Code::kAlreadyExists);
}

TEST_F(BackendTest, BadInputChangesNothing) {
  Cluster();
  int64_t seq = *db_->LastEventSeq();
  EXPECT_EQ(be_->CreateVolume("", kGiB, "", "").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->CreateVolume("../etc", kGiB, "", "").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->CreateVolume("a/b", kGiB, "", "").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->CreateVolume(std::string(200, 'x'), kGiB, "", "").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->CreateVolume("ok", 0, "", "").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->CreateVolume("ok", kGiB, "missing", "").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(be_->AddLun("nope", "", "").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(be_->AddLun("ok", "not-an-ip", "").status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->SetTimeout("recovery", 15, "").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->SetTimeout("read", 0, "").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->SetTimeout("switch", -1, "").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->SetTimeout("bogus", 10, "").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->RegisterGateway("127.0.0.1:8585").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(be_->RegisterGateway("127.0.0.1:99999:1").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(*db_->LastEventSeq(), seq);
  EXPECT_EQ(*db_->CountVolumes(), 0);
}

TEST_F(BackendTest, GatewayFailureOnCreateLeavesNoVolume) {
  Cluster();
  peers_.fail_next = "gw.create";
  auto v = be_->CreateVolume("v", kGiB, "", "");
  EXPECT_EQ(v.status().code(), Status::Code::kUnavailable);
  EXPECT_FALSE(db_->GetVolume("v")->has_value());
  // No gateway at all: refused before anything is written.
  ASSERT_TRUE(log_->Commit(Event{"gateway.offline", {{"addr", "127.0.0.1:8585"}}}).ok());
  ASSERT_TRUE(log_->Commit(Event{"gateway.offline", {{"addr", "127.0.0.1:8586"}}}).ok());
  EXPECT_EQ(be_->CreateVolume("w", kGiB, "", "").status().code(), Status::Code::kUnavailable);
  EXPECT_EQ(*db_->CountVolumes(), 0);
}

TEST_F(BackendTest, PlacementPicksGatewayWithFewestVolumes) {
  Cluster();
  std::map<std::string, int> per;
  for (int i = 0; i < 6; ++i) {
    auto v = be_->CreateVolume("v" + std::to_string(i), kGiB, "", "");
    ASSERT_TRUE(v.ok());
    per[v->row.preferred_gw]++;
  }
  EXPECT_EQ(per["127.0.0.1:8585"], 3);
  EXPECT_EQ(per["127.0.0.1:8586"], 3);
}

TEST_F(BackendTest, AddLunStartsAtNextEpochAndIsIdempotent) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vol", kGiB, "", "").ok());
  peers_.vols["vol"].epoch = 4;
  auto p = be_->AddLun("vol", "127.0.0.2", "");
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->iqn, "iqn.2026-11.io.ferry:vol");
  EXPECT_EQ(p->lun, 1);
  EXPECT_EQ(p->epoch, 5);
  EXPECT_EQ(Lun("vol", "127.0.0.2").state, "ready");
  EXPECT_EQ((*db_->GetVolume("vol"))->epoch, 5);
  // The epoch came from the target's open (raise_epoch), not from a separate gateway call.
  EXPECT_EQ(peers_.Count("gw.get"), 0);
  EXPECT_TRUE(peers_.FindLun("127.0.0.2:8890", "vol")->spec.raise_epoch);
  auto again = be_->AddLun("vol", "127.0.0.2", "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(peers_.Count("tgt.addlun"), 1);
  EXPECT_EQ(be_->AddLun("vol", "127.0.0.9", "").status().code(), Status::Code::kNotFound);
  Offline("127.0.0.3");
  EXPECT_EQ(be_->AddLun("vol", "127.0.0.3", "").status().code(), Status::Code::kUnavailable);
}

TEST_F(BackendTest, AnOldTargetThatIgnoresRaiseEpochNeverGetsAFencedLun) {
  // A target older than raise_epoch joins at the floor (the map's epoch + 1).
  // Where the gateway holds a newer epoch that LUN could not write: refused and undone.
  Cluster();
  peers_.targets_know_raise = false;
  ASSERT_TRUE(be_->CreateVolume("ahead", kGiB, "", "").ok());
  ASSERT_TRUE(be_->CreateVolume("even", kGiB, "", "").ok());
  peers_.vols["ahead"].epoch = 4;  // raised by a target's switch the map has not heard of
  auto p = be_->AddLun("ahead", "127.0.0.2", "");
  ASSERT_EQ(p.status().code(), Status::Code::kConflict) << p.status().ToString();
  EXPECT_NE(p.status().message().find("does not support raise_epoch"), std::string::npos);
  EXPECT_TRUE(db_->LunsOfVolume("ahead")->empty());
  EXPECT_EQ(peers_.FindLun("127.0.0.2:8890", "ahead"), nullptr);
  EXPECT_TRUE(peers_.tgts["127.0.0.2:8890"].tids.empty());  // the target made for it is gone too
  // In step with the map, the floor is the right epoch: served.
  auto q = be_->AddLun("even", "127.0.0.2", "");
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->epoch, 1);
  EXPECT_EQ(Lun("even", "127.0.0.2").state, "ready");
}

TEST_F(BackendTest, TargetFailureUndoesTheLun) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vol", kGiB, "", "").ok());
  peers_.fail_next = "tgt.addlun";
  EXPECT_FALSE(be_->AddLun("vol", "127.0.0.2", "").ok());
  EXPECT_TRUE(db_->LunsOfVolume("vol")->empty());
  EXPECT_TRUE(peers_.tgts["127.0.0.2:8890"].tids.empty());  // the half-made target is gone
}

TEST_F(BackendTest, ExistingIqnGetsNextLun) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("a", kGiB, "", "").ok());
  ASSERT_TRUE(be_->CreateVolume("b", kGiB, "", "").ok());
  auto pa = be_->AddLun("a", "127.0.0.2", "");
  ASSERT_TRUE(pa.ok());
  auto pb = be_->AddLun("b", "127.0.0.2", pa->iqn);
  ASSERT_TRUE(pb.ok()) << pb.status().ToString();
  EXPECT_EQ(pb->iqn, pa->iqn);
  EXPECT_EQ(pb->lun, 2);
  EXPECT_EQ(pb->tid, pa->tid);
  EXPECT_EQ(be_->AddLun("b", "127.0.0.3", "iqn.2026-11.io.ferry:nothere").status().code(), Status::Code::kNotFound);
  // Deleting one LUN keeps the shared target; deleting the IQN removes both.
  ASSERT_TRUE(be_->DelLun("a", "127.0.0.2").ok());
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].tids.count(pa->iqn), 1u);
  ASSERT_TRUE(be_->DelIqn(pa->iqn).ok());
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].tids.count(pa->iqn), 0u);
  EXPECT_EQ(be_->DelIqn(pa->iqn).code(), Status::Code::kNotFound);
}

TEST_F(BackendTest, LiveMigrationJoinsAtCurrentEpochAndRestoresSwitchable) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  auto a = be_->AddLun("vm", "127.0.0.2", "");
  ASSERT_TRUE(a.ok());
  // A's target switched on its own to the other gateway meanwhile.
  peers_.FindLun("127.0.0.2:8890", "vm")->current = "127.0.0.1:8586";
  int fences = peers_.Count("gw.fence");
  auto b = be_->AddLun("vm", "127.0.0.3", "");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->epoch, a->epoch);  // joined, not raised
  auto* lb = peers_.FindLun("127.0.0.3:8890", "vm");
  ASSERT_NE(lb, nullptr);
  EXPECT_EQ(lb->spec.current, "127.0.0.1:8586");
  EXPECT_EQ(*lb->spec.epoch, a->epoch);
  EXPECT_FALSE(lb->switchable);
  EXPECT_FALSE(peers_.FindLun("127.0.0.2:8890", "vm")->switchable);
  EXPECT_FALSE(Lun("vm", "127.0.0.2").switchable);
  EXPECT_FALSE(Lun("vm", "127.0.0.3").switchable);
  EXPECT_EQ(peers_.Count("gw.fence"), fences);
  // Source drops its LUN: destination becomes switchable again; the gateway is untouched.
  ASSERT_TRUE(be_->DelLun("vm", "127.0.0.2").ok());
  EXPECT_TRUE(peers_.FindLun("127.0.0.3:8890", "vm")->switchable);
  EXPECT_TRUE(Lun("vm", "127.0.0.3").switchable);
  EXPECT_EQ(peers_.Count("gw.delete"), 0);
  EXPECT_EQ(peers_.Count("gw.fence"), fences);
  EXPECT_EQ(db_->LunsOfVolume("vm")->size(), 1u);
}

TEST_F(BackendTest, EvacuateFencesBeforeTheNewTargetServes) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  auto a = be_->AddLun("vm", "127.0.0.2", "");
  ASSERT_TRUE(a.ok());
  Offline("127.0.0.2");
  peers_.calls.clear();
  auto b = be_->AddLun("vm", "127.0.0.3", "");
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_GT(b->epoch, a->epoch);
  int fence = peers_.IndexOf("gw.fence");
  int add = peers_.IndexOf("tgt.addlun");
  ASSERT_GE(fence, 0);
  EXPECT_LT(fence, add);
  EXPECT_GE(peers_.vols["vm"].epoch, b->epoch);
  EXPECT_TRUE(peers_.FindLun("127.0.0.3:8890", "vm")->switchable);
  // Dropping the dead target's LUN needs no fence again (B's epoch is newer).
  int fences = peers_.Count("gw.fence");
  ASSERT_TRUE(be_->DelLun("vm", "127.0.0.2").ok());
  EXPECT_EQ(peers_.Count("gw.fence"), fences);
  EXPECT_EQ(db_->LunsOfVolume("vm")->size(), 1u);
}

TEST_F(BackendTest, DetachFromDeadTargetFencesIt) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  Connector c{"127.0.0.2", "hostA", "iqn.1994-05.com.redhat:a", "{}"};
  auto p = be_->Attach("vm", c);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  int64_t e = (*p)[0].epoch;
  Offline("127.0.0.2");
  auto shared = be_->Detach("vm", c);
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  EXPECT_FALSE(*shared);
  EXPECT_GT(peers_.vols["vm"].epoch, e);
  EXPECT_GT((*db_->GetVolume("vm"))->epoch, e);
  EXPECT_TRUE(db_->LunsOfVolume("vm")->empty());
}

TEST_F(BackendTest, AttachPicksTargetByConnectorIpAndReportsShared) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  Connector a{"127.0.0.3", "hostA", "iqn.x:a", "{}"};
  Connector b{"127.0.0.2", "hostB", "iqn.x:b", "{}"};
  auto pa = be_->Attach("vm", a);
  ASSERT_TRUE(pa.ok());
  EXPECT_EQ((*pa)[0].ip, "127.0.0.3");
  auto pa2 = be_->Attach("vm", a);  // retry
  ASSERT_TRUE(pa2.ok());
  EXPECT_EQ(db_->AttachmentsOf("vm")->size(), 1u);
  auto pb = be_->Attach("vm", b);
  ASSERT_TRUE(pb.ok());
  EXPECT_EQ((*pb)[0].ip, "127.0.0.2");
  EXPECT_EQ((*pb)[0].epoch, (*pa)[0].epoch);
  auto s1 = be_->Detach("vm", a);
  ASSERT_TRUE(s1.ok());
  EXPECT_TRUE(*s1);  // hostB still attached
  EXPECT_TRUE(Lun("vm", "127.0.0.2").switchable);
  auto s2 = be_->Detach("vm", b);
  ASSERT_TRUE(s2.ok());
  EXPECT_FALSE(*s2);
  EXPECT_TRUE(db_->LunsOfVolume("vm")->empty());
  EXPECT_EQ(be_->Detach("vm", b).status().code(), Status::Code::kNotFound);
  EXPECT_EQ(be_->Attach("vm", Connector{}).status().code(), Status::Code::kInvalidArgument);
  // Delete refused while exported; fine afterwards.
  ASSERT_TRUE(be_->Attach("vm", a).ok());
  EXPECT_EQ(be_->DeleteVolume("vm").code(), Status::Code::kConflict);
  ASSERT_TRUE(be_->Detach("vm", a).ok());
  EXPECT_TRUE(be_->DeleteVolume("vm").ok());
  EXPECT_EQ(be_->DeleteVolume("vm").code(), Status::Code::kNotFound);
}

TEST_F(BackendTest, AttachGeneratesChapOncePerVolumeAndSetsItOnTheTarget) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  Connector a{"127.0.0.2", "hostA", "iqn.x:a", "{}"};
  auto p = be_->Attach("vm", a);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->auth_user.rfind("ferry-", 0), 0u);
  EXPECT_EQ(p->auth_secret.size(), 32u);
  const auto& acc = peers_.tgts["127.0.0.2:8890"].access["iqn.2026-11.io.ferry:vm"];
  EXPECT_EQ(acc.chap_user, p->auth_user);
  EXPECT_EQ(acc.chap_secret, p->auth_secret);
  EXPECT_EQ(acc.initiators, std::vector<std::string>{"iqn.x:a"});
  EXPECT_EQ(Val(db_->GetChap("vm"))->secret, p->auth_secret);
  // A retry and a second host get the same credentials; another volume others.
  auto again = be_->Attach("vm", a);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->auth_secret, p->auth_secret);
  ASSERT_TRUE(be_->CreateVolume("vm2", kGiB, "", "").ok());
  auto q = be_->Attach("vm2", a);
  ASSERT_TRUE(q.ok());
  EXPECT_NE(q->auth_secret, p->auth_secret);
  EXPECT_NE(q->auth_user, p->auth_user);
  // mov_lun keeps ACL and CHAP on the new target.
  ASSERT_TRUE(be_->MoveLun("vm", "127.0.0.3").ok());
  const auto& moved = peers_.tgts["127.0.0.3:8890"].access["iqn.2026-11.io.ferry:vm"];
  EXPECT_EQ(moved.chap_secret, p->auth_secret);
  EXPECT_EQ(moved.initiators, std::vector<std::string>{"iqn.x:a"});
  // The attachment follows the LUN: a detach afterwards removes the moved LUN.
  auto atts = *db_->AttachmentsOf("vm");
  ASSERT_EQ(atts.size(), 1u);
  EXPECT_EQ(atts[0].target, "127.0.0.3");
  ASSERT_TRUE(be_->Detach("vm", a).ok());
  EXPECT_TRUE(db_->LunsOfVolume("vm")->empty());
  EXPECT_EQ(peers_.tgts["127.0.0.3:8890"].tids.count("iqn.2026-11.io.ferry:vm"), 0u);
}

TEST_F(BackendTest, ChapOffGivesNoCredentialsAndDiscoveryChapIsReported) {
  BackendOptions o;
  o.chap = false;
  o.discovery_chap_user = "disc";
  o.discovery_chap_secret = "disc-secret-123";
  Reopen(o);
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  auto p = be_->Attach("vm", Connector{"127.0.0.2", "hostA", "iqn.x:a", "{}"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->auth_user, "");
  EXPECT_EQ(p->discovery_user, "disc");
  EXPECT_EQ(p->discovery_secret, "disc-secret-123");
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].access["iqn.2026-11.io.ferry:vm"].chap_user, "");
  EXPECT_FALSE(Val(db_->GetChap("vm")).has_value());
}

TEST_F(BackendTest, AclAdmitsEveryInitiatorAttachedOnTheTargetAndDetachRemovesOnlyOne) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("vm", kGiB, "", "").ok());
  const std::string iqn = "iqn.2026-11.io.ferry:vm";
  auto& tgt = peers_.tgts["127.0.0.2:8890"];
  ASSERT_TRUE(be_->Attach("vm", Connector{"127.0.0.2", "hostA", "iqn.x:a", "{}"}).ok());
  auto b = be_->Attach("vm", Connector{"127.0.0.2", "hostB", "iqn.x:b", "{}"});
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ((*b)[0].ip, "127.0.0.2");
  EXPECT_EQ(tgt.access[iqn].initiators, (std::vector<std::string>{"iqn.x:a", "iqn.x:b"}));
  EXPECT_EQ(tgt.access[iqn].chap_secret, b->auth_secret);
  EXPECT_EQ(peers_.Count("tgt.create"), 1);
  // The ACL push fails: the attachment is undone, the ACL unchanged.
  peers_.fail_next = "tgt.acl";
  EXPECT_EQ(be_->Attach("vm", Connector{"127.0.0.2", "hostC", "iqn.x:c", "{}"}).status().code(),
            Status::Code::kUnavailable);
  EXPECT_EQ(db_->AttachmentsOf("vm")->size(), 2u);
  EXPECT_EQ(tgt.access[iqn].initiators, (std::vector<std::string>{"iqn.x:a", "iqn.x:b"}));
  // Detaching A leaves B admitted and the LUN in place.
  auto s = be_->Detach("vm", Connector{"", "hostA", "", "{}"});
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE(*s);
  EXPECT_EQ(tgt.access[iqn].initiators, std::vector<std::string>{"iqn.x:b"});
  EXPECT_EQ(db_->LunsOfVolume("vm")->size(), 1u);
  // A failed ACL push on detach changes nothing.
  peers_.fail_next = "tgt.acl";
  ASSERT_TRUE(be_->Attach("vm", Connector{"127.0.0.2", "hostC", "iqn.x:c", "{}"}).status().code() ==
              Status::Code::kUnavailable);
  ASSERT_TRUE(be_->Attach("vm", Connector{"127.0.0.2", "hostC", "iqn.x:c", "{}"}).ok());
  peers_.fail_next = "tgt.acl";
  EXPECT_FALSE(be_->Detach("vm", Connector{"", "hostC", "", "{}"}).ok());
  EXPECT_EQ(db_->AttachmentsOf("vm")->size(), 2u);
  EXPECT_EQ(tgt.access[iqn].initiators, (std::vector<std::string>{"iqn.x:b", "iqn.x:c"}));
  ASSERT_TRUE(be_->Detach("vm", Connector{"", "hostC", "", "{}"}).ok());
  // The last one removes the export.
  s = be_->Detach("vm", Connector{"", "hostB", "", "{}"});
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(*s);
  EXPECT_TRUE(db_->LunsOfVolume("vm")->empty());
  EXPECT_EQ(tgt.tids.count(iqn), 0u);
}

TEST_F(BackendTest, AttachPlacementByIpThenHostThenLoad) {
  BackendOptions o;
  o.target_hosts = {{"compute3", "127.0.0.3"}};
  Reopen(o);
  Cluster();
  ASSERT_TRUE(be_->RegisterTarget("127.0.0.4", 3260, "127.0.0.4:8890", "Compute4.example").ok());
  EXPECT_EQ(Val(db_->GetTarget("127.0.0.4"))->host, "Compute4.example");
  // A beat without host keeps the host; a bad host is refused.
  ASSERT_TRUE(be_->RegisterTarget("127.0.0.4", 3260, "127.0.0.4:8890").ok());
  EXPECT_EQ(Val(db_->GetTarget("127.0.0.4"))->host, "Compute4.example");
  EXPECT_EQ(be_->RegisterTarget("127.0.0.4", 3260, "127.0.0.4:8890", "bad host").code(),
            Status::Code::kInvalidArgument);
  for (const char* n : {"v1", "v2", "v3", "v4", "v5"}) ASSERT_TRUE(be_->CreateVolume(n, kGiB, "", "").ok());
  // 1. ip wins over host.
  auto p = be_->Attach("v1", Connector{"127.0.0.2", "compute4.example", "iqn.x:a", "{}"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)[0].ip, "127.0.0.2");
  // 2. host as the target reported it (case-insensitive), and as configured.
  p = be_->Attach("v2", Connector{"10.9.9.9", "compute4.EXAMPLE", "iqn.x:a", "{}"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)[0].ip, "127.0.0.4");
  p = be_->Attach("v3", Connector{"", "compute3", "iqn.x:a", "{}"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)[0].ip, "127.0.0.3");
  // 3. neither: the least loaded (.2 and .3 and .4 have one each; .2 gets a second by add_lun).
  ASSERT_TRUE(be_->AddLun("v5", "127.0.0.2", "").ok());
  ASSERT_TRUE(be_->CreateVolume("v6", kGiB, "", "").ok());
  ASSERT_TRUE(be_->AddLun("v6", "127.0.0.4", "").ok());
  p = be_->Attach("v4", Connector{"10.9.9.9", "elsewhere", "iqn.x:a", "{}"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)[0].ip, "127.0.0.3");
  // The host's target offline: refused, not silently placed elsewhere.
  Offline("127.0.0.4");
  ASSERT_TRUE(be_->CreateVolume("v7", kGiB, "", "").ok());
  EXPECT_EQ(be_->Attach("v7", Connector{"", "compute4.example", "iqn.x:a", "{}"}).status().code(),
            Status::Code::kUnavailable);
  EXPECT_TRUE(db_->AttachmentsOf("v7")->empty());
}

TEST_F(BackendTest, VolumeStatusRoundsAreSharedAndReusedWhileFresh) {
  BackendOptions o;
  o.status_max_age = std::chrono::milliseconds(0);  // coalesce only
  Reopen(o);
  Cluster();
  StatusGate gate;
  gate.HoldEveryCallOf(peers_);
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  ts.emplace_back([&] { ok += be_->SharedTargetStatus().ok(); });
  ASSERT_TRUE(Until([&] { return gate.entered.load() == 1; }));
  for (int i = 0; i < 7; ++i) ts.emplace_back([&] { ok += be_->SharedTargetStatus().ok(); });
  ASSERT_TRUE(Until([&] { return be_->StatusWaiters() == 7; }));
  gate.Release();
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_EQ(peers_.Count("tgt.status"), 2);  // one round: one call per target, for all eight
  // Coalesce only: a later caller does a new round.
  ASSERT_TRUE(be_->SharedTargetStatus().ok());
  EXPECT_EQ(peers_.Count("tgt.status"), 4);
  // With a max age, a fresh answer is reused.
  o.status_max_age = std::chrono::milliseconds(60000);
  Reopen(o);
  ASSERT_TRUE(be_->SharedTargetStatus().ok());
  ASSERT_TRUE(be_->SharedTargetStatus().ok());
  EXPECT_EQ(peers_.Count("tgt.status"), 6);
}

// Past half its allowed age, one caller fetches the next round while the
// others still get the current answer at once; nobody gets one older than
// the max age.
TEST_F(BackendTest, VolumeStatusIsRefreshedAheadByOneCallerWhileOthersGetTheCurrentAnswer) {
  BackendOptions o;
  o.status_max_age = std::chrono::milliseconds(2000);
  Reopen(o);
  Cluster();
  auto first = be_->SharedTargetStatus();
  ASSERT_TRUE(first.ok());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(peers_.Count("tgt.status"), 2);  // one round: both targets
  ASSERT_EQ(be_->SharedTargetStatus()->get(), first->get());  // young: reused, no round
  EXPECT_EQ(peers_.Count("tgt.status"), 2);
  StatusGate gate;
  gate.HoldEveryCallOf(peers_);
  // Half the max age has passed (waiting for time itself is the condition).
  std::this_thread::sleep_until(t0 + std::chrono::milliseconds(1050));
  std::shared_ptr<const Backend::Bodies> refreshed;
  std::thread refresher([&] {
    auto r = be_->SharedTargetStatus();
    if (r.ok()) refreshed = *r;
  });
  ASSERT_TRUE(Until([&] { return gate.entered.load() >= 1; }));
  // The round is under way (held): another caller does not wait for it.
  auto during = be_->SharedTargetStatus();
  ASSERT_TRUE(during.ok());
  EXPECT_EQ(during->get(), first->get());
  EXPECT_EQ(be_->StatusWaiters(), 0);
  gate.Release();
  refresher.join();
  ASSERT_TRUE(refreshed);
  EXPECT_NE(refreshed.get(), first->get());
  EXPECT_EQ(peers_.Count("tgt.status"), 4);
  EXPECT_EQ(be_->SharedTargetStatus()->get(), refreshed.get());  // the new one, young again
}

TEST_F(BackendTest, MoveLunIsAddThenDelete) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("v", kGiB, "", "").ok());
  auto a = be_->AddLun("v", "127.0.0.2", "");
  ASSERT_TRUE(a.ok());
  auto m = be_->MoveLun("v", "127.0.0.3");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->ip, "127.0.0.3");
  EXPECT_EQ(m->epoch, a->epoch);
  auto luns = *db_->LunsOfVolume("v");
  ASSERT_EQ(luns.size(), 1u);
  EXPECT_EQ(luns[0].target, "127.0.0.3");
  EXPECT_TRUE(luns[0].switchable);
  // The source's last LUN goes with its iSCSI target, after the destination has it.
  EXPECT_LT(peers_.IndexOf("tgt.addlun 127.0.0.3"), peers_.IndexOf("tgt.delete 127.0.0.2"));
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].tids.count("iqn.2026-11.io.ferry:v"), 0u);
  // A failed add leaves the source untouched.
  peers_.fail_next = "tgt.addlun";
  EXPECT_FALSE(be_->MoveLun("v", "127.0.0.2").ok());
  luns = *db_->LunsOfVolume("v");
  ASSERT_EQ(luns.size(), 1u);
  EXPECT_EQ(luns[0].target, "127.0.0.3");
}

TEST_F(BackendTest, ExtendSnapshotRevert) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("v", kGiB, "", "").ok());
  ASSERT_TRUE(be_->AddLun("v", "127.0.0.2", "").ok());
  auto e = be_->ExtendVolume("v", 2 * kGiB);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->row.size, 2 * kGiB);
  EXPECT_EQ(peers_.Count("tgt.resize"), 1);
  EXPECT_EQ(be_->ExtendVolume("v", kGiB).status().code(), Status::Code::kInvalidArgument);
  auto s = be_->CreateSnapshot("v", "s1");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(be_->CreateSnapshot("v", "s1").ok());  // retry
  EXPECT_EQ(peers_.Count("gw.snap"), 1);
  EXPECT_EQ(be_->RevertVolume("v", "s1").code(), Status::Code::kConflict);  // exported
  ASSERT_TRUE(be_->DelLun("v", "").ok());
  EXPECT_TRUE(be_->RevertVolume("v", "s1").ok());
  EXPECT_EQ(be_->RevertVolume("v", "nope").code(), Status::Code::kNotFound);
  auto c = be_->CreateVolume("clone", 2 * kGiB, "v", "s1");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->row.source, "v@s1");
  EXPECT_EQ(be_->DeleteVolume("v").code(), Status::Code::kConflict);  // has a snapshot
  EXPECT_EQ(peers_.Count("gw.delete"), 0);
  ASSERT_TRUE(be_->DeleteSnapshot("v", "s1").ok());
  EXPECT_EQ(be_->DeleteVolume("v").code(), Status::Code::kOk);
  EXPECT_TRUE(be_->DeleteSnapshot("clone", "x").code() == Status::Code::kNotFound);
}

TEST_F(BackendTest, HeartbeatsMarkOfflineAndBackOnline) {
  BackendOptions o;
  // 600 ms without a beat: long enough that a loaded machine's scheduling
  // stalls between a beat and the check do not count as missed beats.
  o.heartbeat_period = std::chrono::milliseconds(200);
  o.heartbeat_miss = 3;
  Reopen(o);
  Cluster();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((*db_->GetTarget("127.0.0.2"))->online && std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(be_->RegisterTarget("127.0.0.3", 3260, "127.0.0.3:8890").ok());  // only .3 beats
    be_->CheckHeartbeats();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_FALSE((*db_->GetTarget("127.0.0.2"))->online);
  EXPECT_TRUE((*db_->GetTarget("127.0.0.3"))->online);
  ASSERT_TRUE(be_->RegisterTarget("127.0.0.2", 3260, "127.0.0.2:8890").ok());
  EXPECT_TRUE((*db_->GetTarget("127.0.0.2"))->online);
}

TEST_F(BackendTest, TimeoutsAreSavedForwardedAndShown) {
  Cluster();
  ASSERT_TRUE(be_->SetTimeout("read", 30, "").ok());
  ASSERT_TRUE(be_->SetTimeout("recovery", 60, "127.0.0.3").ok());
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].timeouts["read"], 30);
  EXPECT_EQ(peers_.tgts["127.0.0.3:8890"].timeouts["recovery"], 60);
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].timeouts.count("recovery"), 0u);
  auto all = be_->ShowTimeouts("");
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].values["read"], 30);
  EXPECT_EQ((*all)[0].values["recovery"], 120);
  EXPECT_EQ((*all)[1].values["recovery"], 60);
  EXPECT_EQ((*all)[1].values["readretry"], 86400);
  EXPECT_EQ(be_->ShowTimeouts("127.0.0.9").status().code(), Status::Code::kNotFound);
  // A target that cannot be reached: saved, reported.
  peers_.down.insert("127.0.0.2:8890");
  EXPECT_EQ(be_->SetTimeout("write", 20, "").code(), Status::Code::kUnavailable);
  EXPECT_EQ((*be_->ShowTimeouts("127.0.0.2"))[0].values["write"], 20);
}

TEST_F(BackendTest, FixedModeOverridesPlacement) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("v", kGiB, "", "").ok());
  EXPECT_EQ(be_->SetFixedMode("127.0.0.9:8585").code(), Status::Code::kNotFound);
  ASSERT_TRUE(be_->SetFixedMode("127.0.0.1:8586").ok());
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].fixed, "127.0.0.1:8586");
  auto p = be_->AddLun("v", "127.0.0.2", "");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->gateway, "127.0.0.1:8586");
  ASSERT_TRUE(be_->ClearFixedMode().ok());
  EXPECT_EQ(peers_.tgts["127.0.0.2:8890"].fixed, "");
}

TEST_F(BackendTest, ReconcileFinishesOrUndoesEveryTransitionalState) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("done", kGiB, "", "").ok());
  ASSERT_TRUE(be_->CreateVolume("keep", kGiB, "", "").ok());
  ASSERT_TRUE(be_->AddLun("keep", "127.0.0.2", "").ok());
  // As if the backend died at various points:
  // creating, reached the gateway
  ASSERT_TRUE(log_->Commit(Event{"volume.creating", {{"name", "c1"}, {"size", std::to_string(kGiB)}, {"gateway", "127.0.0.1:8585"}}}).ok());
  peers_.vols["c1"].name = "c1";
  peers_.vols["c1"].size = kGiB;
  // creating, never reached the gateway
  ASSERT_TRUE(log_->Commit(Event{"volume.creating", {{"name", "c2"}, {"size", "1"}, {"gateway", "127.0.0.1:8585"}}}).ok());
  // snapshotting, reached the gateway
  ASSERT_TRUE(log_->Commit(Event{"volume.state", {{"name", "done"}, {"state", "snapshotting"}}}).ok());
  peers_.vols["done"].snapshots.push_back({"s9", kGiB, 7});
  // lun adding, reached the target
  ASSERT_TRUE(be_->CreateVolume("la", kGiB, "", "").ok());
  ASSERT_TRUE(be_->AddLun("la", "127.0.0.3", "").ok());
  ASSERT_TRUE(log_->Commit(Event{"lun.state", {{"volume", "la"}, {"target", "127.0.0.3"}, {"state", "adding"}}}).ok());
  // lun adding, never reached the target
  ASSERT_TRUE(be_->CreateVolume("lb", kGiB, "", "").ok());
  Event e{"lun.put", {}};
  e.Set("volume", "lb").Set("target", "127.0.0.3").Set("iqn", "iqn.2026-11.io.ferry:lb").Set("lun", 1)
      .Set("state", "adding").Set("gateway", "127.0.0.1:8585").Set("epoch", 1);
  ASSERT_TRUE(log_->Commit(e).ok());
  // lun removing, target already dropped it
  ASSERT_TRUE(be_->CreateVolume("lr", kGiB, "", "").ok());
  auto pr = be_->AddLun("lr", "127.0.0.3", "");
  ASSERT_TRUE(pr.ok());
  ASSERT_TRUE(peers_.TgtDeleteLun("127.0.0.3:8890", pr->iqn, 1).ok());
  ASSERT_TRUE(log_->Commit(Event{"lun.state", {{"volume", "lr"}, {"target", "127.0.0.3"}, {"state", "removing"}}}).ok());
  // orphan LUN on a target that the map does not know
  ASSERT_TRUE(peers_.TgtCreateTarget("127.0.0.2:8890", "iqn.2026-11.io.ferry:orphan", {}).ok());
  LunSpec os;
  os.volume = "orphan";
  ASSERT_TRUE(peers_.TgtAddLun("127.0.0.2:8890", "iqn.2026-11.io.ferry:orphan", os).ok());
  // lost mapping: the target forgot "keep", and a switch meanwhile raised its
  // epoch at the gateway beyond the map's (joining at the map's would be fenced)
  peers_.tgts["127.0.0.2:8890"].luns.erase("iqn.2026-11.io.ferry:keep");
  const int64_t keep_was = Lun("keep", "127.0.0.2").epoch;
  peers_.vols["keep"].epoch = keep_was + 5;

  ReconcileReport rep = be_->Reconcile();
  EXPECT_EQ(rep.skipped, 0);
  EXPECT_EQ(rep.orphans, 1);
  EXPECT_EQ((*db_->GetVolume("c1"))->state, "available");
  EXPECT_FALSE(db_->GetVolume("c2")->has_value());
  EXPECT_EQ((*db_->GetVolume("done"))->state, "available");
  EXPECT_EQ(db_->ListSnapshots("done")->size(), 1u);
  EXPECT_EQ(Lun("la", "127.0.0.3").state, "ready");
  EXPECT_TRUE(db_->LunsOfVolume("lb")->empty());
  EXPECT_TRUE(db_->LunsOfVolume("lr")->empty());
  EXPECT_EQ(peers_.FindLun("127.0.0.2:8890", "orphan"), nullptr);
  auto* kept = peers_.FindLun("127.0.0.2:8890", "keep");
  ASSERT_NE(kept, nullptr);
  EXPECT_TRUE(kept->spec.raise_epoch);
  EXPECT_EQ(kept->epoch, keep_was + 6);  // above the gateway's, and the map follows
  EXPECT_EQ(Lun("keep", "127.0.0.2").epoch, keep_was + 6);
  EXPECT_EQ((*db_->GetVolume("keep"))->epoch, keep_was + 6);
  EXPECT_EQ(kept->spec.gateways.size(), 2u);  // every online gateway, not only the one it was on
  for (auto& v : Val(db_->ListVolumes())) EXPECT_EQ(v.state, "available") << v.name;
  for (auto& l : Val(db_->ListLuns())) EXPECT_EQ(l.state, "ready") << l.volume;
  // Converged: a second pass has nothing to do.
  ReconcileReport again = be_->Reconcile();
  EXPECT_EQ(again.fixed + again.orphans + again.skipped, 0) << (again.actions.empty() ? "" : again.actions[0]);
}

// A target that lost one side of a live migration gets it back joined to the
// other side where it is now (its gateway and epoch), never at a new epoch
// that would fence the side still serving the VM.
TEST_F(BackendTest, ReconcileRejoinsALostMigrationPartnerAtItsCurrentEpoch) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("mig", kGiB, "", "").ok());
  ASSERT_TRUE(be_->AddLun("mig", "127.0.0.2", "").ok());
  ASSERT_TRUE(be_->AddLun("mig", "127.0.0.3", "").ok());  // the destination joins
  // The source switched gateways meanwhile (epoch raised), then the destination lost its state.
  auto* src = peers_.FindLun("127.0.0.2:8890", "mig");
  ASSERT_NE(src, nullptr);
  src->epoch += 3;
  src->current = "127.0.0.1:8586";
  peers_.vols["mig"].epoch = src->epoch;
  peers_.tgts["127.0.0.3:8890"].luns.clear();
  ReconcileReport rep = be_->Reconcile();
  EXPECT_EQ(rep.skipped, 0);
  auto* dst = peers_.FindLun("127.0.0.3:8890", "mig");
  ASSERT_NE(dst, nullptr);
  EXPECT_FALSE(dst->spec.raise_epoch);
  EXPECT_EQ(dst->epoch, src->epoch);
  EXPECT_EQ(dst->current, "127.0.0.1:8586");
  EXPECT_EQ(Lun("mig", "127.0.0.3").epoch, src->epoch);
  EXPECT_EQ(peers_.vols["mig"].epoch, src->epoch);  // nobody was fenced
}

// Applying the event log to an empty database rebuilds the same map: events
// are the only path by which state changes (what a second backend relies on).
TEST_F(BackendTest, ReplayingTheEventLogRebuildsTheMap) {
  Cluster();
  ASSERT_TRUE(be_->CreateVolume("a", kGiB, "", "").ok());
  ASSERT_TRUE(be_->CreateVolume("b", 2 * kGiB, "", "").ok());
  ASSERT_TRUE(be_->AddLun("a", "127.0.0.2", "").ok());
  ASSERT_TRUE(be_->AddLun("a", "127.0.0.3", "").ok());
  ASSERT_TRUE(be_->CreateSnapshot("b", "s").ok());
  ASSERT_TRUE(be_->ExtendVolume("b", 3 * kGiB).ok());
  ASSERT_TRUE(be_->Attach("b", Connector{"127.0.0.3", "h", "iqn.x:h", "{}"}).ok());
  ASSERT_TRUE(be_->SetTimeout("read", 33, "").ok());
  ASSERT_TRUE(be_->DelLun("a", "127.0.0.2").ok());

  auto other = db::Database::Open(dir_ + "/replica.db");
  ASSERT_TRUE(other.ok());
  EventLog replica(other->get());
  auto events = db_->EventsAfter(0, 100000);
  ASSERT_TRUE(events.ok());
  for (auto& er : *events) {
    auto e = Event::FromJson(er.type, er.payload);
    ASSERT_TRUE(e.ok());
    ASSERT_TRUE(replica.Replay(er.seq, *e).ok()) << er.type;
  }
  // Replaying again is a no-op (each seq applies once).
  auto e0 = Event::FromJson((*events)[0].type, (*events)[0].payload);
  EXPECT_EQ(replica.Replay((*events)[0].seq, *e0).code(), Status::Code::kAlreadyExists);
  auto dump = [](db::Database* d) {
    std::string s;
    for (auto& v : Val(d->ListVolumes()))
      s += v.name + "|" + std::to_string(v.size) + "|" + v.state + "|" + v.preferred_gw + "|" + std::to_string(v.epoch) + ";";
    for (auto& l : Val(d->ListLuns()))
      s += l.volume + "@" + l.target + "|" + l.iqn + "|" + std::to_string(l.lun) + "|" + l.state + "|" +
           std::to_string(l.switchable) + "|" + std::to_string(l.epoch) + ";";
    for (auto& t : Val(d->ListTargets())) s += t.ip + "|" + t.admin + ";";
    for (auto& g : Val(d->ListGateways())) s += g.addr + "|" + g.admin + ";";
    for (auto& a : Val(d->AttachmentsOf("b"))) s += a.host + "|" + a.target + ";";
    s += d->ListSnapshots("b")->at(0).name;
    s += d->GetSetting("", "timeout.read")->value_or("-");
    return s;
  };
  EXPECT_EQ(dump(db_.get()), dump(other->get()));
}

TEST_F(BackendTest, ConcurrentOperationsOnDifferentVolumes) {
  Cluster();
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        std::string n = "c" + std::to_string(t) + "_" + std::to_string(i);
        if (be_->CreateVolume(n, kGiB, "", "").ok() && be_->AddLun(n, "", "").ok() && be_->DelLun(n, "").ok()) ++ok;
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 80);
  EXPECT_EQ(*db_->CountVolumes(), 80);
  EXPECT_TRUE(db_->ListLuns()->empty());
}

TEST(EventTest, PayloadIsJsonThatRoundTripsEveryCharacter) {
  Event e{"x", {}};
  e.Set("plain", "vol-1").Set("quote", "a\"b").Set("slash", "a\\b/c").Set("ctl", std::string("\n\t\r\x01\x1f", 5))
      .Set("utf8", "\xc3\xa9t\xc3\xa9").Set("num", int64_t{-42}).Set("empty", "");
  const std::string j = e.PayloadJson();
  EXPECT_EQ(j.front(), '{');
  EXPECT_EQ(j.back(), '}');
  EXPECT_EQ(j.find('\n'), std::string::npos);
  auto back = Event::FromJson("x", j);
  ASSERT_TRUE(back.ok()) << back.status().ToString() << " in " << j;
  EXPECT_EQ(back->fields, e.fields);
  EXPECT_EQ(Event{}.PayloadJson(), "{}");
}

}  // namespace
}  // namespace ferry::backend
