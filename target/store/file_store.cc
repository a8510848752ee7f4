#include "target/store/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "target/store/fs_util.h"

namespace ferry::store {

namespace {
constexpr auto kMetaWait = std::chrono::seconds(30);
// How long an idle volume keeps its shared I/O lock (saves 4 syscalls per I/O
// at queue depth 1; a metadata change elsewhere waits at most about this long).
constexpr auto kLinger = std::chrono::milliseconds(2);

bool AllDigits(const char* s) {
  if (!*s) return false;
  for (; *s; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

bool Exists(const std::string& p) {
  struct stat sb;
  return ::lstat(p.c_str(), &sb) == 0;
}

std::vector<std::string> ListDir(const std::string& p) {
  std::vector<std::string> out;
  DIR* d = ::opendir(p.c_str());
  if (!d) return out;
  while (struct dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    out.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

Status CheckSize(uint64_t size, uint32_t chunk_size) {
  if (size == 0) return Status::InvalidArgument("size must be > 0");
  if ((size + chunk_size - 1) / chunk_size > kMaxChunks || size > (uint64_t{1} << 62))
    return Status::InvalidArgument("size " + std::to_string(size) + " too large");
  return Status::Ok();
}

// A writable volume (or a read-only view of it) at one epoch.
class VolumeHandleImpl : public VolumeHandle {
 public:
  VolumeHandleImpl(std::shared_ptr<VolumeState> st, uint64_t epoch, bool ro)
      : st_(std::move(st)), epoch_(epoch), ro_(ro) {}
  uint64_t size() const override { return st_->size(); }
  uint64_t epoch() const override { return epoch_; }
  bool read_only() const override { return ro_; }
  Status Read(uint64_t off, uint64_t len, char* buf) override { return st_->Read(off, len, buf); }
  Status Write(uint64_t off, uint64_t len, const char* buf, bool fua) override {
    if (ro_) return Status::PermissionDenied("volume " + st_->name() + " is open read-only");
    return st_->Write(epoch_, off, len, buf, fua);
  }
  Status WriteZeroes(uint64_t off, uint64_t len, bool fua) override {
    if (ro_) return Status::PermissionDenied("volume " + st_->name() + " is open read-only");
    return st_->Zero(epoch_, off, len, fua);
  }
  Status Trim(uint64_t off, uint64_t len) override { return WriteZeroes(off, len, false); }
  Status Flush() override { return st_->Flush(); }
  Result<std::vector<Extent>> Map(uint64_t off, uint64_t len) override { return st_->Map(off, len); }
  Result<std::vector<ReadSegment>> PlanRead(uint64_t off, uint64_t len) override {
    return st_->PlanRead(off, len);
  }

 private:
  std::shared_ptr<VolumeState> st_;
  const uint64_t epoch_;
  const bool ro_;
};

// A snapshot: immutable chunks, so no locking at all.
class SnapshotHandleImpl : public VolumeHandle {
 public:
  SnapshotHandleImpl(std::shared_ptr<const StoreContext> ctx, std::string name, SnapMeta s, uint32_t chunk_size)
      : ctx_(std::move(ctx)), name_(std::move(name)), s_(std::move(s)), chunk_size_(chunk_size),
        fds_(new std::atomic<int>[s_.map.size()]) {
    for (size_t i = 0; i < s_.map.size(); ++i) fds_[i].store(-1);
  }
  ~SnapshotHandleImpl() override {
    for (size_t i = 0; i < s_.map.size(); ++i)
      if (fds_[i].load() >= 0) ::close(fds_[i].load());
  }
  uint64_t size() const override { return s_.size; }
  uint64_t epoch() const override { return 0; }
  bool read_only() const override { return true; }
  Status Read(uint64_t off, uint64_t len, char* buf) override {
    FERRY_RETURN_IF_ERROR(Check(off, len));
    while (len > 0) {
      uint64_t idx = off / chunk_size_, coff = off % chunk_size_;
      uint64_t n = std::min<uint64_t>(len, chunk_size_ - coff);
      if (s_.map[idx] == 0) std::memset(buf, 0, n);
      else FERRY_RETURN_IF_ERROR(ReadSharedChunk(ctx_->chunks_fd, s_.map[idx], idx, &fds_[idx], buf, n, coff));
      off += n;
      len -= n;
      buf += n;
    }
    return Status::Ok();
  }
  Result<std::vector<ReadSegment>> PlanRead(uint64_t off, uint64_t len) override {
    FERRY_RETURN_IF_ERROR(Check(off, len));
    std::vector<ReadSegment> out;
    while (len > 0) {
      uint64_t idx = off / chunk_size_, coff = off % chunk_size_;
      uint64_t n = std::min<uint64_t>(len, chunk_size_ - coff);
      int fd = -1;
      if (s_.map[idx] != 0) {
        auto r = SharedChunkFd(ctx_->chunks_fd, s_.map[idx], idx, &fds_[idx]);
        FERRY_RETURN_IF_ERROR(r.status());
        fd = *r;
      }
      FERRY_RETURN_IF_ERROR(PlanChunk(fd, coff, n, &out));
      off += n;
      len -= n;
    }
    return out;
  }
  Status Write(uint64_t, uint64_t, const char*, bool) override { return ReadOnly(); }
  Status WriteZeroes(uint64_t, uint64_t, bool) override { return ReadOnly(); }
  Status Trim(uint64_t, uint64_t) override { return ReadOnly(); }
  Status Flush() override { return Status::Ok(); }
  Result<std::vector<Extent>> Map(uint64_t off, uint64_t len) override {
    FERRY_RETURN_IF_ERROR(Check(off, len));
    std::vector<Extent> out;
    while (len > 0) {
      uint64_t idx = off / chunk_size_, coff = off % chunk_size_;
      uint64_t n = std::min<uint64_t>(len, chunk_size_ - coff);
      bool alloc = s_.map[idx] != 0;
      if (!out.empty() && out.back().allocated == alloc) out.back().length += n;
      else out.push_back(Extent{off, n, alloc});
      off += n;
      len -= n;
    }
    return out;
  }

 private:
  Status ReadOnly() const { return Status::PermissionDenied("snapshot " + name_ + " is read-only"); }
  Status Check(uint64_t off, uint64_t len) const {
    if (off > s_.size || len > s_.size - off) return Status::InvalidArgument("range beyond the end of " + name_);
    return Status::Ok();
  }
  std::shared_ptr<const StoreContext> ctx_;
  std::string name_;
  SnapMeta s_;
  uint32_t chunk_size_;
  std::unique_ptr<std::atomic<int>[]> fds_;
};

}  // namespace

// --- RAII helpers -------------------------------------------------------------

class FileStore::MetaLock {
 public:
  explicit MetaLock(FileStore* s) : s_(s) {
    {
      std::unique_lock<std::mutex> lk(s->meta_mu_);
      if (!s->meta_cv_.wait_for(lk, kMetaWait, [s] { return !s->meta_busy_; })) {
        st_ = Status::Timeout("store: another metadata change is in progress in this process");
        return;
      }
      s->meta_busy_ = true;
    }
    st_ = LockWait(s->lock_fd_, 0, LockKind::kExclusive, Clock::now() + kMetaWait, false,
                   std::chrono::milliseconds(0), s->ctx_->log, "store lock");
    if (!st_.ok()) {
      Release();
      return;
    }
    held_ = true;
  }
  ~MetaLock() {
    if (!held_) return;
    Unlock(s_->lock_fd_, 0);
    Release();
  }
  const Status& status() const { return st_; }

 private:
  void Release() {
    std::lock_guard<std::mutex> lk(s_->meta_mu_);
    s_->meta_busy_ = false;
    s_->meta_cv_.notify_one();
  }
  FileStore* s_;
  Status st_;
  bool held_ = false;
};

class FileStore::ExclusiveVolume {
 public:
  explicit ExclusiveVolume(VolumeState* v) : v_(v), st_(v->LockExclusive()) {}
  ~ExclusiveVolume() {
    if (st_.ok()) v_->UnlockExclusive();
  }
  const Status& status() const { return st_; }

 private:
  VolumeState* v_;
  Status st_;
};

// --- store ----------------------------------------------------------------------

Result<std::unique_ptr<Store>> FileStore::Create(const std::string& dir, Options opts, Logger log) {
  if (opts.chunk_size < (64u << 10) || (opts.chunk_size & (opts.chunk_size - 1)) != 0 ||
      opts.chunk_size > (1u << 30))
    return Status::InvalidArgument("chunk_size must be a power of two between 64 KiB and 1 GiB");
  if (dir.empty()) return Status::InvalidArgument("empty data directory");
  for (const char* sub : {"", "/volumes", "/chunks", "/tmp", "/trash"}) {
    std::string p = dir + sub;
    if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return Status::FromErrno(errno, "mkdir " + p);
  }
  // Up to two fds stay open per chunk touched (a 10 GiB volume: 2560+), so
  // lift the soft fd limit to the hard one; running out shows as kIoError.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  auto ctx = std::make_shared<StoreContext>();
  ctx->dir = dir;
  ctx->opts = std::move(opts);
  ctx->log = std::move(log);
  ctx->chunks_fd = ::open((dir + "/chunks").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (ctx->chunks_fd < 0) return Status::FromErrno(errno, "open " + dir + "/chunks");
  int lock_fd = ::open((dir + "/store.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return Status::FromErrno(errno, "open " + dir + "/store.lock");
  std::unique_ptr<FileStore> s(new FileStore(std::move(ctx), lock_fd));
  {
    MetaLock ml(s.get());
    FERRY_RETURN_IF_ERROR(ml.status());
    // Leftovers of creates/clones that crashed before their commit.
    for (const auto& n : ListDir(dir + "/tmp")) FERRY_RETURN_IF_ERROR(RemoveTree(dir + "/tmp/" + n));
    FERRY_RETURN_IF_ERROR(s->FinishTrash());
    Status gc = s->CollectGarbage();
    if (!gc.ok()) s->ctx_->log.Warn("garbage collection skipped: " + gc.ToString());
  }
  return std::unique_ptr<Store>(std::move(s));
}

FileStore::FileStore(std::shared_ptr<StoreContext> ctx, int lock_fd)
    : ctx_(std::move(ctx)), linger_(std::make_shared<LockLinger>(kLinger)), lock_fd_(lock_fd) {
  linger_->Start();
}

FileStore::~FileStore() {
  linger_->Stop();  // drop every lingering volume lock before the fds go
  ::close(lock_fd_);
}

Status FileStore::LoadMeta(const std::string& name, VolumeMeta* m) const {
  std::string text;
  Status st = ReadWholeFile(ctx_->VolDir(name) + "/meta", &text);
  if (st.code() == Status::Code::kNotFound) return Status::NotFound("volume " + name + " does not exist");
  FERRY_RETURN_IF_ERROR(st);
  return DecodeMeta(text, m);
}

Status FileStore::SaveMeta(const VolumeMeta& m) const {
  return WriteFileAtomic(ctx_->VolDir(m.name) + "/meta", EncodeMeta(m));
}

Result<std::shared_ptr<VolumeState>> FileStore::State(const std::string& name) {
  std::lock_guard<std::mutex> lk(states_mu_);
  VolumeMeta m;
  Status st = LoadMeta(name, &m);
  auto it = states_.find(name);
  if (!st.ok()) {
    if (st.code() == Status::Code::kNotFound && it != states_.end()) {
      it->second->MarkDead();
      states_.erase(it);
    }
    return st;
  }
  if (it != states_.end()) {
    if (it->second->uuid() == m.uuid) {
      if (it->second->dead()) return Status::NotFound("volume " + name + " is being deleted");
      return it->second;
    }
    it->second->MarkDead();  // deleted and created again: a different volume
    states_.erase(it);
  }
  std::string hp = ctx_->VolDir(name) + "/hdr";
  int fd = ::open(hp.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + hp);
  auto s = std::make_shared<VolumeState>(ctx_, name, m.uuid, fd, linger_);
  states_[name] = s;
  return s;
}

Result<uint64_t> FileStore::NewChunkDir() const {
  for (;;) {
    uint64_t id = RandomId();
    std::string h = Hex16(id);
    if (::mkdirat(ctx_->chunks_fd, h.c_str(), 0755) == 0) {
      if (::fsync(ctx_->chunks_fd) != 0) return Status::FromErrno(errno, "fsync chunks dir");
      return id;
    }
    if (errno != EEXIST) return Status::FromErrno(errno, "mkdir chunk dir");
  }
}

Status FileStore::EffectiveMap(const VolumeMeta& m, bool sync, ChunkMap* out) const {
  *out = m.base;
  std::string hd = Hex16(m.head);
  int dfd = ::openat(ctx_->chunks_fd, hd.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::FromErrno(errno, "open chunk dir " + hd);
  int dfd2 = ::dup(dfd);
  DIR* d = dfd2 >= 0 ? ::fdopendir(dfd2) : nullptr;
  if (!d) {
    int err = errno;
    if (dfd2 >= 0) ::close(dfd2);
    ::close(dfd);
    return Status::FromErrno(err, "opendir " + hd);
  }
  Status st;
  while (struct dirent* e = ::readdir(d)) {
    if (!AllDigits(e->d_name)) continue;
    uint64_t idx = std::strtoull(e->d_name, nullptr, 10);
    if (idx >= out->size()) continue;
    struct stat sb;
    if (::fstatat(dfd, e->d_name, &sb, 0) != 0) {
      st = Status::FromErrno(errno, "stat chunk");
      break;
    }
    (*out)[idx] = sb.st_size > 0 ? m.head : 0;
  }
  ::closedir(d);
  if (st.ok() && sync && ::fsync(dfd) != 0) st = Status::FromErrno(errno, "fsync chunk dir");
  ::close(dfd);
  return st;
}

Status FileStore::BumpGen(VolumeState& st) const {
  auto h = st.ReadHeader();
  FERRY_RETURN_IF_ERROR(h.status());
  h->gen++;
  return st.WriteHeader(*h);
}

Status FileStore::Rebase(VolumeMeta* m, const char* crash_prefix) {
  ChunkMap eff;
  FERRY_RETURN_IF_ERROR(EffectiveMap(*m, true, &eff));
  auto nh = NewChunkDir();
  FERRY_RETURN_IF_ERROR(nh.status());
  uint64_t old = m->head;
  std::set<ChunkRef> hidden, refs;  // base chunks the head's own files replaced
  for (uint64_t i = 0; i < eff.size(); ++i)
    if (m->base[i] && m->base[i] != eff[i]) hidden.insert({m->base[i], i});
  m->base = std::move(eff);
  m->head = *nh;
  ctx_->CrashPoint((std::string(crash_prefix) + ".before_commit").c_str());
  FERRY_RETURN_IF_ERROR(SaveMeta(*m));
  ctx_->CrashPoint((std::string(crash_prefix) + ".after_commit").c_str());
  RemoveHeadDirLeftovers(old);
  if (!hidden.empty() && ReferencedChunks("", &refs).ok()) FreeChunks(hidden, refs);
  return Status::Ok();
}

void FileStore::RemoveHeadDirLeftovers(uint64_t head) const {
  // Once frozen, only the non-empty numbered files of a head dir are referenced.
  std::string hd = Hex16(head);
  int dfd = ::openat(ctx_->chunks_fd, hd.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return;
  for (const auto& n : ListDir(ctx_->ChunkDir(head))) {
    struct stat sb;
    bool junk = !AllDigits(n.c_str()) || (::fstatat(dfd, n.c_str(), &sb, 0) == 0 && sb.st_size == 0);
    if (junk) ::unlinkat(dfd, n.c_str(), 0);
  }
  ::close(dfd);
  ::unlinkat(ctx_->chunks_fd, hd.c_str(), AT_REMOVEDIR);  // only if it ended up empty
}

Status FileStore::CommitNewVolume(const VolumeMeta& m, const char* crash_prefix) {
  std::string tmp = ctx_->dir + "/tmp/" + m.name + "." + Hex16(RandomId());
  if (::mkdir(tmp.c_str(), 0755) != 0) return Status::FromErrno(errno, "mkdir " + tmp);
  Status st;
  {
    Header h{kHeaderMagic, 0, 1, m.uuid};
    int fd = ::open((tmp + "/hdr").c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) st = Status::FromErrno(errno, "create header");
    if (st.ok()) st = WriteHeaderFd(fd, h);
    if (fd >= 0) ::close(fd);
  }
  if (st.ok()) st = WriteFileAtomic(tmp + "/meta", EncodeMeta(m));
  if (st.ok()) ctx_->CrashPoint((std::string(crash_prefix) + ".before_commit").c_str());
  if (st.ok() && ::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, ctx_->VolDir(m.name).c_str(), RENAME_NOREPLACE) != 0) {
    st = errno == EEXIST ? Status::AlreadyExists("volume " + m.name + " already exists")
                         : Status::FromErrno(errno, "rename " + tmp);
  }
  if (!st.ok()) {
    RemoveTree(tmp);
    RemoveTree(ctx_->ChunkDir(m.head));
    return st;
  }
  FERRY_RETURN_IF_ERROR(FsyncPath(ctx_->dir + "/volumes"));
  ctx_->CrashPoint((std::string(crash_prefix) + ".after_commit").c_str());
  return Status::Ok();
}

Status FileStore::ReferencedChunks(const std::string& except, std::set<ChunkRef>* refs) const {
  for (const auto& n : ListDir(ctx_->dir + "/volumes")) {
    if (n == except) continue;
    VolumeMeta m;
    Status st = LoadMeta(n, &m);
    if (st.code() == Status::Code::kNotFound) continue;
    FERRY_RETURN_IF_ERROR(st);  // never free anything on a partial view
    auto add = [&](const ChunkMap& map) {
      for (uint64_t i = 0; i < map.size(); ++i)
        if (map[i]) refs->insert({map[i], i});
    };
    // The head's own files (even empty ones) hide base chunks for good: a base
    // chunk comes back into view only through a metadata change, which needs
    // the store lock this caller holds.
    ChunkMap eff;
    FERRY_RETURN_IF_ERROR(EffectiveMap(m, false, &eff));
    add(eff);
    for (const auto& s : m.snaps) add(s.map);
  }
  return Status::Ok();
}

void FileStore::FreeChunks(const std::set<ChunkRef>& candidates, const std::set<ChunkRef>& refs) const {
  std::set<uint64_t> dirs;
  for (const auto& c : candidates) {
    if (refs.count(c)) continue;
    std::string p = Hex16(c.first) + "/" + std::to_string(c.second);
    ::unlinkat(ctx_->chunks_fd, p.c_str(), 0);
    dirs.insert(c.first);
  }
  for (uint64_t d : dirs) ::unlinkat(ctx_->chunks_fd, Hex16(d).c_str(), AT_REMOVEDIR);  // if now empty
}

Status FileStore::FinishTrash() {
  for (const auto& n : ListDir(ctx_->dir + "/trash")) {
    std::string entry = ctx_->dir + "/trash/" + n;
    std::string text;
    VolumeMeta m;
    if (ReadWholeFile(entry + "/meta", &text).ok() && DecodeMeta(text, &m).ok()) {
      std::set<ChunkRef> refs, cand;
      FERRY_RETURN_IF_ERROR(ReferencedChunks("", &refs));
      for (uint64_t i = 0; i < m.base.size(); ++i)
        if (m.base[i]) cand.insert({m.base[i], i});
      for (const auto& s : m.snaps)
        for (uint64_t i = 0; i < s.map.size(); ++i)
          if (s.map[i]) cand.insert({s.map[i], i});
      FreeChunks(cand, refs);
      FERRY_RETURN_IF_ERROR(RemoveTree(ctx_->ChunkDir(m.head)));
    }
    FERRY_RETURN_IF_ERROR(RemoveTree(entry));
  }
  return Status::Ok();
}

Status FileStore::CollectGarbage() {
  std::set<ChunkRef> refs;
  std::set<uint64_t> heads;
  for (const auto& n : ListDir(ctx_->dir + "/volumes")) {
    VolumeMeta m;
    FERRY_RETURN_IF_ERROR(LoadMeta(n, &m));  // strict: a volume we cannot read stops the sweep
    heads.insert(m.head);
    auto add = [&](const ChunkMap& map) {
      for (uint64_t i = 0; i < map.size(); ++i)
        if (map[i]) refs.insert({map[i], i});
    };
    ChunkMap eff;
    FERRY_RETURN_IF_ERROR(EffectiveMap(m, false, &eff));
    add(eff);
    for (const auto& sm : m.snaps) add(sm.map);
  }
  int freed = 0;
  for (const auto& dn : ListDir(ctx_->dir + "/chunks")) {
    uint64_t id = 0;
    if (!ParseHex16(dn, &id) || heads.count(id)) continue;
    for (const auto& fn : ListDir(ctx_->dir + "/chunks/" + dn)) {
      if (AllDigits(fn.c_str()) && refs.count({id, std::strtoull(fn.c_str(), nullptr, 10)})) continue;
      if (::unlinkat(ctx_->chunks_fd, (dn + "/" + fn).c_str(), 0) == 0) ++freed;
    }
    ::unlinkat(ctx_->chunks_fd, dn.c_str(), AT_REMOVEDIR);
  }
  if (freed) ctx_->log.Info("garbage collection freed " + std::to_string(freed) + " chunk file(s)");
  return Status::Ok();
}

// --- operations -------------------------------------------------------------------

Status FileStore::CreateVolume(const std::string& name, uint64_t size) {
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  FERRY_RETURN_IF_ERROR(CheckSize(size, ctx_->opts.chunk_size));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  if (Exists(ctx_->VolDir(name))) return Status::AlreadyExists("volume " + name + " already exists");
  VolumeMeta m;
  m.uuid = RandomId();
  m.name = name;
  m.size = size;
  m.chunk_size = ctx_->opts.chunk_size;
  m.created = static_cast<int64_t>(::time(nullptr));
  auto head = NewChunkDir();
  FERRY_RETURN_IF_ERROR(head.status());
  m.head = *head;
  m.base.assign(m.nchunks(), 0);
  return CommitNewVolume(m, "create");
}

Status FileStore::DeleteVolume(const std::string& name) {
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  auto st = State(name);
  FERRY_RETURN_IF_ERROR(st.status());
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(name, &m));
  if (!m.snaps.empty())
    return Status::Conflict("volume " + name + " has " + std::to_string(m.snaps.size()) + " snapshot(s)");
  {
    ExclusiveVolume ex(st->get());
    FERRY_RETURN_IF_ERROR(ex.status());
    FERRY_RETURN_IF_ERROR(BumpGen(**st));
    ctx_->CrashPoint("delete.after_gen");
    std::string trash = ctx_->dir + "/trash/" + name + "." + Hex16(RandomId());
    if (::rename(ctx_->VolDir(name).c_str(), trash.c_str()) != 0) return Status::FromErrno(errno, "rename to trash");
    FERRY_RETURN_IF_ERROR(FsyncPath(ctx_->dir + "/volumes"));
    FERRY_RETURN_IF_ERROR(FsyncPath(ctx_->dir + "/trash"));
    (*st)->MarkDead();
    ctx_->CrashPoint("delete.after_commit");
  }
  {
    std::lock_guard<std::mutex> lk(states_mu_);
    auto it = states_.find(name);
    if (it != states_.end() && it->second == *st) states_.erase(it);
  }
  Status fs = FinishTrash();  // committed already: a failure here only leaks space until the next try
  if (!fs.ok()) ctx_->log.Warn("delete " + name + ": freeing space: " + fs.ToString());
  return Status::Ok();
}

Status FileStore::ExtendVolume(const std::string& name, uint64_t new_size) {
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  auto st = State(name);
  FERRY_RETURN_IF_ERROR(st.status());
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(name, &m));
  if (new_size < m.size) return Status::InvalidArgument("volumes cannot shrink");
  if (new_size == m.size) return Status::Ok();
  FERRY_RETURN_IF_ERROR(CheckSize(new_size, m.chunk_size));
  ExclusiveVolume ex(st->get());
  FERRY_RETURN_IF_ERROR(ex.status());
  FERRY_RETURN_IF_ERROR(BumpGen(**st));
  ctx_->CrashPoint("extend.after_gen");
  m.size = new_size;
  m.base.resize(m.nchunks(), 0);
  ctx_->CrashPoint("extend.before_commit");
  FERRY_RETURN_IF_ERROR(SaveMeta(m));
  ctx_->CrashPoint("extend.after_commit");
  (*st)->NoteExtended(new_size);
  return Status::Ok();
}

Status FileStore::CreateSnapshot(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName(volume));
  FERRY_RETURN_IF_ERROR(ValidateName(snap));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  auto st = State(volume);
  FERRY_RETURN_IF_ERROR(st.status());
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(volume, &m));
  if (m.FindSnap(snap)) return Status::AlreadyExists("snapshot " + volume + ":" + snap + " already exists");
  ExclusiveVolume ex(st->get());
  FERRY_RETURN_IF_ERROR(ex.status());
  FERRY_RETURN_IF_ERROR(BumpGen(**st));
  ctx_->CrashPoint("snapshot.after_gen");
  ChunkMap eff;
  FERRY_RETURN_IF_ERROR(EffectiveMap(m, true, &eff));
  m.snaps.push_back(SnapMeta{snap, m.size, static_cast<int64_t>(::time(nullptr)), eff});
  return Rebase(&m, "snapshot");
}

Status FileStore::DeleteSnapshot(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName(volume));
  FERRY_RETURN_IF_ERROR(ValidateName(snap));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(volume, &m));
  auto it = std::find_if(m.snaps.begin(), m.snaps.end(), [&](const SnapMeta& s) { return s.name == snap; });
  if (it == m.snaps.end()) return Status::NotFound("snapshot " + volume + ":" + snap + " does not exist");
  std::set<ChunkRef> cand, refs;
  for (uint64_t i = 0; i < it->map.size(); ++i)
    if (it->map[i]) cand.insert({it->map[i], i});
  m.snaps.erase(it);
  // The head is untouched, so I/O goes on; readers of the snapshot keep their open files.
  ctx_->CrashPoint("delsnap.before_commit");
  FERRY_RETURN_IF_ERROR(SaveMeta(m));
  ctx_->CrashPoint("delsnap.after_commit");
  FERRY_RETURN_IF_ERROR(ReferencedChunks("", &refs));
  FreeChunks(cand, refs);
  return Status::Ok();
}

Status FileStore::RevertVolume(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName(volume));
  FERRY_RETURN_IF_ERROR(ValidateName(snap));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  auto st = State(volume);
  FERRY_RETURN_IF_ERROR(st.status());
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(volume, &m));
  const SnapMeta* s = m.FindSnap(snap);
  if (!s) return Status::NotFound("snapshot " + volume + ":" + snap + " does not exist");
  ExclusiveVolume ex(st->get());
  FERRY_RETURN_IF_ERROR(ex.status());
  FERRY_RETURN_IF_ERROR(BumpGen(**st));
  ctx_->CrashPoint("revert.after_gen");
  auto nh = NewChunkDir();
  FERRY_RETURN_IF_ERROR(nh.status());
  uint64_t old_head = m.head;
  std::set<ChunkRef> cand, refs;
  for (uint64_t i = 0; i < m.base.size(); ++i)
    if (m.base[i]) cand.insert({m.base[i], i});
  m.base = s->map;
  m.base.resize(m.nchunks(), 0);  // the volume keeps its size; space past the snapshot reads as zeros
  m.head = *nh;
  ctx_->CrashPoint("revert.before_commit");
  FERRY_RETURN_IF_ERROR(SaveMeta(m));
  ctx_->CrashPoint("revert.after_commit");
  FERRY_RETURN_IF_ERROR(RemoveTree(ctx_->ChunkDir(old_head)));
  FERRY_RETURN_IF_ERROR(ReferencedChunks("", &refs));
  FreeChunks(cand, refs);
  return Status::Ok();
}

Status FileStore::CloneVolume(const std::string& src, const std::optional<std::string>& snap,
                              const std::string& name) {
  FERRY_RETURN_IF_ERROR(ValidateName(src));
  if (snap) FERRY_RETURN_IF_ERROR(ValidateName(*snap));
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  MetaLock ml(this);
  FERRY_RETURN_IF_ERROR(ml.status());
  if (Exists(ctx_->VolDir(name))) return Status::AlreadyExists("volume " + name + " already exists");
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(src, &m));
  VolumeMeta c;
  if (snap) {
    const SnapMeta* s = m.FindSnap(*snap);
    if (!s) return Status::NotFound("snapshot " + src + ":" + *snap + " does not exist");
    c.base = s->map;
    c.size = s->size;
  } else {
    // Freeze the source's own chunks so both volumes can share them.
    auto st = State(src);
    FERRY_RETURN_IF_ERROR(st.status());
    ExclusiveVolume ex(st->get());
    FERRY_RETURN_IF_ERROR(ex.status());
    FERRY_RETURN_IF_ERROR(BumpGen(**st));
    FERRY_RETURN_IF_ERROR(Rebase(&m, "clone.rebase"));
    c.base = m.base;
    c.size = m.size;
  }
  c.uuid = RandomId();
  c.name = name;
  c.chunk_size = m.chunk_size;
  c.created = static_cast<int64_t>(::time(nullptr));
  auto head = NewChunkDir();
  FERRY_RETURN_IF_ERROR(head.status());
  c.head = *head;
  return CommitNewVolume(c, "clone");
}

