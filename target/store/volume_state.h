// VolumeState: one process's view of one volume, shared by every handle of
// that volume in the process. It owns the cross-process locking protocol and
// the chunk I/O path.
//
// Locking (bytes of the volume's `hdr` file, POSIX fcntl):
//  - GATE byte: held EXCLUSIVE by a process that wants to change the volume
//    (metadata op or epoch raise). New I/O does not start while it is held.
//  - DATA byte: held SHARED by a process while it has I/O in flight on the
//    volume (taken on the 0->1 transition of an in-process count; kept for a
//    short linger after 1->0 so back-to-back I/O costs no fcntl, then dropped
//    by the LockLinger reaper), EXCLUSIVE by the process changing the volume.
//    While a process holds it shared, epoch and generation cannot change, so
//    they are read from `hdr` only when it is (re)taken. A process that holds
//    it looks at GATE every few ms and drains when someone waits.
// Promises: a write is checked against the epoch under the shared lock and
// changes no byte when fenced; the chunk map is reloaded whenever the
// generation moved; no store-wide lock on the I/O path; every wait bounded.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "target/store/file_lock.h"
#include "target/store/meta.h"
#include "target/store/store.h"
#include "target/store/store_context.h"

namespace ferry::store {

struct Header {
  uint64_t magic = 0;
  uint64_t epoch = 0;
  uint64_t gen = 0;
  uint64_t uuid = 0;
};
constexpr uint64_t kHeaderMagic = 0x3144485952524546ull;  // "FERRYHD1"
constexpr off_t kGateByte = 4096;
constexpr off_t kDataByte = 4097;

Status ReadHeaderFd(int fd, Header* h);
Status WriteHeaderFd(int fd, const Header& h);  // pwrite + fdatasync

// Reads `len` bytes at `off` of the immutable chunk `owner`/`idx`; the fd is
// cached in *cache (-1 = not opened yet).
Status ReadSharedChunk(int chunks_fd, uint64_t owner, uint64_t idx, std::atomic<int>* cache, char* buf,
                       uint64_t len, uint64_t off);

// The fd of the immutable chunk `owner`/`idx`, opened once and cached in
// *cache (-1 = not opened yet); kNotFound when the chunk file is gone.
Result<int> SharedChunkFd(int chunks_fd, uint64_t owner, uint64_t idx, std::atomic<int>* cache);

// Appends the plan of `len` bytes at `off` of one chunk to *out: zeros when
// fd < 0, else a file segment of a dup of fd up to the file's end and zeros
// past it. Neighbouring zero segments are merged. kConflict when out of fds.
Status PlanChunk(int fd, uint64_t off, uint64_t len, std::vector<ReadSegment>* out);

class VolumeState;

// LockLinger: lets idle volumes keep their shared DATA lock for `linger` and
// releases it afterwards from one reaper thread (owned by the Store). Once
// stopped, volumes release at once.
class LockLinger {
 public:
  explicit LockLinger(std::chrono::milliseconds linger) : linger_(linger) {}
  ~LockLinger();
  std::chrono::milliseconds linger() const { return linger_; }
  // A volume went idle holding its lock; false when stopped (release now).
  bool Register(const std::weak_ptr<VolumeState>& v);
  void Start();
  void Stop();  // releases every lingering lock and joins the reaper

 private:
  void Run();
  const std::chrono::milliseconds linger_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopped_ = false;
  std::vector<std::weak_ptr<VolumeState>> idle_;
  std::thread thread_;
};

class VolumeState : public std::enable_shared_from_this<VolumeState> {
 public:
  VolumeState(std::shared_ptr<const StoreContext> ctx, std::string name, uint64_t uuid, int hdr_fd,
              std::shared_ptr<LockLinger> linger = nullptr);
  ~VolumeState();
  VolumeState(const VolumeState&) = delete;
  VolumeState& operator=(const VolumeState&) = delete;

  const std::string& name() const { return name_; }
  uint64_t uuid() const { return uuid_; }
  bool dead() const;
  void MarkDead();
  // Size as of this process's last look at the metadata (other processes'
  // extends show after the next I/O here).
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  // Called by this process's own extend (under LockExclusive).
  void NoteExtended(uint64_t size) { size_.store(size, std::memory_order_release); }

  // Epoch in force, read under the shared lock (waits out an exclusive op).
  Result<uint64_t> CurrentEpoch();
  // Header as on disk; only meaningful while LockExclusive is held.
  Result<Header> ReadHeader() const;
  // Exclusive ownership of the volume across processes (drains in-process
  // I/O, then GATE and DATA exclusive; STONITH per Options). Pair with
  // UnlockExclusive. Between the two, WriteHeader may be called.
  Status LockExclusive();
  void UnlockExclusive();
  Status WriteHeader(const Header& h);

  Status Read(uint64_t off, uint64_t len, char* buf);
  Status Write(uint64_t epoch, uint64_t off, uint64_t len, const char* buf, bool fua);
  Status Zero(uint64_t epoch, uint64_t off, uint64_t len, bool fua);
  Status Flush();
  Result<std::vector<Extent>> Map(uint64_t off, uint64_t len);
  // See VolumeHandle::PlanRead: the guard is held only while planning.
  Result<std::vector<ReadSegment>> PlanRead(uint64_t off, uint64_t len);

  // Reaper side: drops an idle shared lock once it has lingered long enough
  // (or at once with `force`). Returns true while it should be looked at again.
  bool ReleaseIfIdle(Clock::time_point now, bool force);

 private:
  struct View;
  class Guard;
  Status Enter(bool write, uint64_t epoch);
  void Exit();
  void IdleLocked();  // mu_ held, refs_ == 0, DATA shared held: linger or release
  Status AcquireShared(Clock::time_point deadline);
  Status Reload(uint64_t gen);
  Status CheckRange(uint64_t off, uint64_t len) const;
  int PrivFd(uint64_t idx, Status* st);
  int CreatePriv(uint64_t idx, bool empty, Status* st);
  void MarkDirty(uint64_t idx);

  std::shared_ptr<const StoreContext> ctx_;
  const std::string name_;
  const uint64_t uuid_;
  const int hdr_fd_;
  std::atomic<uint64_t> size_{0};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<LockLinger> linger_;
  int refs_ = 0;               // I/O in flight in this process
  bool held_ = false;          // DATA shared held (refs_ > 0, or lingering)
  bool registered_ = false;    // known to the reaper
  Clock::time_point idle_since_{};
  bool excl_pending_ = false;  // an in-process exclusive op waits or runs
  bool draining_ = false;      // another process waits at GATE
  bool dead_ = false;
  uint64_t epoch_ = 0;         // valid while refs_ > 0
  Clock::time_point last_gate_check_{};
  std::unique_ptr<View> view_;  // replaced only while refs_ == 0

  std::mutex dirty_mu_;
  std::vector<uint64_t> dirty_idx_;
  std::vector<int> pending_fds_;  // from replaced views, to sync and close at Flush
};

}  // namespace ferry::store
