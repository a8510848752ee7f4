#include "target/server/registry.h"

#include <algorithm>
#include <atomic>
#include <optional>

#include "target/scsi/target.h"

namespace ferry::server {
namespace {

// Stops many volumes at once: each Stop() joins its device's threads, so a
// thousand of them one after another would take far too long at shutdown.
void StopAll(const std::vector<std::shared_ptr<Volume>>& vols) {
  constexpr size_t kWorkers = 16;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < vols.size(); i = next++) vols[i]->Stop();
  };
  std::vector<std::thread> ts;
  for (size_t i = 1; i < std::min(kWorkers, vols.size()); ++i) ts.emplace_back(work);
  work();
  for (auto& t : ts) t.join();
}

}  // namespace

Registry::Registry(Options opts, StateFile* file, VolumeFactory* factory)
    : opts_(std::move(opts)), file_(file), factory_(factory) {
  persister_ = std::thread([this] { PersisterLoop(); });
}

Registry::~Registry() { Shutdown(); }

void Registry::SetSessionHooks(SessionHooks h) { hooks_ = std::move(h); }

void Registry::Shutdown() {
  {
    std::lock_guard<std::mutex> l(dirty_mu_);
    stopping_ = true;
  }
  dirty_cv_.notify_all();
  if (persister_.joinable()) persister_.join();
  std::map<std::string, Live> live;
  {
    std::unique_lock<std::shared_mutex> l(mu_);
    live.swap(live_);
  }
  // Final save with the last gateway/epoch values, then close the connections.
  {
    std::lock_guard<std::mutex> pl(persist_mu_);
    ServerState snap;
    {
      std::shared_lock<std::shared_mutex> l(mu_);
      snap = state_;
    }
    for (auto& [iqn, lv] : live)
      for (auto& [n, v] : lv.volumes) {
        auto t = snap.targets.find(iqn);
        if (t == snap.targets.end()) continue;
        auto s = t->second.luns.find(n);
        if (s == t->second.luns.end()) continue;
        s->second.current = v->current();
        s->second.epoch = v->epoch();
        s->second.size = v->size();
      }
    if (!live.empty() && !(snap == state_)) {
      Status st = file_->Save(state_, snap);
      if (!st.ok()) opts_.log.Error("final save of the state failed: " + st.ToString());
    }
  }
  std::vector<std::shared_ptr<Volume>> vols;
  for (auto& [iqn, lv] : live)
    for (auto& [n, v] : lv.volumes) vols.push_back(v);
  StopAll(vols);
}

std::shared_ptr<scsi::Target> Registry::NewScsiTarget(const std::string& iqn) const {
  scsi::TargetOptions o;
  o.iqn = iqn;
  o.logger = opts_.log.Child("scsi");
  return std::make_shared<scsi::Target>(std::move(o));
}

void Registry::OverlayLive(ServerState* s) const {
  for (auto& [iqn, t] : s->targets) {
    auto lv = live_.find(iqn);
    if (lv == live_.end()) continue;
    for (auto& [n, l] : t.luns) {
      auto v = lv->second.volumes.find(n);
      if (v == lv->second.volumes.end()) continue;
      l.current = v->second->current();
      l.epoch = v->second->epoch();
      l.size = v->second->size();
    }
  }
}

struct Registry::Writer {
  const Edit* edit;
  const std::function<void()>* apply;
  Status result;
  bool done = false;
  std::condition_variable cv;
};

