// BlockDevice: the abstract block device a SCSI logical unit runs on.
//
// Promise: asynchronous; each call returns at once and invokes its callback
// exactly once, from any thread, possibly before the call returns. Buffers stay
// owned by the caller and must live until the callback. Offsets and lengths are
// in bytes and multiples of block_size(). Errors a caller may see:
//   kInvalidArgument  range outside the device
//   kIoError          the medium failed (non-retryable, or retry window expired)
//   kNoSpace          space allocation failed
//   kFenced           this device lost the right to write (another holder took it)
//   kTimeout          the retry window expired without an answer
// Retries, gateway failover and fencing are the implementation's business: a
// caller never sees a transient gateway fault while the retry windows last.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "target/common/spliced_data.h"
#include "target/common/status.h"

namespace ferry::blockdev {

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool allocated = false;
};

class BlockDevice {
 public:
  using Callback = std::function<void(Status)>;
  virtual ~BlockDevice() = default;

  virtual uint64_t size_bytes() const = 0;
  virtual uint32_t block_size() const { return 512; }
  virtual bool read_only() const { return false; }

  virtual void Read(uint64_t offset, uint32_t length, char* buf, Callback cb) = 0;
  // Zero-copy read: on success the callback gets the payload held in a pipe
  // (target/common/spliced_data.h), to be spliced to a socket. Returns false
  // without calling anything when this device cannot do it for this request;
  // the caller then uses Read().
  using SplicedCallback = std::function<void(Status, std::shared_ptr<SplicedData>)>;
  virtual bool ReadSpliced(uint64_t /*offset*/, uint32_t /*length*/, SplicedCallback /*cb*/) { return false; }
  virtual void Write(uint64_t offset, uint32_t length, const char* buf, bool fua, Callback cb) = 0;
  virtual void Flush(Callback cb) = 0;
  virtual void Trim(uint64_t offset, uint32_t length, Callback cb) = 0;
  virtual void WriteZeroes(uint64_t offset, uint32_t length, bool may_trim, bool fua, Callback cb) = 0;
  // Allocation status of a range (for GET LBA STATUS). Default: all allocated.
  virtual void Map(uint64_t offset, uint64_t length,
                   std::function<void(Result<std::vector<Extent>>)> cb) {
    cb(std::vector<Extent>{{offset, length, true}});
  }
};

}  // namespace ferry::blockdev
