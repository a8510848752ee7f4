// VolumeHandle::PlanRead: the plan of a range, read back segment by segment,
// is byte-for-byte what Read() returns (allocated, short, trimmed, punched,
// unallocated, shared, copy-on-written, cloned, extended and snapshot chunks),
// the plan is exact (no file segment reaches past its file's end), and the
// volume's I/O guard is not held once PlanRead returns: snapshot, revert,
// epoch raise and delete proceed while a plan's fds are open, and the plan
// still reads the bytes as of the plan afterwards.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "target/store/store.h"
#include "tests/store/store_test_util.h"

namespace ferry::store {
namespace {

using testing::MustOpen;
using testing::Pattern;
using testing::ReadAll;
using testing::TempDir;
constexpr uint64_t kChunk = 64 << 10;

// Reads a plan back into memory. File segments must lie wholly inside their
// files (the store is quiescent here, so the plan must be exact).
std::vector<char> Materialize(const std::vector<ReadSegment>& plan) {
  std::vector<char> out;
  for (size_t i = 0; i < plan.size(); ++i) {
    const ReadSegment& s = plan[i];
    EXPECT_GT(s.length, 0u) << "segment " << i;
    size_t at = out.size();
    out.resize(at + s.length, '\0');
    if (s.kind == ReadSegment::Kind::kZeros) {
      EXPECT_EQ(s.fd.get(), -1) << "segment " << i;
      if (i > 0) {
        EXPECT_NE(plan[i - 1].kind, ReadSegment::Kind::kZeros) << "zero segments not merged at " << i;
      }
      continue;
    }
    EXPECT_GE(s.fd.get(), 0) << "segment " << i;
    struct stat sb;
    EXPECT_EQ(::fstat(s.fd.get(), &sb), 0);
    EXPECT_LE(s.file_offset + s.length, static_cast<uint64_t>(sb.st_size)) << "segment " << i << " past EOF";
    uint64_t done = 0;
    while (done < s.length) {
      ssize_t n = ::pread(s.fd.get(), out.data() + at + done, s.length - done,
                          static_cast<off_t>(s.file_offset + done));
      if (n <= 0) {
        ADD_FAILURE() << "pread of segment " << i << " returned " << n;
        break;
      }
      done += static_cast<uint64_t>(n);
    }
  }
  return out;
}

std::vector<char> PlanBytes(VolumeHandle& h, uint64_t off, uint64_t len) {
  auto p = h.PlanRead(off, len);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  if (!p.ok()) return {};
  return Materialize(*p);
}

// Random ranges (and every chunk edge) compared with Read().
void ExpectPlanMatchesRead(VolumeHandle& h, uint64_t seed, int rounds) {
  const uint64_t size = h.size();
  std::mt19937_64 rnd(seed);
  for (int i = 0; i < rounds; ++i) {
    uint64_t off, len;
    switch (i % 4) {
      case 0:  // anywhere, any length
        off = rnd() % size;
        len = 1 + rnd() % (size - off);
        break;
      case 1:  // small, unaligned
        off = rnd() % size;
        len = 1 + rnd() % std::min<uint64_t>(3 * 4096, size - off);
        break;
      case 2:  // around a chunk edge
        off = (rnd() % (size / kChunk)) * kChunk;
        off = off >= 513 ? off - 1 - rnd() % 512 : off;
        len = 1 + rnd() % std::min<uint64_t>(2 * kChunk, size - off);
        break;
      default:  // sector-aligned, several chunks
        off = (rnd() % (size / 512)) * 512;
        len = std::min<uint64_t>(size - off, 512 * (1 + rnd() % (4 * kChunk / 512)));
        break;
    }
    auto want = ReadAll(h, off, len);
    auto got = PlanBytes(h, off, len);
    ASSERT_EQ(got.size(), len) << "off " << off << " len " << len;
    ASSERT_TRUE(got == want) << "off " << off << " len " << len << " round " << i;
  }
  auto all = PlanBytes(h, 0, size);
  ASSERT_TRUE(all == ReadAll(h, 0, size));
}

class PlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    s_ = MustOpen(d_.path());
    ASSERT_NE(s_, nullptr);
    ASSERT_TRUE(s_->CreateVolume("v", 10 * kChunk + 4096).ok());
    h_ = *s_->OpenVolume("v", 0, false);
    // Chunk layout before the snapshot: 0,1 full; 2 first half only (short
    // file); 3 hole; 4 full, later trimmed whole (empty head file hides the
    // shared chunk); 5 full, later copy-on-written in the middle; 6 full with
    // a punched hole; 7,8 hole; 9 full; 10 (4 KiB tail) written.
    Put(0, 2 * kChunk, 1);
    Put(2 * kChunk, kChunk / 2, 2);
    Put(4 * kChunk, 3 * kChunk, 3);
    Put(9 * kChunk, kChunk + 4096, 4);
    ASSERT_TRUE(s_->CreateSnapshot("v", "s1").ok());
    ASSERT_TRUE(h_->Trim(4 * kChunk, kChunk).ok());
    Put(5 * kChunk + 1000, 3000, 5);
    ASSERT_TRUE(h_->WriteZeroes(6 * kChunk + 8192, 16384, false).ok());
    Put(8 * kChunk + 100, 200, 6);  // into a hole: a short new file
  }
  void Put(uint64_t off, uint64_t len, uint64_t seed) {
    auto b = Pattern(len, seed);
    ASSERT_TRUE(h_->Write(off, len, b.data(), false).ok());
  }
  TempDir d_;
  std::unique_ptr<Store> s_;
  std::shared_ptr<VolumeHandle> h_;
};

