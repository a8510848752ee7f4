#include "target/store/volume_state.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <thread>

#include "target/store/fs_util.h"

namespace ferry::store {

namespace {
constexpr auto kIoWait = std::chrono::seconds(30);       // bound on an I/O waiting for a metadata op
constexpr auto kGateCheck = std::chrono::milliseconds(5);  // how often a busy holder looks at GATE
constexpr auto kAfterKill = std::chrono::seconds(10);

struct IdxName {
  char buf[24];
  explicit IdxName(uint64_t idx) {
    auto r = std::to_chars(buf, buf + sizeof buf - 1, idx);
    *r.ptr = '\0';
  }
};

struct SharedName {
  char buf[48];
  SharedName(uint64_t owner, uint64_t idx) {
    std::string h = Hex16(owner);
    std::memcpy(buf, h.data(), 16);
    buf[16] = '/';
    auto r = std::to_chars(buf + 17, buf + sizeof buf - 1, idx);
    *r.ptr = '\0';
  }
};

// Stores fd into *slot unless another thread got there first; returns the winner.
int Publish(std::atomic<int>* slot, int fd) {
  int expected = -1;
  if (slot->compare_exchange_strong(expected, fd, std::memory_order_acq_rel)) return fd;
  ::close(fd);
  return expected;
}
}  // namespace

StoreContext::~StoreContext() {
  if (chunks_fd >= 0) ::close(chunks_fd);
}

std::string StoreContext::ChunkDir(uint64_t id) const { return dir + "/chunks/" + Hex16(id); }

void StoreContext::CrashPoint(const char* point) const {
  if (opts.crash_point.empty()) return;
  if (opts.crash_point == point) ::_exit(137);
  if (opts.crash_point.size() > 5 && opts.crash_point.compare(0, 5, "stop:") == 0 &&
      opts.crash_point.compare(5, std::string::npos, point) == 0)
    ::raise(SIGSTOP);
}

Status ReadHeaderFd(int fd, Header* h) {
  char buf[sizeof(Header)];
  FERRY_RETURN_IF_ERROR(PreadFull(fd, buf, sizeof buf, 0));
  std::memcpy(h, buf, sizeof *h);
  if (h->magic != kHeaderMagic) return Status::IoError("volume header: bad magic");
  return Status::Ok();
}

Status WriteHeaderFd(int fd, const Header& h) {
  FERRY_RETURN_IF_ERROR(PwriteFull(fd, reinterpret_cast<const char*>(&h), sizeof h, 0));
  if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync header");
  return Status::Ok();
}

Result<int> SharedChunkFd(int chunks_fd, uint64_t owner, uint64_t idx, std::atomic<int>* cache) {
  int fd = cache->load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  SharedName n(owner, idx);
  int nfd = ::openat(chunks_fd, n.buf, O_RDONLY | O_CLOEXEC);
  if (nfd < 0) {
    if (errno == ENOENT) return Status::NotFound(std::string("chunk ") + n.buf + " is gone (deleted?)");
    return Status::FromErrno(errno, std::string("open chunk ") + n.buf);
  }
  return Publish(cache, nfd);
}

Status ReadSharedChunk(int chunks_fd, uint64_t owner, uint64_t idx, std::atomic<int>* cache, char* buf,
                       uint64_t len, uint64_t off) {
  auto fd = SharedChunkFd(chunks_fd, owner, idx, cache);
  FERRY_RETURN_IF_ERROR(fd.status());
  return PreadFull(*fd, buf, len, off);
}

namespace {
void AppendZeros(uint64_t len, std::vector<ReadSegment>* out) {
  if (len == 0) return;
  if (!out->empty() && out->back().kind == ReadSegment::Kind::kZeros) {
    out->back().length += len;
    return;
  }
  ReadSegment z;
  z.length = len;
  out->push_back(std::move(z));
}
}  // namespace

Status PlanChunk(int fd, uint64_t off, uint64_t len, std::vector<ReadSegment>* out) {
  if (fd < 0) {
    AppendZeros(len, out);
    return Status::Ok();
  }
  struct stat sb;
  if (::fstat(fd, &sb) != 0) return Status::FromErrno(errno, "fstat chunk");
  uint64_t fsize = static_cast<uint64_t>(sb.st_size);
  uint64_t in_file = off < fsize ? std::min<uint64_t>(len, fsize - off) : 0;
  if (in_file > 0) {
    int dfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0) {
      if (errno == EMFILE || errno == ENFILE)
        return Status::Conflict("out of file descriptors to plan a read; use Read()");
      return Status::FromErrno(errno, "dup chunk fd");
    }
    ReadSegment f;
    f.kind = ReadSegment::Kind::kFile;
    f.fd.reset(dfd);
    f.file_offset = off;
    f.length = in_file;
    out->push_back(std::move(f));
  }
  AppendZeros(len - in_file, out);
  return Status::Ok();
}

