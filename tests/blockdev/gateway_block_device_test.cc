// Failover state machine against scripted fake gateways (FakeNbdServer).
// Durations are set in milliseconds (Timeouts::SetForTesting) so each test
// takes well under a second or two.
#include "target/blockdev/gateway_block_device.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <future>

#include "tests/blockdev/fake_nbd_server.h"

namespace ferry::blockdev {
namespace {

using testing::FakeNbdServer;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Kind = FakeNbdServer::Kind;

constexpr uint64_t kSize = 1 << 20;

// Polls a condition (every 10 ms) until it holds or the time is up.
template <typename F>
bool WaitFor(F f, milliseconds limit = milliseconds(5000)) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return f();
}

// A completion that can be waited for.
struct Done {
  std::promise<Status> p;
  std::future<Status> f = p.get_future();
  BlockDevice::Callback cb() {
    return [this](Status s) { p.set_value(s); };
  }
  bool ready(milliseconds w = milliseconds(0)) { return f.wait_for(w) == std::future_status::ready; }
  Status get(milliseconds w = milliseconds(5000)) {
    if (f.wait_for(w) != std::future_status::ready) return Status::Internal("callback never ran");
    return f.get();
  }
};

class GatewayBlockDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    t_ = std::make_shared<Timeouts>();
    t_->SetForTesting(TimeoutKind::kRead, milliseconds(400));
    t_->SetForTesting(TimeoutKind::kWrite, milliseconds(400));
    t_->SetForTesting(TimeoutKind::kReadRetry, milliseconds(20000));
    t_->SetForTesting(TimeoutKind::kWriteRetry, milliseconds(20000));
    t_->SetForTesting(TimeoutKind::kSwitch, milliseconds(0));
    t_->SetForTesting(TimeoutKind::kRecovery, milliseconds(300));
    t_->SetForTesting(TimeoutKind::kReconnect, milliseconds(300));
    fixed_ = std::make_shared<FixedMode>();
  }
  void TearDown() override {
    if (dev_) dev_->Stop();
    dev_.reset();
  }
  GatewayBlockDeviceConfig Config(std::vector<std::string> gws) {
    GatewayBlockDeviceConfig c;
    c.volume = "vol";
    c.gateways = std::move(gws);
    c.epoch = 1;
    c.timeouts = t_;
    c.fixed_mode = fixed_;
    c.logger = Logger("blockdev-test", LogLevel::kWarn);
    c.connect_timeout = milliseconds(500);
    c.handshake_timeout = milliseconds(500);
    c.tick = milliseconds(20);
    c.on_change = [this](const std::string& gw, uint64_t e) {
      std::lock_guard<std::mutex> l(mu_);
      changes_.emplace_back(gw, e);
    };
    return c;
  }
  void StartDev(GatewayBlockDeviceConfig c) {
    dev_ = std::make_unique<GatewayBlockDevice>(std::move(c));
    ASSERT_TRUE(dev_->Start().ok());
  }
  Status WriteSync(uint64_t off, const std::vector<char>& b) {
    Done d;
    dev_->Write(off, b.size(), b.data(), false, d.cb());
    return d.get();
  }
  Status ReadSync(uint64_t off, std::vector<char>* b) {
    Done d;
    dev_->Read(off, b->size(), b->data(), d.cb());
    return d.get();
  }
  std::vector<std::pair<std::string, uint64_t>> changes() {
    std::lock_guard<std::mutex> l(mu_);
    return changes_;
  }

  std::shared_ptr<Timeouts> t_;
  std::shared_ptr<FixedMode> fixed_;
  std::unique_ptr<GatewayBlockDevice> dev_;
  std::mutex mu_;
  std::vector<std::pair<std::string, uint64_t>> changes_;
};