Status Registry::Mutate(const Edit& edit, const std::function<void()>& apply) {
  Writer w;
  w.edit = &edit;
  w.apply = &apply;
  std::unique_lock<std::mutex> q(queue_mu_);
  writers_.push_back(&w);
  while (!w.done && writers_.front() != &w) w.cv.wait(q);
  if (w.done) return w.result;  // a leader saved (or refused) it for us
  // Leader: every writer queued now joins this save.
  std::vector<Writer*> batch(writers_.begin(), writers_.end());
  q.unlock();
  {
    std::lock_guard<std::mutex> pl(persist_mu_);
    // state_ and shadow_ change only under persist_mu_, which this thread
    // holds. Live gateway/epoch/size values are not overlaid here: the
    // persister saves them (SaveCurrent) whenever they change.
    journal::Keys keys;
    std::vector<Writer*> edited;
    for (Writer* x : batch) {
      x->result = (*x->edit)(shadow_, keys);
      if (!x->result.ok()) continue;
      edited.push_back(x);
      for (const auto& iqn : keys.targets) tids_.Update(iqn, shadow_);  // the next edit's tids_.Next() sees this one
    }
    if (!edited.empty()) {
      Status st = file_->Save(state_, shadow_, &keys);
      if (!st.ok()) {
        opts_.log.Error("cannot persist the state, change refused: " + st.ToString());
        for (Writer* x : edited) x->result = Status::Internal("cannot persist the state: " + st.message());
        journal::CopyKeys(state_, keys, &shadow_);
        for (const auto& iqn : keys.targets) tids_.Update(iqn, shadow_);
      } else {
        std::unique_lock<std::shared_mutex> l(mu_);
        journal::CopyKeys(shadow_, keys, &state_);
        for (Writer* x : edited)
          if (*x->apply) (*x->apply)();
      }
    }
  }
  q.lock();
  for (Writer* x : batch) {
    writers_.pop_front();
    if (x != &w) {
      x->done = true;
      x->cv.notify_one();
    }
  }
  if (!writers_.empty()) writers_.front()->cv.notify_one();
  return w.result;
}

Status Registry::SaveCurrent() {
  std::lock_guard<std::mutex> pl(persist_mu_);
  ServerState snap;
  {
    std::shared_lock<std::shared_mutex> l(mu_);
    snap = state_;
    OverlayLive(&snap);
    if (snap == state_) return Status::Ok();
  }
  FERRY_RETURN_IF_ERROR(file_->Save(state_, snap));
  shadow_ = snap;
  std::unique_lock<std::shared_mutex> l(mu_);
  // Only the live-derived fields may have changed since the copy (admin
  // changes take persist_mu_), so installing the snapshot loses nothing.
  state_ = std::move(snap);
  return Status::Ok();
}

void Registry::PersisterLoop() {
  std::unique_lock<std::mutex> l(dirty_mu_);
  while (true) {
    dirty_cv_.wait(l, [this] { return dirty_ || stopping_; });
    if (stopping_) return;
    dirty_ = false;
    l.unlock();
    Status st = SaveCurrent();
    if (!st.ok()) opts_.log.Error("saving gateway/epoch change failed (will retry): " + st.ToString());
    l.lock();
    if (!st.ok() && !stopping_) {
      dirty_ = true;
      dirty_cv_.wait_for(l, std::chrono::seconds(1), [this] { return stopping_; });
    }
  }
}

void Registry::OnVolumeChange(const std::string& iqn, uint32_t lun, const VolumeChange& c) {
  opts_.log.Info("target " + iqn + " lun " + std::to_string(lun) + " now on gateway " + c.current +
                 " at epoch " + std::to_string(c.epoch));
  {
    std::lock_guard<std::mutex> l(dirty_mu_);
    dirty_ = true;
  }
  dirty_cv_.notify_one();
}

void Registry::StopVolume(const std::string& iqn, uint32_t lun, const std::shared_ptr<Volume>& v) {
  if (!v) return;
  v->Stop();
  opts_.log.Info("target " + iqn + " lun " + std::to_string(lun) + " closed");
}

