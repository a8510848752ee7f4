// Timeouts: the seven failover durations of DESIGN.md "Failover semantics",
// shared by every volume of one target.
//
// Promise: thread-safe (atomics, no lock); Set() validates (all > 0 except
// `switch` >= 0; `recovery` and `reconnect` multiples of 10) and changes
// nothing on bad input. A value read by a request when it is issued stays the
// value for that request: changes apply to requests issued after the change.
// Values are whole seconds on the API; SetForTesting() allows milliseconds
// without validation so unit tests need not wait for seconds.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "target/common/status.h"

namespace ferry::blockdev {

enum class TimeoutKind { kRead = 0, kWrite, kReadRetry, kWriteRetry, kSwitch, kRecovery, kReconnect };
constexpr int kTimeoutKinds = 7;

// "read", "write", "readretry", "writeretry", "switch", "recovery", "reconnect".
const char* TimeoutName(TimeoutKind k);
std::optional<TimeoutKind> ParseTimeoutName(const std::string& name);

class Timeouts {
 public:
  Timeouts();  // the defaults: 60 60 86400 86400 0 120 60

  // Validated set, whole seconds.
  Status Set(TimeoutKind k, int64_t seconds);
  Status Set(const std::string& name, int64_t seconds);
  // Seconds (rounded down if a test set milliseconds).
  int64_t Seconds(TimeoutKind k) const;
  std::chrono::milliseconds Get(TimeoutKind k) const;
  // All seven in the order of TimeoutKind, as (name, seconds).
  std::vector<std::pair<std::string, int64_t>> All() const;

  // Unit tests only: any value >= 0, no validation.
  void SetForTesting(TimeoutKind k, std::chrono::milliseconds v);

 private:
  std::array<std::atomic<int64_t>, kTimeoutKinds> ms_;
};

// FixedMode: the target-wide override (debug) naming one gateway "host:port"
// that every volume moves to and stays on. Thread-safe; shared by all volumes.
// Subscribers are called after every Set/Clear (under the object's lock: a
// listener must only wake something up, never call back into FixedMode); no
// call reaches a listener after Unsubscribe returns.
class FixedMode {
 public:
  void Set(const std::string& gateway);
  void Clear();
  std::optional<std::string> Get() const;

  uint64_t Subscribe(std::function<void()> listener);
  void Unsubscribe(uint64_t id);

 private:
  void NotifyLocked();
  mutable std::mutex mu_;
  std::optional<std::string> gw_;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::function<void()>> listeners_;
};

}  // namespace ferry::blockdev