TEST_F(GatewayBlockDeviceTest, ReadWriteAndCounters) {
  FakeNbdServer a(kSize);
  StartDev(Config({a.addr()}));
  EXPECT_EQ(dev_->size_bytes(), kSize);
  EXPECT_EQ(dev_->status(), VolumeStatus::kNormal);
  std::vector<char> w(8192, 'q'), r(8192);
  ASSERT_TRUE(WriteSync(4096, w).ok());
  ASSERT_TRUE(ReadSync(4096, &r).ok());
  EXPECT_EQ(r, w);
  EXPECT_EQ(a.exports_asked().front(), "vol@1");
  auto st = dev_->Stats();
  EXPECT_EQ(st.volumeName, "vol");
  EXPECT_EQ(st.perferGw, a.addr());
  EXPECT_EQ(st.currentGw, a.addr());
  EXPECT_EQ(st.status, 0);
  EXPECT_EQ(st.ioTotal, 2u);
  EXPECT_EQ(st.ioCnt, 0u);
  EXPECT_EQ(st.epoch, 1u);
  // Rates cover the last second: wait for the window that holds our two I/Os.
  ASSERT_TRUE(WaitFor([&] { return dev_->Stats().writeIops == 1; }, milliseconds(3000)));
  st = dev_->Stats();
  EXPECT_EQ(st.writeKBps, 8u);
  EXPECT_EQ(st.readIops, 1u);
  auto strs = st.ToStrings();
  ASSERT_EQ(strs.size(), 16u);
  EXPECT_EQ(strs[1].first, "perferGw");
  EXPECT_EQ(strs[14].first, "switchable");
  EXPECT_EQ(strs[14].second, "1");
}

TEST_F(GatewayBlockDeviceTest, RaiseEpochAdoptsTheEpochTheGatewayGrants) {
  FakeNbdServer a(kSize);
  a.SetInfoName("vol@9");
  auto c = Config({a.addr()});
  c.epoch = 3;
  c.raise_epoch = true;
  StartDev(std::move(c));
  EXPECT_EQ(dev_->epoch(), 9u);
  EXPECT_EQ(a.exports_asked(), std::vector<std::string>{"vol@+3"});
  std::vector<char> b(4096, 'r');
  ASSERT_TRUE(WriteSync(0, b).ok());
  EXPECT_TRUE(changes().empty());  // the start is no move
}

TEST_F(GatewayBlockDeviceTest, RaiseEpochFailsStartAndGuessesNoEpochWhenTheGrantIsNotNamed) {
  // A gateway that names no epoch (too old), one that names a lower one, and
  // one that is down: Start fails each time, and nothing is retried at an
  // epoch the target made up, on this gateway or another.
  for (std::string name : {"", "vol@2", "other@9", "vol@+9", "vol:snap"}) {
    FakeNbdServer a(kSize), b(kSize);
    a.SetInfoName(name);
    b.SetInfoName("vol@9");
    auto c = Config({a.addr(), b.addr()});
    c.epoch = 3;
    c.raise_epoch = true;
    GatewayBlockDevice d(std::move(c));
    Status st = d.Start();
    EXPECT_EQ(st.code(), Status::Code::kUnavailable) << name;
    EXPECT_NE(st.message().find("did not name the epoch"), std::string::npos) << st.ToString();
    EXPECT_NE(d.start_error().find(a.addr()), std::string::npos);
    std::this_thread::sleep_for(milliseconds(400));  // > reconnect and tick
    EXPECT_EQ(a.exports_asked().size(), 1u) << name;
    EXPECT_TRUE(b.exports_asked().empty()) << name;
    d.Stop();
  }
  FakeNbdServer a(kSize), b(kSize);
  a.Down();
  auto c = Config({a.addr(), b.addr()});
  c.raise_epoch = true;
  GatewayBlockDevice d(std::move(c));
  EXPECT_EQ(d.Start().code(), Status::Code::kUnavailable);
  std::this_thread::sleep_for(milliseconds(400));
  EXPECT_TRUE(b.exports_asked().empty());
  d.Stop();
}

