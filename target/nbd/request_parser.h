// RequestParser: splits the NBD transmission-phase byte stream into requests
// (28-byte header, plus the payload of NBD_CMD_WRITE), without sockets.
// CheckRequest: decides whether a decoded request may run on an export.
//
// Promise: any bytes in any split are accepted without crashing. A bad magic
// or a WRITE longer than kMaxPayload breaks the stream (kBroken: the caller
// must close, since the framing is lost); every other oddity is a well-framed
// request that CheckRequest answers with an NBD error. Payload memory is one
// reusable buffer (at most kMaxPayload), which callers may swap out.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "target/nbd/handshake.h"
#include "target/nbd/protocol.h"

namespace ferry::nbd {

// A byte buffer that grows but never shrinks and does not zero its contents.
class Buffer {
 public:
  // Makes size() == n; contents are unspecified.
  void Resize(size_t n) {
    if (n > cap_) {
      data_.reset(new char[n]);
      cap_ = n;
    }
    size_ = n;
  }
  char* data() { return data_.get(); }
  const char* data() const { return data_.get(); }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }

 private:
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0;
  size_t size_ = 0;
};

class RequestParser {
 public:
  enum class State { kHeader, kPayload, kReady, kBroken };

  // Consumes up to n bytes; stops as soon as a request is complete (kReady).
  size_t Consume(const uint8_t* p, size_t n);
  // In kPayload: the place for the next payload bytes and how many are missing,
  // so a caller can recv() straight into it; then PayloadFilled(bytes written).
  char* payload_tail(size_t* missing);
  void PayloadFilled(size_t k);

  State state() const { return state_; }
  const Request& request() const { return req_; }
  Buffer& payload() { return payload_; }  // WRITE data when kReady; size() == length
  // After kReady: begin the next request.
  void Next();
  const std::string& error() const { return error_; }

 private:
  State state_ = State::kHeader;
  uint8_t hdr_[kRequestSize];
  size_t hdr_have_ = 0;
  Request req_;
  Buffer payload_;
  size_t payload_have_ = 0;
  std::string error_;
};

// 0 when `r` may run on the negotiated session's export of `size` bytes,
// else the NBD error (EINVAL, ENOSPC, EOVERFLOW, EPERM, ENOTSUP) to answer with.
uint32_t CheckRequest(const Request& r, uint64_t size, const Session& s);

// True for commands that change data (refused on read-only exports).
inline bool IsWriteCommand(uint16_t type) {
  return type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
}

}  // namespace ferry::nbd
