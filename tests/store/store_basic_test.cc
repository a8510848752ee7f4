// Store basics: names, volume lifecycle, the I/O path against an in-memory
// model, allocation maps, bounds and read-only checks, in-process fencing.
#include <gtest/gtest.h>

#include <random>

#include "target/store/store.h"
#include "tests/store/store_test_util.h"

namespace ferry::store {
namespace {

using testing::MustOpen;
using testing::Pattern;
using testing::ReadAll;
using testing::TempDir;
constexpr uint64_t kChunk = 64 << 10;

TEST(StoreNames, ValidateName) {
  EXPECT_TRUE(ValidateName("vol-1_a.b").ok());
  EXPECT_TRUE(ValidateName(std::string(128, 'x')).ok());
  for (const std::string& bad : std::vector<std::string>{"", ".", "..", "a/b", "../x", "a b", "x\n", std::string(129, 'x'), std::string("a\0b", 3),
                          "é", "vol:snap", "v@1"}) {
    Status st = ValidateName(bad);
    EXPECT_EQ(st.code(), Status::Code::kInvalidArgument) << "accepted: " << bad;
  }
}

TEST(StoreNames, BadNamesNeverBecomePaths) {
  TempDir d;
  auto s = MustOpen(d.path());
  EXPECT_EQ(s->CreateVolume("../evil", 1 << 20).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s->CreateVolume("a/b", 1 << 20).code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE(s->CreateVolume("ok", 1 << 20).ok());
  EXPECT_EQ(s->CreateSnapshot("ok", "..").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s->CloneVolume("ok", std::nullopt, "x/y").code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s->OpenVolume("..", 0, false).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(s->OpenSnapshot("ok", "a b").status().code(), Status::Code::kInvalidArgument);
  auto l = s->ListVolumes();
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
}

TEST(StoreOpen, RejectsBadChunkSize) {
  TempDir d;
  Store::Options o;
  o.chunk_size = 3 << 16;
  EXPECT_EQ(Store::Open(d.path(), o, Logger()).status().code(), Status::Code::kInvalidArgument);
  o.chunk_size = 4096;
  EXPECT_EQ(Store::Open(d.path(), o, Logger()).status().code(), Status::Code::kInvalidArgument);
}

TEST(StoreVolumes, CreateGetListDelete) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("b", 10 * kChunk + 5).ok());
  ASSERT_TRUE(s->CreateVolume("a", kChunk).ok());
  EXPECT_EQ(s->CreateVolume("a", kChunk).code(), Status::Code::kAlreadyExists);
  EXPECT_EQ(s->CreateVolume("z", 0).code(), Status::Code::kInvalidArgument);
  auto vi = s->GetVolume("b");
  ASSERT_TRUE(vi.ok()) << vi.status().ToString();
  EXPECT_EQ(vi->size, 10 * kChunk + 5);
  EXPECT_EQ(vi->chunk_size, kChunk);
  EXPECT_EQ(vi->allocated, 0u);
  EXPECT_EQ(vi->epoch, 0u);
  auto l = s->ListVolumes();
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 2u);
  EXPECT_EQ((*l)[0].name, "a");
  EXPECT_EQ((*l)[1].name, "b");
  EXPECT_EQ(s->GetVolume("nope").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(s->DeleteVolume("nope").code(), Status::Code::kNotFound);
  EXPECT_EQ(s->OpenVolume("nope", 0, false).status().code(), Status::Code::kNotFound);
  ASSERT_TRUE(s->DeleteVolume("a").ok());
  EXPECT_EQ(s->GetVolume("a").status().code(), Status::Code::kNotFound);
  EXPECT_EQ(s->ListVolumes()->size(), 1u);
}

TEST(StoreIo, FreshVolumeReadsZeros) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 3 * kChunk).ok());
  auto h = s->OpenVolume("v", 0, false);
  ASSERT_TRUE(h.ok());
  auto buf = ReadAll(**h, 0, 3 * kChunk);
  EXPECT_EQ(std::count(buf.begin(), buf.end(), 0), static_cast<long>(3 * kChunk));
  EXPECT_EQ(testing::CountChunkFiles(d.path()), 0);
}