TEST_F(PlanTest, MatchesReadOnRandomRanges) { ExpectPlanMatchesRead(*h_, 1, 400); }

TEST_F(PlanTest, SnapshotAndClonesMatchRead) {
  auto snap = s_->OpenSnapshot("v", "s1");
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
  ExpectPlanMatchesRead(**snap, 2, 200);
  ASSERT_TRUE(s_->CloneVolume("v", std::string("s1"), "from-snap").ok());
  ASSERT_TRUE(s_->CloneVolume("v", std::nullopt, "from-vol").ok());
  ASSERT_TRUE(s_->ExtendVolume("from-vol", 14 * kChunk + 512).ok());
  auto c1 = s_->OpenVolume("from-snap", 0, false);
  auto c2 = s_->OpenVolume("from-vol", 0, true);
  ASSERT_TRUE(c1.ok() && c2.ok());
  auto b = Pattern(kChunk, 9);  // copy-on-write in the clone, and into its extension
  ASSERT_TRUE((*c1)->Write(kChunk / 2, kChunk, b.data(), false).ok());
  auto c2w = *s_->OpenVolume("from-vol", 0, false);
  ASSERT_TRUE(c2w->Write(12 * kChunk + 7, 1000, b.data(), false).ok());
  ExpectPlanMatchesRead(**c1, 3, 200);
  ExpectPlanMatchesRead(**c2, 4, 200);
  // The source after the clone rebased it still matches too.
  ExpectPlanMatchesRead(*h_, 5, 100);
}

TEST_F(PlanTest, ExtendedVolumeMatchesRead) {
  ASSERT_TRUE(s_->ExtendVolume("v", 16 * kChunk).ok());
  EXPECT_EQ(h_->size(), 16 * kChunk);
  Put(15 * kChunk + 10, 50, 7);
  ExpectPlanMatchesRead(*h_, 6, 200);
  // The old 4 KiB tail chunk is a short file now followed by zeros.
  auto p = h_->PlanRead(10 * kChunk, 2 * kChunk);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].kind, ReadSegment::Kind::kFile);
  EXPECT_EQ((*p)[0].length, 4096u);
  EXPECT_EQ((*p)[1].kind, ReadSegment::Kind::kZeros);
  EXPECT_EQ((*p)[1].length, 2 * kChunk - 4096);
}

TEST_F(PlanTest, SegmentsDescribeTheLayout) {
  // Chunks 0-1: two files; 2: half file + zeros; 3: zeros (merged with 2's tail);
  // 4: trimmed (empty head file) = zeros.
  auto p = h_->PlanRead(0, 5 * kChunk);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->size(), 4u);
  EXPECT_EQ((*p)[0].kind, ReadSegment::Kind::kFile);
  EXPECT_EQ((*p)[0].length, kChunk);
  EXPECT_EQ((*p)[1].kind, ReadSegment::Kind::kFile);
  EXPECT_EQ((*p)[1].length, kChunk);
  EXPECT_EQ((*p)[2].kind, ReadSegment::Kind::kFile);
  EXPECT_EQ((*p)[2].length, kChunk / 2);
  EXPECT_EQ((*p)[3].kind, ReadSegment::Kind::kZeros);
  EXPECT_EQ((*p)[3].length, kChunk / 2 + 2 * kChunk);
  // Each file segment has an fd of its own.
  EXPECT_NE((*p)[0].fd.get(), (*p)[1].fd.get());
  // An unaligned range inside one chunk: one segment at the chunk offset.
  auto q = h_->PlanRead(kChunk + 123, 4567);
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 1u);
  EXPECT_EQ((*q)[0].file_offset, 123u);
  EXPECT_EQ((*q)[0].length, 4567u);
  // Zero length: an empty plan.
  auto e = h_->PlanRead(3 * kChunk, 0);
  ASSERT_TRUE(e.ok());
  EXPECT_TRUE(e->empty());
}