Status Registry::Restore() {
  std::lock_guard<std::mutex> al(admin_mu_);
  auto loaded = file_->Load();
  if (!loaded.ok()) return loaded.status();
  ServerState s = std::move(loaded.value());
  if (uint64_t torn = file_->counters().torn_bytes; torn > 0)
    opts_.log.Warn("state journal: dropped " + std::to_string(torn) +
                   " bytes of an unfinished last change (a crash before it was acknowledged)");
  factory_->SetTimeouts(s.timeouts);
  factory_->SetFixedGateway(s.fixed_gateway);
  std::map<std::string, Live> live;
  size_t nluns = 0;
  for (auto& [iqn, t] : s.targets) {
    Live& lv = live[iqn];
    lv.scsi = NewScsiTarget(iqn);
    for (auto& [n, spec] : t.luns) {
      std::string tiqn = iqn;
      uint32_t lun = n;
      auto v = factory_->Open(spec, OpenMode::kRestore,
                              [this, tiqn, lun](const VolumeChange& c) { OnVolumeChange(tiqn, lun, c); });
      if (!v.ok()) {
        // Keep it in the state (an operator or the backend decides), but say so loudly.
        opts_.log.Error("restore: target " + iqn + " lun " + std::to_string(n) + " (" + spec.volume +
                        "): " + v.status().ToString());
        continue;
      }
      scsi::LunIdentity id;
      id.volume_name = spec.volume;
      Status st = lv.scsi->AddLun(n, v.value()->device(), id);
      if (!st.ok()) {
        opts_.log.Error("restore: target " + iqn + " lun " + std::to_string(n) + ": " + st.ToString());
        v.value()->Stop();
        continue;
      }
      lv.volumes[n] = v.value();
      ++nluns;
    }
  }
  {
    std::lock_guard<std::mutex> pl(persist_mu_);
    shadow_ = s;
    tids_.Rebuild(shadow_);
    std::unique_lock<std::shared_mutex> l(mu_);
    state_ = std::move(s);
    live_ = std::move(live);
  }
  opts_.log.Info("restored " + std::to_string(state_.targets.size()) + " targets, " +
                 std::to_string(nluns) + " luns from " + file_->path() + " and " + file_->journal_path());
  return Status::Ok();
}

namespace {

bool SameAccess(const TargetSpec& a, const TargetSpec& b) {
  return a.open == b.open && a.acl == b.acl && a.chap == b.chap;
}

}  // namespace

Result<TargetSpec> Registry::CreateTarget(const std::string& iqn, bool open, const Acl& acl,
                                          const Chap& chap, bool* created) {
  *created = false;
  FERRY_RETURN_IF_ERROR(ValidateIqn(iqn));
  FERRY_RETURN_IF_ERROR(ValidateAcl(acl));
  FERRY_RETURN_IF_ERROR(ValidateChap(chap));
  TargetSpec t;
  t.iqn = iqn;
  t.open = open;
  t.acl = acl;
  t.chap = chap;
  // Not under admin_mu_: concurrent creations share one state write (Mutate);
  // the edit itself decides whether the iqn exists, on the newest state.
  std::optional<TargetSpec> existing;
  auto scsi = NewScsiTarget(iqn);
  Status st = Mutate(
      [&](ServerState& s, journal::Keys& keys) {
        auto it = s.targets.find(iqn);
        if (it != s.targets.end()) {
          existing = it->second;
          return Status::AlreadyExists("target " + iqn + " exists with other settings");
        }
        auto tid = tids_.Next();
        if (!tid.ok()) return tid.status();
        t.tid = *tid;
        s.targets[iqn] = t;
        keys.Target(iqn);
        return Status::Ok();
      },
      [&] { live_[iqn].scsi = scsi; });
  if (existing) {
    if (existing->open == open && existing->acl == acl && existing->chap == chap) return *existing;
    return Status::AlreadyExists("target " + iqn + " exists with other settings");
  }
  if (!st.ok()) return st;
  *created = true;
  opts_.log.Info("target " + iqn + " created (tid " + std::to_string(t.tid) + (open ? ", open" : "") + ")");
  return t;
}

Status Registry::DeleteTarget(const std::string& iqn) {
  Live gone;
  Status st = Mutate(
      [&](ServerState& s, journal::Keys& keys) {
        if (!s.targets.erase(iqn)) return Status::NotFound("no target " + iqn);
        keys.Target(iqn);
        return Status::Ok();
      },
      [&] {
        auto it = live_.find(iqn);
        if (it != live_.end()) {
          gone = std::move(it->second);
          live_.erase(it);
        }
      });
  if (!st.ok()) return st;
  size_t dropped = hooks_.drop_target ? hooks_.drop_target(iqn) : 0;
  std::vector<std::shared_ptr<Volume>> vols;
  for (auto& [n, v] : gone.volumes) {
    if (gone.scsi) gone.scsi->RemoveLun(n);
    vols.push_back(v);
  }
  StopAll(vols);
  opts_.log.Info("target " + iqn + " deleted (" + std::to_string(dropped) + " sessions dropped)");
  return Status::Ok();
}

