#include "target/scsi/persistent_reservations.h"

#include <algorithm>
#include <cctype>

#include "target/scsi/cdb.h"

namespace ferry::scsi {

namespace {

std::string Lower(const std::string& s) {
  std::string r = s;
  for (char& c : r) c = char(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

bool ValidType(uint8_t t) { return t == 1 || t == 3 || t == 5 || t == 6 || t == 7 || t == 8; }

PrOutcome Conflict() { PrOutcome o; o.conflict = true; return o; }
PrOutcome Fail(Sense s) { PrOutcome o; o.sense = s; return o; }

}  // namespace

std::string ItNexusId::Key() const { return Lower(port) + "|" + std::to_string(rtp); }

bool PersistentReservations::AllRegistrants(PrType t) {
  return t == PrType::kWeAllRegistrants || t == PrType::kEaAllRegistrants;
}
bool PersistentReservations::RegistrantsOnly(PrType t) {
  return t == PrType::kWeRegistrantsOnly || t == PrType::kEaRegistrantsOnly;
}

bool PersistentReservations::Matches(const Registration& r, const ItNexusId& who) const {
  return r.key_id == Lower(who.port) && (r.all_tg_pt || r.rtp == who.rtp);
}

int PersistentReservations::Find(const ItNexusId& who) const {
  for (size_t i = 0; i < regs_.size(); ++i)
    if (Matches(regs_[i], who)) return int(i);
  return -1;
}

bool PersistentReservations::IsHolder(const ItNexusId& who) const {
  if (!res_) return false;
  int i = Find(who);
  if (i < 0) return false;
  return AllRegistrants(res_->type) || res_->holder == i;
}

bool PersistentReservations::Conflicts(const ItNexusId& who, Access a) const {
  if (!res_ || a == Access::kAlways) return false;
  int i = Find(who);
  if (i >= 0 && (res_->holder == i || AllRegistrants(res_->type) || RegistrantsOnly(res_->type)))
    return false;
  bool exclusive_access = res_->type == PrType::kExclusiveAccess ||
                          res_->type == PrType::kEaRegistrantsOnly ||
                          res_->type == PrType::kEaAllRegistrants;
  return a == Access::kWrite || exclusive_access;
}

void PersistentReservations::NotifyAllExcept(int except, UnitAttention ua, PrOutcome* out) const {
  for (size_t i = 0; i < regs_.size(); ++i) {
    if (int(i) == except) continue;
    out->uas.push_back({ItNexusId{regs_[i].port, regs_[i].rtp}.Key(), ua});
  }
}

void PersistentReservations::Remove(int i, PrOutcome* out, UnitAttention ua, bool notify) {
  if (notify) out->uas.push_back({ItNexusId{regs_[i].port, regs_[i].rtp}.Key(), ua});
  if (res_) {
    if (AllRegistrants(res_->type)) {
      if (regs_.size() == 1) res_.reset();
    } else if (res_->holder == i) {
      res_.reset();
    } else if (res_->holder > i) {
      res_->holder--;
    }
  }
  regs_.erase(regs_.begin() + i);
}

PrOutcome PersistentReservations::Out(const ItNexusId& who, const uint8_t* cdb,
                                      const std::vector<uint8_t>& params) {
  uint8_t sa = cdb[1] & 0x1f;
  uint8_t scope = cdb[2] >> 4;
  uint8_t type = cdb[2] & 0x0f;
  uint32_t plen = Get32(cdb + 5);
  if (sa > 7) return Fail(Sense::InvalidFieldInCdb(1, 4));
  if (plen != params.size()) return Fail(Sense::ParamListLengthError());
  if (sa != 7 && plen != 24) {
    if (plen >= 24 && (params[20] & 0x08)) return Fail(Sense::InvalidFieldInParam(20, 3));
    return Fail(Sense::ParamListLengthError());
  }
  if (sa == 7 && plen < 24) return Fail(Sense::ParamListLengthError());
  uint64_t key = Get64(params.data());
  uint64_t sa_key = Get64(params.data() + 8);
  bool aptpl = sa == 7 ? (params[17] & 0x01) : (params[20] & 0x01);
  if (sa != 7 && (params[20] & 0x08)) return Fail(Sense::InvalidFieldInParam(20, 3));  // SPEC_I_PT
  if (aptpl) return Fail(Sense::InvalidFieldInParam(sa == 7 ? 17 : 20, 0));
  bool all_tg_pt = sa != 7 && (params[20] & 0x04);
  int self = Find(who);
  if (sa == 0 || sa == 6) return Register(who, self, sa == 6, key, sa_key, all_tg_pt);
  // Every other action needs a registered nexus with the right key.
  if (self < 0 || regs_[self].key != key) return Conflict();
  bool needs_type = sa == 1 || sa == 2 || ((sa == 4 || sa == 5) && res_.has_value());
  if (needs_type) {
    if (scope != 0) return Fail(Sense::InvalidFieldInCdb(2, 7));
    if (!ValidType(type)) return Fail(Sense::InvalidFieldInCdb(2, 3));
  }
  switch (sa) {
    case 1: return Reserve(self, PrType(type));
    case 2: return Release(self, PrType(type));
    case 3: return Clear(self);
    case 4: case 5: return Preempt(self, sa_key, PrType(type), sa == 5);
    default: return RegisterAndMove(self, sa_key, params);
  }
}

PrOutcome PersistentReservations::Register(const ItNexusId& who, int self, bool ignore, uint64_t key,
                                           uint64_t sa_key, bool all_tg_pt) {
  PrOutcome out;
  if (self < 0) {
    if (!ignore && key != 0) return Conflict();
    if (sa_key == 0) return out;
    regs_.push_back({who.port, Lower(who.port), who.rtp, all_tg_pt, sa_key});
    generation_++;
    return out;
  }
  if (!ignore && regs_[self].key != key) return Conflict();
  if (sa_key != 0) {
    regs_[self].key = sa_key;
    generation_++;
    return out;
  }
  // Unregister. A registrants-only reservation released by its holder's
  // departure tells the other registrants.
  bool released_ro = res_ && RegistrantsOnly(res_->type) && res_->holder == self;
  bool released_ar = res_ && AllRegistrants(res_->type) && regs_.size() == 1;
  (void)released_ar;
  if (released_ro) NotifyAllExcept(self, UnitAttention::kReservationsReleased, &out);
  Remove(self, &out, UnitAttention::kRegistrationsPreempted, false);
  generation_++;
  return out;
}

PrOutcome PersistentReservations::Reserve(int self, PrType type) {
  if (res_) {
    bool holder = AllRegistrants(res_->type) || res_->holder == self;
    if (!holder || res_->type != type) return Conflict();
    return {};
  }
  res_ = Reservation{type, self};
  return {};
}

PrOutcome PersistentReservations::Release(int self, PrType type) {
  PrOutcome out;
  if (!res_) return out;
  bool holder = AllRegistrants(res_->type) || res_->holder == self;
  if (!holder) return out;
  if (res_->type != type) return Fail(Sense::Make(sk::kIllegalRequest, 0x26, 0x04));
  PrType old = res_->type;
  res_.reset();
  if (RegistrantsOnly(old) || AllRegistrants(old)) NotifyAllExcept(self, UnitAttention::kReservationsReleased, &out);
  return out;
}

PrOutcome PersistentReservations::Clear(int self) {
  PrOutcome out;
  NotifyAllExcept(self, UnitAttention::kReservationsPreempted, &out);
  regs_.clear();
  res_.reset();
  generation_++;
  return out;
}

PrOutcome PersistentReservations::Preempt(int self, uint64_t sa_key, PrType type, bool abort) {
  PrOutcome out;
  auto remove_key = [&](uint64_t k) {
    int removed = 0;
    for (int i = int(regs_.size()) - 1; i >= 0; --i) {
      if (i == self || regs_[i].key != k) continue;
      std::string nk = ItNexusId{regs_[i].port, regs_[i].rtp}.Key();
      if (abort) out.abort_nexus_keys.push_back(nk);
      out.uas.push_back({nk, UnitAttention::kRegistrationsPreempted});
      regs_.erase(regs_.begin() + i);
      if (res_ && !AllRegistrants(res_->type)) {
        if (res_->holder == i) res_->holder = -1;
        else if (res_->holder > i) res_->holder--;
      }
      if (i < self) self--;
      removed++;
    }
    return removed;
  };
  if (!res_) {
    if (sa_key == 0) return Fail(Sense::InvalidFieldInParam(8));
    if (remove_key(sa_key) == 0) return Conflict();
    generation_++;
    return out;
  }
  if (AllRegistrants(res_->type)) {
    if (sa_key == 0) {
      for (int i = int(regs_.size()) - 1; i >= 0; --i) {
        if (i == self) continue;
        std::string nk = ItNexusId{regs_[i].port, regs_[i].rtp}.Key();
        if (abort) out.abort_nexus_keys.push_back(nk);
        out.uas.push_back({nk, UnitAttention::kRegistrationsPreempted});
        regs_.erase(regs_.begin() + i);
        if (i < self) self--;
      }
      res_ = Reservation{type, self};
    } else if (remove_key(sa_key) == 0) {
      return Conflict();
    }
    generation_++;
    return out;
  }
  uint64_t holder_key = res_->holder >= 0 ? regs_[res_->holder].key : 0;
  if (sa_key == holder_key) {
    bool self_holds = res_->holder == self;
    PrType old_type = res_->type;
    remove_key(sa_key);
    res_ = Reservation{type, self};
    // Registrants that kept their registration but saw the reservation's
    // type or holder change are told so.
    if (!self_holds || old_type != type) {
      for (size_t i = 0; i < regs_.size(); ++i) {
        if (int(i) == self) continue;
        out.uas.push_back({ItNexusId{regs_[i].port, regs_[i].rtp}.Key(), UnitAttention::kReservationsReleased});
      }
    }
  } else {
    if (sa_key == 0) return Fail(Sense::InvalidFieldInParam(8));
    if (remove_key(sa_key) == 0) return Conflict();
  }
  generation_++;
  return out;
}

PrOutcome PersistentReservations::RegisterAndMove(int self, uint64_t sa_key, const std::vector<uint8_t>& params) {
  if (!res_) return Conflict();
  if (AllRegistrants(res_->type) || res_->holder != self) return Conflict();
  if (sa_key == 0) return Fail(Sense::InvalidFieldInParam(8));
  bool unreg = params[17] & 0x02;
  uint16_t rtp = Get16(&params[18]);
  uint32_t tid_len = Get32(&params[20]);
  if (size_t(tid_len) + 24 > params.size()) return Fail(Sense::ParamListLengthError());
  size_t used = 0;
  auto port = ParseIscsiTransportId(params.data() + 24, tid_len, &used);
  if (!port) return Fail(Sense::InvalidFieldInParam(24));
  ItNexusId dest{*port, rtp};
  if (Matches(regs_[self], dest)) return Fail(Sense::InvalidFieldInParam(24));
  PrOutcome out;
  int d = Find(dest);
  if (d < 0) {
    regs_.push_back({dest.port, Lower(dest.port), dest.rtp, false, sa_key});
    d = int(regs_.size()) - 1;
  } else {
    regs_[d].key = sa_key;
  }
  res_->holder = d;
  if (unreg) {
    regs_.erase(regs_.begin() + self);
    if (d > self) res_->holder--;
  }
  generation_++;
  return out;
}

std::optional<Sense> PersistentReservations::In(const uint8_t* cdb, std::vector<uint8_t>* data) const {
  uint8_t sa = cdb[1] & 0x1f;
  std::vector<uint8_t>& d = *data;
  d.assign(8, 0);
  Put32(&d[0], generation_);
  switch (sa) {
    case 0: {  // READ KEYS
      for (const auto& r : regs_) {
        uint8_t k[8]; Put64(k, r.key); d.insert(d.end(), k, k + 8);
      }
      break;
    }
    case 1: {  // READ RESERVATION
      if (res_) {
        d.resize(24, 0);
        uint64_t key = AllRegistrants(res_->type) || res_->holder < 0 ? 0 : regs_[res_->holder].key;
        Put64(&d[8], key);
        d[21] = uint8_t(res_->type);
      }
      break;
    }
    case 2: {  // REPORT CAPABILITIES
      d.assign(8, 0);
      Put16(&d[0], 8);
      d[2] = 0x10 | 0x04;  // CRH, ATP_C
      d[3] = 0x80 | (1 << 4);  // TMV, ALLOW COMMANDS = 001b
      d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02;  // WR_EX_AR EX_AC_RO WR_EX_RO EX_AC WR_EX
      d[5] = 0x01;  // EX_AC_AR
      return std::nullopt;
    }
    case 3: {  // READ FULL STATUS
      for (size_t i = 0; i < regs_.size(); ++i) {
        const auto& r = regs_[i];
        std::vector<uint8_t> desc(24, 0);
        Put64(&desc[0], r.key);
        bool holder = res_ && (AllRegistrants(res_->type) || res_->holder == int(i));
        desc[12] = uint8_t((r.all_tg_pt ? 0x02 : 0) | (holder ? 0x01 : 0));
        if (holder) desc[13] = uint8_t(res_->type);
        Put16(&desc[18], r.all_tg_pt ? 0 : r.rtp);
        std::vector<uint8_t> tid = MakeIscsiTransportId(r.port);
        Put32(&desc[20], uint32_t(tid.size()));
        desc.insert(desc.end(), tid.begin(), tid.end());
        d.insert(d.end(), desc.begin(), desc.end());
      }
      break;
    }
    default:
      return Sense::InvalidFieldInCdb(1, 4);
  }
  Put32(&d[4], uint32_t(d.size() - 8));
  return std::nullopt;
}

std::optional<std::string> ParseIscsiTransportId(const uint8_t* p, size_t len, size_t* used) {
  if (len < 24 || (p[0] & 0x0f) != 5) return std::nullopt;
  uint8_t format = p[0] >> 6;
  if (format > 1) return std::nullopt;
  size_t add = Get16(p + 2);
  if (add < 20 || add % 4 != 0 || add + 4 > len) return std::nullopt;
  const char* s = reinterpret_cast<const char*>(p + 4);
  size_t n = 0;
  while (n < add && s[n] != '\0') ++n;
  if (n == add || n == 0) return std::nullopt;  // must be NUL-terminated, non-empty
  std::string text(s, n);
  if (format == 1 && text.find(",i,0x") == std::string::npos) return std::nullopt;
  *used = add + 4;
  return text;
}

std::vector<uint8_t> MakeIscsiTransportId(const std::string& port) {
  bool with_isid = port.find(",i,0x") != std::string::npos;
  size_t body = port.size() + 1;
  size_t padded = std::max<size_t>(20, (body + 3) / 4 * 4);
  std::vector<uint8_t> t(4 + padded, 0);
  t[0] = uint8_t((with_isid ? 0x40 : 0x00) | 0x05);
  Put16(&t[2], uint16_t(padded));
  std::copy(port.begin(), port.end(), t.begin() + 4);
  return t;
}

}  // namespace ferry::scsi
