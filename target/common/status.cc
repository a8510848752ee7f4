#include "target/common/status.h"

#include <cerrno>
#include <cstring>

namespace ferry {

const char* CodeName(Status::Code c) {
  switch (c) {
    case Status::Code::kOk: return "ok";
    case Status::Code::kInvalidArgument: return "invalid argument";
    case Status::Code::kNotFound: return "not found";
    case Status::Code::kAlreadyExists: return "already exists";
    case Status::Code::kConflict: return "conflict";
    case Status::Code::kPermissionDenied: return "permission denied";
    case Status::Code::kFenced: return "fenced";
    case Status::Code::kNoSpace: return "no space";
    case Status::Code::kIoError: return "I/O error";
    case Status::Code::kTimeout: return "timeout";
    case Status::Code::kUnavailable: return "unavailable";
    case Status::Code::kInternal: return "internal error";
  }
  return "unknown";
}

Status Status::FromErrno(int err, const std::string& what) {
  std::string m = what + ": " + std::strerror(err);
  switch (err) {
    case ENOENT: return NotFound(m);
    case EEXIST: return AlreadyExists(m);
    case ENOSPC: case EDQUOT: return NoSpace(m);
    case EACCES: case EPERM: return PermissionDenied(m);
    case EINVAL: return InvalidArgument(m);
    case ETIMEDOUT: return Timeout(m);
    case ECONNREFUSED: case ECONNRESET: case EPIPE: case EHOSTUNREACH: case ENETUNREACH:
      return Unavailable(m);
    default: return IoError(m);
  }
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code_)) + ": " + msg_;
}

int Status::http_status() const {
  switch (code_) {
    case Code::kOk: return 200;
    case Code::kInvalidArgument: return 400;
    case Code::kNotFound: return 404;
    case Code::kAlreadyExists: case Code::kConflict: return 409;
    case Code::kPermissionDenied: return 403;
    case Code::kFenced: return 409;
    case Code::kNoSpace: return 507;
    case Code::kTimeout: return 504;
    case Code::kUnavailable: return 503;
    case Code::kIoError: case Code::kInternal: return 500;
  }
  return 500;
}

}  // namespace ferry