// ---------------------------------------------------------------------------

struct VolumeState::View {
  uint64_t gen = 0;
  uint64_t size = 0;
  uint64_t head = 0;
  uint32_t chunk_size = 0;
  ChunkMap base;
  int head_fd = -1;
  std::unique_ptr<std::atomic<int>[]> priv;
  std::unique_ptr<std::atomic<int>[]> shared;
  std::unique_ptr<std::atomic<uint8_t>[]> dirty;

  ~View() {
    if (head_fd >= 0) ::close(head_fd);
    for (size_t i = 0; i < base.size(); ++i) {
      int a = priv[i].load(), b = shared[i].load();
      if (a >= 0) ::close(a);
      if (b >= 0) ::close(b);
    }
  }
  // Bytes of chunk idx inside the volume.
  uint64_t ChunkLen(uint64_t idx) const {
    uint64_t start = idx * chunk_size;
    return std::min<uint64_t>(chunk_size, size - start);
  }
};

class VolumeState::Guard {
 public:
  explicit Guard(VolumeState* v) : v_(v) {}
  ~Guard() {
    if (v_) v_->Exit();
  }

 private:
  VolumeState* v_;
};

VolumeState::VolumeState(std::shared_ptr<const StoreContext> ctx, std::string name, uint64_t uuid, int hdr_fd,
                         std::shared_ptr<LockLinger> linger)
    : ctx_(std::move(ctx)), name_(std::move(name)), uuid_(uuid), hdr_fd_(hdr_fd), linger_(std::move(linger)) {}

VolumeState::~VolumeState() {
  view_.reset();
  for (int fd : pending_fds_) ::close(fd);
  ::close(hdr_fd_);
}

bool VolumeState::dead() const {
  std::lock_guard<std::mutex> lk(mu_);
  return dead_;
}

void VolumeState::MarkDead() {
  std::lock_guard<std::mutex> lk(mu_);
  dead_ = true;
  cv_.notify_all();
}

Result<Header> VolumeState::ReadHeader() const {
  Header h;
  FERRY_RETURN_IF_ERROR(ReadHeaderFd(hdr_fd_, &h));
  return h;
}

Status VolumeState::WriteHeader(const Header& h) { return WriteHeaderFd(hdr_fd_, h); }

Result<uint64_t> VolumeState::CurrentEpoch() {
  FERRY_RETURN_IF_ERROR(Enter(false, 0));
  Guard g(this);
  std::lock_guard<std::mutex> lk(mu_);
  return epoch_;
}

// --- locking protocol -------------------------------------------------------

