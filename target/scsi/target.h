// scsi::Target: the SCSI device server of one iSCSI target (SPC-4 / SBC-3).
//
// Promise: implements CommandSink for the transport. Holds a table of logical
// units (each a LogicalUnit over an abstract BlockDevice); routes commands to
// them, answers REPORT LUNS and commands to absent LUNs itself, tracks I_T
// nexuses for unit attentions, and runs task management (SAM-5).
// Thread-safe: every method may be called from any thread. AddLun/RemoveLun
// never pause commands of other LUNs; a removed LUN's in-flight commands still
// complete normally (the LogicalUnit keeps its BlockDevice alive until then).
// Aborted commands complete with status TASK ABORTED (see scsi_task.h). The
// control mode page says TAS = 1: a command aborted on behalf of another I_T
// nexus (CLEAR TASK SET, LUN RESET, PREEMPT AND ABORT) is answered with
// TASK ABORTED; the transport drops the result of commands its own session
// aborted (RFC 7143), as it already knows which those are.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "target/blockdev/block_device.h"
#include "target/common/logger.h"
#include "target/common/status.h"
#include "target/scsi/scsi_task.h"

namespace ferry::scsi {

class LogicalUnit;

// Who a LUN is, as INQUIRY reports it.
struct LunIdentity {
  std::string volume_name;         // required; the NAA id is derived from it (stable)
  std::string serial;              // VPD 0x80; empty -> derived from volume_name
  std::string vendor = "FERRY";    // T10 vendor id (<= 8 chars)
  std::string product = "VOLUME";  // <= 16 chars
  std::string revision = "0001";   // <= 4 chars
  bool read_only = false;          // or'ed with BlockDevice::read_only()
};

struct LunInfo {
  uint64_t lun = 0;
  LunIdentity identity;
  uint64_t size_bytes = 0;
  uint32_t block_size = 512;
  std::string naa_hex;             // the 16-byte NAA designator in hex (VPD 0x83)
};

struct TargetOptions {
  std::string iqn;                 // the target name (VPD 0x83 SCSI target name)
  Logger logger{"scsi"};
};

class Target : public CommandSink {
 public:
  explicit Target(TargetOptions opts);
  ~Target() override;
  Target(const Target&) = delete;
  Target& operator=(const Target&) = delete;

  // Adds a LUN (0..16383). kAlreadyExists if taken, kInvalidArgument on a bad
  // number, empty volume name or a device whose size is not a multiple of its
  // block size. Raises REPORTED LUNS DATA HAS CHANGED on the other LUNs.
  Status AddLun(uint64_t lun, std::shared_ptr<blockdev::BlockDevice> dev, LunIdentity id);
  // Removes a LUN (kNotFound if absent). Raises REPORTED LUNS DATA HAS CHANGED.
  Status RemoveLun(uint64_t lun);
  // Re-reads the device size and raises CAPACITY DATA HAS CHANGED on that LUN.
  Status NotifyCapacityChanged(uint64_t lun);
  std::vector<LunInfo> Luns() const;
  bool HasLun(uint64_t lun) const;

  // CommandSink
  void Submit(std::unique_ptr<ScsiCommand> cmd, Completion done) override;
  TmfResult AbortTask(const Nexus& n, uint32_t tag) override;
  TmfResult AbortTaskSet(const Nexus& n, uint64_t lun) override;
  TmfResult ClearTaskSet(const Nexus& n, uint64_t lun) override;
  TmfResult LunReset(const Nexus& n, uint64_t lun) override;
  TmfResult TargetReset(const Nexus& n, bool cold) override;
  void NexusLost(const Nexus& n) override;
  void NexusAdded(const Nexus& n) override;

 private:
  std::shared_ptr<LogicalUnit> Find(uint64_t lun) const;
  std::vector<std::shared_ptr<LogicalUnit>> All() const;
  void ExecuteNoLun(const ScsiCommand& cmd, Completion done);
  std::vector<uint8_t> ReportLuns(uint8_t select, uint64_t addressed_lun) const;

  TargetOptions opts_;
  mutable std::shared_mutex mu_;   // guards luns_ (readers: one lookup per command)
  std::map<uint64_t, std::shared_ptr<LogicalUnit>> luns_;
  std::map<uint64_t, std::string> nexuses_;  // live nexus id -> I_T nexus key
};

// The 8-byte LUN field for `lun` as REPORT LUNS lists it (SAM-5 peripheral
// addressing below 256, flat space up to 16383; 0xC101 = REPORT LUNS W-LUN).
void EncodeLun(uint64_t lun, uint8_t out[8]);

}  // namespace ferry::scsi
