// Unit tests of the Registry (targets, LUNs, persistence, ACL) over RAM volumes.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include "target/scsi/target.h"
#include "target/server/registry.h"
#include "tests/target/fake_volume.h"

namespace ferry::server {
namespace {

using testing::FakeFactory;

const char* kIqn = "iqn.2026-11.io.ferry:t1";

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry-registry-XXXXXX";
    dir_ = mkdtemp(tmpl);
    file_ = std::make_unique<StateFile>(dir_);
    ASSERT_TRUE(file_->Init().ok());
    reg_ = NewRegistry(false);
  }
  void TearDown() override {
    reg_.reset();
    std::string cmd = "rm -rf '" + dir_ + "'";
    EXPECT_EQ(system(cmd.c_str()), 0);
  }
  std::unique_ptr<Registry> NewRegistry(bool demo_open, FakeFactory* f = nullptr) {
    Registry::Options o;
    o.demo_open = demo_open;
    o.log = Logger("registry", LogLevel::kError);
    auto r = std::make_unique<Registry>(o, file_.get(), f ? f : &factory_);
    EXPECT_TRUE(r->Restore().ok());
    return r;
  }
  LunRequest Req(const std::string& vol) {
    LunRequest r;
    r.volume = vol;
    r.gateways = {"127.0.0.1:8585", "127.0.0.1:8586"};
    return r;
  }
  void MakeTarget(const std::string& iqn = kIqn) {
    bool created = false;
    auto t = reg_->CreateTarget(iqn, false, Acl{{"iqn.init:a"}, {}}, Chap{}, &created);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    ASSERT_TRUE(created);
  }
  std::shared_ptr<scsi::Target> Scsi(const std::string& iqn = kIqn) {
    auto e = reg_->Find(iqn);
    if (!e) return nullptr;
    return std::dynamic_pointer_cast<scsi::Target>(e->sink);
  }
  // What the registry serves is exactly what a restart would load.
  void ExpectServedEqualsDisk() {
    ServerState disk = OnDisk();
    std::vector<TargetSpec> served = reg_->Targets();
    ASSERT_EQ(served.size(), disk.targets.size());
    for (const auto& t : served) {
      ASSERT_TRUE(disk.targets.count(t.iqn)) << t.iqn;
      EXPECT_EQ(disk.targets.at(t.iqn), t) << t.iqn;
    }
    EXPECT_EQ(disk.timeouts, reg_->Timeouts());
    EXPECT_EQ(disk.fixed_gateway, reg_->FixedGateway());
  }
  ServerState OnDisk() {
    auto s = file_->Load();
    EXPECT_TRUE(s.ok());
    return s.ok() ? s.value() : ServerState{};
  }

  std::string dir_;
  std::unique_ptr<StateFile> file_;
  FakeFactory factory_;
  std::unique_ptr<Registry> reg_;
};

