#include "target/server/state_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <sstream>

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

}  // namespace

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

Result<ServerState> StateFile::Load() const {
  struct stat st;
  if (::stat(path().c_str(), &st) != 0) {
    if (errno == ENOENT) return ServerState{};
    return Status::FromErrno(errno, "stat " + path());
  }
  std::ifstream f(path());
  if (!f) return Status::IoError("cannot open " + path());
  std::stringstream ss;
  ss << f.rdbuf();
  auto s = StateFromJson(ss.str());
  if (!s.ok()) return Status::InvalidArgument(path() + ": " + s.status().message());
  return s;
}

Status StateFile::Save(const ServerState& s) {
  std::string text = StateToJson(s);
  std::lock_guard<std::mutex> lock(mu_);
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
  int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return Status::FromErrno(errno, "open " + dir_);
  if (::fsync(dfd) != 0) st = Status::FromErrno(errno, "fsync " + dir_);
  ::close(dfd);
  return st;
}

}  // namespace ferry::server
