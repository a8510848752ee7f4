// SplicedData / PipePool against real pipes and loopback TCP sockets.
#include "target/common/spliced_data.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

#include "target/common/batch_scope.h"

namespace ferry {
namespace {

// A connected loopback TCP pair: {client, server}.
std::pair<int, int> TcpPair() {
  int l = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  EXPECT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  EXPECT_EQ(::listen(l, 1), 0);
  EXPECT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len), 0);
  int c = ::socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_EQ(::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  int s = ::accept(l, nullptr, nullptr);
  ::close(l);
  return {c, s};
}

std::vector<char> Random(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<char> v(n);
  for (auto& b : v) b = static_cast<char>(g());
  return v;
}

void SendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    ASSERT_GT(w, 0);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// Drains `d` into a socket with SpliceTo and reads the bytes back on the other end.
std::vector<char> DrainThroughSocket(SplicedData* d) {
  auto [c, s] = TcpPair();
  size_t n = d->size();
  std::vector<char> got(n);
  std::thread rd([&, s = s] {
    size_t at = 0;
    while (at < n) {
      ssize_t r = ::recv(s, got.data() + at, n - at, 0);
      if (r <= 0) break;
      at += static_cast<size_t>(r);
    }
  });
  ::fcntl(c, F_SETFL, ::fcntl(c, F_GETFL) | O_NONBLOCK);
  while (d->size() > 0) {
    ssize_t r = d->SpliceTo(c, d->size(), false);
    EXPECT_GE(r, 0);
    if (r < 0) break;
    if (r == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  rd.join();
  ::close(c);
  ::close(s);
  return got;
}

TEST(SplicedData, FillFromASocketThenSpliceOutKeepsEveryByte) {
  auto pool = std::make_shared<PipePool>(1 << 20, 4);
  auto [c, s] = TcpPair();
  auto want = Random(1 << 20, 1);
  std::thread wr([&, c = c] { SendAll(c, want.data(), want.size()); });
  auto d = SplicedData::Create(want.size(), pool);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE((*d)->FillFrom(s, want.size()).ok());
  wr.join();
  EXPECT_EQ((*d)->size(), want.size());
  EXPECT_EQ(DrainThroughSocket(d->get()), want);
  ::close(c);
  ::close(s);
}

TEST(SplicedData, AppendThenFillKeepsOrderAndCopyOutReadsIt) {
  auto [c, s] = TcpPair();
  auto want = Random(300000, 2);
  auto d = SplicedData::Create(want.size(), nullptr);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE((*d)->Append(want.data(), 1000).ok());
  std::thread wr([&, c = c] { SendAll(c, want.data() + 1000, want.size() - 1000); });
  ASSERT_TRUE((*d)->FillFrom(s, want.size() - 1000).ok());
  wr.join();
  std::vector<char> got(want.size());
  ASSERT_TRUE((*d)->CopyOut(got.data(), got.size()).ok());
  EXPECT_EQ(got, want);
  EXPECT_EQ((*d)->size(), 0u);
  ::close(c);
  ::close(s);
}

TEST(SplicedData, AFullPipeOverflowsToMemoryAndStillDeliversInOrder) {
  // A 64 KiB pipe filled to the brim by Append; what FillFrom then receives
  // cannot enter the pipe and must go to the overflow, after the pipe's bytes.
  auto pool = std::make_shared<PipePool>(64 * 1024, 4);
  auto d = SplicedData::Create(64 * 1024, pool);
  ASSERT_TRUE(d.ok());
  size_t cap = (*d)->capacity();
  auto want = Random(cap + 50000, 3);
  ASSERT_TRUE((*d)->Append(want.data(), cap + 10).ok());  // 10 bytes already overflow
  auto [c, s] = TcpPair();
  std::thread wr([&, c = c] { SendAll(c, want.data() + cap + 10, want.size() - cap - 10); });
  ASSERT_TRUE((*d)->FillFrom(s, want.size() - cap - 10).ok());
  wr.join();
  EXPECT_EQ((*d)->size(), want.size());
  EXPECT_EQ(DrainThroughSocket(d->get()), want);
  ::close(c);
  ::close(s);
}

TEST(SplicedData, FillFromAClosedSocketFailsAndResetEmptiesIt) {
  auto [c, s] = TcpPair();
  auto d = SplicedData::Create(4096, nullptr);
  ASSERT_TRUE(d.ok());
  SendAll(c, "abc", 3);
  ::close(c);
  Status st = (*d)->FillFrom(s, 4096);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ((*d)->size(), 3u);  // the partial payload is still held...
  ASSERT_TRUE((*d)->Reset().ok());
  EXPECT_EQ((*d)->size(), 0u);  // ...until Reset
  ::close(s);
}

TEST(SplicedData, EmptyPipesGoBackToThePoolFullOnesAreClosed) {
  auto pool = std::make_shared<PipePool>(64 * 1024, 1);
  int first_fd;
  {
    auto d = SplicedData::Create(1000, pool);
    ASSERT_TRUE(d.ok());
    std::vector<char> b(100, 'x');
    ASSERT_TRUE((*d)->Append(b.data(), b.size()).ok());
    std::vector<char> out(100);
    ASSERT_TRUE((*d)->CopyOut(out.data(), out.size()).ok());
  }  // empty: pooled
  auto again = pool->Take();
  ASSERT_TRUE(again.ok());
  first_fd = again->rd;
  char probe[1];
  EXPECT_EQ(::read(first_fd, probe, 1), -1);  // an empty, open, non-blocking pipe
  EXPECT_EQ(errno, EAGAIN);
  pool->Give(*again);
  {
    auto d = SplicedData::Create(1000, pool);
    ASSERT_TRUE(d.ok());
    ASSERT_TRUE((*d)->Append("y", 1).ok());
  }  // not empty: closed, not pooled
  auto fresh = pool->Take();
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(::read(fresh->rd, probe, 1), -1);  // a new pipe, not the one holding "y"
  EXPECT_EQ(errno, EAGAIN);
  pool->Give(*fresh);
}

TEST(BatchScope, DefersOncePerKeyAndRunsAtTheEndOnItsThread) {
  std::vector<int> ran;
  EXPECT_EQ(BatchScope::Current(), nullptr);
  {
    BatchScope outer;
    EXPECT_EQ(BatchScope::Current(), &outer);
    int k1 = 0, k2 = 0;
    EXPECT_TRUE(outer.Defer(&k1, [&] { ran.push_back(1); }));
    EXPECT_FALSE(outer.Defer(&k1, [&] { ran.push_back(99); }));
    {
      BatchScope inner;
      EXPECT_EQ(BatchScope::Current(), &inner);
      inner.Defer(&k2, [&] { ran.push_back(2); });
      std::thread other([] { EXPECT_EQ(BatchScope::Current(), nullptr); });
      other.join();
    }
    EXPECT_EQ(ran, std::vector<int>{2});
    EXPECT_EQ(BatchScope::Current(), &outer);
  }
  EXPECT_EQ(ran, (std::vector<int>{2, 1}));
  EXPECT_EQ(BatchScope::Current(), nullptr);
}

}  // namespace
}  // namespace ferry