// Group commit: concurrent changes share state writes, and every caller still
// gets its own answer; the file holds all of them; same-iqn races give one target.
TEST_F(RegistryTest, ConcurrentChangesAreAllPersistedWithDistinctTidsAndLuns) {
  constexpr int kThreads = 16;
  std::vector<std::thread> ts;
  std::vector<Status> results(kThreads);
  std::vector<uint32_t> luns(kThreads);
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&, i] {
      std::string iqn = "iqn.2026-11.io.ferry:c" + std::to_string(i);
      bool created = false;
      auto t = reg_->CreateTarget(iqn, false, Acl{{"iqn.init:a"}, {}}, Chap{}, &created);
      if (!t.ok() || !created) {
        results[i] = t.ok() ? Status::Internal("not created") : t.status();
        return;
      }
      auto l = reg_->AddLun(iqn, Req("cv" + std::to_string(i)));
      if (l.ok()) luns[i] = l->lun;
      results[i] = l.status();
      // Everyone also races on one shared iqn: exactly one creates it.
      bool c2 = false;
      auto shared = reg_->CreateTarget("iqn.2026-11.io.ferry:shared", false, Acl{{"iqn.init:a"}, {}}, Chap{}, &c2);
      if (!shared.ok()) results[i] = shared.status();
    });
  for (auto& t : ts) t.join();
  std::set<uint32_t> tids;
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_TRUE(results[i].ok()) << i << ": " << results[i].ToString();
    EXPECT_EQ(luns[i], 1u);
  }
  ServerState disk = OnDisk();
  EXPECT_EQ(disk.targets.size(), static_cast<size_t>(kThreads + 1));
  for (auto& [iqn, t] : disk.targets) {
    tids.insert(t.tid);
    if (iqn != "iqn.2026-11.io.ferry:shared") {
      EXPECT_EQ(t.luns.size(), 1u) << iqn;
    }
  }
  EXPECT_EQ(tids.size(), static_cast<size_t>(kThreads + 1));
  // Concurrent removals too; a second removal of the same LUN is "not found".
  ts.clear();
  for (int i = 0; i < kThreads; ++i)
    ts.emplace_back([&, i] { results[i] = reg_->RemoveLun("iqn.2026-11.io.ferry:c" + std::to_string(i), 1); });
  for (auto& t : ts) t.join();
  for (int i = 0; i < kThreads; ++i) EXPECT_TRUE(results[i].ok()) << results[i].ToString();
  EXPECT_EQ(reg_->RemoveLun("iqn.2026-11.io.ferry:c0", 1).code(), Status::Code::kNotFound);
  for (auto& [iqn, t] : OnDisk().targets) EXPECT_TRUE(t.luns.empty()) << iqn;
  ExpectServedEqualsDisk();
}

TEST_F(RegistryTest, CreateTargetAssignsTidsAndIsIdempotent) {
  bool created = false;
  auto a = reg_->CreateTarget("iqn.2026-11.io.ferry:a", false, {}, {}, &created);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(created);
  EXPECT_EQ(a->tid, 1u);
  auto b = reg_->CreateTarget("iqn.2026-11.io.ferry:b", true, {}, {}, &created);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->tid, 2u);
  auto again = reg_->CreateTarget("iqn.2026-11.io.ferry:a", false, {}, {}, &created);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(created);
  EXPECT_EQ(again->tid, 1u);
  auto other = reg_->CreateTarget("iqn.2026-11.io.ferry:a", true, {}, {}, &created);
  EXPECT_EQ(other.status().code(), Status::Code::kAlreadyExists);
  EXPECT_EQ(reg_->CreateTarget("not-an-iqn", false, {}, {}, &created).status().code(),
            Status::Code::kInvalidArgument);
  Chap bad;
  bad.user = "u";
  EXPECT_EQ(reg_->CreateTarget("iqn.2026-11.io.ferry:c", false, {}, bad, &created).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(OnDisk().targets.size(), 2u);
  // Delete a, the lowest tid is reused.
  ASSERT_TRUE(reg_->DeleteTarget("iqn.2026-11.io.ferry:a").ok());
  EXPECT_EQ(reg_->DeleteTarget("iqn.2026-11.io.ferry:a").code(), Status::Code::kNotFound);
  auto c = reg_->CreateTarget("iqn.2026-11.io.ferry:c", false, {}, {}, &created);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->tid, 1u);
}

