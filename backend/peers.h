// PeerApi: what the backend asks of gateways and targets over their admin
// HTTP APIs (contracts in the gateway and target briefs), as plain calls.
//
// Promise: every call has a timeout and returns a value or a Status; a peer's
// 404 is kNotFound, 409 kConflict, 400 kInvalidArgument, other answers and
// transport failures kUnavailable/kTimeout. HttpPeerApi is thread-safe. Tests
// of one class may substitute a fake.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "target/common/http_client.h"
#include "target/common/status.h"

namespace ferry::backend {

struct SnapInfo {
  std::string name;
  int64_t size = 0;
  int64_t created = 0;
};

struct VolInfo {
  std::string name;
  int64_t size = 0;
  int64_t allocated = 0;
  int64_t epoch = 0;
  std::vector<SnapInfo> snapshots;
};

// Who may log in to an iSCSI target: initiator names (empty = the target is
// created "open", which a target honours only with --demo-open, from
// loopback) and one-way CHAP (empty user = no CHAP).
struct TargetAccess {
  std::vector<std::string> initiators;
  std::string chap_user, chap_secret;
};

struct LunSpec {
  std::string volume;
  int64_t lun = 1;
  std::vector<std::string> gateways;  // "host:nbdport"
  std::string preferred;
  std::string current;                // "" = target picks (preferred)
  std::optional<int64_t> epoch;
  // Open at a new epoch above the store's, at least `epoch`, which the
  // gateway grants (fences every older writer); LunInfo::epoch says which.
  bool raise_epoch = false;
  std::optional<bool> switchable;
  // Create the target (with this access) in the same change when it is missing.
  std::optional<TargetAccess> create_target;
};

struct LunInfo {
  int64_t lun = 0;
  int64_t size = 0;
  int64_t epoch = 0;
  std::string current;
  int64_t tid = 0;              // 0 when the target did not say
  bool target_created = false;
  bool epoch_raised = false;    // the target honoured raise_epoch (older ones ignore it)
};


// One row of a target's GET /v1/status.
struct TargetVolumeStatus {
  std::string volume, iqn, preferred, current;
  int64_t lun = 0, epoch = 0;
  bool switchable = true;
};

class PeerApi {
 public:
  virtual ~PeerApi() = default;
  // Gateways: `admin` is "host:adminport".
  virtual Result<VolInfo> GwCreateVolume(const std::string& admin, const std::string& name, int64_t size,
                                         const std::string& src_volume, const std::string& src_snap) = 0;
  virtual Result<VolInfo> GwGetVolume(const std::string& admin, const std::string& name) = 0;
  virtual Status GwDeleteVolume(const std::string& admin, const std::string& name) = 0;
  virtual Result<VolInfo> GwExtend(const std::string& admin, const std::string& name, int64_t size) = 0;
  virtual Status GwCreateSnapshot(const std::string& admin, const std::string& vol, const std::string& snap) = 0;
  virtual Status GwDeleteSnapshot(const std::string& admin, const std::string& vol, const std::string& snap) = 0;
  virtual Status GwRevert(const std::string& admin, const std::string& vol, const std::string& snap) = 0;
  virtual Result<int64_t> GwFence(const std::string& admin, const std::string& vol, int64_t epoch) = 0;
  // Targets: `admin` is "host:adminport".
  virtual Result<int64_t> TgtCreateTarget(const std::string& admin, const std::string& iqn,
                                          const TargetAccess& access) = 0;
  // Replace an existing target's ACL (initiator names) / CHAP (empty user = off).
  virtual Status TgtSetAcl(const std::string& admin, const std::string& iqn,
                           const std::vector<std::string>& initiators) = 0;
  virtual Status TgtSetChap(const std::string& admin, const std::string& iqn, const std::string& user,
                            const std::string& secret) = 0;
  virtual Status TgtDeleteTarget(const std::string& admin, const std::string& iqn) = 0;
  virtual Result<LunInfo> TgtAddLun(const std::string& admin, const std::string& iqn, const LunSpec& s) = 0;
  virtual Status TgtDeleteLun(const std::string& admin, const std::string& iqn, int64_t lun) = 0;
  virtual Result<int64_t> TgtResize(const std::string& admin, const std::string& volume) = 0;
  virtual Status TgtSwitchable(const std::string& admin, const std::string& volume, bool on) = 0;
  virtual Status TgtSetTimeout(const std::string& admin, const std::string& type, int64_t seconds) = 0;
  virtual Status TgtSetFixed(const std::string& admin, const std::string& gateway) = 0;
  virtual Status TgtClearFixed(const std::string& admin) = 0;
  // Raw JSON bodies of GET /v1/status and GET /v1/sessions.
  virtual Result<std::string> TgtStatusJson(const std::string& admin) = 0;
  virtual Result<std::string> TgtSessionsJson(const std::string& admin) = 0;
  virtual Result<std::vector<TargetVolumeStatus>> TgtStatus(const std::string& admin) = 0;
};

class HttpPeerApi : public PeerApi {
 public:
  // Idle connections kept per target/gateway: each holds one of the peer's
  // HTTP threads while idle (at most 2 s), and saves a TCP connect and a
  // thread hand-off per call (three calls per add_lun).
  static constexpr size_t kKeepAliveIdle = 4;
  HttpPeerApi(std::string token, std::chrono::milliseconds timeout);

