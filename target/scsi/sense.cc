#include "target/scsi/sense.h"

#include "target/scsi/cdb.h"

namespace ferry::scsi {

std::vector<uint8_t> Sense::Encode(bool descriptor) const {
  uint8_t sks[3] = {0, 0, 0};
  if (has_sks) {
    sks[0] = 0x80 | (sks_cdb ? 0x40 : 0);
    if (sks_bit >= 0) sks[0] |= 0x08 | (uint8_t(sks_bit) & 7);
    Put16(sks + 1, sks_field);
  }
  if (!descriptor) {
    std::vector<uint8_t> s(18, 0);
    s[0] = 0x70;
    s[2] = key & 0x0f;
    if (has_info) {
      if (info <= 0xffffffffull) s[0] |= 0x80;  // VALID only when INFORMATION fits
      Put32(&s[3], uint32_t(info));
    }
    s[7] = 10;
    s[12] = asc;
    s[13] = ascq;
    if (has_sks) { s[15] = sks[0]; s[16] = sks[1]; s[17] = sks[2]; }
    return s;
  }
  std::vector<uint8_t> s(8, 0);
  s[0] = 0x72;
  s[1] = key & 0x0f;
  s[2] = asc;
  s[3] = ascq;
  if (has_info) {
    uint8_t d[12] = {0x00, 0x0a, 0x80, 0};
    Put64(d + 4, info);
    s.insert(s.end(), d, d + sizeof(d));
  }
  if (has_sks) {
    uint8_t d[8] = {0x02, 0x06, 0, 0, sks[0], sks[1], sks[2], 0};
    s.insert(s.end(), d, d + sizeof(d));
  }
  s[7] = uint8_t(s.size() - 8);
  return s;
}

}  // namespace ferry::scsi
