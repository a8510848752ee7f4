// TidIndex: lowest free tid, kept in step with the targets of a state.
#include "target/server/tid_index.h"

#include <gtest/gtest.h>

namespace ferry::server {
namespace {

void Put(ServerState* s, const std::string& iqn, uint32_t tid) {
  TargetSpec t;
  t.iqn = iqn;
  t.tid = tid;
  s->targets[iqn] = t;
}

uint32_t NextOf(const TidIndex& x) {
  auto r = x.Next();
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? *r : 0;
}

TEST(TidIndex, EmptyStartsAtOneAndFollowsAdds) {
  TidIndex x;
  ServerState s;
  x.Rebuild(s);
  EXPECT_EQ(NextOf(x), 1u);
  EXPECT_EQ(NextOf(x), 1u);  // Next() reserves nothing
  Put(&s, "a", 1);
  x.Update("a", s);
  EXPECT_EQ(NextOf(x), 2u);
  Put(&s, "b", 2);
  x.Update("b", s);
  EXPECT_EQ(NextOf(x), 3u);
  EXPECT_EQ(x.size(), 2u);
}

TEST(TidIndex, RebuildFindsTheLowestGapAndRemovalsReopenIt) {
  ServerState s;
  Put(&s, "a", 1);
  Put(&s, "b", 2);
  Put(&s, "c", 5);
  TidIndex x;
  x.Rebuild(s);
  EXPECT_EQ(NextOf(x), 3u);
  Put(&s, "d", 3);
  x.Update("d", s);
  EXPECT_EQ(NextOf(x), 4u);
  s.targets.erase("a");
  x.Update("a", s);
  EXPECT_EQ(NextOf(x), 1u);
  // Removing the highest lowers the mark past the free ids below it.
  Put(&s, "e", 1);
  x.Update("e", s);
  Put(&s, "f", 4);
  x.Update("f", s);
  EXPECT_EQ(NextOf(x), 6u);
  for (const char* k : {"c", "f", "d"}) {
    s.targets.erase(k);
    x.Update(k, s);
  }
  EXPECT_EQ(NextOf(x), 3u);
  // An update to the same target with another tid moves it; an unknown one is a no-op.
  Put(&s, "b", 9);
  x.Update("b", s);
  EXPECT_EQ(NextOf(x), 2u);
  x.Update("nobody", s);
  EXPECT_EQ(x.size(), 2u);
}

TEST(TidIndex, ADuplicateTidStaysUsedUntilBothHoldersGo) {
  ServerState s;
  Put(&s, "a", 1);
  Put(&s, "b", 1);
  TidIndex x;
  x.Rebuild(s);
  EXPECT_EQ(NextOf(x), 2u);
  s.targets.erase("a");
  x.Update("a", s);
  EXPECT_EQ(NextOf(x), 2u);
  s.targets.erase("b");
  x.Update("b", s);
  EXPECT_EQ(NextOf(x), 1u);
}

TEST(TidIndex, AllTakenIsAConflictAndOneFreedIsFoundAgain) {
  ServerState s;
  for (uint32_t t = 1; t <= TidIndex::kMaxTid; ++t) Put(&s, "t" + std::to_string(t), t);
  TidIndex x;
  x.Rebuild(s);
  EXPECT_EQ(x.Next().status().code(), Status::Code::kConflict);
  s.targets.erase("t40000");
  x.Update("t40000", s);
  EXPECT_EQ(NextOf(x), 40000u);
}

}  // namespace
}  // namespace ferry::server
