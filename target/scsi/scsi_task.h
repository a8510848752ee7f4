// The contract between the iSCSI transport (target/iscsi) and the SCSI device
// server (target/scsi). The transport knows nothing of CDB semantics; the device
// server knows nothing of PDUs.
//
// Promise: the transport hands over a complete command (CDB plus all of its
// Data-Out) and gets back exactly one ScsiResult through the completion, from any
// thread. Data-In longer than the initiator's expected length is truncated by the
// transport, which computes residuals. Task management calls complete the
// affected commands (with TASK ABORTED or not at all, per SAM-5 and the
// transport's rules) before returning their own response.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "target/common/spliced_data.h"

namespace ferry::scsi {

// SAM status codes
constexpr uint8_t kStatusGood = 0x00;
constexpr uint8_t kStatusCheckCondition = 0x02;
constexpr uint8_t kStatusConditionMet = 0x04;
constexpr uint8_t kStatusBusy = 0x08;
constexpr uint8_t kStatusReservationConflict = 0x18;
constexpr uint8_t kStatusTaskSetFull = 0x28;
constexpr uint8_t kStatusTaskAborted = 0x40;

enum class TaskAttr : uint8_t { kUntagged = 0, kSimple = 1, kOrdered = 2, kHeadOfQueue = 3, kAca = 4 };
enum class DataDir : uint8_t { kNone, kRead, kWrite, kBidi };

// An I_T nexus: one initiator port (name + ISID) on one target port.
struct Nexus {
  uint64_t id = 0;                 // unique per session while it lives
  std::string initiator_name;      // e.g. iqn.2008-11.org.linux-kvm:...
  std::string initiator_port;      // "<name>,i,0x<ISID>" (TransportID form)
  std::string target_port;         // "<target iqn>,t,0x<TPGT>"
  uint16_t relative_target_port = 1;
};

// A byte buffer whose resize() leaves new bytes uninitialised: the transport
// sizes a write's buffer and then fills every byte from the wire, so zeroing
// it first was pure cost (a memset of every write's size, ~17 % of the
// target's CPU on 1 MiB writes).
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using DataBuffer = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

struct ScsiCommand {
  std::shared_ptr<const Nexus> nexus;
  uint64_t lun = 0;                // the LUN number (decoded from the 8-byte field)
  uint8_t cdb[32] = {};
  uint8_t cdb_len = 0;
  uint32_t tag = 0;                // Initiator Task Tag
  TaskAttr attr = TaskAttr::kSimple;
  DataDir dir = DataDir::kNone;
  uint32_t expected_length = 0;    // EDTL from the transport
  DataBuffer data_out;             // all Data-Out, exactly what the initiator sent
  // The transport can send a read's data from a pipe (ScsiResult::
  // data_in_spliced) instead of memory. (Additive field.)
  bool accepts_spliced = false;
};

struct ScsiResult {
  uint8_t status = kStatusGood;
  std::vector<uint8_t> sense;      // sense data (fixed or descriptor format) when CHECK CONDITION
  std::vector<uint8_t> data_in;    // may be shorter or longer than expected_length
  // Bytes of Data-Out the CDB itself called for (the SCSI transfer length of
  // a write-type command), or -1 when not known. Lets the transport report
  // write residuals (EDTL vs this) without decoding CDBs. (Additive field.)
  int64_t data_out_length = -1;
  // Instead of data_in, only when the command accepts_spliced: the read data
  // held in a pipe, data_in_spliced->size() bytes. (Additive field.)
  std::shared_ptr<SplicedData> data_in_spliced;
};

using Completion = std::function<void(ScsiResult)>;

// Task management functions (RFC 7143 §11.5.1 / SAM-5)
enum class TmfResult : uint8_t {
  kComplete = 0,
  kTaskDoesNotExist = 1,
  kLunDoesNotExist = 2,
  kTaskStillAllegiant = 3,
  kReassignUnsupported = 4,
  kNotSupported = 5,
  kAuthFailed = 6,
  kRejected = 255,
};

// What the transport calls. Implemented by scsi::Target (one per iSCSI target).
class CommandSink {
 public:
  virtual ~CommandSink() = default;
  virtual void Submit(std::unique_ptr<ScsiCommand> cmd, Completion done) = 0;
  virtual TmfResult AbortTask(const Nexus& n, uint32_t tag) = 0;
  virtual TmfResult AbortTaskSet(const Nexus& n, uint64_t lun) = 0;
  virtual TmfResult ClearTaskSet(const Nexus& n, uint64_t lun) = 0;
  virtual TmfResult LunReset(const Nexus& n, uint64_t lun) = 0;
  virtual TmfResult TargetReset(const Nexus& n, bool cold) = 0;
  // The nexus is gone (session closed): drop its commands and per-nexus state
  // that SPC says does not survive (not PR registrations).
  virtual void NexusLost(const Nexus& n) = 0;
  virtual void NexusAdded(const Nexus& n) = 0;
};

}  // namespace ferry::scsi
