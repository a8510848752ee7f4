// Volume: one LUN's block device as the target process manages it — the
// gateway client with failover (target/blockdev) behind a small interface, so
// the registry can be tested with an in-memory device.
//
// Promise: Open() either returns a started Volume or an error with nothing left
// running. With `require_gateway` it fails (kUnavailable) when no gateway
// answers; without it (restart from the state file) it starts in fault status
// with `spec.size` as the size and keeps trying in the background. The
// on_change hook fires (from any thread) whenever the current gateway or the
// epoch changes, so the process can persist them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "target/blockdev/block_device.h"
#include "target/common/status.h"
#include "target/server/spec.h"

namespace ferry::server {

// Per-volume counters, with the original system's field names (see /v1/status).
struct VolumeStats {
  std::string volume_name, prefer_gw, current_gw;
  int status = 0;  // 0 normal, 2 fault, 3 switch
  uint64_t read_error = 0, write_error = 0, io_cnt = 0, io_total = 0;
  uint64_t read_iops = 0, read_kbps = 0, read_delay_avg = 0;  // delay in ms
  uint64_t write_iops = 0, write_kbps = 0, write_delay_avg = 0;
  bool switchable = true;
  uint64_t epoch = 0;
};

struct VolumeChange {
  std::string current;
  uint64_t epoch = 0;
};

class Volume {
 public:
  virtual ~Volume() = default;
  virtual std::shared_ptr<blockdev::BlockDevice> device() = 0;
  // Closes the gateway connections (never touches the volume's metadata).
  virtual void Stop() = 0;
  // Asks the current gateway for the size again; returns the new size.
  virtual Result<uint64_t> RefreshSize() = 0;
  virtual void SetSwitchable(bool on) = 0;
  virtual VolumeStats Stats() const = 0;
  virtual std::string current() const = 0;
  virtual uint64_t epoch() const = 0;
  virtual uint64_t size() const = 0;
};

// How a LUN's volume is opened.
enum class OpenMode {
  kRestore,  // from the persisted state at start: serve it, a gateway may answer later
  kJoin,     // a new LUN at spec.epoch: a gateway must answer now
  kRaise,    // a new LUN at a new epoch above the store's (>= spec.epoch), which the
             // gateway grants; fences every older writer; a gateway must answer now
};

class VolumeFactory {
 public:
  using ChangeHook = std::function<void(const VolumeChange&)>;
  virtual ~VolumeFactory() = default;
  virtual Result<std::shared_ptr<Volume>> Open(const LunSpec& spec, OpenMode mode, ChangeHook on_change) = 0;
  // Target-wide settings shared by every volume (applied to I/O issued later).
  virtual void SetTimeouts(const TimeoutValues& t) = 0;
  virtual void SetFixedGateway(const std::string& gateway) = 0;  // "" = off
};

}  // namespace ferry::server