TEST_F(RegistryTest, AddLunDefaultsAndConflicts) {
  MakeTarget();
  auto l1 = reg_->AddLun(kIqn, Req("v1"));
  ASSERT_TRUE(l1.ok()) << l1.status().ToString();
  EXPECT_EQ(l1->lun, 1u);
  EXPECT_EQ(l1->epoch, 1u);
  EXPECT_EQ(l1->preferred, "127.0.0.1:8585");
  EXPECT_EQ(l1->current, "127.0.0.1:8585");
  EXPECT_EQ(l1->size, factory_.default_size);
  auto l2 = reg_->AddLun(kIqn, Req("v2"));
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2->lun, 2u);
  // Same volume twice in one target.
  EXPECT_EQ(reg_->AddLun(kIqn, Req("v1")).status().code(), Status::Code::kConflict);
  // Explicit LUN in use.
  LunRequest r = Req("v3");
  r.lun = 2;
  EXPECT_EQ(reg_->AddLun(kIqn, r).status().code(), Status::Code::kConflict);
  r.lun = 0;
  auto l0 = reg_->AddLun(kIqn, r);
  ASSERT_TRUE(l0.ok());
  EXPECT_EQ(l0->lun, 0u);
  // Unknown target, bad request.
  EXPECT_EQ(reg_->AddLun("iqn.2026-11.io.ferry:nope", Req("v4")).status().code(), Status::Code::kNotFound);
  LunRequest bad = Req("v4");
  bad.preferred = "127.0.0.1:1";
  EXPECT_EQ(reg_->AddLun(kIqn, bad).status().code(), Status::Code::kInvalidArgument);
  bad = Req("a/b");
  EXPECT_EQ(reg_->AddLun(kIqn, bad).status().code(), Status::Code::kInvalidArgument);
  // The SCSI target serves exactly these LUNs.
  auto scsi = Scsi();
  ASSERT_TRUE(scsi);
  EXPECT_TRUE(scsi->HasLun(0));
  EXPECT_TRUE(scsi->HasLun(1));
  EXPECT_TRUE(scsi->HasLun(2));
  EXPECT_FALSE(scsi->HasLun(3));
  EXPECT_EQ(OnDisk().targets.at(kIqn).luns.size(), 3u);
}

TEST_F(RegistryTest, AddLunCreatesItsTargetInTheSameChange) {
  LunRequest req = Req("v1");
  TargetSpec access;
  access.acl.initiators = {"iqn.init:a"};
  req.create_target = access;
  auto appends = file_->counters().appends;
  AddLunInfo info;
  auto l = reg_->AddLun("iqn.2026-11.io.ferry:new", req, &info);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_TRUE(info.target_created);
  EXPECT_GE(info.tid, 1u);
  EXPECT_EQ(file_->counters().appends, appends + 1);  // one durable change for both
  ASSERT_NE(Scsi("iqn.2026-11.io.ferry:new"), nullptr);
  EXPECT_TRUE(Scsi("iqn.2026-11.io.ferry:new")->HasLun(l->lun));
  EXPECT_TRUE(reg_->Admits("iqn.2026-11.io.ferry:new", "iqn.init:a", "10.0.0.1"));
  // Same settings: the LUN joins the existing target.
  req = Req("v2");
  req.create_target = access;
  auto l2 = reg_->AddLun("iqn.2026-11.io.ferry:new", req, &info);
  ASSERT_TRUE(l2.ok()) << l2.status().ToString();
  EXPECT_FALSE(info.target_created);
  EXPECT_NE(l2->lun, l->lun);
  // Other settings: refused, nothing changes.
  req = Req("v3");
  TargetSpec other;
  other.acl.initiators = {"iqn.init:b"};
  req.create_target = other;
  EXPECT_EQ(reg_->AddLun("iqn.2026-11.io.ferry:new", req).status().code(), Status::Code::kAlreadyExists);
  EXPECT_TRUE(factory_.Last("v3") == nullptr || factory_.Last("v3")->stopped());
  // Without create_target a missing target is still "not found".
  EXPECT_EQ(reg_->AddLun("iqn.2026-11.io.ferry:none", Req("v4")).status().code(), Status::Code::kNotFound);
  EXPECT_EQ(OnDisk().targets.at("iqn.2026-11.io.ferry:new").luns.size(), 2u);
  ExpectServedEqualsDisk();
}

TEST_F(RegistryTest, RaiseEpochKeepsTheEpochTheGatewayGrantedAndRestoresAtIt) {
  MakeTarget();
  factory_.raise_grant = 12;
  LunRequest r = Req("v1");
  r.epoch = 4;  // the floor
  r.raise_epoch = true;
  auto l = reg_->AddLun(kIqn, r);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ(l->epoch, 12u);
  auto opens = factory_.Opens();
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_EQ(opens[0].second, OpenMode::kRaise);
  EXPECT_EQ(opens[0].first.epoch, 4u);
  EXPECT_EQ(OnDisk().targets.at(kIqn).luns.at(l->lun).epoch, 12u);
  ExpectServedEqualsDisk();
  // A restart joins at the granted epoch; it never raises again.
  reg_.reset();
  FakeFactory f2;
  reg_ = NewRegistry(false, &f2);
  ASSERT_EQ(f2.Opens().size(), 1u);
  EXPECT_EQ(f2.Opens()[0].second, OpenMode::kRestore);
  EXPECT_EQ(f2.Opens()[0].first.epoch, 12u);
}