  Result<VolInfo> GwCreateVolume(const std::string& admin, const std::string& name, int64_t size,
                                 const std::string& src_volume, const std::string& src_snap) override;
  Result<VolInfo> GwGetVolume(const std::string& admin, const std::string& name) override;
  Status GwDeleteVolume(const std::string& admin, const std::string& name) override;
  Result<VolInfo> GwExtend(const std::string& admin, const std::string& name, int64_t size) override;
  Status GwCreateSnapshot(const std::string& admin, const std::string& vol, const std::string& snap) override;
  Status GwDeleteSnapshot(const std::string& admin, const std::string& vol, const std::string& snap) override;
  Status GwRevert(const std::string& admin, const std::string& vol, const std::string& snap) override;
  Result<int64_t> GwFence(const std::string& admin, const std::string& vol, int64_t epoch) override;
  Result<int64_t> TgtCreateTarget(const std::string& admin, const std::string& iqn,
                                  const TargetAccess& access) override;
  Status TgtSetAcl(const std::string& admin, const std::string& iqn,
                   const std::vector<std::string>& initiators) override;
  Status TgtSetChap(const std::string& admin, const std::string& iqn, const std::string& user,
                    const std::string& secret) override;
  Status TgtDeleteTarget(const std::string& admin, const std::string& iqn) override;
  Result<LunInfo> TgtAddLun(const std::string& admin, const std::string& iqn, const LunSpec& s) override;
  Status TgtDeleteLun(const std::string& admin, const std::string& iqn, int64_t lun) override;
  Result<int64_t> TgtResize(const std::string& admin, const std::string& volume) override;
  Status TgtSwitchable(const std::string& admin, const std::string& volume, bool on) override;
  Status TgtSetTimeout(const std::string& admin, const std::string& type, int64_t seconds) override;
  Status TgtSetFixed(const std::string& admin, const std::string& gateway) override;
  Status TgtClearFixed(const std::string& admin) override;
  Result<std::string> TgtStatusJson(const std::string& admin) override;
  Result<std::string> TgtSessionsJson(const std::string& admin) override;
  Result<std::vector<TargetVolumeStatus>> TgtStatus(const std::string& admin) override;

 private:
  // Sends and maps non-2xx to a Status; returns the body of a 2xx.
  Result<std::string> Call(const std::string& method, const std::string& admin, const std::string& path,
                           const std::string& body = "") const;
  HttpClient client_;
};

}  // namespace ferry::backend
