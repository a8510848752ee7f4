#include "backend/peers.h"

#include "backend/json.h"

namespace ferry::backend {
namespace {

Result<VolInfo> ParseVolInfo(const std::string& body) {
  auto o = ParseObject(body);
  if (!o.ok()) return Status::Unavailable("gateway sent bad VOLINFO: " + o.status().message());
  VolInfo v;
  v.name = StrOr(*o, "name");
  v.size = IntOr(*o, "size");
  v.allocated = IntOr(*o, "allocated");
  v.epoch = IntOr(*o, "epoch");
  if ((*o)->has("snapshots")) {
    JArr a = (*o)->getArray("snapshots");
    for (size_t i = 0; a && i < a->size(); ++i) {
      JObj s = a->getObject(static_cast<unsigned>(i));
      if (!s) continue;
      v.snapshots.push_back({StrOr(s, "name"), IntOr(s, "size"), IntOr(s, "created")});
    }
  }
  return v;
}

std::string Enc(const std::string& s) { return UrlEncode(s); }

}  // namespace

HttpPeerApi::HttpPeerApi(std::string token, std::chrono::milliseconds timeout)
    : client_(HttpClient::Options{std::move(token), timeout, false, "", kKeepAliveIdle}) {}

Result<std::string> HttpPeerApi::Call(const std::string& method, const std::string& admin,
                                      const std::string& path, const std::string& body) const {
  std::string url = "http://" + admin + path;
  auto r = client_.Do(method, url, body);
  if (!r.ok()) return r.status();
  if (r->status >= 200 && r->status < 300) return r->body;
  std::string msg = method + " " + url + ": HTTP " + std::to_string(r->status);
  auto o = ParseObject(r->body);
  if (o.ok()) msg += ": " + StrOr(*o, "error");
  switch (r->status) {
    case 400: return Status::InvalidArgument(msg);
    case 404: return Status::NotFound(msg);
    case 409: return Status::Conflict(msg);
    case 401:
    case 403: return Status::PermissionDenied(msg);
    default: return Status::Unavailable(msg);
  }
}

Result<VolInfo> HttpPeerApi::GwCreateVolume(const std::string& admin, const std::string& name, int64_t size,
                                            const std::string& src_volume, const std::string& src_snap) {
  JObj b = NewObj();
  b->set("name", name);
  b->set("size", size);
  if (!src_volume.empty()) {
    JObj s = NewObj();
    s->set("volume", src_volume);
    if (!src_snap.empty()) s->set("snapshot", src_snap);
    b->set("source", s);
  }
  auto r = Call("POST", admin, "/v1/volumes", Render(b));
  if (!r.ok()) return r.status();
  return ParseVolInfo(*r);
}

Result<VolInfo> HttpPeerApi::GwGetVolume(const std::string& admin, const std::string& name) {
  auto r = Call("GET", admin, "/v1/volumes/" + Enc(name));
  if (!r.ok()) return r.status();
  return ParseVolInfo(*r);
}

Status HttpPeerApi::GwDeleteVolume(const std::string& admin, const std::string& name) {
  return Call("DELETE", admin, "/v1/volumes/" + Enc(name)).status();
}

Result<VolInfo> HttpPeerApi::GwExtend(const std::string& admin, const std::string& name, int64_t size) {
  JObj b = NewObj();
  b->set("size", size);
  auto r = Call("POST", admin, "/v1/volumes/" + Enc(name) + "/extend", Render(b));
  if (!r.ok()) return r.status();
  return ParseVolInfo(*r);
}

Status HttpPeerApi::GwCreateSnapshot(const std::string& admin, const std::string& vol, const std::string& snap) {
  JObj b = NewObj();
  b->set("name", snap);
  return Call("POST", admin, "/v1/volumes/" + Enc(vol) + "/snapshots", Render(b)).status();
}

Status HttpPeerApi::GwDeleteSnapshot(const std::string& admin, const std::string& vol, const std::string& snap) {
  return Call("DELETE", admin, "/v1/volumes/" + Enc(vol) + "/snapshots/" + Enc(snap)).status();
}

Status HttpPeerApi::GwRevert(const std::string& admin, const std::string& vol, const std::string& snap) {
  JObj b = NewObj();
  b->set("snapshot", snap);
  return Call("POST", admin, "/v1/volumes/" + Enc(vol) + "/revert", Render(b)).status();
}

Result<int64_t> HttpPeerApi::GwFence(const std::string& admin, const std::string& vol, int64_t epoch) {
  JObj b = NewObj();
  b->set("epoch", epoch);
  auto r = Call("POST", admin, "/v1/volumes/" + Enc(vol) + "/fence", Render(b));
  if (!r.ok()) return r.status();
  auto o = ParseObject(*r);
  if (!o.ok()) return Status::Unavailable("gateway sent bad fence reply");
  return IntOr(*o, "epoch", epoch);
}

namespace {
JObj AclJson(const std::vector<std::string>& initiators) {
  JObj acl = NewObj();
  JArr ini = NewArr();
  for (const auto& i : initiators) ini->add(i);
  acl->set("initiators", ini);
  acl->set("addresses", NewArr());
  return acl;
}
JObj ChapJson(const std::string& user, const std::string& secret) {
  JObj c = NewObj();
  if (!user.empty()) {
    c->set("user", user);
    c->set("secret", secret);
  }
  return c;
}
// The target settings an export is created with (POST /v1/targets, or the
// "target" object of POST /v1/targets/{iqn}/luns).
JObj TargetAccessJson(const TargetAccess& access) {
  JObj b = NewObj();
  if (access.initiators.empty())
    b->set("open", true);
  else
    b->set("acl", AclJson(access.initiators));
  if (!access.chap_user.empty()) b->set("chap", ChapJson(access.chap_user, access.chap_secret));
  return b;
}
}  // namespace

Result<int64_t> HttpPeerApi::TgtCreateTarget(const std::string& admin, const std::string& iqn,
                                             const TargetAccess& access) {
  JObj b = TargetAccessJson(access);
  b->set("iqn", iqn);
  auto r = Call("POST", admin, "/v1/targets", Render(b));
  if (!r.ok()) return r.status();
  auto o = ParseObject(*r);
  if (!o.ok()) return Status::Unavailable("target sent bad reply to create");
  return IntOr(*o, "tid");
}

Status HttpPeerApi::TgtSetAcl(const std::string& admin, const std::string& iqn,
                              const std::vector<std::string>& initiators) {
  return Call("PUT", admin, "/v1/targets/" + Enc(iqn) + "/acl", Render(AclJson(initiators))).status();
}

Status HttpPeerApi::TgtSetChap(const std::string& admin, const std::string& iqn, const std::string& user,
                               const std::string& secret) {
  return Call("PUT", admin, "/v1/targets/" + Enc(iqn) + "/chap", Render(ChapJson(user, secret))).status();
}

Status HttpPeerApi::TgtDeleteTarget(const std::string& admin, const std::string& iqn) {
  return Call("DELETE", admin, "/v1/targets/" + Enc(iqn)).status();
}

Result<LunInfo> HttpPeerApi::TgtAddLun(const std::string& admin, const std::string& iqn, const LunSpec& s) {
  JObj b = NewObj();
  b->set("volume", s.volume);
  b->set("lun", s.lun);
  JArr gws = NewArr();
  for (const auto& g : s.gateways) gws->add(g);
  b->set("gateways", gws);
  b->set("preferred", s.preferred);
  if (!s.current.empty()) b->set("current", s.current);
  if (s.epoch) b->set("epoch", *s.epoch);
  if (s.raise_epoch) b->set("raise_epoch", true);
  if (s.switchable) b->set("switchable", *s.switchable);
  if (s.create_target) b->set("target", TargetAccessJson(*s.create_target));
  auto r = Call("POST", admin, "/v1/targets/" + Enc(iqn) + "/luns", Render(b));
  if (!r.ok()) return r.status();
  auto o = ParseObject(*r);
  if (!o.ok()) return Status::Unavailable("target sent bad reply to add lun");
  LunInfo info{IntOr(*o, "lun", s.lun), IntOr(*o, "size"), IntOr(*o, "epoch"), StrOr(*o, "current")};
  info.tid = IntOr(*o, "tid");
  info.target_created = (*o)->has("target_created") && (*o)->getValue<bool>("target_created");
  info.epoch_raised = (*o)->has("epoch_raised") && (*o)->getValue<bool>("epoch_raised");
  return info;
}

Status HttpPeerApi::TgtDeleteLun(const std::string& admin, const std::string& iqn, int64_t lun) {
  return Call("DELETE", admin, "/v1/targets/" + Enc(iqn) + "/luns/" + std::to_string(lun)).status();
}

Result<int64_t> HttpPeerApi::TgtResize(const std::string& admin, const std::string& volume) {
  auto r = Call("POST", admin, "/v1/volumes/" + Enc(volume) + "/resize", "{}");
  if (!r.ok()) return r.status();
  auto o = ParseObject(*r);
  return o.ok() ? IntOr(*o, "size") : 0;
}

Status HttpPeerApi::TgtSwitchable(const std::string& admin, const std::string& volume, bool on) {
  JObj b = NewObj();
  b->set("switchable", on);
  return Call("POST", admin, "/v1/volumes/" + Enc(volume) + "/switchable", Render(b)).status();
}

Status HttpPeerApi::TgtSetTimeout(const std::string& admin, const std::string& type, int64_t seconds) {
  JObj b = NewObj();
  b->set("type", type);
  b->set("duration", seconds);
  return Call("PUT", admin, "/v1/timeouts", Render(b)).status();
}

Status HttpPeerApi::TgtSetFixed(const std::string& admin, const std::string& gateway) {
  JObj b = NewObj();
  b->set("gateway", gateway);
  return Call("PUT", admin, "/v1/fixedmode", Render(b)).status();
}

Status HttpPeerApi::TgtClearFixed(const std::string& admin) {
  return Call("DELETE", admin, "/v1/fixedmode").status();
}

Result<std::string> HttpPeerApi::TgtStatusJson(const std::string& admin) {
  return Call("GET", admin, "/v1/status");
}

Result<std::string> HttpPeerApi::TgtSessionsJson(const std::string& admin) {
  return Call("GET", admin, "/v1/sessions");
}

Result<std::vector<TargetVolumeStatus>> HttpPeerApi::TgtStatus(const std::string& admin) {
  auto r = TgtStatusJson(admin);
  if (!r.ok()) return r.status();
  auto o = ParseObject(*r);
  if (!o.ok()) return Status::Unavailable("target sent bad status");
  std::vector<TargetVolumeStatus> out;
  JArr a = (*o)->getArray("volumes");
  for (size_t i = 0; a && i < a->size(); ++i) {
    JObj v = a->getObject(static_cast<unsigned>(i));
    if (!v) continue;
    TargetVolumeStatus s;
    s.volume = StrOr(v, "volumeName");
    s.iqn = StrOr(v, "iqn");
    s.preferred = StrOr(v, "perferGw");
    s.current = StrOr(v, "currentGw");
    s.lun = IntOr(v, "lun");
    s.epoch = IntOr(v, "epoch");
    std::string sw = StrOr(v, "switchable", "1");
    s.switchable = !(sw == "0" || sw == "false");
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace ferry::backend
