#include "backend/backend.h"

#include <openssl/rand.h>
#include <unistd.h>

#include <algorithm>
#include <set>

#include "backend/json.h"
#include "target/common/config.h"

namespace ferry::backend {

// ---- helpers ----

KeyedLocks::Guard::Guard(KeyedLocks* k, std::string key) : k_(k), key_(std::move(key)) {
  std::unique_lock<std::mutex> lk(k_->mu_);
  k_->cv_.wait(lk, [&] { return !k_->held_[key_]; });
  k_->held_[key_] = true;
}

KeyedLocks::Guard::~Guard() {
  {
    std::lock_guard<std::mutex> lk(k_->mu_);
    k_->held_.erase(key_);
  }
  k_->cv_.notify_all();
}

Status ValidateName(const std::string& what, const std::string& name) {
  if (name.empty()) return Status::InvalidArgument(what + " name is missing");
  if (name.size() > 128) return Status::InvalidArgument(what + " name longer than 128 characters");
  if (name[0] == '.' || name[0] == '-')
    return Status::InvalidArgument(what + " name must not start with '.' or '-'");
  for (unsigned char c : name)
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-'))
      return Status::InvalidArgument(what + " name may only contain letters, digits, '.', '_' and '-': " +
                                     name);
  return Status::Ok();
}

const std::vector<std::string>& TimeoutTypes() {
  static const std::vector<std::string> kTypes = {"read",   "write",    "readretry", "writeretry",
                                                  "switch", "recovery", "reconnect"};
  return kTypes;
}

int64_t DefaultTimeout(const std::string& type) {
  if (type == "read" || type == "write" || type == "reconnect") return 60;
  if (type == "readretry" || type == "writeretry") return 86400;
  if (type == "switch") return 0;
  if (type == "recovery") return 120;
  return -1;
}

Status ValidateTimeout(const std::string& type, int64_t s) {
  if (DefaultTimeout(type) < 0)
    return Status::InvalidArgument("unknown timeout type '" + type +
                                   "' (read|write|readretry|writeretry|switch|recovery|reconnect)");
  if (s > 10LL * 365 * 86400) return Status::InvalidArgument("duration too large");
  if (type == "switch") {
    if (s < 0) return Status::InvalidArgument("switch duration must be >= 0");
  } else if (s <= 0) {
    return Status::InvalidArgument(type + " duration must be > 0");
  }
  if ((type == "recovery" || type == "reconnect") && s % 10 != 0)
    return Status::InvalidArgument(type + " duration must be a multiple of 10");
  return Status::Ok();
}

namespace {
bool IsIqn(const std::string& s) {
  if (s.size() < 5 || s.size() > 223 || s.rfind("iqn.", 0) != 0) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':')) return false;
  return true;
}
bool IsIp(const std::string& s) {
  if (s.empty() || s.size() > 45) return false;
  for (unsigned char c : s)
    if (!(std::isxdigit(c) || c == '.' || c == ':')) return false;
  return true;
}
bool IgnorableMissing(const Status& s) { return s.ok() || s.code() == Status::Code::kNotFound; }
// An iSCSI initiator name as a connector gives it (RFC 7143 names; no spaces).
bool IsInitiatorName(const std::string& s) {
  if (s.size() < 5 || s.size() > 223) return false;
  if (s.rfind("iqn.", 0) != 0 && s.rfind("eui.", 0) != 0 && s.rfind("naa.", 0) != 0) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_')) return false;
  return true;
}
bool IsHostName(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == '_')) return false;
  return true;
}
bool SameHost(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}
// n bytes from OpenSSL's CSPRNG as 2n lower-case hex digits.
Result<std::string> RandomHex(size_t n) {
  std::vector<unsigned char> b(n);
  if (RAND_bytes(b.data(), static_cast<int>(n)) != 1) return Status::Internal("RAND_bytes failed");
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 15];
  }
  return out;
}
}  // namespace

Backend::Backend(db::Database* db, EventLog* log, PeerApi* peers, BackendOptions opts, Logger logger)
    : db_(db), log_(log), peers_(peers), opts_(std::move(opts)), logger_(std::move(logger)),
      started_(std::chrono::steady_clock::now()) {}

void Backend::Crash(const std::string& point) const {
  if (!opts_.crash_at.empty() && opts_.crash_at == point) {
    logger_.Warn("crash point " + point + " reached: exiting as if killed");
    _exit(9);
  }
}

int64_t Backend::NowMs() const {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Backend::DefaultIqn(const std::string& volume) const {
  std::string v;
  for (unsigned char c : volume) v += c == '_' ? '-' : static_cast<char>(std::tolower(c));
  return opts_.iqn_prefix + ":" + v;
}

Result<db::VolumeRow> Backend::LoadVolume(const std::string& name) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", name));
  auto v = db_->GetVolume(name);
  if (!v.ok()) return v.status();
  if (!v->has_value()) return Status::NotFound("no such volume: " + name);
  return **v;
}

Result<std::vector<db::GatewayRow>> Backend::OnlineGateways() {
  auto gws = db_->ListGateways();
  if (!gws.ok()) return gws.status();
  std::vector<db::GatewayRow> out;
  for (auto& g : *gws)
    if (g.online) out.push_back(g);
  return out;
}

Result<Backend::Peer> Backend::GatewayFor(const db::VolumeRow& v) {
  auto gws = OnlineGateways();
  if (!gws.ok()) return gws.status();
  if (gws->empty()) return Status::Unavailable("no gateway online");
  for (auto& g : *gws)
    if (g.addr == v.preferred_gw) return Peer{g.addr, g.admin};
  return Peer{(*gws)[0].addr, (*gws)[0].admin};
}

Result<std::string> Backend::PlaceGateway() {
  auto fixed = FixedMode();
  if (fixed.ok() && !fixed->empty()) return *fixed;
  auto gws = OnlineGateways();
  if (!gws.ok()) return gws.status();
  if (gws->empty()) return Status::Unavailable("no gateway online");
  auto counts = db_->VolumeCountByGateway();
  if (!counts.ok()) return counts.status();
  std::string best;
  int64_t best_n = -1;
  for (auto& g : *gws) {
    int64_t n = (*counts)[g.addr];
    if (best_n < 0 || n < best_n) best = g.addr, best_n = n;
  }
  return best;
}

Result<db::TargetRow> Backend::PickAttachTarget(const Connector& c) {
  // 1. The target on the connector's own address.
  if (!c.ip.empty()) {
    auto t = db_->GetTarget(c.ip);
    if (!t.ok()) return t.status();
    if (t->has_value()) {
      if (!(*t)->online) return Status::Unavailable("target " + c.ip + " (the connector's ip) is offline");
      return **t;
    }
  }
  // 2. The target on the connector's host: reported at registration, or configured.
  if (!c.host.empty()) {
    auto ts = db_->ListTargets();
    if (!ts.ok()) return ts.status();
    std::string mapped;
    for (auto& [h, ip] : opts_.target_hosts)
      if (SameHost(h, c.host)) mapped = ip;
    std::optional<db::TargetRow> offline;
    for (auto& t : *ts) {
      if (!(SameHost(t.host, c.host) || (!mapped.empty() && t.ip == mapped))) continue;
      if (t.online) return t;
      offline = t;
    }
    if (offline) return Status::Unavailable("target " + offline->ip + " of host " + c.host + " is offline");
  }
  // 3. The least loaded.
  return PickTarget("", false);
}

Result<std::optional<db::ChapRow>> Backend::ChapOf(const std::string& volume, bool create) {
  auto c = db_->GetChap(volume);
  if (!c.ok() || c->has_value() || !create) return c;
  auto user = RandomHex(6);
  if (!user.ok()) return user.status();
  auto secret = RandomHex(16);  // 128 bits; 32 characters (targets take 12..255)
  if (!secret.ok()) return secret.status();
  db::ChapRow row{volume, "ferry-" + *user, *secret, NowMs() / 1000};
  Event e{"chap.set", {}};
  e.Set("volume", volume).Set("user", row.user).Set("secret", row.secret).Set("created", row.created);
  FERRY_RETURN_IF_ERROR(log_->Commit(e).status());
  return std::optional<db::ChapRow>(row);
}

Result<TargetAccess> Backend::AccessFor(const std::string& volume, const std::string& target,
                                        const std::string& iqn, const std::string& extra_initiator) {
  TargetAccess a;
  auto inis = db_->InitiatorsOn(target, iqn);
  if (!inis.ok()) return inis.status();
  a.initiators = *inis;
  if (!extra_initiator.empty() &&
      std::find(a.initiators.begin(), a.initiators.end(), extra_initiator) == a.initiators.end())
    a.initiators.push_back(extra_initiator);
  auto chap = ChapOf(volume, false);
  if (!chap.ok()) return chap.status();
  if (chap->has_value()) {
    a.chap_user = (*chap)->user;
    a.chap_secret = (*chap)->secret;
  }
  return a;
}

