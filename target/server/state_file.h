// StateFile: the target's persisted configuration under --state-dir.
//
// Promise: Save() is atomic and durable — it writes state.json.tmp, fsyncs it,
// renames it over state.json and fsyncs the directory, so a crash at any point
// leaves either the old or the new state, never a mix. The file is mode 0600
// (it holds CHAP secrets). Load() of a missing file is an empty state; a
// corrupt file is an error naming the file (never silently discarded).
// Thread-safe: concurrent Save() calls are serialised.
#pragma once

#include <mutex>
#include <string>

#include "target/common/status.h"
#include "target/server/spec.h"

namespace ferry::server {

class StateFile {
 public:
  explicit StateFile(std::string dir) : dir_(std::move(dir)) {}

  // Creates the directory (mode 0700) if needed and checks it is writable.
  Status Init();
  Result<ServerState> Load() const;
  Status Save(const ServerState& s);
  std::string path() const { return dir_ + "/state.json"; }

 private:
  std::string dir_;
  std::mutex mu_;
};

}  // namespace ferry::server
