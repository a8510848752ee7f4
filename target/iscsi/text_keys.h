// Login/Text key=value data (RFC 7143 §6, §13) and operational negotiation.
//
// Promise: ParseTextKeys accepts exactly "key=value" strings separated by NUL
// and reports anything else as InvalidArgument. KeyNegotiator answers every
// operational key an initiator offers with the RFC result function (min, max,
// OR, AND, list choice), "NotUnderstood" for unknown keys and "Reject" for
// malformed or out-of-range values; Finish() yields the session's parameters
// with RFC defaults for anything not negotiated. No sockets, no globals.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "target/common/status.h"
#include "target/iscsi/portal.h"

namespace ferry::iscsi {

using KeyValues = std::vector<std::pair<std::string, std::string>>;

constexpr size_t kMaxKeyLen = 63;
constexpr size_t kMaxValueLen = 8192;

Result<KeyValues> ParseTextKeys(const uint8_t* data, size_t len);
// "k=v\0k=v\0" (every pair NUL-terminated).
std::string SerializeTextKeys(const KeyValues& kv);

// Numbers: decimal, or 0x-hex. nullopt for anything else or > UINT32_MAX.
std::optional<uint32_t> ParseNumber(const std::string& s);

// Result functions (RFC 7143 §6.2): exposed for unit tests.
inline uint32_t NegMin(uint32_t a, uint32_t b) { return a < b ? a : b; }
inline uint32_t NegMax(uint32_t a, uint32_t b) { return a > b ? a : b; }
inline bool NegOr(bool a, bool b) { return a || b; }
inline bool NegAnd(bool a, bool b) { return a && b; }
// First value of the offered comma list that `supported` contains; nullopt if none.
std::optional<std::string> NegChoose(const std::string& offered, const std::vector<std::string>& supported);

// The session-wide operational parameters after negotiation.
struct SessionParams {
  uint32_t initiator_mrdsl = 8192;   // the initiator's MaxRecvDataSegmentLength: what we may send
  uint32_t target_mrdsl = 8192;      // ours: what we accept
  uint32_t max_burst_length = 262144;
  uint32_t first_burst_length = 65536;
  uint32_t max_outstanding_r2t = 1;
  bool initial_r2t = true;
  bool immediate_data = true;
  bool header_digest = false;
  bool data_digest = false;
  bool data_pdu_in_order = true;
  bool data_sequence_in_order = true;
  uint32_t default_time2wait = 2;
  uint32_t default_time2retain = 20;
  uint32_t error_recovery_level = 0;
  uint32_t max_connections = 1;
};

class KeyNegotiator {
 public:
  explicit KeyNegotiator(const NegotiationLimits& limits);
  // True when `key` is an operational key this class handles (or an unknown
  // one it answers NotUnderstood). Login keys (InitiatorName, TargetName,
  // SessionType, AuthMethod, CHAP_*) are not handled here.
  static bool IsLoginKey(const std::string& key);
  // True for the operational keys of RFC 7143 §13 that this class negotiates.
  static bool IsOperationalKey(const std::string& key);
  // Processes one offered key; appends the answer (if one is due) to `reply`.
  void Offer(const std::string& key, const std::string& value, KeyValues* reply);
  // Our declarations the initiator must hear once in the operational stage.
  void AppendDeclarations(KeyValues* reply);
  bool declared() const { return declared_; }
  SessionParams Finish() const;

 private:
  NegotiationLimits lim_;
  SessionParams p_;
  bool declared_ = false;
  std::vector<std::string> seen_;
};

}  // namespace ferry::iscsi
