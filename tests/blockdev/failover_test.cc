// Failover with real NBD servers: two (or more) qemu-nbd processes serving one
// raw file are the "gateways"; a continuous verifying writer runs through a
// GatewayBlockDevice while a test kills, stops and restarts them. With
// ferry-gateway built, a fencing test checks that no stale write lands.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <future>

#include "target/blockdev/gateway_block_device.h"
#include "target/common/http_client.h"
#include "tests/blockdev/child_process.h"
#include "tests/blockdev/idle_cost.h"
#include "tests/blockdev/verifying_writer.h"

namespace ferry::blockdev {
namespace {

using namespace testing;  // NOLINT
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr uint64_t kDiskSize = 32ull << 20;
constexpr uint64_t kBlocks = 2048;  // 8 MiB of it, 4 KiB blocks

template <typename F>
bool WaitFor(F f, milliseconds limit) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return f();
}

int64_t Ms(Clock::duration d) { return std::chrono::duration_cast<milliseconds>(d).count(); }

// One qemu-nbd "gateway" on a fixed port, restartable.
struct QemuGateway {
  std::string file, log;
  uint16_t port = 0;
  std::unique_ptr<ChildProcess> proc;
  std::string addr() const { return "127.0.0.1:" + std::to_string(port); }
  bool Start() {
    for (int attempt = 0; attempt < 3; ++attempt) {
      if (port == 0 || attempt > 0) port = FreePort();
      proc = ChildProcess::Spawn({"qemu-nbd", "-t", "-e", "32", "-x", "vol", "-p", std::to_string(port), "-b",
                                  "127.0.0.1", "--image-opts",
                                  "driver=raw,file.driver=file,file.filename=" + file + ",file.locking=off"},
                                 log);
      if (proc && WaitPort(port, seconds(10))) return true;
      if (proc) proc->Kill();
    }
    return false;
  }
  // Same port again (the device knows the address).
  bool Restart() {
    proc = ChildProcess::Spawn({"qemu-nbd", "-t", "-e", "32", "-x", "vol", "-p", std::to_string(port), "-b",
                                "127.0.0.1", "--image-opts",
                                "driver=raw,file.driver=file,file.filename=" + file + ",file.locking=off"},
                               log);
    return proc && WaitPort(port, seconds(10));
  }
};

class QemuFailover : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("ferry-blockdev-");
    ASSERT_FALSE(dir_.empty());
    file_ = dir_ + "/disk.img";
    { std::ofstream(file_).close(); }
    ASSERT_EQ(truncate(file_.c_str(), kDiskSize), 0);
    t_ = std::make_shared<Timeouts>();
    fixed_ = std::make_shared<FixedMode>();
  }
  void TearDown() override {
    if (writer_) writer_->Stop();
    if (dev_) dev_->Stop();
    gws_.clear();
    if (!HasFailure()) RemoveTree(dir_);
    else std::fprintf(stderr, "kept %s for inspection\n", dir_.c_str());
  }
  void StartGateways(int n) {
    for (int i = 0; i < n; ++i) {
      auto g = std::make_unique<QemuGateway>();
      g->file = file_;
      g->log = dir_ + "/qemu-nbd-" + std::to_string(i) + ".log";
      ASSERT_TRUE(g->Start()) << "qemu-nbd did not start; see " << g->log;
      gws_.push_back(std::move(g));
    }
  }
  GatewayBlockDeviceConfig Config() {
    GatewayBlockDeviceConfig c;
    c.volume = "vol";
    for (auto& g : gws_) c.gateways.push_back(g->addr());
    c.epoch = 1;
    c.timeouts = t_;
    c.fixed_mode = fixed_;
    c.logger = Logger("blockdev-it", LogLevel::kInfo);
    c.export_name = [](const std::string& v, uint64_t) { return v; };  // qemu-nbd serves one fixed name
    c.on_change = [this](const std::string& gw, uint64_t e) {
      std::lock_guard<std::mutex> l(mu_);
      changes_.emplace_back(gw, e);
    };
    return c;
  }
  void StartDevice(GatewayBlockDeviceConfig c) {
    dev_ = std::make_unique<GatewayBlockDevice>(std::move(c));
    ASSERT_TRUE(dev_->Start().ok());
    ASSERT_EQ(dev_->size_bytes(), kDiskSize);
  }
  void StartWriter(int threads = 8) {
    writer_ = std::make_unique<VerifyingWriter>(dev_.get(), threads, kBlocks);
    writer_->Start();
  }
  // Waits until the writer has completed `n` more I/Os (progress, not time).
  bool Progress(uint64_t n, milliseconds limit = milliseconds(10000)) {
    uint64_t base = writer_->writes() + writer_->reads();
    return WaitFor([&] { return writer_->writes() + writer_->reads() >= base + n; }, limit);
  }
  // Every block on the file itself holds the last acknowledged write.
  uint64_t VerifyFile() {
    int fd = open(file_.c_str(), O_RDONLY);
    std::vector<char> got(4096), want(4096);
    uint64_t bad = 0;
    for (uint64_t b = 0; b < kBlocks; ++b) {
      if (pread(fd, got.data(), 4096, b * 4096) != 4096) ++bad;
      writer_->Expected(b, want.data());
      if (memcmp(got.data(), want.data(), 4096) != 0) ++bad;
    }
    close(fd);
    return bad;
  }
  void ExpectCleanRun() {
    EXPECT_EQ(writer_->errors(), 0u) << writer_->first_problem();
    EXPECT_EQ(writer_->mismatches(), 0u) << writer_->first_problem();
    EXPECT_EQ(writer_->VerifyAll(dev_.get()), 0u) << writer_->first_problem();
    EXPECT_EQ(VerifyFile(), 0u);
  }

  std::string dir_, file_;
  std::shared_ptr<Timeouts> t_;
  std::shared_ptr<FixedMode> fixed_;
  std::vector<std::unique_ptr<QemuGateway>> gws_;
  std::unique_ptr<GatewayBlockDevice> dev_;
  std::unique_ptr<VerifyingWriter> writer_;
  std::mutex mu_;
  std::vector<std::pair<std::string, uint64_t>> changes_;
};

