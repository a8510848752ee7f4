// LogicalUnit: one SCSI logical unit (SBC-3 direct-access block device) over
// an abstract BlockDevice: identity (volume name, serial, NAA id), capacity,
// unit attention queues per I_T nexus, persistent and SPC-2 reservations,
// mode pages, and its task set.
//
// Promise: thread-safe; Submit() may be called from any thread and each
// command completes exactly once (from the calling thread or a device
// callback). The READ/WRITE path takes no lock shared with other LUs: it
// decodes, range-checks, checks reservations only when one exists, and makes
// one BlockDevice call. Task-set rules (conservative SAM-5): SIMPLE commands
// run concurrently; an ORDERED command (and COMPARE AND WRITE, which must be
// atomic against other writes) waits until every earlier command is done and
// runs alone (so does ORWRITE); HEAD OF QUEUE starts at once. Aborted commands complete with
// TASK ABORTED at once; a device call already issued for them finishes into
// the void, and multi-step commands (COMPARE AND WRITE, VERIFY, WRITE SAME)
// stop before their next device call.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "target/blockdev/block_device.h"
#include "target/common/logger.h"
#include "target/scsi/mode_pages.h"
#include "target/scsi/persistent_reservations.h"
#include "target/scsi/scsi_task.h"
#include "target/scsi/sense.h"
#include "target/scsi/target.h"

namespace ferry::scsi {

// Limits advertised in the Block Limits VPD page and enforced.
struct LuLimits {
  static constexpr uint32_t kMaxTransferBytes = 8u << 20;
  static constexpr uint32_t kOptimalTransferBytes = 1u << 20;
  static constexpr uint8_t kMaxCompareAndWriteBlocks = 255;
  static constexpr uint32_t kMaxUnmapDescriptors = 256;
  static constexpr uint32_t kMaxUnmapBlocks = 1u << 20;      // per UNMAP command
  static constexpr uint32_t kMaxWriteSameBlocks = 0xffff;     // per WRITE SAME command
  static constexpr uint32_t kDeviceChunkBytes = 1u << 30;  // one BlockDevice call at most
  static constexpr uint16_t kXcopyMaxCscds = 4;
  static constexpr uint16_t kXcopyMaxSegments = 8;
  static constexpr uint32_t kXcopyMaxDescListBytes = 1024;
};

// The I_T nexus identity used for unit attentions and reservations.
ItNexusId NexusIdOf(const Nexus& n);

class LogicalUnit : public std::enable_shared_from_this<LogicalUnit> {
 public:
  LogicalUnit(uint64_t lun, std::shared_ptr<blockdev::BlockDevice> dev, LunIdentity id,
              std::string target_iqn, Logger log);

  uint64_t lun() const { return lun_; }
  LunInfo Info() const;
  const std::string& naa_hex() const { return naa_hex_; }

  void Submit(std::unique_ptr<ScsiCommand> cmd, Completion done);

  // Task management. Each completes the affected commands (TASK ABORTED)
  // before it returns.
  bool AbortTask(uint64_t nexus_id, uint32_t tag);
  void AbortTaskSet(uint64_t nexus_id);
  void ClearTaskSet(const Nexus& issuer);
  // LUN reset / target reset: abort every task, drop the SPC-2 reservation,
  // and queue `ua` for every known I_T nexus.
  void Reset(UnitAttention ua);

  // Nexus lifecycle (driven by Target).
  void NexusAdded(const std::string& key);   // queues POWER ON OCCURRED
  void NexusLost(const Nexus& n);            // aborts its tasks, drops SPC-2 reservation + UAs
  void RaiseUa(UnitAttention ua, const std::string& except_key = std::string());
  void ClearUa(const std::string& key, UnitAttention ua);
  // Re-reads the device size; raises CAPACITY DATA HAS CHANGED if it moved
  // (or always when `force`).
  void RefreshCapacity(bool force);

 private:
  struct Task {
    std::unique_ptr<ScsiCommand> cmd;
    Completion done;
    std::atomic<bool> completed{false};
    bool exclusive = false;
    bool running = false;
    std::list<std::shared_ptr<Task>>::iterator where;  // position in tasks_
    std::vector<uint8_t> buf;
  };
  using TaskPtr = std::shared_ptr<Task>;

  // Task set.
  void Start(const TaskPtr& t);
  void Pump();
  void Finish(const TaskPtr& t, ScsiResult r);      // complete + retire
  void Complete(const TaskPtr& t, ScsiResult r);    // sends the result once
  void Retire(const TaskPtr& t);                    // leaves the task set
  void AbortIf(const std::function<bool(const Task&)>& pred, std::vector<std::string>* victims);
  bool Aborted(const TaskPtr& t) const { return t->completed.load(std::memory_order_acquire); }
  void Good(const TaskPtr& t, std::vector<uint8_t> data = {});
  void Check(const TaskPtr& t, const Sense& s);
  void Conflict(const TaskPtr& t);
  Sense DeviceError(const Status& s, bool write) const;

