// IscsiServer: the iSCSI transport (RFC 7143) on one or more listening portals.
//
// Promise: Start() binds every listen address (or fails with nothing left
// bound); each accepted connection gets one reader thread that does login,
// negotiation, CHAP, discovery and the full-feature phase, handing complete
// SCSI commands to the target's scsi::CommandSink. Completions may arrive on
// any thread; they are written back directly (writev, under the connection's
// send lock). Every wait has a timeout (login, NOP-In ping). Stop() closes
// every portal and session and joins every thread it started; the destructor
// calls Stop(). All public methods are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "target/common/config.h"
#include "target/common/logger.h"
#include "target/common/status.h"
#include "target/iscsi/target_directory.h"

namespace ferry::iscsi {

// Operational negotiation: what the target offers / accepts (RFC 7143 §13).
struct NegotiationLimits {
  uint32_t max_recv_data_segment_length = 262144;  // what the target can receive (declared)
  uint32_t max_burst_length = 16776192;            // upper bound accepted (min function)
  uint32_t first_burst_length = 16776192;          // upper bound accepted (min function)
  uint32_t max_outstanding_r2t = 16;               // upper bound accepted (min function)
  bool initial_r2t = false;                        // target's value (OR function)
  bool immediate_data = true;                      // target's value (AND function)
  bool allow_header_digest = true;                 // accept CRC32C if offered
  bool allow_data_digest = true;
  uint32_t default_time2wait = 2;                  // max function
  uint32_t default_time2retain = 0;                // min function (ERL 0)
};

struct IscsiServerOptions {
  std::vector<std::string> listen = {"127.0.0.1:3260"};  // "host:port", port 0 = any
  size_t max_sessions = 1024;
  size_t max_connections_pending_login = 256;
  uint32_t queue_depth = 128;            // commands in flight per session (CmdSN window)
  NegotiationLimits negotiation;
  int nop_interval_ms = 5000;            // idle time before the target pings (0 = never)
  int nop_timeout_ms = 30000;            // no answer in this time = connection dropped
  int login_timeout_ms = 15000;          // whole login phase
  int send_timeout_ms = 30000;           // a blocked socket write beyond this drops the connection
  bool splice_reads = true;              // let the SCSI layer hand read data over in pipes (no DataDigest)
};

// One logged-in session, for the admin API.
struct SessionInfo {
  std::string target_iqn;      // empty for discovery sessions
  std::string initiator_name;
  std::string isid;            // 12 hex digits
  uint16_t tsih = 0;
  std::string initiator_addr;  // "ip:port"
  std::string local_portal;    // "ip:port"
  bool discovery = false;
};

// Async Message events (RFC 7143 §11.9.1).
enum class AsyncEvent : uint8_t {
  kScsiEvent = 0,          // SCSI async event; sense data carried
  kRequestLogout = 1,
  kDropConnection = 2,
  kDropAllConnections = 3,
  kRequestRenegotiation = 4,
};

class IscsiServer {
 public:
  IscsiServer(IscsiServerOptions opts, std::shared_ptr<TargetDirectory> directory, Logger log);
  ~IscsiServer();
  IscsiServer(const IscsiServer&) = delete;
  IscsiServer& operator=(const IscsiServer&) = delete;

  Status Start();
  void Stop();

  // The bound portals (with the real port when 0 was asked for).
  std::vector<HostPort> BoundAddresses() const;

  std::vector<SessionInfo> Sessions() const;

  // Closes every session logged in to `iqn` (target deleted). Returns how many.
  size_t DropTarget(const std::string& iqn);

  // Sends an Async Message to every session of `iqn`. For kScsiEvent `sense`
  // is the sense data and `lun` the LUN; for kRequestLogout `param3` is
  // Time2Retain... see RFC 7143 §11.9: param1/2/3 are passed as given.
  size_t SendAsync(const std::string& iqn, AsyncEvent event, uint64_t lun,
                   const std::vector<uint8_t>& sense, uint16_t param1 = 0,
                   uint16_t param2 = 0, uint16_t param3 = 0);
  // Convenience: ask every session of `iqn` to log out within `seconds`.
  size_t RequestLogout(const std::string& iqn, uint16_t seconds);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ferry::iscsi
