// The ferry-target's configuration model: targets, their ACL and CHAP, LUNs
// (volume, gateways, preferred/current gateway, epoch, switchable), the
// failover timeouts and fixed mode — plus validation and the JSON form used by
// the state file.
//
// Promise: plain values, no I/O, no locks. Validate*() return kInvalidArgument
// with a message naming the bad field; nothing is ever half-applied by them.
// StateToJson/StateFromJson round-trip exactly (secrets included: the state
// file is private to the target, mode 0600).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "target/common/status.h"
#include "target/server/json_util.h"

namespace ferry::server {

struct Acl {
  std::vector<std::string> initiators;  // exact initiator names
  std::vector<std::string> addresses;   // "ip" or "ip/prefix" (IPv4 or IPv6)
  bool operator==(const Acl&) const = default;
};

struct Chap {
  std::string user, secret;                // initiator authenticates to the target
  std::string mutual_user, mutual_secret;  // target authenticates to the initiator
  bool enabled() const { return !user.empty(); }
  bool operator==(const Chap&) const = default;
};

struct LunSpec {
  uint32_t lun = 0;
  std::string volume;
  std::vector<std::string> gateways;  // "host:nbdport", in failover order
  std::string preferred;
  std::string current;   // gateway in use (persisted after each switch)
  uint64_t epoch = 1;    // fencing epoch in use
  bool switchable = true;
  uint64_t size = 0;     // bytes, last known (lets a restart serve without a gateway)
  bool operator==(const LunSpec&) const = default;
};

struct TargetSpec {
  std::string iqn;
  uint32_t tid = 0;
  bool open = false;  // admits any loopback initiator without CHAP when the process runs --demo-open
  Acl acl;
  Chap chap;
  std::map<uint32_t, LunSpec> luns;
  bool operator==(const TargetSpec&) const = default;
};

// Seconds, DESIGN.md "Failover semantics".
struct TimeoutValues {
  int64_t read = 60, write = 60, readretry = 86400, writeretry = 86400, sw = 0, recovery = 120,
          reconnect = 60;
  bool operator==(const TimeoutValues&) const = default;
  // Names: read write readretry writeretry switch recovery reconnect.
  static const std::vector<std::string>& Names();
  std::optional<int64_t> Get(const std::string& name) const;
  // Validates (all > 0 except switch >= 0; recovery, reconnect multiples of 10) and sets.
  Status Set(const std::string& name, int64_t seconds);
};

struct ServerState {
  std::map<std::string, TargetSpec> targets;  // by iqn
  TimeoutValues timeouts;
  std::string fixed_gateway;  // "" = fixed mode off
  bool operator==(const ServerState&) const = default;
};

constexpr uint32_t kMaxLun = 16383;  // SAM flat space addressing

Status ValidateIqn(const std::string& iqn);
Status ValidateVolumeName(const std::string& name);
Status ValidateGateway(const std::string& hostport);
Status ValidateAcl(const Acl& acl);
Status ValidateChap(const Chap& chap);
// Checks a LUN request: name, gateways non-empty and distinct, preferred and
// current among them, lun in range.
Status ValidateLun(const LunSpec& lun);

// True if `addr` (an IP, no port) matches "ip" or "ip/prefix".
bool AddressMatches(const std::string& pattern, const std::string& addr);
bool IsLoopback(const std::string& addr);
// Strips ":port" (and [] for IPv6) from a peer string "ip:port".
std::string PeerIp(const std::string& peer);

std::string StateToJson(const ServerState& s);
Result<ServerState> StateFromJson(const std::string& text);

// The pieces of the JSON form, shared with the state journal
// (state_journal.h): one LUN object; a target's own fields (iqn, tid, open,
// acl, chap — not its LUNs) written into the object being built; the
// timeouts object. The readers validate as StateFromJson does.
void WriteLun(JsonWriter& w, const LunSpec& l);
void WriteTargetFields(JsonWriter& w, const TargetSpec& t);
void WriteTimeouts(JsonWriter& w, const TimeoutValues& t);
Result<LunSpec> LunFromJson(const JsonObject& o);
Result<TargetSpec> TargetFieldsFromJson(const JsonObject& o);  // luns left empty
Status TimeoutsFromJson(const JsonObject& o, TimeoutValues* out);

}  // namespace ferry::server
