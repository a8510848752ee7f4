// libFuzzer target: random sequences of CDBs (with Data-Out) and task
// management calls from three I_T nexuses, fed to a scsi::Target with one
// small RAM LUN (tests/scsi/ram_device.h). Checks that every command
// completes exactly once, synchronously here (the RAM device answers at
// once), and that every CHECK CONDITION carries well-formed sense data.
//
// Input records: [selector][data length / 8][16 CDB bytes][data...]
//   selector bits 0-1: nexus (0..2), bits 2-3: task attribute,
//   bit 4: LUN 1 (absent) instead of 0, bits 5-7 = 7: a TMF/nexus event
//   chosen by the CDB's first byte instead of a command.
#include <cstddef>
#include <cstdint>
#include <memory>

#include "target/scsi/target.h"
#include "tests/scsi/ram_device.h"

namespace {

using namespace ferry::scsi;

std::shared_ptr<Nexus> MakeNexus(uint64_t id) {
  auto n = std::make_shared<Nexus>();
  n->id = id;
  n->initiator_name = "iqn.2026-11.fuzz:i" + std::to_string(id);
  n->initiator_port = n->initiator_name + ",i,0x23d00000000" + std::to_string(id);
  n->target_port = "iqn.2026-11.fuzz:t,t,0x1";
  return n;
}

bool SenseOk(const std::vector<uint8_t>& s) {
  if (s.size() < 8) return false;
  uint8_t code = s[0] & 0x7f;
  if (code == 0x70) return s.size() == 18 && s[7] == 10;
  if (code == 0x72) return size_t(s[7]) + 8 == s.size();
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto dev = std::make_shared<ferry::scsi::testing::RamDevice>(64 * 1024);
  TargetOptions opts;
  opts.iqn = "iqn.2026-11.fuzz:t";
  opts.logger = ferry::Logger("fuzz", ferry::LogLevel::kError);
  Target target(opts);
  LunIdentity id;
  id.volume_name = "fuzz";
  if (!target.AddLun(0, dev, id).ok()) __builtin_trap();
  std::shared_ptr<Nexus> nexus[3] = {MakeNexus(1), MakeNexus(2), MakeNexus(3)};
  for (auto& n : nexus) target.NexusAdded(*n);

  size_t off = 0;
  int budget = 64;
  while (size - off >= 18 && budget-- > 0) {
    uint8_t sel = data[off], dlen = data[off + 1];
    const uint8_t* cdb = data + off + 2;
    off += 18;
    size_t take = std::min<size_t>(dlen * 8, size - off);
    const Nexus& n = *nexus[(sel & 3) % 3];
    uint64_t lun = (sel & 0x10) ? 1 : 0;
    if ((sel >> 5) == 7) {
      switch (cdb[0] % 8) {
        case 0: target.AbortTask(n, cdb[1]); break;
        case 1: target.AbortTaskSet(n, lun); break;
        case 2: target.ClearTaskSet(n, lun); break;
        case 3: target.LunReset(n, lun); break;
        case 4: target.TargetReset(n, cdb[1] & 1); break;
        case 5: target.NexusLost(n); target.NexusAdded(n); break;
        case 6: dev->Resize(32 * 1024 * (1 + (cdb[1] & 3))); target.NotifyCapacityChanged(0); break;
        default: break;
      }
      off += take;
      continue;
    }
    auto cmd = std::make_unique<ScsiCommand>();
    cmd->nexus = nexus[(sel & 3) % 3];
    cmd->lun = lun;
    std::copy(cdb, cdb + 16, cmd->cdb);
    cmd->cdb_len = 16;
    cmd->tag = off;
    cmd->attr = TaskAttr((sel >> 2) & 3);
    cmd->data_out.assign(data + off, data + off + take);
    cmd->dir = take ? DataDir::kWrite : DataDir::kRead;
    cmd->expected_length = 1 << 20;
    off += take;
    int calls = 0;
    ScsiResult res;
    target.Submit(std::move(cmd), [&](ScsiResult r) {
      calls++;
      res = std::move(r);
    });
    if (calls != 1) __builtin_trap();
    if (res.status == kStatusCheckCondition && !SenseOk(res.sense)) __builtin_trap();
    if (res.status != kStatusCheckCondition && !res.sense.empty()) __builtin_trap();
  }
  return 0;
}
