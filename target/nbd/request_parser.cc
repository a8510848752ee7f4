#include "target/nbd/request_parser.h"

#include <algorithm>
#include <cstring>

namespace ferry::nbd {

size_t RequestParser::Consume(const uint8_t* p, size_t n) {
  size_t used = 0;
  while (used < n) {
    if (state_ == State::kHeader) {
      size_t take = std::min(n - used, kRequestSize - hdr_have_);
      std::memcpy(hdr_ + hdr_have_, p + used, take);
      hdr_have_ += take;
      used += take;
      if (hdr_have_ < kRequestSize) break;
      hdr_have_ = 0;
      if (!DecodeRequest(hdr_, &req_)) {
        state_ = State::kBroken;
        error_ = "bad request magic";
        return used;
      }
      if (req_.type == kCmdWrite) {
        if (req_.length > kMaxPayload) {
          state_ = State::kBroken;
          error_ = "write of " + std::to_string(req_.length) + " bytes exceeds the maximum payload";
          return used;
        }
        payload_.Resize(req_.length);
        payload_have_ = 0;
        state_ = req_.length == 0 ? State::kReady : State::kPayload;
      } else {
        payload_.Resize(0);
        state_ = State::kReady;
      }
      if (state_ == State::kReady) break;
    } else if (state_ == State::kPayload) {
      size_t take = std::min(n - used, payload_.size() - payload_have_);
      std::memcpy(payload_.data() + payload_have_, p + used, take);
      used += take;
      PayloadFilled(take);
      if (state_ == State::kReady) break;
    } else {
      break;  // kReady (caller must Next()) or kBroken
    }
  }
  return used;
}

char* RequestParser::payload_tail(size_t* missing) {
  if (state_ != State::kPayload) {
    *missing = 0;
    return nullptr;
  }
  *missing = payload_.size() - payload_have_;
  return payload_.data() + payload_have_;
}

void RequestParser::PayloadFilled(size_t k) {
  if (state_ != State::kPayload) return;
  payload_have_ = std::min(payload_.size(), payload_have_ + k);
  if (payload_have_ == payload_.size()) state_ = State::kReady;
}

void RequestParser::Next() {
  if (state_ == State::kReady) state_ = State::kHeader;
}

uint32_t CheckRequest(const Request& r, uint64_t size, const Session& s) {
  const bool ro = s.tflags & kTFlagReadOnly;
  uint16_t allowed = 0;
  switch (r.type) {
    case kCmdRead:
      allowed = s.structured ? kCmdFlagDf : 0;
      break;
    case kCmdWrite:
    case kCmdTrim:
      allowed = kCmdFlagFua;
      break;
    case kCmdWriteZeroes:
      allowed = kCmdFlagFua | kCmdFlagNoHole;
      break;
    case kCmdFlush:
    case kCmdCache:
    case kCmdDisc:
      allowed = kCmdFlagFua;
      break;
    case kCmdBlockStatus:
      if (!s.base_allocation) return kEINVAL;
      allowed = kCmdFlagReqOne;
      break;
    default:
      return kEINVAL;
  }
  if (r.flags & ~allowed) return kEINVAL;
  if (r.type == kCmdFlush || r.type == kCmdDisc) return 0;
  if (IsWriteCommand(r.type) && ro) return kEPERM;
  if (r.type == kCmdRead && r.length > kMaxPayload) return kEOVERFLOW;
  if (r.length == 0) return kEINVAL;
  if (r.offset > size || r.length > size - r.offset) {
    return IsWriteCommand(r.type) ? kENOSPC : kEINVAL;
  }
  return 0;
}

}  // namespace ferry::nbd