Status Registry::SetAcl(const std::string& iqn, const Acl& acl) {
  FERRY_RETURN_IF_ERROR(ValidateAcl(acl));
  return Mutate([&](ServerState& s, journal::Keys& keys) {
    auto it = s.targets.find(iqn);
    if (it == s.targets.end()) return Status::NotFound("no target " + iqn);
    it->second.acl = acl;
    keys.Target(iqn);
    return Status::Ok();
  });
}

Status Registry::SetChap(const std::string& iqn, const Chap& chap) {
  FERRY_RETURN_IF_ERROR(ValidateChap(chap));
  return Mutate([&](ServerState& s, journal::Keys& keys) {
    auto it = s.targets.find(iqn);
    if (it == s.targets.end()) return Status::NotFound("no target " + iqn);
    it->second.chap = chap;
    keys.Target(iqn);
    return Status::Ok();
  });
}

Result<LunSpec> Registry::AddLun(const std::string& iqn, const LunRequest& req, AddLunInfo* info) {
  LunSpec spec;
  spec.volume = req.volume;
  spec.gateways = req.gateways;
  spec.preferred = req.preferred.empty() && !req.gateways.empty() ? req.gateways.front() : req.preferred;
  spec.current = req.current.empty() ? spec.preferred : req.current;
  spec.epoch = req.epoch.value_or(1);
  spec.switchable = req.switchable;
  spec.lun = req.lun.value_or(0);
  FERRY_RETURN_IF_ERROR(ValidateLun(spec));
  std::optional<TargetSpec> create = req.create_target;
  if (create) {
    create->iqn = iqn;
    create->luns.clear();
    FERRY_RETURN_IF_ERROR(ValidateIqn(iqn));
    FERRY_RETURN_IF_ERROR(ValidateAcl(create->acl));
    FERRY_RETURN_IF_ERROR(ValidateChap(create->chap));
  }
  {
    std::lock_guard<std::mutex> al(admin_mu_);
    std::shared_lock<std::shared_mutex> l(mu_);
    auto it = state_.targets.find(iqn);
    if (it == state_.targets.end() && !create) return Status::NotFound("no target " + iqn);
    if (it != state_.targets.end() && create && !SameAccess(it->second, *create))
      return Status::AlreadyExists("target " + iqn + " exists with other settings");
    static const TargetSpec kNew;
    const TargetSpec& t = it == state_.targets.end() ? kNew : it->second;
    for (const auto& [n, other] : t.luns)
      if (other.volume == spec.volume)
        return Status::Conflict("volume " + spec.volume + " is already lun " + std::to_string(n) + " of " + iqn);
    for (const auto& p : pending_luns_)
      if (p.first == iqn && p.second == spec.lun && req.lun)
        return Status::Conflict("lun " + std::to_string(spec.lun) + " of " + iqn + " is being added");
    auto taken = [&](uint32_t n) { return t.luns.count(n) || pending_luns_.count({iqn, n}); };
    if (req.lun) {
      if (taken(*req.lun)) return Status::Conflict("lun " + std::to_string(*req.lun) + " of " + iqn + " is in use");
    } else {
      uint32_t n = 1;
      while (n <= kMaxLun && taken(n)) ++n;
      if (n > kMaxLun) return Status::Conflict("no free lun in " + iqn);
      spec.lun = n;
    }
    if (req.raise_epoch) {
      // A raise fences every other writer of the volume: never one this
      // process serves (under any target), nor a second raise racing this one.
      for (const auto& [other_iqn, ot] : state_.targets)
        for (const auto& [n, other] : ot.luns)
          if (other.volume == spec.volume)
            return Status::Conflict("volume " + spec.volume + " is served here as lun " + std::to_string(n) + " of " +
                                    other_iqn + ": a new epoch would fence it");
      if (!raising_.insert(spec.volume).second)
        return Status::Conflict("volume " + spec.volume + " is being added at a new epoch already");
    }
    pending_luns_.insert({iqn, spec.lun});
  }
  // The number (and a raise) stay reserved until the LUN is in the state (or refused).
  uint32_t lun = spec.lun;
  LunReservation unreserve{this, {iqn, lun}, req.raise_epoch ? spec.volume : std::string()};
  // Connect to the gateway outside every lock: other LUNs, logins and admin calls go on.
  auto opened = factory_->Open(spec, req.raise_epoch ? OpenMode::kRaise : OpenMode::kJoin,
                               [this, iqn, lun](const VolumeChange& c) { OnVolumeChange(iqn, lun, c); });
  if (!opened.ok()) return opened.status();
  std::shared_ptr<Volume> vol = opened.value();
  spec.size = vol->size();
  spec.current = vol->current();
  spec.epoch = vol->epoch();
  std::shared_ptr<scsi::Target> scsi;
  std::shared_ptr<scsi::Target> new_scsi = create ? NewScsiTarget(iqn) : nullptr;
  AddLunInfo done;
  Status st = Mutate(
      [&](ServerState& s, journal::Keys& keys) {
        auto it = s.targets.find(iqn);
        if (it == s.targets.end()) {
          if (!create) return Status::NotFound("target " + iqn + " was deleted meanwhile");
          auto tid = tids_.Next();
          if (!tid.ok()) return tid.status();
          TargetSpec t = *create;
          t.tid = *tid;
          t.luns[lun] = spec;
          s.targets[iqn] = std::move(t);
          keys.Target(iqn);
          done = {*tid, true};
          return Status::Ok();
        }
        if (create && !SameAccess(it->second, *create))
          return Status::AlreadyExists("target " + iqn + " exists with other settings");
        for (const auto& [n, other] : it->second.luns)
          if (other.volume == spec.volume)
            return Status::Conflict("volume " + spec.volume + " is already lun " + std::to_string(n) + " of " + iqn);
        it->second.luns[lun] = spec;
        keys.Target(iqn);
        done = {it->second.tid, false};
        return Status::Ok();
      },
      [&] {
        Live& lv = live_[iqn];
        if (!lv.scsi) lv.scsi = new_scsi;
        lv.volumes[lun] = vol;
        scsi = lv.scsi;
      });
  if (!st.ok()) {
    vol->Stop();
    return st;
  }
  scsi::LunIdentity id;
  id.volume_name = spec.volume;
  st = scsi ? scsi->AddLun(lun, vol->device(), id) : Status::Internal("target has no scsi device server");
  if (!st.ok()) {
    // Undo; a target this call created goes too unless another LUN joined it.
    bool target_gone = false;
    Status rb = Mutate(
        [&](ServerState& s, journal::Keys& keys) {
          auto it = s.targets.find(iqn);
          if (it != s.targets.end() && it->second.luns.erase(lun)) keys.Target(iqn);
          if (it != s.targets.end() && done.target_created && it->second.luns.empty()) {
            s.targets.erase(it);
            target_gone = true;
          }
          return Status::Ok();
        },
        [&] {
          live_[iqn].volumes.erase(lun);
          if (target_gone) live_.erase(iqn);
        });
    if (!rb.ok()) opts_.log.Error("rollback of lun " + std::to_string(lun) + " failed: " + rb.ToString());
    vol->Stop();
    return st;
  }
  if (done.target_created)
    opts_.log.Info("target " + iqn + " created (tid " + std::to_string(done.tid) + ") with its first lun");
  opts_.log.Info("target " + iqn + " lun " + std::to_string(lun) + " = volume " + spec.volume + " on " +
                 spec.current + " epoch " + std::to_string(spec.epoch) + " size " + std::to_string(spec.size));
  if (info) *info = done;
  return spec;
}

