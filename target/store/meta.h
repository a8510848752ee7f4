// VolumeMeta: the persistent description of one volume (the `meta` file in
// DATA/volumes/<name>/), and its text encoding.
//
// Promises: Encode/Decode round-trip exactly; Decode rejects truncated or
// corrupted text (a trailing FNV-1a checksum covers every byte) with
// kIoError, never a crash. A chunk map has one entry per chunk index; entry 0
// is a hole, any other value is the id of the chunk directory
// DATA/chunks/<hex id>/ whose file <index> holds that chunk's bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "target/common/status.h"

namespace ferry::store {

using ChunkMap = std::vector<uint64_t>;

struct SnapMeta {
  std::string name;
  uint64_t size = 0;
  int64_t created = 0;
  ChunkMap map;
};

struct VolumeMeta {
  uint64_t uuid = 0;        // incarnation: new on every create/clone
  std::string name;
  uint64_t size = 0;
  uint32_t chunk_size = 0;
  int64_t created = 0;
  uint64_t head = 0;        // chunk dir that receives this volume's new writes
  ChunkMap base;            // immutable chunks under the head
  std::vector<SnapMeta> snaps;

  uint64_t nchunks() const { return (size + chunk_size - 1) / chunk_size; }
  const SnapMeta* FindSnap(const std::string& n) const;
};

std::string EncodeMeta(const VolumeMeta& m);
Status DecodeMeta(const std::string& text, VolumeMeta* m);

// Largest number of chunks one volume may have (bounds memory per volume).
constexpr uint64_t kMaxChunks = uint64_t{1} << 22;

}  // namespace ferry::store
