#include "target/server/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "target/server/state_journal.h"

namespace ferry::server {
namespace {

Status WriteAll(int fd, const std::string& data, const std::string& what) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + what);
    }
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

// The whole file, or "" when it does not exist.
Result<std::string> ReadIfExists(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::string();
    return Status::FromErrno(errno, "stat " + path);
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::IoError("cannot open " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

Status FsyncDir(const std::string& dir) {
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::FromErrno(errno, "open " + dir);
  Status st;
  if (::fsync(dfd) != 0) st = Status::FromErrno(errno, "fsync " + dir);
  ::close(dfd);
  return st;
}

}  // namespace

StateFile::~StateFile() { CloseJournal(); }

Status StateFile::Init() {
  if (dir_.empty()) return Status::InvalidArgument("--state-dir is empty");
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
    return Status::FromErrno(errno, "mkdir " + dir_);
  struct stat st;
  if (::stat(dir_.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + dir_);
  if (!S_ISDIR(st.st_mode)) return Status::InvalidArgument(dir_ + " is not a directory");
  if (::access(dir_.c_str(), W_OK) != 0) return Status::FromErrno(errno, "state dir " + dir_ + " not writable");
  return Status::Ok();
}

StateFile::Counters StateFile::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void StateFile::CloseJournal() {
  if (jfd_ >= 0) ::close(jfd_);
  jfd_ = -1;
}

Result<ServerState> StateFile::Load() {
  std::lock_guard<std::mutex> lock(mu_);
  CloseJournal();
  need_snapshot_ = true;
  auto snap = ReadIfExists(path());
  if (!snap.ok()) return snap.status();
  ServerState s;
  if (!snap->empty() || ::access(path().c_str(), F_OK) == 0) {
    auto parsed = StateFromJson(*snap);
    if (!parsed.ok()) return Status::InvalidArgument(path() + ": " + parsed.status().message());
    s = std::move(parsed.value());
  }
  auto jtext = ReadIfExists(journal_path());
  if (!jtext.ok()) return jtext.status();
  auto parsed = journal::Parse(*jtext);
  if (!parsed.ok()) return Status::InvalidArgument(journal_path() + ": " + parsed.status().message());
  for (const auto& r : parsed->records) {
    Status st = journal::Apply(r, &s);
    if (!st.ok()) return Status::InvalidArgument(journal_path() + ": " + st.message());
  }
  if (!parsed->records.empty()) {
    // The replayed state must pass every check a snapshot passes (unique tids...).
    auto check = StateFromJson(StateToJson(s));
    if (!check.ok()) return Status::InvalidArgument(journal_path() + ": " + check.status().message());
  }
  counters_.torn_bytes = parsed->dropped_bytes;
  snapshot_bytes_ = snap->size();
  journal_bytes_ = jtext->size();
  if (!jtext->empty() || ::access(journal_path().c_str(), F_OK) == 0) {
    FERRY_RETURN_IF_ERROR(OpenJournal());
    if (parsed->dropped_bytes > 0) {
      // Cut the torn append off before anything is appended after it.
      if (::ftruncate(jfd_, static_cast<off_t>(parsed->valid_bytes)) != 0 || ::fdatasync(jfd_) != 0)
        return Status::FromErrno(errno, "truncate " + journal_path());
      journal_bytes_ = parsed->valid_bytes;
    }
  }
  need_snapshot_ = false;
  return s;
}

Status StateFile::OpenJournal() {
  if (jfd_ >= 0) return Status::Ok();
  bool existed = ::access(journal_path().c_str(), F_OK) == 0;
  jfd_ = ::open(journal_path().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (jfd_ < 0) return Status::FromErrno(errno, "open " + journal_path());
  if (!existed) {
    Status st = FsyncDir(dir_);  // the new name must survive a crash too
    if (!st.ok()) {
      CloseJournal();
      return st;
    }
  }
  return Status::Ok();
}

Status StateFile::Append(const std::string& text) {
  FERRY_RETURN_IF_ERROR(OpenJournal());
  Status st = WriteAll(jfd_, text, journal_path());
  if (st.ok() && ::fdatasync(jfd_) != 0) st = Status::FromErrno(errno, "fdatasync " + journal_path());
  if (!st.ok()) {
    // Take back a partial append; if that fails too, the next Save writes a
    // full snapshot (which empties the journal) instead of appending.
    if (::ftruncate(jfd_, static_cast<off_t>(journal_bytes_)) != 0) need_snapshot_ = true;
    return st;
  }
  journal_bytes_ += text.size();
  ++counters_.appends;
  return Status::Ok();
}

Status StateFile::WriteSnapshot(const ServerState& s) {
  std::string text = StateToJson(s);
  std::string tmp = path() + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Status::FromErrno(errno, "open " + tmp);
  Status st = WriteAll(fd, text, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = Status::FromErrno(errno, "fsync " + tmp);
  ::close(fd);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  if (::rename(tmp.c_str(), path().c_str()) != 0) {
    st = Status::FromErrno(errno, "rename " + tmp);
    ::unlink(tmp.c_str());
    return st;
  }
  FERRY_RETURN_IF_ERROR(FsyncDir(dir_));
  snapshot_bytes_ = text.size();
  ++counters_.snapshots;
  // The snapshot holds everything the journal does; emptying it can wait
  // for a failure to be retried, as replaying it onto the snapshot is harmless.
  if (journal_bytes_ > 0 && OpenJournal().ok() && ::ftruncate(jfd_, 0) == 0 && ::fdatasync(jfd_) == 0)
    journal_bytes_ = 0;
  return Status::Ok();
}

Status StateFile::Save(const ServerState& before, const ServerState& after, const journal::Keys* keys) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!need_snapshot_ && opts_.compact_min_bytes > 0) {
    auto records = keys ? journal::Diff(before, after, *keys) : journal::Diff(before, after);
    if (records.empty()) return Status::Ok();
    std::string text = journal::FrameBatch(records);
    size_t limit = std::max(opts_.compact_min_bytes, 2 * snapshot_bytes_);
    if (journal_bytes_ + text.size() <= limit) return Append(text);
  }
  if (!need_snapshot_ && before == after) return Status::Ok();
  FERRY_RETURN_IF_ERROR(WriteSnapshot(after));
  need_snapshot_ = false;
  return Status::Ok();
}

}  // namespace ferry::server
