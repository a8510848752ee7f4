// GatewayBlockDevice: the BlockDevice of one volume, served over NBD by one
// gateway at a time, with the failover policy of DESIGN.md "Failover semantics"
// (state machine and error table: docs/failover.md).
//
// Promise:
//  - Every BlockDevice call returns at once; its callback runs exactly once,
//    never under an internal lock (it may issue new I/O).
//  - A dead connection (EOF/RST) switches to the next healthy gateway at once;
//    a request unanswered past its `read`/`write` timeout marks the gateway
//    failed and switches. A switch waits `switch` seconds, opens the next
//    healthy gateway at epoch+1 (which fences the old one in the store) and
//    re-sends every request in flight there, in issue order, with the same
//    buffers. The initiator sees no error while the retry windows
//    (`readretry`/`writeretry`, counted from issue) last.
//  - Retryable NBD errors are retried; the others complete the request with the
//    mapped Status (table in docs/failover.md).
//  - No gateway reachable: status kFault, requests are held, every gateway is
//    tried again every `reconnect` seconds; I/O resumes when one answers.
//  - Fail-back: once the preferred gateway has answered a probe (handshake at
//    epoch 0, which never raises the epoch) continuously for `recovery`
//    seconds, the volume drains and moves back to it at epoch+1.
//  - switchable=false: no switch and no fail-back; a failed gateway is
//    reconnected at the same epoch and requests are held/retried on it.
//  - Fixed mode (shared FixedMode set): the volume moves to that gateway and
//    stays there (a frozen volume moves once it is unfrozen).
//  - Every switch, fail-back, fault and recovery is logged with volume, from,
//    to, epoch and reason; on_change is called after each move (persist it).
//  - Counters are atomics; Stats() is cheap and thread-safe.
//  - Cost: the device owns no thread but its connection's reader. Its
//    background work runs on a DeviceScheduler (pass one shared by all volumes
//    of a target; without one the device makes its own) and only when due:
//    an idle volume on its preferred gateway uses no CPU.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "target/blockdev/block_device.h"
#include "target/blockdev/device_scheduler.h"
#include "target/blockdev/nbd_connection.h"
#include "target/blockdev/timeouts.h"
#include "target/common/logger.h"

namespace ferry::blockdev {

// Numeric values as the original system showed them.
enum class VolumeStatus : int { kNormal = 0, kFault = 2, kSwitch = 3 };

// The per-volume counters. Rates and delays are over the last full second.
struct VolumeStats {
  std::string volumeName;
  std::string perferGw;  // (sic) the original field name: the preferred gateway
  std::string currentGw;
  int status = 0;
  uint64_t readError = 0;   // read requests completed to the caller with an error
  uint64_t writeError = 0;  // write/flush/trim/zero requests completed with an error
  uint64_t ioCnt = 0;       // requests in flight now
  uint64_t ioTotal = 0;     // requests completed since Start
  uint64_t readIops = 0;
  uint64_t readKBps = 0;
  uint64_t readDelayAvg = 0;  // ms
  uint64_t writeIops = 0;
  uint64_t writeKBps = 0;
  uint64_t writeDelayAvg = 0;  // ms
  bool switchable = true;
  uint64_t epoch = 0;
  // Every field above as a string, in this order (how the original rendered them).
  std::vector<std::pair<std::string, std::string>> ToStrings() const;
};

struct GatewayBlockDeviceConfig {
  std::string volume;
  std::vector<std::string> gateways;  // "host:port" of each gateway's NBD listener, in order
  std::string preferred;              // one of gateways (empty: the first)
  std::string current;                // where to start (empty: preferred)
  uint64_t epoch = 1;                 // epoch to open `current` at (joins; does not raise)
  // Start() opens `current` at a new epoch instead: above the one the store
  // holds and at least `epoch` (export "VOL@+EPOCH"), fencing every older
  // writer, and adopts the epoch the gateway grants. If that first open
  // fails, Start() fails: a raise is never retried at a guessed epoch.
  bool raise_epoch = false;
  uint64_t size_hint = 0;             // size to report before the first connection succeeds
  bool switchable = true;
  std::shared_ptr<Timeouts> timeouts;      // required; shared by the target's volumes
  std::shared_ptr<FixedMode> fixed_mode;   // optional; shared by the target's volumes
  std::shared_ptr<DeviceScheduler> scheduler;  // optional (recommended); shared by the target's volumes
  // Optional; shared by the target's volumes. With it, ReadSpliced() serves
  // reads of splice_min .. pipes->max_payload() bytes without copying them.
  std::shared_ptr<PipePool> pipes;
  uint32_t splice_min = 64 * 1024;
  Logger logger{"blockdev"};
  // Export name for (volume, epoch). Default: "VOL@EPOCH", "VOL" for epoch 0.
  std::function<std::string(const std::string& volume, uint64_t epoch)> export_name;
  // Called (not under a lock, from the device's thread) after the current
  // gateway or the epoch changed.
  std::function<void(const std::string& gateway, uint64_t epoch)> on_change;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds handshake_timeout{10000};
  std::chrono::milliseconds tick{100};  // granularity of the `switch` delay wait
};

class GatewayBlockDevice : public BlockDevice {
 public:
  explicit GatewayBlockDevice(GatewayBlockDeviceConfig cfg);
  ~GatewayBlockDevice() override;  // Stop()

  // Validates the config, tries the first connection (bounded by the connect
  // and handshake timeouts) and starts the device thread. An unreachable
  // gateway is not an error: the device switches or goes to kFault and keeps
  // trying. Errors only for a bad config.
  Status Start();
  // Completes every request still held with kIoError, closes the connection.
  void Stop();

  // BlockDevice
  uint64_t size_bytes() const override { return size_.load(); }
  void Read(uint64_t offset, uint32_t length, char* buf, Callback cb) override;
  bool ReadSpliced(uint64_t offset, uint32_t length, SplicedCallback cb) override;
  void Write(uint64_t offset, uint32_t length, const char* buf, bool fua, Callback cb) override;
  void Flush(Callback cb) override;
  void Trim(uint64_t offset, uint32_t length, Callback cb) override;
  void WriteZeroes(uint64_t offset, uint32_t length, bool may_trim, bool fua, Callback cb) override;

  // Re-reads the export size from the current gateway (after an extend).
  Result<uint64_t> RefreshSize();

  void SetSwitchable(bool on);
  bool switchable() const { return switchable_.load(); }
  VolumeStatus status() const { return static_cast<VolumeStatus>(status_.load()); }
  uint64_t epoch() const;
  std::string current_gateway() const;
  // Why the first connection made by Start() failed; empty when it succeeded.
  std::string start_error() const;
  const std::string& volume() const { return cfg_.volume; }
  VolumeStats Stats() const;

 private:
  class Impl;
  GatewayBlockDeviceConfig cfg_;
  std::atomic<uint64_t> size_{0};
  std::atomic<bool> switchable_{true};
  std::atomic<int> status_{0};
  std::atomic<bool> started_{false};
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::blockdev