TEST_F(GatewayBlockDeviceTest, BadRangesFailAtOnceWithoutReachingTheGateway) {
  FakeNbdServer a(kSize);
  StartDev(Config({a.addr()}));
  std::vector<char> b(4096);
  Done d1, d2, d3;
  dev_->Read(kSize - 512, 4096, b.data(), d1.cb());
  dev_->Write(100, 512, b.data(), false, d2.cb());
  dev_->Trim(kSize, 512, d3.cb());
  EXPECT_EQ(d1.get().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(d2.get().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(d3.get().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(a.requests_seen(), 0u);
}

TEST_F(GatewayBlockDeviceTest, RetryableErrorBurstIsAbsorbed) {
  FakeNbdServer a(kSize);
  std::atomic<int> n{0};
  a.SetScript([&](const nbd::Request& r) {
    if (r.type == nbd::kCmdWrite && n.fetch_add(1) < 4)
      return FakeNbdServer::Action{Kind::kReply, n % 2 ? nbd::kENOMEM : 11u /*EAGAIN*/};
    return FakeNbdServer::Action{};
  });
  StartDev(Config({a.addr()}));
  std::vector<char> w(4096, 'z'), r(4096);
  ASSERT_TRUE(WriteSync(0, w).ok());
  EXPECT_EQ(n.load(), 5);
  ASSERT_TRUE(ReadSync(0, &r).ok());
  EXPECT_EQ(r, w);
  EXPECT_EQ(dev_->Stats().writeError, 0u);
  EXPECT_EQ(dev_->current_gateway(), a.addr());
}

struct ErrCase {
  uint32_t nbd_error;
  Status::Code want;
};
class NonRetryable : public GatewayBlockDeviceTest, public ::testing::WithParamInterface<ErrCase> {};

TEST_P(NonRetryable, MapsToTheStatusAndStaysOnTheGateway) {
  FakeNbdServer a(kSize);
  uint32_t e = GetParam().nbd_error;
  a.SetScript([e](const nbd::Request& r) {
    return r.type == nbd::kCmdWrite ? FakeNbdServer::Action{Kind::kReply, e} : FakeNbdServer::Action{};
  });
  StartDev(Config({a.addr()}));
  std::vector<char> w(4096, 'z');
  EXPECT_EQ(WriteSync(0, w).code(), GetParam().want);
  EXPECT_EQ(dev_->Stats().writeError, 1u);
  EXPECT_EQ(dev_->status(), VolumeStatus::kNormal);
  std::vector<char> r(4096);
  EXPECT_TRUE(ReadSync(0, &r).ok());
}

INSTANTIATE_TEST_SUITE_P(Errors, NonRetryable,
                         ::testing::Values(ErrCase{nbd::kEINVAL, Status::Code::kInvalidArgument},
                                           ErrCase{nbd::kENOSPC, Status::Code::kNoSpace},
                                           ErrCase{nbd::kEPERM, Status::Code::kFenced},
                                           ErrCase{nbd::kEIO, Status::Code::kIoError}));

TEST_F(GatewayBlockDeviceTest, EshutdownMovesToTheNextGatewayWithoutAnError) {
  FakeNbdServer a(kSize), b(kSize);
  a.SetScript([](const nbd::Request& r) {
    return r.type == nbd::kCmdWrite ? FakeNbdServer::Action{Kind::kReply, nbd::kESHUTDOWN} : FakeNbdServer::Action{};
  });
  StartDev(Config({a.addr(), b.addr()}));
  std::vector<char> w(4096, 'h');
  ASSERT_TRUE(WriteSync(8192, w).ok());
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(dev_->epoch(), 2u);
  EXPECT_EQ(b.Data()[8192], 'h');
  EXPECT_EQ(dev_->Stats().writeError, 0u);
}

TEST_F(GatewayBlockDeviceTest, EioIsRetriedThenReported) {
  FakeNbdServer a(kSize);
  std::atomic<int> n{0};
  a.SetScript([&](const nbd::Request& r) {
    if (r.type == nbd::kCmdRead) n++;
    return r.type == nbd::kCmdRead ? FakeNbdServer::Action{Kind::kReply, nbd::kEIO} : FakeNbdServer::Action{};
  });
  StartDev(Config({a.addr()}));
  std::vector<char> r(4096);
  EXPECT_EQ(ReadSync(0, &r).code(), Status::Code::kIoError);
  EXPECT_EQ(n.load(), 3);
  EXPECT_EQ(dev_->Stats().readError, 1u);
}

TEST_F(GatewayBlockDeviceTest, DeadConnectionSwitchesAtOnceAndResendsInFlight) {
  FakeNbdServer a(kSize), b(kSize);
  a.SetScript([](const nbd::Request&) { return FakeNbdServer::Action{Kind::kHang, 0}; });
  t_->SetForTesting(TimeoutKind::kWrite, milliseconds(60000));  // only the death may trigger the switch
  StartDev(Config({a.addr(), b.addr()}));
  std::vector<std::vector<char>> bufs;
  std::vector<std::unique_ptr<Done>> done;
  for (int i = 0; i < 8; ++i) {
    bufs.emplace_back(4096, static_cast<char>('A' + i));
    done.push_back(std::make_unique<Done>());
    dev_->Write(i * 4096, 4096, bufs.back().data(), false, done.back()->cb());
  }
  ASSERT_TRUE(WaitFor([&] { return a.requests_seen() == 8; }));
  EXPECT_EQ(dev_->Stats().ioCnt, 8u);
  auto t0 = Clock::now();
  a.Down();  // kill -9
  for (auto& d : done) EXPECT_TRUE(d->get().ok());
  EXPECT_LT(Clock::now() - t0, milliseconds(2000));
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(dev_->epoch(), 2u);
  EXPECT_EQ(b.exports_asked().back(), "vol@2");
  auto data = b.Data();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(data[i * 4096 + 100], 'A' + i);
  EXPECT_EQ(changes(), (std::vector<std::pair<std::string, uint64_t>>{{b.addr(), 2}}));
  EXPECT_EQ(dev_->status(), VolumeStatus::kNormal);
  EXPECT_EQ(dev_->Stats().writeError, 0u);
}

TEST_F(GatewayBlockDeviceTest, HungGatewaySwitchesAfterTheTimeout) {
  FakeNbdServer a(kSize), b(kSize);
  a.SetScript([](const nbd::Request&) { return FakeNbdServer::Action{Kind::kHang, 0}; });
  StartDev(Config({a.addr(), b.addr()}));
  std::vector<char> r(4096);
  auto t0 = Clock::now();
  ASSERT_TRUE(ReadSync(0, &r).ok());
  auto took = Clock::now() - t0;
  EXPECT_GE(took, milliseconds(400));  // the read timeout
  EXPECT_LT(took, milliseconds(3000));
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(dev_->epoch(), 2u);
}

TEST_F(GatewayBlockDeviceTest, SwitchWaitsTheSwitchDelay) {
  FakeNbdServer a(kSize), b(kSize);
  t_->SetForTesting(TimeoutKind::kSwitch, milliseconds(500));
  StartDev(Config({a.addr(), b.addr()}));
  auto t0 = Clock::now();
  a.Down();
  std::vector<char> r(4096);
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kSwitch; }, milliseconds(1000)));
  ASSERT_TRUE(ReadSync(0, &r).ok());
  EXPECT_GE(Clock::now() - t0, milliseconds(500));
  EXPECT_EQ(dev_->current_gateway(), b.addr());
}

