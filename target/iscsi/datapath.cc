#include "target/iscsi/datapath.h"

namespace ferry::iscsi {

std::vector<DataInSegment> SplitDataIn(uint32_t total, uint32_t mrdsl, uint32_t max_burst) {
  std::vector<DataInSegment> out;
  if (mrdsl == 0) mrdsl = 8192;
  if (max_burst == 0) max_burst = total ? total : 1;
  uint32_t off = 0;
  while (off < total) {
    uint32_t burst_end = (off / max_burst + 1) * max_burst;  // bursts are aligned from offset 0
    if (burst_end > total || burst_end < off) burst_end = total;
    while (off < burst_end) {
      uint32_t len = burst_end - off < mrdsl ? burst_end - off : mrdsl;
      out.push_back({off, len, off + len == burst_end});
      off += len;
    }
  }
  return out;
}

}  // namespace ferry::iscsi
