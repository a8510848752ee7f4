// file_lock: POSIX fcntl byte-range locks with timeouts and same-host STONITH.
//
// Promises: every wait is bounded by its deadline; LockWait polls with a short
// back-off (fcntl has no timed wait); on expiry with `stonith`, the process
// F_GETLK names as the holder is sent SIGKILL and the lock is awaited for a
// further bounded time. POSIX locks belong to the process: callers must keep
// one fd per locked file per process and never close another fd of that file.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

#include "target/common/logger.h"
#include "target/common/status.h"

namespace ferry::store {

using Clock = std::chrono::steady_clock;

enum class LockKind { kShared, kExclusive };

// One attempt, no wait. True when granted.
bool TryLock(int fd, off_t byte, LockKind kind);
void Unlock(int fd, off_t byte);
// PID of another process holding a lock that conflicts with `kind`, or 0.
pid_t LockHolder(int fd, off_t byte, LockKind kind);
// Waits until granted or `deadline`. With stonith, on expiry kills the holder
// (SIGKILL) and waits up to `after_kill` more. `what` names the lock in errors.
Status LockWait(int fd, off_t byte, LockKind kind, Clock::time_point deadline, bool stonith,
                std::chrono::milliseconds after_kill, const Logger& log, const std::string& what);

}  // namespace ferry::store