Result<db::TargetRow> Backend::PickTarget(const std::string& ip_hint, bool strict) {
  if (!ip_hint.empty()) {
    auto t = db_->GetTarget(ip_hint);
    if (!t.ok()) return t.status();
    if (t->has_value()) {
      if (!(*t)->online) return Status::Unavailable("target " + ip_hint + " is offline");
      return **t;
    }
    if (strict) return Status::NotFound("no such target: " + ip_hint);
  }
  auto ts = db_->ListTargets();
  if (!ts.ok()) return ts.status();
  auto counts = db_->LunCountByTarget();
  if (!counts.ok()) return counts.status();
  std::optional<db::TargetRow> best;
  int64_t best_n = 0;
  for (auto& t : *ts) {
    if (!t.online) continue;
    int64_t n = (*counts)[t.ip];
    if (!best || n < best_n) best = t, best_n = n;
  }
  if (!best) return Status::Unavailable("no target online");
  return *best;
}

// ---- volumes ----

Result<VolumeView> Backend::CreateVolume(const std::string& name, int64_t size, const std::string& src_volume,
                                         const std::string& src_snapshot) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", name));
  if (size <= 0) return Status::InvalidArgument("size must be > 0");
  if (!src_volume.empty()) FERRY_RETURN_IF_ERROR(ValidateName("source volume", src_volume));
  if (!src_snapshot.empty()) FERRY_RETURN_IF_ERROR(ValidateName("source snapshot", src_snapshot));
  if (!src_snapshot.empty() && src_volume.empty())
    return Status::InvalidArgument("a source snapshot needs its volume");
  std::string source = src_volume.empty() ? "" : src_volume + (src_snapshot.empty() ? "" : "@" + src_snapshot);
  auto guard = locks_.Lock(name);
  auto existing = db_->GetVolume(name);
  if (!existing.ok()) return existing.status();
  if (existing->has_value()) {
    const auto& v = **existing;
    if (v.size == size && v.source == source && v.state != "creating" && v.state != "deleting") {
      auto view = GetVolume(name);
      if (view.ok()) view->created = false;
      return view;
    }
    if (v.state == "creating") return Status::Conflict("volume " + name + " is being created");
    return Status::AlreadyExists("volume " + name + " exists with different parameters");
  }
  if (!src_volume.empty()) {
    auto src = db_->GetVolume(src_volume);
    if (!src.ok()) return src.status();
    if (!src->has_value()) return Status::NotFound("no such source volume: " + src_volume);
    if (size < (*src)->size) return Status::InvalidArgument("size is smaller than the source volume");
    if (!src_snapshot.empty()) {
      auto snaps = db_->ListSnapshots(src_volume);
      if (!snaps.ok()) return snaps.status();
      bool found = false;
      for (auto& s : *snaps) found = found || s.name == src_snapshot;
      if (!found) return Status::NotFound("no such snapshot: " + src_volume + "@" + src_snapshot);
    }
  }
  auto gw = PlaceGateway();
  if (!gw.ok()) return gw.status();
  auto gwrow = db_->GetGateway(*gw);
  if (!gwrow.ok()) return gwrow.status();
  if (!gwrow->has_value()) return Status::Unavailable("gateway " + *gw + " is not registered");
  Event intent{"volume.creating", {}};
  intent.Set("name", name).Set("size", size).Set("gateway", *gw).Set("source", source)
      .Set("created", NowMs() / 1000);
  auto c = log_->Commit(intent);
  if (!c.ok()) return c.status();
  Crash("create.after_intent");
  auto info = peers_->GwCreateVolume((*gwrow)->admin, name, size, src_volume, src_snapshot);
  if (!info.ok()) {
    logger_.Warn("create " + name + " failed at gateway: " + info.status().ToString());
    (void)log_->Commit(Event{"volume.deleted", {{"name", name}}});
    return info.status();
  }
  Crash("create.after_gateway");
  Event done{"volume.created", {}};
  done.Set("name", name).Set("size", info->size > 0 ? info->size : size);
  auto d = log_->Commit(done);
  if (!d.ok()) return d.status();
  auto view = GetVolume(name);
  if (view.ok()) view->created = true;
  return view;
}

Result<VolumeView> Backend::GetVolume(const std::string& name) {
  auto v = LoadVolume(name);
  if (!v.ok()) return v.status();
  VolumeView out;
  out.row = *v;
  auto s = db_->ListSnapshots(name);
  if (!s.ok()) return s.status();
  out.snapshots = *s;
  auto l = db_->LunsOfVolume(name);
  if (!l.ok()) return l.status();
  out.luns = *l;
  return out;
}

Result<std::vector<db::VolumeRow>> Backend::ListVolumes() { return db_->ListVolumes(); }

Status Backend::DeleteVolume(const std::string& name) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", name));
  auto guard = locks_.Lock(name);
  auto v = LoadVolume(name);
  if (!v.ok()) return v.status();
  auto luns = db_->LunsOfVolume(name);
  if (!luns.ok()) return luns.status();
  if (!luns->empty()) return Status::Conflict("volume " + name + " is exported (del_lun / detach first)");
  auto atts = db_->AttachmentsOf(name);
  if (!atts.ok()) return atts.status();
  if (!atts->empty()) return Status::Conflict("volume " + name + " is attached");
  auto snaps = db_->ListSnapshots(name);
  if (!snaps.ok()) return snaps.status();
  if (!snaps->empty())
    return Status::Conflict("volume " + name + " has " + std::to_string(snaps->size()) + " snapshot(s); delete them first");
  auto gw = GatewayFor(*v);
  if (!gw.ok()) return gw.status();
  FERRY_RETURN_IF_ERROR(log_->Commit(Event{"volume.state", {{"name", name}, {"state", "deleting"}}}).status());
  Crash("delete.after_intent");
  Status s = peers_->GwDeleteVolume(gw->admin, name);
  if (!IgnorableMissing(s)) {
    (void)log_->Commit(Event{"volume.state", {{"name", name}, {"state", v->state}}});
    return s;
  }
  return log_->Commit(Event{"volume.deleted", {{"name", name}}}).status();
}

Result<VolumeView> Backend::ExtendVolume(const std::string& name, int64_t size) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", name));
  auto guard = locks_.Lock(name);
  auto v = LoadVolume(name);
  if (!v.ok()) return v.status();
  if (v->state != "available") return Status::Conflict("volume " + name + " is " + v->state);
  if (size < v->size) return Status::InvalidArgument("cannot shrink a volume");
  if (size == v->size) return GetVolume(name);
  auto gw = GatewayFor(*v);
  if (!gw.ok()) return gw.status();
  FERRY_RETURN_IF_ERROR(log_->Commit(Event{"volume.state", {{"name", name}, {"state", "extending"}}}).status());
  Crash("extend.after_intent");
  auto info = peers_->GwExtend(gw->admin, name, size);
  if (!info.ok()) {
    (void)log_->Commit(Event{"volume.state", {{"name", name}, {"state", "available"}}});
    return info.status();
  }
  Crash("extend.after_gateway");
  Event done{"volume.resized", {}};
  done.Set("name", name).Set("size", info->size > 0 ? info->size : size);
  FERRY_RETURN_IF_ERROR(log_->Commit(done).status());
  // Targets learn the new size (and raise the capacity-changed UA).
  auto luns = db_->LunsOfVolume(name);
  if (luns.ok()) {
    for (auto& l : *luns) {
      auto t = db_->GetTarget(l.target);
      if (!t.ok() || !t->has_value() || !(*t)->online) continue;
      auto r = peers_->TgtResize((*t)->admin, name);
      if (!r.ok()) logger_.Warn("resize of " + name + " on " + l.target + ": " + r.status().ToString());
    }
  }
  return GetVolume(name);
}

