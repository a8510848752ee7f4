// AnswerCache: rendered answers (response bodies) reused while the data they
// were made from has not changed.
//
// Promise: an answer is reused only while the version it was computed at is
// current. The caller passes the version it read BEFORE anything the compute
// function reads (for the map queries: Database::generation()), so an answer
// is never tagged newer than the data it was made from; a write that bumps
// the version before it returns makes every later Get() compute afresh. Only
// successful answers are kept, only those of the newest version seen (older
// ones can never be current again, so they are dropped), and at most
// `max_entries` keys. Concurrent callers asking for the same key at the same
// version share one computation (single flight); a caller never waits longer
// than `wait_limit` for another's computation (then it computes its own).
// Thread-safe. Versions must only grow; IdentityVersion turns "is it the same
// object" into such a version.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "target/common/status.h"

namespace ferry::backend {

class AnswerCache {
 public:
  using Text = std::shared_ptr<const std::string>;
  using Compute = std::function<Result<std::string>()>;

  struct Counters {
    uint64_t hits = 0;     // answered from a kept answer
    uint64_t shared = 0;   // answered by waiting for another caller's computation
    uint64_t misses = 0;   // computed
  };

  explicit AnswerCache(size_t max_entries = 1024,
                       std::chrono::milliseconds wait_limit = std::chrono::seconds(10))
      : max_entries_(max_entries), wait_limit_(wait_limit) {}
  AnswerCache(const AnswerCache&) = delete;
  AnswerCache& operator=(const AnswerCache&) = delete;

  // The answer for `key` at `version` (read by the caller before anything
  // `compute` reads): a kept one of this version or newer, else computed.
  Result<Text> Get(const std::string& key, uint64_t version, const Compute& compute) {
    std::unique_lock<std::mutex> l(mu_);
    if (version > newest_) {
      newest_ = version;
      for (auto it = kept_.begin(); it != kept_.end();)
        it = it->second.version < newest_ ? kept_.erase(it) : std::next(it);
    }
    auto k = kept_.find(key);
    if (k != kept_.end() && k->second.version >= version) {
      ++counters_.hits;
      return k->second.text;
    }
    auto f = flights_.find(key);
    if (f != flights_.end() && f->second->version >= version) {
      std::shared_ptr<Flight> flight = f->second;
      ++waiters_;
      bool done = cv_.wait_for(l, wait_limit_, [&] { return flight->done; });
      --waiters_;
      if (done) {
        ++counters_.shared;
        if (flight->text) return flight->text;
        return flight->error;
      }
      // That computation is stuck: do our own below.
    }
    auto mine = std::make_shared<Flight>();
    mine->version = version;
    flights_[key] = mine;  // a flight of an older version keeps running for its own callers
    ++counters_.misses;
    l.unlock();
    Result<std::string> r = Status::Internal("answer not computed");
    try {
      r = compute();
    } catch (const std::exception& e) {
      r = Status::Internal(std::string("computing an answer: ") + e.what());
    }
    l.lock();
    mine->done = true;
    if (r.ok())
      mine->text = std::make_shared<const std::string>(std::move(r).value());
    else
      mine->error = r.status();
    auto cur = flights_.find(key);
    if (cur != flights_.end() && cur->second == mine) flights_.erase(cur);
    if (mine->text && version >= newest_) {
      auto old = kept_.find(key);
      if (old != kept_.end()) {
        if (old->second.version <= version) old->second = Kept{version, mine->text};
      } else if (kept_.size() < max_entries_) {
        kept_.emplace(key, Kept{version, mine->text});
      }
    }
    cv_.notify_all();
    if (mine->text) return mine->text;
    return mine->error;
  }

  Counters counters() {
    std::lock_guard<std::mutex> l(mu_);
    return counters_;
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return kept_.size();
  }
  // Callers waiting for another's computation right now (tests, metrics).
  int waiters() {
    std::lock_guard<std::mutex> l(mu_);
    return waiters_;
  }

 private:
  struct Kept {
    uint64_t version = 0;
    Text text;
  };
  struct Flight {
    uint64_t version = 0;
    bool done = false;
    Text text;      // set when done and ok
    Status error;   // set when done and failed
  };
  const size_t max_entries_;
  const std::chrono::milliseconds wait_limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t newest_ = 0;
  std::map<std::string, Kept> kept_;
  std::map<std::string, std::shared_ptr<Flight>> flights_;
  Counters counters_;
  int waiters_ = 0;
};

// Gives each distinct object a version for AnswerCache: the same object as
// last time keeps its number, another one gets the next. The last object is
// held, so its address cannot be reused by a new object while it is compared.
class IdentityVersion {
 public:
  uint64_t Of(std::shared_ptr<const void> p) {
    std::lock_guard<std::mutex> l(mu_);
    if (p != last_) {
      last_ = std::move(p);
      ++version_;
    }
    return version_;
  }

 private:
  std::mutex mu_;
  std::shared_ptr<const void> last_;
  uint64_t version_ = 0;
};

}  // namespace ferry::backend