TEST_F(RegistryTest, RaiseEpochNeverFencesAVolumeThisTargetServesOrRacesAnotherRaise) {
  const std::string kOther = "iqn.2026-11.io.ferry:other";
  MakeTarget();
  MakeTarget(kOther);
  ASSERT_TRUE(reg_->AddLun(kIqn, Req("v1")).ok());
  LunRequest r = Req("v1");
  r.raise_epoch = true;
  auto again = reg_->AddLun(kOther, r);
  EXPECT_EQ(again.status().code(), Status::Code::kConflict);
  EXPECT_NE(again.status().message().find("would fence it"), std::string::npos) << again.status().ToString();
  EXPECT_EQ(factory_.Opens().size(), 1u);  // refused before any gateway was asked
  // Two raises of one volume at once: the second is refused while the first opens.
  factory_.Gate("v2");
  LunRequest r2 = Req("v2");
  r2.raise_epoch = true;
  auto first = std::async(std::launch::async, [&] { return reg_->AddLun(kIqn, r2); });
  ASSERT_TRUE(factory_.WaitForWaiter(std::chrono::seconds(10)));
  EXPECT_EQ(reg_->AddLun(kOther, r2).status().code(), Status::Code::kConflict);
  factory_.Release("v2");
  ASSERT_TRUE(first.get().ok());
  // Once it is in, the volume is served here: a raise elsewhere on this target is refused.
  EXPECT_EQ(reg_->AddLun(kOther, r2).status().code(), Status::Code::kConflict);
  // A refused or failed raise releases the volume: after the LUN goes, a raise works.
  ASSERT_TRUE(reg_->RemoveLun(kIqn, 2).ok());
  EXPECT_TRUE(reg_->AddLun(kOther, r2).ok());
}

TEST_F(RegistryTest, LiveMigrationJoinKeepsEpochAndCurrent) {
  MakeTarget();
  LunRequest r = Req("v1");
  r.preferred = "127.0.0.1:8585";
  r.current = "127.0.0.1:8586";
  r.epoch = 9;
  r.switchable = false;
  auto l = reg_->AddLun(kIqn, r);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->current, "127.0.0.1:8586");
  EXPECT_EQ(l->epoch, 9u);
  auto opens = factory_.Opens();
  ASSERT_EQ(opens.size(), 1u);
  EXPECT_EQ(opens[0].first.epoch, 9u);
  EXPECT_EQ(opens[0].first.current, "127.0.0.1:8586");
  EXPECT_FALSE(opens[0].first.switchable);
  EXPECT_EQ(opens[0].second, OpenMode::kJoin);  // the API requires a gateway to answer
}

TEST_F(RegistryTest, UnreachableGatewayChangesNothing) {
  MakeTarget();
  factory_.Unreachable("v1");
  auto l = reg_->AddLun(kIqn, Req("v1"));
  EXPECT_EQ(l.status().code(), Status::Code::kUnavailable);
  EXPECT_TRUE(OnDisk().targets.at(kIqn).luns.empty());
  EXPECT_FALSE(Scsi()->HasLun(1));
  // The LUN number is free again.
  auto l2 = reg_->AddLun(kIqn, Req("v2"));
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2->lun, 1u);
}

TEST_F(RegistryTest, RemoveLunStopsVolume) {
  MakeTarget();
  ASSERT_TRUE(reg_->AddLun(kIqn, Req("v1")).ok());
  auto vol = factory_.Last("v1");
  ASSERT_TRUE(vol);
  EXPECT_EQ(reg_->RemoveLun(kIqn, 7).code(), Status::Code::kNotFound);
  ASSERT_TRUE(reg_->RemoveLun(kIqn, 1).ok());
  EXPECT_TRUE(vol->stopped());
  EXPECT_FALSE(Scsi()->HasLun(1));
  EXPECT_TRUE(OnDisk().targets.at(kIqn).luns.empty());
}

