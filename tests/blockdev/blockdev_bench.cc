// ferry_blockdev_bench: drives one GatewayBlockDevice against a running NBD
// server (ferry-gateway or qemu-nbd) with QD asynchronous requests and prints
// IOPS and MB/s. A measuring tool, not a test.
//
//   ferry_blockdev_bench HOST:PORT EXPORT {randread|randwrite|seqread|seqwrite} BS QD SECONDS
//
// EXPORT is the full export name (e.g. vol@1); it is used as is.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "target/blockdev/gateway_block_device.h"

using namespace ferry;
using namespace ferry::blockdev;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s HOST:PORT EXPORT randread|randwrite|seqread|seqwrite BS QD SECONDS\n", argv[0]);
    return 2;
  }
  std::string mode = argv[3];
  uint32_t bs = std::strtoul(argv[4], nullptr, 10);
  int qd = std::atoi(argv[5]);
  double secs = std::atof(argv[6]);
  bool write = mode.find("write") != std::string::npos;
  bool rnd = mode.rfind("rand", 0) == 0;
  if (bs == 0 || bs % 512 || qd <= 0 || secs <= 0) {
    std::fprintf(stderr, "bad BS/QD/SECONDS\n");
    return 2;
  }
  GatewayBlockDeviceConfig c;
  c.volume = argv[2];
  c.gateways = {argv[1]};
  c.timeouts = std::make_shared<Timeouts>();
  std::string name = argv[2];
  c.export_name = [name](const std::string&, uint64_t) { return name; };
  c.logger = Logger("bench", LogLevel::kWarn);
  GatewayBlockDevice dev(c);
  if (Status s = dev.Start(); !s.ok() || dev.size_bytes() < bs) {
    std::fprintf(stderr, "cannot open: %s\n", s.ToString().c_str());
    return 1;
  }
  uint64_t blocks = dev.size_bytes() / bs;
  std::vector<std::vector<char>> bufs(qd, std::vector<char>(bs, 'b'));
  std::atomic<uint64_t> done{0}, errors{0}, next{0};
  std::atomic<int> active{qd};
  std::mutex mu;
  std::condition_variable cv;
  auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(secs));
  std::vector<std::function<void()>> issue(qd);
  for (int i = 0; i < qd; ++i) {
    issue[i] = [&, i] {
      if (Clock::now() >= end) {
        if (active.fetch_sub(1) == 1) {
          std::lock_guard<std::mutex> l(mu);
          cv.notify_all();
        }
        return;
      }
      thread_local std::mt19937_64 rng(std::random_device{}());
      uint64_t b = rnd ? rng() % blocks : next.fetch_add(1) % blocks;
      auto cb = [&, i](Status s) {
        if (!s.ok()) errors++;
        done++;
        issue[i]();
      };
      if (write) dev.Write(b * bs, bs, bufs[i].data(), false, cb);
      else dev.Read(b * bs, bs, bufs[i].data(), cb);
    };
  }
  auto t0 = Clock::now();
  for (int i = 0; i < qd; ++i) issue[i]();
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return active.load() == 0; });
  }
  double el = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("%s bs=%u qd=%d: %.0f IOPS, %.1f MB/s, %llu errors\n", mode.c_str(), bs, qd, done / el,
              done * double(bs) / el / 1e6, static_cast<unsigned long long>(errors.load()));
  dev.Stop();
  return errors ? 1 : 0;
}
