// StoreContext: what every part of one open Store shares (paths, the open
// DATA/chunks directory, options, logger) plus the crash-point test hook.
//
// Promises: immutable after construction; safe to read from any thread.
// Layout under the data directory:
//   store.lock              fcntl lock serialising metadata changes store-wide
//   volumes/<name>/hdr      epoch + generation (32 bytes) and the volume's I/O locks
//   volumes/<name>/meta     VolumeMeta text (replaced by atomic rename)
//   chunks/<16 hex>/<index> chunk files
//   tmp/  trash/            staging for create/clone and for delete
#pragma once

#include <string>

#include "target/common/logger.h"
#include "target/store/store.h"

namespace ferry::store {

struct StoreContext {
  std::string dir;
  int chunks_fd = -1;
  Store::Options opts;
  Logger log;

  ~StoreContext();
  std::string VolDir(const std::string& name) const { return dir + "/volumes/" + name; }
  std::string ChunkDir(uint64_t id) const;
  // Test hook: _exit(137) when opts.crash_point == point; SIGSTOP itself when
  // opts.crash_point == "stop:" + point.
  void CrashPoint(const char* point) const;
};

}  // namespace ferry::store
