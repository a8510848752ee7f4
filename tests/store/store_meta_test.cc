// Metadata encoding: exact round trip; truncated, corrupted or hostile text is
// rejected with kIoError (never a crash); a corrupt volume on disk is reported
// and makes the space sweep stand down instead of freeing its chunks.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>

#include "target/store/fs_util.h"
#include "target/store/meta.h"
#include "target/store/store.h"
#include "tests/store/store_test_util.h"

namespace ferry::store {
namespace {

VolumeMeta Sample() {
  VolumeMeta m;
  m.uuid = 0x1234567890abcdefull;
  m.name = "vol-1.x_y";
  m.chunk_size = 1 << 16;
  m.size = 10 * m.chunk_size + 17;
  m.created = 1700000000;
  m.head = 0xfedcba9876543210ull;
  m.base = {0, 0, 5, 5, 5, 7, 0, 9, 9, 9, 1};
  SnapMeta s;
  s.name = "s1";
  s.size = 3 * m.chunk_size;
  s.created = 1700000001;
  s.map = {0, 5, 5};
  m.snaps.push_back(s);
  return m;
}

TEST(StoreMeta, RoundTrip) {
  VolumeMeta m = Sample(), back;
  std::string text = EncodeMeta(m);
  ASSERT_TRUE(DecodeMeta(text, &back).ok());
  EXPECT_EQ(EncodeMeta(back), text);
  EXPECT_EQ(back.base, m.base);
  ASSERT_EQ(back.snaps.size(), 1u);
  EXPECT_EQ(back.snaps[0].map, m.snaps[0].map);
  EXPECT_EQ(back.head, m.head);
  EXPECT_EQ(back.size, m.size);
}

TEST(StoreMeta, EveryTruncationAndFlipIsRejected) {
  std::string text = EncodeMeta(Sample());
  VolumeMeta out;
  for (size_t n = 0; n < text.size(); ++n)
    EXPECT_EQ(DecodeMeta(text.substr(0, n), &out).code(), Status::Code::kIoError) << n;
  std::mt19937 rng(1);
  for (int i = 0; i < 2000; ++i) {
    std::string t = text;
    t[rng() % t.size()] ^= static_cast<char>(1 + rng() % 255);
    EXPECT_FALSE(DecodeMeta(t, &out).ok());
  }
}

// Well-formed checksums over hostile bodies: still rejected, no huge allocations.
TEST(StoreMeta, HostileBodiesWithValidChecksumAreRejected) {
  auto sign = [](std::string body) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : body) {
      h ^= c;
      h *= 1099511628211ull;
    }
    return body + "end " + Hex16(h) + "\n";
  };
  std::string head =
      "ferry-volume 1\nuuid 0000000000000001\nname v\nsize 131072\nchunk_size 65536\ncreated 0\n"
      "head 0000000000000002\n";
  VolumeMeta out;
  EXPECT_TRUE(DecodeMeta(sign(head + "map 2 1 2:0000000000000000\n"), &out).ok());
  for (std::string bad : {
           "map 2 1 3:0000000000000000\n",                   // more entries than declared
           "map 3 1 3:0000000000000000\n",                   // wrong length for the size
           "map 99999999999 1 1:0000000000000000\n",         // absurd length
           "map 2 2 1:0000000000000000\n",                   // missing run
           "map 2 1 2:00000000000000zz\n",                   // bad hex
           "map 2 1 0:0000000000000000\n",                   // empty run
           "map 2 1 2:0000000000000000\nsnap x 999999999999999 0\nmap 1 1 1:0000000000000000\n",
           "map 2 1 2:0000000000000000\nsnap\n",
       }) {
    EXPECT_FALSE(DecodeMeta(sign(head + bad), &out).ok()) << bad;
  }
  EXPECT_FALSE(DecodeMeta(sign("ferry-volume 2\n"), &out).ok());
  EXPECT_FALSE(DecodeMeta(sign(head.substr(0, head.find("chunk_size")) + "chunk_size 3000\n"), &out).ok());
}

TEST(StoreMeta, CorruptVolumeIsReportedAndItsChunksAreKept) {
  testing::TempDir d;
  {
    auto s = testing::MustOpen(d.path());
    ASSERT_TRUE(s->CreateVolume("good", 1 << 17).ok());
    ASSERT_TRUE(s->CreateVolume("bad", 1 << 17).ok());
    for (const char* n : {"good", "bad"}) {
      auto h = *s->OpenVolume(n, 0, false);
      auto p = testing::Pattern(1 << 17, 3);
      ASSERT_TRUE(h->Write(0, p.size(), p.data(), false).ok());
    }
    ASSERT_TRUE(s->CreateSnapshot("bad", "s").ok());  // "bad"'s chunks live outside its head now
  }
  ASSERT_EQ(testing::CountChunkFiles(d.path()), 4);
  std::string meta = d.path() + "/volumes/bad/meta";
  int fd = open(meta.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(pwrite(fd, "X", 1, 20), 1);
  close(fd);
  auto s = testing::MustOpen(d.path());
  EXPECT_EQ(s->GetVolume("bad").status().code(), Status::Code::kIoError);
  EXPECT_EQ(s->OpenVolume("bad", 0, false).status().code(), Status::Code::kIoError);
  auto l = s->ListVolumes();  // lists the readable ones (the bad one is logged)
  ASSERT_TRUE(l.ok());
  ASSERT_EQ(l->size(), 1u);
  EXPECT_EQ((*l)[0].name, "good");
  EXPECT_EQ(testing::CountChunkFiles(d.path()), 4);  // the sweep did not free "bad"'s chunks
  auto g = s->OpenVolume("good", 0, true);
  ASSERT_TRUE(g.ok());
  EXPECT_TRUE(testing::ReadAll(**g, 0, 1 << 17) == testing::Pattern(1 << 17, 3));
}

}  // namespace
}  // namespace ferry::store
