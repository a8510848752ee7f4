// Store: thin volumes of fixed-size chunks under one data directory, with
// copy-on-write snapshots, clones, revert, online extend and per-volume fencing
// epochs. Several processes (gateways) may open the same data directory at once.
//
// Promises (see docs/store.md for the on-disk format and the proofs):
//  - Unwritten space costs nothing and reads as zeros.
//  - Snapshot, clone, revert and extend change metadata only (no data copied);
//    a chunk is copied only on the first write to it after it became shared.
//  - A metadata change is atomic and durable when the call returns: a crash at
//    any point leaves the old state or the new one, never a mix.
//  - Data of a Write(fua=true), or of any Write followed by a successful Flush(),
//    survives kill -9 of the process (and of the machine, given a file system
//    that honours fsync).
//  - Fencing: each volume has an epoch kept in the data directory. A handle
//    opened at epoch E may write only while the volume's epoch is E; once any
//    process raises the epoch above E, every later write through that handle —
//    including one already queued — fails with Status::kFenced and changes no
//    byte. Raising the epoch waits for writes in flight in other processes to
//    drain (bounded by Options::fence_drain_timeout); a process that does not
//    drain in time is killed (STONITH; same host only) before the raise returns.
//  - VolumeHandle::PlanRead describes a range as file ranges and zeros for
//    zero-copy senders, holding the volume's I/O guard only while it plans.
//  - Names from users are validated by ValidateName before any path is built.
//  - Thread-safe: one Store and its handles may be used from many threads; the
//    I/O path takes no store-wide lock.
//  - One Store per data directory per process (POSIX fcntl locks are per
//    process); other processes may open the same directory at the same time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "target/common/logger.h"
#include "target/common/status.h"

namespace ferry::store {

// [A-Za-z0-9._-], 1..128 characters, not "." or "..".
Status ValidateName(const std::string& name);

struct SnapshotInfo {
  std::string name;
  uint64_t size = 0;        // volume size when taken
  int64_t created_unix = 0;
};

struct VolumeInfo {
  std::string name;
  uint64_t size = 0;        // bytes
  uint64_t allocated = 0;   // bytes of chunks this volume references (shared ones included)
  uint64_t epoch = 0;
  uint32_t chunk_size = 0;
  std::vector<SnapshotInfo> snapshots;
};

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool allocated = false;  // false: a hole, reads as zeros
};

// An fd owned by exactly one object: closed when it is destroyed or reset.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() { reset(); }
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.release()) {}
  OwnedFd& operator=(OwnedFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);  // closes the fd held, if any

 private:
  int fd_ = -1;
};

// One piece of a planned read (VolumeHandle::PlanRead): `length` bytes that
// are either zeros, or the bytes of `fd` at [file_offset, file_offset+length).
struct ReadSegment {
  enum class Kind { kFile, kZeros };
  Kind kind = Kind::kZeros;
  OwnedFd fd;                // kFile: the segment's own read-only fd (a dup)
  uint64_t file_offset = 0;  // kFile only
  uint64_t length = 0;
};

// An open volume or snapshot. Thread-safe; many I/Os may run at once.
class VolumeHandle {
 public:
  virtual ~VolumeHandle() = default;
  virtual uint64_t size() const = 0;   // current size (follows online extend)
  virtual uint64_t epoch() const = 0;  // epoch this handle writes at
  virtual bool read_only() const = 0;
  // Offsets/lengths need not be aligned; reads past the end are kInvalidArgument.
  virtual Status Read(uint64_t offset, uint64_t length, char* buf) = 0;
  virtual Status Write(uint64_t offset, uint64_t length, const char* buf, bool fua) = 0;
  // Zeroes a range; where a whole chunk is covered it is deallocated.
  virtual Status WriteZeroes(uint64_t offset, uint64_t length, bool fua) = 0;
  // Discard: the range reads as zeros afterwards.
  virtual Status Trim(uint64_t offset, uint64_t length) = 0;
  // Makes every completed Write durable.
  virtual Status Flush() = 0;
  // Allocation map of [offset, offset+length), in order, covering the range.
  virtual Result<std::vector<Extent>> Map(uint64_t offset, uint64_t length) = 0;

