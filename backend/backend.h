// Backend: the control plane's logic as a plain class (no sockets of its own).
//
// Promise: every state change goes through EventLog::Commit (the one code
// path); orchestration writes its intent first ("creating", "adding",
// "removing", ...), then acts on gateways/targets through PeerApi, then
// commits the outcome, so a crash at any point leaves a row the Reconciler
// can finish or undo. Operations on one volume are serialised; different
// volumes proceed in parallel. Bad input comes back as kInvalidArgument,
// unknown names as kNotFound, nothing is half-changed. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "backend/answer_cache.h"
#include "backend/events.h"
#include "backend/peers.h"
#include "db/database.h"
#include "target/common/logger.h"

namespace ferry::backend {

struct BackendOptions {
  std::string iqn_prefix = "iqn.2026-11.io.ferry";
  int heartbeat_miss = 3;                          // missed beats -> offline
  std::chrono::milliseconds heartbeat_period{5000};  // peers beat this often
  int64_t capacity_bytes = 0;                      // 0 = not limited ("infinite")
  std::string crash_at;                            // test hook: _exit(9) at this point
  // Attachments get one-way CHAP credentials (generated per volume, kept in
  // the map, pushed to the target before the connection info is returned).
  bool chap = true;
  // Discovery CHAP the targets were started with (--discovery-chap-user/-secret);
  // reported to os-brick only. Empty = discovery without CHAP.
  std::string discovery_chap_user, discovery_chap_secret;
  // Connector host name -> target IP, for targets that do not report a host.
  std::map<std::string, std::string> target_hosts;
  // Per-volume counters (volume/status) may be this old; concurrent requests
  // always share one round of target calls. 0 = coalesce only.
  std::chrono::milliseconds status_max_age{500};
  // Upper bound of one round of target calls (waiters give up after it).
  std::chrono::milliseconds peer_timeout{10000};
};

// Serialises work per key (volume name) without one global lock.
class KeyedLocks {
 public:
  class Guard {
   public:
    Guard(KeyedLocks* k, std::string key);
    ~Guard();
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
   private:
    KeyedLocks* k_;
    std::string key_;
  };
  Guard Lock(const std::string& key) { return Guard(this, key); }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, bool> held_;
};

struct VolumeView {
  db::VolumeRow row;
  std::vector<db::SnapshotRow> snapshots;
  std::vector<db::LunRow> luns;
  bool created = false;  // CreateVolume: true when new, false for a safe retry
};

struct LunPlacement {
  std::string ip;      // target portal ip
  int port = 3260;     // iSCSI port
  std::string iqn;
  int64_t lun = 1;
  int64_t tid = 0;
  int64_t epoch = 0;
  std::string gateway;
};

// What an attachment gives the initiator: where to log in, and how.
struct AttachInfo {
  std::vector<LunPlacement> placements;
  std::string auth_user, auth_secret;            // "" = no CHAP
  std::string discovery_user, discovery_secret;  // "" = no discovery CHAP
  const LunPlacement& operator[](size_t i) const { return placements[i]; }
};

struct Connector {
  std::string ip, host, initiator;
  std::string raw;  // the JSON as given
};

struct TimeoutsView {
  std::string target;  // ip
  std::map<std::string, int64_t> values;
};

struct Stats {
  int64_t volumes = 0;
  int64_t provisioned_bytes = 0;
  int64_t capacity_bytes = 0;  // 0 = infinite
  int64_t luns = 0;
  int64_t targets_online = 0, gateways_online = 0;
};

struct ReconcileReport {
  int fixed = 0;        // rows finished or undone
  int orphans = 0;      // LUNs found on targets that the map did not have
  int skipped = 0;      // could not act (peer unreachable); retried next time
  std::vector<std::string> actions;
};

// Names users give: 1..128 of [A-Za-z0-9._-], not starting with '.' or '-'.
Status ValidateName(const std::string& what, const std::string& name);
// The seven failover timeouts; validation as DESIGN.md says.
Status ValidateTimeout(const std::string& type, int64_t seconds);
const std::vector<std::string>& TimeoutTypes();
int64_t DefaultTimeout(const std::string& type);

class Backend {
 public:
  Backend(db::Database* db, EventLog* log, PeerApi* peers, BackendOptions opts, Logger logger);

