// NBD wire protocol (fixed newstyle) — constants and fixed-size header codecs,
// shared by the gateway (server side) and the target's gateway client.
//
// Promise: pure functions over byte buffers, big-endian on the wire, no I/O, no
// allocation. Decoders validate lengths and magics and return false on garbage.
// Reference: the NBD protocol spec (doc/proto.md of the nbd project).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace ferry::nbd {

// Handshake
constexpr uint64_t kNbdMagic = 0x4e42444d41474943ULL;        // "NBDMAGIC"
constexpr uint64_t kIHaveOpt = 0x49484156454F5054ULL;        // "IHAVEOPT"
constexpr uint64_t kOptReplyMagic = 0x0003e889045565a9ULL;
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFlagFixedNewstyle = 1 << 0;
constexpr uint32_t kClientFlagNoZeroes = 1 << 1;

// Options
constexpr uint32_t kOptExportName = 1;
constexpr uint32_t kOptAbort = 2;
constexpr uint32_t kOptList = 3;
constexpr uint32_t kOptStartTls = 5;
constexpr uint32_t kOptInfo = 6;
constexpr uint32_t kOptGo = 7;
constexpr uint32_t kOptStructuredReply = 8;
constexpr uint32_t kOptListMetaContext = 9;
constexpr uint32_t kOptSetMetaContext = 10;

// Option replies
constexpr uint32_t kRepAck = 1;
constexpr uint32_t kRepServer = 2;
constexpr uint32_t kRepInfo = 3;
constexpr uint32_t kRepMetaContext = 4;
constexpr uint32_t kRepFlagError = 1u << 31;
constexpr uint32_t kRepErrUnsup = kRepFlagError | 1;
constexpr uint32_t kRepErrPolicy = kRepFlagError | 2;
constexpr uint32_t kRepErrInvalid = kRepFlagError | 3;
constexpr uint32_t kRepErrPlatform = kRepFlagError | 4;
constexpr uint32_t kRepErrTlsReqd = kRepFlagError | 5;
constexpr uint32_t kRepErrUnknown = kRepFlagError | 6;
constexpr uint32_t kRepErrShutdown = kRepFlagError | 7;
constexpr uint32_t kRepErrBlockSizeReqd = kRepFlagError | 8;
constexpr uint32_t kRepErrTooBig = kRepFlagError | 9;

// NBD_INFO types
constexpr uint16_t kInfoExport = 0;
constexpr uint16_t kInfoName = 1;
constexpr uint16_t kInfoDescription = 2;
constexpr uint16_t kInfoBlockSize = 3;

// Transmission flags
constexpr uint16_t kTFlagHasFlags = 1 << 0;
constexpr uint16_t kTFlagReadOnly = 1 << 1;
constexpr uint16_t kTFlagSendFlush = 1 << 2;
constexpr uint16_t kTFlagSendFua = 1 << 3;
constexpr uint16_t kTFlagRotational = 1 << 4;
constexpr uint16_t kTFlagSendTrim = 1 << 5;
constexpr uint16_t kTFlagSendWriteZeroes = 1 << 6;
constexpr uint16_t kTFlagSendDf = 1 << 7;
constexpr uint16_t kTFlagCanMultiConn = 1 << 8;
constexpr uint16_t kTFlagSendCache = 1 << 10;
constexpr uint16_t kTFlagSendFastZero = 1 << 11;

// Transmission
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;
constexpr uint32_t kStructuredReplyMagic = 0x668e33ef;
constexpr size_t kRequestSize = 28;
constexpr size_t kSimpleReplySize = 16;
constexpr size_t kStructuredReplyHeaderSize = 20;

constexpr uint16_t kCmdRead = 0;
constexpr uint16_t kCmdWrite = 1;
constexpr uint16_t kCmdDisc = 2;
constexpr uint16_t kCmdFlush = 3;
constexpr uint16_t kCmdTrim = 4;
constexpr uint16_t kCmdCache = 5;
constexpr uint16_t kCmdWriteZeroes = 6;
constexpr uint16_t kCmdBlockStatus = 7;

constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;
constexpr uint16_t kCmdFlagDf = 1 << 2;
constexpr uint16_t kCmdFlagReqOne = 1 << 3;
constexpr uint16_t kCmdFlagFastZero = 1 << 4;

// Structured reply chunk types / flags
constexpr uint16_t kReplyFlagDone = 1 << 0;
constexpr uint16_t kReplyTypeNone = 0;
constexpr uint16_t kReplyTypeOffsetData = 1;
constexpr uint16_t kReplyTypeOffsetHole = 2;
constexpr uint16_t kReplyTypeBlockStatus = 5;
constexpr uint16_t kReplyTypeError = (1 << 15) | 1;
constexpr uint16_t kReplyTypeErrorOffset = (1 << 15) | 2;

// Error values (errno-like, as on the wire)
constexpr uint32_t kEPERM = 1;
constexpr uint32_t kEIO = 5;
constexpr uint32_t kENOMEM = 12;
constexpr uint32_t kEINVAL = 22;
constexpr uint32_t kENOSPC = 28;
constexpr uint32_t kEOVERFLOW = 75;
constexpr uint32_t kENOTSUP = 95;
constexpr uint32_t kESHUTDOWN = 108;

// Largest payload a request may carry/ask for; bigger requests are refused (EINVAL/EOVERFLOW).
constexpr uint32_t kMaxPayload = 32u << 20;