Result<db::SnapshotRow> Backend::CreateSnapshot(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  FERRY_RETURN_IF_ERROR(ValidateName("snapshot", snap));
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto snaps = db_->ListSnapshots(volume);
  if (!snaps.ok()) return snaps.status();
  for (auto& s : *snaps)
    if (s.name == snap) return s;  // safe retry
  if (v->state != "available") return Status::Conflict("volume " + volume + " is " + v->state);
  auto gw = GatewayFor(*v);
  if (!gw.ok()) return gw.status();
  FERRY_RETURN_IF_ERROR(
      log_->Commit(Event{"volume.state", {{"name", volume}, {"state", "snapshotting"}}}).status());
  Crash("snapshot.after_intent");
  Status s = peers_->GwCreateSnapshot(gw->admin, volume, snap);
  if (!s.ok()) {
    (void)log_->Commit(Event{"volume.state", {{"name", volume}, {"state", "available"}}});
    return s;
  }
  Crash("snapshot.after_gateway");
  db::SnapshotRow row{volume, snap, v->size, NowMs() / 1000};
  Event e{"snapshot.created", {}};
  e.Set("volume", volume).Set("name", snap).Set("size", row.size).Set("created", row.created);
  FERRY_RETURN_IF_ERROR(
      log_->CommitAll({e, Event{"volume.state", {{"name", volume}, {"state", "available"}}}}).status());
  return row;
}

Status Backend::DeleteSnapshot(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  FERRY_RETURN_IF_ERROR(ValidateName("snapshot", snap));
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto snaps = db_->ListSnapshots(volume);
  if (!snaps.ok()) return snaps.status();
  bool found = false;
  for (auto& s : *snaps) found = found || s.name == snap;
  if (!found) return Status::NotFound("no such snapshot: " + volume + "@" + snap);
  auto gw = GatewayFor(*v);
  if (!gw.ok()) return gw.status();
  Status s = peers_->GwDeleteSnapshot(gw->admin, volume, snap);
  if (!IgnorableMissing(s)) return s;
  return log_->Commit(Event{"snapshot.deleted", {{"volume", volume}, {"name", snap}}}).status();
}

Status Backend::RevertVolume(const std::string& volume, const std::string& snap) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  FERRY_RETURN_IF_ERROR(ValidateName("snapshot", snap));
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto snaps = db_->ListSnapshots(volume);
  if (!snaps.ok()) return snaps.status();
  std::optional<db::SnapshotRow> sr;
  for (auto& s : *snaps)
    if (s.name == snap) sr = s;
  if (!sr) return Status::NotFound("no such snapshot: " + volume + "@" + snap);
  if (v->state != "available") return Status::Conflict("volume " + volume + " is " + v->state);
  auto luns = db_->LunsOfVolume(volume);
  if (!luns.ok()) return luns.status();
  if (!luns->empty()) return Status::Conflict("volume " + volume + " is exported; detach before revert");
  auto gw = GatewayFor(*v);
  if (!gw.ok()) return gw.status();
  FERRY_RETURN_IF_ERROR(peers_->GwRevert(gw->admin, volume, snap));
  if (sr->size != v->size) {
    Event e{"volume.resized", {}};
    e.Set("name", volume).Set("size", sr->size);
    FERRY_RETURN_IF_ERROR(log_->Commit(e).status());
  }
  return Status::Ok();
}

// ---- LUNs ----

Status Backend::RaiseEpoch(const db::VolumeRow& v, int64_t at_least, int64_t* out) {
  auto gw = GatewayFor(v);
  if (!gw.ok()) return gw.status();
  auto info = peers_->GwGetVolume(gw->admin, v.name);
  if (!info.ok()) return info.status();
  int64_t e = std::max({info->epoch, v.epoch, at_least}) + 1;
  auto now = peers_->GwFence(gw->admin, v.name, e);
  if (!now.ok()) return now.status();
  e = std::max(e, *now);
  Event ev{"volume.epoch", {}};
  ev.Set("name", v.name).Set("epoch", e);
  FERRY_RETURN_IF_ERROR(log_->Commit(ev).status());
  *out = e;
  return Status::Ok();
}

Status Backend::UndoFencedJoin(const db::VolumeRow& v, const std::string& admin, const std::string& iqn,
                               const LunSpec& spec, const LunInfo& added) {
  if (!spec.raise_epoch || added.epoch_raised) return Status::Ok();
  const int64_t joined = added.epoch > 0 ? added.epoch : spec.epoch.value_or(0);
  auto gw = GatewayFor(v);
  Status s = gw.status();
  if (s.ok()) {
    auto info = peers_->GwGetVolume(gw->admin, v.name);
    s = info.status();
    if (s.ok() && info->epoch > joined)
      s = Status::Conflict("volume " + v.name + " is at epoch " + std::to_string(info->epoch) +
                           " at the gateway; the LUN joined at " + std::to_string(joined) + " and would be fenced");
  }
  if (s.ok()) return s;
  (void)peers_->TgtDeleteLun(admin, iqn, added.lun > 0 ? added.lun : spec.lun);
  return Status(s.code(), "the target does not support raise_epoch (upgrade targets before the backend): " +
                              s.message());
}

Status Backend::ServedAt(const std::string& admin, const std::string& volume, std::string* gateway, int64_t* epoch) {
  auto st = peers_->TgtStatus(admin);
  if (!st.ok()) return st.status();
  for (auto& row : *st)
    if (row.volume == volume) {
      if (!row.current.empty()) *gateway = row.current;
      if (row.epoch > 0) *epoch = row.epoch;
    }
  return Status::Ok();
}

std::vector<std::string> Backend::GatewayOrder(const std::string& first, const std::vector<db::GatewayRow>& online) {
  std::vector<std::string> order = {first};
  for (auto& g : online)
    if (g.addr != first) order.push_back(g.addr);
  return order;
}

Result<LunSpec> Backend::RestoreSpec(const db::VolumeRow& v, const db::LunRow& r,
                                     const std::vector<db::LunRow>& luns_of_volume) {
  LunSpec spec;
  spec.volume = v.name;
  spec.lun = r.lun;
  spec.preferred = r.gateway;
  auto gws = OnlineGateways();
  spec.gateways = GatewayOrder(r.gateway, gws.ok() ? *gws : std::vector<db::GatewayRow>{});
  spec.switchable = r.switchable;
  // Another live LUN of the volume (a live migration): join it where it is,
  // as add_lun does. Otherwise a new epoch: switches may have raised the
  // store's since the map's, and a LUN joined below it could not write.
  for (const auto& o : luns_of_volume) {
    if (o.target == r.target || o.state != "ready") continue;
    auto ot = db_->GetTarget(o.target);
    if (!ot.ok() || !ot->has_value() || !(*ot)->online) continue;
    int64_t epoch = o.epoch;
    std::string current = o.gateway;
    (void)ServedAt((*ot)->admin, v.name, &current, &epoch);  // else as the map says
    spec.current = current;
    spec.epoch = epoch;
    return spec;
  }
  spec.epoch = std::max(r.epoch, v.epoch) + 1;
  spec.raise_epoch = true;
  return spec;
}

Result<LunPlacement> Backend::AddLun(const std::string& volume, const std::string& tgt_ip, const std::string& iqn) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  if (!tgt_ip.empty() && !IsIp(tgt_ip)) return Status::InvalidArgument("tgt must be an IP address: " + tgt_ip);
  if (!iqn.empty() && !IsIqn(iqn)) return Status::InvalidArgument("malformed iqn: " + iqn);
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  if (v->state != "available") return Status::Conflict("volume " + volume + " is " + v->state);
  auto t = PickTarget(tgt_ip, !tgt_ip.empty());
  if (!t.ok()) return t.status();
  // A new export admits the initiators attached to the volume anywhere (so a
  // moved LUN keeps its ACL) with the volume's CHAP credentials.
  TargetAccess access;
  auto atts = db_->AttachmentsOf(volume);
  if (!atts.ok()) return atts.status();
  for (auto& a : *atts)
    if (!a.initiator.empty() &&
        std::find(access.initiators.begin(), access.initiators.end(), a.initiator) == access.initiators.end())
      access.initiators.push_back(a.initiator);
  auto chap = ChapOf(volume, false);
  if (!chap.ok()) return chap.status();
  if (chap->has_value()) access.chap_user = (*chap)->user, access.chap_secret = (*chap)->secret;
  bool created = false;
  return AddLunLocked(*v, *t, iqn, access, &created);
}

