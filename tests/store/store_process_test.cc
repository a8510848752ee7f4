// Several processes on one data directory: visibility of each other's
// writes (no cached holes), metadata changes while another process does I/O,
// concurrent metadata changes, allocation races, and fencing with STONITH.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "target/store/store.h"
#include "tests/store/store_test_util.h"

namespace ferry::store {
namespace {

using namespace std::chrono_literals;
using testing::ForkChild;
using testing::MustOpen;
using testing::Pattern;
using testing::ReadAll;
using testing::TempDir;
using testing::WaitChild;
using testing::WaitStopped;
constexpr uint64_t kChunk = 64 << 10;

std::unique_ptr<Store> ChildStore(const std::string& dir, Store::Options o = testing::SmallChunks()) {
  auto s = Store::Open(dir, o, Logger("child", LogLevel::kError));
  if (!s.ok()) _exit(90);
  return std::move(s).value();
}

bool ExitedWith(int st, int code) { return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == code; }

TEST(StoreProcess, WritesAreVisibleAcrossProcesses) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 4 * kChunk).ok());
  auto h = *s->OpenVolume("v", 0, false);
  auto zeros = ReadAll(*h, 0, 4 * kChunk);  // this process has now looked at the holes
  auto p = Pattern(kChunk + 100, 1);
  pid_t pid = ForkChild([&] {
    auto cs = ChildStore(d.path());
    auto ch = cs->OpenVolume("v", 0, false);
    if (!ch.ok()) return 1;
    if (!(*ch)->Write(kChunk - 50, p.size(), p.data(), false).ok()) return 2;
    return 0;
  });
  ASSERT_TRUE(ExitedWith(WaitChild(pid, 20s), 0));
  EXPECT_TRUE(ReadAll(*h, kChunk - 50, p.size()) == p);
  // And the other way round, with a chunk the child had read as a hole.
  auto q = Pattern(300, 2);
  ASSERT_TRUE(h->Write(3 * kChunk, 300, q.data(), false).ok());
  pid = ForkChild([&] {
    auto cs = ChildStore(d.path());
    auto ch = *cs->OpenVolume("v", 0, true);
    std::vector<char> b(300);
    if (!ch->Read(3 * kChunk, 300, b.data()).ok()) return 1;
    return b == q ? 0 : 3;
  });
  EXPECT_TRUE(ExitedWith(WaitChild(pid, 20s), 0));
}