Result<VolumeInfo> FileStore::GetVolume(const std::string& name) {
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(name, &m));
  auto st = State(name);
  FERRY_RETURN_IF_ERROR(st.status());
  auto epoch = (*st)->CurrentEpoch();
  FERRY_RETURN_IF_ERROR(epoch.status());
  ChunkMap eff;
  FERRY_RETURN_IF_ERROR(EffectiveMap(m, false, &eff));
  VolumeInfo vi;
  vi.name = m.name;
  vi.size = m.size;
  vi.chunk_size = m.chunk_size;
  vi.epoch = *epoch;
  vi.allocated = static_cast<uint64_t>(std::count_if(eff.begin(), eff.end(), [](uint64_t v) { return v != 0; })) *
                 m.chunk_size;
  for (const auto& s : m.snaps) vi.snapshots.push_back(SnapshotInfo{s.name, s.size, s.created});
  return vi;
}

Result<std::vector<VolumeInfo>> FileStore::ListVolumes() {
  std::vector<VolumeInfo> out;
  for (const auto& n : ListDir(ctx_->dir + "/volumes")) {
    if (!ValidateName(n).ok()) continue;
    auto vi = GetVolume(n);
    if (vi.status().code() == Status::Code::kNotFound) continue;  // deleted meanwhile
    if (vi.status().code() == Status::Code::kIoError) {
      // One unreadable volume must not hide the others; GetVolume reports it.
      ctx_->log.Error("volume " + n + ": " + vi.status().ToString());
      continue;
    }
    FERRY_RETURN_IF_ERROR(vi.status());
    out.push_back(std::move(*vi));
  }
  return out;
}