TEST_F(QemuFailover, KillCurrentGatewayNoErrorAndFastResume) {
  StartGateways(2);
  StartDevice(Config());
  StartWriter();
  ASSERT_TRUE(Progress(500));
  auto t_kill = Clock::now();
  gws_[0]->proc->Kill();  // kill -9
  ASSERT_TRUE(Progress(500));
  writer_->Stop();
  auto first = writer_->FirstCompletionIssuedAfter(t_kill);
  ASSERT_TRUE(first.has_value());
  int64_t ms = Ms(*first - t_kill);
  std::printf("failover: kill -9 -> first completed I/O issued after the kill: %lld ms; max I/O latency %lld ms\n",
              static_cast<long long>(ms), static_cast<long long>(writer_->MaxLatency().count()));
  RecordProperty("failover_ms", std::to_string(ms));
  EXPECT_LT(ms, 1000);
  EXPECT_EQ(dev_->current_gateway(), gws_[1]->addr());
  EXPECT_EQ(dev_->epoch(), 2u);
  EXPECT_EQ(dev_->status(), VolumeStatus::kNormal);
  ExpectCleanRun();
}

TEST_F(QemuFailover, FailoverTimeOverTenKills) {
  StartGateways(2);
  StartDevice(Config());
  StartWriter(4);
  std::vector<int64_t> times;
  for (int trial = 0; trial < 10; ++trial) {
    ASSERT_TRUE(Progress(200));
    int cur = dev_->current_gateway() == gws_[0]->addr() ? 0 : 1;
    auto t_kill = Clock::now();
    gws_[cur]->proc->Kill();
    ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == gws_[1 - cur]->addr(); }, seconds(5)))
        << "trial " << trial;
    ASSERT_TRUE(Progress(50));
    auto first = writer_->FirstCompletionIssuedAfter(t_kill);
    ASSERT_TRUE(first.has_value());
    times.push_back(Ms(*first - t_kill));
    ASSERT_TRUE(gws_[cur]->Restart()) << "qemu-nbd restart on the same port failed";
  }
  writer_->Stop();
  std::sort(times.begin(), times.end());
  std::printf("failover over 10 kills: median %lld ms, max %lld ms (epoch now %llu)\n",
              static_cast<long long>((times[4] + times[5]) / 2), static_cast<long long>(times.back()),
              static_cast<unsigned long long>(dev_->epoch()));
  RecordProperty("failover_median_ms", std::to_string((times[4] + times[5]) / 2));
  RecordProperty("failover_max_ms", std::to_string(times.back()));
  EXPECT_LT(times.back(), 1000);
  EXPECT_EQ(dev_->epoch(), 11u);
  ExpectCleanRun();
}