Status VolumeState::AcquireShared(Clock::time_point deadline) {
  auto pause = std::chrono::microseconds(100);
  for (;;) {
    if (LockHolder(hdr_fd_, kGateByte, LockKind::kExclusive) == 0 &&
        TryLock(hdr_fd_, kDataByte, LockKind::kShared))
      break;
    if (Clock::now() >= deadline) return Status::Timeout("volume " + name_ + ": busy with a metadata change");
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(5));
  }
  Header h;
  Status st = ReadHeaderFd(hdr_fd_, &h);
  if (st.ok() && h.uuid != uuid_) st = Status::NotFound("volume " + name_ + " was deleted");
  if (st.ok() && (!view_ || view_->gen != h.gen)) st = Reload(h.gen);
  if (!st.ok()) {
    Unlock(hdr_fd_, kDataByte);
    if (st.code() == Status::Code::kNotFound) {
      dead_ = true;
      cv_.notify_all();
    }
    return st;
  }
  epoch_ = h.epoch;
  return Status::Ok();
}

Status VolumeState::Enter(bool write, uint64_t epoch) {
  std::unique_lock<std::mutex> lk(mu_);
  auto deadline = Clock::now() + kIoWait;
  for (;;) {
    if (dead_) return Status::NotFound("volume " + name_ + " was deleted");
    if (excl_pending_ || draining_) {
      if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && (excl_pending_ || draining_))
        return Status::Timeout("volume " + name_ + ": busy with a metadata change");
      continue;
    }
    auto now = Clock::now();
    if (!held_) {
      FERRY_RETURN_IF_ERROR(AcquireShared(deadline));
      held_ = true;
      last_gate_check_ = now;
    } else if (now - last_gate_check_ > kGateCheck) {
      last_gate_check_ = now;
      if (LockHolder(hdr_fd_, kGateByte, LockKind::kExclusive) != 0) {
        // Someone waits to change the volume: finish what is in flight, let it in.
        if (refs_ == 0) {
          Unlock(hdr_fd_, kDataByte);
          held_ = false;
        } else {
          draining_ = true;
        }
        continue;
      }
    }
    break;
  }
  if (write && epoch != epoch_) {
    if (refs_ == 0) IdleLocked();
    return Status::Fenced("volume " + name_ + ": epoch " + std::to_string(epoch) + " fenced by epoch " +
                          std::to_string(epoch_));
  }
  ++refs_;
  return Status::Ok();
}

void VolumeState::Exit() {
  std::lock_guard<std::mutex> lk(mu_);
  if (--refs_ == 0) IdleLocked();
}

void VolumeState::IdleLocked() {
  if (!draining_ && linger_) {
    idle_since_ = Clock::now();
    if (registered_) return;
    if (linger_->Register(weak_from_this())) {
      registered_ = true;
      return;
    }
  }
  Unlock(hdr_fd_, kDataByte);
  held_ = false;
  draining_ = false;
  cv_.notify_all();
}

bool VolumeState::ReleaseIfIdle(Clock::time_point now, bool force) {
  // The reaper must never wait behind one volume (an I/O thread may hold mu_
  // while it waits out another process's metadata change).
  std::unique_lock<std::mutex> lk(mu_, std::defer_lock);
  if (force) lk.lock();
  else if (!lk.try_lock()) return true;
  if (!held_ || refs_ > 0) {
    registered_ = held_;  // busy: look again later; not held: nothing to do
    return registered_;
  }
  if (!force && now - idle_since_ < linger_->linger()) return true;
  Unlock(hdr_fd_, kDataByte);
  held_ = false;
  registered_ = false;
  cv_.notify_all();
  return false;
}

// --- LockLinger ----------------------------------------------------------------

LockLinger::~LockLinger() { Stop(); }

bool LockLinger::Register(const std::weak_ptr<VolumeState>& v) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stopped_ || !thread_.joinable()) return false;
  idle_.push_back(v);
  if (idle_.size() == 1) cv_.notify_one();
  return true;
}

void LockLinger::Start() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!thread_.joinable() && !stopped_) thread_ = std::thread([this] { Run(); });
}

void LockLinger::Stop() {
  std::vector<std::weak_ptr<VolumeState>> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stopped_ = true;
    left.swap(idle_);
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lk(mu_);  // what the reaper put back before it ended
    for (auto& w : idle_) left.push_back(w);
    idle_.clear();
  }
  for (auto& w : left)  // never under mu_: Exit() takes a volume's lock, then mu_
    if (auto v = w.lock()) v->ReleaseIfIdle(Clock::now(), true);
}