TEST_F(RegistryTest, DeleteTargetDropsSessionsAndStopsVolumes) {
  MakeTarget();
  ASSERT_TRUE(reg_->AddLun(kIqn, Req("v1")).ok());
  std::vector<std::string> dropped;
  reg_->SetSessionHooks({[&](const std::string& iqn) {
    dropped.push_back(iqn);
    return size_t{1};
  }});
  ASSERT_TRUE(reg_->DeleteTarget(kIqn).ok());
  EXPECT_EQ(dropped, std::vector<std::string>{kIqn});
  EXPECT_TRUE(factory_.Last("v1")->stopped());
  EXPECT_FALSE(reg_->Find(kIqn).has_value());
  EXPECT_TRUE(OnDisk().targets.empty());
}

TEST_F(RegistryTest, RestartRestoresEverythingWithoutGateways) {
  bool created = false;
  Chap chap{"user", "secret-123456", "", ""};
  ASSERT_TRUE(reg_->CreateTarget(kIqn, false, Acl{{"iqn.init:a"}, {"127.0.0.0/8"}}, chap, &created).ok());
  ASSERT_TRUE(reg_->AddLun(kIqn, Req("v1")).ok());
  LunRequest r = Req("v2");
  r.lun = 5;
  ASSERT_TRUE(reg_->AddLun(kIqn, r).ok());
  ASSERT_TRUE(reg_->SetTimeout("read", 7).ok());
  ASSERT_TRUE(reg_->SetFixedGateway("127.0.0.1:8586").ok());
  // A switch happens; the registry persists it in the background.
  factory_.Last("v1")->Switch("127.0.0.1:8586", 2);
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (OnDisk().targets.at(kIqn).luns.at(1).epoch != 2 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(OnDisk().targets.at(kIqn).luns.at(1).epoch, 2u);
  EXPECT_EQ(OnDisk().targets.at(kIqn).luns.at(1).current, "127.0.0.1:8586");
  reg_.reset();

  FakeFactory f2;
  f2.Unreachable("v1");  // gateways down at restart: LUNs must still come back
  f2.Unreachable("v2");
  reg_ = NewRegistry(false, &f2);
  auto opens = f2.Opens();
  ASSERT_EQ(opens.size(), 2u);
  for (auto& [spec, mode] : opens) EXPECT_EQ(mode, OpenMode::kRestore);
  EXPECT_EQ(opens[0].first.volume, "v1");
  EXPECT_EQ(opens[0].first.epoch, 2u);
  EXPECT_EQ(opens[0].first.current, "127.0.0.1:8586");
  EXPECT_EQ(opens[0].first.size, factory_.default_size);
  EXPECT_EQ(opens[1].first.lun, 5u);
  EXPECT_EQ(*f2.timeouts().Get("read"), 7);
  EXPECT_EQ(f2.fixed(), "127.0.0.1:8586");
  auto scsi = Scsi();
  ASSERT_TRUE(scsi);
  EXPECT_TRUE(scsi->HasLun(1));
  EXPECT_TRUE(scsi->HasLun(5));
  auto e = reg_->Find(kIqn);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->auth.chap_user, "user");
  EXPECT_EQ(e->auth.chap_secret, "secret-123456");
  EXPECT_TRUE(reg_->Admits(kIqn, "iqn.init:a", "127.0.0.1"));
  reg_.reset();
}

// Every change must be refused, and nothing applied, when it cannot be made durable.
void ExpectChangesRefused(Registry* reg, FakeFactory* factory, const std::shared_ptr<scsi::Target>& scsi) {
  LunRequest req;
  req.volume = "v1";
  req.gateways = {"127.0.0.1:8585", "127.0.0.1:8586"};
  auto l = reg->AddLun(kIqn, req);
  EXPECT_FALSE(l.ok());
  EXPECT_FALSE(scsi->HasLun(1));
  EXPECT_TRUE(factory->Last("v1")->stopped());
  EXPECT_TRUE(reg->Targets().front().luns.empty());
  bool created = false;
  EXPECT_FALSE(reg->CreateTarget("iqn.2026-11.io.ferry:x", false, {}, {}, &created).ok());
  EXPECT_FALSE(reg->Find("iqn.2026-11.io.ferry:x").has_value());
  EXPECT_FALSE(reg->SetTimeout("read", 5).ok());
  EXPECT_EQ(*reg->Timeouts().Get("read"), 60);
}

