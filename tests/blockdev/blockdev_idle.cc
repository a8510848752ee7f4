// ferry_blockdev_idle: the cost of idle LUNs. Starts N GatewayBlockDevices on
// one NBD server (ferry-gateway or qemu-nbd), all connected and idle, waits
// SECONDS and prints this process's thread count and the CPU time it used
// during the idle window. A measuring tool, not a test.
//
//   ferry_blockdev_idle HOST:PORT EXPORT N SECONDS
//
// EXPORT is the full export name (e.g. vol@1), used as is by every device.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "target/blockdev/gateway_block_device.h"
#include "tests/blockdev/idle_cost.h"

using namespace ferry;
using namespace ferry::blockdev;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s HOST:PORT EXPORT N SECONDS\n", argv[0]);
    return 2;
  }
  int n = std::atoi(argv[3]);
  double secs = std::atof(argv[4]);
  if (n <= 0 || secs <= 0) {
    std::fprintf(stderr, "bad N/SECONDS\n");
    return 2;
  }
  auto timeouts = std::make_shared<Timeouts>();
  auto sched = std::make_shared<DeviceScheduler>();
  std::vector<std::unique_ptr<GatewayBlockDevice>> devs;
  int base_threads = testing::ThreadCount();
  auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    GatewayBlockDeviceConfig c;
    c.volume = argv[2];
    c.gateways = {argv[1]};
    c.timeouts = timeouts;
    c.scheduler = sched;
    c.export_name = [](const std::string& v, uint64_t) { return v; };
    c.logger = Logger("idle", LogLevel::kWarn);
    auto d = std::make_unique<GatewayBlockDevice>(c);
    if (!d->Start().ok() || d->status() != VolumeStatus::kNormal) {
      std::fprintf(stderr, "device %d did not connect\n", i);
      return 1;
    }
    devs.push_back(std::move(d));
  }
  double start_s = std::chrono::duration<double>(Clock::now() - t0).count();
  double cpu0 = testing::CpuSeconds();
  auto w0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  double wall = std::chrono::duration<double>(Clock::now() - w0).count();
  double cpu = testing::CpuSeconds() - cpu0;
  int threads = testing::ThreadCount();
  std::printf("devices %d  started in %.2f s  threads %d (%d before the devices, %.2f per device)  "
              "idle %.1f s: cpu %.3f s (%.2f%% of one core)\n",
              n, start_s, threads, base_threads, double(threads - base_threads) / n, wall, cpu,
              100.0 * cpu / wall);
  auto s0 = Clock::now();
  devs.clear();
  std::printf("stopped in %.2f s\n", std::chrono::duration<double>(Clock::now() - s0).count());
  return 0;
}