Status Registry::RemoveLun(const std::string& iqn, uint32_t lun) {
  // The number is not handed out again until this LUN is gone from the SCSI
  // target and closed (other changes go on meanwhile).
  {
    std::lock_guard<std::mutex> al(admin_mu_);
    if (pending_luns_.count({iqn, lun}))  // being added (not there yet) or removed by another call
      return Status::NotFound("no lun " + std::to_string(lun) + " in " + iqn + " (being added or removed)");
    pending_luns_.insert({iqn, lun});
  }
  LunReservation unreserve{this, {iqn, lun}, std::string()};
  std::shared_ptr<Volume> vol;
  std::shared_ptr<scsi::Target> scsi;
  Status st = Mutate(
      [&](ServerState& s, journal::Keys& keys) {
        auto it = s.targets.find(iqn);
        if (it == s.targets.end()) return Status::NotFound("no target " + iqn);
        if (!it->second.luns.erase(lun))
          return Status::NotFound("no lun " + std::to_string(lun) + " in " + iqn);
        keys.Target(iqn);
        return Status::Ok();
      },
      [&] {
        auto it = live_.find(iqn);
        if (it == live_.end()) return;
        scsi = it->second.scsi;
        auto v = it->second.volumes.find(lun);
        if (v != it->second.volumes.end()) {
          vol = v->second;
          it->second.volumes.erase(v);
        }
      });
  if (!st.ok()) return st;
  if (scsi) scsi->RemoveLun(lun);
  StopVolume(iqn, lun, vol);
  return Status::Ok();
}