TEST_F(QemuFailover, StoppedGatewaySwitchesAfterTheWriteTimeout) {
  ASSERT_TRUE(t_->Set("write", 1).ok());
  ASSERT_TRUE(t_->Set("read", 1).ok());
  StartGateways(2);
  StartDevice(Config());
  StartWriter();
  ASSERT_TRUE(Progress(300));
  auto t_stop = Clock::now();
  gws_[0]->proc->Signal(SIGSTOP);
  ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == gws_[1]->addr(); }, seconds(5)));
  auto switched = Clock::now();
  ASSERT_TRUE(Progress(300));
  std::printf("SIGSTOP -> switch after %lld ms (timeout 1000 ms)\n", static_cast<long long>(Ms(switched - t_stop)));
  EXPECT_GE(Ms(switched - t_stop), 1000);
  EXPECT_LT(Ms(switched - t_stop), 3500);
  // qemu-nbd has no fencing: it must never run again (see the ferry-gateway test).
  gws_[0]->proc->Kill();
  writer_->Stop();
  EXPECT_EQ(dev_->epoch(), 2u);
  ExpectCleanRun();
}

TEST_F(QemuFailover, AllGatewaysDownFaultHoldsIoThenResumes) {
  ASSERT_TRUE(t_->Set("reconnect", 10).ok());
  StartGateways(2);
  StartDevice(Config());
  StartWriter();
  ASSERT_TRUE(Progress(300));
  gws_[0]->proc->Kill();
  gws_[1]->proc->Kill();
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }, seconds(5)));
  EXPECT_EQ(dev_->Stats().status, 2);
  // Held, not failed: nothing completes while every gateway is down.
  uint64_t done = writer_->writes() + writer_->reads();
  std::this_thread::sleep_for(milliseconds(1000));  // observing that nothing happens needs a span of time
  EXPECT_EQ(writer_->writes() + writer_->reads(), done);
  EXPECT_EQ(writer_->errors(), 0u);
  EXPECT_GT(dev_->Stats().ioCnt, 0u);
  auto t_back = Clock::now();
  ASSERT_TRUE(gws_[1]->Restart());
  ASSERT_TRUE(Progress(300, seconds(20)));
  auto resumed = Clock::now();
  std::printf("fault: resumed %lld ms after a gateway returned (reconnect 10 s)\n",
              static_cast<long long>(Ms(resumed - t_back)));
  EXPECT_LT(Ms(resumed - t_back), 12000);
  EXPECT_EQ(dev_->status(), VolumeStatus::kNormal);
  EXPECT_EQ(dev_->current_gateway(), gws_[1]->addr());
  writer_->Stop();
  ExpectCleanRun();
}

