// Tests of db::Database against real SQLite files in a fresh temp directory.
#include "db/database.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace ferry::db {
namespace {

class DbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ferry_db_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/ferry.db";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Database> OpenOk(Database::Options o = {}) {
    auto r = Database::Open(path_, o);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? std::move(r).value() : nullptr;
  }
  // Raw SQL on the file, as an older program version (or another process) would.
  void Raw(const std::string& sql) {
    sqlite3* h = nullptr;
    ASSERT_EQ(sqlite3_open(path_.c_str(), &h), SQLITE_OK);
    char* err = nullptr;
    int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(h);
  }
  std::string dir_, path_;
};

VolumeRow Vol(const std::string& name, int64_t size = 1 << 30) {
  VolumeRow v;
  v.name = name;
  v.size = size;
  v.state = "available";
  v.preferred_gw = "127.0.0.1:8585";
  v.created = 1;
  return v;
}

TEST_F(DbTest, FreshFileHasLatestSchemaWalAndForeignKeys) {
  auto db = OpenOk();
  ASSERT_TRUE(db);
  EXPECT_EQ(db->version(), kSchemaVersion);
  EXPECT_EQ(db->journal_mode(), "wal");
  EXPECT_TRUE(db->foreign_keys());
  EXPECT_TRUE(std::filesystem::exists(path_ + "-wal"));
}

TEST_F(DbTest, WriteCommitsAndSurvivesReopen) {
  {
    auto db = OpenOk();
    ASSERT_TRUE(db->Write([](Txn& t) { return t.PutVolume(Vol("v1")); }).ok());
  }
  auto db = OpenOk();
  auto v = db->GetVolume("v1");
  ASSERT_TRUE(v.ok());
  ASSERT_TRUE(v->has_value());
  EXPECT_EQ((*v)->size, 1 << 30);
  EXPECT_EQ((*v)->preferred_gw, "127.0.0.1:8585");
}

TEST_F(DbTest, FailedWriteLeavesNothingBehind) {
  auto db = OpenOk();
  Status s = db->Write([](Txn& t) {
    FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("a")));
    FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("b")));
    return Status::Conflict("changed my mind");
  });
  EXPECT_EQ(s.code(), Status::Code::kConflict);
  EXPECT_EQ(*db->CountVolumes(), 0);
  // A constraint failure half-way rolls back the earlier statements too.
  s = db->Write([](Txn& t) {
    FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("a")));
    return t.PutVolume(Vol("b", -5));  // CHECK(size >= 0)
  });
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(*db->CountVolumes(), 0);
}

TEST_F(DbTest, ForeignKeysProtectTheMap) {
  auto db = OpenOk();
  LunRow l{"v1", "127.0.0.2", "iqn.x:v1", 1, 1, true, "127.0.0.1:8585", "ready"};
  // LUN of an unknown volume/target is refused.
  EXPECT_EQ(db->Write([&](Txn& t) { return t.PutLun(l); }).code(), Status::Code::kConflict);
  ASSERT_TRUE(db->Write([&](Txn& t) {
                  FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("v1")));
                  FERRY_RETURN_IF_ERROR(t.PutTarget({"127.0.0.2", 3260, "127.0.0.2:8890", true, 5, ""}));
                  return t.PutLun(l);
                }).ok());
  // A volume that still has a LUN cannot vanish.
  EXPECT_EQ(db->Write([](Txn& t) { return t.DeleteVolume("v1"); }).code(), Status::Code::kConflict);
  EXPECT_TRUE(db->GetVolume("v1")->has_value());
  // Snapshots go with their volume.
  ASSERT_TRUE(db->Write([](Txn& t) {
                  FERRY_RETURN_IF_ERROR(t.DeleteLun("v1", "127.0.0.2"));
                  FERRY_RETURN_IF_ERROR(t.PutSnapshot({"v1", "s1", 1 << 30, 2}));
                  return t.DeleteVolume("v1");
                }).ok());
  EXPECT_TRUE(db->ListSnapshots("v1")->empty());
}

