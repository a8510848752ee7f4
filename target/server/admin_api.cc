#include "target/server/admin_api.h"

#include <unistd.h>

#include "target/server/json_util.h"

namespace ferry::server {
namespace {

HttpResponse Ok(int code, const JsonObject& o) { return HttpResponse::Json(code, ToJson(o)); }

HttpResponse Err(const ferry::Status& s) {
  // A gateway that cannot be reached is the upstream's fault, not the caller's.
  if (s.code() == ferry::Status::Code::kUnavailable || s.code() == ferry::Status::Code::kTimeout)
    return HttpResponse::Error(503, s.message());
  return HttpResponse::Error(s);
}

void WriteTarget(JsonWriter& w, const TargetSpec& t) {
  w.BeginObject().Field("iqn", t.iqn).Field("tid", t.tid).Field("open", t.open);
  w.Key("acl").BeginObject().Field("initiators", t.acl.initiators).Field("addresses", t.acl.addresses).EndObject();
  // never the secrets
  w.Key("chap").BeginObject().Field("user", t.chap.user).Field("mutual_user", t.chap.mutual_user).EndObject();
  w.Key("luns").BeginArray();
  for (const auto& [n, l] : t.luns) {
    w.BeginObject().Field("lun", l.lun).Field("volume", l.volume).Field("size", l.size).Field("epoch", l.epoch);
    w.Field("switchable", l.switchable).Field("preferred", l.preferred).Field("current", l.current);
    w.Field("gateways", l.gateways).EndObject();
  }
  w.EndArray().EndObject();
}

ferry::Status ParseAcl(const JsonObject& o, Acl* acl) {
  bool present = false;
  FERRY_RETURN_IF_ERROR(GetStringList(o, "initiators", &acl->initiators, &present));
  FERRY_RETURN_IF_ERROR(GetStringList(o, "addresses", &acl->addresses, &present));
  return ferry::Status::Ok();
}

ferry::Status ParseChap(const JsonObject& o, Chap* chap) {
  bool present = false;
  FERRY_RETURN_IF_ERROR(GetString(o, "user", &chap->user, &present));
  FERRY_RETURN_IF_ERROR(GetString(o, "secret", &chap->secret, &present));
  FERRY_RETURN_IF_ERROR(GetString(o, "mutual_user", &chap->mutual_user, &present));
  FERRY_RETURN_IF_ERROR(GetString(o, "mutual_secret", &chap->mutual_secret, &present));
  return ferry::Status::Ok();
}

Result<uint32_t> ParseLunNumber(const std::string& s) {
  if (s.empty() || s.size() > 5 || s.find_first_not_of("0123456789") != std::string::npos)
    return ferry::Status::InvalidArgument("lun must be a number: " + s);
  unsigned long v = std::stoul(s);
  if (v > kMaxLun) return ferry::Status::InvalidArgument("lun must be 0.." + std::to_string(kMaxLun));
  return static_cast<uint32_t>(v);
}

}  // namespace

AdminApi::AdminApi(Registry* registry, SessionSource sessions)
    : reg_(registry), sessions_(std::move(sessions)) {}

void AdminApi::Install(HttpServer* s) {
  s->Route("GET", "/healthz", [this](const HttpRequest& r) { return Healthz(r); });
  s->Route("GET", "/v1/targets", [this](const HttpRequest& r) { return ListTargets(r); });
  s->Route("POST", "/v1/targets", [this](const HttpRequest& r) { return CreateTarget(r); });
  s->Route("GET", "/v1/targets/{iqn}", [this](const HttpRequest& r) { return GetTarget(r); });
  s->Route("DELETE", "/v1/targets/{iqn}", [this](const HttpRequest& r) { return DeleteTarget(r); });
  s->Route("PUT", "/v1/targets/{iqn}/acl", [this](const HttpRequest& r) { return PutAcl(r); });
  s->Route("PUT", "/v1/targets/{iqn}/chap", [this](const HttpRequest& r) { return PutChap(r); });
  s->Route("POST", "/v1/targets/{iqn}/luns", [this](const HttpRequest& r) { return AddLun(r); });
  s->Route("DELETE", "/v1/targets/{iqn}/luns/{lun}", [this](const HttpRequest& r) { return RemoveLun(r); });
  s->Route("POST", "/v1/volumes/{volume}/resize", [this](const HttpRequest& r) { return Resize(r); });
  s->Route("POST", "/v1/volumes/{volume}/switchable", [this](const HttpRequest& r) { return Switchable(r); });
  s->Route("GET", "/v1/timeouts", [this](const HttpRequest& r) { return GetTimeouts(r); });
  s->Route("PUT", "/v1/timeouts", [this](const HttpRequest& r) { return PutTimeouts(r); });
  s->Route("GET", "/v1/fixedmode", [this](const HttpRequest& r) { return GetFixedMode(r); });
  s->Route("PUT", "/v1/fixedmode", [this](const HttpRequest& r) { return PutFixedMode(r); });
  s->Route("DELETE", "/v1/fixedmode", [this](const HttpRequest& r) { return DeleteFixedMode(r); });
  s->Route("GET", "/v1/status", [this](const HttpRequest& r) { return GetStatus(r); });
  s->Route("GET", "/v1/sessions", [this](const HttpRequest& r) { return GetSessions(r); });
}

HttpResponse AdminApi::Healthz(const HttpRequest&) const {
  JsonObject o = NewObject();
  o->set("status", "ok");
  o->set("pid", static_cast<int>(::getpid()));
  o->set("portals", NewArray(info_.portals));
  o->set("admin", info_.admin);
  return Ok(200, o);
}

HttpResponse AdminApi::ListTargets(const HttpRequest&) const {
  JsonWriter w;
  w.BeginObject().Key("targets").BeginArray();
  for (const auto& t : reg_->Targets()) WriteTarget(w, t);
  w.EndArray().EndObject();
  return HttpResponse::Json(200, w.Take());
}

HttpResponse AdminApi::GetTarget(const HttpRequest& r) const {
  const std::string& iqn = r.params.at("iqn");
  for (const auto& t : reg_->Targets())
    if (t.iqn == iqn) {
      JsonWriter w;
      WriteTarget(w, t);
      return HttpResponse::Json(200, w.Take());
    }
  return HttpResponse::Error(404, "no target " + iqn);
}

HttpResponse AdminApi::CreateTarget(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  std::string iqn;
  bool present = false, open = false;
  Acl acl;
  Chap chap;
  JsonObject sub;
  ferry::Status st = GetString(*body, "iqn", &iqn, &present);
  if (st.ok() && !present) st = ferry::Status::InvalidArgument("missing field 'iqn'");
  if (st.ok()) st = GetBool(*body, "open", &open, &present);
  if (st.ok()) st = GetObject(*body, "acl", &sub, &present);
  if (st.ok() && present) st = ParseAcl(sub, &acl);
  if (st.ok()) st = GetObject(*body, "chap", &sub, &present);
  if (st.ok() && present) st = ParseChap(sub, &chap);
  if (!st.ok()) return Err(st);
  bool created = false;
  auto t = reg_->CreateTarget(iqn, open, acl, chap, &created);
  if (!t.ok()) return Err(t.status());
  JsonObject o = NewObject();
  o->set("iqn", t->iqn);
  o->set("tid", t->tid);
  return Ok(created ? 201 : 200, o);
}

HttpResponse AdminApi::DeleteTarget(const HttpRequest& r) {
  const std::string& iqn = r.params.at("iqn");
  ferry::Status st = reg_->DeleteTarget(iqn);
  if (!st.ok()) return Err(st);
  JsonObject o = NewObject();
  o->set("deleted", iqn);
  return Ok(200, o);
}

HttpResponse AdminApi::PutAcl(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  Acl acl;
  ferry::Status st = ParseAcl(*body, &acl);
  if (st.ok()) st = reg_->SetAcl(r.params.at("iqn"), acl);
  if (!st.ok()) return Err(st);
  JsonObject o = NewObject();
  o->set("iqn", r.params.at("iqn"));
  o->set("initiators", NewArray(acl.initiators));
  o->set("addresses", NewArray(acl.addresses));
  return Ok(200, o);
}

HttpResponse AdminApi::PutChap(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  Chap chap;
  ferry::Status st = ParseChap(*body, &chap);
  if (st.ok()) st = reg_->SetChap(r.params.at("iqn"), chap);
  if (!st.ok()) return Err(st);
  JsonObject o = NewObject();
  o->set("iqn", r.params.at("iqn"));
  o->set("user", chap.user);
  o->set("mutual_user", chap.mutual_user);
  return Ok(200, o);
}

HttpResponse AdminApi::AddLun(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  LunRequest req;
  bool present = false;
  int64_t n = 0;
  ferry::Status st = GetString(*body, "volume", &req.volume, &present);
  if (st.ok() && !present) st = ferry::Status::InvalidArgument("missing field 'volume'");
  if (st.ok()) st = GetInt(*body, "lun", &n, &present);
  if (st.ok() && present) {
    if (n < 0 || n > kMaxLun) st = ferry::Status::InvalidArgument("lun must be 0.." + std::to_string(kMaxLun));
    else req.lun = static_cast<uint32_t>(n);
  }
  if (st.ok()) st = GetStringList(*body, "gateways", &req.gateways, &present);
  if (st.ok() && !present) st = ferry::Status::InvalidArgument("missing field 'gateways'");
  if (st.ok()) st = GetString(*body, "preferred", &req.preferred, &present);
  if (st.ok()) st = GetString(*body, "current", &req.current, &present);
  if (st.ok()) st = GetInt(*body, "epoch", &n, &present);
  if (st.ok() && present) {
    if (n < 0) st = ferry::Status::InvalidArgument("epoch must be >= 0");
    else req.epoch = static_cast<uint64_t>(n);
  }
  if (st.ok()) st = GetBool(*body, "switchable", &req.switchable, &present);
  if (st.ok()) st = GetBool(*body, "raise_epoch", &req.raise_epoch, &present);
  JsonObject sub;
  if (st.ok()) st = GetObject(*body, "target", &sub, &present);
  if (st.ok() && present) {
    // Create the target with its first LUN in one change (one round trip,
    // one durable write) when it does not exist yet.
    TargetSpec t;
    JsonObject part;
    st = GetBool(sub, "open", &t.open, &present);
    if (st.ok()) st = GetObject(sub, "acl", &part, &present);
    if (st.ok() && present) st = ParseAcl(part, &t.acl);
    if (st.ok()) st = GetObject(sub, "chap", &part, &present);
    if (st.ok() && present) st = ParseChap(part, &t.chap);
    req.create_target = t;
  }
  if (!st.ok()) return Err(st);
  AddLunInfo info;
  auto lun = reg_->AddLun(r.params.at("iqn"), req, &info);
  if (!lun.ok()) return Err(lun.status());
  JsonObject o = NewObject();
  o->set("lun", lun->lun);
  o->set("size", lun->size);
  o->set("epoch", lun->epoch);
  o->set("current", lun->current);
  o->set("tid", info.tid);
  o->set("target_created", info.target_created);
  if (req.raise_epoch) o->set("epoch_raised", true);  // tells a backend this target knows raise_epoch
  return Ok(201, o);
}

HttpResponse AdminApi::RemoveLun(const HttpRequest& r) {
  auto n = ParseLunNumber(r.params.at("lun"));
  if (!n.ok()) return Err(n.status());
  ferry::Status st = reg_->RemoveLun(r.params.at("iqn"), *n);
  if (!st.ok()) return Err(st);
  JsonObject o = NewObject();
  o->set("iqn", r.params.at("iqn"));
  o->set("deleted", *n);
  return Ok(200, o);
}

HttpResponse AdminApi::Resize(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  auto size = reg_->Resize(r.params.at("volume"));
  if (!size.ok()) return Err(size.status());
  JsonObject o = NewObject();
  o->set("volume", r.params.at("volume"));
  o->set("size", *size);
  return Ok(200, o);
}

HttpResponse AdminApi::Switchable(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  bool on = true, present = false;
  ferry::Status st = GetBool(*body, "switchable", &on, &present);
  if (st.ok() && !present) st = ferry::Status::InvalidArgument("missing field 'switchable' (true/false)");
  if (st.ok()) st = reg_->SetSwitchable(r.params.at("volume"), on);
  if (!st.ok()) return Err(st);
  JsonObject o = NewObject();
  o->set("volume", r.params.at("volume"));
  o->set("switchable", on);
  return Ok(200, o);
}

HttpResponse AdminApi::GetTimeouts(const HttpRequest& r) const {
  TimeoutValues t = reg_->Timeouts();
  JsonObject o = NewObject();
  std::string only = r.Query("type");
  if (!only.empty() && only != "show") {
    auto v = t.Get(only);
    if (!v) return HttpResponse::Error(400, "unknown timeout type '" + only + "'");
    o->set(only, *v);
    return Ok(200, o);
  }
  for (const auto& n : TimeoutValues::Names()) o->set(n, *t.Get(n));
  return Ok(200, o);
}

HttpResponse AdminApi::PutTimeouts(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  std::string type;
  int64_t dur = 0;
  bool present = false;
  ferry::Status st = GetString(*body, "type", &type, &present);
  if (st.ok() && !present) st = ferry::Status::InvalidArgument("missing field 'type'");
  if (st.ok()) st = GetInt(*body, "duration", &dur, &present);
  if (st.ok() && !present) st = ferry::Status::InvalidArgument("missing field 'duration' (seconds)");
  if (st.ok()) st = reg_->SetTimeout(type, dur);
  if (!st.ok()) return Err(st);
  return GetTimeouts(HttpRequest{});
}

HttpResponse AdminApi::GetFixedMode(const HttpRequest&) const {
  std::string gw = reg_->FixedGateway();
  JsonObject o = NewObject();
  o->set("enabled", !gw.empty());
  o->set("gateway", gw);
  return Ok(200, o);
}

HttpResponse AdminApi::PutFixedMode(const HttpRequest& r) {
  auto body = ParseJsonObject(r.body);
  if (!body.ok()) return Err(body.status());
  std::string gw;
  bool present = false;
  ferry::Status st = GetString(*body, "gateway", &gw, &present);
  if (st.ok() && (!present || gw.empty())) st = ferry::Status::InvalidArgument("missing field 'gateway' (host:nbdport)");
  if (st.ok()) st = reg_->SetFixedGateway(gw);
  if (!st.ok()) return Err(st);
  return GetFixedMode(r);
}

HttpResponse AdminApi::DeleteFixedMode(const HttpRequest& r) {
  ferry::Status st = reg_->SetFixedGateway("");
  if (!st.ok()) return Err(st);
  return GetFixedMode(r);
}

HttpResponse AdminApi::GetStatus(const HttpRequest&) const {
  JsonWriter w;
  const auto rows = reg_->StatusRows();
  w.Reserve(64 + rows.size() * 400);  // ~340 bytes a row
  w.BeginObject().Key("volumes").BeginArray();
  for (const auto& row : rows) {
    const VolumeStats& s = row.stats;
    // Strings, as the original system reported them.
    w.BeginObject().Field("volumeName", s.volume_name).Field("perferGw", s.prefer_gw);
    w.Field("currentGw", s.current_gw).Field("status", std::to_string(s.status));
    w.Field("readError", std::to_string(s.read_error)).Field("writeError", std::to_string(s.write_error));
    w.Field("ioCnt", std::to_string(s.io_cnt)).Field("ioTotal", std::to_string(s.io_total));
    w.Field("readIops", std::to_string(s.read_iops)).Field("readKBps", std::to_string(s.read_kbps));
    w.Field("readDelayAvg", std::to_string(s.read_delay_avg)).Field("writeIops", std::to_string(s.write_iops));
    w.Field("writeKBps", std::to_string(s.write_kbps)).Field("writeDelayAvg", std::to_string(s.write_delay_avg));
    w.Field("switchable", s.switchable ? "1" : "0").Field("epoch", std::to_string(s.epoch));
    w.Field("iqn", row.iqn).Field("lun", std::to_string(row.lun)).EndObject();
  }
  w.EndArray().EndObject();
  return HttpResponse::Json(200, w.Take());
}

HttpResponse AdminApi::GetSessions(const HttpRequest&) const {
  JsonWriter w;
  w.BeginObject().Key("sessions").BeginArray();
  if (sessions_)
    for (const auto& s : sessions_()) {
      if (s.discovery) continue;
      w.BeginObject().Field("target", s.target_iqn).Field("initiator", s.initiator_name).Field("isid", s.isid);
      w.Field("address", s.initiator_addr).Field("portal", s.local_portal).EndObject();
    }
  w.EndArray().EndObject();
  return HttpResponse::Json(200, w.Take());
}

}  // namespace ferry::server