void LockLinger::Run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stopped_) {
    if (idle_.empty()) {
      cv_.wait(lk);
      continue;
    }
    cv_.wait_for(lk, std::max<std::chrono::milliseconds>(linger_ / 2, std::chrono::milliseconds(1)));
    if (stopped_) break;
    std::vector<std::weak_ptr<VolumeState>> batch;
    batch.swap(idle_);
    lk.unlock();
    std::vector<std::weak_ptr<VolumeState>> keep;
    auto now = Clock::now();
    for (auto& w : batch)
      if (auto v = w.lock(); v && v->ReleaseIfIdle(now, false)) keep.push_back(w);
    lk.lock();
    idle_.insert(idle_.end(), keep.begin(), keep.end());
  }
}

Status VolumeState::LockExclusive() {
  const auto& o = ctx_->opts;
  std::unique_lock<std::mutex> lk(mu_);
  auto deadline = Clock::now() + kIoWait;
  while (excl_pending_) {
    if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && excl_pending_)
      return Status::Timeout("volume " + name_ + ": another change is in progress");
  }
  excl_pending_ = true;
  auto drain = Clock::now() + o.fence_drain_timeout;
  while (refs_ > 0) {
    if (cv_.wait_until(lk, drain) == std::cv_status::timeout && refs_ > 0) {
      excl_pending_ = false;
      cv_.notify_all();
      return Status::Timeout("volume " + name_ + ": I/O in this process did not drain in time");
    }
  }
  if (held_) {  // lingering shared lock of our own
    Unlock(hdr_fd_, kDataByte);
    held_ = false;
  }
  lk.unlock();
  // GATE may be held by another process's change, which itself may wait up to
  // a drain timeout (plus STONITH): allow for that before giving up on it.
  Status st = LockWait(hdr_fd_, kGateByte, LockKind::kExclusive,
                       Clock::now() + 3 * o.fence_drain_timeout + std::chrono::seconds(10), o.stonith,
                       kAfterKill, ctx_->log, "volume " + name_ + " gate");
  if (st.ok()) {
    st = LockWait(hdr_fd_, kDataByte, LockKind::kExclusive, Clock::now() + o.fence_drain_timeout, o.stonith,
                  kAfterKill, ctx_->log, "volume " + name_ + " drain");
    if (!st.ok()) Unlock(hdr_fd_, kGateByte);
  }
  if (!st.ok()) {
    lk.lock();
    excl_pending_ = false;
    cv_.notify_all();
  }
  return st;
}

void VolumeState::UnlockExclusive() {
  Unlock(hdr_fd_, kDataByte);
  Unlock(hdr_fd_, kGateByte);
  std::lock_guard<std::mutex> lk(mu_);
  excl_pending_ = false;
  cv_.notify_all();
}

