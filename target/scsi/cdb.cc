#include "target/scsi/cdb.h"

namespace ferry::scsi {

int64_t DataOutLength(const uint8_t* cdb, uint32_t bs) {
  switch (cdb[0]) {
    case op::kWrite6: return int64_t(cdb[4] ? cdb[4] : 256) * bs;
    case op::kWrite10: case op::kWriteVerify10: return int64_t(Get16(cdb + 7)) * bs;
    case op::kWrite12: case op::kWriteVerify12: return int64_t(Get32(cdb + 6)) * bs;
    case op::kWrite16: case op::kWriteVerify16: return int64_t(Get32(cdb + 10)) * bs;
    case op::kVerify10: case op::kVerify12: case op::kVerify16: {
      uint8_t bytchk = (cdb[1] >> 1) & 3;
      uint64_t n = cdb[0] == op::kVerify10 ? Get16(cdb + 7) : cdb[0] == op::kVerify12 ? Get32(cdb + 6) : Get32(cdb + 10);
      if (bytchk == 0 || n == 0) return 0;
      return bytchk == 3 ? int64_t(bs) : int64_t(n * bs);
    }
    case op::kCompareAndWrite: return int64_t(2) * cdb[13] * bs;
    case op::kOrWrite16: return int64_t(Get32(cdb + 10)) * bs;
    case op::kWriteSame10: return bs;
    case op::kWriteSame16: return (cdb[1] & 0x01) ? 0 : int64_t(bs);
    case op::kUnmap: return Get16(cdb + 7);
    case op::kModeSelect6: return cdb[4];
    case op::kModeSelect10: return Get16(cdb + 7);
    case op::kPrOut: return Get32(cdb + 5);
    case op::kExtendedCopy: return Get32(cdb + 10);
    default: return -1;
  }
}

}  // namespace ferry::scsi
