// SplicedData: the payload of one read held in a kernel pipe instead of user
// memory, so it can move from the gateway's socket to the initiator's socket
// with splice(2) and never be copied by this process.
//
// Promise:
//  - A SplicedData owns one pipe of at least the largest payload it accepts.
//    A payload that arrives in so many small socket buffers that the pipe's
//    slots run out before its bytes do is still taken whole: the rest goes
//    to a memory overflow (copied, the rare path) and leaves after the pipe.
//  - FillFrom() moves exactly n bytes from a socket into it (or fails: the
//    connection is then unusable, a partial payload is held and must be
//    Reset() before it is filled again); it waits in poll(), so a shutdown()
//    of the socket wakes it. Append() adds bytes already in memory.
//  - SpliceTo() moves bytes out in order without blocking (0 = try again when
//    the destination is writable). CopyOut() reads them into memory instead.
//  - size() is the number of bytes held now. Not thread-safe: one owner at a
//    time (the reader that fills it, then the sender that drains it).
//  - A PipePool keeps empty pipes for reuse; a SplicedData given back with
//    bytes still in it closes its pipe instead. All fds are closed on
//    destruction; nothing is global.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "target/common/status.h"

namespace ferry {

class PipePool {
 public:
  // Pipes hold max_payload bytes (the default is Linux's default
  // pipe-max-size, settable without privileges); at most
  // max_pooled empty pipes are kept.
  explicit PipePool(size_t max_payload = 1 << 20, size_t max_pooled = 64);
  ~PipePool();
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // An empty pipe: {read fd, write fd, capacity}. Error when pipes cannot be
  // made or sized (pipe-max-size, or the per-user pipe memory limit).
  struct Pipe {
    int rd = -1;
    int wr = -1;
    size_t capacity = 0;
  };
  Result<Pipe> Take();
  void Give(Pipe p);  // p must be empty

  size_t max_payload() const { return max_payload_; }

 private:
  size_t max_payload_;
  size_t max_pooled_;
  std::mutex mu_;
  std::vector<Pipe> free_;
};

class SplicedData {
 public:
  // A pipe able to hold `max_len` bytes, from `pool` (may be null).
  static Result<std::unique_ptr<SplicedData>> Create(size_t max_len, std::shared_ptr<PipePool> pool);
  ~SplicedData();
  SplicedData(const SplicedData&) = delete;
  SplicedData& operator=(const SplicedData&) = delete;

  size_t size() const { return in_pipe_ + overflow_.size() - overflow_off_; }
  size_t capacity() const { return pipe_.capacity; }

  Status Append(const char* p, size_t n);
  Status FillFrom(int sock, size_t n);
  // >0 bytes moved, 0 = destination full (EAGAIN), <0 = -errno.
  ssize_t SpliceTo(int fd, size_t n, bool more);
  Status CopyOut(char* dst, size_t n);
  // Empties it (a fresh pipe if bytes were left).
  Status Reset();

 private:
  SplicedData(PipePool::Pipe p, std::shared_ptr<PipePool> pool) : pipe_(p), pool_(std::move(pool)) {}
  void Release();
  Status Overflow(int sock, size_t n);

  PipePool::Pipe pipe_;
  std::shared_ptr<PipePool> pool_;
  size_t in_pipe_ = 0;
  std::vector<char> overflow_;  // bytes after the pipe's (see Promise)
  size_t overflow_off_ = 0;
};

}  // namespace ferry