Status VolumeState::Reload(uint64_t gen) {
  std::string text;
  VolumeMeta m;
  Status st = ReadWholeFile(ctx_->VolDir(name_) + "/meta", &text);
  if (st.ok()) st = DecodeMeta(text, &m);
  if (!st.ok()) return st;
  if (m.uuid != uuid_) return Status::NotFound("volume " + name_ + " was deleted");
  auto v = std::make_unique<View>();
  v->gen = gen;
  v->size = m.size;
  v->head = m.head;
  v->chunk_size = m.chunk_size;
  v->base = std::move(m.base);
  size_t n = v->base.size();
  v->priv.reset(new std::atomic<int>[n]);
  v->shared.reset(new std::atomic<int>[n]);
  v->dirty.reset(new std::atomic<uint8_t>[n]);
  for (size_t i = 0; i < n; ++i) {
    v->priv[i].store(-1, std::memory_order_relaxed);
    v->shared[i].store(-1, std::memory_order_relaxed);
    v->dirty[i].store(0, std::memory_order_relaxed);
  }
  std::string hd = Hex16(v->head);
  v->head_fd = ::openat(ctx_->chunks_fd, hd.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (v->head_fd < 0) return Status::FromErrno(errno, "open chunk dir " + hd);
  if (view_) {  // keep dirtied files until the next Flush makes them durable
    std::lock_guard<std::mutex> dl(dirty_mu_);
    for (uint64_t idx : dirty_idx_) {
      int fd = view_->priv[idx].exchange(-1);
      if (fd >= 0) pending_fds_.push_back(fd);
    }
    dirty_idx_.clear();
  }
  view_ = std::move(v);
  size_.store(view_->size, std::memory_order_release);
  return Status::Ok();
}

// --- chunk I/O --------------------------------------------------------------

Status VolumeState::CheckRange(uint64_t off, uint64_t len) const {
  uint64_t size = view_->size;
  if (off > size || len > size - off)
    return Status::InvalidArgument("range " + std::to_string(off) + "+" + std::to_string(len) +
                                   " beyond the end of volume " + name_ + " (" + std::to_string(size) + ")");
  return Status::Ok();
}

int VolumeState::PrivFd(uint64_t idx, Status* st) {
  View& v = *view_;
  int fd = v.priv[idx].load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  IdxName n(idx);
  fd = ::openat(v.head_fd, n.buf, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) *st = Status::FromErrno(errno, "open chunk " + Hex16(v.head) + "/" + n.buf);
    return -1;
  }
  return Publish(&v.priv[idx], fd);
}

