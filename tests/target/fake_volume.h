// Test-only VolumeFactory: volumes are RAM block devices, so the Registry and
// AdminApi can be tested without gateways. Lets a test make Open() fail, block
// on a gate, or fire the gateway-change hook.
#pragma once

#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "target/server/volume.h"

namespace ferry::server::testing {

class RamDevice : public blockdev::BlockDevice {
 public:
  explicit RamDevice(uint64_t size) : data_(size) {}
  uint64_t size_bytes() const override {
    std::lock_guard<std::mutex> l(mu_);
    return data_.size();
  }
  void Resize(uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    data_.resize(n);
  }
  void Read(uint64_t off, uint32_t len, char* buf, Callback cb) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (off + len > data_.size()) return cb(Status::InvalidArgument("range"));
      std::memcpy(buf, data_.data() + off, len);
    }
    cb(Status::Ok());
  }
  void Write(uint64_t off, uint32_t len, const char* buf, bool, Callback cb) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (off + len > data_.size()) return cb(Status::InvalidArgument("range"));
      std::memcpy(data_.data() + off, buf, len);
    }
    cb(Status::Ok());
  }
  void Flush(Callback cb) override { cb(Status::Ok()); }
  void Trim(uint64_t off, uint32_t len, Callback cb) override { WriteZeroes(off, len, true, false, cb); }
  void WriteZeroes(uint64_t off, uint32_t len, bool, bool, Callback cb) override {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (off + len > data_.size()) return cb(Status::InvalidArgument("range"));
      std::memset(data_.data() + off, 0, len);
    }
    cb(Status::Ok());
  }

 private:
  mutable std::mutex mu_;
  std::vector<char> data_;
};

class FakeVolume : public Volume {
 public:
  FakeVolume(const LunSpec& s, VolumeFactory::ChangeHook hook)
      : spec_(s), hook_(std::move(hook)), dev_(std::make_shared<RamDevice>(s.size ? s.size : 1 << 20)) {}
  std::shared_ptr<blockdev::BlockDevice> device() override { return dev_; }
  void Stop() override {
    std::lock_guard<std::mutex> l(mu_);
    stopped_ = true;
  }
  Result<uint64_t> RefreshSize() override {
    std::lock_guard<std::mutex> l(mu_);
    dev_->Resize(next_size_ ? next_size_ : dev_->size_bytes());
    return dev_->size_bytes();
  }
  void SetSwitchable(bool on) override {
    std::lock_guard<std::mutex> l(mu_);
    spec_.switchable = on;
  }
  VolumeStats Stats() const override {
    std::lock_guard<std::mutex> l(mu_);
    VolumeStats v;
    v.volume_name = spec_.volume;
    v.prefer_gw = spec_.preferred;
    v.current_gw = spec_.current;
    v.switchable = spec_.switchable;
    v.epoch = spec_.epoch;
    return v;
  }
  std::string current() const override {
    std::lock_guard<std::mutex> l(mu_);
    return spec_.current;
  }
  uint64_t epoch() const override {
    std::lock_guard<std::mutex> l(mu_);
    return spec_.epoch;
  }
  uint64_t size() const override { return dev_->size_bytes(); }

  // Test controls
  void Switch(const std::string& gw, uint64_t epoch) {
    {
      std::lock_guard<std::mutex> l(mu_);
      spec_.current = gw;
      spec_.epoch = epoch;
    }
    hook_(VolumeChange{gw, epoch});
  }
  void SetNextSize(uint64_t n) {
    std::lock_guard<std::mutex> l(mu_);
    next_size_ = n;
  }
  bool stopped() const {
    std::lock_guard<std::mutex> l(mu_);
    return stopped_;
  }
  bool switchable() const {
    std::lock_guard<std::mutex> l(mu_);
    return spec_.switchable;
  }

 private:
  mutable std::mutex mu_;
  LunSpec spec_;
  VolumeFactory::ChangeHook hook_;
  std::shared_ptr<RamDevice> dev_;
  uint64_t next_size_ = 0;
  bool stopped_ = false;
};

class FakeFactory : public VolumeFactory {
 public:
  Result<std::shared_ptr<Volume>> Open(const LunSpec& spec, OpenMode mode, ChangeHook hook) override {
    const bool require_gateway = mode != OpenMode::kRestore;
    std::unique_lock<std::mutex> l(mu_);
    opens_.push_back({spec, mode});
    if (gated_.count(spec.volume)) {
      ++waiting_;
      cv_.notify_all();
      cv_.wait(l, [&] { return !gated_.count(spec.volume); });
      --waiting_;
    }
    if (unreachable_.count(spec.volume) && require_gateway)
      return Status::Unavailable("no gateway serves " + spec.volume);
    LunSpec s = spec;
    if (!s.size) s.size = default_size;
    if (mode == OpenMode::kRaise) s.epoch = std::max(spec.epoch, raise_grant);  // the "gateway" grants
    auto v = std::make_shared<FakeVolume>(s, std::move(hook));
    volumes_[spec.volume].push_back(v);
    return std::shared_ptr<Volume>(v);
  }
  void SetTimeouts(const TimeoutValues& t) override {
    std::lock_guard<std::mutex> l(mu_);
    timeouts_ = t;
  }
  void SetFixedGateway(const std::string& g) override {
    std::lock_guard<std::mutex> l(mu_);
    fixed_ = g;
  }

  // Test controls
  void Unreachable(const std::string& v) {
    std::lock_guard<std::mutex> l(mu_);
    unreachable_.insert(v);
  }
  void Gate(const std::string& v) {
    std::lock_guard<std::mutex> l(mu_);
    gated_.insert(v);
  }
  void Release(const std::string& v) {
    std::lock_guard<std::mutex> l(mu_);
    gated_.erase(v);
    cv_.notify_all();
  }
  bool WaitForWaiter(std::chrono::milliseconds t) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, t, [&] { return waiting_ > 0; });
  }
  std::shared_ptr<FakeVolume> Last(const std::string& v) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = volumes_.find(v);
    return it == volumes_.end() || it->second.empty() ? nullptr : it->second.back();
  }
  std::vector<std::pair<LunSpec, OpenMode>> Opens() {
    std::lock_guard<std::mutex> l(mu_);
    return opens_;
  }
  TimeoutValues timeouts() {
    std::lock_guard<std::mutex> l(mu_);
    return timeouts_;
  }
  std::string fixed() {
    std::lock_guard<std::mutex> l(mu_);
    return fixed_;
  }
  uint64_t default_size = 8 << 20;
  uint64_t raise_grant = 0;  // epoch a kRaise open is granted (at least the floor asked for)

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  std::set<std::string> unreachable_, gated_;
  std::map<std::string, std::vector<std::shared_ptr<FakeVolume>>> volumes_;
  std::vector<std::pair<LunSpec, OpenMode>> opens_;
  TimeoutValues timeouts_;
  std::string fixed_;
};

}  // namespace ferry::server::testing
