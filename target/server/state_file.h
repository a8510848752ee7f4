// StateFile: the target's persisted configuration under --state-dir, as a
// snapshot (state.json) plus a journal of changes since it (state.journal).
//
// Promise: Save(before, after) returns only once `after` is durable, and a
// crash at any point leaves the state of the last Save that returned Ok (or
// of a newer one in progress), never a mix. `before` must be the state the
// last successful Load() or Save() left (the caller holds it anyway); the
// change is computed from it without keeping or comparing a second copy. A change costs one append of its own records
// (state_journal.h) and one fdatasync, not a rewrite of every target: with
// 1,000 LUNs a LUN change appends ~400 bytes instead of rewriting ~550 KB.
// When the journal outgrows max(compact_min_bytes, 2 x snapshot) the next
// Save writes a new snapshot atomically (tmp file, fsync, rename, directory
// fsync) and then empties the journal. Files are mode 0600 (they hold CHAP
// secrets). Load() of a missing state is an empty state; a corrupt snapshot
// or journal is an error naming the file (never silently discarded); a torn
// last append (a crash mid-Save, never acknowledged) is dropped and cut off.
// Thread-safe: Save() and Load() are serialised.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "target/common/status.h"
#include "target/server/spec.h"
#include "target/server/state_journal.h"

namespace ferry::server {

class StateFile {
 public:
  struct Options {
    size_t compact_min_bytes = 1 << 20;  // 0: no journal, every change writes a snapshot
  };
  struct Counters {
    uint64_t appends = 0;      // journal appends (one per Save that changed something)
    uint64_t snapshots = 0;    // full snapshot writes
    uint64_t torn_bytes = 0;   // dropped from the journal's end by the last Load
  };

  explicit StateFile(std::string dir) : StateFile(std::move(dir), Options{}) {}
  StateFile(std::string dir, Options o) : dir_(std::move(dir)), opts_(o) {}
  ~StateFile();
  StateFile(const StateFile&) = delete;
  StateFile& operator=(const StateFile&) = delete;

  // Creates the directory (mode 0700) if needed and checks it is writable.
  Status Init();
  Result<ServerState> Load();
  // With `keys`, only those are compared (journal::Diff with keys).
  Status Save(const ServerState& before, const ServerState& after, const journal::Keys* keys = nullptr);
  std::string path() const { return dir_ + "/state.json"; }
  std::string journal_path() const { return dir_ + "/state.journal"; }
  Counters counters() const;

 private:
  Status WriteSnapshot(const ServerState& s);  // then empties the journal
  Status Append(const std::string& text);
  Status OpenJournal();
  void CloseJournal();

  std::string dir_;
  Options opts_;
  mutable std::mutex mu_;
  bool need_snapshot_ = true;  // before Load(), or when the journal's end is uncertain
  int jfd_ = -1;
  size_t journal_bytes_ = 0, snapshot_bytes_ = 0;
  Counters counters_;
};

}  // namespace ferry::server
