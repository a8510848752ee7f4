#include "target/store/store.h"

#include <unistd.h>

#include "target/store/file_store.h"

namespace ferry::store {

Status ValidateName(const std::string& name) {
  if (name.empty() || name.size() > 128)
    return Status::InvalidArgument("name must be 1..128 characters");
  if (name == "." || name == "..") return Status::InvalidArgument("name must not be '.' or '..'");
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return Status::InvalidArgument("name may contain only [A-Za-z0-9._-]");
  }
  return Status::Ok();
}

void OwnedFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& data_dir, Options opts, Logger log) {
  return FileStore::Create(data_dir, std::move(opts), std::move(log));
}

}  // namespace ferry::store
