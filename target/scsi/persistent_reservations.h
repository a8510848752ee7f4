// PersistentReservations: SPC-4 persistent reservation state of one logical
// unit (registrations, the reservation, the generation) and the PERSISTENT
// RESERVE IN / OUT service actions over it.
//
// Promise: pure state machine, no I/O, not thread-safe (LogicalUnit holds
// its lock). Out() validates before it changes anything; its outcome lists
// the unit attentions to raise and the I_T nexuses whose tasks PREEMPT AND
// ABORT must abort. APTPL is refused (PTPL_C = 0), SPEC_I_PT is refused
// (SIP_C = 0), ALL_TG_PT is honoured (ATP_C = 1). Types: WE, EA, WERO, EARO,
// WEAR, EAAR; scope LU only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "target/scsi/sense.h"

namespace ferry::scsi {

// One I_T nexus as PR sees it: the initiator port TransportID text
// ("iqn...,i,0x<isid>", compared case-insensitively) and the relative target port.
struct ItNexusId {
  std::string port;
  uint16_t rtp = 1;
  std::string Key() const;  // normalised identity, used for UA queues too
};

enum class PrType : uint8_t {
  kWriteExclusive = 1, kExclusiveAccess = 3, kWeRegistrantsOnly = 5,
  kEaRegistrantsOnly = 6, kWeAllRegistrants = 7, kEaAllRegistrants = 8,
};

// How a command touches the medium, for the reservation conflict tables.
enum class Access : uint8_t { kAlways, kRead, kWrite };

struct PrEvent {
  std::string nexus_key;
  UnitAttention ua;
};

struct PrOutcome {
  bool conflict = false;            // RESERVATION CONFLICT status
  std::optional<Sense> sense;       // CHECK CONDITION
  std::vector<PrEvent> uas;
  std::vector<std::string> abort_nexus_keys;
};

class PersistentReservations {
 public:
  // PERSISTENT RESERVE OUT (cdb is 10 bytes; params is the parameter list).
  PrOutcome Out(const ItNexusId& who, const uint8_t* cdb, const std::vector<uint8_t>& params);
  // PERSISTENT RESERVE IN: fills *data (untruncated); sense on a bad field.
  std::optional<Sense> In(const uint8_t* cdb, std::vector<uint8_t>* data) const;

  // True when `who` may not run a command of class `a` (SPC-4 5.9.1 tables).
  bool Conflicts(const ItNexusId& who, Access a) const;
  bool reserved() const { return res_.has_value(); }
  bool IsRegistered(const ItNexusId& who) const { return Find(who) >= 0; }
  bool IsHolder(const ItNexusId& who) const;
  uint32_t generation() const { return generation_; }
  size_t registration_count() const { return regs_.size(); }

 private:
  struct Registration {
    std::string port;      // as given (for TransportIDs)
    std::string key_id;    // normalised port
    uint16_t rtp = 1;
    bool all_tg_pt = false;
    uint64_t key = 0;
  };
  struct Reservation {
    PrType type;
    int holder = -1;       // index into regs_ (ignored for all-registrants types)
  };
  int Find(const ItNexusId& who) const;
  bool Matches(const Registration& r, const ItNexusId& who) const;
  static bool AllRegistrants(PrType t);
  static bool RegistrantsOnly(PrType t);
  // Removes regs_[i]; fixes the holder index; returns false if it held the reservation.
  void Remove(int i, PrOutcome* out, UnitAttention ua, bool notify);
  void NotifyAllExcept(int except, UnitAttention ua, PrOutcome* out) const;

  PrOutcome Register(const ItNexusId& who, int self, bool ignore, uint64_t key, uint64_t sa_key, bool all_tg_pt);
  PrOutcome Reserve(int self, PrType type);
  PrOutcome Release(int self, PrType type);
  PrOutcome Clear(int self);
  PrOutcome Preempt(int self, uint64_t sa_key, PrType type, bool abort);
  PrOutcome RegisterAndMove(int self, uint64_t sa_key, const std::vector<uint8_t>& params);

  std::vector<Registration> regs_;
  std::optional<Reservation> res_;
  uint32_t generation_ = 0;
};

// Parses an iSCSI TransportID (protocol identifier 5, format 00 or 01) into
// the "name,i,0x<isid>" text (or "name" for format 00). nullopt if malformed;
// *used receives its length in bytes.
std::optional<std::string> ParseIscsiTransportId(const uint8_t* p, size_t len, size_t* used);
// Builds the format 01 TransportID for "name,i,0x<isid>" (format 00 if no ",i,").
std::vector<uint8_t> MakeIscsiTransportId(const std::string& port);

}  // namespace ferry::scsi