Result<uint64_t> FileStore::RaiseEpoch(const std::string& name, uint64_t at_least) {
  return Raise(name, false, at_least);
}

Result<uint64_t> FileStore::RaiseEpochAbove(const std::string& name, uint64_t floor) {
  return Raise(name, true, floor);
}

Result<uint64_t> FileStore::Raise(const std::string& name, bool above, uint64_t floor) {
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  auto st = State(name);
  FERRY_RETURN_IF_ERROR(st.status());
  auto cur = (*st)->CurrentEpoch();
  FERRY_RETURN_IF_ERROR(cur.status());
  if (!above && *cur >= floor) return *cur;
  ExclusiveVolume ex(st->get());
  FERRY_RETURN_IF_ERROR(ex.status());
  auto h = (*st)->ReadHeader();
  FERRY_RETURN_IF_ERROR(h.status());
  if (above && h->epoch == UINT64_MAX) return Status::Conflict("volume " + name + ": epoch cannot rise further");
  uint64_t want = above ? std::max(h->epoch + 1, floor) : std::max(h->epoch, floor);
  if (want != h->epoch) {
    h->epoch = want;
    FERRY_RETURN_IF_ERROR((*st)->WriteHeader(*h));
    ctx_->CrashPoint("raise.after_write");
  }
  return h->epoch;
}