// Creates the head's own file for chunk idx: empty (hole, or `empty`), or a
// copy of the shared chunk (copy-on-write). Safe against other threads and
// processes doing the same: the loser opens the winner's file.
int VolumeState::CreatePriv(uint64_t idx, bool empty, Status* st) {
  View& v = *view_;
  IdxName n(idx);
  int fd = -1;
  if (v.base[idx] == 0 || empty) {
    fd = ::openat(v.head_fd, n.buf, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      if (::fsync(v.head_fd) != 0) {
        *st = Status::FromErrno(errno, "fsync chunk dir");
        ::close(fd);
        return -1;
      }
    } else if (errno == EEXIST) {
      fd = ::openat(v.head_fd, n.buf, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) {
      *st = Status::FromErrno(errno, "create chunk " + Hex16(v.head) + "/" + n.buf);
      return -1;
    }
    return Publish(&v.priv[idx], fd);
  }
  // Copy-on-write: copy into a temp name, make it durable, then link() it in
  // place; link fails with EEXIST if someone else won, never overwrites.
  Status rs = ReadSharedChunk(ctx_->chunks_fd, v.base[idx], idx, &v.shared[idx], nullptr, 0, 0);
  if (rs.code() == Status::Code::kNotFound) {
    // Freed because another writer's copy already hides it: use that copy.
    int fd = PrivFd(idx, st);
    if (fd >= 0 || !st->ok()) return fd;
  }
  if (!rs.ok()) {
    *st = rs;
    return -1;
  }
  std::string tmp = "tmp." + Hex16(RandomId());
  int tfd = ::openat(v.head_fd, tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (tfd < 0) {
    *st = Status::FromErrno(errno, "create chunk copy");
    return -1;
  }
  Status cs = CopyFileData(v.shared[idx].load(), tfd);
  if (cs.ok() && ::fdatasync(tfd) != 0) cs = Status::FromErrno(errno, "fdatasync chunk copy");
  if (!cs.ok()) {
    ::unlinkat(v.head_fd, tmp.c_str(), 0);
    ::close(tfd);
    *st = cs;
    return -1;
  }
  ctx_->CrashPoint("cow.after_copy");
  if (::linkat(v.head_fd, tmp.c_str(), v.head_fd, n.buf, 0) == 0) {
    ::unlinkat(v.head_fd, tmp.c_str(), 0);
    if (::fsync(v.head_fd) != 0) {
      *st = Status::FromErrno(errno, "fsync chunk dir");
      ::close(tfd);
      return -1;
    }
    ctx_->CrashPoint("cow.after_link");
    return Publish(&v.priv[idx], tfd);
  }
  int err = errno;
  ::unlinkat(v.head_fd, tmp.c_str(), 0);
  ::close(tfd);
  if (err != EEXIST) {
    *st = Status::FromErrno(err, "link chunk copy");
    return -1;
  }
  return PrivFd(idx, st);
}

void VolumeState::MarkDirty(uint64_t idx) {
  if (view_->dirty[idx].load(std::memory_order_relaxed)) return;
  if (view_->dirty[idx].exchange(1, std::memory_order_acq_rel)) return;
  std::lock_guard<std::mutex> lk(dirty_mu_);
  dirty_idx_.push_back(idx);
}

Status VolumeState::Read(uint64_t off, uint64_t len, char* buf) {
  FERRY_RETURN_IF_ERROR(Enter(false, 0));
  Guard g(this);
  FERRY_RETURN_IF_ERROR(CheckRange(off, len));
  View& v = *view_;
  while (len > 0) {
    uint64_t idx = off / v.chunk_size, coff = off % v.chunk_size;
    uint64_t n = std::min<uint64_t>(len, v.chunk_size - coff);
    Status st;
    int fd = PrivFd(idx, &st);
    if (!st.ok()) return st;
    if (fd >= 0) st = PreadFull(fd, buf, n, coff);
    else if (v.base[idx] == 0) std::memset(buf, 0, n);
    else st = ReadSharedChunk(ctx_->chunks_fd, v.base[idx], idx, &v.shared[idx], buf, n, coff);
    if (!st.ok()) return st;
    off += n;
    len -= n;
    buf += n;
  }
  return Status::Ok();
}

Result<std::vector<ReadSegment>> VolumeState::PlanRead(uint64_t off, uint64_t len) {
  std::vector<ReadSegment> out;
  {
    FERRY_RETURN_IF_ERROR(Enter(false, 0));
    Guard g(this);  // only while planning: the fds are dup()ed, so the plan outlives it
    FERRY_RETURN_IF_ERROR(CheckRange(off, len));
    View& v = *view_;
    while (len > 0) {
      uint64_t idx = off / v.chunk_size, coff = off % v.chunk_size;
      uint64_t n = std::min<uint64_t>(len, v.chunk_size - coff);
      Status st;
      int fd = PrivFd(idx, &st);
      if (!st.ok()) return st;
      if (fd < 0 && v.base[idx] != 0) {
        auto sfd = SharedChunkFd(ctx_->chunks_fd, v.base[idx], idx, &v.shared[idx]);
        FERRY_RETURN_IF_ERROR(sfd.status());
        fd = *sfd;
      }
      FERRY_RETURN_IF_ERROR(PlanChunk(fd, coff, n, &out));
      off += n;
      len -= n;
    }
  }
  return out;
}

Status VolumeState::Write(uint64_t epoch, uint64_t off, uint64_t len, const char* buf, bool fua) {
  FERRY_RETURN_IF_ERROR(Enter(true, epoch));
  Guard g(this);
  FERRY_RETURN_IF_ERROR(CheckRange(off, len));
  ctx_->CrashPoint("write.locked");
  View& v = *view_;
  while (len > 0) {
    uint64_t idx = off / v.chunk_size, coff = off % v.chunk_size;
    uint64_t n = std::min<uint64_t>(len, v.chunk_size - coff);
    Status st;
    int fd = PrivFd(idx, &st);
    if (fd < 0 && st.ok()) fd = CreatePriv(idx, false, &st);
    if (!st.ok()) return st;
    FERRY_RETURN_IF_ERROR(PwriteFull(fd, buf, n, coff));
    if (fua) {
      if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync chunk");
    } else {
      MarkDirty(idx);
    }
    off += n;
    len -= n;
    buf += n;
  }
  return Status::Ok();
}

Status VolumeState::Zero(uint64_t epoch, uint64_t off, uint64_t len, bool fua) {
  FERRY_RETURN_IF_ERROR(Enter(true, epoch));
  Guard g(this);
  FERRY_RETURN_IF_ERROR(CheckRange(off, len));
  View& v = *view_;
  while (len > 0) {
    uint64_t idx = off / v.chunk_size, coff = off % v.chunk_size;
    uint64_t n = std::min<uint64_t>(len, v.chunk_size - coff);
    bool whole = coff == 0 && n >= v.ChunkLen(idx);
    Status st;
    int fd = PrivFd(idx, &st);
    if (!st.ok()) return st;
    if (fd < 0 && v.base[idx] != 0) {
      fd = CreatePriv(idx, whole, &st);  // an empty own file hides the shared chunk
      if (!st.ok()) return st;
    }
    if (fd >= 0) {
      if (whole) {
        if (::ftruncate(fd, 0) != 0) return Status::FromErrno(errno, "truncate chunk");
      } else {
        struct stat sb;
        if (::fstat(fd, &sb) != 0) return Status::FromErrno(errno, "fstat chunk");
        uint64_t fsize = static_cast<uint64_t>(sb.st_size);
        if (coff < fsize) {
          uint64_t m = std::min<uint64_t>(n, fsize - coff);
          if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(coff),
                          static_cast<off_t>(m)) != 0) {
            static const char kZeros[65536] = {};
            for (uint64_t done = 0; done < m;) {
              uint64_t k = std::min<uint64_t>(sizeof kZeros, m - done);
              FERRY_RETURN_IF_ERROR(PwriteFull(fd, kZeros, k, coff + done));
              done += k;
            }
          }
        }
      }
      if (fua) {
        if (::fdatasync(fd) != 0) return Status::FromErrno(errno, "fdatasync chunk");
      } else {
        MarkDirty(idx);
      }
    }
    off += n;
    len -= n;
  }
  return Status::Ok();
}

