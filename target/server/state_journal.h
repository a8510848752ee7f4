// StateJournal: the target's configuration changes as small records, so a
// change costs an append of its own size instead of a rewrite of the whole
// state (StateFile keeps a snapshot plus this journal).
//
// Promise: pure functions, no I/O.
// - Diff(from, to) returns the records that turn `from` into `to`, each one an
//   absolute assignment of one key (a target's own fields, one LUN, a target's
//   removal with its LUNs, the timeouts, fixed mode). Equal states give none.
// - Apply() of Diff(from, to) to `from` yields `to`. Because every record is
//   last-writer-wins on its key, replaying a journal onto a snapshot taken at
//   or after any of its records still yields the newest state (a crash
//   between writing a snapshot and emptying the journal loses nothing).
// - FrameBatch() writes the records of one durable append as lines
//   `CRC32(hex) SP JSON LF`, closed by a commit line naming their count.
//   Parse() keeps only whole committed batches. Damage (a line whose CRC
//   fails, a missing commit) in the LAST batch is a torn append: the batch
//   is dropped and `valid_bytes` says where the caller truncates. Damage
//   followed by two or more intact commit lines means a later batch was
//   written after the damaged one was acknowledged: corruption, an error.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "target/common/status.h"
#include "target/server/spec.h"

namespace ferry::server {

namespace journal {

// The keys a change may have touched: targets by iqn (changed, added or
// removed) and the globals (timeouts, fixed mode).
struct Keys {
  std::set<std::string> targets;
  bool globals = false;
  void Target(const std::string& iqn) { targets.insert(iqn); }
};

std::vector<std::string> Diff(const ServerState& from, const ServerState& to);
// The same, looking only at `keys` (the caller vouches nothing else changed):
// the cost follows the size of the change, not of the state.
std::vector<std::string> Diff(const ServerState& from, const ServerState& to, const Keys& keys);
// Makes `to` equal to `from` on `keys`.
void CopyKeys(const ServerState& from, const Keys& keys, ServerState* to);

// Applies one record (the JSON text, without framing). kInvalidArgument for a
// record that does not parse or validate; `s` is then unchanged.
Status Apply(const std::string& record, ServerState* s);

std::string FrameBatch(const std::vector<std::string>& records);

struct Parsed {
  std::vector<std::string> records;  // of committed batches, in order
  size_t valid_bytes = 0;            // prefix made of whole committed batches
  size_t dropped_bytes = 0;          // torn tail after it
};
Result<Parsed> Parse(const std::string& bytes);

}  // namespace journal

}  // namespace ferry::server
