// ResponseParser: reads one HTTP/1.x response from bytes fed in pieces.
//
// Promise: no sockets and no exceptions. Feed() takes any split of the byte
// stream and consumes only the bytes of this one response (a reply never
// spans further). It understands the status line, Content-Length, chunked
// Transfer-Encoding (with chunk extensions and trailers), bodies delimited by
// the connection's close (FeedEof), interim 1xx responses, and responses with
// no body (HEAD, 204, 304). Anything else — another transfer coding, a
// malformed line, conflicting lengths, a head over 64 KiB, a body over
// 256 MiB — ends in kError with a one-line reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ferry::httpload {

class ResponseParser {
 public:
  enum class State { kNeedMore, kDone, kError };

  explicit ResponseParser(bool head_request = false) : head_request_(head_request) {}

  // Consumes bytes of the response from data[0..n); returns how many it took
  // (fewer than n only once the state is kDone or kError).
  size_t Feed(const char* data, size_t n);
  // The peer closed the connection: completes a close-delimited body, or
  // ends in kError when the response was incomplete.
  void FeedEof();

  State state() const { return state_; }
  const std::string& error() const { return error_; }
  // True once any byte was fed: a close before that is a stale keep-alive
  // connection, not a broken response.
  bool started() const { return started_; }
  int status() const { return status_; }
  const std::string& body() const { return body_; }
  // False when the server said `Connection: close`, spoke HTTP/1.0 without
  // keep-alive, or delimited the body by closing.
  bool keep_alive() const { return keep_alive_; }

  static constexpr size_t kMaxHead = 64 * 1024;
  static constexpr size_t kMaxBody = 256u * 1024 * 1024;

 private:
  enum class Phase { kHead, kFixedBody, kChunkSize, kChunkData, kChunkDataEnd, kTrailers, kUntilClose };

  size_t FeedHead(const char* data, size_t n);
  size_t FeedLine(const char* data, size_t n);  // fills line_ up to '\n'
  void ParseHead();
  void OnLine();  // a complete line_ in kChunkSize, kChunkDataEnd or kTrailers
  void AppendBody(const char* data, size_t n);
  void Fail(const std::string& why);
  void Finish() { state_ = State::kDone; }

  bool head_request_;
  State state_ = State::kNeedMore;
  Phase phase_ = Phase::kHead;
  bool started_ = false;
  bool line_complete_ = false;
  std::string head_;
  std::string line_;
  std::string body_;
  std::string error_;
  int status_ = 0;
  bool keep_alive_ = true;
  uint64_t remaining_ = 0;
};

}  // namespace ferry::httpload
