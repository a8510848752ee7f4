// TidIndex: which iSCSI target ids (tid, 1..65535) the targets of a
// ServerState use, and the lowest free one in O(log n), without walking the
// targets (with thousands of targets that walk was a tenth of an add_lun's
// CPU in the target).
//
// Promises: Next() returns the lowest tid that Rebuild/Update have not
// recorded as used (it does not reserve it: the caller records it with
// Update once its target is in the state), or kConflict when all 65535 are
// taken. Update(iqn, s) makes the index agree with `s` for that one target
// (added, changed or gone). Not thread-safe: the owner serialises calls (the
// registry holds persist_mu_).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "target/common/status.h"
#include "target/server/spec.h"

namespace ferry::server {

class TidIndex {
 public:
  static constexpr uint32_t kMaxTid = 65535;

  void Rebuild(const ServerState& s);
  void Update(const std::string& iqn, const ServerState& s);
  Result<uint32_t> Next() const;
  size_t size() const { return by_iqn_.size(); }

 private:
  void Add(uint32_t tid);
  void Remove(uint32_t tid);

  std::map<std::string, uint32_t> by_iqn_;
  std::map<uint32_t, int> used_;  // tid -> number of targets holding it (a damaged state may repeat one)
  std::set<uint32_t> free_;       // unused tids below high_
  uint32_t high_ = 1;             // every tid >= high_ is free
};

}  // namespace ferry::server
