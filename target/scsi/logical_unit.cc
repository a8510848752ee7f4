#include "target/scsi/logical_unit.h"

#include <algorithm>
#include <cstdio>

#include "target/scsi/cdb.h"
#include "target/scsi/opcodes.h"

namespace ferry::scsi {

namespace {

uint64_t Fnv1a(const std::string& s, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull ^ seed;
  for (unsigned char c : s) { h ^= c; h *= 0x100000001b3ull; }
  return h;
}

// IEEE company id used in the NAA 6 designators (a CID: bit 1 of the first
// octet set, i.e. not an OUI of any vendor).
constexpr uint32_t kCompanyId = 0x0AFE77;

const Nexus& NoNexus() {
  static const Nexus n;  // immutable
  return n;
}

}  // namespace

ItNexusId NexusIdOf(const Nexus& n) { return ItNexusId{n.initiator_port, n.relative_target_port}; }

LogicalUnit::LogicalUnit(uint64_t lun, std::shared_ptr<blockdev::BlockDevice> dev, LunIdentity id,
                         std::string target_iqn, Logger log)
    : lun_(lun),
      dev_(std::move(dev)),
      id_(std::move(id)),
      target_iqn_(std::move(target_iqn)),
      log_(std::move(log)),
      block_size_(dev_->block_size()),
      read_only_(id_.read_only || dev_->read_only()),
      blocks_(dev_->size_bytes() / dev_->block_size()) {
  // NAA 6 (IEEE registered extended): 4-bit NAA, 24-bit company id, 36-bit
  // vendor specific id and 64-bit extension, both hashed from the volume name.
  uint64_t h1 = Fnv1a(id_.volume_name, 0), h2 = Fnv1a(id_.volume_name, 0x5a5a5a5a5a5a5a5aull);
  uint64_t hi = (uint64_t(6) << 60) | (uint64_t(kCompanyId) << 36) | (h1 & 0xfffffffffull);
  Put64(naa_, hi);
  Put64(naa_ + 8, h2);
  char hex[33];
  for (int i = 0; i < 16; ++i) std::snprintf(hex + 2 * i, 3, "%02x", naa_[i]);
  naa_hex_ = hex;
  wce_ = mode_.wce();
  d_sense_ = mode_.d_sense();
  swp_ = mode_.swp();
}

LunInfo LogicalUnit::Info() const {
  LunInfo i;
  i.lun = lun_;
  i.identity = id_;
  i.identity.read_only = read_only_;
  i.size_bytes = blocks_.load() * block_size_;
  i.block_size = block_size_;
  i.naa_hex = naa_hex_;
  return i;
}

// ---------------------------------------------------------------- task set

void LogicalUnit::Submit(std::unique_ptr<ScsiCommand> cmd, Completion done) {
  auto t = std::make_shared<Task>();
  uint8_t opc = cmd->cdb[0];
  t->exclusive = cmd->attr == TaskAttr::kOrdered || opc == op::kCompareAndWrite || opc == op::kOrWrite16;
  bool head = cmd->attr == TaskAttr::kHeadOfQueue;
  t->cmd = std::move(cmd);
  t->done = std::move(done);
  bool start = false;
  {
    std::lock_guard<std::mutex> l(ts_mu_);
    t->where = tasks_.insert(tasks_.end(), t);
    if (!exclusive_running_ && (head || pending_.empty()) && (!t->exclusive || running_ == 0)) {
      t->running = true;
      running_++;
      exclusive_running_ = t->exclusive;
      start = true;
    } else if (head) {
      pending_.push_front(t);
    } else {
      pending_.push_back(t);
    }
  }
  if (start) Start(t);
}

void LogicalUnit::Complete(const TaskPtr& t, ScsiResult r) {
  if (t->completed.exchange(true, std::memory_order_acq_rel)) return;
  if (t->cmd->dir == DataDir::kWrite || t->cmd->dir == DataDir::kBidi || !t->cmd->data_out.empty())
    r.data_out_length = DataOutLength(t->cmd->cdb, block_size_);
  Completion done = std::move(t->done);
  done(std::move(r));
}

void LogicalUnit::Retire(const TaskPtr& t) {
  {
    std::lock_guard<std::mutex> l(ts_mu_);
    running_--;
    if (t->exclusive) exclusive_running_ = false;
    tasks_.erase(t->where);
  }
  Pump();
}

void LogicalUnit::Pump() {
  std::vector<TaskPtr> go;
  {
    std::lock_guard<std::mutex> l(ts_mu_);
    while (!pending_.empty() && !exclusive_running_) {
      TaskPtr& f = pending_.front();
      if (f->exclusive && running_ > 0) break;
      f->running = true;
      running_++;
      exclusive_running_ = f->exclusive;
      go.push_back(std::move(f));
      pending_.pop_front();
    }
  }
  for (const TaskPtr& t : go) Start(t);
}

void LogicalUnit::Finish(const TaskPtr& t, ScsiResult r) {
  Complete(t, std::move(r));
  Retire(t);
}

void LogicalUnit::Good(const TaskPtr& t, std::vector<uint8_t> data) {
  ScsiResult r;
  r.data_in = std::move(data);
  Finish(t, std::move(r));
}

void LogicalUnit::Check(const TaskPtr& t, const Sense& s) {
  ScsiResult r;
  r.status = kStatusCheckCondition;
  r.sense = s.Encode(d_sense_.load(std::memory_order_relaxed));
  Finish(t, std::move(r));
}

void LogicalUnit::Conflict(const TaskPtr& t) {
  ScsiResult r;
  r.status = kStatusReservationConflict;
  Finish(t, std::move(r));
}

Sense LogicalUnit::DeviceError(const Status& s, bool write) const {
  switch (s.code()) {
    case Status::Code::kIoError:
      return write ? Sense::Make(sk::kMediumError, 0x0c, 0x00) : Sense::Make(sk::kMediumError, 0x11, 0x00);
    case Status::Code::kNoSpace:
      return Sense::Make(sk::kDataProtect, 0x27, 0x07);
    case Status::Code::kFenced:
      return Sense::WriteProtected();
    case Status::Code::kTimeout:
    case Status::Code::kUnavailable:
      return Sense::Make(sk::kNotReady, 0x04, 0x0c);
    case Status::Code::kInvalidArgument:
      return Sense::LbaOutOfRange();
    default:
      return Sense::Make(sk::kHardwareError, 0x44, 0x00);
  }
}

void LogicalUnit::AbortIf(const std::function<bool(const Task&)>& pred, std::vector<std::string>* victims) {
  std::vector<TaskPtr> hit;
  {
    std::lock_guard<std::mutex> l(ts_mu_);
    for (const TaskPtr& t : tasks_)
      if (!t->completed.load() && pred(*t)) hit.push_back(t);
    for (const TaskPtr& t : hit) {
      if (t->running) continue;
      pending_.erase(std::remove(pending_.begin(), pending_.end(), t), pending_.end());
      tasks_.erase(t->where);
    }
  }
  for (const TaskPtr& t : hit) {
    if (victims) victims->push_back(NexusIdOf(t->cmd->nexus ? *t->cmd->nexus : NoNexus()).Key());
    ScsiResult r;
    r.status = kStatusTaskAborted;
    Complete(t, std::move(r));
  }
  if (!hit.empty()) Pump();
}

bool LogicalUnit::AbortTask(uint64_t nexus_id, uint32_t tag) {
  bool found = false;
  AbortIf([&](const Task& t) {
    bool m = t.cmd->nexus && t.cmd->nexus->id == nexus_id && t.cmd->tag == tag;
    found |= m;
    return m;
  }, nullptr);
  return found;
}

void LogicalUnit::AbortTaskSet(uint64_t nexus_id) {
  AbortIf([&](const Task& t) { return t.cmd->nexus && t.cmd->nexus->id == nexus_id; }, nullptr);
}

void LogicalUnit::ClearTaskSet(const Nexus&) {
  // TAS = 1: the other nexuses learn of it through TASK ABORTED status.
  AbortIf([&](const Task&) { return true; }, nullptr);
}

void LogicalUnit::Reset(UnitAttention ua) {
  AbortIf([](const Task&) { return true; }, nullptr);
  {
    std::lock_guard<std::mutex> l(st_mu_);
    spc2_holder_.reset();
    UpdateReservedFlagLocked();
  }
  RaiseUa(ua);
}

// ---------------------------------------------------------- unit attentions

void LogicalUnit::NexusAdded(const std::string& key) {
  std::lock_guard<std::mutex> l(st_mu_);
  auto& q = uas_[key];
  ua_count_ -= q.size();
  q.assign(1, UnitAttention::kPowerOnReset);
  ua_count_++;
}

void LogicalUnit::NexusLost(const Nexus& n) {
  uint64_t id = n.id;
  AbortIf([&](const Task& t) { return t.cmd->nexus && t.cmd->nexus->id == id; }, nullptr);
  std::string key = NexusIdOf(n).Key();
  std::lock_guard<std::mutex> l(st_mu_);
  auto it = uas_.find(key);
  if (it != uas_.end()) {
    ua_count_ -= it->second.size();
    uas_.erase(it);
  }
  if (spc2_holder_ && *spc2_holder_ == key) spc2_holder_.reset();
  UpdateReservedFlagLocked();
}

void LogicalUnit::RaiseUa(UnitAttention ua, const std::string& except_key) {
  std::lock_guard<std::mutex> l(st_mu_);
  for (auto& [key, q] : uas_) {
    if (key == except_key) continue;
    if (ua == UnitAttention::kPowerOnReset || ua == UnitAttention::kBusDeviceReset) {
      // A reset supersedes every pending unit attention.
      ua_count_ -= q.size();
      q.clear();
    } else if (std::find(q.begin(), q.end(), ua) != q.end()) {
      continue;
    }
    if (q.size() >= 16) { q.pop_front(); ua_count_--; }
    q.push_back(ua);
    ua_count_++;
  }
}

void LogicalUnit::ClearUa(const std::string& key, UnitAttention ua) {
  std::lock_guard<std::mutex> l(st_mu_);
  auto it = uas_.find(key);
  if (it == uas_.end()) return;
  auto& q = it->second;
  size_t before = q.size();
  q.erase(std::remove(q.begin(), q.end(), ua), q.end());
  ua_count_ -= before - q.size();
}

std::optional<Sense> LogicalUnit::TakeUa(const std::string& key) {
  std::lock_guard<std::mutex> l(st_mu_);
  auto it = uas_.find(key);
  if (it == uas_.end() || it->second.empty()) return std::nullopt;
  UnitAttention ua = it->second.front();
  it->second.pop_front();
  ua_count_--;
  return UnitAttentionSense(ua);
}

void LogicalUnit::RefreshCapacity(bool force) {
  uint64_t now = dev_->size_bytes() / block_size_;
  uint64_t old = blocks_.exchange(now);
  if (force || now != old) RaiseUa(UnitAttention::kCapacityChanged);
}

// -------------------------------------------------------------- gatekeeping

bool LogicalUnit::ReservationConflict(const ScsiCommand& c, uint8_t opc) {
  ItNexusId who = NexusIdOf(c.nexus ? *c.nexus : NoNexus());
  std::lock_guard<std::mutex> l(st_mu_);
  if (spc2_holder_ && *spc2_holder_ != who.Key()) {
    switch (opc) {
      case op::kInquiry: case op::kReportLuns: case op::kRequestSense:
      case op::kRelease6: case op::kRelease10: case op::kMaintenanceIn:
        return false;
      default:
        return true;
    }
  }
  const OpcodeInfo* info = LookupOpcode(opc, c.cdb[1] & 0x1f);
  if (!info) return false;
  Access a = info->access;
  if (opc == op::kStartStopUnit && (c.cdb[4] & 0x01) && (c.cdb[4] >> 4) == 0) a = Access::kAlways;
  if (opc == op::kPreventAllow && (c.cdb[4] & 0x03) == 0) a = Access::kAlways;
  return pr_.Conflicts(who, a);
}

void LogicalUnit::Start(const TaskPtr& t) {
  const ScsiCommand& c = *t->cmd;
  uint8_t opc = c.cdb[0];
  if (ua_count_.load(std::memory_order_acquire) != 0 && opc != op::kInquiry &&
      opc != op::kReportLuns && opc != op::kRequestSense) {
    if (auto s = TakeUa(NexusIdOf(c.nexus ? *c.nexus : NoNexus()).Key())) return Check(t, *s);
  }
  size_t len = CdbLengthForOpcode(opc);
  if (len && (c.cdb[len - 1] & 0x04)) return Check(t, Sense::InvalidFieldInCdb(uint16_t(len - 1), 2));
  if (any_reservation_.load(std::memory_order_acquire) && ReservationConflict(c, opc)) return Conflict(t);
  Execute(t);
}

void LogicalUnit::Execute(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  switch (cdb[0]) {
    case op::kTestUnitReady: return Good(t);
    case op::kRequestSense: return RequestSense(t);
    case op::kRead6: case op::kRead10: case op::kRead12: case op::kRead16:
    case op::kWrite6: case op::kWrite10: case op::kWrite12: case op::kWrite16:
    case op::kWriteVerify10: case op::kWriteVerify12: case op::kWriteVerify16:
      return ReadWrite(t);
    case op::kInquiry: return Inquiry(t);
    case op::kModeSelect6: return ModeSelect(t, false);
    case op::kModeSelect10: return ModeSelect(t, true);
    case op::kModeSense6: return ModeSense(t, false);
    case op::kModeSense10: return ModeSense(t, true);
    case op::kReserve6: case op::kReserve10: return ReserveRelease(t, true);
    case op::kRelease6: case op::kRelease10: return ReserveRelease(t, false);
    case op::kStartStopUnit: return StartStop(t);
    case op::kPreventAllow: return PreventAllow(t);
    case op::kReadCapacity10: return ReadCapacity10(t);
    case op::kVerify10: case op::kVerify12: case op::kVerify16: return Verify(t);
    case op::kSyncCache10: return SyncCache(t, false);
    case op::kSyncCache16: return SyncCache(t, true);
    case op::kPrefetch10: return Prefetch(t, false);
    case op::kPrefetch16: return Prefetch(t, true);
    case op::kReadDefectData10: return ReadDefectData(t, false);
    case op::kReadDefectData12: return ReadDefectData(t, true);
    case op::kOrWrite16: return OrWrite(t);
    case op::kExtendedCopy: return ExtendedCopy(t);
    case op::kReceiveCopyResults: return ReceiveCopyResults(t);
    case op::kWriteSame10: return WriteSame(t, false);
    case op::kWriteSame16: return WriteSame(t, true);
    case op::kUnmap: return Unmap(t);
    case op::kPrIn: return PrIn(t);
    case op::kPrOut: return PrOut(t);
    case op::kCompareAndWrite: return CompareAndWrite(t);
    case op::kServiceIn16:
      if ((cdb[1] & 0x1f) == 0x10) return ReadCapacity16(t);
      if ((cdb[1] & 0x1f) == 0x12) return GetLbaStatus(t);
      return Check(t, Sense::InvalidFieldInCdb(1, 4));
    case op::kMaintenanceIn:
      if ((cdb[1] & 0x1f) == 0x0c) return ReportOpcodes(t);
      if ((cdb[1] & 0x1f) == 0x0d) return ReportTmfs(t);
      return Check(t, Sense::InvalidFieldInCdb(1, 4));
    default:
      return Check(t, Sense::InvalidOpcode());
  }
}

}  // namespace ferry::scsi
