// Unit tests of the target's state journal (records, framing, torn tails) and
// of StateFile's snapshot + journal on real files.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "target/server/state_file.h"
#include "target/server/state_journal.h"

namespace ferry::server {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/ferry-journal-test-XXXXXX";
    char* d = mkdtemp(tmpl);
    EXPECT_NE(d, nullptr);
    path_ = d;
  }
  ~TempDir() { (void)system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadFile(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
}

LunSpec Lun(uint32_t n, const std::string& vol, uint64_t epoch = 1) {
  LunSpec l;
  l.lun = n;
  l.volume = vol;
  l.gateways = {"127.0.0.1:8585", "127.0.0.1:8586"};
  l.preferred = l.current = "127.0.0.1:8585";
  l.epoch = epoch;
  l.size = 1 << 30;
  return l;
}

TargetSpec Target(const std::string& name, uint32_t tid) {
  TargetSpec t;
  t.iqn = "iqn.2026-11.io.ferry:" + name;
  t.tid = tid;
  return t;
}

// A history of states touching every kind of record: targets and LUNs come
// and go, fields change, timeouts and fixed mode change.
std::vector<ServerState> History() {
  std::vector<ServerState> h(1);
  auto next = [&h](auto edit) {
    ServerState s = h.back();
    edit(s);
    h.push_back(s);
  };
  next([](ServerState& s) { s.targets["iqn.2026-11.io.ferry:a"] = Target("a", 1); });
  next([](ServerState& s) { s.targets["iqn.2026-11.io.ferry:a"].luns[1] = Lun(1, "vol-a"); });
  next([](ServerState& s) {
    auto t = Target("b", 2);
    t.luns[1] = Lun(1, "vol-b1");
    t.luns[2] = Lun(2, "vol-b2");
    s.targets[t.iqn] = t;
  });
  next([](ServerState& s) { s.targets["iqn.2026-11.io.ferry:a"].luns[1].current = "127.0.0.1:8586"; });
  next([](ServerState& s) { s.targets["iqn.2026-11.io.ferry:a"].luns[1].epoch = 9; });
  next([](ServerState& s) {
    auto& t = s.targets["iqn.2026-11.io.ferry:b"];
    t.acl.initiators = {"iqn.1994-05.com.example:h1"};
    t.chap = {"user", "secret-123456", "", ""};
  });
  next([](ServerState& s) { s.targets["iqn.2026-11.io.ferry:b"].luns.erase(1); });
  next([](ServerState& s) { EXPECT_TRUE(s.timeouts.Set("write", 7).ok()); });
  next([](ServerState& s) { s.fixed_gateway = "127.0.0.1:8586"; });
  next([](ServerState& s) { s.targets.erase("iqn.2026-11.io.ferry:a"); });
  next([](ServerState& s) {  // the same name comes back, differently
    auto t = Target("a", 3);
    t.open = true;
    t.luns[4] = Lun(4, "vol-a4", 2);
    s.targets[t.iqn] = t;
  });
  next([](ServerState& s) { s.fixed_gateway.clear(); });
  return h;
}

TEST(StateJournal, DiffThenApplyGivesTheNewState) {
  auto h = History();
  for (size_t i = 0; i + 1 < h.size(); ++i) {
    auto records = journal::Diff(h[i], h[i + 1]);
    EXPECT_FALSE(records.empty()) << "step " << i;
    ServerState s = h[i];
    for (const auto& r : records) ASSERT_TRUE(journal::Apply(r, &s).ok()) << r;
    EXPECT_EQ(s, h[i + 1]) << "step " << i;
  }
  EXPECT_TRUE(journal::Diff(h[3], h[3]).empty());
}

TEST(StateJournal, ReplayOntoAnyLaterSnapshotGivesTheNewestState) {
  // A crash after writing a snapshot and before emptying the journal replays
  // old records onto a newer snapshot: the result must still be the newest.
  auto h = History();
  std::vector<std::string> all;
  for (size_t i = 0; i + 1 < h.size(); ++i)
    for (auto& r : journal::Diff(h[i], h[i + 1])) all.push_back(r);
  for (size_t base = 0; base < h.size(); ++base) {
    ServerState s = h[base];
    for (const auto& r : all) ASSERT_TRUE(journal::Apply(r, &s).ok());
    EXPECT_EQ(s, h.back()) << "snapshot at step " << base;
  }
}

TEST(StateJournal, ApplyRejectsBadRecordsAndChangesNothing) {
  ServerState s = History().back();
  ServerState before = s;
  for (const char* bad : {"", "{", "[]", "{\"op\":\"nope\"}", "{\"op\":\"target_del\"}",
                          "{\"op\":\"lun\",\"iqn\":\"iqn.2026-11.io.ferry:a\"}",
                          "{\"op\":\"lun\",\"iqn\":\"iqn.2026-11.io.ferry:a\",\"spec\":{\"lun\":1}}",
                          "{\"op\":\"target\",\"iqn\":\"bad iqn\",\"tid\":1}",
                          "{\"op\":\"timeouts\",\"timeouts\":{\"recovery\":7}}",
                          "{\"op\":\"fixed_gateway\",\"gateway\":\"no-port\"}"}) {
    EXPECT_FALSE(journal::Apply(bad, &s).ok()) << bad;
    EXPECT_EQ(s, before) << bad;
  }
}

std::string ThreeBatches(size_t* second_end) {
  auto h = History();
  std::string text = journal::FrameBatch(journal::Diff(h[0], h[3]));
  text += journal::FrameBatch(journal::Diff(h[3], h[6]));
  *second_end = text.size();
  text += journal::FrameBatch(journal::Diff(h[6], h[9]));
  return text;
}

TEST(StateJournal, EveryTornLastAppendIsDroppedWholly) {
  size_t second_end = 0;
  std::string text = ThreeBatches(&second_end);
  auto whole = journal::Parse(text);
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(whole->valid_bytes, text.size());
  auto two = journal::Parse(text.substr(0, second_end));
  ASSERT_TRUE(two.ok());
  for (size_t cut = second_end; cut < text.size(); ++cut) {
    auto p = journal::Parse(text.substr(0, cut));
    ASSERT_TRUE(p.ok()) << "cut at " << cut;
    EXPECT_EQ(p->records, two->records) << "cut at " << cut;
    EXPECT_EQ(p->valid_bytes, second_end);
    EXPECT_EQ(p->dropped_bytes, cut - second_end);
  }
  // Written out of order: the last batch's middle never reached the disk
  // (zeros) while its commit line did. Still a torn, unacknowledged append.
  std::string holey = text;
  for (size_t i = second_end + 5; i < second_end + 40; ++i) holey[i] = '\0';
  auto p = journal::Parse(holey);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->records, two->records);
}

