#include "target/blockdev/nbd_connection.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <condition_variable>
#include <future>
#include <map>

#include "tests/blockdev/fake_nbd_server.h"

namespace ferry::blockdev {
namespace {

using testing::FakeNbdServer;
using Clock = std::chrono::steady_clock;

// Collects replies and the death notice of one connection.
struct Sink {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, uint32_t> replies;
  bool dead = false;
  std::string why;
  NbdConnection::ReplyFn reply() {
    return [this](uint64_t c, uint32_t e) {
      std::lock_guard<std::mutex> l(mu);
      replies[c] = e;
      cv.notify_all();
    };
  }
  NbdConnection::DeadFn death() {
    return [this](const Status& s) {
      std::lock_guard<std::mutex> l(mu);
      EXPECT_FALSE(dead) << "on_dead ran twice";
      dead = true;
      why = s.message();
      cv.notify_all();
    };
  }
  bool WaitReply(uint64_t c) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(5), [&] { return replies.count(c) > 0; });
  }
  bool WaitDead() {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(5), [&] { return dead; });
  }
};

NbdConnectOptions Opts(uint16_t port, const std::string& name = "vol@1") {
  NbdConnectOptions o;
  o.port = port;
  o.export_name = name;
  o.connect_timeout = std::chrono::milliseconds(1000);
  o.handshake_timeout = std::chrono::milliseconds(1000);
  return o;
}

TEST(NbdConnection, HandshakeReportsSizeAndFlags) {
  FakeNbdServer srv(1 << 20);
  Sink s;
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->info().size, 1u << 20);
  EXPECT_TRUE((*c)->info().flags & nbd::kTFlagSendFlush);
  EXPECT_EQ(srv.exports_asked(), std::vector<std::string>{"vol@1"});
}

TEST(NbdConnection, ManyRequestsInFlightRoundTrip) {
  FakeNbdServer srv(1 << 20);
  Sink s;
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  ASSERT_TRUE(c.ok());
  std::vector<std::vector<char>> w(16, std::vector<char>(4096));
  for (int i = 0; i < 16; ++i) {
    std::fill(w[i].begin(), w[i].end(), static_cast<char>('a' + i));
    ASSERT_TRUE((*c)->Send(nbd::kCmdWrite, 0, 100 + i, i * 4096, 4096, w[i].data(), nullptr).ok());
  }
  for (int i = 0; i < 16; ++i) ASSERT_TRUE(s.WaitReply(100 + i));
  std::vector<char> r(16 * 4096);
  ASSERT_TRUE((*c)->Send(nbd::kCmdRead, 0, 7, 0, r.size(), nullptr, r.data()).ok());
  ASSERT_TRUE(s.WaitReply(7));
  EXPECT_EQ(s.replies[7], 0u);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(r[i * 4096 + 17], 'a' + i);
  EXPECT_FALSE(s.dead);
}

TEST(NbdConnection, ErrorRepliesAreDelivered) {
  FakeNbdServer srv(1 << 20);
  srv.SetScript([](const nbd::Request&) { return FakeNbdServer::Action{FakeNbdServer::Kind::kReply, nbd::kENOSPC}; });
  Sink s;
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  ASSERT_TRUE(c.ok());
  std::vector<char> b(512);
  ASSERT_TRUE((*c)->Send(nbd::kCmdRead, 0, 1, 0, 512, nullptr, b.data()).ok());
  ASSERT_TRUE(s.WaitReply(1));
  EXPECT_EQ(s.replies[1], nbd::kENOSPC);
  // The connection stays usable after an error reply (no payload followed).
  srv.SetScript([](const nbd::Request&) { return FakeNbdServer::Action{}; });
  ASSERT_TRUE((*c)->Send(nbd::kCmdRead, 0, 2, 0, 512, nullptr, b.data()).ok());
  ASSERT_TRUE(s.WaitReply(2));
  EXPECT_EQ(s.replies[2], 0u);
}

TEST(NbdConnection, UnknownExportIsNotFound) {
  FakeNbdServer srv(1 << 20);
  srv.SetExports({"other"});
  Sink s;
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kNotFound);
}

