// iSCSI PDU layout (RFC 7143 §11): the 48-byte Basic Header Segment, opcodes,
// field accessors, and a socket-free framer that cuts a byte stream into PDUs.
//
// Promise: PduFramer never reads past what it was given, never allocates more
// than its limits allow, and reports a malformed stream as an error value
// (never a crash). Digests are checked when enabled. Outgoing PDUs are built
// with OutPdu (header + a pointer to data owned by the caller).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ferry {
class SplicedData;
}

namespace ferry::iscsi {

constexpr size_t kBhsLen = 48;
constexpr uint32_t kReservedTag = 0xffffffffu;

// Opcodes (low 6 bits of byte 0).
enum Opcode : uint8_t {
  kOpNopOut = 0x00,
  kOpScsiCmd = 0x01,
  kOpTmfReq = 0x02,
  kOpLoginReq = 0x03,
  kOpTextReq = 0x04,
  kOpDataOut = 0x05,
  kOpLogoutReq = 0x06,
  kOpSnack = 0x10,
  kOpNopIn = 0x20,
  kOpScsiResp = 0x21,
  kOpTmfResp = 0x22,
  kOpLoginResp = 0x23,
  kOpTextResp = 0x24,
  kOpDataIn = 0x25,
  kOpLogoutResp = 0x26,
  kOpR2t = 0x31,
  kOpAsync = 0x32,
  kOpReject = 0x3f,
};

// Reject reasons (RFC 7143 §11.17.1).
enum RejectReason : uint8_t {
  kRejectDataDigest = 0x02,
  kRejectSnack = 0x03,
  kRejectProtocolError = 0x04,
  kRejectCmdNotSupported = 0x05,
  kRejectImmediateCmd = 0x06,
  kRejectTaskInProgress = 0x07,
  kRejectInvalidDataAck = 0x08,
  kRejectInvalidPduField = 0x09,
  kRejectOutOfResources = 0x0a,
  kRejectWaitingForLogout = 0x0c,
};

inline uint16_t Get16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t Get24(const uint8_t* p) { return uint32_t(p[0]) << 16 | uint32_t(p[1]) << 8 | p[2]; }
inline uint32_t Get32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline uint64_t Get64(const uint8_t* p) { return uint64_t(Get32(p)) << 32 | Get32(p + 4); }
inline void Put16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void Put24(uint8_t* p, uint32_t v) { p[0] = uint8_t(v >> 16); p[1] = uint8_t(v >> 8); p[2] = uint8_t(v); }
inline void Put32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}
inline void Put64(uint8_t* p, uint64_t v) { Put32(p, uint32_t(v >> 32)); Put32(p + 4, uint32_t(v)); }

// Serial number arithmetic (RFC 1982, 32 bits): a < b.
inline bool SnLess(uint32_t a, uint32_t b) { return a != b && int32_t(a - b) < 0; }
inline bool SnLessEq(uint32_t a, uint32_t b) { return a == b || SnLess(a, b); }

// Read-only view of a BHS.
class BhsView {
 public:
  explicit BhsView(const uint8_t* b) : b_(b) {}
  const uint8_t* raw() const { return b_; }
  uint8_t opcode() const { return b_[0] & 0x3f; }
  bool immediate() const { return b_[0] & 0x40; }
  bool final_bit() const { return b_[1] & 0x80; }
  uint8_t flags() const { return b_[1]; }
  uint8_t total_ahs_len() const { return b_[4]; }     // in 4-byte words
  uint32_t data_len() const { return Get24(b_ + 5); }
  uint64_t lun_field() const { return Get64(b_ + 8); }
  uint32_t itt() const { return Get32(b_ + 16); }
  uint32_t u32(size_t off) const { return Get32(b_ + off); }
  uint16_t u16(size_t off) const { return Get16(b_ + off); }
  uint8_t u8(size_t off) const { return b_[off]; }

 private:
  const uint8_t* b_;
};

// SAM LUN field <-> LUN number (peripheral and flat addressing, SAM-5 §4.7).
uint64_t DecodeLun(uint64_t field);
uint64_t EncodeLun(uint64_t lun);

// A PDU parsed in place: pointers stay valid until the framer's next Feed/Next.
struct PduView {
  const uint8_t* bhs = nullptr;
  const uint8_t* ahs = nullptr;
  size_t ahs_len = 0;
  const uint8_t* data = nullptr;
  size_t data_len = 0;
  bool data_digest_error = false;  // data digest enabled and mismatched (header is good)
  BhsView h() const { return BhsView(bhs); }
};

struct FramerLimits {
  size_t max_data_len = 8192;       // our MaxRecvDataSegmentLength (login: 8192)
  bool header_digest = false;
  bool data_digest = false;
};

// Cuts a byte stream into PDUs. Feed bytes with Buffer()/Commit(), then call
// Next() until it returns kNeedMore.
class PduFramer {
 public:
  enum class Result { kPdu, kNeedMore, kError };
  explicit PduFramer(size_t initial_capacity = 65536);

  void set_limits(const FramerLimits& l) { limits_ = l; }
  const FramerLimits& limits() const { return limits_; }

  // Space to read into (at least `min_free` bytes); then Commit(n) what was read.
  uint8_t* Buffer(size_t min_free, size_t* avail);
  void Commit(size_t n) { end_ += n; }
  // Convenience for tests and fuzzers: copy bytes in.
  void Feed(const uint8_t* p, size_t n);

  // kPdu fills *out (valid until the next Buffer/Feed/Next call). kError sets
  // error() and stays in error: the connection must be dropped.
  Result Next(PduView* out);
  const std::string& error() const { return error_; }
  size_t buffered() const { return end_ - start_; }

 private:
  std::vector<uint8_t> buf_;
  size_t start_ = 0, end_ = 0;
  FramerLimits limits_;
  std::string error_;
};

inline size_t Pad4(size_t n) { return (n + 3) & ~size_t(3); }

// An outgoing PDU: a BHS built in place, data pointing at caller-owned bytes.
struct OutPdu {
  uint8_t bhs[kBhsLen] = {};
  uint8_t hd[4] = {};        // header digest (filled when sending)
  uint8_t tail[8] = {};      // padding + data digest (filled when sending)
  const uint8_t* data = nullptr;
  size_t data_len = 0;
  bool carries_status = false;  // advances StatSN when sent
  // The data_len bytes of data come from this pipe instead of `data` (only
  // without DataDigest; the pipe's owner is kept alive by the sender).
  SplicedData* spliced = nullptr;
  void set_spliced(SplicedData* d, size_t n) { data = nullptr; spliced = d; data_len = n; Put24(bhs + 5, uint32_t(n)); }
  void set_opcode(uint8_t op) { bhs[0] = op; }
  void set_flags(uint8_t f) { bhs[1] = f; }
  void set_data(const uint8_t* p, size_t n) { data = p; data_len = n; Put24(bhs + 5, uint32_t(n)); }
  void set_itt(uint32_t v) { Put32(bhs + 16, v); }
  void set_u32(size_t off, uint32_t v) { Put32(bhs + off, v); }
  void set_u16(size_t off, uint16_t v) { Put16(bhs + off, v); }
  void set_lun(uint64_t lun) { Put64(bhs + 8, EncodeLun(lun)); }
};

// Encodes an OutPdu into contiguous bytes (used by tests and the login path).
std::vector<uint8_t> Encode(const OutPdu& p, bool header_digest, bool data_digest);

}  // namespace ferry::iscsi
