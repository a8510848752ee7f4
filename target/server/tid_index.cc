#include "target/server/tid_index.h"

namespace ferry::server {

void TidIndex::Rebuild(const ServerState& s) {
  by_iqn_.clear();
  used_.clear();
  free_.clear();
  high_ = 1;
  for (const auto& [iqn, t] : s.targets) {
    by_iqn_[iqn] = t.tid;
    Add(t.tid);
  }
}

void TidIndex::Update(const std::string& iqn, const ServerState& s) {
  auto old = by_iqn_.find(iqn);
  if (old != by_iqn_.end()) {
    Remove(old->second);
    by_iqn_.erase(old);
  }
  auto t = s.targets.find(iqn);
  if (t == s.targets.end()) return;
  by_iqn_[iqn] = t->second.tid;
  Add(t->second.tid);
}

Result<uint32_t> TidIndex::Next() const {
  if (!free_.empty()) return *free_.begin();
  if (high_ <= kMaxTid) return high_;
  return Status::Conflict("no free tid");
}

void TidIndex::Add(uint32_t tid) {
  if (used_[tid]++ > 0) return;
  if (tid < high_) {
    free_.erase(tid);
    return;
  }
  for (uint32_t t = high_; t < tid; ++t) free_.insert(t);
  high_ = tid + 1;
}

void TidIndex::Remove(uint32_t tid) {
  auto u = used_.find(tid);
  if (u == used_.end() || --u->second > 0) return;
  used_.erase(u);
  if (tid + 1 != high_) {
    free_.insert(tid);
    return;
  }
  // The highest one went: lower the mark past every free id below it.
  high_ = tid;
  while (high_ > 1 && free_.count(high_ - 1)) free_.erase(--high_);
}

}  // namespace ferry::server