  // Volumes (sizes in bytes).
  Result<VolumeView> CreateVolume(const std::string& name, int64_t size, const std::string& src_volume,
                                  const std::string& src_snapshot);
  Result<VolumeView> GetVolume(const std::string& name);
  Result<std::vector<db::VolumeRow>> ListVolumes();
  Status DeleteVolume(const std::string& name);
  Result<VolumeView> ExtendVolume(const std::string& name, int64_t size);
  Result<db::SnapshotRow> CreateSnapshot(const std::string& volume, const std::string& snap);
  Status DeleteSnapshot(const std::string& volume, const std::string& snap);
  Status RevertVolume(const std::string& volume, const std::string& snap);

  // LUNs (the compatibility API's add_lun & co).
  // The new iSCSI target admits the volume's attached initiators (open when
  // it has none) with the volume's CHAP credentials, if it has any.
  Result<LunPlacement> AddLun(const std::string& volume, const std::string& tgt_ip, const std::string& iqn);
  Status DelLun(const std::string& volume, const std::string& tgt_ip);
  Result<int64_t> LunCapacity(const std::string& volume);
  Status DelIqn(const std::string& iqn);
  Result<LunPlacement> MoveLun(const std::string& volume, const std::string& to_ip);
  Result<int64_t> ExpandLun(const std::string& volume);
  Status SetSwitchable(const std::string& volume, bool on);

  // Attachments (v1 API for Cinder).
  // The target is the one whose IP is the connector's `ip`, else the one on
  // the connector's `host` (reported at registration or configured), else the
  // least loaded. The connector's initiator is added to that target's ACL
  // (and removed again by Detach); with CHAP on, the credentials are set on
  // the target before this returns.
  Result<AttachInfo> Attach(const std::string& volume, const Connector& c);
  Result<bool> Detach(const std::string& volume, const Connector& c);  // -> shared

  // Registry.
  Status RegisterGateway(const std::string& spec);  // "ip:nbd:admin"
  Status UnregisterGateway(const std::string& addr_or_spec);
  // host: the host name the target runs on ("" = keep the one known).
  Status RegisterTarget(const std::string& ip, int port, const std::string& admin, const std::string& host = "");
  // Marks peers whose beats stopped as offline. Called periodically.
  void CheckHeartbeats();

  // Settings.
  Status SetTimeout(const std::string& type, int64_t seconds, const std::string& tgt_ip);
  Result<std::vector<TimeoutsView>> ShowTimeouts(const std::string& tgt_ip);
  Status SetFixedMode(const std::string& gateway);
  Status ClearFixedMode();
  Result<std::string> FixedMode();

  // Queries.
  Result<Stats> GetStats();
  // Every online target's GET /v1/status body (raw JSON), tagged with its IP.
  Result<std::vector<std::pair<std::string, std::string>>> TargetStatusBodies();
  using Bodies = std::vector<std::pair<std::string, std::string>>;
  // The same, coalesced: callers arriving while a round of target calls is
  // under way share its answer; an answer younger than status_max_age is reused
  // (past half that age, the first caller fetches the next round for the others).
  Result<std::shared_ptr<const Bodies>> SharedTargetStatus();
  // Callers waiting for a round in progress (tests, metrics).
  int StatusWaiters();
  Result<std::vector<std::pair<std::string, std::string>>> TargetSessionBodies();

  // Rendered answers of queries that read only the map (tgtmap, gatewaymap,
  // tgt, detailtgt, ...): reused while the database's write generation is the
  // one read before `render` ran (AnswerCache). `key` names the query and
  // everything its answer depends on (parameters, pretty).
  Result<AnswerCache::Text> MapAnswer(const std::string& key, const AnswerCache::Compute& render);
  // The text made from one shared set of target status bodies, reused while
  // the bodies are the same object. `key` names the rendering (compact/pretty).
  Result<AnswerCache::Text> StatusAnswer(const std::string& key, const std::shared_ptr<const Bodies>& bodies,
                                         const AnswerCache::Compute& render);
  AnswerCache::Counters MapAnswerCounters() { return map_answers_.counters(); }
  AnswerCache::Counters StatusAnswerCounters() { return status_answers_.counters(); }