TEST(StateJournal, DamageBeforeCommittedBatchesIsAnError) {
  size_t second_end = 0;
  std::string text = ThreeBatches(&second_end);
  std::string bad = text;
  bad[12] ^= 0x20;  // inside the first record: two committed batches follow
  auto p = journal::Parse(bad);
  EXPECT_FALSE(p.ok());
}

class StateFileTest : public ::testing::Test {
 protected:
  TempDir dir_;
  std::string state_dir() const { return dir_.path() + "/state"; }
};

TEST_F(StateFileTest, ChangesAreSmallAppendsAndLoadReplaysThem) {
  StateFile f(state_dir());
  ASSERT_TRUE(f.Init().ok());
  ASSERT_TRUE(f.Load().ok());
  auto h = History();
  for (size_t i = 1; i < h.size(); ++i) ASSERT_TRUE(f.Save(h[i - 1], h[i]).ok());
  // Saving the same state again writes nothing.
  auto c = f.counters();
  ASSERT_TRUE(f.Save(h.back(), h.back()).ok());
  EXPECT_EQ(f.counters().appends, c.appends);
  EXPECT_EQ(c.appends, h.size() - 1);  // the empty first state equals the loaded one
  EXPECT_EQ(c.snapshots, 0u);
  struct stat st;
  ASSERT_EQ(stat(f.journal_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  StateFile again(state_dir());
  auto back = again.Load();
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, h.back());
}

TEST_F(StateFileTest, CompactsIntoASnapshotAndKeepsEveryChange) {
  StateFile f(state_dir(), StateFile::Options{512});
  ASSERT_TRUE(f.Init().ok());
  ASSERT_TRUE(f.Load().ok());
  ServerState s, prev;
  s.targets["iqn.2026-11.io.ferry:a"] = Target("a", 1);
  for (uint32_t n = 1; n <= 40; ++n) {
    s.targets["iqn.2026-11.io.ferry:a"].luns[n] = Lun(n, "vol-" + std::to_string(n));
    ASSERT_TRUE(f.Save(prev, s).ok());
    prev = s;
    StateFile reader(state_dir());
    auto back = reader.Load();
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    ASSERT_EQ(*back, s) << "after lun " << n;
  }
  EXPECT_GT(f.counters().snapshots, 1u);
  EXPECT_GT(f.counters().appends, f.counters().snapshots);
  struct stat st;
  ASSERT_EQ(stat(f.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(StateFileTest, OldJournalLeftNextToANewerSnapshotStillLoadsTheNewest) {
  StateFile f(state_dir(), StateFile::Options{0});  // every Save writes a snapshot
  ASSERT_TRUE(f.Init().ok());
  ASSERT_TRUE(f.Load().ok());
  auto h = History();
  StateFile j(state_dir() + "-journal");  // builds a journal of the whole history elsewhere
  ASSERT_TRUE(j.Init().ok());
  ASSERT_TRUE(j.Load().ok());
  for (size_t i = 1; i < h.size(); ++i) ASSERT_TRUE(j.Save(h[i - 1], h[i]).ok());
  ASSERT_TRUE(f.Save(h[0], h.back()).ok());
  // The crash: the new snapshot is in place, the journal was not emptied.
  WriteFile(f.journal_path(), ReadFile(j.journal_path()));
  StateFile reader(state_dir());
  auto back = reader.Load();
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, h.back());
  (void)system(("rm -rf '" + state_dir() + "-journal'").c_str());
}

TEST_F(StateFileTest, TornTailIsCutOffAndLaterChangesLoad) {
  auto h = History();
  {
    StateFile f(state_dir());
    ASSERT_TRUE(f.Init().ok());
    ASSERT_TRUE(f.Load().ok());
    for (size_t i = 1; i <= 5; ++i) ASSERT_TRUE(f.Save(h[i - 1], h[i]).ok());
  }
  std::string good = ReadFile(state_dir() + "/state.journal");
  std::string torn = journal::FrameBatch(journal::Diff(h[5], h[6]));
  WriteFile(state_dir() + "/state.journal", good + torn.substr(0, torn.size() / 2));
  StateFile f(state_dir());
  auto back = f.Load();
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, h[5]);
  EXPECT_EQ(f.counters().torn_bytes, torn.size() / 2);
  EXPECT_EQ(ReadFile(f.journal_path()), good);  // cut before anything is appended
  for (size_t i = 6; i < h.size(); ++i) ASSERT_TRUE(f.Save(h[i - 1], h[i]).ok());
  StateFile reader(state_dir());
  auto last = reader.Load();
  ASSERT_TRUE(last.ok()) << last.status().ToString();
  EXPECT_EQ(*last, h.back());
  EXPECT_EQ(reader.counters().torn_bytes, 0u);
}

TEST_F(StateFileTest, CorruptJournalIsAnErrorNamingItAndIsLeftAsItIs) {
  auto h = History();
  {
    StateFile f(state_dir());
    ASSERT_TRUE(f.Init().ok());
    ASSERT_TRUE(f.Load().ok());
    for (size_t i = 1; i < h.size(); ++i) ASSERT_TRUE(f.Save(h[i - 1], h[i]).ok());
  }
  std::string text = ReadFile(state_dir() + "/state.journal");
  text[20] ^= 0x01;
  WriteFile(state_dir() + "/state.journal", text);
  StateFile f(state_dir());
  auto back = f.Load();
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("state.journal"), std::string::npos);
  EXPECT_EQ(ReadFile(state_dir() + "/state.journal"), text);
}

TEST_F(StateFileTest, JournalThatBreaksAnInvariantIsAnError) {
  // Two targets with one tid can only come from a damaged or forged journal.
  StateFile f(state_dir());
  ASSERT_TRUE(f.Init().ok());
  ASSERT_TRUE(f.Load().ok());
  ServerState a;
  a.targets["iqn.2026-11.io.ferry:a"] = Target("a", 1);
  ServerState b = a;
  b.targets["iqn.2026-11.io.ferry:b"] = Target("b", 1);
  WriteFile(f.journal_path(), journal::FrameBatch(journal::Diff(ServerState{}, b)));
  StateFile reader(state_dir());
  auto back = reader.Load();
  ASSERT_FALSE(back.ok());
  EXPECT_NE(back.status().message().find("tid"), std::string::npos) << back.status().ToString();
}

}  // namespace
}  // namespace ferry::server
