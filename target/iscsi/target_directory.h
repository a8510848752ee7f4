// TargetDirectory: what the iSCSI transport asks the process about its targets.
//
// Promise (of implementations, which live in the process, e.g. target/server):
// every method is thread-safe and quick (no I/O, no blocking); it is called by
// connection threads during login, discovery and session checks. The transport
// keeps the returned sink alive for as long as a session uses it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "target/scsi/scsi_task.h"

namespace ferry::iscsi {

// CHAP credentials. Empty chap_user = no CHAP (AuthMethod=None accepted).
// A non-empty mutual_user asks the target to answer the initiator's challenge
// with mutual_user / mutual_secret (bidirectional CHAP).
struct TargetAuth {
  std::string chap_user;
  std::string chap_secret;
  std::string mutual_user;
  std::string mutual_secret;
  bool chap_required() const { return !chap_user.empty(); }
};

struct TargetEntry {
  std::string iqn;
  uint16_t tpgt = 1;                         // target portal group tag
  std::shared_ptr<scsi::CommandSink> sink;   // the SCSI device server of this target
  TargetAuth auth;
  std::string alias;                         // optional TargetAlias
};

// One SendTargets record. Empty `addresses` = the transport fills in its own
// portals ("ip:port,tpgt", the portal the initiator connected to first).
struct DiscoveredTarget {
  std::string iqn;
  uint16_t tpgt = 1;
  std::vector<std::string> addresses;        // "ip:port,tpgt" or "[v6]:port,tpgt"
};

class TargetDirectory {
 public:
  virtual ~TargetDirectory() = default;
  // The target named `iqn`, or nullopt when it does not exist.
  virtual std::optional<TargetEntry> Find(const std::string& iqn) = 0;
  // ACL check: may `initiator_name` connecting from `initiator_addr` (an IP
  // address without port) log in to `iqn`?
  virtual bool Admits(const std::string& iqn, const std::string& initiator_name,
                      const std::string& initiator_addr) = 0;
  // SendTargets: the targets this initiator may see (already ACL-filtered).
  // `local_portal` is "ip:port" of the portal the request came in on.
  virtual std::vector<DiscoveredTarget> Discover(const std::string& initiator_name,
                                                 const std::string& initiator_addr,
                                                 const std::string& local_portal) = 0;
  // CHAP for discovery sessions; empty chap_user = discovery needs no CHAP.
  virtual TargetAuth DiscoveryAuth() = 0;
};

}  // namespace ferry::iscsi