TEST_F(PlanTest, RangeBeyondTheEndIsRefused) {
  EXPECT_EQ(h_->PlanRead(h_->size(), 1).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(h_->PlanRead(h_->size() - 10, 11).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(h_->PlanRead(UINT64_MAX, 2).status().code(), Status::Code::kInvalidArgument);
  auto snap = *s_->OpenSnapshot("v", "s1");
  EXPECT_EQ(snap->PlanRead(snap->size() - 1, 2).status().code(), Status::Code::kInvalidArgument);
}

TEST_F(PlanTest, GuardIsNotHeldWhileAPlanIsOpen) {
  const uint64_t len = 10 * kChunk;
  auto before = ReadAll(*h_, 0, len);
  auto p = h_->PlanRead(0, len);
  ASSERT_TRUE(p.ok());
  auto snap_plan = (*s_->OpenSnapshot("v", "s1"))->PlanRead(0, len);
  ASSERT_TRUE(snap_plan.ok());
  auto snap_before = ReadAll(**s_->OpenSnapshot("v", "s1"), 0, len);
  // With the guard still held, each of these would wait out the 500 ms drain
  // timeout and fail with kTimeout.
  auto t0 = std::chrono::steady_clock::now();
  Status st;
  std::thread other([&] { st = s_->CreateSnapshot("v", "s2"); });
  other.join();
  ASSERT_TRUE(st.ok()) << st.ToString();
  ASSERT_TRUE(s_->RaiseEpoch("v", 3).ok());
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(450));
  // New data everywhere (copy-on-write of every shared chunk), then revert
  // to s1 and delete both snapshots and then the volume: the old files are
  // replaced and unlinked, but the plans still read what they planned.
  auto h3 = *s_->OpenVolume("v", 3, false);
  auto b = Pattern(len, 11);
  ASSERT_TRUE(h3->Write(0, len, b.data(), true).ok());
  EXPECT_TRUE(ReadAll(*h3, 0, len) == b);
  ASSERT_TRUE(s_->RevertVolume("v", "s1").ok());
  ASSERT_TRUE(s_->DeleteSnapshot("v", "s2").ok());
  ASSERT_TRUE(s_->DeleteSnapshot("v", "s1").ok());
  ASSERT_TRUE(s_->DeleteVolume("v").ok());
  EXPECT_EQ(testing::CountChunkFiles(d_.path()), 0);
  EXPECT_TRUE(Materialize(*p) == before);
  EXPECT_TRUE(Materialize(*snap_plan) == snap_before);
}

TEST_F(PlanTest, PlansDuringConcurrentWrites) {
  // A writer rewrites 4 KiB blocks of chunk 3 (a hole at first) with one of
  // two patterns while plans are taken and read back: planning never fails,
  // and every byte read through a plan is zero or that byte of one of the
  // patterns (a read racing with a write may see either, as with Read()).
  const uint64_t base = 3 * kChunk, len = kChunk;
  std::vector<std::vector<char>> pats = {Pattern(4096, 21), Pattern(4096, 22)};
  std::atomic<bool> stop{false};
  std::thread w([&] {
    for (int i = 0; !stop; ++i) {
      uint64_t blk = static_cast<uint64_t>(i * 7) % (len / 4096);
      Status st = h_->Write(base + blk * 4096, 4096, pats[i % 2].data(), false);
      if (!st.ok()) {
        ADD_FAILURE() << st.ToString();
        return;
      }
    }
  });
  for (int r = 0; r < 200; ++r) {
    auto got = PlanBytes(*h_, base, len);
    ASSERT_EQ(got.size(), len);
    for (uint64_t i = 0; i < len; ++i) {
      char c = got[i];
      ASSERT_TRUE(c == 0 || c == pats[0][i % 4096] || c == pats[1][i % 4096]) << "round " << r << " byte " << i;
    }
  }
  stop = true;
  w.join();
  ExpectPlanMatchesRead(*h_, 8, 50);
}

// A handle that does not implement PlanRead gets the default: kConflict.
class NoPlanHandle : public VolumeHandle {
 public:
  uint64_t size() const override { return 4096; }
  uint64_t epoch() const override { return 0; }
  bool read_only() const override { return true; }
  Status Read(uint64_t, uint64_t, char*) override { return Status::Ok(); }
  Status Write(uint64_t, uint64_t, const char*, bool) override { return Status::Ok(); }
  Status WriteZeroes(uint64_t, uint64_t, bool) override { return Status::Ok(); }
  Status Trim(uint64_t, uint64_t) override { return Status::Ok(); }
  Status Flush() override { return Status::Ok(); }
  Result<std::vector<Extent>> Map(uint64_t, uint64_t) override { return std::vector<Extent>{}; }
};

TEST(PlanDefault, HandlesWithoutPlansSayUseRead) {
  NoPlanHandle h;
  EXPECT_EQ(h.PlanRead(0, 4096).status().code(), Status::Code::kConflict);
}

TEST(OwnedFdTest, ClosesOnceAndMoves) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ::close(fds[1]);
  {
    OwnedFd a(fds[0]);
    OwnedFd b(std::move(a));
    EXPECT_EQ(a.get(), -1);
    EXPECT_EQ(b.get(), fds[0]);
    OwnedFd c;
    c = std::move(b);
    EXPECT_EQ(c.get(), fds[0]);
    EXPECT_NE(::fcntl(fds[0], F_GETFD), -1);
  }
  EXPECT_EQ(::fcntl(fds[0], F_GETFD), -1);  // closed when c went
}

}  // namespace
}  // namespace ferry::store