// Random unaligned writes, zeroes, trims and flushes against a byte model.
TEST(StoreIo, RandomOpsMatchModel) {
  TempDir d;
  auto s = MustOpen(d.path());
  const uint64_t size = 7 * kChunk + 1234;
  ASSERT_TRUE(s->CreateVolume("v", size).ok());
  auto h = s->OpenVolume("v", 0, false);
  ASSERT_TRUE(h.ok());
  std::vector<char> model(size, 0);
  std::mt19937_64 rng(42);
  for (int i = 0; i < 400; ++i) {
    uint64_t off = rng() % size;
    uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 3 * kChunk);
    int op = static_cast<int>(rng() % 10);
    if (op < 5) {
      auto p = Pattern(len, static_cast<uint64_t>(i));
      ASSERT_TRUE((*h)->Write(off, len, p.data(), op == 0).ok());
      std::copy(p.begin(), p.end(), model.begin() + static_cast<long>(off));
    } else if (op < 7) {
      ASSERT_TRUE((*h)->WriteZeroes(off, len, op == 5).ok());
      std::fill(model.begin() + static_cast<long>(off), model.begin() + static_cast<long>(off + len), 0);
    } else if (op == 7) {
      ASSERT_TRUE((*h)->Trim(off, len).ok());
      std::fill(model.begin() + static_cast<long>(off), model.begin() + static_cast<long>(off + len), 0);
    } else if (op == 8) {
      ASSERT_TRUE((*h)->Flush().ok());
    } else {
      auto got = ReadAll(**h, off, len);
      ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + static_cast<long>(off))) << "op " << i;
    }
  }
  auto all = ReadAll(**h, 0, size);
  EXPECT_TRUE(all == model);
  // A second store object (after this one is gone) sees the same bytes.
  h->reset();
  s.reset();
  auto s2 = MustOpen(d.path());
  auto h2 = s2->OpenVolume("v", 0, true);
  ASSERT_TRUE(h2.ok());
  EXPECT_TRUE(ReadAll(**h2, 0, size) == model);
}

TEST(StoreIo, MapAndDeallocation) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 4 * kChunk).ok());
  auto h = *s->OpenVolume("v", 0, false);
  auto p = Pattern(100, 1);
  ASSERT_TRUE(h->Write(kChunk + 10, 100, p.data(), false).ok());
  ASSERT_TRUE(h->Write(2 * kChunk, 100, p.data(), false).ok());
  auto m = h->Map(0, 4 * kChunk);
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 3u);
  EXPECT_EQ((*m)[0].offset, 0u);
  EXPECT_FALSE((*m)[0].allocated);
  EXPECT_EQ((*m)[1].offset, kChunk);
  EXPECT_EQ((*m)[1].length, 2 * kChunk);
  EXPECT_TRUE((*m)[1].allocated);
  EXPECT_FALSE((*m)[2].allocated);
  EXPECT_EQ(s->GetVolume("v")->allocated, 2 * kChunk);
  // A sub-range map is clipped to the range.
  auto m2 = h->Map(kChunk + 5, 10);
  ASSERT_TRUE(m2.ok());
  ASSERT_EQ(m2->size(), 1u);
  EXPECT_EQ((*m2)[0].offset, kChunk + 5);
  EXPECT_EQ((*m2)[0].length, 10u);
  // Zeroing a whole chunk deallocates it; a partial zero keeps it allocated.
  ASSERT_TRUE(h->WriteZeroes(kChunk, kChunk, false).ok());
  ASSERT_TRUE(h->Trim(2 * kChunk, 50).ok());
  m = h->Map(0, 4 * kChunk);
  ASSERT_EQ(m->size(), 3u);
  EXPECT_EQ((*m)[1].offset, 2 * kChunk);
  EXPECT_EQ((*m)[1].length, kChunk);
  EXPECT_EQ(s->GetVolume("v")->allocated, kChunk);
  auto r = ReadAll(*h, 2 * kChunk, 100);
  EXPECT_EQ(std::count(r.begin(), r.begin() + 50, 0), 50);
  EXPECT_TRUE(std::equal(r.begin() + 50, r.end(), p.begin() + 50));
}

