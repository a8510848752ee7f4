// Task management and task-set ordering (SAM-5), LUN add/remove under load.
#include "tests/scsi/harness.h"

#include <atomic>
#include <thread>

namespace ferry::scsi::testing {
namespace {

const std::vector<uint8_t> kTur = {0, 0, 0, 0, 0, 0};

class TmfTest : public ::testing::Test {
 protected:
  void SetUp() override {
    h.ClearAll();
    h.dev->SetDeferred(true);
  }
  std::shared_ptr<Slot> Read(const std::shared_ptr<Nexus>& n, uint32_t lba, uint32_t tag,
                             TaskAttr attr = TaskAttr::kSimple) {
    return h.Start(n, Cdb10(0x28, 0, lba, 1), {}, 0, attr, tag);
  }
  std::shared_ptr<Slot> Write(const std::shared_ptr<Nexus>& n, uint32_t lba, uint8_t seed, uint32_t tag,
                              TaskAttr attr = TaskAttr::kSimple) {
    return h.Start(n, Cdb10(0x2a, 0, lba, 1), Pattern(512, seed), 0, attr, tag);
  }
  Harness h;
};

TEST_F(TmfTest, AbortTask) {
  auto r = Read(h.a, 1, 10);
  auto keep = Read(h.a, 2, 11);
  EXPECT_EQ(r->calls, 0);
  EXPECT_EQ(h.target.AbortTask(*h.a, 10), TmfResult::kComplete);
  ASSERT_EQ(r->calls, 1);
  EXPECT_EQ(r->result->status, kStatusTaskAborted);
  EXPECT_EQ(h.target.AbortTask(*h.a, 10), TmfResult::kTaskDoesNotExist);
  EXPECT_EQ(h.target.AbortTask(*h.b, 11), TmfResult::kTaskDoesNotExist);  // another nexus's tag
  h.dev->RunPending();
  EXPECT_EQ(r->calls, 1);
  ASSERT_EQ(keep->calls, 1);
  EXPECT_GOOD(*keep->result);
}

TEST_F(TmfTest, AbortTaskSetOnlyTouchesTheIssuer) {
  auto a1 = Read(h.a, 1, 1), a2 = Write(h.a, 2, 3, 2), b1 = Read(h.b, 3, 1);
  EXPECT_EQ(h.target.AbortTaskSet(*h.a, 0), TmfResult::kComplete);
  EXPECT_EQ(a1->result->status, kStatusTaskAborted);
  EXPECT_EQ(a2->result->status, kStatusTaskAborted);
  EXPECT_EQ(b1->calls, 0);
  h.dev->RunPending();
  EXPECT_GOOD(*b1->result);
  EXPECT_EQ(h.target.AbortTaskSet(*h.a, 9), TmfResult::kLunDoesNotExist);
}

TEST_F(TmfTest, ClearTaskSetAndLunReset) {
  auto a1 = Read(h.a, 1, 1), b1 = Read(h.b, 3, 1);
  EXPECT_EQ(h.target.ClearTaskSet(*h.a, 0), TmfResult::kComplete);
  EXPECT_EQ(a1->result->status, kStatusTaskAborted);
  EXPECT_EQ(b1->result->status, kStatusTaskAborted);  // TAS = 1
  h.dev->RunPending();
  auto c1 = Read(h.c, 4, 9);
  EXPECT_EQ(h.target.LunReset(*h.a, 0), TmfResult::kComplete);
  EXPECT_EQ(c1->result->status, kStatusTaskAborted);
  h.dev->RunPending();
  h.dev->SetDeferred(false);
  EXPECT_SENSE(h.Run(h.a, kTur), 6, 0x29, 0x03);
  EXPECT_SENSE(h.Run(h.b, kTur), 6, 0x29, 0x03);
  EXPECT_GOOD(h.Run(h.b, kTur));
  EXPECT_EQ(h.target.LunReset(*h.a, 5), TmfResult::kLunDoesNotExist);
  EXPECT_EQ(h.target.TargetReset(*h.a, true), TmfResult::kComplete);
  EXPECT_SENSE(h.Run(h.c, kTur), 6, 0x29, 0x00);
}

TEST_F(TmfTest, OrderedWaitsForEarlierAndBlocksLater) {
  auto w1 = Write(h.a, 1, 1, 1);
  auto w2 = Write(h.a, 1, 2, 2, TaskAttr::kOrdered);
  auto r3 = Read(h.a, 1, 3);
  EXPECT_EQ(h.dev->PendingCount(), 1u);
  ASSERT_TRUE(h.dev->RunOne());  // w1 lands; now the ordered write runs alone
  EXPECT_EQ(w1->calls, 1);
  EXPECT_EQ(h.dev->PendingCount(), 1u);
  EXPECT_EQ(r3->calls, 0);
  ASSERT_TRUE(h.dev->RunOne());  // w2 lands; then the read goes
  EXPECT_EQ(w2->calls, 1);
  ASSERT_TRUE(h.dev->RunOne());
  ASSERT_EQ(r3->calls, 1);
  EXPECT_EQ(r3->result->data_in, Pattern(512, 2));
}

TEST_F(TmfTest, HeadOfQueueStartsAtOnce) {
  auto w1 = Write(h.a, 1, 1, 1);
  auto w2 = Write(h.a, 2, 2, 2, TaskAttr::kOrdered);  // waits for w1
  auto hq = Read(h.b, 5, 3, TaskAttr::kHeadOfQueue);
  EXPECT_EQ(h.dev->PendingCount(), 2u);  // w1 and the head-of-queue read
  h.dev->RunPending();
  EXPECT_EQ(w1->calls + w2->calls + hq->calls, 3);
}

TEST_F(TmfTest, AbortedCompareAndWriteDoesNotWrite) {
  std::vector<uint8_t> caw(16, 0);
  caw[0] = 0x89; caw[13] = 1;
  std::vector<uint8_t> buf(1024, 0);
  std::fill(buf.begin() + 512, buf.end(), 0xee);
  auto c = h.Start(h.a, caw, buf, 0, TaskAttr::kSimple, 50);
  EXPECT_EQ(h.dev->PendingCount(), 1u);  // its read
  EXPECT_EQ(h.target.AbortTask(*h.a, 50), TmfResult::kComplete);
  EXPECT_EQ(c->result->status, kStatusTaskAborted);
  int writes = h.dev->writes;
  h.dev->RunPending();
  EXPECT_EQ(h.dev->writes, writes);
  EXPECT_EQ(h.dev->Bytes(0, 512), std::vector<uint8_t>(512, 0));
  // The task set is free again.
  auto r = Read(h.a, 0, 51);
  h.dev->RunPending();
  EXPECT_EQ(r->calls, 1);
}

TEST_F(TmfTest, NexusLossAbortsItsTasks) {
  auto a1 = Read(h.a, 1, 1), b1 = Read(h.b, 2, 1);
  h.target.NexusLost(*h.a);
  EXPECT_EQ(a1->calls, 1);
  EXPECT_EQ(b1->calls, 0);
  h.dev->RunPending();
  EXPECT_EQ(a1->calls, 1);
  EXPECT_EQ(b1->calls, 1);
}

TEST_F(TmfTest, RemovedLunFinishesInflightCommands) {
  auto r = Read(h.a, 3, 1);
  ASSERT_TRUE(h.target.RemoveLun(0).ok());
  h.dev->RunPending();
  ASSERT_EQ(r->calls, 1);
  EXPECT_GOOD(*r->result);
  h.dev->SetDeferred(false);
  EXPECT_SENSE(h.Run(h.a, kTur), 5, 0x25, 0);
}

// Many threads drive two LUNs while a third LUN is added and removed: every
// command completes exactly once and data written is read back.
TEST(ScsiConcurrency, LunChurnDoesNotDisturbIo) {
  Harness h(4 << 20);
  auto dev1 = std::make_shared<RamDevice>(4 << 20);
  ASSERT_TRUE(h.target.AddLun(1, dev1, Id("v1")).ok());
  h.ClearAll();
  h.ClearUa(h.a, 1);
  h.ClearUa(h.b, 1);
  std::atomic<int> bad{0}, done{0};
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    while (!stop) {
      auto d = std::make_shared<RamDevice>(1 << 20);
      if (!h.target.AddLun(5, d, Id("v5")).ok()) bad++;
      if (!h.target.RemoveLun(5).ok()) bad++;
    }
  });
  auto worker = [&](std::shared_ptr<Nexus> n, uint64_t lun, uint32_t base) {
    for (uint32_t i = 0; i < 1500; ++i) {
      uint32_t lba = base + (i % 64);
      auto data = Pattern(512, uint8_t(i));
      auto w = h.Start(n, Cdb10(0x2a, 0, lba, 1), data, lun);
      auto r = h.Start(n, Cdb10(0x28, 0, lba, 1), {}, lun);
      auto t = h.Start(n, kTur, {}, 5);
      if (w->calls != 1 || r->calls != 1 || t->calls != 1) { bad++; continue; }
      // UAs (REPORTED LUNS DATA HAS CHANGED) may interleave; data must match when GOOD.
      if (w->result->status == kStatusGood && r->result->status == kStatusGood && r->result->data_in != data) bad++;
      done++;
    }
  };
  std::thread t1(worker, h.a, 0, 0), t2(worker, h.b, 1, 100), t3(worker, h.a, 1, 200);
  t1.join();
  t2.join();
  t3.join();
  stop = true;
  churn.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(done.load(), 4500);
}

}  // namespace
}  // namespace ferry::scsi::testing
