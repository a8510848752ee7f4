#include "target/store/fs_util.h"

#include <algorithm>

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace ferry::store {

namespace {
std::string Dirname(const std::string& p) {
  auto pos = p.rfind('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return p.substr(0, pos);
}
}  // namespace

Status PreadFull(int fd, char* buf, uint64_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pread(fd, buf, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pread");
    }
    if (n == 0) {  // past end of file: zeros
      std::memset(buf, 0, len);
      return Status::Ok();
    }
    buf += n;
    len -= static_cast<uint64_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status PwriteFull(int fd, const char* buf, uint64_t len, uint64_t off) {
  // At most kWritePiece bytes per pwrite, aligned to kWritePiece: the page
  // cache sizes the folios it creates for a write by the write's length, and
  // a later small overwrite of a large folio costs the file system a walk of
  // all its blocks (ext4 on Linux 6.1x: a 4 KiB write into data laid down
  // by 1 MiB writes is ~4x slower than into data laid down by 64 KiB ones).
  // Volumes take small random overwrites all the time; large writes lose
  // nothing measurable by being cut.
  constexpr uint64_t kWritePiece = 64 * 1024;
  while (len > 0) {
    uint64_t piece = std::min<uint64_t>(len, kWritePiece - off % kWritePiece);
    ssize_t n = ::pwrite(fd, buf, piece, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "pwrite");
    }
    buf += n;
    len -= static_cast<uint64_t>(n);
    off += static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status FsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return Status::FromErrno(err, "fsync " + path);
  return Status::Ok();
}

Status WriteFileAtomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp." + Hex16(RandomId());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + tmp);
  Status st = PwriteFull(fd, data.data(), data.size(), 0);
  if (st.ok() && ::fsync(fd) != 0) st = Status::FromErrno(errno, "fsync " + tmp);
  ::close(fd);
  if (st.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) st = Status::FromErrno(errno, "rename " + tmp);
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  return FsyncPath(Dirname(path));
}

Status ReadWholeFile(const std::string& path, std::string* out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  out->clear();
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      return Status::FromErrno(err, "read " + path);
    }
    if (n == 0) break;
    out->append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return Status::Ok();
}

Status RemoveTree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::FromErrno(errno, "stat " + path);
  }
  if (S_ISDIR(st.st_mode)) {
    DIR* d = ::opendir(path.c_str());
    if (!d) return Status::FromErrno(errno, "opendir " + path);
    std::vector<std::string> names;
    while (struct dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      names.emplace_back(e->d_name);
    }
    ::closedir(d);
    for (const auto& n : names) FERRY_RETURN_IF_ERROR(RemoveTree(path + "/" + n));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return Status::FromErrno(errno, "rmdir " + path);
  } else if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return Status::FromErrno(errno, "unlink " + path);
  }
  return Status::Ok();
}

uint64_t RandomId() {
  uint64_t v = 0;
  while (v == 0) {
    if (::getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) v = 0;
  }
  return v;
}

std::string Hex16(uint64_t v) {
  static const char* kDigits = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i) {
    s[static_cast<size_t>(i)] = kDigits[v & 15];
    v >>= 4;
  }
  return s;
}

bool ParseHex16(const std::string& s, uint64_t* v) {
  if (s.size() != 16) return false;
  uint64_t r = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') d = c - '0';
    else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
    else return false;
    r = (r << 4) | static_cast<uint64_t>(d);
  }
  *v = r;
  return true;
}

Status CopyFileData(int src_fd, int dst_fd) {
  if (::ioctl(dst_fd, FICLONE, src_fd) == 0) return Status::Ok();
  struct stat st;
  if (::fstat(src_fd, &st) != 0) return Status::FromErrno(errno, "fstat chunk");
  uint64_t left = static_cast<uint64_t>(st.st_size);
  loff_t in = 0, out = 0;
  bool use_cfr = true;
  while (left > 0 && use_cfr) {
    ssize_t n = ::copy_file_range(src_fd, &in, dst_fd, &out, left, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EXDEV || errno == ENOSYS || errno == EOPNOTSUPP || errno == EINVAL) {
        use_cfr = false;
        break;
      }
      return Status::FromErrno(errno, "copy_file_range");
    }
    if (n == 0) break;
    left -= static_cast<uint64_t>(n);
  }
  if (left == 0 || use_cfr) return Status::Ok();
  std::vector<char> buf(1 << 20);
  while (left > 0) {
    uint64_t n = std::min<uint64_t>(left, buf.size());
    FERRY_RETURN_IF_ERROR(PreadFull(src_fd, buf.data(), n, static_cast<uint64_t>(in)));
    FERRY_RETURN_IF_ERROR(PwriteFull(dst_fd, buf.data(), n, static_cast<uint64_t>(out)));
    in += static_cast<loff_t>(n);
    out += static_cast<loff_t>(n);
    left -= n;
  }
  return Status::Ok();
}

}  // namespace ferry::store