// --- big-endian helpers
inline void Put16(uint8_t* p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
inline void Put32(uint8_t* p, uint32_t v) { for (int i = 3; i >= 0; --i) { p[i] = v & 0xff; v >>= 8; } }
inline void Put64(uint8_t* p, uint64_t v) { for (int i = 7; i >= 0; --i) { p[i] = v & 0xff; v >>= 8; } }
inline uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
inline uint32_t Get32(const uint8_t* p) { uint32_t v = 0; for (int i = 0; i < 4; ++i) v = v << 8 | p[i]; return v; }
inline uint64_t Get64(const uint8_t* p) { uint64_t v = 0; for (int i = 0; i < 8; ++i) v = v << 8 | p[i]; return v; }

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;  // "handle" in older spec text
  uint64_t offset = 0;
  uint32_t length = 0;
};

inline void EncodeRequest(const Request& r, uint8_t out[kRequestSize]) {
  Put32(out, kRequestMagic);
  Put16(out + 4, r.flags);
  Put16(out + 6, r.type);
  Put64(out + 8, r.cookie);
  Put64(out + 16, r.offset);
  Put32(out + 24, r.length);
}
inline bool DecodeRequest(const uint8_t in[kRequestSize], Request* r) {
  if (Get32(in) != kRequestMagic) return false;
  r->flags = Get16(in + 4);
  r->type = Get16(in + 6);
  r->cookie = Get64(in + 8);
  r->offset = Get64(in + 16);
  r->length = Get32(in + 24);
  return true;
}

struct SimpleReply {
  uint32_t error = 0;
  uint64_t cookie = 0;
};
inline void EncodeSimpleReply(const SimpleReply& r, uint8_t out[kSimpleReplySize]) {
  Put32(out, kSimpleReplyMagic);
  Put32(out + 4, r.error);
  Put64(out + 8, r.cookie);
}
inline bool DecodeSimpleReply(const uint8_t in[kSimpleReplySize], SimpleReply* r) {
  if (Get32(in) != kSimpleReplyMagic) return false;
  r->error = Get32(in + 4);
  r->cookie = Get64(in + 8);
  return true;
}

struct StructuredReplyHeader {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint32_t length = 0;
};
inline void EncodeStructuredHeader(const StructuredReplyHeader& h, uint8_t out[kStructuredReplyHeaderSize]) {
  Put32(out, kStructuredReplyMagic);
  Put16(out + 4, h.flags);
  Put16(out + 6, h.type);
  Put64(out + 8, h.cookie);
  Put32(out + 16, h.length);
}
inline bool DecodeStructuredHeader(const uint8_t in[kStructuredReplyHeaderSize], StructuredReplyHeader* h) {
  if (Get32(in) != kStructuredReplyMagic) return false;
  h->flags = Get16(in + 4);
  h->type = Get16(in + 6);
  h->cookie = Get64(in + 8);
  h->length = Get32(in + 16);
  return true;
}

// Export names: "VOL" (epoch 0), "VOL@EPOCH" (decimal: join at that epoch),
// "VOL@+EPOCH" (raise: open at a new epoch above the one the store holds, at
// least EPOCH; the server names the epoch it granted in NBD_INFO_NAME as
// "VOL@GRANTED"), "VOL:SNAP" (read-only snapshot).
struct ExportName {
  std::string volume;
  std::string snapshot;  // empty unless VOL:SNAP
  uint64_t epoch = 0;
  bool raise = false;    // VOL@+EPOCH
};

// Splits an export name into its parts. Checks only the syntax (non-empty
// volume, at most one of '@'/':', EPOCH = 1..20 decimal digits that fit in 64
// bits, optionally after one '+' and then > 0, non-empty SNAP); the store
// validates the names themselves.
// Returns false (and a reason in *why when given) on anything else.
inline bool ParseExportName(const std::string& s, ExportName* out, std::string* why = nullptr) {
  auto fail = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  size_t at = s.find('@'), colon = s.find(':');
  if (at != std::string::npos && colon != std::string::npos) return fail("export name has both '@' and ':'");
  size_t sep = at != std::string::npos ? at : colon;
  std::string vol = s.substr(0, sep);
  if (vol.empty()) return fail("export name has an empty volume name");
  ExportName e;
  e.volume = vol;
  if (sep == std::string::npos) {
    *out = std::move(e);
    return true;
  }
  std::string rest = s.substr(sep + 1);
  if (rest.empty()) return fail(at != std::string::npos ? "empty epoch after '@'" : "empty snapshot after ':'");
  if (colon != std::string::npos) {
    if (rest.find(':') != std::string::npos) return fail("export name has more than one ':'");
    e.snapshot = rest;
  } else {
    if (rest[0] == '+') {
      e.raise = true;
      rest.erase(0, 1);
      if (rest.empty()) return fail("empty epoch after '@+'");
    }
    if (rest.size() > 20) return fail("epoch too large");
    uint64_t v = 0;
    for (char c : rest) {
      if (c < '0' || c > '9') return fail("epoch is not a decimal number");
      uint64_t d = static_cast<uint64_t>(c - '0');
      if (v > (UINT64_MAX - d) / 10) return fail("epoch too large");
      v = v * 10 + d;
    }
    if (e.raise && v == 0) return fail("a raised epoch must be at least 1");
    e.epoch = v;
  }
  *out = std::move(e);
  return true;
}

// The inverse of ParseExportName: "VOL", "VOL@E" (E > 0), "VOL@+E" or "VOL:SNAP".
inline std::string FormatExportName(const ExportName& e) {
  if (!e.snapshot.empty()) return e.volume + ":" + e.snapshot;
  if (e.raise) return e.volume + "@+" + std::to_string(e.epoch);
  if (e.epoch != 0) return e.volume + "@" + std::to_string(e.epoch);
  return e.volume;
}

}  // namespace ferry::nbd