Result<uint64_t> Registry::Resize(const std::string& volume) {
  FERRY_RETURN_IF_ERROR(ValidateVolumeName(volume));
  std::lock_guard<std::mutex> al(admin_mu_);
  struct Item {
    std::shared_ptr<scsi::Target> scsi;
    uint32_t lun;
    std::shared_ptr<Volume> vol;
  };
  std::vector<Item> items;
  {
    std::shared_lock<std::shared_mutex> l(mu_);
    for (const auto& [iqn, t] : state_.targets)
      for (const auto& [n, spec] : t.luns) {
        if (spec.volume != volume) continue;
        auto lv = live_.find(iqn);
        if (lv == live_.end()) continue;
        auto v = lv->second.volumes.find(n);
        if (v != lv->second.volumes.end()) items.push_back({lv->second.scsi, n, v->second});
      }
  }
  if (items.empty()) return Status::NotFound("volume " + volume + " is not a lun here");
  uint64_t size = 0;
  for (auto& it : items) {
    auto r = it.vol->RefreshSize();
    if (!r.ok()) return r.status();
    size = r.value();
    FERRY_RETURN_IF_ERROR(it.scsi->NotifyCapacityChanged(it.lun));
  }
  Status st = SaveCurrent();
  if (!st.ok()) opts_.log.Warn("resize of " + volume + ": size not persisted yet: " + st.ToString());
  opts_.log.Info("volume " + volume + " resized to " + std::to_string(size));
  return size;
}

Status Registry::SetSwitchable(const std::string& volume, bool on) {
  FERRY_RETURN_IF_ERROR(ValidateVolumeName(volume));
  std::lock_guard<std::mutex> al(admin_mu_);
  std::vector<std::shared_ptr<Volume>> vols;
  Status st = Mutate(
      [&](ServerState& s, journal::Keys& keys) {
        bool any = false;
        for (auto& [iqn, t] : s.targets)
          for (auto& [n, spec] : t.luns)
            if (spec.volume == volume) {
              spec.switchable = on;
              keys.Target(iqn);
              any = true;
            }
        return any ? Status::Ok() : Status::NotFound("volume " + volume + " is not a lun here");
      },
      [&] {
        for (auto& [iqn, t] : state_.targets)
          for (auto& [n, spec] : t.luns) {
            if (spec.volume != volume) continue;
            auto lv = live_.find(iqn);
            if (lv == live_.end()) continue;
            auto v = lv->second.volumes.find(n);
            if (v != lv->second.volumes.end()) vols.push_back(v->second);
          }
      });
  if (!st.ok()) return st;
  for (auto& v : vols) v->SetSwitchable(on);
  opts_.log.Info("volume " + volume + " switchable=" + (on ? "1" : "0"));
  return Status::Ok();
}

TimeoutValues Registry::Timeouts() const {
  std::shared_lock<std::shared_mutex> l(mu_);
  return state_.timeouts;
}

Status Registry::SetTimeout(const std::string& type, int64_t seconds) {
  std::lock_guard<std::mutex> al(admin_mu_);
  TimeoutValues t;
  Status st = Mutate([&](ServerState& s, journal::Keys& keys) {
    FERRY_RETURN_IF_ERROR(s.timeouts.Set(type, seconds));
    t = s.timeouts;
    keys.globals = true;
    return Status::Ok();
  });
  if (!st.ok()) return st;
  factory_->SetTimeouts(t);
  opts_.log.Info("timeout " + type + " = " + std::to_string(seconds) + " s");
  return Status::Ok();
}

