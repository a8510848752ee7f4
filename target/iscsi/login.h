// LoginMachine: the target side of one connection's login phase (RFC 7143
// §6.3, §11.12-11.13): stage transitions, security negotiation (None / CHAP),
// operational negotiation, target lookup and ACL. Socket-free.
//
// Promise: Handle() takes one Login Request and produces exactly one Login
// Response (BHS + data). It never throws and never trusts the request: bad
// PDUs end in a failure response with the right Status-Class/Detail. When it
// returns kFullFeature the session's parameters, names and target are final.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "target/iscsi/chap.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/portal.h"
#include "target/iscsi/target_directory.h"
#include "target/iscsi/text_keys.h"

namespace ferry::iscsi {

// Login status (class << 8 | detail), RFC 7143 §11.13.5.
enum LoginStatus : uint16_t {
  kLoginSuccess = 0x0000,
  kLoginInitiatorError = 0x0200,
  kLoginAuthFailed = 0x0201,
  kLoginForbidden = 0x0202,
  kLoginNotFound = 0x0203,
  kLoginUnsupportedVersion = 0x0205,
  kLoginTooManyConnections = 0x0206,
  kLoginMissingParameter = 0x0207,
  kLoginSessionTypeUnsupported = 0x0209,
  kLoginSessionDoesNotExist = 0x020a,
  kLoginInvalidDuringLogin = 0x020b,
  kLoginTargetError = 0x0300,
  kLoginOutOfResources = 0x0302,
};

struct LoginContext {
  TargetDirectory* directory = nullptr;
  NegotiationLimits limits;
  uint32_t queue_depth = 128;
  std::string initiator_addr;    // IP only (for ACLs)
  std::string local_portal;      // "ip:port"
  // Called once, when the login completes as a new session: returns a TSIH (never 0).
  std::function<uint16_t()> allocate_tsih;
  // Called for a non-zero TSIH in a login (connection add); true if it exists.
  std::function<bool(uint16_t)> tsih_exists;
};

class LoginMachine {
 public:
  enum class Step { kContinue, kFullFeature, kFailed };
  explicit LoginMachine(LoginContext ctx);

  // Fills `reply` (BHS) and `reply_data` (its data segment; reply.data is set
  // to point at it). The caller sends it, then acts on the step.
  Step Handle(const PduView& req, OutPdu* reply, std::string* reply_data);

  // Valid after kFullFeature.
  const SessionParams& params() const { return params_; }
  bool discovery() const { return discovery_; }
  const std::string& initiator_name() const { return initiator_name_; }
  const std::string& initiator_alias() const { return initiator_alias_; }
  uint64_t isid() const { return isid_; }
  uint16_t tsih() const { return tsih_; }
  uint16_t cid() const { return cid_; }
  const std::optional<TargetEntry>& target() const { return target_; }
  uint32_t exp_cmdsn() const { return cmdsn_; }     // first CmdSN of the session
  uint32_t next_statsn() const { return statsn_; }  // StatSN for the first FFP response
  // Why the login failed (for the log).
  const std::string& failure() const { return failure_; }
  uint16_t failure_status() const { return failure_status_; }

 private:
  Step Fail(uint16_t status, std::string why, OutPdu* reply, std::string* data);
  Step FirstRequest(const KeyValues& kv, OutPdu* reply, std::string* data);

  LoginContext ctx_;
  KeyNegotiator neg_;
  SessionParams params_;
  bool started_ = false;
  bool security_done_ = false;
  bool auth_required_ = false;
  bool chap_chosen_ = false;
  std::optional<ChapAuthenticator> chap_;
  TargetAuth auth_;
  bool discovery_ = false;
  std::string initiator_name_, initiator_alias_;
  uint64_t isid_ = 0;
  uint16_t tsih_ = 0;
  uint16_t cid_ = 0;
  uint32_t itt_ = 0;
  uint32_t cmdsn_ = 0;
  uint32_t statsn_ = 0;
  int current_stage_ = 0;
  std::optional<TargetEntry> target_;
  std::string pending_text_;   // request keys continued with the C bit
  std::string failure_;
  uint16_t failure_status_ = 0;
};

}  // namespace ferry::iscsi