// A child writes blocks 0,1,2,... in order, each one after the previous one
// completed, and reports its progress; this process snapshots meanwhile. Every
// snapshot must hold a prefix of the blocks (a snapshot waits for writes in
// flight; the writer then goes on in the new head) that includes every block
// reported before the snapshot began, and zeros after it.
TEST(StoreProcess, SnapshotsWhileAnotherProcessWrites) {
  TempDir d;
  auto s = MustOpen(d.path());
  const uint64_t kBlock = 4096, kBlocks = 1024, kReport = 64;  // 4 MiB over 64 chunks
  ASSERT_TRUE(s->CreateVolume("v", kBlocks * kBlock).ok());
  int prog[2];
  ASSERT_EQ(pipe(prog), 0);
  pid_t pid = ForkChild([&] {
    close(prog[0]);
    auto cs = ChildStore(d.path());
    auto ch = *cs->OpenVolume("v", 0, false);
    for (uint64_t b = 0; b < kBlocks; ++b) {
      std::vector<char> buf(kBlock, static_cast<char>(1 + b % 250));
      if (!ch->Write(b * kBlock, kBlock, buf.data(), false).ok()) return 1;
      if ((b + 1) % kReport == 0) {
        uint64_t done = b + 1;
        if (write(prog[1], &done, sizeof done) != sizeof done) return 2;
      }
    }
    return 0;
  });
  close(prog[1]);
  std::vector<uint64_t> at_least;  // per snapshot: blocks known written before it
  uint64_t done = 0;
  while (read(prog[0], &done, sizeof done) == sizeof done) {
    if (done % (2 * kReport) != 0) continue;
    ASSERT_TRUE(s->CreateSnapshot("v", "s" + std::to_string(at_least.size())).ok());
    at_least.push_back(done);
  }
  close(prog[0]);
  ASSERT_TRUE(ExitedWith(WaitChild(pid, 60s), 0));
  ASSERT_EQ(at_least.size(), kBlocks / (2 * kReport));
  auto h = *s->OpenVolume("v", 0, true);
  auto all = ReadAll(*h, 0, kBlocks * kBlock);
  for (uint64_t b = 0; b < kBlocks; ++b) ASSERT_EQ(all[b * kBlock], static_cast<char>(1 + b % 250)) << b;
  int partial = 0;
  for (size_t i = 0; i < at_least.size(); ++i) {
    auto sh = *s->OpenSnapshot("v", "s" + std::to_string(i));
    auto img = ReadAll(*sh, 0, kBlocks * kBlock);
    uint64_t b = 0;
    for (; b < kBlocks; ++b) {
      std::vector<char> want(kBlock, static_cast<char>(1 + b % 250));
      if (!std::equal(want.begin(), want.end(), img.begin() + static_cast<long>(b * kBlock))) break;
    }
    EXPECT_GE(b, at_least[i]) << "snapshot s" << i << " lost acknowledged blocks";
    if (b < kBlocks) ++partial;
    for (uint64_t z = b * kBlock; z < kBlocks * kBlock; ++z)
      ASSERT_EQ(img[z], 0) << "snapshot s" << i << " is not a prefix: byte " << z << " after " << b << " blocks";
  }
  RecordProperty("partial_snapshots", partial);
}

TEST(StoreProcess, RevertByAnotherProcessIsSeenHere) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 2 * kChunk).ok());
  auto h = *s->OpenVolume("v", 0, false);
  auto a = Pattern(2 * kChunk, 1), b = Pattern(2 * kChunk, 2);
  ASSERT_TRUE(h->Write(0, a.size(), a.data(), false).ok());
  ASSERT_TRUE(s->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(h->Write(0, b.size(), b.data(), false).ok());
  pid_t pid = ForkChild([&] {
    auto cs = ChildStore(d.path());
    return cs->RevertVolume("v", "s").ok() ? 0 : 1;
  });
  ASSERT_TRUE(ExitedWith(WaitChild(pid, 20s), 0));
  EXPECT_TRUE(ReadAll(*h, 0, a.size()) == a);
  auto c = Pattern(100, 3);
  ASSERT_TRUE(h->Write(10, 100, c.data(), false).ok());
  EXPECT_TRUE(ReadAll(**s->OpenSnapshot("v", "s"), 0, a.size()) == a);
}

// Two processes take snapshots of one volume at the same time: none is lost.
TEST(StoreProcess, ConcurrentMetadataChangesDoNotLoseUpdates) {
  TempDir d;
  {
    auto s = MustOpen(d.path());
    ASSERT_TRUE(s->CreateVolume("v", kChunk).ok());
  }
  auto work = [&](const char* tag) {
    return ForkChild([&d, tag] {
      auto cs = ChildStore(d.path());
      for (int i = 0; i < 10; ++i)
        if (!cs->CreateSnapshot("v", std::string(tag) + std::to_string(i)).ok()) return 1;
      if (!cs->CloneVolume("v", std::nullopt, std::string("clone-") + tag).ok()) return 2;
      return 0;
    });
  };
  pid_t p1 = work("a"), p2 = work("b");
  EXPECT_TRUE(ExitedWith(WaitChild(p1, 60s), 0));
  EXPECT_TRUE(ExitedWith(WaitChild(p2, 60s), 0));
  auto s = MustOpen(d.path());
  auto vi = s->GetVolume("v");
  ASSERT_TRUE(vi.ok());
  EXPECT_EQ(vi->snapshots.size(), 20u);
  EXPECT_EQ(s->ListVolumes()->size(), 3u);
}