std::string Registry::FixedGateway() const {
  std::shared_lock<std::shared_mutex> l(mu_);
  return state_.fixed_gateway;
}

Status Registry::SetFixedGateway(const std::string& gateway) {
  if (!gateway.empty()) FERRY_RETURN_IF_ERROR(ValidateGateway(gateway));
  std::lock_guard<std::mutex> al(admin_mu_);
  Status st = Mutate([&](ServerState& s, journal::Keys& keys) {
    s.fixed_gateway = gateway;
    keys.globals = true;
    return Status::Ok();
  });
  if (!st.ok()) return st;
  factory_->SetFixedGateway(gateway);
  opts_.log.Info(gateway.empty() ? std::string("fixed mode off") : "fixed mode on " + gateway);
  return Status::Ok();
}

std::vector<TargetSpec> Registry::Targets() const {
  std::shared_lock<std::shared_mutex> l(mu_);
  ServerState s = state_;
  OverlayLive(&s);
  std::vector<TargetSpec> out;
  for (auto& [iqn, t] : s.targets) out.push_back(std::move(t));
  std::sort(out.begin(), out.end(), [](const TargetSpec& a, const TargetSpec& b) { return a.tid < b.tid; });
  return out;
}

std::vector<StatusRow> Registry::StatusRows() const {
  std::vector<StatusRow> rows;
  std::shared_lock<std::shared_mutex> l(mu_);
  for (const auto& [iqn, lv] : live_)
    for (const auto& [n, v] : lv.volumes) rows.push_back({iqn, n, v->Stats()});
  return rows;
}

// ---- iscsi::TargetDirectory

std::optional<iscsi::TargetEntry> Registry::Find(const std::string& iqn) {
  std::shared_lock<std::shared_mutex> l(mu_);
  auto t = state_.targets.find(iqn);
  auto lv = live_.find(iqn);
  if (t == state_.targets.end() || lv == live_.end() || !lv->second.scsi) return std::nullopt;
  iscsi::TargetEntry e;
  e.iqn = iqn;
  e.tpgt = 1;
  e.sink = lv->second.scsi;
  e.auth.chap_user = t->second.chap.user;
  e.auth.chap_secret = t->second.chap.secret;
  e.auth.mutual_user = t->second.chap.mutual_user;
  e.auth.mutual_secret = t->second.chap.mutual_secret;
  return e;
}

bool Registry::AdmitsLocked(const TargetSpec& t, const std::string& name, const std::string& addr) const {
  if (t.open && opts_.demo_open && IsLoopback(addr)) return true;
  const Acl& a = t.acl;
  if (a.initiators.empty() && a.addresses.empty()) return false;  // no ACL admits nobody
  bool name_ok = a.initiators.empty() ||
                 std::find(a.initiators.begin(), a.initiators.end(), name) != a.initiators.end();
  bool addr_ok = a.addresses.empty() ||
                 std::any_of(a.addresses.begin(), a.addresses.end(),
                             [&](const std::string& p) { return AddressMatches(p, addr); });
  return name_ok && addr_ok;
}

bool Registry::Admits(const std::string& iqn, const std::string& initiator_name,
                      const std::string& initiator_addr) {
  std::shared_lock<std::shared_mutex> l(mu_);
  auto t = state_.targets.find(iqn);
  if (t == state_.targets.end()) return false;
  return AdmitsLocked(t->second, initiator_name, PeerIp(initiator_addr));
}

std::vector<iscsi::DiscoveredTarget> Registry::Discover(const std::string& initiator_name,
                                                        const std::string& initiator_addr,
                                                        const std::string& /*local_portal*/) {
  std::vector<iscsi::DiscoveredTarget> out;
  std::string ip = PeerIp(initiator_addr);
  std::shared_lock<std::shared_mutex> l(mu_);
  for (const auto& [iqn, t] : state_.targets) {
    if (!live_.count(iqn) || !AdmitsLocked(t, initiator_name, ip)) continue;
    iscsi::DiscoveredTarget d;
    d.iqn = iqn;
    d.tpgt = 1;
    out.push_back(std::move(d));
  }
  return out;
}

iscsi::TargetAuth Registry::DiscoveryAuth() { return opts_.discovery_auth; }

}  // namespace ferry::server