TEST_F(GatewayBlockDeviceTest, AllDownIsFaultWithIoHeldThenResumes) {
  FakeNbdServer a(kSize), b(kSize);
  StartDev(Config({a.addr(), b.addr()}));
  a.Down();
  b.Down();
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }));
  std::vector<char> w(4096, 'F');
  Done d;
  dev_->Write(0, 4096, w.data(), false, d.cb());
  Done fl;
  dev_->Flush(fl.cb());
  EXPECT_FALSE(d.ready(milliseconds(700))) << "I/O must be held, not failed, in fault";
  EXPECT_FALSE(fl.ready());
  EXPECT_EQ(dev_->Stats().status, 2);
  EXPECT_EQ(dev_->Stats().ioCnt, 2u);
  ASSERT_TRUE(b.Up());
  EXPECT_TRUE(d.get().ok());
  EXPECT_TRUE(fl.get().ok());
  EXPECT_EQ(dev_->status(), VolumeStatus::kNormal);
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(b.Data()[10], 'F');
}

TEST_F(GatewayBlockDeviceTest, RetryWindowExpiryFailsHeldIoWithTimeout) {
  FakeNbdServer a(kSize);
  t_->SetForTesting(TimeoutKind::kReadRetry, milliseconds(500));
  StartDev(Config({a.addr()}));
  a.Down();
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }));
  std::vector<char> r(4096);
  auto t0 = Clock::now();
  EXPECT_EQ(ReadSync(0, &r).code(), Status::Code::kTimeout);
  EXPECT_GE(Clock::now() - t0, milliseconds(500));
  EXPECT_EQ(dev_->Stats().readError, 1u);
}