Status VolumeState::Flush() {
  FERRY_RETURN_IF_ERROR(Enter(false, 0));
  Guard g(this);
  std::vector<uint64_t> idx;
  std::vector<int> pending;
  {
    std::lock_guard<std::mutex> lk(dirty_mu_);
    idx.swap(dirty_idx_);
    pending.swap(pending_fds_);
  }
  Status result;
  for (uint64_t i : idx) {
    view_->dirty[i].store(0, std::memory_order_release);
    int fd = view_->priv[i].load(std::memory_order_acquire);
    if (fd >= 0 && ::fdatasync(fd) != 0 && result.ok()) result = Status::FromErrno(errno, "fdatasync chunk");
  }
  for (int fd : pending) {
    if (::fdatasync(fd) != 0 && result.ok()) result = Status::FromErrno(errno, "fdatasync chunk");
    ::close(fd);
  }
  return result;
}

Result<std::vector<Extent>> VolumeState::Map(uint64_t off, uint64_t len) {
  FERRY_RETURN_IF_ERROR(Enter(false, 0));
  Guard g(this);
  FERRY_RETURN_IF_ERROR(CheckRange(off, len));
  View& v = *view_;
  std::vector<Extent> out;
  while (len > 0) {
    uint64_t idx = off / v.chunk_size, coff = off % v.chunk_size;
    uint64_t n = std::min<uint64_t>(len, v.chunk_size - coff);
    Status st;
    int fd = PrivFd(idx, &st);
    if (!st.ok()) return st;
    bool alloc;
    if (fd >= 0) {
      struct stat sb;
      if (::fstat(fd, &sb) != 0) return Status::FromErrno(errno, "fstat chunk");
      alloc = sb.st_size > 0;
    } else {
      alloc = v.base[idx] != 0;
    }
    if (!out.empty() && out.back().allocated == alloc) out.back().length += n;
    else out.push_back(Extent{off, n, alloc});
    off += n;
    len -= n;
  }
  return out;
}

}  // namespace ferry::store