  // Gatekeeping before execution.
  std::optional<Sense> TakeUa(const std::string& key);
  bool ReservationConflict(const ScsiCommand& c, uint8_t opcode);
  void Execute(const TaskPtr& t);

  // SPC (spc_commands.cc)
  void Inquiry(const TaskPtr& t);
  std::vector<uint8_t> InquiryStandard() const;
  std::optional<Sense> InquiryVpd(uint8_t page, const Nexus* n, std::vector<uint8_t>* out) const;
  void RequestSense(const TaskPtr& t);
  void ModeSense(const TaskPtr& t, bool ten);
  void ModeSelect(const TaskPtr& t, bool ten);
  void ReportOpcodes(const TaskPtr& t);
  void ReportTmfs(const TaskPtr& t);
  void ReserveRelease(const TaskPtr& t, bool reserve);
  void PrIn(const TaskPtr& t);
  void PrOut(const TaskPtr& t);
  void StartStop(const TaskPtr& t);
  void PreventAllow(const TaskPtr& t);

  // SBC (sbc_commands.cc)
  void ReadCapacity10(const TaskPtr& t);
  void ReadCapacity16(const TaskPtr& t);
  void ReadWrite(const TaskPtr& t);
  void DoRead(const TaskPtr& t, uint64_t lba, uint32_t blocks);
  void DoWrite(const TaskPtr& t, uint64_t lba, uint32_t blocks, bool fua);
  void Verify(const TaskPtr& t);
  void CompareAndWrite(const TaskPtr& t);
  void WriteSame(const TaskPtr& t, bool sixteen);
  void Unmap(const TaskPtr& t);
  void GetLbaStatus(const TaskPtr& t);
  void SyncCache(const TaskPtr& t, bool sixteen);
  void Prefetch(const TaskPtr& t, bool sixteen);
  void ReadDefectData(const TaskPtr& t, bool twelve);
  void OrWrite(const TaskPtr& t);

  // EXTENDED COPY inside this LU (xcopy.cc)
  struct CopyJob;
  struct CopyResult {
    uint16_t segments = 0;
    uint64_t bytes = 0;
  };
  void ExtendedCopy(const TaskPtr& t);
  void CopyStep(const TaskPtr& t, std::shared_ptr<CopyJob> job);
  void ReceiveCopyResults(const TaskPtr& t);
  bool CheckRange(const TaskPtr& t, uint64_t lba, uint64_t blocks);
  bool CheckWritable(const TaskPtr& t);
  bool CheckDataOut(const TaskPtr& t, size_t need);
  // Zeroes/unmaps [offset, offset+len) in chunks; then calls done.
  void ZeroRange(uint64_t offset, uint64_t len, bool may_trim, bool fua, const TaskPtr& t,
                 std::function<void(Status)> done);

  const uint64_t lun_;
  const std::shared_ptr<blockdev::BlockDevice> dev_;
  const LunIdentity id_;
  const std::string target_iqn_;
  const Logger log_;
  const uint32_t block_size_;
  const bool read_only_;
  std::string naa_hex_;
  uint8_t naa_[16];
  std::atomic<uint64_t> blocks_;

  // Task set (ts_mu_).
  std::mutex ts_mu_;
  std::list<TaskPtr> tasks_;          // pending and running, in arrival order
  std::deque<TaskPtr> pending_;
  size_t running_ = 0;
  bool exclusive_running_ = false;

  // Nexus state, reservations and mode pages (st_mu_).
  mutable std::mutex st_mu_;
  std::map<std::string, std::deque<UnitAttention>> uas_;  // per known I_T nexus key
  std::atomic<size_t> ua_count_{0};
  PersistentReservations pr_;
  std::optional<std::string> spc2_holder_;
  // A persistent or SPC-2 reservation exists (registrations alone never make
  // a command conflict, so they do not take commands off the fast path).
  std::atomic<bool> any_reservation_{false};
  void UpdateReservedFlagLocked() { any_reservation_ = spc2_holder_.has_value() || pr_.reserved(); }
  ModePages mode_;
  std::map<std::pair<std::string, uint8_t>, CopyResult> copy_results_;  // (nexus, list id), held copies
  std::atomic<bool> wce_{true};
  std::atomic<bool> d_sense_{false};
  std::atomic<bool> swp_{false};
};

}  // namespace ferry::scsi
