// One Store used from many threads: writers sharing chunks (in-process
// allocation and copy-on-write races) while another thread snapshots,
// and a fencing raise while writes are in flight.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "target/store/store.h"
#include "tests/store/store_test_util.h"

namespace ferry::store {
namespace {

using testing::MustOpen;
using testing::ReadAll;
using testing::TempDir;
constexpr uint64_t kChunk = 64 << 10;
constexpr uint64_t kBlock = 4096;

void FillBlock(std::vector<char>& b, uint32_t tag) {
  for (uint64_t i = 0; i < b.size(); i += 4) std::memcpy(&b[i], &tag, 4);
}
// The tag a block holds, or ~0 when it is torn (not one write's bytes).
uint32_t BlockTag(const char* p) {
  uint32_t t;
  std::memcpy(&t, p, 4);
  for (uint64_t i = 4; i < kBlock; i += 4)
    if (std::memcmp(p, p + i, 4) != 0) return ~0u;
  return t;
}

TEST(StoreThreads, WritersAndSnapshotsShareChunks) {
  TempDir d;
  auto s = MustOpen(d.path());
  const int kThreads = 4;
  const uint64_t kBlocks = 8 * kChunk / kBlock;  // 128 blocks over 8 chunks
  const int kRounds = 6;
  ASSERT_TRUE(s->CreateVolume("v", kBlocks * kBlock).ok());
  auto h = *s->OpenVolume("v", 0, false);
  std::atomic<int> running{kThreads};
  std::atomic<bool> failed{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<char> buf(kBlock);
      for (int r = 1; r <= kRounds; ++r)
        for (uint64_t b = static_cast<uint64_t>(t); b < kBlocks; b += kThreads) {
          FillBlock(buf, static_cast<uint32_t>(r * 16 + t));  // tag: round and thread
          if (!h->Write(b * kBlock, kBlock, buf.data(), r == kRounds).ok()) failed = true;
        }
      --running;
    });
  }
  int snaps = 0;
  bool snap_ok = true, flush_ok = true;
  while (running > 0 && snaps < 6 && snap_ok) {
    snap_ok = s->CreateSnapshot("v", "s" + std::to_string(snaps)).ok();
    ++snaps;
    if (snaps % 3 == 0) flush_ok = flush_ok && h->Flush().ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (auto& t : ts) t.join();
  ASSERT_TRUE(snap_ok);
  ASSERT_TRUE(flush_ok);
  ASSERT_FALSE(failed);
  auto all = ReadAll(*h, 0, kBlocks * kBlock);
  for (uint64_t b = 0; b < kBlocks; ++b)
    ASSERT_EQ(BlockTag(&all[b * kBlock]), static_cast<uint32_t>(kRounds * 16 + b % kThreads)) << b;
  for (int i = 0; i < snaps; ++i) {
    auto img = ReadAll(**s->OpenSnapshot("v", "s" + std::to_string(i)), 0, kBlocks * kBlock);
    for (uint64_t b = 0; b < kBlocks; ++b) {
      uint32_t tag = BlockTag(&img[b * kBlock]);
      ASSERT_TRUE(tag == 0 || (tag % 16 == b % kThreads && tag / 16 >= 1 && tag / 16 <= kRounds))
          << "snapshot " << i << " block " << b << " tag " << tag;
    }
  }
}

TEST(StoreThreads, RaiseWhileWritingFencesEveryLaterWrite) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 4 * kChunk).ok());
  auto a = *s->OpenVolume("v", 1, false);
  std::atomic<bool> stop{false};
  std::atomic<int> ok_writes{0}, fenced{0}, bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t) {
    ts.emplace_back([&, t] {
      std::vector<char> buf(kBlock, 'a');
      for (int i = 0; !stop; ++i) {
        Status st = a->Write(static_cast<uint64_t>((i * 2 + t) % 64) * kBlock, kBlock, buf.data(), false);
        if (st.ok()) ++ok_writes;
        else if (st.code() == Status::Code::kFenced) ++fenced;
        else ++bad;
      }
    });
  }
  auto wait_for = [](const std::atomic<int>& c, int n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (c.load() < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return c.load() >= n;
  };
  bool started = wait_for(ok_writes, 100);  // the raise lands among writes in flight
  auto r = s->RaiseEpoch("v", 2);
  // After RaiseEpoch returned, every write through `a` is refused and no 'a' byte lands.
  auto b = s->OpenVolume("v", 2, false);
  std::vector<char> z(4 * kChunk, 'b');
  bool b_ok = b.ok() && (*b)->Write(0, z.size(), z.data(), false).ok();
  bool saw_fence = wait_for(fenced, 10);
  stop = true;
  for (auto& t : ts) t.join();
  ASSERT_TRUE(started);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_TRUE(b_ok);
  EXPECT_TRUE(saw_fence);
  EXPECT_EQ(bad.load(), 0);
  auto all = ReadAll(**b, 0, 4 * kChunk);
  EXPECT_EQ(std::count(all.begin(), all.end(), 'b'), static_cast<long>(4 * kChunk));
}

}  // namespace
}  // namespace ferry::store
