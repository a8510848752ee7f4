// RamDevice: an in-memory BlockDevice for the SCSI unit tests.
//
// Promise: behaves like the BlockDevice contract (ranges checked, unwritten
// and trimmed blocks read as zeros, Map reports allocation per block). Tests
// can make it fail the next calls with a given Status, and can switch it to
// deferred mode, where callbacks wait in a queue until RunPending() runs them
// (to test ordering and aborts deterministically). It records the FUA flag
// and counts flushes, trims and write-zeroes calls.
#pragma once

#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "target/blockdev/block_device.h"

namespace ferry::scsi::testing {

class RamDevice : public blockdev::BlockDevice {
 public:
  explicit RamDevice(uint64_t size, uint32_t bs = 512, bool ro = false)
      : data_(size, 0), alloc_(size / bs, false), bs_(bs), ro_(ro) {}

  uint64_t size_bytes() const override { std::lock_guard<std::mutex> l(mu_); return data_.size(); }
  uint32_t block_size() const override { return bs_; }
  bool read_only() const override { return ro_; }

  void Resize(uint64_t size) {
    std::lock_guard<std::mutex> l(mu_);
    data_.resize(size, 0);
    alloc_.resize(size / bs_, false);
  }

  void Read(uint64_t off, uint32_t len, char* buf, Callback cb) override {
    Op([=, this] {
      Status s = Check(off, len);
      if (s.ok()) std::memcpy(buf, &data_[off], len);
      reads++;
      return s;
    }, std::move(cb));
  }
  void Write(uint64_t off, uint32_t len, const char* buf, bool fua, Callback cb) override {
    Op([=, this] {
      Status s = Check(off, len);
      if (s.ok()) {
        std::memcpy(&data_[off], buf, len);
        Mark(off, len, true);
      }
      last_fua = fua;
      writes++;
      return s;
    }, std::move(cb));
  }
  void Flush(Callback cb) override {
    Op([this] { flushes++; return Status::Ok(); }, std::move(cb));
  }
  void Trim(uint64_t off, uint32_t len, Callback cb) override {
    Op([=, this] {
      Status s = Check(off, len);
      if (s.ok()) { std::memset(&data_[off], 0, len); Mark(off, len, false); }
      trims++;
      return s;
    }, std::move(cb));
  }
  void WriteZeroes(uint64_t off, uint32_t len, bool may_trim, bool fua, Callback cb) override {
    Op([=, this] {
      Status s = Check(off, len);
      if (s.ok()) { std::memset(&data_[off], 0, len); Mark(off, len, !may_trim); }
      zeroes++;
      last_may_trim = may_trim;
      last_fua = fua;
      return s;
    }, std::move(cb));
  }
  void Map(uint64_t off, uint64_t len, std::function<void(Result<std::vector<blockdev::Extent>>)> cb) override {
    std::vector<blockdev::Extent> out;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (uint64_t b = off / bs_; b * bs_ < off + len && b < alloc_.size(); ++b) {
        bool a = alloc_[b];
        if (!out.empty() && out.back().allocated == a) out.back().length += bs_;
        else out.push_back({b * bs_, bs_, a});
      }
    }
    cb(std::move(out));
  }

  // Test controls.
  void FailNext(Status s, int count = 1) { std::lock_guard<std::mutex> l(mu_); fail_ = s; fail_count_ = count; }
  void SetDeferred(bool d) { std::lock_guard<std::mutex> l(mu_); deferred_ = d; }
  size_t PendingCount() { std::lock_guard<std::mutex> l(mu_); return pending_.size(); }
  // Runs queued operations (and any they queue) until none is left; returns how many ran.
  size_t RunPending() {
    size_t n = 0;
    for (;;) {
      std::function<void()> f;
      {
        std::lock_guard<std::mutex> l(mu_);
        if (pending_.empty()) return n;
        f = std::move(pending_.front());
        pending_.pop_front();
      }
      f();
      ++n;
    }
  }
  // Runs only the first queued operation.
  bool RunOne() {
    std::function<void()> f;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (pending_.empty()) return false;
      f = std::move(pending_.front());
      pending_.pop_front();
    }
    f();
    return true;
  }
  std::vector<uint8_t> Bytes(uint64_t off, size_t len) {
    std::lock_guard<std::mutex> l(mu_);
    return std::vector<uint8_t>(data_.begin() + off, data_.begin() + off + len);
  }
  void Fill(uint64_t off, size_t len, uint8_t v) {
    std::lock_guard<std::mutex> l(mu_);
    std::memset(&data_[off], v, len);
    Mark(off, len, true);
  }

  bool last_fua = false, last_may_trim = false;
  int reads = 0, writes = 0, flushes = 0, trims = 0, zeroes = 0;

 private:
  Status Check(uint64_t off, uint64_t len) const {
    if (off + len > data_.size() || off % bs_ || len % bs_) return Status::InvalidArgument("range");
    return Status::Ok();
  }
  void Mark(uint64_t off, uint64_t len, bool a) {
    for (uint64_t b = off / bs_; b < (off + len) / bs_; ++b) alloc_[b] = a;
  }
  void Op(std::function<Status()> body, Callback cb) {
    std::unique_lock<std::mutex> l(mu_);
    if (fail_count_ > 0) {
      fail_count_--;
      Status s = fail_;
      if (deferred_) { pending_.push_back([cb, s] { cb(s); }); return; }
      l.unlock();
      cb(s);
      return;
    }
    if (deferred_) {
      pending_.push_back([this, body, cb] {
        Status s;
        { std::lock_guard<std::mutex> g(mu_); s = body(); }
        cb(s);
      });
      return;
    }
    Status s = body();
    l.unlock();
    cb(s);
  }

  mutable std::mutex mu_;
  std::vector<uint8_t> data_;
  std::vector<bool> alloc_;
  uint32_t bs_;
  bool ro_;
  Status fail_;
  int fail_count_ = 0;
  bool deferred_ = false;
  std::deque<std::function<void()>> pending_;
};

}  // namespace ferry::scsi::testing
