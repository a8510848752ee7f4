#include "target/blockdev/timeouts.h"

#include <gtest/gtest.h>

#include <thread>

namespace ferry::blockdev {
namespace {

TEST(Timeouts, DefaultsAreTheDesignValues) {
  Timeouts t;
  auto all = t.All();
  std::vector<std::pair<std::string, int64_t>> want = {{"read", 60},      {"write", 60},    {"readretry", 86400},
                                                       {"writeretry", 86400}, {"switch", 0}, {"recovery", 120},
                                                       {"reconnect", 60}};
  EXPECT_EQ(all, want);
  EXPECT_EQ(t.Get(TimeoutKind::kRead), std::chrono::seconds(60));
}

TEST(Timeouts, ValidationRefusesBadValuesAndChangesNothing) {
  Timeouts t;
  EXPECT_EQ(t.Set("read", 0).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("write", -5).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("switch", -1).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("recovery", 15).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("reconnect", 0).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("reconnect", 25).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("bogus", 10).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Set("read", int64_t{1} << 40).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Seconds(TimeoutKind::kRead), 60);
  EXPECT_EQ(t.Seconds(TimeoutKind::kWrite), 60);
  EXPECT_EQ(t.Seconds(TimeoutKind::kSwitch), 0);
  EXPECT_EQ(t.Seconds(TimeoutKind::kRecovery), 120);
  EXPECT_EQ(t.Seconds(TimeoutKind::kReconnect), 60);
}

TEST(Timeouts, ValidValuesApply) {
  Timeouts t;
  EXPECT_TRUE(t.Set("switch", 0).ok());
  EXPECT_TRUE(t.Set("switch", 3).ok());
  EXPECT_TRUE(t.Set("recovery", 10).ok());
  EXPECT_TRUE(t.Set("reconnect", 20).ok());
  EXPECT_TRUE(t.Set(TimeoutKind::kReadRetry, 1).ok());
  EXPECT_EQ(t.Seconds(TimeoutKind::kSwitch), 3);
  EXPECT_EQ(t.Seconds(TimeoutKind::kRecovery), 10);
  EXPECT_EQ(t.Seconds(TimeoutKind::kReconnect), 20);
  EXPECT_EQ(t.Get(TimeoutKind::kReadRetry), std::chrono::seconds(1));
}

TEST(Timeouts, NamesRoundTrip) {
  for (int i = 0; i < kTimeoutKinds; ++i) {
    auto k = static_cast<TimeoutKind>(i);
    auto p = ParseTimeoutName(TimeoutName(k));
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(*p, k);
  }
  EXPECT_FALSE(ParseTimeoutName("READ").has_value());
}

TEST(Timeouts, ConcurrentSetAndGetSeeOnlyValidValues) {
  Timeouts t;
  std::atomic<bool> stop{false};
  std::thread w([&] {
    for (int i = 0; !stop; ++i) ASSERT_TRUE(t.Set("read", 1 + i % 2).ok());
  });
  for (int i = 0; i < 100000; ++i) {
    auto s = t.Seconds(TimeoutKind::kRead);
    ASSERT_TRUE(s == 1 || s == 2 || s == 60) << s;
  }
  stop = true;
  w.join();
}

TEST(FixedMode, SetGetClear) {
  FixedMode f;
  EXPECT_FALSE(f.Get().has_value());
  f.Set("127.0.0.1:1");
  EXPECT_EQ(f.Get().value(), "127.0.0.1:1");
  f.Clear();
  EXPECT_FALSE(f.Get().has_value());
}

}  // namespace
}  // namespace ferry::blockdev
