#include "target/scsi/target.h"

#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.h"
#include "target/scsi/logical_unit.h"
#include "target/scsi/sense.h"

namespace ferry::scsi {

namespace {
constexpr uint64_t kMaxLun = 16383;
constexpr uint64_t kReportLunsWlun = 0xc101;

ScsiResult CheckResult(const Sense& s) {
  ScsiResult r;
  r.status = kStatusCheckCondition;
  r.sense = s.Encode(false);
  return r;
}
}  // namespace

void EncodeLun(uint64_t lun, uint8_t out[8]) {
  std::memset(out, 0, 8);
  if (lun == kReportLunsWlun) {
    out[0] = 0xc1;
    out[1] = 0x01;
  } else if (lun < 256) {
    out[1] = uint8_t(lun);
  } else {
    out[0] = uint8_t(0x40 | ((lun >> 8) & 0x3f));
    out[1] = uint8_t(lun);
  }
}

Target::Target(TargetOptions opts) : opts_(std::move(opts)) {}
Target::~Target() = default;

std::shared_ptr<LogicalUnit> Target::Find(uint64_t lun) const {
  std::shared_lock<std::shared_mutex> l(mu_);
  auto it = luns_.find(lun);
  return it == luns_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<LogicalUnit>> Target::All() const {
  std::shared_lock<std::shared_mutex> l(mu_);
  std::vector<std::shared_ptr<LogicalUnit>> v;
  for (const auto& [n, lu] : luns_) v.push_back(lu);
  return v;
}

Status Target::AddLun(uint64_t lun, std::shared_ptr<blockdev::BlockDevice> dev, LunIdentity id) {
  if (lun > kMaxLun) return Status::InvalidArgument("LUN " + std::to_string(lun) + " out of range 0..16383");
  if (!dev) return Status::InvalidArgument("no block device");
  if (id.volume_name.empty()) return Status::InvalidArgument("empty volume name");
  uint32_t bs = dev->block_size();
  if (bs < 512 || bs > 65536 || (bs & (bs - 1)) != 0) return Status::InvalidArgument("bad block size");
  if (dev->size_bytes() < bs || dev->size_bytes() % bs != 0)
    return Status::InvalidArgument("device size " + std::to_string(dev->size_bytes()) +
                                   " is not a positive multiple of the block size");
  auto lu = std::make_shared<LogicalUnit>(lun, std::move(dev), std::move(id), opts_.iqn,
                                          opts_.logger.Child("lun" + std::to_string(lun)));
  std::vector<std::shared_ptr<LogicalUnit>> others;
  {
    std::unique_lock<std::shared_mutex> l(mu_);
    if (luns_.count(lun)) return Status::AlreadyExists("LUN " + std::to_string(lun) + " exists");
    for (const auto& [nid, key] : nexuses_) lu->NexusAdded(key);
    for (const auto& [n, other] : luns_) others.push_back(other);
    luns_[lun] = lu;
  }
  for (const auto& o : others) o->RaiseUa(UnitAttention::kReportedLunsChanged);
  opts_.logger.Info("added LUN " + std::to_string(lun) + " (" + lu->Info().identity.volume_name + ")");
  return Status::Ok();
}

Status Target::RemoveLun(uint64_t lun) {
  std::vector<std::shared_ptr<LogicalUnit>> others;
  {
    std::unique_lock<std::shared_mutex> l(mu_);
    if (!luns_.erase(lun)) return Status::NotFound("LUN " + std::to_string(lun) + " does not exist");
    for (const auto& [n, other] : luns_) others.push_back(other);
  }
  for (const auto& o : others) o->RaiseUa(UnitAttention::kReportedLunsChanged);
  opts_.logger.Info("removed LUN " + std::to_string(lun));
  return Status::Ok();
}

Status Target::NotifyCapacityChanged(uint64_t lun) {
  auto lu = Find(lun);
  if (!lu) return Status::NotFound("LUN " + std::to_string(lun) + " does not exist");
  lu->RefreshCapacity(true);
  return Status::Ok();
}

std::vector<LunInfo> Target::Luns() const {
  std::vector<LunInfo> v;
  for (const auto& lu : All()) v.push_back(lu->Info());
  return v;
}

bool Target::HasLun(uint64_t lun) const { return Find(lun) != nullptr; }

std::vector<uint8_t> Target::ReportLuns(uint8_t select, uint64_t) const {
  std::vector<uint64_t> list;
  if (select == 0x00 || select == 0x02) {
    std::shared_lock<std::shared_mutex> l(mu_);
    for (const auto& [n, lu] : luns_) list.push_back(n);
  }
  if (select == 0x01 || select == 0x02) list.push_back(kReportLunsWlun);
  std::vector<uint8_t> d(8, 0);
  for (uint64_t n : list) {
    uint8_t e[8];
    EncodeLun(n, e);
    d.insert(d.end(), e, e + 8);
  }
  Put32(&d[0], uint32_t(d.size() - 8));
  return d;
}

void Target::Submit(std::unique_ptr<ScsiCommand> cmd, Completion done) {
  if (cmd->cdb[0] == op::kReportLuns) {
    uint8_t select = cmd->cdb[2];
    if (select > 0x02 && (select < 0x10 || select > 0x12)) return done(CheckResult(Sense::InvalidFieldInCdb(2)));
    if (cmd->cdb[11] & 0x04) return done(CheckResult(Sense::InvalidFieldInCdb(11, 2)));
    ScsiResult r;
    r.data_in = ReportLuns(select, cmd->lun);
    uint32_t alloc = Get32(cmd->cdb + 6);
    if (r.data_in.size() > alloc) r.data_in.resize(alloc);
    if (cmd->nexus) {
      std::string key = NexusIdOf(*cmd->nexus).Key();
      for (const auto& lu : All()) lu->ClearUa(key, UnitAttention::kReportedLunsChanged);
    }
    return done(std::move(r));
  }
  auto lu = Find(cmd->lun);
  if (!lu) return ExecuteNoLun(*cmd, std::move(done));
  lu->Submit(std::move(cmd), std::move(done));
}

void Target::ExecuteNoLun(const ScsiCommand& cmd, Completion done) {
  const uint8_t* cdb = cmd.cdb;
  bool wlun = cmd.lun == kReportLunsWlun;
  switch (cdb[0]) {
    case op::kInquiry: {
      if ((cdb[1] & 0x03) || cdb[2] != 0) {
        if (!wlun) return done(CheckResult(Sense::LunNotSupported()));
        return done(CheckResult(Sense::InvalidFieldInCdb(cdb[1] & 0x02 ? 1 : 2)));
      }
      ScsiResult r;
      r.data_in.assign(36, 0);
      r.data_in[0] = wlun ? 0x1e : 0x7f;  // well known LU / no LU at this number
      r.data_in[2] = 0x06;
      r.data_in[3] = 0x12;
      r.data_in[4] = 31;
      std::memcpy(&r.data_in[8], "FERRY   ", 8);
      std::memcpy(&r.data_in[16], wlun ? "REPORT LUNS WLUN" : "NO LUN          ", 16);
      std::memcpy(&r.data_in[32], "0001", 4);
      uint16_t alloc = Get16(cdb + 3);
      if (r.data_in.size() > alloc) r.data_in.resize(alloc);
      return done(std::move(r));
    }
    case op::kRequestSense: {
      ScsiResult r;
      r.data_in = wlun ? Sense::Make(sk::kNoSense, 0, 0).Encode(cdb[1] & 1)
                       : Sense::LunNotSupported().Encode(cdb[1] & 1);
      if (r.data_in.size() > cdb[4]) r.data_in.resize(cdb[4]);
      return done(std::move(r));
    }
    case op::kTestUnitReady:
      if (wlun) return done(ScsiResult{});
      [[fallthrough]];
    default:
      if (wlun) return done(CheckResult(Sense::InvalidOpcode()));
      return done(CheckResult(Sense::LunNotSupported()));
  }
}

TmfResult Target::AbortTask(const Nexus& n, uint32_t tag) {
  for (const auto& lu : All())
    if (lu->AbortTask(n.id, tag)) return TmfResult::kComplete;
  return TmfResult::kTaskDoesNotExist;
}

TmfResult Target::AbortTaskSet(const Nexus& n, uint64_t lun) {
  auto lu = Find(lun);
  if (!lu) return TmfResult::kLunDoesNotExist;
  lu->AbortTaskSet(n.id);
  return TmfResult::kComplete;
}

TmfResult Target::ClearTaskSet(const Nexus& n, uint64_t lun) {
  auto lu = Find(lun);
  if (!lu) return TmfResult::kLunDoesNotExist;
  lu->ClearTaskSet(n);
  return TmfResult::kComplete;
}

TmfResult Target::LunReset(const Nexus&, uint64_t lun) {
  auto lu = Find(lun);
  if (!lu) return TmfResult::kLunDoesNotExist;
  lu->Reset(UnitAttention::kBusDeviceReset);
  return TmfResult::kComplete;
}

TmfResult Target::TargetReset(const Nexus&, bool) {
  for (const auto& lu : All()) lu->Reset(UnitAttention::kPowerOnReset);
  return TmfResult::kComplete;
}

void Target::NexusAdded(const Nexus& n) {
  std::string key = NexusIdOf(n).Key();
  std::vector<std::shared_ptr<LogicalUnit>> all;
  {
    std::unique_lock<std::shared_mutex> l(mu_);
    nexuses_[n.id] = key;
    for (const auto& [num, lu] : luns_) all.push_back(lu);
  }
  for (const auto& lu : all) lu->NexusAdded(key);
}

void Target::NexusLost(const Nexus& n) {
  std::vector<std::shared_ptr<LogicalUnit>> all;
  {
    std::unique_lock<std::shared_mutex> l(mu_);
    nexuses_.erase(n.id);
    for (const auto& [num, lu] : luns_) all.push_back(lu);
  }
  for (const auto& lu : all) lu->NexusLost(n);
}

}  // namespace ferry::scsi