TEST_F(RegistryTest, JournalWriteFailureRefusesTheChange) {
  MakeTarget();
  // No file may grow past its current size: the next journal append fails (EFBIG).
  struct stat st;
  ASSERT_EQ(stat(file_->journal_path().c_str(), &st), 0);
  struct rlimit old;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_sig = signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = static_cast<rlim_t>(st.st_size);
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  ExpectChangesRefused(reg_.get(), &factory_, Scsi());
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, old_sig);
  // The journal holds exactly what was acknowledged, and changes work again.
  StateFile reader(dir_);
  auto back = reader.Load();
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->targets.size(), 1u);
  EXPECT_TRUE(back->targets.begin()->second.luns.empty());
  EXPECT_TRUE(reg_->SetTimeout("read", 5).ok());
}

TEST_F(RegistryTest, SnapshotWriteFailureRefusesTheChange) {
  reg_.reset();
  file_ = std::make_unique<StateFile>(dir_, StateFile::Options{0});  // every change writes a snapshot
  reg_ = NewRegistry(false);
  MakeTarget();
  // A directory where the state file should be makes rename() fail.
  ASSERT_EQ(unlink(file_->path().c_str()), 0);
  ASSERT_EQ(mkdir(file_->path().c_str(), 0700), 0);
  ExpectChangesRefused(reg_.get(), &factory_, Scsi());
  ASSERT_EQ(rmdir(file_->path().c_str()), 0);
}

TEST_F(RegistryTest, AclAndOpenTargets) {
  bool created = false;
  ASSERT_TRUE(reg_->CreateTarget("iqn.2026-11.io.ferry:acl", false,
                                 Acl{{"iqn.init:a", "iqn.init:b"}, {"10.0.0.0/8"}}, {}, &created)
                  .ok());
  ASSERT_TRUE(reg_->CreateTarget("iqn.2026-11.io.ferry:names", false, Acl{{"iqn.init:a"}, {}}, {}, &created).ok());
  ASSERT_TRUE(reg_->CreateTarget("iqn.2026-11.io.ferry:none", false, {}, {}, &created).ok());
  ASSERT_TRUE(reg_->CreateTarget("iqn.2026-11.io.ferry:open", true, {}, {}, &created).ok());
  EXPECT_TRUE(reg_->Admits("iqn.2026-11.io.ferry:acl", "iqn.init:a", "10.1.2.3"));
  EXPECT_FALSE(reg_->Admits("iqn.2026-11.io.ferry:acl", "iqn.init:a", "11.1.2.3"));
  EXPECT_FALSE(reg_->Admits("iqn.2026-11.io.ferry:acl", "iqn.init:c", "10.1.2.3"));
  EXPECT_TRUE(reg_->Admits("iqn.2026-11.io.ferry:names", "iqn.init:a", "192.168.1.1"));
  EXPECT_FALSE(reg_->Admits("iqn.2026-11.io.ferry:none", "iqn.init:a", "127.0.0.1"));  // empty ACL: nobody
  // Without --demo-open, "open" means nothing.
  EXPECT_FALSE(reg_->Admits("iqn.2026-11.io.ferry:open", "iqn.any", "127.0.0.1"));
  EXPECT_FALSE(reg_->Admits("iqn.2026-11.io.ferry:missing", "iqn.init:a", "10.1.2.3"));
  auto d = reg_->Discover("iqn.init:a", "10.1.2.3", "127.0.0.1:3260");
  ASSERT_EQ(d.size(), 2u);
  reg_.reset();
  reg_ = NewRegistry(true);
  EXPECT_TRUE(reg_->Admits("iqn.2026-11.io.ferry:open", "iqn.any", "127.0.0.5"));
  EXPECT_TRUE(reg_->Admits("iqn.2026-11.io.ferry:open", "iqn.any", "::1"));
  EXPECT_FALSE(reg_->Admits("iqn.2026-11.io.ferry:open", "iqn.any", "10.0.0.1"));  // loopback only
  EXPECT_EQ(reg_->Discover("iqn.any", "127.0.0.1", "127.0.0.1:3260").size(), 1u);
  // ACL changes apply to new logins at once.
  ASSERT_TRUE(reg_->SetAcl("iqn.2026-11.io.ferry:none", Acl{{"iqn.init:z"}, {}}).ok());
  EXPECT_TRUE(reg_->Admits("iqn.2026-11.io.ferry:none", "iqn.init:z", "127.0.0.1"));
  EXPECT_EQ(reg_->SetAcl("iqn.2026-11.io.ferry:missing", {}).code(), Status::Code::kNotFound);
  EXPECT_EQ(reg_->SetAcl("iqn.2026-11.io.ferry:none", Acl{{}, {"300.1.1.1"}}).code(),
            Status::Code::kInvalidArgument);
}

