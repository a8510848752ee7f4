#include "target/store/file_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

namespace ferry::store {

namespace {
struct flock Range(off_t byte, short type) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = byte;
  fl.l_len = 1;
  return fl;
}
short Type(LockKind k) { return k == LockKind::kShared ? F_RDLCK : F_WRLCK; }

// Polls TryLock until granted or deadline.
bool PollUntil(int fd, off_t byte, LockKind kind, Clock::time_point deadline) {
  auto pause = std::chrono::microseconds(200);
  for (;;) {
    if (TryLock(fd, byte, kind)) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(5));
  }
}
}  // namespace

bool TryLock(int fd, off_t byte, LockKind kind) {
  struct flock fl = Range(byte, Type(kind));
  for (;;) {
    if (::fcntl(fd, F_SETLK, &fl) == 0) return true;
    if (errno != EINTR) return false;
  }
}

void Unlock(int fd, off_t byte) {
  struct flock fl = Range(byte, F_UNLCK);
  while (::fcntl(fd, F_SETLK, &fl) != 0 && errno == EINTR) {
  }
}

pid_t LockHolder(int fd, off_t byte, LockKind kind) {
  struct flock fl = Range(byte, Type(kind));
  if (::fcntl(fd, F_GETLK, &fl) != 0) return 0;
  if (fl.l_type == F_UNLCK) return 0;
  return fl.l_pid > 0 ? fl.l_pid : -1;
}

Status LockWait(int fd, off_t byte, LockKind kind, Clock::time_point deadline, bool stonith,
                std::chrono::milliseconds after_kill, const Logger& log, const std::string& what) {
  if (PollUntil(fd, byte, kind, deadline)) return Status::Ok();
  pid_t holder = LockHolder(fd, byte, kind);
  if (!stonith || holder <= 0 || holder == ::getpid()) {
    return Status::Timeout(what + ": not granted in time" +
                           (holder > 0 ? " (held by pid " + std::to_string(holder) + ")" : std::string()));
  }
  log.Warn(what + ": pid " + std::to_string(holder) + " did not drain in time; STONITH (SIGKILL)");
  if (::kill(holder, SIGKILL) != 0 && errno != ESRCH)
    return Status::FromErrno(errno, what + ": kill " + std::to_string(holder));
  if (PollUntil(fd, byte, kind, Clock::now() + after_kill)) return Status::Ok();
  return Status::Timeout(what + ": still not granted after killing pid " + std::to_string(holder));
}

}  // namespace ferry::store
