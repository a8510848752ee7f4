// SPC-4 command handlers of LogicalUnit: INQUIRY and VPD pages, REQUEST
// SENSE, MODE SENSE/SELECT, REPORT SUPPORTED OPERATION CODES / TMFs,
// RESERVE/RELEASE, PERSISTENT RESERVE IN/OUT, START STOP UNIT, PREVENT ALLOW.
#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.h"
#include "target/scsi/logical_unit.h"
#include "target/scsi/opcodes.h"

namespace ferry::scsi {

namespace {

void Truncate(std::vector<uint8_t>* d, size_t alloc) {
  if (d->size() > alloc) d->resize(alloc);
}

// Space-padded ASCII field.
void PutAscii(uint8_t* p, size_t n, const std::string& s) {
  std::memset(p, ' ', n);
  std::memcpy(p, s.data(), std::min(n, s.size()));
}

// Appends a designation descriptor to a VPD 0x83 page.
void AddDesignator(std::vector<uint8_t>* d, uint8_t proto_codeset, uint8_t piv_assoc_type,
                   const uint8_t* id, size_t len) {
  d->push_back(proto_codeset);
  d->push_back(piv_assoc_type);
  d->push_back(0);
  d->push_back(uint8_t(len));
  d->insert(d->end(), id, id + len);
}

void AddNameString(std::vector<uint8_t>* d, uint8_t piv_assoc_type, const std::string& name) {
  std::vector<uint8_t> s(name.begin(), name.end());
  s.push_back(0);
  while (s.size() % 4) s.push_back(0);
  if (s.size() > 252) return;  // longer than a descriptor may be
  AddDesignator(d, 0x53, piv_assoc_type, s.data(), s.size());
}

}  // namespace

std::vector<uint8_t> LogicalUnit::InquiryStandard() const {
  std::vector<uint8_t> d(96, 0);
  d[0] = 0x00;            // connected, direct access block device
  d[2] = 0x06;            // SPC-4
  d[3] = 0x12;            // HISUP, response data format 2
  d[4] = uint8_t(d.size() - 5);
  d[7] = 0x02;            // CMDQUE
  PutAscii(&d[8], 8, id_.vendor);
  PutAscii(&d[16], 16, id_.product);
  PutAscii(&d[32], 4, id_.revision);
  const uint16_t versions[] = {0x00a0 /*SAM-5*/, 0x0960 /*iSCSI*/, 0x0460 /*SPC-4*/, 0x04c0 /*SBC-3*/};
  for (size_t i = 0; i < 4; ++i) Put16(&d[58 + 2 * i], versions[i]);
  return d;
}

std::optional<Sense> LogicalUnit::InquiryVpd(uint8_t page, const Nexus* n, std::vector<uint8_t>* out) const {
  std::vector<uint8_t>& d = *out;
  d.assign(4, 0);
  d[1] = page;
  switch (page) {
    case 0x00:
      for (uint8_t p : {0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}) d.push_back(p);
      break;
    case 0x80: {
      std::string serial = id_.serial.empty() ? naa_hex_.substr(16) : id_.serial;
      d.insert(d.end(), serial.begin(), serial.end());
      break;
    }
    case 0x83: {
      AddDesignator(&d, 0x01, 0x03, naa_, sizeof(naa_));  // binary, LU, NAA
      std::string t10 = id_.vendor;
      t10.resize(8, ' ');
      t10 += id_.volume_name;
      if (t10.size() > 252) t10.resize(252);
      AddDesignator(&d, 0x02, 0x01, reinterpret_cast<const uint8_t*>(t10.data()), t10.size());  // ASCII, LU, T10
      if (n) {
        uint8_t rtp[4] = {0, 0, 0, 0};
        Put16(rtp + 2, n->relative_target_port);
        AddDesignator(&d, 0x51, 0x94, rtp, 4);  // iSCSI, PIV, target port, relative port
        if (!n->target_port.empty()) AddNameString(&d, 0x98, n->target_port);  // target port name
      }
      if (!target_iqn_.empty()) AddNameString(&d, 0xa8, target_iqn_);  // target device name
      break;
    }
    case 0xb0: {
      d.resize(64, 0);
      uint32_t bs = block_size_;
      d[4] = 0x01;  // WSNZ: WRITE SAME needs a non-zero NUMBER OF LOGICAL BLOCKS
      d[5] = LuLimits::kMaxCompareAndWriteBlocks;
      Put16(&d[6], uint16_t(std::max<uint32_t>(1, 4096 / bs)));
      Put32(&d[8], LuLimits::kMaxTransferBytes / bs);
      Put32(&d[12], LuLimits::kOptimalTransferBytes / bs);
      if (!read_only_) {
        Put32(&d[20], LuLimits::kMaxUnmapBlocks);
        Put32(&d[24], LuLimits::kMaxUnmapDescriptors);
        Put32(&d[28], std::max<uint32_t>(1, 4096 / bs));
        Put32(&d[32], 0x80000000u);  // UGAVALID, alignment 0
      }
      Put64(&d[36], LuLimits::kMaxWriteSameBlocks);
      break;
    }
    case 0xb1:
      d.resize(64, 0);
      Put16(&d[4], 0x0001);  // non-rotating medium
      break;
    case 0xb2:
      d.resize(8, 0);
      d[5] = read_only_ ? 0x04 : (0x80 | 0x40 | 0x20 | 0x04);  // LBPU LBPWS LBPWS10 LBPRZ
      d[6] = 0x02;  // thin provisioned
      break;
    default:
      return Sense::InvalidFieldInCdb(2);
  }
  Put16(&d[2], uint16_t(d.size() - 4));
  return std::nullopt;
}

void LogicalUnit::Inquiry(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  if (cdb[1] & 0x02) return Check(t, Sense::InvalidFieldInCdb(1, 1));  // CMDDT
  uint16_t alloc = Get16(cdb + 3);
  std::vector<uint8_t> d;
  if (!(cdb[1] & 0x01)) {
    if (cdb[2] != 0) return Check(t, Sense::InvalidFieldInCdb(2));
    d = InquiryStandard();
  } else if (auto s = InquiryVpd(cdb[2], t->cmd->nexus.get(), &d)) {
    return Check(t, *s);
  }
  Truncate(&d, alloc);
  Good(t, std::move(d));
}

void LogicalUnit::RequestSense(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  bool desc = cdb[1] & 0x01;
  std::optional<Sense> s;
  if (t->cmd->nexus) s = TakeUa(NexusIdOf(*t->cmd->nexus).Key());
  std::vector<uint8_t> d = s ? s->Encode(desc) : Sense::Make(sk::kNoSense, 0, 0).Encode(desc);
  Truncate(&d, cdb[4]);
  Good(t, std::move(d));
}

void LogicalUnit::ModeSense(const TaskPtr& t, bool ten) {
  const uint8_t* cdb = t->cmd->cdb;
  bool dbd = cdb[1] & 0x08;
  bool llbaa = ten && (cdb[1] & 0x10);
  uint8_t pc = cdb[2] >> 6, page = cdb[2] & 0x3f, subpage = cdb[3];
  size_t alloc = ten ? Get16(cdb + 7) : cdb[4];
  std::vector<uint8_t> pages;
  {
    std::lock_guard<std::mutex> l(st_mu_);
    if (auto s = mode_.Get(pc, page, subpage, 2, &pages)) return Check(t, *s);
  }
  std::vector<uint8_t> bd;
  uint64_t blocks = blocks_.load();
  if (!dbd) {
    if (llbaa) {
      bd.assign(16, 0);
      Put64(&bd[0], blocks);
      Put32(&bd[12], block_size_);
    } else {
      bd.assign(8, 0);
      Put32(&bd[0], uint32_t(std::min<uint64_t>(blocks, 0xffffffffull)));
      Put32(&bd[4], block_size_ & 0xffffff);
    }
  }
  uint8_t dsp = uint8_t(((read_only_ || swp_) ? 0x80 : 0) | 0x10);  // WP, DPOFUA
  std::vector<uint8_t> d;
  if (ten) {
    d.assign(8, 0);
    d[3] = dsp;
    d[4] = llbaa && !dbd ? 0x01 : 0;
    Put16(&d[6], uint16_t(bd.size()));
  } else {
    d.assign(4, 0);
    d[2] = dsp;
    d[3] = uint8_t(bd.size());
  }
  d.insert(d.end(), bd.begin(), bd.end());
  d.insert(d.end(), pages.begin(), pages.end());
  if (ten) Put16(&d[0], uint16_t(d.size() - 2));
  else d[0] = uint8_t(std::min<size_t>(255, d.size() - 1));
  Truncate(&d, alloc);
  Good(t, std::move(d));
}

void LogicalUnit::ModeSelect(const TaskPtr& t, bool ten) {
  const uint8_t* cdb = t->cmd->cdb;
  bool pf = cdb[1] & 0x10, sp = cdb[1] & 0x01;
  size_t plen = ten ? Get16(cdb + 7) : cdb[4];
  if (sp) return Check(t, Sense::InvalidFieldInCdb(1, 0));  // saving not supported
  if (plen == 0) return Good(t);
  const DataBuffer& p = t->cmd->data_out;
  if (p.size() < plen) return Check(t, Sense::ParamListLengthError());
  size_t hdr = ten ? 8 : 4;
  if (plen < hdr) return Check(t, Sense::ParamListLengthError());
  size_t bdl = ten ? Get16(&p[6]) : p[3];
  bool longlba = ten && (p[4] & 0x01);
  if (bdl != 0 && bdl != (longlba ? 16u : 8u)) return Check(t, Sense::InvalidFieldInParam(ten ? 6 : 3));
  if (hdr + bdl > plen) return Check(t, Sense::ParamListLengthError());
  if (bdl) {
    uint32_t len = longlba ? Get32(&p[hdr + 12]) : Get24(&p[hdr + 5]);
    if (len != block_size_) return Check(t, Sense::InvalidFieldInParam(uint16_t(hdr + (longlba ? 12 : 5))));
  }
  if (plen > hdr + bdl && !pf) return Check(t, Sense::InvalidFieldInCdb(1, 4));
  bool changed = false;
  {
    std::lock_guard<std::mutex> l(st_mu_);
    if (auto s = mode_.Select(p.data() + hdr + bdl, plen - hdr - bdl, hdr + bdl, &changed)) return Check(t, *s);
    wce_ = mode_.wce();
    d_sense_ = mode_.d_sense();
    swp_ = mode_.swp();
  }
  if (changed && t->cmd->nexus) RaiseUa(UnitAttention::kModeParametersChanged, NexusIdOf(*t->cmd->nexus).Key());
  Good(t);
}

void LogicalUnit::ReportOpcodes(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  bool rctd = cdb[2] & 0x80;
  uint8_t options = cdb[2] & 0x07;
  uint8_t req_op = cdb[3];
  uint16_t req_sa = Get16(cdb + 4);
  uint32_t alloc = Get32(cdb + 6);
  auto timeouts = [](const OpcodeInfo& o, std::vector<uint8_t>* d) {
    uint8_t td[12] = {0, 0x0a};
    Put32(td + 4, o.nominal_timeout_s);
    Put32(td + 8, o.nominal_timeout_s * 2);
    d->insert(d->end(), td, td + 12);
  };
  std::vector<uint8_t> d;
  if (options == 0) {
    d.assign(4, 0);
    for (const OpcodeInfo& o : AllOpcodes()) {
      uint8_t desc[8] = {o.opcode, 0, 0, 0, 0, 0, 0, 0};
      if (o.service_action >= 0) { Put16(desc + 2, uint16_t(o.service_action)); desc[5] |= 0x01; }
      if (rctd) desc[5] |= 0x02;
      Put16(desc + 6, o.cdb_len);
      d.insert(d.end(), desc, desc + 8);
      if (rctd) timeouts(o, &d);
    }
    Put32(&d[0], uint32_t(d.size() - 4));
  } else {
    bool has_sa = OpcodeHasServiceActions(req_op);
    const OpcodeInfo* o = nullptr;
    switch (options) {
      case 1:
        if (has_sa) return Check(t, Sense::InvalidFieldInCdb(2, 2));
        o = LookupOpcode(req_op, 0);
        break;
      case 2:
        if (!has_sa && LookupOpcode(req_op, 0)) return Check(t, Sense::InvalidFieldInCdb(2, 2));
        if (req_sa <= 0x1f) o = LookupOpcode(req_op, uint8_t(req_sa));
        if (o && o->service_action < 0) o = nullptr;
        break;
      case 3:
        if (has_sa) {
          if (req_sa <= 0x1f) o = LookupOpcode(req_op, uint8_t(req_sa));
        } else if (req_sa == 0) {
          o = LookupOpcode(req_op, 0);
        }
        break;
      default:
        return Check(t, Sense::InvalidFieldInCdb(2, 2));
    }
    d.assign(4, 0);
    if (!o) {
      d[1] = 0x01;  // not supported
    } else {
      d[1] = uint8_t(0x03 | (rctd ? 0x80 : 0));
      Put16(&d[2], o->cdb_len);
      d.insert(d.end(), o->usage, o->usage + o->cdb_len);
      if (o->service_action >= 0) d[5] = uint8_t(o->service_action);  // usage byte 1 carries the SA
      if (rctd) timeouts(*o, &d);
    }
  }
  Truncate(&d, alloc);
  Good(t, std::move(d));
}

void LogicalUnit::ReportTmfs(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  bool repd = cdb[2] & 0x80;
  std::vector<uint8_t> d(repd ? 16 : 4, 0);
  d[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;  // ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LUN RESET, TARGET RESET
  if (repd) d[3] = 0x0c;
  Truncate(&d, Get32(cdb + 6));
  Good(t, std::move(d));
}

void LogicalUnit::ReserveRelease(const TaskPtr& t, bool reserve) {
  const uint8_t* cdb = t->cmd->cdb;
  bool ten = cdb[0] == op::kReserve10 || cdb[0] == op::kRelease10;
  if (ten && (cdb[1] & 0x12)) return Check(t, Sense::InvalidFieldInCdb(1, 4));  // third party / long id
  if (!ten && (cdb[1] & 0x01)) return Check(t, Sense::InvalidFieldInCdb(1, 0));  // extents
  ItNexusId who = NexusIdOf(t->cmd->nexus ? *t->cmd->nexus : Nexus());
  std::string key = who.Key();
  bool conflict = false;
  {
    std::lock_guard<std::mutex> l(st_mu_);
    if (pr_.reserved() || pr_.registration_count() > 0) {
      // SPC-4 5.13.3 with CRH = 1.
      conflict = reserve ? !pr_.IsHolder(who) : !pr_.IsRegistered(who);
    } else if (reserve) {
      if (spc2_holder_ && *spc2_holder_ != key) conflict = true;
      else spc2_holder_ = key;
    } else if (spc2_holder_ && *spc2_holder_ == key) {
      spc2_holder_.reset();
    }
    UpdateReservedFlagLocked();
  }
  if (conflict) return Conflict(t);
  Good(t);
}

void LogicalUnit::PrIn(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  std::vector<uint8_t> d;
  {
    std::lock_guard<std::mutex> l(st_mu_);
    if (auto s = pr_.In(cdb, &d)) return Check(t, *s);
  }
  Truncate(&d, Get16(cdb + 7));
  Good(t, std::move(d));
}

void LogicalUnit::PrOut(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  uint32_t plen = Get32(cdb + 5);
  if ((cdb[1] & 0x1f) > 7) return Check(t, Sense::InvalidFieldInCdb(1, 4));
  const DataBuffer& data = t->cmd->data_out;
  if (data.size() < plen) return Check(t, Sense::ParamListLengthError());
  std::vector<uint8_t> params(data.begin(), data.begin() + plen);
  ItNexusId who = NexusIdOf(t->cmd->nexus ? *t->cmd->nexus : Nexus());
  PrOutcome out;
  {
    std::lock_guard<std::mutex> l(st_mu_);
    if (spc2_holder_ && *spc2_holder_ != who.Key()) {
      out.conflict = true;
    } else {
      out = pr_.Out(who, cdb, params);
      for (const PrEvent& e : out.uas) {
        auto& q = uas_[e.nexus_key];
        if (std::find(q.begin(), q.end(), e.ua) == q.end()) {
          q.push_back(e.ua);
          ua_count_++;
        }
      }
      UpdateReservedFlagLocked();
    }
  }
  if (!out.abort_nexus_keys.empty()) {
    const auto& keys = out.abort_nexus_keys;
    AbortIf([&](const Task& x) {
      if (!x.cmd->nexus) return false;
      return std::find(keys.begin(), keys.end(), NexusIdOf(*x.cmd->nexus).Key()) != keys.end();
    }, nullptr);
  }
  if (out.conflict) return Conflict(t);
  if (out.sense) return Check(t, *out.sense);
  Good(t);
}

void LogicalUnit::StartStop(const TaskPtr& t) {
  // No medium to spin or eject: every valid form succeeds; stopping
  // (START = 0 without NO_FLUSH) flushes the write cache first.
  const uint8_t* cdb = t->cmd->cdb;
  bool start = cdb[4] & 0x01, no_flush = cdb[4] & 0x04;
  uint8_t power = cdb[4] >> 4;
  if (power == 0 && !start && !no_flush) {
    auto self = shared_from_this();
    dev_->Flush([self, t](Status s) {
      if (!s.ok()) return self->Check(t, self->DeviceError(s, true));
      self->Good(t);
    });
    return;
  }
  Good(t);
}

void LogicalUnit::PreventAllow(const TaskPtr& t) { Good(t); }

}  // namespace ferry::scsi