// Two processes write different halves of the same chunks at once, first
// into holes, then after a snapshot into shared chunks (copy-on-write race).
TEST(StoreProcess, AllocationAndCopyOnWriteRaces) {
  TempDir d;
  const uint64_t kChunks = 24;
  {
    auto s = MustOpen(d.path());
    ASSERT_TRUE(s->CreateVolume("v", kChunks * kChunk).ok());
  }
  for (int round = 0; round < 2; ++round) {
    if (round == 1) {
      auto s = MustOpen(d.path());
      ASSERT_TRUE(s->CreateSnapshot("v", "s").ok());
    }
    int go[2];
    ASSERT_EQ(pipe(go), 0);
    auto writer = [&](uint64_t half, char val) {
      return ForkChild([&, half, val] {
        auto cs = ChildStore(d.path());
        auto ch = *cs->OpenVolume("v", 0, false);
        char c;
        if (read(go[0], &c, 1) != 1) return 5;
        std::vector<char> buf(kChunk / 2, val);
        for (uint64_t i = 0; i < kChunks; ++i)
          if (!ch->Write(i * kChunk + half * kChunk / 2, kChunk / 2, buf.data(), false).ok()) return 1;
        return 0;
      });
    };
    char a = static_cast<char>(10 + round), b = static_cast<char>(20 + round);
    pid_t p1 = writer(0, a), p2 = writer(1, b);
    ASSERT_EQ(write(go[1], "xx", 2), 2);
    EXPECT_TRUE(ExitedWith(WaitChild(p1, 60s), 0));
    EXPECT_TRUE(ExitedWith(WaitChild(p2, 60s), 0));
    close(go[0]);
    close(go[1]);
    auto s = MustOpen(d.path());
    auto h = *s->OpenVolume("v", 0, true);
    auto all = ReadAll(*h, 0, kChunks * kChunk);
    for (uint64_t i = 0; i < kChunks; ++i) {
      ASSERT_EQ(std::count(all.begin() + static_cast<long>(i * kChunk),
                           all.begin() + static_cast<long>(i * kChunk + kChunk / 2), a),
                static_cast<long>(kChunk / 2))
          << "round " << round << " chunk " << i;
      ASSERT_EQ(std::count(all.begin() + static_cast<long>(i * kChunk + kChunk / 2),
                           all.begin() + static_cast<long>((i + 1) * kChunk), b),
                static_cast<long>(kChunk / 2))
          << "round " << round << " chunk " << i;
    }
    if (round == 1) {
      auto sh = *s->OpenSnapshot("v", "s");
      auto img = ReadAll(*sh, 0, kChunk);
      EXPECT_EQ(img[0], 10);
      EXPECT_EQ(img[kChunk - 1], 20);
    }
  }
}