TEST_F(RegistryTest, ResizeSwitchableTimeoutsFixedMode) {
  MakeTarget();
  ASSERT_TRUE(reg_->AddLun(kIqn, Req("v1")).ok());
  auto vol = factory_.Last("v1");
  vol->SetNextSize(16 << 20);
  auto sz = reg_->Resize("v1");
  ASSERT_TRUE(sz.ok());
  EXPECT_EQ(*sz, 16u << 20);
  EXPECT_EQ(Scsi()->Luns().front().size_bytes, 16u << 20);
  EXPECT_EQ(OnDisk().targets.at(kIqn).luns.at(1).size, 16u << 20);
  EXPECT_EQ(reg_->Resize("nope").status().code(), Status::Code::kNotFound);

  ASSERT_TRUE(reg_->SetSwitchable("v1", false).ok());
  EXPECT_FALSE(vol->switchable());
  EXPECT_FALSE(OnDisk().targets.at(kIqn).luns.at(1).switchable);
  EXPECT_EQ(reg_->SetSwitchable("nope", false).code(), Status::Code::kNotFound);

  EXPECT_EQ(reg_->SetTimeout("recovery", 15).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(reg_->SetTimeout("bogus", 15).code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(reg_->SetTimeout("recovery", 30).ok());
  EXPECT_EQ(*factory_.timeouts().Get("recovery"), 30);
  EXPECT_EQ(OnDisk().timeouts.recovery, 30);

  EXPECT_EQ(reg_->SetFixedGateway("nope").code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(reg_->SetFixedGateway("127.0.0.1:8586").ok());
  EXPECT_EQ(factory_.fixed(), "127.0.0.1:8586");
  ASSERT_TRUE(reg_->SetFixedGateway("").ok());
  EXPECT_EQ(factory_.fixed(), "");
  EXPECT_EQ(reg_->StatusRows().size(), 1u);
  ExpectServedEqualsDisk();
}

// Opening a slow gateway for one LUN must not block logins, status, or adding
// another LUN.
TEST_F(RegistryTest, SlowLunOpenDoesNotBlockOthers) {
  MakeTarget();
  factory_.Gate("slow");
  auto slow = std::async(std::launch::async, [&] { return reg_->AddLun(kIqn, Req("slow")); });
  ASSERT_TRUE(factory_.WaitForWaiter(std::chrono::seconds(10)));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(reg_->Find(kIqn).has_value());
  EXPECT_TRUE(reg_->Admits(kIqn, "iqn.init:a", "127.0.0.1"));
  auto fast = reg_->AddLun(kIqn, Req("fast"));
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_EQ(fast->lun, 2u);  // lun 1 is reserved by the pending add
  EXPECT_EQ(reg_->StatusRows().size(), 1u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  factory_.Release("slow");
  auto s = slow.get();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->lun, 1u);
  EXPECT_EQ(OnDisk().targets.at(kIqn).luns.size(), 2u);
}

}  // namespace
}  // namespace ferry::server