TEST(StoreIo, BoundsAndReadOnly) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", kChunk + 512).ok());
  auto h = *s->OpenVolume("v", 0, false);
  char b[1024] = {};
  EXPECT_EQ(h->Read(kChunk, 1024, b).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(h->Write(kChunk + 1, 512, b, false).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(h->Write(~uint64_t{0} - 10, 100, b, false).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(h->WriteZeroes(0, kChunk + 513, false).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(h->Map(kChunk + 513, 0).status().code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(h->Read(kChunk, 512, b).ok());
  EXPECT_TRUE(h->Write(0, 0, b, false).ok());
  auto ro = *s->OpenVolume("v", 0, true);
  EXPECT_TRUE(ro->read_only());
  EXPECT_EQ(ro->Write(0, 10, b, false).code(), Status::Code::kPermissionDenied);
  EXPECT_EQ(ro->Trim(0, 10).code(), Status::Code::kPermissionDenied);
  EXPECT_EQ(testing::CountChunkFiles(d.path()), 0);
}

TEST(StoreFencing, OlderHandleIsFencedInProcess) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 2 * kChunk).ok());
  auto a = *s->OpenVolume("v", 1, false);
  EXPECT_EQ(a->epoch(), 1u);
  EXPECT_EQ(s->GetVolume("v")->epoch, 1u);
  auto pa = Pattern(4096, 1), pb = Pattern(4096, 2);
  ASSERT_TRUE(a->Write(0, 4096, pa.data(), false).ok());
  auto b = *s->OpenVolume("v", 2, false);
  EXPECT_EQ(s->GetVolume("v")->epoch, 2u);
  EXPECT_EQ(a->Write(0, 4096, pb.data(), true).code(), Status::Code::kFenced);
  EXPECT_EQ(a->WriteZeroes(0, 4096, false).code(), Status::Code::kFenced);
  EXPECT_EQ(a->Trim(0, 2 * kChunk).code(), Status::Code::kFenced);
  EXPECT_TRUE(ReadAll(*a, 0, 4096) == pa);  // reads still work, nothing landed
  ASSERT_TRUE(b->Write(100, 4096, pb.data(), false).ok());
  auto r = ReadAll(*b, 100, 4096);
  EXPECT_TRUE(r == pb);
  // Raising to a lower value changes nothing; opening below the epoch gives a fenced handle.
  EXPECT_EQ(*s->RaiseEpoch("v", 1), 2u);
  auto old = *s->OpenVolume("v", 1, false);
  EXPECT_EQ(old->Write(0, 1, pb.data(), false).code(), Status::Code::kFenced);
  EXPECT_EQ(*s->RaiseEpoch("v", 7), 7u);
  EXPECT_EQ(b->Write(0, 1, pb.data(), false).code(), Status::Code::kFenced);
  // RaiseEpochAbove always raises: one above the current epoch, or to the floor when that is higher.
  EXPECT_EQ(*s->RaiseEpochAbove("v", 3), 8u);
  EXPECT_EQ(*s->RaiseEpochAbove("v", 8), 9u);
  EXPECT_EQ(*s->RaiseEpochAbove("v", 20), 20u);
  auto c = *s->OpenVolume("v", 20, false);
  EXPECT_EQ(*s->RaiseEpochAbove("v", 1), 21u);
  EXPECT_EQ(c->Write(0, 1, pb.data(), false).code(), Status::Code::kFenced);
  EXPECT_EQ(s->RaiseEpochAbove("nope", 1).status().code(), Status::Code::kNotFound);
  // The epoch is durable: a new store object sees it.
  a.reset(); b.reset(); old.reset(); c.reset();
  s.reset();
  auto s2 = MustOpen(d.path());
  EXPECT_EQ(s2->GetVolume("v")->epoch, 21u);
}

TEST(StoreVolumes, DeletedVolumeHandleFailsAndNameIsReusable) {
  TempDir d;
  auto s = MustOpen(d.path());
  ASSERT_TRUE(s->CreateVolume("v", 2 * kChunk).ok());
  auto h = *s->OpenVolume("v", 0, false);
  auto p = Pattern(4096, 3);
  ASSERT_TRUE(h->Write(0, 4096, p.data(), false).ok());
  ASSERT_TRUE(s->DeleteVolume("v").ok());
  EXPECT_EQ(testing::CountChunkFiles(d.path()), 0);
  EXPECT_EQ(h->Write(0, 4096, p.data(), false).code(), Status::Code::kNotFound);
  ASSERT_TRUE(s->CreateVolume("v", 2 * kChunk).ok());
  EXPECT_EQ(h->Read(0, 4096, p.data()).code(), Status::Code::kNotFound);
  auto h2 = *s->OpenVolume("v", 0, false);
  auto r = ReadAll(*h2, 0, 4096);
  EXPECT_EQ(std::count(r.begin(), r.end(), 0), 4096);
}

}  // namespace
}  // namespace ferry::store
