#include "tests/blockdev/verifying_writer.h"

#include <cstring>
#include <future>
#include <memory>
#include <random>

namespace ferry::blockdev::testing {

VerifyingWriter::VerifyingWriter(BlockDevice* dev, int threads, uint64_t blocks, uint32_t bs,
                                 std::chrono::milliseconds io_limit)
    : dev_(dev), threads_(threads), blocks_(blocks), bs_(bs), limit_(io_limit), acked_(blocks) {}

VerifyingWriter::~VerifyingWriter() { Stop(); }

void VerifyingWriter::Start() {
  for (int t = 0; t < threads_; ++t) th_.emplace_back([this, t] { Run(t); });
}

void VerifyingWriter::Stop() {
  stop_ = true;
  for (auto& t : th_) t.join();
  th_.clear();
}

void VerifyingWriter::Fill(uint64_t block, uint64_t gen, uint32_t bs, char* out) {
  if (gen == 0) {
    memset(out, 0, bs);
    return;
  }
  for (uint32_t i = 0; i < bs; i += 16) {
    memcpy(out + i, &block, 8);
    memcpy(out + i + 8, &gen, 8);
  }
}

void VerifyingWriter::Expected(uint64_t block, char* out) const { Fill(block, acked_[block].load(), bs_, out); }

void VerifyingWriter::Problem(const std::string& p) {
  std::lock_guard<std::mutex> l(mu_);
  if (problem_.empty()) problem_ = p;
}

std::string VerifyingWriter::first_problem() {
  std::lock_guard<std::mutex> l(mu_);
  return problem_;
}

Status VerifyingWriter::Sync(std::function<void(BlockDevice::Callback)> op) {
  auto p = std::make_shared<std::promise<Status>>();
  auto f = p->get_future();
  auto issued = Clock::now();
  op([p](Status s) { p->set_value(s); });
  if (f.wait_for(limit_) != std::future_status::ready) {
    // The buffer must outlive the callback: we cannot go on safely.
    Problem("an I/O callback never came");
    std::abort();
  }
  Status s = f.get();
  std::lock_guard<std::mutex> l(mu_);
  times_.emplace_back(issued, Clock::now());
  return s;
}

void VerifyingWriter::Run(int t) {
  std::mt19937_64 rng(1234 + t);
  std::vector<char> buf(bs_), want(bs_);
  uint64_t mine = (blocks_ - t + threads_ - 1) / threads_;
  while (!stop_) {
    uint64_t b = t + threads_ * (rng() % mine);
    if (rng() % 4 == 0) {
      Status s = Sync([&](BlockDevice::Callback cb) { dev_->Read(b * bs_, bs_, buf.data(), cb); });
      reads_++;
      if (!s.ok()) {
        errors_++;
        Problem("read error: " + s.ToString());
        continue;
      }
      Expected(b, want.data());
      if (memcmp(buf.data(), want.data(), bs_) != 0) {
        mismatches_++;
        Problem("read of block " + std::to_string(b) + " did not return the last acknowledged write");
      }
      continue;
    }
    uint64_t gen = acked_[b].load() + 1;
    Fill(b, gen, bs_, buf.data());
    Status s = Sync([&](BlockDevice::Callback cb) { dev_->Write(b * bs_, bs_, buf.data(), false, cb); });
    writes_++;
    if (!s.ok()) {
      errors_++;
      Problem("write error: " + s.ToString());
      continue;
    }
    acked_[b].store(gen);
  }
}

std::optional<VerifyingWriter::Clock::time_point> VerifyingWriter::FirstCompletionIssuedAfter(Clock::time_point t) {
  std::lock_guard<std::mutex> l(mu_);
  std::optional<Clock::time_point> best;
  for (auto& [i, d] : times_)
    if (i >= t && (!best || d < *best)) best = d;
  return best;
}

std::chrono::milliseconds VerifyingWriter::MaxLatency() {
  std::lock_guard<std::mutex> l(mu_);
  Clock::duration m{0};
  for (auto& [i, d] : times_) m = std::max(m, d - i);
  return std::chrono::duration_cast<std::chrono::milliseconds>(m);
}

uint64_t VerifyingWriter::RewriteAll() {
  std::vector<char> buf(bs_);
  uint64_t errs = 0;
  for (uint64_t b = 0; b < blocks_; ++b) {
    uint64_t gen = acked_[b].load() + 1;
    Fill(b, gen, bs_, buf.data());
    Status s = Sync([&](BlockDevice::Callback cb) { dev_->Write(b * bs_, bs_, buf.data(), false, cb); });
    if (!s.ok()) {
      ++errs;
      Problem("rewrite error: " + s.ToString());
      continue;
    }
    acked_[b].store(gen);
  }
  errors_ += errs;
  return errs;
}

uint64_t VerifyingWriter::VerifyAll(BlockDevice* dev) {
  std::vector<char> buf(bs_), want(bs_);
  uint64_t bad = 0;
  for (uint64_t b = 0; b < blocks_; ++b) {
    Status s = Sync([&](BlockDevice::Callback cb) { dev->Read(b * bs_, bs_, buf.data(), cb); });
    Expected(b, want.data());
    if (!s.ok() || memcmp(buf.data(), want.data(), bs_) != 0) {
      if (bad == 0) Problem("block " + std::to_string(b) + " does not hold its last acknowledged write" +
                            (s.ok() ? "" : ": " + s.ToString()));
      ++bad;
    }
  }
  return bad;
}

}  // namespace ferry::blockdev::testing
