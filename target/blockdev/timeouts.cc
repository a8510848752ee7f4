#include "target/blockdev/timeouts.h"

namespace ferry::blockdev {
namespace {
constexpr const char* kNames[kTimeoutKinds] = {"read",   "write",    "readretry", "writeretry",
                                               "switch", "recovery", "reconnect"};
constexpr int64_t kDefaults[kTimeoutKinds] = {60, 60, 86400, 86400, 0, 120, 60};
// Upper bound keeps milliseconds far from overflow (about 31 years).
constexpr int64_t kMaxSeconds = int64_t{1} << 30;
}  // namespace

const char* TimeoutName(TimeoutKind k) { return kNames[static_cast<int>(k)]; }

std::optional<TimeoutKind> ParseTimeoutName(const std::string& name) {
  for (int i = 0; i < kTimeoutKinds; ++i)
    if (name == kNames[i]) return static_cast<TimeoutKind>(i);
  return std::nullopt;
}

Timeouts::Timeouts() {
  for (int i = 0; i < kTimeoutKinds; ++i) ms_[i].store(kDefaults[i] * 1000);
}

Status Timeouts::Set(TimeoutKind k, int64_t seconds) {
  const std::string name = TimeoutName(k);
  if (seconds > kMaxSeconds) return Status::InvalidArgument(name + ": too large");
  if (k == TimeoutKind::kSwitch) {
    if (seconds < 0) return Status::InvalidArgument("switch: must be >= 0");
  } else if (seconds <= 0) {
    return Status::InvalidArgument(name + ": must be > 0");
  }
  if ((k == TimeoutKind::kRecovery || k == TimeoutKind::kReconnect) && seconds % 10 != 0)
    return Status::InvalidArgument(name + ": must be a multiple of 10");
  ms_[static_cast<int>(k)].store(seconds * 1000);
  return Status::Ok();
}

Status Timeouts::Set(const std::string& name, int64_t seconds) {
  auto k = ParseTimeoutName(name);
  if (!k) return Status::InvalidArgument("unknown timeout type: " + name);
  return Set(*k, seconds);
}

int64_t Timeouts::Seconds(TimeoutKind k) const { return ms_[static_cast<int>(k)].load() / 1000; }

std::chrono::milliseconds Timeouts::Get(TimeoutKind k) const {
  return std::chrono::milliseconds(ms_[static_cast<int>(k)].load());
}

std::vector<std::pair<std::string, int64_t>> Timeouts::All() const {
  std::vector<std::pair<std::string, int64_t>> out;
  for (int i = 0; i < kTimeoutKinds; ++i) out.emplace_back(kNames[i], ms_[i].load() / 1000);
  return out;
}

void Timeouts::SetForTesting(TimeoutKind k, std::chrono::milliseconds v) {
  ms_[static_cast<int>(k)].store(v.count() < 0 ? 0 : v.count());
}

void FixedMode::Set(const std::string& gateway) {
  std::lock_guard<std::mutex> l(mu_);
  gw_ = gateway;
  NotifyLocked();
}
void FixedMode::Clear() {
  std::lock_guard<std::mutex> l(mu_);
  gw_.reset();
  NotifyLocked();
}
uint64_t FixedMode::Subscribe(std::function<void()> listener) {
  std::lock_guard<std::mutex> l(mu_);
  listeners_.emplace(++next_id_, std::move(listener));
  return next_id_;
}
void FixedMode::Unsubscribe(uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  listeners_.erase(id);
}
void FixedMode::NotifyLocked() {
  for (auto& [id, fn] : listeners_) fn();
}
std::optional<std::string> FixedMode::Get() const {
  std::lock_guard<std::mutex> l(mu_);
  return gw_;
}

}  // namespace ferry::blockdev