  // Where the bytes of [offset, offset+length) are, without copying them:
  // segments in order that cover the range exactly (neighbouring zero
  // segments merged), for the caller to pread/sendfile/splice. The volume's
  // I/O guard is held only while the plan is built, so consuming it (e.g.
  // sending to a slow peer) never delays a snapshot, revert or epoch raise.
  // Each file segment owns a dup()ed fd, so the bytes stay readable after a
  // later snapshot, revert, copy-on-write or delete replaced or unlinked the
  // file. What a segment reads is the data as of the plan, or newer where a
  // write races with the read (as with a Read concurrent with a Write). If a
  // racing WriteZeroes/Trim truncates the file, a file segment may hit end
  // of file early: bytes past the end read as zeros.
  // Errors: those of Read() for the same range; kConflict means "this range
  // cannot be planned here" (the default, or out of fds): use Read() instead.
  virtual Result<std::vector<ReadSegment>> PlanRead(uint64_t offset, uint64_t length) {
    (void)offset;
    (void)length;
    return Status::Conflict("PlanRead is not supported by this handle; use Read()");
  }
};

class Store {
 public:
  struct Options {
    uint32_t chunk_size = 4u << 20;  // for new volumes; a power of two >= 64 KiB
    std::chrono::milliseconds fence_drain_timeout{2000};
    bool stonith = true;             // kill a same-host process that does not drain
    // Test hook: name of a crash point at which the process _exit(137)s,
    // e.g. "snapshot.before_commit" (list in docs/store.md); "stop:<point>"
    // makes the process SIGSTOP itself there instead. Empty in production.
    std::string crash_point;
  };

  virtual ~Store() = default;
  // Creates the directory layout if missing.
  static Result<std::unique_ptr<Store>> Open(const std::string& data_dir, Options opts, Logger log);

  virtual Status CreateVolume(const std::string& name, uint64_t size) = 0;  // kAlreadyExists
  // Refuses (kConflict) while the volume has snapshots. Frees only unshared chunks.
  virtual Status DeleteVolume(const std::string& name) = 0;
  virtual Status ExtendVolume(const std::string& name, uint64_t new_size) = 0;  // no shrink
  virtual Status CreateSnapshot(const std::string& volume, const std::string& snap) = 0;
  virtual Status DeleteSnapshot(const std::string& volume, const std::string& snap) = 0;
  virtual Status RevertVolume(const std::string& volume, const std::string& snap) = 0;
  // New volume `name` with the contents of `src` (or of its snapshot `snap`).
  virtual Status CloneVolume(const std::string& src, const std::optional<std::string>& snap,
                             const std::string& name) = 0;
  virtual Result<VolumeInfo> GetVolume(const std::string& name) = 0;
  virtual Result<std::vector<VolumeInfo>> ListVolumes() = 0;
  // epoch := max(epoch, at_least); returns the epoch now in force. Fences older handles.
  virtual Result<uint64_t> RaiseEpoch(const std::string& name, uint64_t at_least) = 0;
  // epoch := max(epoch + 1, floor), always a raise, in one step (no caller
  // can slip between reading the epoch and raising it); returns the new epoch.
  virtual Result<uint64_t> RaiseEpochAbove(const std::string& name, uint64_t floor) = 0;
  // Opens a volume for I/O at `epoch` (raising the volume's epoch to it if higher).
  // A handle opened below the current epoch can read but every write is kFenced.
  virtual Result<std::shared_ptr<VolumeHandle>> OpenVolume(const std::string& name, uint64_t epoch,
                                                           bool read_only) = 0;
  virtual Result<std::shared_ptr<VolumeHandle>> OpenSnapshot(const std::string& volume,
                                                             const std::string& snap) = 0;
};

}  // namespace ferry::store