TEST_F(DbTest, ConcurrentWritesShareCommitsAndFailOneByOne) {
  // One writer holds the transaction (slow fn) while 12 more queue: they run
  // together in the next transaction, each in its own savepoint. The failing
  // ones leave nothing behind, the others all land, and they cost fewer
  // commits than writes (the generation grows once per commit).
  auto db = OpenOk();
  const uint64_t g0 = db->generation();
  std::atomic<bool> inside{false};
  std::thread slow([&] {
    EXPECT_TRUE(db->Write([&](Txn& t) {
      inside = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      return t.PutVolume(Vol("slow"));
    }).ok());
  });
  while (!inside) std::this_thread::yield();
  std::vector<std::thread> ts;
  std::vector<Status> got(12);
  for (int i = 0; i < 12; ++i)
    ts.emplace_back([&, i] {
      got[i] = db->Write([i](Txn& t) -> Status {
        FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("v" + std::to_string(i))));
        FERRY_RETURN_IF_ERROR(t.AppendEvent(0, "put", "{}", 0).status());
        if (i % 3 == 0) return Status::Conflict("fn " + std::to_string(i) + " refuses");  // after writing
        if (i == 4) throw std::runtime_error("fn 4 throws");
        return Status::Ok();
      });
    });
  for (auto& t : ts) t.join();
  slow.join();
  int ok = 0;
  for (int i = 0; i < 12; ++i) {
    bool present = (*db->GetVolume("v" + std::to_string(i))).has_value();
    if (i % 3 == 0) {
      EXPECT_EQ(got[i].code(), Status::Code::kConflict) << i;
      EXPECT_FALSE(present) << i;
    } else if (i == 4) {
      EXPECT_EQ(got[i].code(), Status::Code::kInternal) << i;
      EXPECT_FALSE(present) << i;
    } else {
      EXPECT_TRUE(got[i].ok()) << i << ": " << got[i].ToString();
      EXPECT_TRUE(present) << i;
      ++ok;
    }
  }
  EXPECT_EQ(ok, 7);
  EXPECT_TRUE((*db->GetVolume("slow")).has_value());
  auto ev = db->EventsAfter(0, 100);
  ASSERT_TRUE(ev.ok());
  EXPECT_EQ(ev->size(), 7u);  // the refused writes' events went with them
  const uint64_t commits = db->generation() - g0;
  EXPECT_GE(commits, 2u);
  EXPECT_LT(commits, 8u);  // 8 successful writes, fewer commits: they were grouped
  // A Write from inside a Write is refused, and the outer one still commits.
  Status inner;
  ASSERT_TRUE(db->Write([&](Txn& t) {
    inner = db->Write([](Txn& t2) { return t2.PutVolume(Vol("inner")); });
    return t.PutVolume(Vol("outer"));
  }).ok());
  EXPECT_EQ(inner.code(), Status::Code::kInternal);
  EXPECT_TRUE((*db->GetVolume("outer")).has_value());
  EXPECT_FALSE((*db->GetVolume("inner")).has_value());
}

TEST_F(DbTest, MissingRowIsNotFound) {
  auto db = OpenOk();
  EXPECT_EQ(db->Write([](Txn& t) { return t.DeleteVolume("nope"); }).code(), Status::Code::kNotFound);
  EXPECT_EQ(db->Write([](Txn& t) { return t.SetVolumeSize("nope", 5); }).code(), Status::Code::kNotFound);
  EXPECT_FALSE(db->GetVolume("nope")->has_value());
}

TEST_F(DbTest, ValuesAreBoundNotSpliced) {
  auto db = OpenOk();
  std::string evil = "x'); DROP TABLE volumes; --";
  ASSERT_TRUE(db->Write([&](Txn& t) { return t.PutVolume(Vol(evil)); }).ok());
  auto v = db->GetVolume(evil);
  ASSERT_TRUE(v.ok() && v->has_value());
  EXPECT_EQ((*v)->name, evil);
  EXPECT_EQ(*db->CountVolumes(), 1);
}

