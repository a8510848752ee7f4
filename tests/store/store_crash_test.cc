// Crash safety: a child process performs a metadata change and dies at an
// injected crash point (_exit(137)); a fresh Store must then show exactly the
// old state (crash before the commit) or exactly the new one (after it), in
// metadata and in data. Also: acknowledged FUA / flushed writes survive kill -9.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <cstring>
#include <functional>
#include <map>
#include <map>
#include <random>
#include <set>

#include "target/store/store.h"
#include "tests/store/store_test_util.h"

namespace ferry::store {
namespace {

using namespace std::chrono_literals;
using testing::CountChunkFiles;
using testing::ForkChild;
using testing::MustOpen;
using testing::Pattern;
using testing::ReadAll;
using testing::TempDir;
using testing::WaitChild;
constexpr uint64_t kChunk = 64 << 10;
constexpr uint64_t kSize = 4 * kChunk;

// Fixture state before every crash: volume v (epoch 1) with data A, snapshot
// "s" of A, then data B written over the first 2.5 chunks.
struct World {
  std::vector<char> a = Pattern(kSize, 1);
  std::vector<char> b;
  World() {
    b = a;
    auto p = Pattern(kChunk * 5 / 2, 2);
    std::copy(p.begin(), p.end(), b.begin());
  }
};

void MakeWorld(const std::string& dir, const World& w) {
  auto s = MustOpen(dir);
  ASSERT_TRUE(s->CreateVolume("v", kSize).ok());
  auto h = *s->OpenVolume("v", 1, false);
  ASSERT_TRUE(h->Write(0, kSize, w.a.data(), false).ok());
  ASSERT_TRUE(s->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(h->Write(0, kChunk * 5 / 2, w.b.data(), false).ok());
  ASSERT_TRUE(h->Flush().ok());
}

// Runs op in a child with the crash point set; expects it to die there.
void CrashAt(const std::string& dir, const std::string& point, const std::function<Status(Store&)>& op) {
  pid_t pid = ForkChild([&] {
    auto o = testing::SmallChunks();
    o.crash_point = point;
    auto s = Store::Open(dir, o, Logger("child", LogLevel::kError));
    if (!s.ok()) return 90;
    Status st = op(**s);
    return st.ok() ? 0 : 1;  // reaching here means the point was not hit
  });
  int st = WaitChild(pid, 30s);
  ASSERT_TRUE(st != -1 && WIFEXITED(st)) << point;
  ASSERT_EQ(WEXITSTATUS(st), 137) << "crash point " << point << " not reached";
}

std::vector<char> VolumeBytes(Store& s, const std::string& name) {
  auto h = s.OpenVolume(name, 0, true);
  EXPECT_TRUE(h.ok()) << h.status().ToString();
  if (!h.ok()) return {};
  return ReadAll(**h, 0, (*h)->size());
}

struct Case {
  std::string point;
  std::function<Status(Store&)> op;
  std::function<void(Store&, const World&)> check;
};

void CheckOld(Store& s, const World& w) {
  auto vi = s.GetVolume("v");
  ASSERT_TRUE(vi.ok()) << vi.status().ToString();
  EXPECT_EQ(vi->size, kSize);
  ASSERT_EQ(vi->snapshots.size(), 1u);
  EXPECT_TRUE(VolumeBytes(s, "v") == w.b);
  EXPECT_TRUE(ReadAll(**s.OpenSnapshot("v", "s"), 0, kSize) == w.a);
  EXPECT_EQ(s.GetVolume("c").status().code(), Status::Code::kNotFound);
}

// After any check, the volume must still work: write, snapshot, read back.
void StillWorks(Store& s) {
  auto h = s.OpenVolume("v", s.GetVolume("v")->epoch + 1, false);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  auto p = Pattern(kChunk, 77);
  ASSERT_TRUE((*h)->Write(kChunk / 2, kChunk, p.data(), true).ok());
  ASSERT_TRUE(s.CreateSnapshot("v", "after").ok());
  EXPECT_TRUE(ReadAll(**s.OpenSnapshot("v", "after"), kChunk / 2, kChunk) == p);
}

std::vector<Case> Cases() {
  auto snap = [](Store& s) { return s.CreateSnapshot("v", "s2"); };
  auto revert = [](Store& s) { return s.RevertVolume("v", "s"); };
  auto extend = [](Store& s) { return s.ExtendVolume("v", 2 * kSize); };
  auto clone_vol = [](Store& s) { return s.CloneVolume("v", std::nullopt, "c"); };
  auto clone_snap = [](Store& s) { return s.CloneVolume("v", std::string("s"), "c"); };
  auto delsnap = [](Store& s) { return s.DeleteSnapshot("v", "s"); };
  auto raise = [](Store& s) { return s.RaiseEpoch("v", 9).status(); };
  auto cow = [](Store& s) {
    auto h = s.OpenVolume("v", 1, false);
    if (!h.ok()) return h.status();
    char x[100];
    std::memset(x, 'x', sizeof x);
    return (*h)->Write(3 * kChunk + 10, sizeof x, x, false);  // chunk 3 is still shared with "s"
  };
  auto snap_new = [](Store& s, const World& w) {
    auto vi = s.GetVolume("v");
    ASSERT_EQ(vi->snapshots.size(), 2u);
    EXPECT_TRUE(ReadAll(**s.OpenSnapshot("v", "s2"), 0, kSize) == w.b);
    EXPECT_TRUE(VolumeBytes(s, "v") == w.b);
  };
  auto revert_new = [](Store& s, const World& w) {
    EXPECT_TRUE(VolumeBytes(s, "v") == w.a);
    EXPECT_TRUE(ReadAll(**s.OpenSnapshot("v", "s"), 0, kSize) == w.a);
  };
  auto extend_new = [](Store& s, const World& w) {
    EXPECT_EQ(s.GetVolume("v")->size, 2 * kSize);
    auto all = VolumeBytes(s, "v");
    ASSERT_EQ(all.size(), 2 * kSize);
    EXPECT_TRUE(std::equal(w.b.begin(), w.b.end(), all.begin()));
    EXPECT_EQ(std::count(all.begin() + kSize, all.end(), 0), static_cast<long>(kSize));
  };
  auto clone_new = [](const std::vector<char> World::*which) {
    return [which](Store& s, const World& w) {
      EXPECT_TRUE(VolumeBytes(s, "c") == w.*which);
      EXPECT_TRUE(VolumeBytes(s, "v") == w.b);
    };
  };
  auto delsnap_new = [](Store& s, const World& w) {
    EXPECT_TRUE(s.GetVolume("v")->snapshots.empty());
    EXPECT_TRUE(VolumeBytes(s, "v") == w.b);
  };
  auto raise_new = [](Store& s, const World& w) {
    EXPECT_EQ(s.GetVolume("v")->epoch, 9u);
    EXPECT_TRUE(VolumeBytes(s, "v") == w.b);
  };
  auto cow_old = [](Store& s, const World& w) { CheckOld(s, w); };
  return {
      {"snapshot.after_gen", snap, CheckOld},
      {"snapshot.before_commit", snap, CheckOld},
      {"snapshot.after_commit", snap, snap_new},
      {"revert.after_gen", revert, CheckOld},
      {"revert.before_commit", revert, CheckOld},
      {"revert.after_commit", revert, revert_new},
      {"extend.after_gen", extend, CheckOld},
      {"extend.before_commit", extend, CheckOld},
      {"extend.after_commit", extend, extend_new},
      {"clone.rebase.before_commit", clone_vol, CheckOld},
      {"clone.rebase.after_commit", clone_vol, CheckOld},
      {"clone.before_commit", clone_vol, CheckOld},
      {"clone.after_commit", clone_vol, clone_new(&World::b)},
      {"clone.before_commit", clone_snap, CheckOld},
      {"clone.after_commit", clone_snap, clone_new(&World::a)},
      {"delsnap.before_commit", delsnap, CheckOld},
      {"delsnap.after_commit", delsnap, delsnap_new},
      {"raise.after_write", raise, raise_new},
      {"cow.after_copy", cow, cow_old},
      {"cow.after_link", cow, cow_old},  // copied, the write itself not done yet
  };
}

class CrashPoints : public ::testing::TestWithParam<int> {};

TEST_P(CrashPoints, OldOrNewStateNeverAMix) {
  auto c = Cases()[static_cast<size_t>(GetParam())];
  SCOPED_TRACE(c.point);
  TempDir d;
  World w;
  MakeWorld(d.path(), w);
  CrashAt(d.path(), c.point, c.op);
  auto s = MustOpen(d.path());
  c.check(*s, w);
  StillWorks(*s);
  // No leak: once everything is deleted, no chunk file is left.
  auto vols = s->ListVolumes();
  ASSERT_TRUE(vols.ok());
  for (const auto& vi : *vols) {
    for (const auto& sn : vi.snapshots) ASSERT_TRUE(s->DeleteSnapshot(vi.name, sn.name).ok());
    ASSERT_TRUE(s->DeleteVolume(vi.name).ok());
  }
  EXPECT_EQ(CountChunkFiles(d.path()), 0);
}

INSTANTIATE_TEST_SUITE_P(Store, CrashPoints, ::testing::Range(0, static_cast<int>(Cases().size())),
                         [](const ::testing::TestParamInfo<int>& i) {
                           std::string n = Cases()[static_cast<size_t>(i.param)].point + "_" +
                                           std::to_string(i.param);
                           for (char& ch : n)
                             if (ch == '.') ch = '_';
                           return n;
                         });

TEST(StoreCrash, CreateIsAtomic) {
  for (const char* point : {"create.before_commit", "create.after_commit"}) {
    TempDir d;
    { auto s = MustOpen(d.path()); }
    CrashAt(d.path(), point, [](Store& s) { return s.CreateVolume("n", kSize); });
    auto s = MustOpen(d.path());
    auto vi = s->GetVolume("n");
    if (std::string(point) == "create.before_commit") {
      EXPECT_EQ(vi.status().code(), Status::Code::kNotFound);
      ASSERT_TRUE(s->CreateVolume("n", kSize).ok());  // the name is free
    } else {
      ASSERT_TRUE(vi.ok());
      EXPECT_EQ(vi->size, kSize);
    }
    auto h = *s->OpenVolume("n", 0, false);
    ASSERT_TRUE(h->Write(0, 10, "0123456789", false).ok());
  }
}

TEST(StoreCrash, DeleteIsAtomicAndReclaimsSpaceOnReopen) {
  for (const char* point : {"delete.after_gen", "delete.after_commit"}) {
    TempDir d;
    World w;
    {
      auto s = MustOpen(d.path());
      ASSERT_TRUE(s->CreateVolume("v", kSize).ok());
      auto h = *s->OpenVolume("v", 0, false);
      ASSERT_TRUE(h->Write(0, kSize, w.a.data(), false).ok());
    }
    CrashAt(d.path(), point, [](Store& s) { return s.DeleteVolume("v"); });
    auto s = MustOpen(d.path());
    if (std::string(point) == "delete.after_gen") {
      EXPECT_TRUE(VolumeBytes(*s, "v") == w.a);
      EXPECT_EQ(CountChunkFiles(d.path()), 4);
    } else {
      EXPECT_EQ(s->GetVolume("v").status().code(), Status::Code::kNotFound);
      EXPECT_EQ(CountChunkFiles(d.path()), 0);  // Open finished the delete
    }
  }
}

// kill -9 while writing: every write acknowledged with FUA, and every write
// acknowledged before a successful Flush, must be there afterwards.
TEST(StoreCrash, AcknowledgedWritesSurviveKill9) {
  TempDir d;
  const uint64_t kBlock = 4096, kBlocks = 256;
  {
    auto s = MustOpen(d.path());
    ASSERT_TRUE(s->CreateVolume("v", kBlocks * kBlock).ok());
  }
  int acks[2];
  ASSERT_EQ(pipe(acks), 0);
  pid_t pid = ForkChild([&] {
    close(acks[0]);
    auto s = Store::Open(d.path(), testing::SmallChunks(), Logger("child", LogLevel::kError));
    if (!s.ok()) return 90;
    auto h = *(*s)->OpenVolume("v", 0, false);
    std::vector<uint32_t> unflushed;
    for (uint32_t seq = 1;; ++seq) {
      uint32_t blk = (seq * 2654435761u) % kBlocks;
      std::vector<char> buf(kBlock);
      for (uint64_t i = 0; i < kBlock; i += 4) std::memcpy(&buf[i], &seq, 4);
      bool fua = seq % 3 == 0;
      if (!h->Write(blk * kBlock, kBlock, buf.data(), fua).ok()) return 1;
      if (seq % 40 == 0 && !(*s)->CreateSnapshot("v", "s" + std::to_string(seq)).ok()) return 2;
      std::vector<uint32_t> done;
      if (fua) done.push_back(seq);
      else unflushed.push_back(seq);
      if (seq % 7 == 0) {
        if (!h->Flush().ok()) return 3;
        done.insert(done.end(), unflushed.begin(), unflushed.end());
        unflushed.clear();
      }
      for (uint32_t x : done)
        if (write(acks[1], &x, 4) != 4) return 4;
    }
  });
  close(acks[1]);
  // Collect acknowledgements for a while, then kill -9 mid-stream.
  std::map<uint32_t, uint32_t> latest;  // block -> highest acked seq
  uint32_t x, n = 0;
  while (n < 300 && read(acks[0], &x, 4) == 4) {
    uint32_t blk = (x * 2654435761u) % kBlocks;
    latest[blk] = std::max(latest[blk], x);
    ++n;
  }
  kill(pid, SIGKILL);
  int st = WaitChild(pid, 20s);
  ASSERT_TRUE(st != -1 && WIFSIGNALED(st)) << "child ended early, acks " << n;
  while (read(acks[0], &x, 4) == 4) {  // acks written before the kill
    uint32_t blk = (x * 2654435761u) % kBlocks;
    latest[blk] = std::max(latest[blk], x);
  }
  close(acks[0]);
  ASSERT_GE(n, 300u);
  auto s = MustOpen(d.path());
  auto all = VolumeBytes(*s, "v");
  for (auto [blk, seq] : latest) {
    uint32_t got;
    std::memcpy(&got, &all[blk * kBlock], 4);
    // A later unacknowledged write may have landed too; never an older one.
    EXPECT_GE(got, seq) << "block " << blk;
    for (uint64_t i = 0; i < kBlock; i += 4) {
      uint32_t v;
      std::memcpy(&v, &all[blk * kBlock + i], 4);
      ASSERT_EQ(v, got) << "torn block " << blk;
    }
  }
}

}  // namespace
}  // namespace ferry::store