TEST_F(QemuFailover, FailBackToThePreferredAfterRecovery) {
  ASSERT_TRUE(t_->Set("recovery", 10).ok());
  StartGateways(2);
  StartDevice(Config());
  StartWriter(4);
  ASSERT_TRUE(Progress(200));
  gws_[0]->proc->Kill();
  ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == gws_[1]->addr(); }, seconds(5)));
  auto t_back = Clock::now();  // before the spawn: the recovery period cannot start earlier
  ASSERT_TRUE(gws_[0]->Restart());
  ASSERT_TRUE(WaitFor([&] { return dev_->current_gateway() == gws_[0]->addr(); }, seconds(20)));
  auto moved = Clock::now();
  ASSERT_TRUE(Progress(200));
  std::printf("fail-back %lld ms after the preferred returned (recovery 10 s)\n",
              static_cast<long long>(Ms(moved - t_back)));
  EXPECT_GE(Ms(moved - t_back), 10000);
  EXPECT_LT(Ms(moved - t_back), 14000);
  EXPECT_EQ(dev_->epoch(), 3u);
  writer_->Stop();
  std::lock_guard<std::mutex> l(mu_);
  EXPECT_EQ(changes_, (std::vector<std::pair<std::string, uint64_t>>{{gws_[1]->addr(), 2}, {gws_[0]->addr(), 3}}));
  ExpectCleanRun();
}