TEST_F(DbTest, EventsGetSequenceNumbersAndOutboxState) {
  auto db = OpenOk();
  int64_t s1 = 0, s2 = 0;
  ASSERT_TRUE(db->Write([&](Txn& t) {
                  auto r = t.AppendEvent(0, "a", "{}", 0);
                  if (!r.ok()) return r.status();
                  s1 = *r;
                  auto r2 = t.AppendEvent(0, "b", "{\"k\":1}", 0);
                  if (!r2.ok()) return r2.status();
                  s2 = *r2;
                  return Status::Ok();
                }).ok());
  EXPECT_EQ(s1, 1);
  EXPECT_EQ(s2, 2);
  // An event already applied (same seq) is refused, so replay is idempotent.
  EXPECT_EQ(db->Write([](Txn& t) { return t.AppendEvent(2, "b", "{}", 0).status(); }).code(),
            Status::Code::kAlreadyExists);
  ASSERT_TRUE(db->Write([](Txn& t) { return t.AppendEvent(10, "c", "{}", 0).status(); }).ok());
  EXPECT_EQ(*db->LastEventSeq(), 10);
  auto unsent = db->UnsentEvents(100);
  ASSERT_EQ(unsent->size(), 3u);
  ASSERT_TRUE(db->MarkEventSent(1).ok());
  EXPECT_EQ(db->UnsentEvents(100)->size(), 2u);
  auto after = db->EventsAfter(1, 100);
  ASSERT_EQ(after->size(), 2u);
  EXPECT_EQ((*after)[0].type, "b");
  EXPECT_EQ((*after)[0].payload, "{\"k\":1}");
  EXPECT_EQ(db->MarkEventSent(99).code(), Status::Code::kNotFound);
}