// A healthy process must never be killed: neither when it is idle (its
// shared lock lingers briefly after I/O) nor when it is busy with a steady
// stream of I/O (it drains when it sees someone at the gate).
TEST(StoreFencingProcess, IdleOrBusyHealthyProcessIsNotKilled) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 4 * kChunk).ok());
  auto h = *s->OpenVolume("v", 1, false);
  std::vector<char> buf(4096, 'q');
  ASSERT_TRUE(h->Write(0, 4096, buf.data(), false).ok());  // now idle, lock lingering
  auto raise_in_child = [&](uint64_t epoch) {
    return ForkChild([&d, epoch] {
      auto o = testing::SmallChunks();
      // Long enough that only a holder that never lets go could be killed,
      // even on a loaded machine; a killed parent would end the whole run.
      o.fence_drain_timeout = 5000ms;
      auto cs = ChildStore(d.path(), o);
      auto r = cs->RaiseEpoch("v", epoch);
      return r.ok() && *r == epoch ? 0 : 1;
    });
  };
  ASSERT_TRUE(ExitedWith(WaitChild(raise_in_child(2), 20s), 0));
  EXPECT_EQ(h->Write(0, 4096, buf.data(), false).code(), Status::Code::kFenced);
  // Busy: a thread keeps reading and writing through an epoch-2 handle.
  auto h2 = *s->OpenVolume("v", 2, false);
  std::atomic<bool> stop{false};
  std::atomic<int> fenced{0}, other{0};
  std::thread io([&] {
    std::vector<char> b(4096, 'r');
    for (uint64_t i = 0; !stop; ++i) {
      Status st = (i % 2) ? h2->Read((i % 64) * 4096, 4096, b.data()) : h2->Write((i % 64) * 4096, 4096, b.data(), false);
      if (st.code() == Status::Code::kFenced) ++fenced;
      else if (!st.ok()) ++other;
    }
  });
  std::this_thread::sleep_for(20ms);
  pid_t pid = raise_in_child(3);
  int st = WaitChild(pid, 20s);
  auto deadline = std::chrono::steady_clock::now() + 20s;  // let the thread run into the fence
  while (fenced.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  stop = true;
  io.join();
  EXPECT_TRUE(ExitedWith(st, 0));
  EXPECT_GT(fenced.load(), 0);
  EXPECT_EQ(other.load(), 0);
}

TEST(StoreFencingProcess, RaiseInAnotherProcessFencesThisHandle) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", kChunk).ok());
  auto a = *s->OpenVolume("v", 1, false);
  auto x = Pattern(4096, 1), y = Pattern(4096, 2);
  ASSERT_TRUE(a->Write(0, 4096, x.data(), false).ok());
  pid_t pid = ForkChild([&] {
    auto cs = ChildStore(d.path());
    auto b = cs->OpenVolume("v", 2, false);
    if (!b.ok()) return 1;
    return (*b)->Write(0, 4096, y.data(), true).ok() ? 0 : 2;
  });
  ASSERT_TRUE(ExitedWith(WaitChild(pid, 20s), 0));
  EXPECT_EQ(a->Write(0, 4096, x.data(), true).code(), Status::Code::kFenced);
  EXPECT_EQ(a->Write(8192, 4096, x.data(), false).code(), Status::Code::kFenced);
  EXPECT_TRUE(ReadAll(*a, 0, 4096) == y);
  auto z = ReadAll(*a, 8192, 4096);
  EXPECT_EQ(std::count(z.begin(), z.end(), 0), 4096);
  EXPECT_EQ(s->GetVolume("v")->epoch, 2u);
}

// A writer frozen between taking the volume's lock and its pwrite (a hung
// gateway): raising the epoch kills it (STONITH) and its write never lands.
TEST(StoreFencingProcess, StuckWriterIsKilledAndItsWriteNeverLands) {
  TempDir d;
  auto o = testing::SmallChunks();
  o.fence_drain_timeout = 300ms;
  auto s = MustOpen(d.path(), o);
  ASSERT_TRUE(s->CreateVolume("v", kChunk).ok());
  ASSERT_TRUE(s->RaiseEpoch("v", 1).ok());
  auto x = Pattern(4096, 1);
  pid_t pid = ForkChild([&] {
    auto co = testing::SmallChunks();
    co.crash_point = "stop:write.locked";
    auto cs = ChildStore(d.path(), co);
    auto h = *cs->OpenVolume("v", 1, false);
    (void)h->Write(0, 4096, x.data(), true);
    return 0;  // not reached when stopped and killed
  });
  ASSERT_TRUE(WaitStopped(pid, 20s));
  auto t0 = std::chrono::steady_clock::now();
  auto r = s->RaiseEpoch("v", 2);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 2u);
  EXPECT_GE(took, 250ms);  // it did wait for the drain first
  int st = WaitChild(pid, 20s);
  ASSERT_TRUE(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << st;
  auto h = *s->OpenVolume("v", 2, false);
  auto got = ReadAll(*h, 0, 4096);
  EXPECT_EQ(std::count(got.begin(), got.end(), 0), 4096);
  ASSERT_TRUE(h->Write(0, 4096, x.data(), false).ok());
}