Result<LunPlacement> Backend::AddLunLocked(const db::VolumeRow& v, const db::TargetRow& t, const std::string& iqn_in,
                                           const TargetAccess& access, bool* created_target) {
  *created_target = false;
  auto existing = db_->LunsOfVolume(v.name);
  if (!existing.ok()) return existing.status();
  for (auto& l : *existing) {
    if (l.target != t.ip) continue;
    if (l.state != "ready") return Status::Conflict("LUN of " + v.name + " on " + t.ip + " is " + l.state);
    return LunPlacement{t.ip, t.port, l.iqn, l.lun, l.tid, l.epoch, l.gateway};
  }
  std::string iqn = iqn_in.empty() ? DefaultIqn(v.name) : iqn_in;
  int64_t lun_id = 1;
  int64_t tid = 0;
  bool target_exists = false;
  auto same_iqn = db_->LunsWithIqn(iqn);
  if (!same_iqn.ok()) return same_iqn.status();
  for (auto& l : *same_iqn) {
    if (l.target != t.ip) continue;
    target_exists = true;
    tid = l.tid;
    lun_id = std::max(lun_id, l.lun + 1);
  }
  if (!iqn_in.empty() && !target_exists && iqn_in != DefaultIqn(v.name))
    return Status::NotFound("iqn " + iqn_in + " does not exist on target " + t.ip);

  auto gws = OnlineGateways();
  if (!gws.ok()) return gws.status();
  if (gws->empty()) return Status::Unavailable("no gateway online");
  std::vector<db::LunRow> alive, dead;
  for (auto& l : *existing) {
    auto tr = db_->GetTarget(l.target);
    bool online = tr.ok() && tr->has_value() && (*tr)->online;
    (online && l.state == "ready" ? alive : dead).push_back(l);
  }
  LunSpec spec;
  spec.volume = v.name;
  spec.lun = lun_id;
  int64_t epoch = 0;
  std::string gw;
  std::optional<db::TargetRow> partner;
  if (!alive.empty()) {
    // Live migration: join the first target's current gateway at its epoch.
    const db::LunRow& first = alive[0];
    auto pt = db_->GetTarget(first.target);
    if (!pt.ok()) return pt.status();
    partner = **pt;
    gw = first.gateway;
    epoch = first.epoch;
    Status st = ServedAt(partner->admin, v.name, &gw, &epoch);
    if (!st.ok()) logger_.Warn("status of " + first.target + " unavailable; using the map: " + st.ToString());
    spec.current = gw;
    spec.epoch = epoch;
    spec.switchable = false;
  } else {
    gw = v.preferred_gw;
    bool gw_online = false;
    for (auto& g : *gws) gw_online = gw_online || g.addr == gw;
    auto fixed = FixedMode();
    if (fixed.ok() && !fixed->empty()) {
      gw = *fixed;
    } else if (!gw_online) {
      // Placement counts every volume: only when the preferred gateway is not there.
      auto placed = PlaceGateway();
      if (!placed.ok()) return placed.status();
      gw = *placed;
    }
    if (!dead.empty()) {
      // Evacuate: fence the dead target's writes before anyone else serves it.
      int64_t dead_epoch = 0;
      for (auto& d : dead) dead_epoch = std::max(dead_epoch, d.epoch);
      FERRY_RETURN_IF_ERROR(RaiseEpoch(v, dead_epoch, &epoch));
    } else {
      // A new export: the gateway raises the volume's epoch above the one it
      // holds (and at least one above the map's) as the target opens it,
      // fencing any older writer in the same step; the target answers with
      // the epoch granted. (No separate round trip to read the epoch first.)
      epoch = v.epoch + 1;
      spec.raise_epoch = true;
    }
    spec.epoch = epoch;
    spec.switchable = true;
  }
  spec.preferred = gw;
  spec.gateways = GatewayOrder(gw, *gws);

  Event intent{"lun.put", {}};
  intent.Set("volume", v.name).Set("target", t.ip).Set("iqn", iqn).Set("tid", tid).Set("lun", lun_id)
      .Set("switchable", !partner).Set("gateway", gw).Set("state", "adding").Set("epoch", epoch);
  std::vector<Event> first_events = {intent};
  if (epoch > v.epoch) first_events.push_back(Event{"volume.epoch", {{"name", v.name}, {"epoch", std::to_string(epoch)}}});
  FERRY_RETURN_IF_ERROR(log_->CommitAll(first_events).status());
  Crash("add_lun.after_intent");

  // A new iSCSI target is created with its first LUN in one call (one
  // durable change at the target).
  bool created = false;
  if (!target_exists) spec.create_target = access;
  auto added = peers_->TgtAddLun(t.admin, iqn, spec);
  if (!added.ok() && spec.create_target) {
    const Status::Code c = added.status().code();
    if (c == Status::Code::kNotFound) {
      // A target that predates the one-call create: create it, then add.
      auto r = peers_->TgtCreateTarget(t.admin, iqn, access);
      if (r.ok()) {
        tid = *r;
        created = true;
      } else if (r.status().code() != Status::Code::kConflict) {
        (void)log_->Commit(Event{"lun.removed", {{"volume", v.name}, {"target", t.ip}}});
        return r.status();
      }
    }
    if (c == Status::Code::kNotFound || c == Status::Code::kConflict) {
      // It exists (orphan or other settings): join it, as an existing target.
      spec.create_target.reset();
      added = peers_->TgtAddLun(t.admin, iqn, spec);
    }
  }
  Crash("add_lun.after_target");
  if (added.ok()) {
    // Refuse (undoing the LUN) rather than hand out a volume that cannot write.
    Status s = UndoFencedJoin(v, t.admin, iqn, spec, *added);
    if (!s.ok()) {
      if (added->target_created) created = true;
      added = Status(s.code(), "target " + t.ip + ": " + s.message());
    }
  }
  if (!added.ok()) {
    if (created) (void)peers_->TgtDeleteTarget(t.admin, iqn);
    (void)log_->Commit(Event{"lun.removed", {{"volume", v.name}, {"target", t.ip}}});
    return added.status();
  }
  if (added->target_created) {
    created = true;
    if (added->tid > 0) tid = added->tid;
  }
  Crash("add_lun.after_lun");
  Event ready = intent;
  ready.Set("state", "ready").Set("tid", tid).Set("lun", added->lun > 0 ? added->lun : lun_id);
  if (added->epoch > 0) ready.Set("epoch", added->epoch);
  if (!added->current.empty()) ready.Set("gateway", added->current);
  std::vector<Event> done = {ready};
  if (added->epoch > epoch)  // the gateway granted more than the floor: the map follows
    done.push_back(Event{"volume.epoch", {{"name", v.name}, {"epoch", std::to_string(added->epoch)}}});
  if (partner) {
    Status s = peers_->TgtSwitchable(partner->admin, v.name, false);
    if (!s.ok()) logger_.Warn("switchable=0 on " + partner->ip + " failed: " + s.ToString());
    done.push_back(Event{"lun.switchable", {{"volume", v.name}, {"target", partner->ip}, {"on", "0"}}});
  }
  FERRY_RETURN_IF_ERROR(log_->CommitAll(done).status());
  *created_target = created;
  return LunPlacement{t.ip, t.port, iqn, ready.GetInt("lun"), tid, ready.GetInt("epoch"), ready.Get("gateway")};
}

Status Backend::DelLun(const std::string& volume, const std::string& tgt_ip) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  if (!tgt_ip.empty() && !IsIp(tgt_ip)) return Status::InvalidArgument("tgt must be an IP address: " + tgt_ip);
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto luns = db_->LunsOfVolume(volume);
  if (!luns.ok()) return luns.status();
  bool any = false;
  for (auto& l : *luns) {
    if (!tgt_ip.empty() && l.target != tgt_ip) continue;
    any = true;
    FERRY_RETURN_IF_ERROR(DelLunLocked(*v, l));
  }
  if (!any)
    return Status::NotFound("volume " + volume + " has no LUN" + (tgt_ip.empty() ? "" : " on " + tgt_ip));
  return Status::Ok();
}

