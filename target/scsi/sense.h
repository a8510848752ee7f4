// Sense: what a CHECK CONDITION reports, and its encoding in fixed (0x70) or
// descriptor (0x72) format (SPC-4 4.5).
//
// Promise: a Sense value is a plain description (key, ASC/ASCQ, optional
// INFORMATION and SENSE KEY SPECIFIC field pointer); Encode() never fails.
#pragma once

#include <cstdint>
#include <vector>

namespace ferry::scsi {

namespace sk {
constexpr uint8_t kNoSense = 0x0;
constexpr uint8_t kNotReady = 0x2;
constexpr uint8_t kMediumError = 0x3;
constexpr uint8_t kHardwareError = 0x4;
constexpr uint8_t kIllegalRequest = 0x5;
constexpr uint8_t kUnitAttention = 0x6;
constexpr uint8_t kDataProtect = 0x7;
constexpr uint8_t kAbortedCommand = 0xb;
constexpr uint8_t kMiscompare = 0xe;
}  // namespace sk

struct Sense {
  uint8_t key = sk::kNoSense;
  uint8_t asc = 0;
  uint8_t ascq = 0;
  bool has_info = false;
  uint64_t info = 0;
  // SENSE KEY SPECIFIC, field pointer form (ILLEGAL REQUEST).
  bool has_sks = false;
  bool sks_cdb = true;       // C/D: error is in the CDB (else the parameter list)
  int8_t sks_bit = -1;       // bit pointer, -1 = none
  uint16_t sks_field = 0;    // byte offset

  std::vector<uint8_t> Encode(bool descriptor) const;

  // Common conditions.
  static Sense Make(uint8_t key, uint8_t asc, uint8_t ascq) {
    Sense s; s.key = key; s.asc = asc; s.ascq = ascq; return s;
  }
  static Sense InvalidOpcode() { return Make(sk::kIllegalRequest, 0x20, 0x00); }
  static Sense InvalidFieldInCdb(uint16_t byte, int8_t bit = -1) {
    Sense s = Make(sk::kIllegalRequest, 0x24, 0x00);
    s.has_sks = true; s.sks_cdb = true; s.sks_field = byte; s.sks_bit = bit; return s;
  }
  static Sense InvalidFieldInParam(uint16_t byte, int8_t bit = -1) {
    Sense s = Make(sk::kIllegalRequest, 0x26, 0x00);
    s.has_sks = true; s.sks_cdb = false; s.sks_field = byte; s.sks_bit = bit; return s;
  }
  static Sense ParamListLengthError() { return Make(sk::kIllegalRequest, 0x1a, 0x00); }
  static Sense LbaOutOfRange() { return Make(sk::kIllegalRequest, 0x21, 0x00); }
  static Sense LunNotSupported() { return Make(sk::kIllegalRequest, 0x25, 0x00); }
  static Sense WriteProtected() { return Make(sk::kDataProtect, 0x27, 0x00); }
  static Sense Miscompare(uint64_t offset) {
    Sense s = Make(sk::kMiscompare, 0x1d, 0x00); s.has_info = true; s.info = offset; return s;
  }
};

// ASC/ASCQ pairs used for unit attentions (sense key UNIT ATTENTION).
enum class UnitAttention : uint16_t {
  kPowerOnReset = 0x2900,
  kBusDeviceReset = 0x2903,        // LUN reset / target reset function occurred
  kModeParametersChanged = 0x2a01,
  kReservationsPreempted = 0x2a03,
  kReservationsReleased = 0x2a04,
  kRegistrationsPreempted = 0x2a05,
  kCapacityChanged = 0x2a09,
  kCommandsClearedByAnother = 0x2f00,
  kReportedLunsChanged = 0x3f0e,
};

inline Sense UnitAttentionSense(UnitAttention ua) {
  return Sense::Make(sk::kUnitAttention, uint8_t(uint16_t(ua) >> 8), uint8_t(uint16_t(ua)));
}

}  // namespace ferry::scsi
