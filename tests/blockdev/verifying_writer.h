// VerifyingWriter: continuous verified I/O on a BlockDevice for failover tests.
//
// Promise: N threads, each owning the blocks b with b % N == thread, write one
// block at a time with a pattern naming (block, generation), remember every
// acknowledged generation, and read back random own blocks checking they hold
// the last acknowledged pattern. Every error, mismatch and callback that never
// came (per-I/O limit) is counted. Completion times are kept so a test can
// measure the stall around an event.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "target/blockdev/block_device.h"

namespace ferry::blockdev::testing {

class VerifyingWriter {
 public:
  using Clock = std::chrono::steady_clock;
  VerifyingWriter(BlockDevice* dev, int threads, uint64_t blocks, uint32_t block_size = 4096,
                  std::chrono::milliseconds io_limit = std::chrono::milliseconds(60000));
  ~VerifyingWriter();

  void Start();
  void Stop();  // joins

  uint64_t writes() const { return writes_.load(); }
  uint64_t reads() const { return reads_.load(); }
  uint64_t errors() const { return errors_.load(); }
  uint64_t mismatches() const { return mismatches_.load(); }
  std::string first_problem();
  // First completion at or after t of an I/O issued at or after t.
  std::optional<Clock::time_point> FirstCompletionIssuedAfter(Clock::time_point t);
  std::chrono::milliseconds MaxLatency();

  // With the threads stopped: writes a new generation to every block, so any
  // older write that lands later is detectable. Returns the errors.
  uint64_t RewriteAll();
  // Reads every block through `dev` and counts blocks whose content is not
  // the last acknowledged pattern (never written: zeros).
  uint64_t VerifyAll(BlockDevice* dev);
  // The expected content of a block (for checks through another path).
  void Expected(uint64_t block, char* out) const;
  uint32_t block_size() const { return bs_; }
  uint64_t blocks() const { return blocks_; }

 private:
  void Run(int t);
  Status Sync(std::function<void(BlockDevice::Callback)> op);
  void Problem(const std::string& p);
  static void Fill(uint64_t block, uint64_t gen, uint32_t bs, char* out);

  BlockDevice* dev_;
  int threads_;
  uint64_t blocks_;
  uint32_t bs_;
  std::chrono::milliseconds limit_;
  std::vector<std::atomic<uint64_t>> acked_;  // generation per block (0 = never)
  std::vector<std::thread> th_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> writes_{0}, reads_{0}, errors_{0}, mismatches_{0};
  std::mutex mu_;
  std::string problem_;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> times_;  // (issued, done)
};

}  // namespace ferry::blockdev::testing