TEST_F(QemuFailover, NotSwitchableNeitherSwitchesNorFailsBack) {
  ASSERT_TRUE(t_->Set("recovery", 10).ok());
  ASSERT_TRUE(t_->Set("reconnect", 10).ok());
  StartGateways(2);
  auto c = Config();
  c.current = gws_[1]->addr();  // preferred is gws_[0], healthy all along
  c.switchable = false;
  StartDevice(std::move(c));
  auto t0 = Clock::now();
  StartWriter(4);
  ASSERT_TRUE(Progress(200));
  gws_[1]->proc->Kill();
  ASSERT_TRUE(WaitFor([&] { return dev_->status() == VolumeStatus::kFault; }, seconds(5)));
  EXPECT_EQ(dev_->current_gateway(), gws_[1]->addr());
  ASSERT_TRUE(gws_[1]->Restart());
  ASSERT_TRUE(Progress(200, seconds(20)));
  // Stay past the recovery time of the (healthy) preferred gateway.
  while (Clock::now() - t0 < seconds(12)) {
    ASSERT_EQ(dev_->current_gateway(), gws_[1]->addr());
    std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_EQ(dev_->epoch(), 1u);
  writer_->Stop();
  std::lock_guard<std::mutex> l(mu_);
  EXPECT_TRUE(changes_.empty());
  ExpectCleanRun();
}

// The cost of idle LUNs (a target with hundreds of idle volumes must sit
// near 0% CPU): 200 devices connected to one qemu-nbd and idle for 3 s use
// about one thread each (their connection's reader) and almost no CPU.
// Before the shared scheduler: 4 threads per device and a 100 ms tick each.
TEST_F(QemuFailover, IdleDevicesCostOneThreadEachAndNoCpu) {
  constexpr int kDevices = 200;
  QemuGateway g;
  g.file = file_;
  g.log = dir_ + "/qemu-nbd-idle.log";
  g.port = FreePort();
  g.proc = ChildProcess::Spawn({"qemu-nbd", "-t", "-e", "250", "-x", "vol", "-p", std::to_string(g.port), "-b",
                                "127.0.0.1", "--image-opts",
                                "driver=raw,file.driver=file,file.filename=" + file_ + ",file.locking=off"},
                               g.log);
  ASSERT_TRUE(g.proc && WaitPort(g.port, seconds(10))) << "see " << g.log;
  auto sched = std::make_shared<DeviceScheduler>();
  int threads_before = ThreadCount();
  std::vector<std::unique_ptr<GatewayBlockDevice>> devs;
  for (int i = 0; i < kDevices; ++i) {
    GatewayBlockDeviceConfig c;
    c.volume = "vol";
    c.gateways = {g.addr()};
    c.timeouts = t_;
    c.fixed_mode = fixed_;
    c.scheduler = sched;
    c.export_name = [](const std::string& v, uint64_t) { return v; };
    c.logger = Logger("blockdev-idle", LogLevel::kWarn);
    devs.push_back(std::make_unique<GatewayBlockDevice>(std::move(c)));
    ASSERT_TRUE(devs.back()->Start().ok());
    ASSERT_EQ(devs.back()->status(), VolumeStatus::kNormal) << "device " << i;
  }
  // One I/O on each, so every device has been through a request's life.
  std::atomic<int> done{0}, failed{0};
  std::vector<char> buf(4096);
  for (auto& d : devs)
    d->Read(0, 4096, buf.data(), [&](Status s) {
      if (!s.ok()) failed++;
      done++;
    });
  ASSERT_TRUE(WaitFor([&] { return done.load() == kDevices; }, seconds(30)));
  ASSERT_EQ(failed.load(), 0);
  double cpu0 = CpuSeconds();
  auto t0 = Clock::now();
  std::this_thread::sleep_for(seconds(3));  // the measured idle window itself, not a synchronisation
  double cpu = CpuSeconds() - cpu0;
  double wall = std::chrono::duration<double>(Clock::now() - t0).count();
  int threads = ThreadCount() - threads_before;
  std::printf("%d idle devices: %d threads, %.3f CPU-s in %.1f s\n", kDevices, threads, cpu, wall);
  EXPECT_LE(threads, kDevices + 16) << "more than about one thread per idle device";
  EXPECT_LT(cpu, 0.3) << "idle devices use CPU";
  for (auto& d : devs) {
    auto st = d->Stats();
    EXPECT_EQ(st.ioTotal, 1u);
    EXPECT_EQ(st.readIops, 0u) << "the rate window is over: nothing was read in the last second";
  }
  devs.clear();
  g.proc->Kill();
}

#ifdef FERRY_GATEWAY_BIN
// One ferry-gateway process on fixed ports, restartable.
struct FerryGateway {
  std::string data_dir, log;
  uint16_t nbd = FreePort(), admin = FreePort();
  std::unique_ptr<ChildProcess> proc;
  std::string addr() const { return "127.0.0.1:" + std::to_string(nbd); }
  bool Start() {
    proc = ChildProcess::Spawn({FERRY_GATEWAY_BIN, "--data-dir", data_dir, "--nbd-listen",
                                "127.0.0.1:" + std::to_string(nbd), "--admin-listen",
                                "127.0.0.1:" + std::to_string(admin), "--log-level", "warn"},
                               log);
    return proc && WaitPort(nbd, seconds(10)) && WaitPort(admin, seconds(10));
  }
};

// kill -9 of the current ferry-gateway, ten times, under a verifying writer:
// no error, and the time to the first I/O completed afterwards.
TEST(GatewayFailover, KillMinus9TenTimesWithFerryGateways) {
  std::string dir = MakeTempDir("ferry-blockdev-gwkill-");
  ASSERT_FALSE(dir.empty());
  std::vector<std::unique_ptr<FerryGateway>> gw;
  for (int i = 0; i < 2; ++i) {
    gw.push_back(std::make_unique<FerryGateway>());
    gw[i]->data_dir = dir + "/data";
    gw[i]->log = dir + "/gw" + std::to_string(i) + ".log";
    ASSERT_TRUE(gw[i]->Start()) << "see " << gw[i]->log;
  }
  HttpClient http;
  auto r = http.Post("http://127.0.0.1:" + std::to_string(gw[0]->admin) + "/v1/volumes",
                     "{\"name\":\"vol\",\"size\":" + std::to_string(kDiskSize) + "}");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_LT(r->status, 300) << r->body;
  GatewayBlockDeviceConfig c;
  c.volume = "vol";
  c.gateways = {gw[0]->addr(), gw[1]->addr()};
  c.epoch = 1;
  c.timeouts = std::make_shared<Timeouts>();
  c.logger = Logger("blockdev-gwkill", LogLevel::kWarn);
  GatewayBlockDevice dev(c);
  ASSERT_TRUE(dev.Start().ok());
  VerifyingWriter w(&dev, 8, kBlocks);
  w.Start();
  auto progress = [&](uint64_t n) {
    uint64_t base = w.writes() + w.reads();
    return WaitFor([&] { return w.writes() + w.reads() >= base + n; }, seconds(10));
  };
  std::vector<int64_t> times;
  for (int trial = 0; trial < 10; ++trial) {
    ASSERT_TRUE(progress(300)) << "trial " << trial;
    int cur = dev.current_gateway() == gw[0]->addr() ? 0 : 1;
    auto t_kill = Clock::now();
    gw[cur]->proc->Kill();
    ASSERT_TRUE(WaitFor([&] { return dev.current_gateway() == gw[1 - cur]->addr(); }, seconds(5)));
    ASSERT_TRUE(progress(50));
    auto first = w.FirstCompletionIssuedAfter(t_kill);
    ASSERT_TRUE(first.has_value());
    times.push_back(Ms(*first - t_kill));
    ASSERT_TRUE(gw[cur]->Start()) << "restart failed; see " << gw[cur]->log;
  }
  w.Stop();
  std::sort(times.begin(), times.end());
  std::printf("ferry-gateway kill -9 -> first completed I/O, 10 trials: median %lld ms, max %lld ms; "
              "max I/O latency %lld ms\n",
              static_cast<long long>((times[4] + times[5]) / 2), static_cast<long long>(times.back()),
              static_cast<long long>(w.MaxLatency().count()));
  EXPECT_LT(times.back(), 1000);
  EXPECT_EQ(dev.epoch(), 11u);
  EXPECT_EQ(w.errors(), 0u) << w.first_problem();
  EXPECT_EQ(w.mismatches(), 0u) << w.first_problem();
  EXPECT_EQ(w.VerifyAll(&dev), 0u) << w.first_problem();
  dev.Stop();
  gw.clear();
  if (!HasFailure()) RemoveTree(dir);
}

// Fail-back between ferry-gateways: the health probes of the preferred one
// must not raise the volume's epoch (only the move does), and RefreshSize
// follows an extend made through the gateway's admin API.
TEST(GatewayFailover, FailBackAndRefreshSizeWithFerryGateways) {
  std::string dir = MakeTempDir("ferry-blockdev-gwback-");
  ASSERT_FALSE(dir.empty());
  std::vector<std::unique_ptr<FerryGateway>> gw;
  for (int i = 0; i < 2; ++i) {
    gw.push_back(std::make_unique<FerryGateway>());
    gw[i]->data_dir = dir + "/data";
    gw[i]->log = dir + "/gw" + std::to_string(i) + ".log";
    ASSERT_TRUE(gw[i]->Start()) << "see " << gw[i]->log;
  }
  HttpClient http;
  std::string vol_url = "http://127.0.0.1:" + std::to_string(gw[1]->admin) + "/v1/volumes";
  auto r = http.Post(vol_url, "{\"name\":\"vol\",\"size\":" + std::to_string(kDiskSize) + "}");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_LT(r->status, 300) << r->body;
  auto store_epoch = [&]() -> int64_t {
    auto g = http.Get(vol_url + "/vol");
    if (!g.ok() || g->status != 200) return -1;
    auto p = g->body.find("\"epoch\":");
    return p == std::string::npos ? -1 : std::stoll(g->body.substr(p + 8));
  };
  auto t = std::make_shared<Timeouts>();
  ASSERT_TRUE(t->Set("recovery", 10).ok());
  GatewayBlockDeviceConfig c;
  c.volume = "vol";
  c.gateways = {gw[0]->addr(), gw[1]->addr()};
  c.epoch = 1;
  c.timeouts = t;
  c.logger = Logger("blockdev-gwback", LogLevel::kWarn);
  GatewayBlockDevice dev(c);
  ASSERT_TRUE(dev.Start().ok());
  VerifyingWriter w(&dev, 4, kBlocks);
  w.Start();
  ASSERT_TRUE(WaitFor([&] { return w.writes() > 300; }, seconds(10)));
  gw[0]->proc->Kill();
  ASSERT_TRUE(WaitFor([&] { return dev.current_gateway() == gw[1]->addr(); }, seconds(5)));
  EXPECT_EQ(store_epoch(), 2);
  auto t_back = Clock::now();
  ASSERT_TRUE(gw[0]->Start());
  // While the preferred is probed (about once a second) the epoch stays.
  ASSERT_TRUE(WaitFor([&] { return Clock::now() - t_back > seconds(8); }, seconds(9)));
  EXPECT_EQ(dev.current_gateway(), gw[1]->addr());
  EXPECT_EQ(store_epoch(), 2);
  ASSERT_TRUE(WaitFor([&] { return dev.current_gateway() == gw[0]->addr(); }, seconds(10)));
  std::printf("ferry-gateway fail-back %lld ms after the preferred returned (recovery 10 s)\n",
              static_cast<long long>(Ms(Clock::now() - t_back)));
  EXPECT_GE(Clock::now() - t_back, seconds(10));
  EXPECT_EQ(dev.epoch(), 3u);
  EXPECT_EQ(store_epoch(), 3);
  uint64_t base = w.writes();
  ASSERT_TRUE(WaitFor([&] { return w.writes() > base + 300; }, seconds(10)));
  // Extend through the gateway, then re-read the size.
  r = http.Post(vol_url + "/vol/extend", "{\"size\":" + std::to_string(2 * kDiskSize) + "}");
  ASSERT_TRUE(r.ok());
  ASSERT_LT(r->status, 300) << r->body;
  auto sz = dev.RefreshSize();
  ASSERT_TRUE(sz.ok()) << sz.status().ToString();
  EXPECT_EQ(*sz, 2 * kDiskSize);
  EXPECT_EQ(dev.size_bytes(), 2 * kDiskSize);
  EXPECT_EQ(store_epoch(), 3) << "RefreshSize must not raise the epoch";
  std::vector<char> tail(4096, 't');
  std::promise<Status> p;
  dev.Write(2 * kDiskSize - 4096, 4096, tail.data(), true, [&p](Status s) { p.set_value(s); });
  auto f = p.get_future();
  ASSERT_EQ(f.wait_for(seconds(10)), std::future_status::ready);
  EXPECT_TRUE(f.get().ok());
  w.Stop();
  EXPECT_EQ(w.errors(), 0u) << w.first_problem();
  EXPECT_EQ(w.mismatches(), 0u) << w.first_problem();
  EXPECT_EQ(w.VerifyAll(&dev), 0u) << w.first_problem();
  dev.Stop();
  gw.clear();
  if (!HasFailure()) RemoveTree(dir);
}

// Two ferry-gateway processes on one data directory. The current one is
// stopped with writes in flight; after the switch (epoch 2) it is continued:
// none of its queued writes may land.
TEST(GatewayFencing, StoppedGatewayWakesAndNoStaleWriteLands) {
  std::string dir = MakeTempDir("ferry-blockdev-fence-");
  ASSERT_FALSE(dir.empty());
  std::vector<std::unique_ptr<ChildProcess>> gw;
  std::vector<uint16_t> nbd, admin;
  for (int i = 0; i < 2; ++i) {
    nbd.push_back(FreePort());
    admin.push_back(FreePort());
    gw.push_back(ChildProcess::Spawn({FERRY_GATEWAY_BIN, "--data-dir", dir + "/data", "--nbd-listen",
                                      "127.0.0.1:" + std::to_string(nbd[i]), "--admin-listen",
                                      "127.0.0.1:" + std::to_string(admin[i]), "--log-level", "warn"},
                                     dir + "/gw" + std::to_string(i) + ".log"));
    ASSERT_TRUE(WaitPort(nbd[i], seconds(10)) && WaitPort(admin[i], seconds(10))) << "see " << dir;
  }
  HttpClient http;
  auto r = http.Post("http://127.0.0.1:" + std::to_string(admin[0]) + "/v1/volumes",
                     "{\"name\":\"vol\",\"size\":" + std::to_string(kDiskSize) + "}");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_LT(r->status, 300) << r->body;

  auto t = std::make_shared<Timeouts>();
  ASSERT_TRUE(t->Set("write", 1).ok());
  ASSERT_TRUE(t->Set("read", 1).ok());
  GatewayBlockDeviceConfig c;
  c.volume = "vol";
  c.gateways = {"127.0.0.1:" + std::to_string(nbd[0]), "127.0.0.1:" + std::to_string(nbd[1])};
  c.epoch = 1;
  c.timeouts = t;
  c.logger = Logger("blockdev-fence", LogLevel::kInfo);
  GatewayBlockDevice dev(c);
  ASSERT_TRUE(dev.Start().ok());
  ASSERT_EQ(dev.size_bytes(), kDiskSize);
  // Many writers so that writes are queued inside the stopped process.
  VerifyingWriter w(&dev, 16, kBlocks);
  w.Start();
  ASSERT_TRUE(WaitFor([&] { return w.writes() > 2000; }, seconds(20)));
  gw[0]->Signal(SIGSTOP);
  ASSERT_TRUE(WaitFor([&] { return dev.current_gateway() == c.gateways[1]; }, seconds(15)));
  EXPECT_EQ(dev.epoch(), 2u);
  uint64_t base = w.writes();
  ASSERT_TRUE(WaitFor([&] { return w.writes() > base + 1000; }, seconds(20)));
  w.Stop();
  // Every block gets a newer generation through the new gateway, so a stale
  // write of the old one landing later would show.
  EXPECT_EQ(w.RewriteAll(), 0u) << w.first_problem();
  // Wake the old gateway (unless the store's STONITH already killed it) and
  // let it run whatever it had queued.
  gw[0]->Signal(SIGCONT);
  bool alive_again = false;
  for (int i = 0; i < 100 && !gw[0]->Exited(); ++i) {
    auto h = http.Get("http://127.0.0.1:" + std::to_string(admin[0]) + "/healthz");
    if (h.ok() && h->status == 200) {
      alive_again = true;
      break;
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  std::printf("fencing: old gateway %s after the switch\n",
              alive_again ? "woke up and answers" : "is gone (killed by the fence)");
  // Check the bytes several times over a span in which the woken process
  // would have run its queue.
  for (int pass = 0; pass < 3; ++pass)
    EXPECT_EQ(w.VerifyAll(&dev), 0u) << "pass " << pass << ": " << w.first_problem();
  EXPECT_EQ(w.errors(), 0u) << w.first_problem();
  EXPECT_EQ(w.mismatches(), 0u) << w.first_problem();
  // The old gateway's epoch-1 connection can no longer write (the store
  // refuses it): a new connection at epoch 1 must see EPERM on write.
  {
    auto t1 = std::make_shared<Timeouts>();
    ASSERT_TRUE(t1->Set("writeretry", 2).ok());
    GatewayBlockDeviceConfig old = c;
    old.gateways = {c.gateways[1]};
    old.timeouts = t1;
    old.switchable = false;
    GatewayBlockDevice stale(old);
    ASSERT_TRUE(stale.Start().ok());
    std::vector<char> junk(4096, 'X');
    std::promise<Status> p;
    stale.Write(0, 4096, junk.data(), false, [&p](Status s) { p.set_value(s); });
    auto f = p.get_future();
    ASSERT_EQ(f.wait_for(seconds(10)), std::future_status::ready);
    EXPECT_EQ(f.get().code(), Status::Code::kFenced);
    stale.Stop();
    EXPECT_EQ(w.VerifyAll(&dev), 0u) << w.first_problem();
  }
  dev.Stop();
  for (auto& g : gw) g->Kill();
  if (!HasFailure()) RemoveTree(dir);
}
#endif

}  // namespace
}  // namespace ferry::blockdev