TEST_F(GatewayBlockDeviceTest, NotSwitchableReconnectsToTheSameGatewayAtTheSameEpoch) {
  FakeNbdServer a(kSize), b(kSize);
  auto c = Config({a.addr(), b.addr()});
  c.switchable = false;
  StartDev(std::move(c));
  a.Down();
  std::vector<char> w(4096, 'S');
  Done d;
  dev_->Write(0, 4096, w.data(), false, d.cb());
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }));
  EXPECT_FALSE(d.ready(milliseconds(500)));
  ASSERT_TRUE(a.Up());
  EXPECT_TRUE(d.get().ok());
  EXPECT_EQ(dev_->current_gateway(), a.addr());
  EXPECT_EQ(dev_->epoch(), 1u);
  EXPECT_TRUE(b.exports_asked().empty()) << "a frozen volume must never open another gateway";
  EXPECT_FALSE(dev_->Stats().switchable);
}

TEST_F(GatewayBlockDeviceTest, FailBackToThePreferredAfterRecovery) {
  FakeNbdServer a(kSize), b(kSize);
  StartDev(Config({a.addr(), b.addr()}));
  a.Down();
  std::vector<char> r(4096);
  ASSERT_TRUE(ReadSync(0, &r).ok());
  ASSERT_EQ(dev_->current_gateway(), b.addr());
  ASSERT_TRUE(a.Up());
  auto t0 = Clock::now();
  ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == a.addr(); }, milliseconds(5000)));
  EXPECT_GE(Clock::now() - t0, milliseconds(300));  // recovery
  EXPECT_EQ(dev_->epoch(), 3u);
  // The probe of the preferred used epoch 0 (no raise) before the move at epoch 3.
  auto asked = a.exports_asked();
  ASSERT_GE(asked.size(), 3u);
  EXPECT_EQ(asked.back(), "vol@3");
  EXPECT_EQ(asked[asked.size() - 2], "vol");
  ASSERT_TRUE(ReadSync(0, &r).ok());
  auto ch = changes();
  ASSERT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch[1], std::make_pair(a.addr(), uint64_t{3}));
}

TEST_F(GatewayBlockDeviceTest, NoFailBackWhileNotSwitchable) {
  FakeNbdServer a(kSize), b(kSize);
  auto c = Config({a.addr(), b.addr()});
  c.current = b.addr();
  c.switchable = false;
  StartDev(std::move(c));
  ASSERT_EQ(dev_->current_gateway(), b.addr());
  std::this_thread::sleep_for(milliseconds(1500));  // several recovery periods must pass with no move
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(dev_->epoch(), 1u);
  dev_->SetSwitchable(true);
  ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == a.addr(); }));
  EXPECT_EQ(dev_->epoch(), 2u);
}

TEST_F(GatewayBlockDeviceTest, FixedModeMovesAndStays) {
  FakeNbdServer a(kSize), b(kSize);
  StartDev(Config({a.addr(), b.addr()}));
  fixed_->Set(b.addr());
  ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == b.addr(); }));
  EXPECT_EQ(dev_->epoch(), 2u);
  // The preferred is healthy, yet no fail-back while fixed.
  std::this_thread::sleep_for(milliseconds(1200));
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  // The fixed gateway dies: the volume waits for it instead of switching.
  b.Down();
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }));
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  fixed_->Clear();
}