TEST_F(DbTest, RetentionDropsOldEventsKeepsTheNewestAndNeverReappliesOne) {
  auto db = OpenOk();
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(db->Write([](Txn& t) { return t.AppendEvent(0, "x", "{}", 0).status(); }).ok());
  EXPECT_EQ(db->PruneEvents(0, false, 10).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(db->PruneEvents(3, false, 0).status().code(), Status::Code::kInvalidArgument);
  // Only confirmed ones when a publisher may still need the rest.
  ASSERT_TRUE(db->MarkEventSent(1).ok());
  ASSERT_TRUE(db->MarkEventSent(2).ok());
  ASSERT_TRUE(db->MarkEventSent(9).ok());
  EXPECT_EQ(*db->PruneEvents(3, true, 100), 2);  // 1 and 2; 9 is among the newest three
  EXPECT_EQ(*db->FirstEventSeq(), 3);
  // At most max_rows per pass, oldest first; the newest `keep` stay.
  EXPECT_EQ(*db->PruneEvents(3, false, 2), 2);
  EXPECT_EQ(*db->FirstEventSeq(), 5);
  EXPECT_EQ(*db->PruneEvents(3, false, 100), 3);
  EXPECT_EQ(*db->FirstEventSeq(), 8);
  EXPECT_EQ(*db->LastEventSeq(), 10);
  EXPECT_EQ(db->EventsAfter(0, 100)->size(), 3u);
  const uint64_t gen = db->generation();
  EXPECT_EQ(*db->PruneEvents(4, false, 100), 0);
  EXPECT_EQ(db->generation(), gen);  // nothing to drop: nothing written
  // A replayed event at or below the newest is refused even though its row is gone.
  EXPECT_EQ(db->Write([](Txn& t) { return t.AppendEvent(3, "x", "{}", 0).status(); }).code(),
            Status::Code::kAlreadyExists);
  ASSERT_TRUE(db->Write([](Txn& t) { return t.AppendEvent(11, "x", "{}", 0).status(); }).ok());
  // New numbers continue after the newest.
  int64_t next = 0;
  ASSERT_TRUE(db->Write([&](Txn& t) {
                  auto r = t.AppendEvent(0, "y", "{}", 0);
                  if (r.ok()) next = *r;
                  return r.status();
                }).ok());
  EXPECT_EQ(next, 12);
}

TEST_F(DbTest, GenerationGrowsOnEveryCommittedChangeOnly) {
  auto db = OpenOk();
  ASSERT_TRUE(db);
  uint64_t g = db->generation();
  // Each kind of change, one committed transaction each: +1 every time,
  // visible as soon as Write returns.
  const std::vector<std::pair<std::string, std::function<Status(Txn&)>>> writes = {
      {"PutVolume", [](Txn& t) { return t.PutVolume(Vol("v1")); }},
      {"SetVolumeState", [](Txn& t) { return t.SetVolumeState("v1", "extending"); }},
      {"SetVolumeSize", [](Txn& t) { return t.SetVolumeSize("v1", 2LL << 30); }},
      {"SetVolumeEpoch", [](Txn& t) { return t.SetVolumeEpoch("v1", 3); }},
      {"SetVolumeGateway", [](Txn& t) { return t.SetVolumeGateway("v1", "127.0.0.1:8586"); }},
      {"PutSnapshot", [](Txn& t) { return t.PutSnapshot({"v1", "s1", 1 << 30, 2}); }},
      {"DeleteSnapshot", [](Txn& t) { return t.DeleteSnapshot("v1", "s1"); }},
      {"PutTarget", [](Txn& t) { return t.PutTarget({"127.0.0.2", 3260, "127.0.0.2:8890", true, 5, ""}); }},
      {"SetTargetOnline", [](Txn& t) { return t.SetTargetOnline("127.0.0.2", false, 6); }},
      {"PutGateway", [](Txn& t) { return t.PutGateway({"127.0.0.1:8585", "127.0.0.1:8686", true, 5}); }},
      {"SetGatewayOnline", [](Txn& t) { return t.SetGatewayOnline("127.0.0.1:8585", false, 6); }},
      {"PutLun", [](Txn& t) {
         return t.PutLun({"v1", "127.0.0.2", "iqn.x:v1", 1, 1, true, "127.0.0.1:8585", "ready", 1});
       }},
      {"SetLunSwitchable", [](Txn& t) { return t.SetLunSwitchable("v1", "127.0.0.2", false); }},
      {"SetLunState", [](Txn& t) { return t.SetLunState("v1", "127.0.0.2", "removing"); }},
      {"PutAttachment", [](Txn& t) { return t.PutAttachment({"v1", "h1", "127.0.0.2", "iqn.i:1", "{}"}); }},
      {"DeleteAttachment", [](Txn& t) { return t.DeleteAttachment("v1", "h1"); }},
      {"PutChap", [](Txn& t) { return t.PutChap({"v1", "u", "s", 1}); }},
      {"PutSetting", [](Txn& t) { return t.PutSetting("", "fixedmode", "127.0.0.1:8585"); }},
      {"DeleteSetting", [](Txn& t) { return t.DeleteSetting("", "fixedmode"); }},
      {"AppendEvent", [](Txn& t) { return t.AppendEvent(0, "x", "{}", 0).status(); }},
      {"DeleteLun", [](Txn& t) { return t.DeleteLun("v1", "127.0.0.2"); }},
      {"DeleteGateway", [](Txn& t) { return t.DeleteGateway("127.0.0.1:8585"); }},
      {"DeleteVolume", [](Txn& t) { return t.DeleteVolume("v1"); }},
  };
  for (auto& [name, fn] : writes) {
    ASSERT_TRUE(db->Write(fn).ok()) << name;
    EXPECT_EQ(db->generation(), g + 1) << name;
    g = db->generation();
  }
  // Marking an event sent is a change too.
  ASSERT_TRUE(db->MarkEventSent(1).ok());
  EXPECT_EQ(db->generation(), g + 1);
  g = db->generation();

  // Reads change nothing.
  ASSERT_TRUE(db->Write([](Txn& t) { return t.PutVolume(Vol("v2")); }).ok());
  g = db->generation();
  (void)db->GetVolume("v2");
  (void)db->ListVolumes();
  (void)db->CountVolumes();
  (void)db->ListTargets();
  (void)db->ListGateways();
  (void)db->LunCountByTarget();
  (void)db->ExportedVolumeCountByGateway();
  (void)db->VolumeCountByGateway();
  (void)db->EventsAfter(0, 10);
  (void)db->UnsentEvents(10);
  (void)db->version();
  EXPECT_EQ(db->generation(), g);

  // Rolled back (the function failed, or a statement did): no change.
  EXPECT_FALSE(db->Write([](Txn& t) {
                   FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("v3")));
                   return Status::Conflict("changed my mind");
                 }).ok());
  EXPECT_FALSE(db->Write([](Txn& t) { return t.PutVolume(Vol("v3", -5)); }).ok());
  EXPECT_FALSE(db->Write([](Txn& t) { return t.DeleteVolume("nope"); }).ok());
  EXPECT_FALSE(db->MarkEventSent(999).ok());
  EXPECT_EQ(db->generation(), g);
  EXPECT_FALSE(db->GetVolume("v3")->has_value());
}

