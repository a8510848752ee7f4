// Registry: the ferry-target's targets and LUNs, live and persisted.
//
// Promise: every admin change is validated first (kInvalidArgument, nothing
// changed), written to the state file (atomic, durable) and only then applied
// to the live SCSI targets; a failure to persist changes nothing. Restore()
// brings back every target and LUN from the state file without any backend and
// without needing a gateway to answer (LUNs start in fault status and connect
// when a gateway returns). Gateway switches (current gateway, epoch) are
// persisted in the background within milliseconds.
// Thread-safe. As an iscsi::TargetDirectory its lookups never block on I/O or
// on admin operations in progress (opening a LUN's gateway happens outside the
// locks), so adding a LUN never pauses I/O or logins on other LUNs.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "target/common/logger.h"
#include "target/common/status.h"
#include "target/iscsi/target_directory.h"
#include "target/server/spec.h"
#include "target/server/state_file.h"
#include "target/server/tid_index.h"
#include "target/server/volume.h"

namespace ferry::scsi {
class Target;
}

namespace ferry::server {

// What POST /v1/targets/{iqn}/luns asks for; unset optionals take defaults.
struct LunRequest {
  std::string volume;
  std::optional<uint32_t> lun;  // default: lowest free, from 1
  std::vector<std::string> gateways;
  std::string preferred;        // default: first gateway
  std::string current;          // default: preferred
  std::optional<uint64_t> epoch;  // default 1
  // Open at a new epoch above the store's, at least `epoch` (the gateway
  // grants it; the LUN keeps it): a new export that fences every older one.
  bool raise_epoch = false;
  bool switchable = true;
  // When set and the target does not exist, it is created with these
  // settings (open, acl, chap; tid assigned) in the same durable change as
  // the LUN; when it exists, its settings must be these (else kAlreadyExists).
  std::optional<TargetSpec> create_target;
};

// What AddLun did besides the LUN.
struct AddLunInfo {
  uint32_t tid = 0;
  bool target_created = false;
};

struct StatusRow {
  std::string iqn;
  uint32_t lun = 0;
  VolumeStats stats;
};

class Registry : public iscsi::TargetDirectory {
 public:
  struct Options {
    bool demo_open = false;        // honour "open" targets (loopback, no ACL)
    iscsi::TargetAuth discovery_auth;
    Logger log{"registry"};
  };
  // Hooks into the transport, set once before serving.
  struct SessionHooks {
    std::function<size_t(const std::string& iqn)> drop_target;  // close sessions of a target
  };

  Registry(Options opts, StateFile* file, VolumeFactory* factory);
  ~Registry() override;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  void SetSessionHooks(SessionHooks h);
  // Loads the state file and starts every target and LUN in it.
  Status Restore();
  // Stops the background persister and every volume (process shutdown).
  void Shutdown();

  // Creates a target; *created=false when the same iqn exists with the same
  // settings (safe retry); kAlreadyExists when it exists with others.
  Result<TargetSpec> CreateTarget(const std::string& iqn, bool open, const Acl& acl,
                                  const Chap& chap, bool* created);
  Status DeleteTarget(const std::string& iqn);
  Status SetAcl(const std::string& iqn, const Acl& acl);
  Status SetChap(const std::string& iqn, const Chap& chap);
  Result<LunSpec> AddLun(const std::string& iqn, const LunRequest& req, AddLunInfo* info = nullptr);
  Status RemoveLun(const std::string& iqn, uint32_t lun);
  // Every LUN of `volume` re-reads its size; raises CAPACITY DATA HAS CHANGED.
  Result<uint64_t> Resize(const std::string& volume);
  Status SetSwitchable(const std::string& volume, bool on);
  TimeoutValues Timeouts() const;
  Status SetTimeout(const std::string& type, int64_t seconds);
  std::string FixedGateway() const;
  Status SetFixedGateway(const std::string& gateway);  // "" = off