TEST_F(GatewayBlockDeviceTest, InFlightOrderIsKeptOnResend) {
  FakeNbdServer a(kSize), b(kSize);
  a.SetScript([](const nbd::Request&) { return FakeNbdServer::Action{Kind::kHang, 0}; });
  std::mutex m;
  std::vector<uint64_t> order;
  b.SetScript([&](const nbd::Request& r) {
    std::lock_guard<std::mutex> l(m);
    order.push_back(r.offset);
    return FakeNbdServer::Action{};
  });
  t_->SetForTesting(TimeoutKind::kWrite, milliseconds(300));
  StartDev(Config({a.addr(), b.addr()}));
  std::vector<char> w(512, 'o');
  std::vector<std::unique_ptr<Done>> done;
  for (int i = 0; i < 20; ++i) {
    done.push_back(std::make_unique<Done>());
    dev_->Write(i * 512, 512, w.data(), false, done.back()->cb());
  }
  for (auto& d : done) EXPECT_TRUE(d->get().ok());
  std::lock_guard<std::mutex> l(m);
  ASSERT_EQ(order.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(order[i], uint64_t(i) * 512);
}

TEST_F(GatewayBlockDeviceTest, IoIssuedFromACompletionCallbackDoesNotDeadlock) {
  FakeNbdServer a(kSize);
  StartDev(Config({a.addr()}));
  std::vector<char> w(64 * 1024, 'c');
  std::promise<void> all;
  std::atomic<int> left{200};
  std::function<void(Status)> next = [&](Status s) {
    EXPECT_TRUE(s.ok());
    if (left.fetch_sub(1) == 1) return all.set_value();
    dev_->Write((left % 16) * w.size(), w.size(), w.data(), false, next);
  };
  dev_->Write(0, w.size(), w.data(), false, next);
  EXPECT_EQ(all.get_future().wait_for(std::chrono::seconds(20)), std::future_status::ready);
}

// Big reads and writes issued from completion callbacks at queue depth 32:
// more bytes in flight both ways than the socket buffers hold. Sending from
// the reader thread would deadlock here.
TEST_F(GatewayBlockDeviceTest, BigIoFromCallbacksAtDepthDoesNotDeadlock) {
  constexpr uint64_t kBig = 128ull << 20;
  constexpr uint32_t kIo = 4u << 20;
  FakeNbdServer a(kBig);
  StartDev(Config({a.addr()}));
  t_->SetForTesting(TimeoutKind::kRead, milliseconds(20000));
  t_->SetForTesting(TimeoutKind::kWrite, milliseconds(20000));
  constexpr int kDepth = 32;
  std::vector<std::vector<char>> bufs(kDepth, std::vector<char>(kIo, 'B'));
  std::atomic<int> left{160};
  std::atomic<int> errors{0};
  std::promise<void> all;
  std::atomic<int> live{kDepth};
  std::vector<std::function<void(Status)>> next(kDepth);
  for (int i = 0; i < kDepth; ++i) {
    next[i] = [&, i](Status s) {
      if (!s.ok()) errors++;
      int n = left.fetch_sub(1);
      if (n <= 0) {
        if (live.fetch_sub(1) == 1) all.set_value();
        return;
      }
      uint64_t off = uint64_t(n % 32) * kIo;
      if (n % 2) dev_->Write(off, kIo, bufs[i].data(), false, next[i]);
      else dev_->Read(off, kIo, bufs[i].data(), next[i]);
    };
  }
  for (int i = 0; i < kDepth; ++i) next[i](Status::Ok());
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready)
      << "stalled with " << dev_->Stats().ioCnt << " in flight";
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(dev_->current_gateway(), a.addr());
  EXPECT_EQ(dev_->epoch(), 1u) << "no switch may have happened";
}

TEST_F(GatewayBlockDeviceTest, StartWithTheCurrentGatewayDownSwitches) {
  FakeNbdServer a(kSize), b(kSize);
  a.Down();
  auto c = Config({a.addr(), b.addr()});
  c.size_hint = kSize;  // what the server persisted; nothing answered yet
  StartDev(std::move(c));
  EXPECT_EQ(dev_->size_bytes(), kSize);
  std::vector<char> r(512);
  ASSERT_TRUE(ReadSync(0, &r).ok());
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(dev_->epoch(), 2u);
}

TEST_F(GatewayBlockDeviceTest, StopFailsHeldIoAndLaterIo) {
  FakeNbdServer a(kSize);
  StartDev(Config({a.addr()}));
  a.Down();
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }));
  std::vector<char> r(512);
  Done d;
  dev_->Read(0, 512, r.data(), d.cb());
  dev_->Stop();
  EXPECT_EQ(d.get().code(), Status::Code::kIoError);
  EXPECT_EQ(ReadSync(0, &r).code(), Status::Code::kIoError);
}

TEST_F(GatewayBlockDeviceTest, RefreshSizeFollowsAnExtend) {
  FakeNbdServer a(kSize);
  StartDev(Config({a.addr()}));
  a.SetSize(2 * kSize);
  auto s = dev_->RefreshSize();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(*s, 2 * kSize);
  EXPECT_EQ(dev_->size_bytes(), 2 * kSize);
  std::vector<char> w(4096, 'e');
  EXPECT_TRUE(WriteSync(2 * kSize - 4096, w).ok());
}

