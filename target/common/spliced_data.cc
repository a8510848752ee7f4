#include "target/common/spliced_data.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ferry {
namespace {

void ClosePipe(PipePool::Pipe* p) {
  if (p->rd >= 0) ::close(p->rd);
  if (p->wr >= 0) ::close(p->wr);
  p->rd = p->wr = -1;
}

// A pipe that holds at least max_payload bytes.
Result<PipePool::Pipe> MakePipe(size_t max_payload) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return Status::FromErrno(errno, "pipe2");
  PipePool::Pipe p{fds[0], fds[1], 0};
  int want = static_cast<int>(max_payload);
  int got = ::fcntl(p.wr, F_SETPIPE_SZ, want);
  if (got < 0) {
    Status st = Status::FromErrno(errno, "F_SETPIPE_SZ " + std::to_string(want));
    ClosePipe(&p);
    return st;
  }
  p.capacity = static_cast<size_t>(got);
  return p;
}

}  // namespace

PipePool::PipePool(size_t max_payload, size_t max_pooled) : max_payload_(max_payload), max_pooled_(max_pooled) {}

PipePool::~PipePool() {
  for (auto& p : free_) ClosePipe(&p);
}

Result<PipePool::Pipe> PipePool::Take() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!free_.empty()) {
      Pipe p = free_.back();
      free_.pop_back();
      return p;
    }
  }
  return MakePipe(max_payload_);
}

void PipePool::Give(Pipe p) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (free_.size() < max_pooled_) {
      free_.push_back(p);
      return;
    }
  }
  ClosePipe(&p);
}

Result<std::unique_ptr<SplicedData>> SplicedData::Create(size_t max_len, std::shared_ptr<PipePool> pool) {
  Result<PipePool::Pipe> p = pool && max_len <= pool->max_payload() ? pool->Take() : MakePipe(max_len);
  if (!p.ok()) return p.status();
  if (p->capacity < max_len) {
    PipePool::Pipe bad = *p;
    ClosePipe(&bad);
    return Status::InvalidArgument("pipe too small for " + std::to_string(max_len) + " bytes");
  }
  return std::unique_ptr<SplicedData>(new SplicedData(*p, std::move(pool)));
}

SplicedData::~SplicedData() { Release(); }

void SplicedData::Release() {
  if (pipe_.rd < 0) return;
  if (in_pipe_ == 0 && pool_) {
    pool_->Give(pipe_);
    pipe_ = {};
    return;
  }
  ClosePipe(&pipe_);
}

Status SplicedData::Append(const char* p, size_t n) {
  while (n > 0 && overflow_.empty()) {
    ssize_t w = ::write(pipe_.wr, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // pipe full
    if (w <= 0) return Status::FromErrno(w < 0 ? errno : EIO, "write to pipe");
    p += w;
    n -= static_cast<size_t>(w);
    in_pipe_ += static_cast<size_t>(w);
  }
  overflow_.insert(overflow_.end(), p, p + n);
  return Status::Ok();
}

// Receives n bytes into the overflow buffer.
Status SplicedData::Overflow(int sock, size_t n) {
  size_t at = overflow_.size();
  overflow_.resize(at + n);
  while (n > 0) {
    ssize_t r = ::recv(sock, overflow_.data() + at, n, MSG_DONTWAIT);
    if (r > 0) {
      at += static_cast<size_t>(r);
      n -= static_cast<size_t>(r);
      continue;
    }
    Status st;
    if (r == 0) {
      st = Status::Unavailable("connection closed in read payload");
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      st = Status::FromErrno(errno, "recv");
    } else {
      struct pollfd pfd = {sock, POLLIN, 0};
      if (::poll(&pfd, 1, 1000) >= 0 || errno == EINTR) continue;
      st = Status::FromErrno(errno, "poll");
    }
    overflow_.resize(at);  // hold only what arrived
    return st;
  }
  return Status::Ok();
}

Status SplicedData::FillFrom(int sock, size_t n) {
  // Non-blocking on both ends, waiting in poll(): a blocking splice would
  // wait forever on a full pipe (nobody else drains it), and could not be
  // woken by a shutdown() of the socket.
  bool polled = false;
  while (n > 0) {
    ssize_t r = ::splice(sock, nullptr, pipe_.wr, nullptr, n, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (r > 0) {
      n -= static_cast<size_t>(r);
      in_pipe_ += static_cast<size_t>(r);
      polled = false;
      continue;
    }
    if (r == 0) return Status::Unavailable("connection closed in read payload");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Status::FromErrno(errno, "splice from socket");
    if (polled || !overflow_.empty()) {
      // The socket has data and the splice would still block: the pipe's
      // slots are used up (many small socket buffers). The rest is copied.
      return Overflow(sock, n);
    }
    struct pollfd pfd = {sock, POLLIN, 0};
    int pr = ::poll(&pfd, 1, 1000);
    if (pr < 0 && errno != EINTR) return Status::FromErrno(errno, "poll");
    if (pr > 0) {
      if (pfd.revents & (POLLERR | POLLNVAL)) return Status::Unavailable("connection failed in read payload");
      polled = !(pfd.revents & POLLHUP);
    }
  }
  return Status::Ok();
}

ssize_t SplicedData::SpliceTo(int fd, size_t n, bool more) {
  if (in_pipe_ > 0) {
    if (n > in_pipe_) n = in_pipe_;
    for (;;) {
      ssize_t r = ::splice(pipe_.rd, nullptr, fd, nullptr, n,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (more || n < size() ? SPLICE_F_MORE : 0));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
      in_pipe_ -= static_cast<size_t>(r);
      return r;
    }
  }
  size_t rest = overflow_.size() - overflow_off_;
  if (n > rest) n = rest;
  if (n == 0) return 0;
  for (;;) {
    ssize_t r = ::send(fd, overflow_.data() + overflow_off_, n, MSG_DONTWAIT | MSG_NOSIGNAL | (more ? MSG_MORE : 0));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -errno;
    overflow_off_ += static_cast<size_t>(r);
    return r;
  }
}

Status SplicedData::CopyOut(char* dst, size_t n) {
  if (n > size()) return Status::InvalidArgument("pipe holds fewer bytes than asked for");
  while (n > 0 && in_pipe_ > 0) {
    ssize_t r = ::read(pipe_.rd, dst, std::min(n, in_pipe_));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return Status::FromErrno(r < 0 ? errno : EIO, "read from pipe");
    dst += r;
    n -= static_cast<size_t>(r);
    in_pipe_ -= static_cast<size_t>(r);
  }
  std::memcpy(dst, overflow_.data() + overflow_off_, n);
  overflow_off_ += n;
  return Status::Ok();
}

Status SplicedData::Reset() {
  overflow_.clear();
  overflow_off_ = 0;
  if (in_pipe_ == 0) return Status::Ok();
  size_t cap = pipe_.capacity;
  ClosePipe(&pipe_);
  in_pipe_ = 0;
  auto p = MakePipe(cap);
  if (!p.ok()) return p.status();
  pipe_ = *p;
  return Status::Ok();
}

}  // namespace ferry
