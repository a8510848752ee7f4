// Helpers for the store tests: a temporary data directory that is removed
// afterwards, deterministic pseudo-random bytes, and chunk-file counting.
#pragma once

#include <cstdint>
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

}  // namespace ferry::store::testing