TEST(NbdConnection, RefusedConnectIsUnavailable) {
  uint16_t port;
  {
    FakeNbdServer srv(512);
    port = srv.port();
  }
  Sink s;
  auto c = NbdConnection::Connect(Opts(port), s.reply(), s.death());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kUnavailable);
}

TEST(NbdConnection, SilentServerTimesOutWithinTheHandshakeTimeout) {
  FakeNbdServer srv(512);
  srv.SetMute(true);
  Sink s;
  auto t0 = Clock::now();
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  auto took = Clock::now() - t0;
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kTimeout);
  EXPECT_GE(took, std::chrono::milliseconds(900));
  EXPECT_LT(took, std::chrono::milliseconds(3000));
}

TEST(NbdConnection, GarbageGreetingIsRefused) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(listen(lfd, 1), 0);
  socklen_t len = sizeof(a);
  getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  std::thread t([lfd] {
    int fd = accept(lfd, nullptr, nullptr);
    const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";
    send(fd, junk, sizeof(junk), MSG_NOSIGNAL);
    char b[64];
    while (recv(fd, b, sizeof(b), 0) > 0) {
    }
    close(fd);
  });
  Sink s;
  auto c = NbdConnection::Connect(Opts(ntohs(a.sin_port)), s.reply(), s.death());
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kUnavailable);
  shutdown(lfd, SHUT_RDWR);
  t.join();
  close(lfd);
}

class DeadOnWire : public ::testing::TestWithParam<FakeNbdServer::Kind> {};

TEST_P(DeadOnWire, ConnectionIsDeadAtOnceAndNothingIsDelivered) {
  FakeNbdServer srv(1 << 20);
  auto kind = GetParam();
  srv.SetScript([kind](const nbd::Request&) { return FakeNbdServer::Action{kind, 0}; });
  Sink s;
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  ASSERT_TRUE(c.ok());
  std::vector<char> b(4096, 'x');
  ASSERT_TRUE((*c)->Send(nbd::kCmdRead, 0, 5, 0, 4096, nullptr, b.data()).ok());
  ASSERT_TRUE(s.WaitDead()) << "connection not declared dead";
  EXPECT_TRUE(s.replies.empty());
  EXPECT_FALSE((*c)->alive());
  // Sending on a dead connection fails at once.
  EXPECT_FALSE((*c)->Send(nbd::kCmdRead, 0, 6, 0, 512, nullptr, b.data()).ok());
}

INSTANTIATE_TEST_SUITE_P(Kinds, DeadOnWire,
                         ::testing::Values(FakeNbdServer::Kind::kDrop, FakeNbdServer::Kind::kGarbageMagic,
                                           FakeNbdServer::Kind::kUnknownCookie, FakeNbdServer::Kind::kShortRead));

TEST(NbdConnection, CloseWakesAReaderWaitingOnAHungServer) {
  FakeNbdServer srv(1 << 20);
  srv.SetScript([](const nbd::Request&) { return FakeNbdServer::Action{FakeNbdServer::Kind::kHang, 0}; });
  Sink s;
  auto c = NbdConnection::Connect(Opts(srv.port()), s.reply(), s.death());
  ASSERT_TRUE(c.ok());
  std::vector<char> b(512);
  ASSERT_TRUE((*c)->Send(nbd::kCmdRead, 0, 1, 0, 512, nullptr, b.data()).ok());
  auto t0 = Clock::now();
  (*c)->Close();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(1));
  EXPECT_FALSE(s.dead) << "Close() is not a death";
}

TEST(NbdConnection, ProbeDoesNotEnterTransmission) {
  FakeNbdServer srv(8192);
  auto info = NbdConnection::Probe(Opts(srv.port(), "vol"));
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->size, 8192u);
  EXPECT_EQ(srv.requests_seen(), 0u);
  EXPECT_EQ(srv.exports_asked(), std::vector<std::string>{"vol"});
}

}  // namespace
}  // namespace ferry::blockdev
