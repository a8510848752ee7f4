// Unit tests of backend::AnswerCache and IdentityVersion (one class each, no
// database): reuse only at the current version, single flight, bounded waits,
// errors never kept, bounded size.
#include "backend/answer_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ferry::backend {
namespace {

bool Until(const std::function<bool()>& f) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!f() && std::chrono::steady_clock::now() < end) std::this_thread::yield();
  return f();
}

TEST(AnswerCache, ReusesAnAnswerOnlyWhileItsVersionIsCurrent) {
  AnswerCache c;
  int computed = 0;
  auto make = [&](const std::string& v) {
    return [&computed, v]() -> Result<std::string> {
      ++computed;
      return v;
    };
  };
  auto a = c.Get("k", 1, make("one"));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(**a, "one");
  auto b = c.Get("k", 1, make("never"));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(**b, "one");
  EXPECT_EQ(a->get(), b->get());  // the same text object, not a copy
  EXPECT_EQ(computed, 1);
  // Another key is its own answer.
  EXPECT_EQ(**c.Get("other", 1, make("x")), "x");
  EXPECT_EQ(computed, 2);
  // A newer version computes afresh, and drops what older versions kept.
  EXPECT_EQ(**c.Get("k", 2, make("two")), "two");
  EXPECT_EQ(computed, 3);
  EXPECT_EQ(c.size(), 1u);
  EXPECT_EQ(**c.Get("k", 2, make("never")), "two");
  // A caller that read an older version (a write landed since) may get the
  // newer answer: it is never older than what that caller asked for.
  EXPECT_EQ(**c.Get("k", 1, make("never")), "two");
  EXPECT_EQ(computed, 3);
  auto n = c.counters();
  EXPECT_EQ(n.misses, 3u);
  EXPECT_EQ(n.hits, 3u);
}

TEST(AnswerCache, ErrorsAreReturnedButNeverKept) {
  AnswerCache c;
  int computed = 0;
  auto r = c.Get("k", 1, [&]() -> Result<std::string> {
    ++computed;
    return Status::NotFound("no such thing");
  });
  EXPECT_EQ(r.status().code(), Status::Code::kNotFound);
  auto r2 = c.Get("k", 1, [&]() -> Result<std::string> {
    ++computed;
    return std::string("now it exists");
  });
  ASSERT_TRUE(r2.ok());
  EXPECT_EQ(**r2, "now it exists");
  EXPECT_EQ(computed, 2);
  // An exception from the computation is an error, not a crash.
  auto r3 = c.Get("t", 1, []() -> Result<std::string> { throw std::runtime_error("boom"); });
  EXPECT_EQ(r3.status().code(), Status::Code::kInternal);
}

TEST(AnswerCache, KeepsAtMostMaxEntriesAndStillAnswersTheRest) {
  AnswerCache c(2);
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(**c.Get("k" + std::to_string(i), 1, [i]() -> Result<std::string> { return std::to_string(i); }),
              std::to_string(i));
  EXPECT_EQ(c.size(), 2u);
  int computed = 0;
  EXPECT_EQ(**c.Get("k4", 1, [&]() -> Result<std::string> { ++computed; return std::string("4"); }), "4");
  EXPECT_EQ(computed, 1);  // not kept: computed again
  EXPECT_EQ(**c.Get("k0", 1, [&]() -> Result<std::string> { ++computed; return std::string("x"); }), "0");
  EXPECT_EQ(computed, 1);  // kept
}

TEST(AnswerCache, ConcurrentCallersShareOneComputation) {
  AnswerCache c;
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> computed{0};
  auto slow = [&]() -> Result<std::string> {
    ++computed;
    std::unique_lock<std::mutex> l(m);
    cv.wait_for(l, std::chrono::seconds(20), [&] { return release; });
    return std::string("answer");
  };
  std::vector<std::thread> ts;
  std::vector<AnswerCache::Text> got(8);
  ts.emplace_back([&] { got[0] = *c.Get("k", 7, slow); });
  ASSERT_TRUE(Until([&] { return computed.load() == 1; }));
  for (int i = 1; i < 8; ++i) ts.emplace_back([&, i] { got[i] = *c.Get("k", 7, slow); });
  ASSERT_TRUE(Until([&] { return c.waiters() == 7; }));
  {
    std::lock_guard<std::mutex> l(m);
    release = true;
  }
  cv.notify_all();
  for (auto& t : ts) t.join();
  EXPECT_EQ(computed.load(), 1);
  for (auto& g : got) EXPECT_EQ(g.get(), got[0].get());
  auto n = c.counters();
  EXPECT_EQ(n.misses, 1u);
  EXPECT_EQ(n.shared, 7u);
  EXPECT_EQ(n.hits, 0u);
  // A newer version is computed, not answered from version 7's.
  EXPECT_EQ(**c.Get("k", 8, []() -> Result<std::string> { return std::string("newer"); }), "newer");
}

TEST(AnswerCache, WaitersComputeTheirOwnWhenAComputationIsStuck) {
  AnswerCache c(16, std::chrono::milliseconds(50));
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  std::atomic<bool> entered{false};
  std::thread stuck([&] {
    auto r = c.Get("k", 1, [&]() -> Result<std::string> {
      entered = true;
      std::unique_lock<std::mutex> l(m);
      cv.wait_for(l, std::chrono::seconds(20), [&] { return release; });
      return std::string("late");
    });
    EXPECT_TRUE(r.ok());
  });
  ASSERT_TRUE(Until([&] { return entered.load(); }));
  auto start = std::chrono::steady_clock::now();
  auto r = c.Get("k", 1, []() -> Result<std::string> { return std::string("own"); });
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(**r, "own");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  {
    std::lock_guard<std::mutex> l(m);
    release = true;
  }
  cv.notify_all();
  stuck.join();
}

TEST(IdentityVersion, SameObjectSameVersionAnotherObjectTheNext) {
  IdentityVersion iv;
  auto a = std::make_shared<const int>(1);
  auto b = std::make_shared<const int>(1);
  uint64_t va = iv.Of(a);
  EXPECT_EQ(iv.Of(a), va);
  uint64_t vb = iv.Of(b);
  EXPECT_GT(vb, va);
  EXPECT_EQ(iv.Of(b), vb);
  // Back to the first object: a new version (never an old one that could
  // match an answer made from something else).
  EXPECT_GT(iv.Of(a), vb);
}

}  // namespace
}  // namespace ferry::backend