Status Backend::DelLunLocked(const db::VolumeRow& v, const db::LunRow& row) {
  auto t = db_->GetTarget(row.target);
  if (!t.ok()) return t.status();
  bool online = t->has_value() && (*t)->online;
  FERRY_RETURN_IF_ERROR(
      log_->Commit(Event{"lun.state", {{"volume", v.name}, {"target", row.target}, {"state", "removing"}}})
          .status());
  Crash("del_lun.after_intent");
  auto all = db_->LunsOfVolume(v.name);
  if (!all.ok()) return all.status();
  std::vector<db::LunRow> others;
  for (auto& l : *all)
    if (l.target != row.target) others.push_back(l);
  if (online) {
    auto same = db_->LunsWithIqn(row.iqn);
    if (!same.ok()) return same.status();
    bool last_on_target = true;
    for (auto& l : *same)
      if (l.target == row.target && l.volume != v.name) last_on_target = false;
    // The last LUN of an iSCSI target goes with the target (one state change
    // at the target instead of two); otherwise only the LUN.
    Status s = last_on_target ? peers_->TgtDeleteTarget((*t)->admin, row.iqn)
                              : peers_->TgtDeleteLun((*t)->admin, row.iqn, row.lun);
    if (!IgnorableMissing(s)) return s;  // stays "removing"; the reconciler finishes it
  } else {
    // The target is gone (evacuate): fence its writes unless a newer epoch already did.
    bool fenced = false;
    for (auto& o : others) fenced = fenced || o.epoch > row.epoch;
    if (!fenced) {
      int64_t e = 0;
      FERRY_RETURN_IF_ERROR(RaiseEpoch(v, row.epoch, &e));
      // A partner that shared the old epoch must move to the new one.
      for (auto& o : others) {
        auto ot = db_->GetTarget(o.target);
        if (!ot.ok() || !ot->has_value() || !(*ot)->online) continue;
        (void)peers_->TgtDeleteLun((*ot)->admin, o.iqn, o.lun);
        LunSpec spec;
        spec.volume = v.name;
        spec.lun = o.lun;
        spec.preferred = o.gateway;
        spec.gateways = {o.gateway};
        spec.epoch = e;
        spec.switchable = true;
        auto r = peers_->TgtAddLun((*ot)->admin, o.iqn, spec);
        if (!r.ok()) return r.status();
        db::LunRow n = o;
        Event ev{"lun.put", {}};
        ev.Set("volume", n.volume).Set("target", n.target).Set("iqn", n.iqn).Set("tid", n.tid).Set("lun", n.lun)
            .Set("switchable", true).Set("gateway", n.gateway).Set("state", "ready").Set("epoch", e);
        FERRY_RETURN_IF_ERROR(log_->Commit(ev).status());
      }
    }
  }
  Crash("del_lun.after_target");
  std::vector<Event> done = {Event{"lun.removed", {{"volume", v.name}, {"target", row.target}}}};
  if (others.size() == 1 && !others[0].switchable) {
    auto ot = db_->GetTarget(others[0].target);
    if (ot.ok() && ot->has_value() && (*ot)->online) {
      Status s = peers_->TgtSwitchable((*ot)->admin, v.name, true);
      if (s.ok())
        done.push_back(Event{"lun.switchable", {{"volume", v.name}, {"target", others[0].target}, {"on", "1"}}});
      else
        logger_.Warn("switchable=1 on " + others[0].target + " failed: " + s.ToString());
    }
  }
  return log_->CommitAll(done).status();
}

Result<int64_t> Backend::LunCapacity(const std::string& volume) {
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  return v->size;
}

Status Backend::DelIqn(const std::string& iqn) {
  if (!IsIqn(iqn)) return Status::InvalidArgument("malformed or missing iqn");
  auto rows = db_->LunsWithIqn(iqn);
  if (!rows.ok()) return rows.status();
  if (rows->empty()) return Status::NotFound("no such iqn: " + iqn);
  for (auto& r : *rows) FERRY_RETURN_IF_ERROR(DelLun(r.volume, r.target));
  return Status::Ok();
}

Result<LunPlacement> Backend::MoveLun(const std::string& volume, const std::string& to_ip) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  if (to_ip.empty() || !IsIp(to_ip)) return Status::InvalidArgument("iscsi must be the IP of a target");
  auto luns = db_->LunsOfVolume(volume);
  if (!luns.ok()) return luns.status();
  if (!(*db_->GetVolume(volume)).has_value()) return Status::NotFound("no such volume: " + volume);
  if (luns->empty()) return Status::NotFound("volume " + volume + " has no LUN to move");
  std::vector<std::string> sources;
  for (auto& l : *luns)
    if (l.target != to_ip) sources.push_back(l.target);
  // Add on the destination first (joins at the current epoch, no I/O pause),
  // then drop the sources: the volume is exported at every moment.
  auto placed = AddLun(volume, to_ip, "");
  if (!placed.ok()) return placed.status();
  Crash("mov_lun.after_add");
  // The attachments follow the LUN before the sources go, so a later detach
  // removes the LUN where it now is (and the source's DelLun sees none there).
  std::vector<Event> moved;
  for (auto& s : sources) moved.push_back(Event{"attachment.moved", {{"volume", volume}, {"from", s}, {"to", to_ip}}});
  if (!moved.empty()) FERRY_RETURN_IF_ERROR(log_->CommitAll(moved).status());
  for (auto& s : sources) FERRY_RETURN_IF_ERROR(DelLun(volume, s));
  return placed;
}

Result<int64_t> Backend::ExpandLun(const std::string& volume) {
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto gw = GatewayFor(*v);
  if (!gw.ok()) return gw.status();
  auto info = peers_->GwGetVolume(gw->admin, volume);
  if (!info.ok()) return info.status();
  {
    auto guard = locks_.Lock(volume);
    if (info->size != v->size) {
      Event e{"volume.resized", {}};
      e.Set("name", volume).Set("size", info->size);
      FERRY_RETURN_IF_ERROR(log_->Commit(e).status());
    }
  }
  auto luns = db_->LunsOfVolume(volume);
  if (!luns.ok()) return luns.status();
  if (luns->empty()) return Status::NotFound("volume " + volume + " has no LUN");
  int64_t size = info->size;
  for (auto& l : *luns) {
    auto t = db_->GetTarget(l.target);
    if (!t.ok() || !t->has_value() || !(*t)->online) continue;
    auto r = peers_->TgtResize((*t)->admin, volume);
    if (!r.ok()) return r.status();
    if (*r > 0) size = *r;
  }
  return size;
}

Status Backend::SetSwitchable(const std::string& volume, bool on) {
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto luns = db_->LunsOfVolume(volume);
  if (!luns.ok()) return luns.status();
  if (luns->empty()) return Status::NotFound("volume " + volume + " has no LUN");
  std::vector<Event> es;
  for (auto& l : *luns) {
    auto t = db_->GetTarget(l.target);
    if (!t.ok() || !t->has_value() || !(*t)->online) return Status::Unavailable("target " + l.target + " offline");
    FERRY_RETURN_IF_ERROR(peers_->TgtSwitchable((*t)->admin, volume, on));
    es.push_back(Event{"lun.switchable", {{"volume", volume}, {"target", l.target}, {"on", on ? "1" : "0"}}});
  }
  return log_->CommitAll(es).status();
}

// ---- attachments ----

Result<AttachInfo> Backend::Attach(const std::string& volume, const Connector& c) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  std::string host = !c.host.empty() ? c.host : c.initiator;
  if (host.empty()) return Status::InvalidArgument("connector needs \"host\" or \"initiator\"");
  if (!c.ip.empty() && !IsIp(c.ip)) return Status::InvalidArgument("connector ip is not an IP address");
  if (!c.initiator.empty() && !IsInitiatorName(c.initiator))
    return Status::InvalidArgument("connector initiator is not an iSCSI name (iqn./eui./naa., up to 223 characters)");
  if (host.size() > 255) return Status::InvalidArgument("connector host longer than 255 characters");
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  if (v->state != "available") return Status::Conflict("volume " + volume + " is " + v->state);
  auto atts = db_->AttachmentsOf(volume);
  if (!atts.ok()) return atts.status();
  std::optional<db::AttachmentRow> prev;
  for (auto& a : *atts)
    if (a.host == host) prev = a;
  db::TargetRow t;
  if (prev) {  // safe retry: the same target
    auto tr = db_->GetTarget(prev->target);
    if (!tr.ok()) return tr.status();
    if (!tr->has_value()) return Status::NotFound("target " + prev->target + " of this attachment is gone");
    if (!(*tr)->online) return Status::Unavailable("target " + prev->target + " is offline");
    t = **tr;
  } else {
    auto picked = PickAttachTarget(c);
    if (!picked.ok()) return picked.status();
    t = *picked;
  }
  auto chap = ChapOf(volume, opts_.chap);
  if (!chap.ok()) return chap.status();
  std::string iqn = DefaultIqn(volume);
  auto mine = db_->LunsOfVolume(volume);
  if (!mine.ok()) return mine.status();
  for (auto& l : *mine)
    if (l.target == t.ip) iqn = l.iqn;
  auto access = AccessFor(volume, t.ip, iqn, c.initiator);
  if (!access.ok()) return access.status();
  bool created = false;
  auto placed = AddLunLocked(*v, t, "", *access, &created);
  if (!placed.ok()) return placed.status();
  Event e{"attachment.added", {}};
  e.Set("volume", volume).Set("host", host).Set("target", t.ip).Set("initiator", c.initiator)
      .Set("connector", c.raw);
  FERRY_RETURN_IF_ERROR(log_->Commit(e).status());
  if (!created) {
    // The iSCSI target existed: it must now admit this initiator too, with the
    // volume's credentials. On failure the attachment is undone (the export stays).
    auto now = AccessFor(volume, t.ip, placed->iqn, "");
    Status s = now.status();
    if (s.ok() && !now->initiators.empty()) s = peers_->TgtSetAcl(t.admin, placed->iqn, now->initiators);
    if (s.ok() && !now->chap_user.empty())
      s = peers_->TgtSetChap(t.admin, placed->iqn, now->chap_user, now->chap_secret);
    if (!s.ok()) {
      logger_.Warn("access of " + volume + " on " + t.ip + " not applied: " + s.ToString());
      if (!prev) (void)log_->Commit(Event{"attachment.removed", {{"volume", volume}, {"host", host}}});
      return s;
    }
  }
  AttachInfo out;
  out.placements.push_back(*placed);
  if (chap->has_value()) out.auth_user = (*chap)->user, out.auth_secret = (*chap)->secret;
  out.discovery_user = opts_.discovery_chap_user;
  out.discovery_secret = opts_.discovery_chap_secret;
  return out;
}