TEST(StoreFencingProcess, WithoutStonithTheRaiseTimesOutAndChangesNothing) {
  TempDir d;
  auto o = testing::SmallChunks();
  o.fence_drain_timeout = 200ms;
  o.stonith = false;
  auto s = MustOpen(d.path(), o);
  ASSERT_TRUE(s->CreateVolume("v", kChunk).ok());
  ASSERT_TRUE(s->RaiseEpoch("v", 1).ok());
  pid_t pid = ForkChild([&] {
    auto co = testing::SmallChunks();
    co.crash_point = "stop:write.locked";
    auto cs = ChildStore(d.path(), co);
    auto h = *cs->OpenVolume("v", 1, false);
    char b[512] = {1};
    (void)h->Write(0, 512, b, false);
    return 0;
  });
  ASSERT_TRUE(WaitStopped(pid, 20s));
  auto r = s->RaiseEpoch("v", 2);
  EXPECT_EQ(r.status().code(), Status::Code::kTimeout);
  EXPECT_EQ(kill(pid, 0), 0);  // still alive
  kill(pid, SIGKILL);
  int st = WaitChild(pid, 20s);
  EXPECT_TRUE(WIFSIGNALED(st));
  EXPECT_EQ(s->GetVolume("v")->epoch, 1u);
  EXPECT_EQ(*s->RaiseEpoch("v", 2), 2u);
}

}  // namespace
}  // namespace ferry::store

namespace ferry::store {
namespace {

// With too few file descriptors, I/O fails with an error; it never returns
// wrong bytes and never writes where it should not.
TEST(StoreLimits, RunningOutOfFdsIsAnErrorNotWrongData) {
  TempDir d;
  const uint64_t kChunks = 200;
  {
    auto s = MustOpen(d.path());
    ASSERT_TRUE(s->CreateVolume("v", kChunks * kChunk).ok());
  }
  pid_t pid = ForkChild([&] {
    struct rlimit rl {96, 96};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 80;
    auto cs = ChildStore(d.path());
    auto h = *cs->OpenVolume("v", 0, false);
    int errors = 0;
    for (uint64_t i = 0; i < kChunks; ++i) {
      std::vector<char> b(512, static_cast<char>(1 + i % 200));
      Status st = h->Write(i * kChunk, b.size(), b.data(), false);
      if (!st.ok()) {
        if (st.code() != Status::Code::kIoError) return 81;
        ++errors;
      }
    }
    if (errors == 0) return 82;  // the limit did bite
    for (uint64_t i = 0; i < kChunks; ++i) {
      std::vector<char> b(512);
      Status st = h->Read(i * kChunk, b.size(), b.data());
      if (!st.ok()) continue;
      // Either what was written or zeros (write failed), never anything else.
      if (b[0] != 0 && b[0] != static_cast<char>(1 + i % 200)) return 83;
      if (std::count(b.begin(), b.end(), b[0]) != 512) return 84;
    }
    return 0;
  });
  int st = WaitChild(pid, 60s);
  ASSERT_TRUE(ExitedWith(st, 0)) << (WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  // Whatever the child managed to write is intact for a process with enough fds.
  auto s = MustOpen(d.path());
  auto h = *s->OpenVolume("v", 0, true);
  for (uint64_t i = 0; i < kChunks; ++i) {
    auto b = ReadAll(*h, i * kChunk, 512);
    ASSERT_TRUE(b[0] == 0 || b[0] == static_cast<char>(1 + i % 200)) << i;
    ASSERT_EQ(std::count(b.begin(), b.end(), b[0]), 512) << i;
  }
}

}  // namespace
}  // namespace ferry::store
