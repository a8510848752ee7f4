// Helpers for the store tests: a temporary data directory that is removed
// afterwards, deterministic pseudo-random bytes, and chunk-file counting.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "target/store/store.h"

namespace ferry::store::testing {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<char> Pattern(uint64_t len, uint64_t seed);
// Number of chunk files (numbered files under DATA/chunks/*/).
int CountChunkFiles(const std::string& data_dir);
Store::Options SmallChunks();  // 64 KiB chunks, short fence timeout
std::unique_ptr<Store> MustOpen(const std::string& dir, Store::Options o = SmallChunks());
std::vector<char> ReadAll(VolumeHandle& h, uint64_t off, uint64_t len);

// Forks; the child runs fn and _exit()s with its result (never returns).
pid_t ForkChild(const std::function<int()>& fn);
// Waits for the child to end; returns its wait status, or -1 after killing it
// when `timeout` expired.
int WaitChild(pid_t pid, std::chrono::milliseconds timeout);
// Waits until the child is stopped (SIGSTOP); false on timeout or exit.
bool WaitStopped(pid_t pid, std::chrono::milliseconds timeout);

}  // namespace ferry::store::testing