Result<bool> Backend::Detach(const std::string& volume, const Connector& c) {
  FERRY_RETURN_IF_ERROR(ValidateName("volume", volume));
  std::string host = !c.host.empty() ? c.host : c.initiator;
  if (host.empty()) return Status::InvalidArgument("connector needs \"host\" or \"initiator\"");
  auto guard = locks_.Lock(volume);
  auto v = LoadVolume(volume);
  if (!v.ok()) return v.status();
  auto atts = db_->AttachmentsOf(volume);
  if (!atts.ok()) return atts.status();
  std::optional<db::AttachmentRow> mine;
  int others_on_target = 0, others = 0;
  for (auto& a : *atts)
    if (a.host == host) mine = a;
  if (!mine) return Status::NotFound("volume " + volume + " is not attached to " + host);
  for (auto& a : *atts) {
    if (a.host == host) continue;
    ++others;
    if (a.target == mine->target) ++others_on_target;
  }
  auto luns = db_->LunsOfVolume(volume);
  if (!luns.ok()) return luns.status();
  std::optional<db::LunRow> lun;
  for (auto& l : *luns)
    if (l.target == mine->target) lun = l;
  if (others_on_target == 0) {
    if (lun) FERRY_RETURN_IF_ERROR(DelLunLocked(*v, *lun));
  } else if (lun && !mine->initiator.empty()) {
    // Others stay on this target: only this initiator leaves its ACL (first,
    // so a failure changes nothing).
    auto t = db_->GetTarget(mine->target);
    if (!t.ok()) return t.status();
    if (t->has_value() && (*t)->online) {
      auto inis = db_->InitiatorsOn(mine->target, lun->iqn, volume, host);
      if (!inis.ok()) return inis.status();
      FERRY_RETURN_IF_ERROR(peers_->TgtSetAcl((*t)->admin, lun->iqn, *inis));
    }
  }
  FERRY_RETURN_IF_ERROR(log_->Commit(Event{"attachment.removed", {{"volume", volume}, {"host", host}}}).status());
  return others > 0;
}

// ---- registry ----

Status Backend::RegisterGateway(const std::string& spec) {
  // "ip:nbdport:adminport"
  size_t a = spec.find(':');
  size_t b = a == std::string::npos ? a : spec.find(':', a + 1);
  if (a == std::string::npos || b == std::string::npos || spec.find(':', b + 1) != std::string::npos)
    return Status::InvalidArgument("gateway must be IP:NBDPORT:ADMINPORT, got '" + spec + "'");
  std::string ip = spec.substr(0, a);
  auto nbd = ParseHostPort(spec.substr(0, b));
  auto adm = ParseHostPort(ip + ":" + spec.substr(b + 1));
  if (!IsIp(ip) || !nbd.ok() || !adm.ok())
    return Status::InvalidArgument("gateway must be IP:NBDPORT:ADMINPORT, got '" + spec + "'");
  std::string addr = nbd->ToString(), admin = adm->ToString();
  {
    std::lock_guard<std::mutex> lk(beats_mu_);
    beats_["g:" + addr] = std::chrono::steady_clock::now();
  }
  auto g = db_->GetGateway(addr);
  if (!g.ok()) return g.status();
  if (!g->has_value() || (*g)->admin != admin) {
    logger_.Info("gateway " + addr + " registered (admin " + admin + ")");
    return log_->Commit(Event{"gateway.registered", {{"addr", addr}, {"admin", admin}, {"at", std::to_string(NowMs())}}})
        .status();
  }
  if (!(*g)->online) {
    logger_.Info("gateway " + addr + " is back online");
    return log_->Commit(Event{"gateway.online", {{"addr", addr}, {"at", std::to_string(NowMs())}}}).status();
  }
  return Status::Ok();
}

Status Backend::UnregisterGateway(const std::string& spec) {
  if (spec.empty()) return Status::InvalidArgument("gateway parameter is missing");
  std::string s = spec;
  size_t a = s.find(':');
  size_t b = a == std::string::npos ? a : s.find(':', a + 1);
  if (b != std::string::npos) s = s.substr(0, b);
  auto hp = ParseHostPort(s);
  if (!hp.ok()) return Status::InvalidArgument("gateway must be IP:NBDPORT[:ADMINPORT]");
  std::string addr = hp->ToString();
  auto g = db_->GetGateway(addr);
  if (!g.ok()) return g.status();
  if (!g->has_value()) return Status::NotFound("no such gateway: " + addr);
  {
    std::lock_guard<std::mutex> lk(beats_mu_);
    beats_.erase("g:" + addr);
  }
  return log_->Commit(Event{"gateway.unregistered", {{"addr", addr}}}).status();
}

Status Backend::RegisterTarget(const std::string& ip, int port, const std::string& admin, const std::string& host) {
  if (!IsIp(ip)) return Status::InvalidArgument("tgt must be the IP of the iSCSI portal");
  if (!host.empty() && !IsHostName(host))
    return Status::InvalidArgument("host must be a host name (letters, digits, '.', '-', '_'; up to 253)");
  if (port <= 0 || port > 65535) return Status::InvalidArgument("port out of range");
  auto adm = ParseHostPort(admin);
  if (!adm.ok()) return Status::InvalidArgument("admin must be host:port");
  {
    std::lock_guard<std::mutex> lk(beats_mu_);
    beats_["t:" + ip] = std::chrono::steady_clock::now();
  }
  auto t = db_->GetTarget(ip);
  if (!t.ok()) return t.status();
  if (!t->has_value() || (*t)->admin != adm->ToString() || (*t)->port != port || !(*t)->online ||
      (!host.empty() && (*t)->host != host)) {
    logger_.Info("target " + ip + " registered (iscsi port " + std::to_string(port) + ", admin " + admin +
                 (host.empty() ? "" : ", host " + host) + ")");
    Event e{"target.registered", {}};
    e.Set("ip", ip).Set("port", port).Set("admin", adm->ToString()).Set("at", NowMs());
    if (!host.empty()) e.Set("host", host);
    return log_->Commit(e).status();
  }
  return Status::Ok();
}

void Backend::CheckHeartbeats() {
  auto now = std::chrono::steady_clock::now();
  auto limit = opts_.heartbeat_period * opts_.heartbeat_miss;
  auto stale = [&](const std::string& key) {
    std::lock_guard<std::mutex> lk(beats_mu_);
    auto it = beats_.find(key);
    auto last = it == beats_.end() ? started_ : it->second;
    return now - last > limit;
  };
  auto ts = db_->ListTargets();
  if (ts.ok())
    for (auto& t : *ts)
      if (t.online && stale("t:" + t.ip)) {
        logger_.Warn("target " + t.ip + " missed " + std::to_string(opts_.heartbeat_miss) + " heartbeats: offline");
        (void)log_->Commit(Event{"target.offline", {{"ip", t.ip}, {"at", std::to_string(NowMs())}}});
      }
  auto gs = db_->ListGateways();
  if (gs.ok())
    for (auto& g : *gs)
      if (g.online && stale("g:" + g.addr)) {
        logger_.Warn("gateway " + g.addr + " missed heartbeats: offline");
        (void)log_->Commit(Event{"gateway.offline", {{"addr", g.addr}, {"at", std::to_string(NowMs())}}});
      }
}

// ---- settings ----

Status Backend::SetTimeout(const std::string& type, int64_t seconds, const std::string& tgt_ip) {
  FERRY_RETURN_IF_ERROR(ValidateTimeout(type, seconds));
  std::vector<db::TargetRow> targets;
  if (!tgt_ip.empty()) {
    auto t = db_->GetTarget(tgt_ip);
    if (!t.ok()) return t.status();
    if (!t->has_value()) return Status::NotFound("no such target: " + tgt_ip);
    targets.push_back(**t);
  } else {
    auto ts = db_->ListTargets();
    if (!ts.ok()) return ts.status();
    targets = *ts;
  }
  // Remember first (targets that are down get it when they come back via the reconciler).
  FERRY_RETURN_IF_ERROR(log_->Commit(Event{"setting.set", {{"target", tgt_ip},
                                                            {"key", "timeout." + type},
                                                            {"value", std::to_string(seconds)}}})
                            .status());
  std::string failed;
  for (auto& t : targets) {
    if (!t.online) continue;
    Status s = peers_->TgtSetTimeout(t.admin, type, seconds);
    if (!s.ok()) failed += (failed.empty() ? "" : ", ") + t.ip + " (" + s.message() + ")";
  }
  if (!failed.empty()) return Status::Unavailable("saved, but not applied on: " + failed);
  return Status::Ok();
}