  // Specs with live values (size, epoch, current) filled in.
  std::vector<TargetSpec> Targets() const;
  std::vector<StatusRow> StatusRows() const;

  // iscsi::TargetDirectory
  std::optional<iscsi::TargetEntry> Find(const std::string& iqn) override;
  bool Admits(const std::string& iqn, const std::string& initiator_name,
              const std::string& initiator_addr) override;
  std::vector<iscsi::DiscoveredTarget> Discover(const std::string& initiator_name,
                                                const std::string& initiator_addr,
                                                const std::string& local_portal) override;
  iscsi::TargetAuth DiscoveryAuth() override;

 private:
  struct Live {
    std::shared_ptr<scsi::Target> scsi;
    std::map<uint32_t, std::shared_ptr<Volume>> volumes;
  };

  bool AdmitsLocked(const TargetSpec& t, const std::string& name, const std::string& addr) const;
  std::shared_ptr<scsi::Target> NewScsiTarget(const std::string& iqn) const;
  void OnVolumeChange(const std::string& iqn, uint32_t lun, const VolumeChange& c);
  // Applies `edit` to shadow_ (a copy of state_ kept equal to it at rest),
  // saves the difference (the persister saves live gateway/epoch/size values
  // on its own), then installs the touched keys into state_ and runs `apply`
  // under the write lock; if the save fails, shadow_ is put back.
  // `apply` must be quick and cannot fail; an `edit` that fails must leave the
  // state it was given unchanged. Group commit (as LevelDB's writer queue):
  // concurrent callers queue; the first one applies every queued edit in
  // order to one copy and saves once for all of them, so N concurrent changes
  // cost one state write, not N. Each caller gets its own edit's result.
  // The edit marks in `keys` every target it changes (and `globals` for
  // timeouts or fixed mode): only those are saved and installed, so a change
  // costs the size of the change, not of the state.
  using Edit = std::function<Status(ServerState&, journal::Keys&)>;
  Status Mutate(const Edit& edit, const std::function<void()>& apply = nullptr);
  struct Writer;
  Status SaveCurrent();
  void OverlayLive(ServerState* s) const;  // caller holds mu_ (shared)
  void StopVolume(const std::string& iqn, uint32_t lun, const std::shared_ptr<Volume>& v);
  void PersisterLoop();

  Options opts_;
  StateFile* file_;
  VolumeFactory* factory_;
  SessionHooks hooks_;

  std::mutex admin_mu_;             // serialises admin changes (never taken by I/O or logins)
  mutable std::shared_mutex mu_;    // guards state_ and live_
  ServerState state_;
  ServerState shadow_;              // == state_ except inside Mutate; under persist_mu_
  TidIndex tids_;                   // the tids of shadow_'s targets; under persist_mu_
  std::map<std::string, Live> live_;
  // LUN numbers being opened or removed (not to be handed out), under admin_mu_.
  std::set<std::pair<std::string, uint32_t>> pending_luns_;
  // Releases a pending_luns_ entry when the add/remove call that reserved it ends.
  std::set<std::string> raising_;  // volumes being added with raise_epoch (admin_mu_)
  struct LunReservation {
    Registry* r;
    std::pair<std::string, uint32_t> key;
    std::string raising;  // also releases this raising_ entry when not empty
    ~LunReservation() {
      std::lock_guard<std::mutex> al(r->admin_mu_);
      r->pending_luns_.erase(key);
      if (!raising.empty()) r->raising_.erase(raising);
    }
  };
  std::mutex queue_mu_;             // guards writers_
  std::deque<Writer*> writers_;     // Mutate callers; the front one is saving

  std::mutex persist_mu_;           // one Save at a time, always of the newest state
  std::mutex dirty_mu_;
  std::condition_variable dirty_cv_;
  bool dirty_ = false, stopping_ = false;
  std::thread persister_;
};

}  // namespace ferry::server
