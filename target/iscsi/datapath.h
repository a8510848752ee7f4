// Socket-free pieces of the full-feature data path: the CmdSN window, Data-In
// segmentation and R2T sequence planning (RFC 7143 §4.2.2, §11.7, §11.8).
//
// Promise: pure bookkeeping with no I/O and no locks (callers serialise).
// CmdWindow keeps MaxCmdSN monotonic and bounds the commands in flight to the
// queue depth. SplitDataIn never emits a PDU larger than the initiator's
// MaxRecvDataSegmentLength and marks the end of every MaxBurstLength sequence
// with F. R2tPlanner never solicits past the expected length, never asks for
// more than MaxBurstLength at once, nor keeps more than MaxOutstandingR2T open.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "target/iscsi/pdu.h"

namespace ferry::iscsi {

class CmdWindow {
 public:
  enum class Verdict { kNow, kAhead, kOutside };
  CmdWindow(uint32_t exp_cmdsn = 0, uint32_t depth = 128) : exp_(exp_cmdsn), depth_(depth ? depth : 1) {}
  Verdict Classify(uint32_t cmdsn) const {
    if (cmdsn == exp_ && inflight_ < depth_) return Verdict::kNow;
    if (SnLess(cmdsn, exp_) || SnLess(max_cmdsn(), cmdsn)) return Verdict::kOutside;
    return Verdict::kAhead;
  }
  // ExpCmdSN moves on; `holds_slot` when the command stays in flight.
  void Advance(bool holds_slot) {
    ++exp_;
    if (holds_slot) ++inflight_;
  }
  void Release() {
    if (inflight_ > 0) --inflight_;
  }
  uint32_t exp_cmdsn() const { return exp_; }
  uint32_t max_cmdsn() const { return exp_ - 1 + (depth_ - inflight_); }
  uint32_t inflight() const { return inflight_; }

 private:
  uint32_t exp_;
  uint32_t depth_;
  uint32_t inflight_ = 0;
};

struct DataInSegment {
  uint32_t offset = 0;
  uint32_t length = 0;
  bool final_in_sequence = false;  // F bit
};
// Splits `total` bytes into Data-In PDUs.
std::vector<DataInSegment> SplitDataIn(uint32_t total, uint32_t mrdsl, uint32_t max_burst);

struct R2tRequest {
  uint32_t offset = 0;
  uint32_t length = 0;
  uint32_t r2tsn = 0;
};

class R2tPlanner {
 public:
  // Solicits [start, edtl) in bursts.
  R2tPlanner() = default;
  R2tPlanner(uint32_t start, uint32_t edtl, uint32_t max_burst, uint32_t max_outstanding)
      : next_(start), end_(edtl), burst_(max_burst ? max_burst : 1),
        max_out_(max_outstanding ? max_outstanding : 1) {}
  // The next R2T to send now, if any may be sent.
  bool Next(R2tRequest* r) {
    if (next_ >= end_ || outstanding_ >= max_out_) return false;
    r->offset = next_;
    r->length = end_ - next_ < burst_ ? end_ - next_ : burst_;
    r->r2tsn = r2tsn_++;
    next_ += r->length;
    ++outstanding_;
    return true;
  }
  // One solicited sequence finished (its Data-Out with F arrived).
  void SequenceDone() {
    if (outstanding_ > 0) --outstanding_;
  }
  uint32_t outstanding() const { return outstanding_; }
  bool all_solicited() const { return next_ >= end_; }

 private:
  uint32_t next_ = 0, end_ = 0, burst_ = 1, max_out_ = 1;
  uint32_t outstanding_ = 0;
  uint32_t r2tsn_ = 0;
};

}  // namespace ferry::iscsi