Result<std::vector<TimeoutsView>> Backend::ShowTimeouts(const std::string& tgt_ip) {
  std::vector<db::TargetRow> targets;
  if (!tgt_ip.empty()) {
    auto t = db_->GetTarget(tgt_ip);
    if (!t.ok()) return t.status();
    if (!t->has_value()) return Status::NotFound("no such target: " + tgt_ip);
    targets.push_back(**t);
  } else {
    auto ts = db_->ListTargets();
    if (!ts.ok()) return ts.status();
    targets = *ts;
  }
  auto global = db_->SettingsOf("");
  if (!global.ok()) return global.status();
  std::vector<TimeoutsView> out;
  for (auto& t : targets) {
    TimeoutsView tv;
    tv.target = t.ip;
    auto mine = db_->SettingsOf(t.ip);
    if (!mine.ok()) return mine.status();
    for (const auto& type : TimeoutTypes()) {
      int64_t v = DefaultTimeout(type);
      for (auto* m : {&*global, &*mine}) {
        auto it = m->find("timeout." + type);
        if (it != m->end()) v = std::stoll(it->second);
      }
      tv.values[type] = v;
    }
    out.push_back(std::move(tv));
  }
  return out;
}

Result<std::string> Backend::FixedMode() {
  auto s = db_->GetSetting("", "fixedmode");
  if (!s.ok()) return s.status();
  return s->value_or("");
}

Status Backend::SetFixedMode(const std::string& gateway) {
  auto hp = ParseHostPort(gateway);
  if (!hp.ok()) return Status::InvalidArgument("gateway must be IP:NBDPORT");
  auto g = db_->GetGateway(hp->ToString());
  if (!g.ok()) return g.status();
  if (!g->has_value()) return Status::NotFound("no such gateway: " + gateway);
  auto ts = db_->ListTargets();
  if (!ts.ok()) return ts.status();
  FERRY_RETURN_IF_ERROR(
      log_->Commit(Event{"setting.set", {{"target", ""}, {"key", "fixedmode"}, {"value", hp->ToString()}}}).status());
  std::string failed;
  for (auto& t : *ts) {
    if (!t.online) continue;
    Status s = peers_->TgtSetFixed(t.admin, hp->ToString());
    if (!s.ok()) failed += (failed.empty() ? "" : ", ") + t.ip;
  }
  if (!failed.empty()) return Status::Unavailable("saved, but not applied on: " + failed);
  return Status::Ok();
}

Status Backend::ClearFixedMode() {
  auto ts = db_->ListTargets();
  if (!ts.ok()) return ts.status();
  FERRY_RETURN_IF_ERROR(log_->Commit(Event{"setting.deleted", {{"target", ""}, {"key", "fixedmode"}}}).status());
  std::string failed;
  for (auto& t : *ts) {
    if (!t.online) continue;
    Status s = peers_->TgtClearFixed(t.admin);
    if (!s.ok()) failed += (failed.empty() ? "" : ", ") + t.ip;
  }
  if (!failed.empty()) return Status::Unavailable("saved, but not applied on: " + failed);
  return Status::Ok();
}

// ---- queries ----

Result<Stats> Backend::GetStats() {
  Stats s;
  auto n = db_->CountVolumes();
  if (!n.ok()) return n.status();
  s.volumes = *n;
  auto p = db_->SumVolumeSizes();
  if (!p.ok()) return p.status();
  s.provisioned_bytes = *p;
  s.capacity_bytes = opts_.capacity_bytes;
  auto l = db_->LunCountByTarget();
  if (!l.ok()) return l.status();
  for (auto& [k, c] : *l) s.luns += c;
  auto ts = db_->ListTargets();
  if (ts.ok())
    for (auto& t : *ts) s.targets_online += t.online;
  auto gs = db_->ListGateways();
  if (gs.ok())
    for (auto& g : *gs) s.gateways_online += g.online;
  return s;
}

Result<std::vector<std::pair<std::string, std::string>>> Backend::TargetStatusBodies() {
  return FromOnlineTargets("status", [this](const std::string& admin) { return peers_->TgtStatusJson(admin); });
}

Result<std::shared_ptr<const Backend::Bodies>> Backend::SharedTargetStatus() {
  using Clock = std::chrono::steady_clock;
  const auto asked = Clock::now();
  std::unique_lock<std::mutex> l(status_mu_);
  if (status_cache_ && asked - status_at_ <= opts_.status_max_age) {
    // Refresh ahead: past half its allowed age, one caller fetches the next
    // round while everyone else still gets this (fresh enough) answer, so
    // callers do not all queue behind a round each time the answer expires.
    const bool refresh = opts_.status_max_age.count() > 0 && !status_fetching_ &&
                         asked - status_at_ >= opts_.status_max_age / 2;
    if (!refresh) return status_cache_;
  }
  while (status_fetching_) {
    uint64_t gen = status_gen_;
    ++status_waiters_;
    bool moved = status_cv_.wait_for(l, opts_.peer_timeout + std::chrono::seconds(1),
                                     [&] { return status_gen_ != gen; });
    --status_waiters_;
    if (!moved) break;  // the round in progress is stuck: do our own
    // A round that finished after we asked answers us too.
    if (status_cache_ && status_at_ >= asked) return status_cache_;
  }
  status_fetching_ = true;
  l.unlock();
  auto r = TargetStatusBodies();
  l.lock();
  status_fetching_ = false;
  ++status_gen_;
  if (r.ok()) {
    status_cache_ = std::make_shared<const Bodies>(std::move(r).value());
    status_at_ = Clock::now();
  }
  status_cv_.notify_all();
  if (!r.ok()) {
    // A failed refresh ahead still has an answer young enough to give.
    if (status_cache_ && Clock::now() - status_at_ <= opts_.status_max_age) return status_cache_;
    return r.status();
  }
  return status_cache_;
}

Result<AnswerCache::Text> Backend::MapAnswer(const std::string& key, const AnswerCache::Compute& render) {
  // The generation is read before render() queries the map: a write that
  // commits meanwhile makes this answer's tag old, never the answer stale.
  return map_answers_.Get(key, db_->generation(), render);
}

Result<AnswerCache::Text> Backend::StatusAnswer(const std::string& key, const std::shared_ptr<const Bodies>& bodies,
                                                const AnswerCache::Compute& render) {
  return status_answers_.Get(key, status_bodies_version_.Of(bodies), render);
}

int Backend::StatusWaiters() {
  std::lock_guard<std::mutex> l(status_mu_);
  return status_waiters_;
}

Result<std::vector<std::pair<std::string, std::string>>> Backend::TargetSessionBodies() {
  return FromOnlineTargets("sessions", [this](const std::string& admin) { return peers_->TgtSessionsJson(admin); });
}

Result<std::vector<std::pair<std::string, std::string>>> Backend::FromOnlineTargets(
    const std::string& what, const std::function<Result<std::string>(const std::string&)>& fetch) {
  auto ts = db_->ListTargets();
  if (!ts.ok()) return ts.status();
  std::vector<std::pair<std::string, std::string>> out;
  for (auto& t : *ts) {
    if (!t.online) continue;
    auto b = fetch(t.admin);
    if (b.ok()) out.emplace_back(t.ip, *b);
    else logger_.Warn(what + " of target " + t.ip + ": " + b.status().ToString());
  }
  return out;
}

// ---- reconcile ----