  // Compares the map with what gateways and targets report and converges.
  ReconcileReport Reconcile();

  db::Database* db() { return db_; }
  const BackendOptions& options() const { return opts_; }

 private:
  // Asks every online target for one JSON body (raw), tagged with its IP; failures are logged and skipped.
  Result<std::vector<std::pair<std::string, std::string>>> FromOnlineTargets(
      const std::string& what, const std::function<Result<std::string>(const std::string&)>& fetch);
  struct Peer {
    std::string addr, admin;
  };
  Result<Peer> GatewayFor(const db::VolumeRow& v);  // an online gateway for volume ops
  Result<std::vector<db::GatewayRow>> OnlineGateways();
  Result<db::TargetRow> PickTarget(const std::string& ip_hint, bool strict);
  Result<db::TargetRow> PickAttachTarget(const Connector& c);
  // The volume's CHAP credentials; generated and stored when missing and
  // `create` (caller holds the volume's lock).
  Result<std::optional<db::ChapRow>> ChapOf(const std::string& volume, bool create);
  // ACL + CHAP an export of `volume` through `iqn` on `target` should have.
  Result<TargetAccess> AccessFor(const std::string& volume, const std::string& target, const std::string& iqn,
                                 const std::string& extra_initiator);
  Result<std::string> PlaceGateway();
  std::string DefaultIqn(const std::string& volume) const;
  Result<db::VolumeRow> LoadVolume(const std::string& name);
  // How to export LUN `r` again on a target that lost it (reconcile).
  Result<LunSpec> RestoreSpec(const db::VolumeRow& v, const db::LunRow& r, const std::vector<db::LunRow>& luns_of_volume);
  // Where `volume` is served now on the target at `admin` (its status): sets
  // *gateway / *epoch when the target reports them; an error leaves them.
  Status ServedAt(const std::string& admin, const std::string& volume, std::string* gateway, int64_t* epoch);
  // `first`, then every other gateway of `online`: the failover list of a LUN.
  static std::vector<std::string> GatewayOrder(const std::string& first, const std::vector<db::GatewayRow>& online);
  // After TgtAddLun(admin, iqn, spec) answered `added`: a target older than
  // raise_epoch joined at the floor instead. If the gateway holds a newer
  // epoch that LUN would be fenced: removes it and returns kConflict.
  Status UndoFencedJoin(const db::VolumeRow& v, const std::string& admin, const std::string& iqn, const LunSpec& spec,
                        const LunInfo& added);
  // access: ACL/CHAP for the iSCSI target when this call creates it
  // (*created_target tells whether it did).
  Result<LunPlacement> AddLunLocked(const db::VolumeRow& v, const db::TargetRow& t, const std::string& iqn,
                                    const TargetAccess& access, bool* created_target);
  Status DelLunLocked(const db::VolumeRow& v, const db::LunRow& row);
  Status RaiseEpoch(const db::VolumeRow& v, int64_t at_least, int64_t* out);
  void Crash(const std::string& point) const;
  int64_t NowMs() const;

  db::Database* db_;
  EventLog* log_;
  PeerApi* peers_;
  BackendOptions opts_;
  Logger logger_;
  KeyedLocks locks_;
  std::mutex reconcile_mu_;
  std::mutex status_mu_;
  std::condition_variable status_cv_;
  bool status_fetching_ = false;
  int status_waiters_ = 0;
  uint64_t status_gen_ = 0;
  std::chrono::steady_clock::time_point status_at_{};
  std::shared_ptr<const Bodies> status_cache_;
  AnswerCache map_answers_;
  AnswerCache status_answers_;
  IdentityVersion status_bodies_version_;
  std::mutex beats_mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> beats_;  // "t:ip" / "g:addr"
  std::chrono::steady_clock::time_point started_;
};

}  // namespace ferry::backend
