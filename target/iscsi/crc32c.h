// CRC32C (Castagnoli), as used for iSCSI header and data digests (RFC 7143 §13.1).
//
// Promise: Crc32c(data, len) returns the finished CRC (initial ~0, final xor
// ~0), the value an iSCSI digest carries; Extend() continues a running CRC so
// a digest can cover pieces (data then padding). Uses SSE4.2 when the CPU has
// it, a table otherwise; both give identical results. No global mutable state
// (the table is a constant built at compile time).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ferry::iscsi {

// Continue a CRC: `crc` is a previous Extend() result (start with 0).
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t len);
inline uint32_t Crc32c(const void* data, size_t len) { return Crc32cExtend(0, data, len); }
// The same using only the portable table (for tests comparing both paths).
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t len);

}  // namespace ferry::iscsi