TEST_F(GatewayBlockDeviceTest, BadConfigIsRefused) {
  GatewayBlockDeviceConfig c = Config({});
  GatewayBlockDevice d1(c);
  EXPECT_EQ(d1.Start().code(), Status::Code::kInvalidArgument);
  c = Config({"nonsense"});
  GatewayBlockDevice d2(c);
  EXPECT_EQ(d2.Start().code(), Status::Code::kInvalidArgument);
  c = Config({"127.0.0.1:1"});
  c.preferred = "127.0.0.1:2";
  GatewayBlockDevice d3(c);
  EXPECT_EQ(d3.Start().code(), Status::Code::kInvalidArgument);
}

}  // namespace
}  // namespace ferry::blockdev

namespace ferry::blockdev {
namespace {

// A spliced read that can be waited for.
struct SplicedDone {
  std::promise<std::pair<Status, std::shared_ptr<SplicedData>>> p;
  std::future<std::pair<Status, std::shared_ptr<SplicedData>>> f = p.get_future();
  BlockDevice::SplicedCallback cb() {
    return [this](Status s, std::shared_ptr<SplicedData> d) { p.set_value({s, std::move(d)}); };
  }
};

// The bytes of a finished spliced read (empty on failure).
std::vector<char> Bytes(SplicedDone& d) {
  if (d.f.wait_for(milliseconds(5000)) != std::future_status::ready) return {};
  auto [st, data] = d.f.get();
  if (!st.ok() || !data) return {};
  std::vector<char> out(data->size());
  if (!data->CopyOut(out.data(), out.size()).ok()) return {};
  return out;
}

TEST_F(GatewayBlockDeviceTest, SplicedReadsReturnWhatWasWritten) {
  FakeNbdServer a(kSize);
  auto c = Config({a.addr()});
  c.pipes = std::make_shared<PipePool>(kSize, 4);
  StartDev(std::move(c));
  std::vector<char> pattern(kSize);
  for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<char>((i * 2654435761u) >> 13);
  ASSERT_TRUE(WriteSync(0, pattern).ok());
  struct Case {
    uint64_t off;
    uint32_t len;
  };
  for (Case k : {Case{0, 64 * 1024}, Case{64 * 1024, 256 * 1024}, Case{0, uint32_t(kSize)}}) {
    SplicedDone d;
    ASSERT_TRUE(dev_->ReadSpliced(k.off, k.len, d.cb()));
    auto got = Bytes(d);
    ASSERT_EQ(got.size(), k.len);
    EXPECT_TRUE(std::equal(got.begin(), got.end(), pattern.begin() + k.off)) << k.off << "+" << k.len;
  }
  SplicedDone small;
  EXPECT_FALSE(dev_->ReadSpliced(0, 4096, small.cb()));  // below splice_min: the caller copies
  EXPECT_FALSE(small.f.wait_for(milliseconds(0)) == std::future_status::ready);
  EXPECT_EQ(dev_->Stats().readError, 0u);
}

TEST_F(GatewayBlockDeviceTest, SplicedReadIsRefusedWithoutAPipePool) {
  FakeNbdServer a(kSize);
  StartDev(Config({a.addr()}));
  SplicedDone d;
  EXPECT_FALSE(dev_->ReadSpliced(0, 256 * 1024, d.cb()));
}

TEST_F(GatewayBlockDeviceTest, SplicedReadCutShortIsResentWholeElsewhere) {
  // Gateway a answers the read with a header and 3 bytes, then dies: those
  // bytes must not survive into the answer b gives (b's data is zeros).
  FakeNbdServer a(kSize), b(kSize);
  a.SetScript([](const nbd::Request& r) {
    return FakeNbdServer::Action{r.type == nbd::kCmdRead ? Kind::kShortRead : Kind::kReply, 0};
  });
  auto c = Config({a.addr(), b.addr()});
  c.pipes = std::make_shared<PipePool>(kSize, 4);
  StartDev(std::move(c));
  SplicedDone d;
  ASSERT_TRUE(dev_->ReadSpliced(0, 512 * 1024, d.cb()));
  auto got = Bytes(d);
  ASSERT_EQ(got.size(), 512u * 1024);
  EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](char ch) { return ch == 0; }));
  EXPECT_EQ(dev_->current_gateway(), b.addr());
  EXPECT_EQ(dev_->Stats().readError, 0u);
}

}  // namespace
}  // namespace ferry::blockdev
