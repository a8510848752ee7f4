// Status and Result<T>: errors as values across module boundaries.
//
// Promise: a Status is either ok() or carries a Code and a human-readable
// message. Result<T> holds either a T or a non-ok Status. Nothing here throws.
// Codes map onto HTTP statuses (http_status()) so thin handlers can render them.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace ferry {

class Status {
 public:
  enum class Code {
    kOk = 0,
    kInvalidArgument,   // bad input from a caller (400)
    kNotFound,          // named thing does not exist (404)
    kAlreadyExists,     // create of an existing thing with different parameters (409)
    kConflict,          // state does not allow the operation now (409)
    kPermissionDenied,  // auth failed (401/403)
    kFenced,            // write from an older epoch refused (NBD EPERM)
    kNoSpace,           // ENOSPC
    kIoError,           // EIO from the device / file system
    kTimeout,           // a wait expired
    kUnavailable,       // peer unreachable / connection lost (retryable)
    kInternal,          // a bug or an impossible state (500)
  };

  Status() = default;
  Status(Code code, std::string msg) : code_(code), msg_(std::move(msg)) {}

  static Status Ok() { return {}; }
  static Status InvalidArgument(std::string m) { return {Code::kInvalidArgument, std::move(m)}; }
  static Status NotFound(std::string m) { return {Code::kNotFound, std::move(m)}; }
  static Status AlreadyExists(std::string m) { return {Code::kAlreadyExists, std::move(m)}; }
  static Status Conflict(std::string m) { return {Code::kConflict, std::move(m)}; }
  static Status PermissionDenied(std::string m) { return {Code::kPermissionDenied, std::move(m)}; }
  static Status Fenced(std::string m) { return {Code::kFenced, std::move(m)}; }
  static Status NoSpace(std::string m) { return {Code::kNoSpace, std::move(m)}; }
  static Status IoError(std::string m) { return {Code::kIoError, std::move(m)}; }
  static Status Timeout(std::string m) { return {Code::kTimeout, std::move(m)}; }
  static Status Unavailable(std::string m) { return {Code::kUnavailable, std::move(m)}; }
  static Status Internal(std::string m) { return {Code::kInternal, std::move(m)}; }
  // Builds an IoError/NoSpace/... from an errno value, prefixing `what`.
  static Status FromErrno(int err, const std::string& what);

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return msg_; }
  std::string ToString() const;
  // HTTP status a handler should answer with for this Status.
  int http_status() const;

 private:
  Code code_ = Code::kOk;
  std::string msg_;
};

const char* CodeName(Status::Code c);

template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status s) : v_(std::move(s)) {}     // NOLINT: must be non-ok

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ferry

#define FERRY_RETURN_IF_ERROR(expr)      \
  do {                                   \
    ::ferry::Status _st = (expr);        \
    if (!_st.ok()) return _st;           \
  } while (0)
