#include <sstream>

#include "backend/api.h"
#include "backend/api_common.h"

namespace ferry::backend {
namespace {

constexpr int64_t kGiB = 1LL << 30;

JObj VolumeJson(const VolumeView& v) {
  JObj o = NewObj();
  o->set("name", v.row.name);
  o->set("size_gb", (v.row.size + kGiB - 1) / kGiB);
  o->set("size", v.row.size);
  o->set("state", v.row.state);
  o->set("gateway", v.row.preferred_gw);
  o->set("epoch", v.row.epoch);
  o->set("source", v.row.source);
  o->set("created", v.row.created);
  JArr snaps = NewArr();
  for (auto& s : v.snapshots) {
    JObj so = NewObj();
    so->set("name", s.name);
    so->set("size", s.size);
    so->set("created", s.created);
    snaps->add(so);
  }
  o->set("snapshots", snaps);
  JArr ex = NewArr();
  for (auto& l : v.luns) {
    JObj lo = NewObj();
    lo->set("target", l.target);
    lo->set("iqn", l.iqn);
    lo->set("lun", l.lun);
    lo->set("tid", l.tid);
    lo->set("state", l.state);
    lo->set("switchable", l.switchable);
    lo->set("epoch", l.epoch);
    lo->set("gateway", l.gateway);
    ex->add(lo);
  }
  o->set("exports", ex);
  return o;
}

Result<int64_t> SizeGb(const JObj& body, const std::string& key) {
  auto g = GetInt(body, key);
  if (!g.ok()) return g.status();
  if (!g->has_value()) return Status::InvalidArgument("\"" + key + "\" is required");
  if (**g <= 0 || **g > (1LL << 20)) return Status::InvalidArgument("\"" + key + "\" must be 1..1048576");
  return **g * kGiB;
}

Result<Connector> ParseConnector(const std::string& body_text) {
  auto body = ParseObject(body_text);
  if (!body.ok()) return body.status();
  auto c = GetObj(*body, "connector");
  if (!c.ok()) return c.status();
  if (!*c) return Status::InvalidArgument("\"connector\" object is required");
  Connector out;
  for (auto [key, dst] : {std::pair<const char*, std::string*>{"ip", &out.ip}, {"host", &out.host},
                          {"initiator", &out.initiator}}) {
    auto v = GetStr(*c, key);
    if (!v.ok()) return v.status();
    *dst = v->value_or("");
  }
  out.raw = Render(*c);
  return out;
}

JObj ConnectionInfo(const std::string& volume, const AttachInfo& info) {
  const std::vector<LunPlacement>& ps = info.placements;
  JObj data = NewObj();
  const LunPlacement& p = ps.front();
  std::string portal = p.ip + ":" + std::to_string(p.port);
  data->set("target_discovered", false);
  data->set("target_portal", portal);
  data->set("target_iqn", p.iqn);
  data->set("target_lun", p.lun);
  JArr portals = NewArr(), iqns = NewArr(), luns = NewArr();
  for (auto& x : ps) {
    portals->add(x.ip + ":" + std::to_string(x.port));
    iqns->add(x.iqn);
    luns->add(x.lun);
  }
  data->set("target_portals", portals);
  data->set("target_iqns", iqns);
  data->set("target_luns", luns);
  data->set("volume_id", volume);
  data->set("discard", true);
  data->set("access_mode", "rw");
  data->set("encrypted", false);
  if (!info.auth_user.empty()) {  // os-brick's one-way CHAP fields
    data->set("auth_method", "CHAP");
    data->set("auth_username", info.auth_user);
    data->set("auth_password", info.auth_secret);
  }
  if (!info.discovery_user.empty()) {
    data->set("discovery_auth_method", "CHAP");
    data->set("discovery_auth_username", info.discovery_user);
    data->set("discovery_auth_password", info.discovery_secret);
  }
  JObj o = NewObj();
  o->set("driver_volume_type", "iscsi");
  o->set("data", data);
  return o;
}

}  // namespace

void RegisterV1Routes(HttpServer& server, Backend& b, const ApiOptions& opts) {
  (void)opts;
  server.Route("GET", "/healthz", [&b](const HttpRequest& r) {
    JObj o = NewObj();
    auto n = b.db()->CountVolumes();
    o->set("status", n.ok() ? "ok" : "degraded");
    o->set("schema_version", b.db()->version());
    return Reply(r, o, n.ok() ? 200 : 503);
  });

  server.Route("POST", "/v1/volumes", [&b](const HttpRequest& r) {
    auto body = ParseObject(r.body);
    if (!body.ok()) return Fail(body.status());
    auto name = GetStr(*body, "name");
    if (!name.ok()) return Fail(name.status());
    if (!name->has_value()) return Fail(Status::InvalidArgument("\"name\" is required"));
    auto size = SizeGb(*body, "size_gb");
    if (!size.ok()) return Fail(size.status());
    auto src = GetObj(*body, "source");
    if (!src.ok()) return Fail(src.status());
    std::string sv, ss;
    if (*src) {
      auto vol = GetStr(*src, "volume");
      if (!vol.ok()) return Fail(vol.status());
      auto snap = GetObj(*src, "snapshot");
      if (!snap.ok()) return Fail(snap.status());
      if (*snap) {
        auto v2 = GetStr(*snap, "volume");
        auto n2 = GetStr(*snap, "name");
        if (!v2.ok()) return Fail(v2.status());
        if (!n2.ok()) return Fail(n2.status());
        if (!v2->has_value() || !n2->has_value())
          return Fail(Status::InvalidArgument("source.snapshot needs \"volume\" and \"name\""));
        sv = **v2;
        ss = **n2;
      } else if (vol->has_value()) {
        sv = **vol;
      } else {
        return Fail(Status::InvalidArgument("source needs \"volume\" or \"snapshot\""));
      }
    }
    auto v = b.CreateVolume(**name, *size, sv, ss);
    if (!v.ok()) return Fail(v.status());
    return Reply(r, VolumeJson(*v), v->created ? 201 : 200);
  });

  server.Route("GET", "/v1/volumes", [&b](const HttpRequest& r) {
    auto vs = b.ListVolumes();
    if (!vs.ok()) return Fail(vs.status());
    JArr a = NewArr();
    for (auto& v : *vs) a->add(VolumeJson(VolumeView{v, {}, {}, false}));
    JObj o = NewObj();
    o->set("volumes", a);
    return Reply(r, o);
  });

  server.Route("GET", "/v1/volumes/{name}", [&b](const HttpRequest& r) {
    auto v = b.GetVolume(r.params.at("name"));
    if (!v.ok()) return Fail(v.status());
    return Reply(r, VolumeJson(*v));
  });

  server.Route("DELETE", "/v1/volumes/{name}", [&b](const HttpRequest& r) {
    Status s = b.DeleteVolume(r.params.at("name"));
    if (!s.ok()) return Fail(s);
    JObj o = NewObj();
    o->set("deleted", r.params.at("name"));
    return Reply(r, o);
  });

  server.Route("POST", "/v1/volumes/{name}/extend", [&b](const HttpRequest& r) {
    auto body = ParseObject(r.body);
    if (!body.ok()) return Fail(body.status());
    auto size = SizeGb(*body, "size_gb");
    if (!size.ok()) return Fail(size.status());
    auto v = b.ExtendVolume(r.params.at("name"), *size);
    if (!v.ok()) return Fail(v.status());
    return Reply(r, VolumeJson(*v));
  });

  server.Route("GET", "/v1/volumes/{name}/snapshots", [&b](const HttpRequest& r) {
    auto v = b.GetVolume(r.params.at("name"));
    if (!v.ok()) return Fail(v.status());
    JObj o = NewObj();
    o->set("snapshots", VolumeJson(*v)->getArray("snapshots"));
    return Reply(r, o);
  });

  server.Route("POST", "/v1/volumes/{name}/snapshots", [&b](const HttpRequest& r) {
    auto body = ParseObject(r.body);
    if (!body.ok()) return Fail(body.status());
    auto name = GetStr(*body, "name");
    if (!name.ok()) return Fail(name.status());
    if (!name->has_value()) return Fail(Status::InvalidArgument("\"name\" is required"));
    auto s = b.CreateSnapshot(r.params.at("name"), **name);
    if (!s.ok()) return Fail(s.status());
    JObj o = NewObj();
    o->set("volume", s->volume);
    o->set("name", s->name);
    o->set("size", s->size);
    o->set("created", s->created);
    return Reply(r, o, 201);
  });

  server.Route("DELETE", "/v1/volumes/{name}/snapshots/{snap}", [&b](const HttpRequest& r) {
    Status s = b.DeleteSnapshot(r.params.at("name"), r.params.at("snap"));
    if (!s.ok()) return Fail(s);
    JObj o = NewObj();
    o->set("deleted", r.params.at("snap"));
    return Reply(r, o);
  });

  server.Route("POST", "/v1/volumes/{name}/revert", [&b](const HttpRequest& r) {
    auto body = ParseObject(r.body);
    if (!body.ok()) return Fail(body.status());
    auto snap = GetStr(*body, "snapshot");
    if (!snap.ok()) return Fail(snap.status());
    if (!snap->has_value()) return Fail(Status::InvalidArgument("\"snapshot\" is required"));
    Status s = b.RevertVolume(r.params.at("name"), **snap);
    if (!s.ok()) return Fail(s);
    auto v = b.GetVolume(r.params.at("name"));
    if (!v.ok()) return Fail(v.status());
    return Reply(r, VolumeJson(*v));
  });

  server.Route("POST", "/v1/volumes/{name}/attachments", [&b](const HttpRequest& r) {
    auto c = ParseConnector(r.body);
    if (!c.ok()) return Fail(c.status());
    auto p = b.Attach(r.params.at("name"), *c);
    if (!p.ok()) return Fail(p.status());
    return Reply(r, ConnectionInfo(r.params.at("name"), *p));
  });

  server.Route("DELETE", "/v1/volumes/{name}/attachments", [&b](const HttpRequest& r) {
    auto c = ParseConnector(r.body);
    if (!c.ok()) return Fail(c.status());
    auto shared = b.Detach(r.params.at("name"), *c);
    if (!shared.ok()) return Fail(shared.status());
    JObj o = NewObj();
    o->set("shared", *shared);
    return Reply(r, o);
  });

  server.Route("GET", "/v1/stats", [&b](const HttpRequest& r) {
    auto s = b.GetStats();
    if (!s.ok()) return Fail(s.status());
    JObj o = NewObj();
    if (s->capacity_bytes > 0) {
      o->set("total_capacity_gb", s->capacity_bytes / kGiB);
      o->set("free_capacity_gb", std::max<int64_t>(0, (s->capacity_bytes - s->provisioned_bytes) / kGiB));
    } else {
      o->set("total_capacity_gb", "infinite");
      o->set("free_capacity_gb", "infinite");
    }
    o->set("provisioned_capacity_gb", (s->provisioned_bytes + kGiB - 1) / kGiB);
    o->set("volume_count", s->volumes);
    o->set("lun_count", s->luns);
    o->set("targets_online", s->targets_online);
    o->set("gateways_online", s->gateways_online);
    o->set("thin_provisioning_support", true);
    o->set("multiattach", true);
    return Reply(r, o);
  });

  server.Route("GET", "/v1/events", [&b](const HttpRequest& r) {
    int64_t after = 0, limit = 1000;
    try {
      if (r.HasQuery("after")) {
        size_t pos = 0;
        after = std::stoll(r.Query("after"), &pos);
        if (pos != r.Query("after").size() || after < 0) throw std::invalid_argument("after");
      }
      if (r.HasQuery("limit")) {
        size_t pos = 0;
        limit = std::stoll(r.Query("limit"), &pos);
        if (pos != r.Query("limit").size() || limit <= 0 || limit > 10000) throw std::invalid_argument("limit");
      }
    } catch (const std::exception&) {
      return Fail(Status::InvalidArgument("after must be an integer >= 0 and limit 1..10000"));
    }
    auto es = b.db()->EventsAfter(after, static_cast<int>(limit));
    if (!es.ok()) return Fail(es.status());
    JArr a = NewArr();
    for (auto& e : *es) {
      JObj eo = NewObj();
      eo->set("seq", e.seq);
      eo->set("type", e.type);
      auto p = ParseObject(e.payload);
      if (p.ok()) {
        // Secrets stay in the map (and on the Kafka log between backends), not in this read-only view.
        if ((*p)->has("secret")) (*p)->set("secret", "(redacted)");
        eo->set("payload", *p);
      }
      eo->set("created", e.created);
      eo->set("sent", e.sent);
      a->add(eo);
    }
    JObj o = NewObj();
    o->set("events", a);
    auto last = b.db()->LastEventSeq();
    o->set("last", last.ok() ? *last : 0);
    // Retention may have dropped older ones: a consumer whose `after` is below
    // first - 1 missed events and should resynchronise from the map.
    auto first = b.db()->FirstEventSeq();
    o->set("first", first.ok() ? *first : 0);
    return Reply(r, o);
  });

  server.Route("GET", "/v1/targets", [&b](const HttpRequest& r) {
    auto ts = b.db()->ListTargets();
    if (!ts.ok()) return Fail(ts.status());
    auto counts = b.db()->LunCountByTarget();
    JArr a = NewArr();
    for (auto& t : *ts) {
      JObj o = NewObj();
      o->set("ip", t.ip);
      o->set("port", t.port);
      o->set("admin", t.admin);
      o->set("online", t.online);
      o->set("host", t.host);
      o->set("luns", counts.ok() ? (*counts)[t.ip] : 0);
      a->add(o);
    }
    JObj o = NewObj();
    o->set("targets", a);
    return Reply(r, o);
  });

  server.Route("GET", "/v1/gateways", [&b](const HttpRequest& r) {
    auto gs = b.db()->ListGateways();
    if (!gs.ok()) return Fail(gs.status());
    auto counts = b.db()->VolumeCountByGateway();
    JArr a = NewArr();
    for (auto& g : *gs) {
      JObj o = NewObj();
      o->set("addr", g.addr);
      o->set("admin", g.admin);
      o->set("online", g.online);
      o->set("volumes", counts.ok() ? (*counts)[g.addr] : 0);
      a->add(o);
    }
    JObj o = NewObj();
    o->set("gateways", a);
    return Reply(r, o);
  });

  server.Route("POST", "/v1/reconcile", [&b](const HttpRequest& r) {
    ReconcileReport rep = b.Reconcile();
    JObj o = NewObj();
    o->set("fixed", rep.fixed);
    o->set("orphans", rep.orphans);
    o->set("skipped", rep.skipped);
    JArr a = NewArr();
    for (auto& s : rep.actions) a->add(s);
    o->set("actions", a);
    return Reply(r, o);
  });

  server.Route("GET", "/metrics", [&b, &server](const HttpRequest&) {
    std::ostringstream m;
    auto s = b.GetStats();
    auto last = b.db()->LastEventSeq();
    auto unsent = b.db()->UnsentEvents(100000);
    auto gauge = [&](const char* name, const char* help, int64_t v) {
      m << "# HELP " << name << " " << help << "\n# TYPE " << name << " gauge\n" << name << " " << v << "\n";
    };
    auto counter = [&](const char* name, const char* help, uint64_t v) {
      m << "# HELP " << name << " " << help << "\n# TYPE " << name << " counter\n" << name << " " << v << "\n";
    };
    if (s.ok()) {
      gauge("ferry_backend_volumes", "Volumes in the map.", s->volumes);
      gauge("ferry_backend_provisioned_bytes", "Sum of volume sizes.", s->provisioned_bytes);
      gauge("ferry_backend_luns", "LUNs in the map.", s->luns);
      gauge("ferry_backend_targets_online", "Targets with a recent heartbeat.", s->targets_online);
      gauge("ferry_backend_gateways_online", "Gateways with a recent heartbeat.", s->gateways_online);
    }
    gauge("ferry_backend_event_seq", "Sequence number of the last event.", last.ok() ? *last : 0);
    gauge("ferry_backend_events_unsent", "Events not yet confirmed by Kafka.",
          unsent.ok() ? static_cast<int64_t>(unsent->size()) : 0);
    counter("ferry_backend_http_requests_total", "HTTP requests dispatched.", server.requests());
    counter("ferry_backend_http_refused_total", "Connections refused because the queue was full.",
            server.refused());
    // Reused answers: map queries (tgtmap, gatewaymap, ...) and volume/status texts.
    m << "# HELP ferry_backend_answers_total Answers of cached queries: kept (hit), shared with a "
         "concurrent computation (shared), computed (miss).\n# TYPE ferry_backend_answers_total counter\n";
    for (auto [name, c] : {std::pair<const char*, AnswerCache::Counters>{"map", b.MapAnswerCounters()},
                           std::pair<const char*, AnswerCache::Counters>{"status", b.StatusAnswerCounters()}}) {
      m << "ferry_backend_answers_total{cache=\"" << name << "\",how=\"hit\"} " << c.hits << "\n";
      m << "ferry_backend_answers_total{cache=\"" << name << "\",how=\"shared\"} " << c.shared << "\n";
      m << "ferry_backend_answers_total{cache=\"" << name << "\",how=\"miss\"} " << c.misses << "\n";
    }
    return HttpResponse::Text(200, m.str());
  });
}

}  // namespace ferry::backend