ReconcileReport Backend::Reconcile() {
  std::lock_guard<std::mutex> one_at_a_time(reconcile_mu_);
  ReconcileReport rep;
  auto note = [&](const std::string& s) {
    rep.actions.push_back(s);
    logger_.Info("reconcile: " + s);
  };
  // 1. Volumes in a transitional state.
  auto vols = db_->ListVolumes();
  if (vols.ok()) {
    for (auto& v0 : *vols) {
      if (v0.state == "available") continue;
      auto guard = locks_.Lock(v0.name);
      auto vr = db_->GetVolume(v0.name);
      if (!vr.ok() || !vr->has_value()) continue;
      db::VolumeRow v = **vr;
      if (v.state == "available") continue;
      auto gw = GatewayFor(v);
      if (!gw.ok()) { ++rep.skipped; continue; }
      auto info = peers_->GwGetVolume(gw->admin, v.name);
      if (!info.ok() && info.status().code() != Status::Code::kNotFound) { ++rep.skipped; continue; }
      bool exists = info.ok();
      if (v.state == "creating") {
        if (exists) {
          Event e{"volume.created", {}};
          e.Set("name", v.name).Set("size", info->size);
          (void)log_->Commit(e);
          note("volume " + v.name + ": creation had finished at the gateway; now available");
        } else {
          (void)log_->Commit(Event{"volume.deleted", {{"name", v.name}}});
          note("volume " + v.name + ": creation never reached the gateway; removed");
        }
      } else if (v.state == "deleting") {
        if (exists && !IgnorableMissing(peers_->GwDeleteVolume(gw->admin, v.name))) { ++rep.skipped; continue; }
        Status s = log_->Commit(Event{"volume.deleted", {{"name", v.name}}}).status();
        if (!s.ok()) { ++rep.skipped; continue; }
        note("volume " + v.name + ": deletion finished");
      } else if (!exists) {
        ++rep.skipped;
        continue;
      } else {
        // extending / snapshotting / anything else: the gateway is the truth.
        std::vector<Event> es;
        if (info->size != v.size) {
          Event e{"volume.resized", {}};
          e.Set("name", v.name).Set("size", info->size);
          es.push_back(e);
        }
        auto snaps = db_->ListSnapshots(v.name);
        std::set<std::string> known;
        if (snaps.ok())
          for (auto& s : *snaps) known.insert(s.name);
        for (auto& s : info->snapshots)
          if (!known.count(s.name)) {
            Event e{"snapshot.created", {}};
            e.Set("volume", v.name).Set("name", s.name).Set("size", s.size > 0 ? s.size : v.size)
                .Set("created", s.created > 0 ? s.created : NowMs() / 1000);
            es.push_back(e);
          }
        es.push_back(Event{"volume.state", {{"name", v.name}, {"state", "available"}}});
        (void)log_->CommitAll(es);
        note("volume " + v.name + ": " + v.state + " finished from the gateway's view");
      }
      ++rep.fixed;
    }
  }
  // 2. LUNs: read each target's view first, then the map, so a LUN being added
  // right now (its row is committed before the target hears of it) is never
  // mistaken for an orphan.
  auto ts = db_->ListTargets();
  if (!ts.ok()) return rep;
  for (auto& t : *ts) {
    if (!t.online) {
      // LUNs stuck "removing"/"adding" on a dead target: finish via the evacuate path.
      auto rows = db_->LunsOfTarget(t.ip);
      if (!rows.ok()) continue;
      for (auto& r0 : *rows) {
        if (r0.state == "ready") continue;
        auto guard = locks_.Lock(r0.volume);
        std::optional<db::LunRow> cur;
        auto now_rows = db_->LunsOfVolume(r0.volume);
        if (now_rows.ok())
          for (auto& l : *now_rows)
            if (l.target == t.ip) cur = l;
        if (!cur || cur->state == "ready") continue;
        const db::LunRow& r = *cur;
        auto v = db_->GetVolume(r.volume);
        if (!v.ok() || !v->has_value()) continue;
        if (DelLunLocked(**v, r).ok()) { ++rep.fixed; note("lun " + r.volume + "@" + t.ip + " (offline) removed"); }
        else ++rep.skipped;
      }
      continue;
    }
    auto seen = peers_->TgtStatus(t.admin);
    if (!seen.ok()) { ++rep.skipped; continue; }
    auto rows = db_->LunsOfTarget(t.ip);
    if (!rows.ok()) continue;
    std::map<std::string, db::LunRow> mapped;
    for (auto& r : *rows) mapped[r.volume] = r;
    std::map<std::string, TargetVolumeStatus> present;
    for (auto& s : *seen) present[s.volume] = s;
    for (auto& [vol, s] : present) {
      if (mapped.count(vol)) continue;
      auto guard = locks_.Lock(vol);
      auto again = db_->LunsOfVolume(vol);
      bool now_mapped = false;
      if (again.ok())
        for (auto& l : *again) now_mapped = now_mapped || l.target == t.ip;
      if (now_mapped) continue;
      Status d = peers_->TgtDeleteLun(t.admin, s.iqn, s.lun);
      if (!IgnorableMissing(d)) { ++rep.skipped; continue; }
      auto same = db_->LunsWithIqn(s.iqn);
      bool other = false;
      if (same.ok())
        for (auto& l : *same) other = other || l.target == t.ip;
      if (!other) (void)peers_->TgtDeleteTarget(t.admin, s.iqn);
      ++rep.orphans;
      note("orphan LUN " + vol + " (" + s.iqn + ") removed from " + t.ip);
    }
    for (auto& [vol, r0] : mapped) {
      auto guard = locks_.Lock(vol);
      auto vr = db_->GetVolume(vol);
      if (!vr.ok() || !vr->has_value()) continue;
      // Re-read under the volume's lock: an operation may have finished meanwhile.
      std::optional<db::LunRow> cur;
      auto now_rows = db_->LunsOfVolume(vol);
      if (now_rows.ok())
        for (auto& l : *now_rows)
          if (l.target == t.ip) cur = l;
      if (!cur) continue;
      const db::LunRow& r = *cur;
      (void)r0;
      bool at_target = present.count(vol) != 0;
      if (r.state == "removing") {
        if (DelLunLocked(**vr, r).ok()) { ++rep.fixed; note("lun " + vol + "@" + t.ip + ": removal finished"); }
        else ++rep.skipped;
      } else if (r.state == "adding") {
        if (at_target) {
          const auto& s = present[vol];
          db::LunRow n = r;
          Event e{"lun.put", {}};
          e.Set("volume", n.volume).Set("target", n.target).Set("iqn", n.iqn).Set("tid", n.tid)
              .Set("lun", s.lun > 0 ? s.lun : n.lun).Set("switchable", s.switchable)
              .Set("gateway", s.current.empty() ? n.gateway : s.current).Set("state", "ready")
              .Set("epoch", s.epoch > 0 ? s.epoch : n.epoch);
          (void)log_->Commit(e);
          note("lun " + vol + "@" + t.ip + ": add had finished at the target; ready");
        } else {
          auto same = db_->LunsWithIqn(r.iqn);
          bool other = false;
          if (same.ok())
            for (auto& l : *same) other = other || (l.target == t.ip && l.volume != vol);
          if (!other) (void)peers_->TgtDeleteTarget(t.admin, r.iqn);
          (void)log_->Commit(Event{"lun.removed", {{"volume", vol}, {"target", t.ip}}});
          note("lun " + vol + "@" + t.ip + ": add never reached the target; undone");
        }
        ++rep.fixed;
      } else if (!at_target) {
        // Lost mapping (target lost its state): export it again as the map says.
        // With the ACL and CHAP the map says (never re-created open).
        auto access = AccessFor(vol, t.ip, r.iqn, "");
        if (!access.ok()) { ++rep.skipped; continue; }
        (void)peers_->TgtCreateTarget(t.admin, r.iqn, *access);
        auto spec = RestoreSpec(**vr, r, *now_rows);
        if (!spec.ok()) { ++rep.skipped; continue; }
        auto a = peers_->TgtAddLun(t.admin, r.iqn, *spec);
        if (a.ok()) {
          Status s = UndoFencedJoin(**vr, t.admin, r.iqn, *spec, *a);
          if (!s.ok()) a = s;
        }
        if (!a.ok()) { ++rep.skipped; continue; }
        // The map follows what the target serves now (a new epoch, all gateways).
        Event e{"lun.put", {}};
        e.Set("volume", vol).Set("target", t.ip).Set("iqn", r.iqn).Set("tid", r.tid)
            .Set("lun", a->lun > 0 ? a->lun : r.lun).Set("switchable", r.switchable)
            .Set("gateway", a->current.empty() ? r.gateway : a->current).Set("state", "ready")
            .Set("epoch", a->epoch > 0 ? a->epoch : *spec->epoch);
        std::vector<Event> es = {e};
        if (a->epoch > (*vr)->epoch)
          es.push_back(Event{"volume.epoch", {{"name", vol}, {"epoch", std::to_string(a->epoch)}}});
        (void)log_->CommitAll(es);
        ++rep.fixed;
        note("lun " + vol + "@" + t.ip + ": missing at the target; re-added at epoch " +
             std::to_string(a->epoch > 0 ? a->epoch : *spec->epoch));
      }
    }
  }
  return rep;
}

}  // namespace ferry::backend