Result<std::shared_ptr<VolumeHandle>> FileStore::OpenVolume(const std::string& name, uint64_t epoch,
                                                            bool read_only) {
  FERRY_RETURN_IF_ERROR(ValidateName(name));
  auto st = State(name);
  FERRY_RETURN_IF_ERROR(st.status());
  auto cur = (*st)->CurrentEpoch();
  FERRY_RETURN_IF_ERROR(cur.status());
  if (epoch > *cur) FERRY_RETURN_IF_ERROR(RaiseEpoch(name, epoch).status());
  return std::shared_ptr<VolumeHandle>(std::make_shared<VolumeHandleImpl>(*st, epoch, read_only));
}

Result<std::shared_ptr<VolumeHandle>> FileStore::OpenSnapshot(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName(volume));
  FERRY_RETURN_IF_ERROR(ValidateName(snap));
  VolumeMeta m;
  FERRY_RETURN_IF_ERROR(LoadMeta(volume, &m));
  const SnapMeta* s = m.FindSnap(snap);
  if (!s) return Status::NotFound("snapshot " + volume + ":" + snap + " does not exist");
  return std::shared_ptr<VolumeHandle>(
      std::make_shared<SnapshotHandleImpl>(ctx_, volume + ":" + snap, *s, m.chunk_size));
}

}  // namespace ferry::store