TEST_F(DbTest, BusyTimeoutWaitsThenReportsUnavailable) {
  auto db = OpenOk({.busy_timeout_ms = 200});
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN IMMEDIATE; INSERT INTO settings VALUES('','k','v');", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  auto t0 = std::chrono::steady_clock::now();
  Status s = db->Write([](Txn& t) { return t.PutVolume(Vol("v")); });
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(s.code(), Status::Code::kUnavailable) << s.ToString();
  EXPECT_GE(ms, 150);
  // Readers are not blocked by the writer in WAL mode.
  EXPECT_TRUE(db->CountVolumes().ok());
  ASSERT_EQ(sqlite3_exec(other, "COMMIT;", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE(db->Write([](Txn& t) { return t.PutVolume(Vol("v")); }).ok());
  EXPECT_EQ(db->GetSetting("", "k")->value_or(""), "v");
}

TEST_F(DbTest, RefusesDatabaseFromNewerProgram) {
  { OpenOk(); }
  Raw("PRAGMA user_version=99;");
  auto r = Database::Open(path_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
}

TEST_F(DbTest, CountsForMaps) {
  auto db = OpenOk();
  ASSERT_TRUE(db->Write([](Txn& t) {
                  FERRY_RETURN_IF_ERROR(t.PutTarget({"127.0.0.2", 3260, "127.0.0.2:8890", true, 5, ""}));
                  FERRY_RETURN_IF_ERROR(t.PutTarget({"127.0.0.3", 3260, "127.0.0.3:8890", false, 5, ""}));
                  for (int i = 0; i < 5; ++i) {
                    VolumeRow v = Vol("v" + std::to_string(i));
                    v.preferred_gw = i < 3 ? "g1" : "g2";
                    FERRY_RETURN_IF_ERROR(t.PutVolume(v));
                    FERRY_RETURN_IF_ERROR(t.PutLun({v.name, i < 4 ? "127.0.0.2" : "127.0.0.3", "iqn:" + v.name,
                                                    i + 1, 1, true, v.preferred_gw, "ready"}));
                  }
                  return Status::Ok();
                }).ok());
  auto bt = *db->LunCountByTarget();
  EXPECT_EQ(bt["127.0.0.2"], 4);
  EXPECT_EQ(bt["127.0.0.3"], 1);
  auto bg = *db->VolumeCountByGateway();
  EXPECT_EQ(bg["g1"], 3);
  EXPECT_EQ(bg["g2"], 2);
  EXPECT_EQ(db->LunsOfGateway("g2")->size(), 2u);
  EXPECT_EQ(db->LunsWithIqn("iqn:v4")->size(), 1u);
  EXPECT_FALSE((*db->GetTarget("127.0.0.3"))->online);
}

// Version 4: a target's host name survives registrations that do not name
// it; CHAP credentials go with their volume; the ACL query joins attachments
// to the LUNs of one iSCSI target.
TEST_F(DbTest, TargetHostChapAndInitiatorsOfAnIscsiTarget) {
  auto db = OpenOk();
  ASSERT_TRUE(db->Write([](Txn& t) {
                  FERRY_RETURN_IF_ERROR(t.PutTarget({"127.0.0.2", 3260, "127.0.0.2:8890", true, 5, "compute1"}));
                  FERRY_RETURN_IF_ERROR(t.PutTarget({"127.0.0.2", 3261, "127.0.0.2:8890", true, 6, ""}));
                  FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("v1")));
                  FERRY_RETURN_IF_ERROR(t.PutVolume(Vol("v2")));
                  FERRY_RETURN_IF_ERROR(t.PutLun({"v1", "127.0.0.2", "iqn:shared", 1, 1, true, "g", "ready", 0}));
                  FERRY_RETURN_IF_ERROR(t.PutLun({"v2", "127.0.0.2", "iqn:shared", 1, 2, true, "g", "ready", 0}));
                  FERRY_RETURN_IF_ERROR(t.PutAttachment({"v1", "h1", "127.0.0.2", "iqn.i:h1", "{}"}));
                  FERRY_RETURN_IF_ERROR(t.PutAttachment({"v1", "h2", "127.0.0.2", "iqn.i:h2", "{}"}));
                  FERRY_RETURN_IF_ERROR(t.PutAttachment({"v2", "h3", "127.0.0.2", "iqn.i:h1", "{}"}));
                  FERRY_RETURN_IF_ERROR(t.PutAttachment({"v2", "h4", "127.0.0.2", "", "{}"}));
                  return t.PutChap({"v1", "ferry-u", "0123456789abcdef", 7});
                }).ok());
  auto t = *db->GetTarget("127.0.0.2");
  EXPECT_EQ(t->host, "compute1");
  EXPECT_EQ(t->port, 3261);
  EXPECT_EQ(*db->InitiatorsOn("127.0.0.2", "iqn:shared"), (std::vector<std::string>{"iqn.i:h1", "iqn.i:h2"}));
  // Leaving out v1/h1 keeps iqn.i:h1 (v2/h3 still uses it), drops nothing else.
  EXPECT_EQ(*db->InitiatorsOn("127.0.0.2", "iqn:shared", "v1", "h1"),
            (std::vector<std::string>{"iqn.i:h1", "iqn.i:h2"}));
  EXPECT_EQ(*db->InitiatorsOn("127.0.0.2", "iqn:shared", "v1", "h2"), std::vector<std::string>{"iqn.i:h1"});
  EXPECT_TRUE(db->InitiatorsOn("127.0.0.3", "iqn:shared")->empty());
  EXPECT_EQ((*db->GetChap("v1"))->user, "ferry-u");
  EXPECT_FALSE(db->GetChap("v2")->has_value());
  // Credentials go with the volume.
  ASSERT_TRUE(db->Write([](Txn& t) {
                  FERRY_RETURN_IF_ERROR(t.DeleteAttachment("v1", "h1"));
                  FERRY_RETURN_IF_ERROR(t.DeleteAttachment("v1", "h2"));
                  FERRY_RETURN_IF_ERROR(t.DeleteLun("v1", "127.0.0.2"));
                  return t.DeleteVolume("v1");
                }).ok());
  EXPECT_FALSE(db->GetChap("v1")->has_value());
}

// Migration from each earlier schema version: build the file as that version
// of the program left it (schema + data), reopen with this one, check data.
TEST_F(DbTest, MigratesFromEveryEarlierVersion) {
  for (int from = 0; from < kSchemaVersion; ++from) {
    SCOPED_TRACE("from version " + std::to_string(from));
    std::filesystem::remove(path_);
    std::filesystem::remove(path_ + "-wal");
    std::filesystem::remove(path_ + "-shm");
    if (from > 0) {
      auto old = Database::Open(path_, {.busy_timeout_ms = 1000, .migrate_to = from});
      ASSERT_TRUE(old.ok()) << old.status().ToString();
      EXPECT_EQ((*old)->version(), from);
    }
    if (from >= 1) {
      Raw("INSERT INTO volumes(name,size,state,preferred_gw,epoch,created) "
          "VALUES('old',4096,'available','127.0.0.1:8585',7,3);"
          "INSERT INTO targets(ip,port,admin,online,last_seen) VALUES('127.0.0.2',3260,'127.0.0.2:8890',1,9);"
          "INSERT INTO luns(volume,target,iqn,tid,lun,switchable,gateway,state) "
          "VALUES('old','127.0.0.2','iqn.x:old',4,1,1,'127.0.0.1:8585','ready');");
    }
    if (from >= 2) {
      Raw("INSERT INTO attachments(volume,host,target,initiator,connector) "
          "VALUES('old','h1','127.0.0.2','iqn.i:h1','{}');"
          "INSERT INTO settings(target,key,value) VALUES('','read','30');");
    }
    if (from >= 3) {
      Raw("UPDATE volumes SET source='src@s1' WHERE name='old';"
          "UPDATE luns SET epoch=7 WHERE volume='old';"
          "INSERT INTO events(seq,type,payload,created,sent) VALUES(5,'volume.created','{}',1,1);");
    }
    auto db = OpenOk();
    ASSERT_TRUE(db);
    EXPECT_EQ(db->version(), kSchemaVersion);
    if (from >= 1) {
      auto v = db->GetVolume("old");
      ASSERT_TRUE(v.ok() && v->has_value());
      EXPECT_EQ((*v)->epoch, 7);
      if (from < 3) {
        EXPECT_EQ((*v)->source, "");
      }
      EXPECT_EQ(db->LunsOfVolume("old")->size(), 1u);
    }
    if (from >= 2) {
      EXPECT_EQ(db->AttachmentsOf("old")->size(), 1u);
      EXPECT_EQ(db->GetSetting("", "read")->value_or(""), "30");
      // Version 4's ACL query over the migrated rows.
      EXPECT_EQ(*db->InitiatorsOn("127.0.0.2", "iqn.x:old"), std::vector<std::string>{"iqn.i:h1"});
    }
    if (from >= 3) {
      EXPECT_EQ((*db->GetVolume("old"))->source, "src@s1");
      EXPECT_EQ(db->LunsOfVolume("old")->front().epoch, 7);
      EXPECT_EQ(*db->LastEventSeq(), 5);
    }
    if (from >= 1) {
      // Version 4: targets carry a host name (empty until reported), volumes CHAP credentials.
      auto t = db->GetTarget("127.0.0.2");
      ASSERT_TRUE(t.ok() && t->has_value());
      EXPECT_EQ((*t)->host, "");
      ASSERT_TRUE(db->Write([](Txn& tx) { return tx.PutChap({"old", "u1", "secret-123456", 5}); }).ok());
      EXPECT_EQ((*db->GetChap("old"))->secret, "secret-123456");
    }
    // The new tables work after migration.
    int64_t before = *db->LastEventSeq();
    ASSERT_TRUE(db->Write([](Txn& t) { return t.AppendEvent(0, "x", "{}", 0).status(); }).ok());
    EXPECT_EQ(*db->LastEventSeq(), before + 1);
  }
}

}  // namespace
}  // namespace ferry::db
