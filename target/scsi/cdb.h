// Cdb helpers: big-endian field access and opcode constants (SPC-4 / SBC-3).
//
// Promise: pure functions on byte buffers; callers check lengths first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ferry::scsi {

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

namespace op {
constexpr uint8_t kTestUnitReady = 0x00;
constexpr uint8_t kRequestSense = 0x03;
constexpr uint8_t kRead6 = 0x08;
constexpr uint8_t kWrite6 = 0x0a;
constexpr uint8_t kInquiry = 0x12;
constexpr uint8_t kModeSelect6 = 0x15;
constexpr uint8_t kReserve6 = 0x16;
constexpr uint8_t kRelease6 = 0x17;
constexpr uint8_t kModeSense6 = 0x1a;
constexpr uint8_t kStartStopUnit = 0x1b;
constexpr uint8_t kPreventAllow = 0x1e;
constexpr uint8_t kReadCapacity10 = 0x25;
constexpr uint8_t kRead10 = 0x28;
constexpr uint8_t kWrite10 = 0x2a;
constexpr uint8_t kWriteVerify10 = 0x2e;
constexpr uint8_t kVerify10 = 0x2f;
constexpr uint8_t kPrefetch10 = 0x34;
constexpr uint8_t kSyncCache10 = 0x35;
constexpr uint8_t kReadDefectData10 = 0x37;
constexpr uint8_t kWriteSame10 = 0x41;
constexpr uint8_t kUnmap = 0x42;
constexpr uint8_t kModeSelect10 = 0x55;
constexpr uint8_t kReserve10 = 0x56;
constexpr uint8_t kRelease10 = 0x57;
constexpr uint8_t kModeSense10 = 0x5a;
constexpr uint8_t kPrIn = 0x5e;
constexpr uint8_t kPrOut = 0x5f;
constexpr uint8_t kExtendedCopy = 0x83;       // SA 0x00 (LID1)
constexpr uint8_t kReceiveCopyResults = 0x84; // SA 0x00 COPY STATUS, 0x03 OPERATING PARAMETERS
constexpr uint8_t kRead16 = 0x88;
constexpr uint8_t kCompareAndWrite = 0x89;
constexpr uint8_t kWrite16 = 0x8a;
constexpr uint8_t kOrWrite16 = 0x8b;
constexpr uint8_t kWriteVerify16 = 0x8e;
constexpr uint8_t kVerify16 = 0x8f;
constexpr uint8_t kPrefetch16 = 0x90;
constexpr uint8_t kSyncCache16 = 0x91;
constexpr uint8_t kWriteSame16 = 0x93;
constexpr uint8_t kServiceIn16 = 0x9e;   // SA 0x10 READ CAPACITY 16, 0x12 GET LBA STATUS
constexpr uint8_t kReportLuns = 0xa0;
constexpr uint8_t kMaintenanceIn = 0xa3; // SA 0x0c REPORT SUPPORTED OPCODES, 0x0d TMFs
constexpr uint8_t kRead12 = 0xa8;
constexpr uint8_t kWrite12 = 0xaa;
constexpr uint8_t kWriteVerify12 = 0xae;
constexpr uint8_t kVerify12 = 0xaf;
constexpr uint8_t kReadDefectData12 = 0xb7;
}  // namespace op

// CDB length implied by the opcode's group code (0 = vendor specific/unknown).
inline size_t CdbLengthForOpcode(uint8_t opcode) {
  switch (opcode >> 5) {
    case 0: return 6;
    case 1: case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 0;
  }
}

// Bytes of Data-Out a CDB calls for (its SCSI transfer length), given the
// logical block size; -1 for commands that carry no Data-Out or are unknown.
int64_t DataOutLength(const uint8_t* cdb, uint32_t block_size);

}  // namespace ferry::scsi
