// The tgtmaster-compatible API: same paths, parameters, methods and JSON
// field names as the original system (docs/api-compat.md).
#include "backend/api.h"
#include "backend/api_common.h"

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

namespace ferry::backend {
namespace {

JObj Success() {
  JObj o = NewObj();
  o->set("Result", "success");
  return o;
}

Result<int64_t> ParseInt(const std::string& what, const std::string& s) {
  if (s.empty()) return Status::InvalidArgument(what + " is missing");
  try {
    size_t pos = 0;
    long long v = std::stoll(s, &pos);
    if (pos != s.size()) throw std::invalid_argument(s);
    return static_cast<int64_t>(v);
  } catch (const std::exception&) {
    return Status::InvalidArgument(what + " must be an integer: " + s);
  }
}

JObj ServerInfo(const std::string& ip_port, int64_t count, std::optional<bool> online) {
  JObj o = NewObj();
  o->set("IpPort", ip_port);
  o->set("VolumeCount", count);
  if (online) o->set("Status", *online ? 0 : 1);
  return o;
}

// {"ServerCount", "ServerInfos"} of the gatewaymap/tgtmap answers: (address,
// online) rows with their counts.
JObj ServerMap(const std::vector<std::pair<std::string, bool>>& servers,
               const std::map<std::string, int64_t>& counts) {
  JObj o = NewObj();
  o->set("ServerCount", static_cast<int64_t>(servers.size()));
  JArr a = NewArr();
  for (const auto& [addr, online] : servers) {
    auto c = counts.find(addr);
    a->add(ServerInfo(addr, c == counts.end() ? 0 : c->second, online));
  }
  o->set("ServerInfos", a);
  return o;
}

JObj VolumeLine(const std::string& vol, const std::string& gw, const std::string& tgt) {
  JObj o = NewObj();
  o->set("VolumeName", vol);
  o->set("GateWay", gw);
  o->set("TgtServer", tgt);
  return o;
}

// GET /tgtmaster/volume/status: every target's rows, each naming its target.
std::string StatusText(const Backend::Bodies& bodies, bool pretty) {
  if (!pretty) {
    // Fast path: the targets' rows are spliced as they come (their field
    // order is the original's) with "tgt" added; no DOM is built. A body
    // that does not split cleanly is skipped, as an unparsable one is below.
    std::string text = "[";
    bool first = true;
    for (auto& [ip, body] : bodies) (void)AppendObjectsWithField(body, "volumes", "tgt", ip, &text, &first);
    text += "]";
    return text;
  }
  JArr out = NewArr();
  for (auto& [ip, body] : bodies) {
    auto o = ParseObject(body);
    if (!o.ok()) continue;
    JArr a = (*o)->getArray("volumes");
    for (size_t i = 0; a && i < a->size(); ++i) {
      JObj row = a->getObject(static_cast<unsigned>(i));
      if (!row) continue;
      // The original's field order first, then anything newer, then the target.
      static const char* const kOrder[] = {"volumeName", "perferGw", "currentGw", "status", "readError",
                                           "writeError", "ioCnt", "ioTotal", "readIops", "readKBps",
                                           "readDelayAvg", "writeIops", "writeKBps", "writeDelayAvg",
                                           "switchable", "epoch", "iqn", "lun"};
      JObj copy = NewObj();
      for (const char* k : kOrder)
        if (row->has(k)) copy->set(k, row->get(k));
      for (const auto& [k, v] : *row)
        if (!copy->has(k)) copy->set(k, v);
      copy->set("tgt", ip);
      out->add(copy);
    }
  }
  return Render(out, true);
}

HttpResponse SysIscsi(Backend& b, const ApiOptions& opts, const HttpRequest& r) {
  const std::string ops = r.Query("ops");
  const std::string name = r.Query("name");
  if (ops.empty()) return Fail(Status::InvalidArgument("ops is missing"));
  bool read_only = ops == "show" || ops == "get_lun" || (ops == "timeout" && r.Query("type") == "show");
  if (!read_only && !HasToken(r, opts.token)) return Unauthorized();
  auto need_name = [&]() -> Status {
    if (name.empty()) return Status::InvalidArgument("name is missing");
    return ValidateName("volume", name);
  };

  if (ops == "timeout") {
    const std::string type = r.Query("type");
    const std::string tgt = r.Query("tgt");
    if (type.empty()) return Fail(Status::InvalidArgument("type is missing"));
    if (type == "show") {
      auto tv = b.ShowTimeouts(tgt);
      if (!tv.ok()) return Fail(tv.status());
      JObj o = Success();
      JArr a = NewArr();
      for (auto& t : *tv) {
        JObj to = NewObj();
        to->set("tgt", t.target);
        for (const auto& k : TimeoutTypes()) to->set(k, t.values[k]);
        a->add(to);
      }
      o->set("Timeouts", a);
      return Reply(r, o);
    }
    auto d = ParseInt("duration", r.Query("duration"));
    if (!d.ok()) return Fail(d.status());
    Status s = b.SetTimeout(type, *d, tgt);
    if (!s.ok()) return Fail(s);
    JObj o = Success();
    o->set("type", type);
    o->set("duration", *d);
    if (!tgt.empty()) o->set("tgt", tgt);
    return Reply(r, o);
  }
  if (ops == "add_lun") {
    if (Status s = need_name(); !s.ok()) return Fail(s);
    auto p = b.AddLun(name, r.Query("tgt"), r.Query("iqn"));
    if (!p.ok()) return Fail(p.status());
    JObj o = Success();
    o->set("ip", p->ip);
    o->set("iqn", p->iqn);
    return Reply(r, o);
  }
  if (ops == "del_lun") {
    if (Status s = need_name(); !s.ok()) return Fail(s);
    Status s = b.DelLun(name, r.Query("tgt"));
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  }
  if (ops == "get_lun") {
    if (Status s = need_name(); !s.ok()) return Fail(s);
    auto v = b.GetVolume(name);
    if (!v.ok()) return Fail(v.status());
    JObj o = Success();
    o->set("name", name);
    o->set("capacity", v->row.size);
    JArr a = NewArr();
    for (auto& l : v->luns) {
      JObj lo = NewObj();
      lo->set("Ip", l.target);
      lo->set("Iqn", l.iqn);
      lo->set("LunId", l.lun);
      lo->set("Tid", l.tid);
      a->add(lo);
    }
    o->set("Luns", a);
    return Reply(r, o);
  }
  if (ops == "show") {
    auto ts = b.db()->ListTargets();
    if (!ts.ok()) return Fail(ts.status());
    JObj o = NewObj();
    JArr iscsi = NewArr();
    for (auto& t : *ts) {
      auto luns = b.db()->LunsOfTarget(t.ip);
      if (!luns.ok()) return Fail(luns.status());
      JObj to = NewObj();
      to->set("Ip", t.ip);
      to->set("Status", t.online ? 0 : 1);
      JArr names = NewArr();
      for (auto& l : *luns) {
        JObj n = NewObj();
        n->set("VolName", l.volume);
        n->set("LunId", l.lun);
        n->set("Iqn", l.iqn);
        n->set("Tid", l.tid);
        names->add(n);
      }
      to->set("Names", names);
      iscsi->add(to);
    }
    o->set("Iscsi", iscsi);
    JArr tgt = NewArr();
    auto sess = b.TargetSessionBodies();
    if (sess.ok()) {
      std::map<std::string, JArr> by_iqn;
      for (auto& [ip, body] : *sess) {
        auto so = ParseObject(body);
        if (!so.ok()) continue;
        JArr a = (*so)->getArray("sessions");
        for (size_t i = 0; a && i < a->size(); ++i) {
          JObj s = a->getObject(static_cast<unsigned>(i));
          if (!s) continue;
          std::string iqn = StrOr(s, "target");
          if (!by_iqn[iqn]) by_iqn[iqn] = NewArr();
          JObj m = NewObj();
          m->set("ip", "IP Address: " + StrOr(s, "address"));
          m->set("iqn", "Initiator: " + StrOr(s, "initiator") + " alias: none");
          by_iqn[iqn]->add(m);
        }
      }
      for (auto& [iqn, arr] : by_iqn) {
        JObj e = NewObj();
        e->set("mation", arr);
        e->set("iqn", iqn);
        tgt->add(e);
      }
    }
    o->set("Tgt", tgt);
    return Reply(r, o);
  }
  if (ops == "del_iqn") {
    const std::string iqn = r.Query("iqn");
    if (iqn.empty()) return Fail(Status::InvalidArgument("iqn is missing"));
    Status s = b.DelIqn(iqn);
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  }
  if (ops == "mov_lun") {
    if (Status s = need_name(); !s.ok()) return Fail(s);
    const std::string to = r.Query("iscsi");
    if (to.empty()) return Fail(Status::InvalidArgument("iscsi is missing"));
    auto p = b.MoveLun(name, to);
    if (!p.ok()) return Fail(p.status());
    JObj o = Success();
    o->set("ip", p->ip);
    o->set("iqn", p->iqn);
    return Reply(r, o);
  }
  if (ops == "expand_lun") {
    if (Status s = need_name(); !s.ok()) return Fail(s);
    auto size = b.ExpandLun(name);
    if (!size.ok()) return Fail(size.status());
    JObj o = Success();
    o->set("size", *size);
    return Reply(r, o);
  }
  if (ops == "switchable_lun") {
    if (Status s = need_name(); !s.ok()) return Fail(s);
    const std::string flag = r.Query("flag");
    if (flag != "on" && flag != "off") return Fail(Status::InvalidArgument("flag must be on or off"));
    Status s = b.SetSwitchable(name, flag == "on");
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  }
  return Fail(Status::InvalidArgument("unknown ops '" + ops + "'"));
}

}  // namespace

void RegisterCompatRoutes(HttpServer& server, Backend& b, const ApiOptions& opts) {
  HttpServer::RouteOpts open{false};  // auth decided per operation inside
  for (const char* m : {"GET", "POST", "PUT"})
    server.Route(m, "/sys/iscsi", [&b, opts](const HttpRequest& r) { return SysIscsi(b, opts, r); }, open);

  server.Route("PUT", "/tgtmaster/register/gateway", [&b](const HttpRequest& r) {
    if (!r.HasQuery("gateway")) return Fail(Status::InvalidArgument("gateway is missing"));
    Status s = b.RegisterGateway(r.Query("gateway"));
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  });
  server.Route("DELETE", "/tgtmaster/register/gateway", [&b](const HttpRequest& r) {
    Status s = b.UnregisterGateway(r.Query("gateway"));
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  });
  server.Route("PUT", "/tgtmaster/register/tgt", [&b](const HttpRequest& r) {
    if (!r.HasQuery("tgt")) return Fail(Status::InvalidArgument("tgt is missing"));
    auto port = r.HasQuery("port") ? ParseInt("port", r.Query("port")) : Result<int64_t>(3260);
    if (!port.ok()) return Fail(port.status());
    if (!r.HasQuery("admin")) return Fail(Status::InvalidArgument("admin is missing"));
    Status s = b.RegisterTarget(r.Query("tgt"), static_cast<int>(*port), r.Query("admin"), r.Query("host"));
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  });

  // The map queries read only the map: their rendered bodies are reused while
  // the database's write generation is unchanged (Backend::MapAnswer). A key
  // names the query, whether it is pretty, and then its parameter (last, so
  // any text in it cannot be confused with the fixed parts).
  auto cached = [&b](const HttpRequest& r, const std::string& query, const std::string& param,
                     const std::function<Result<JObj>()>& build) {
    const bool pretty = Pretty(r);
    auto text = b.MapAnswer(query + (pretty ? "|p|" : "|c|") + param, [&]() -> Result<std::string> {
      auto o = build();
      if (!o.ok()) return o.status();
      return Render(*o, pretty);
    });
    if (!text.ok()) return Fail(text.status());
    return HttpResponse::Json(200, **text);
  };
  auto gatewaymap = [&b, cached](const HttpRequest& r) {
    return cached(r, "gatewaymap", "", [&b]() -> Result<JObj> {
      auto gs = b.db()->ListGateways();
      if (!gs.ok()) return gs.status();
      auto counts = b.db()->ExportedVolumeCountByGateway();
      if (!counts.ok()) return counts.status();
      std::vector<std::pair<std::string, bool>> servers;
      for (auto& g : *gs) servers.emplace_back(g.addr, g.online);
      return ServerMap(servers, *counts);
    });
  };
  auto tgtmap = [&b, cached](const HttpRequest& r) {
    return cached(r, "tgtmap", "", [&b]() -> Result<JObj> {
      auto ts = b.db()->ListTargets();
      if (!ts.ok()) return ts.status();
      auto counts = b.db()->LunCountByTarget();
      if (!counts.ok()) return counts.status();
      std::vector<std::pair<std::string, bool>> servers;
      for (auto& t : *ts) servers.emplace_back(t.ip, t.online);
      return ServerMap(servers, *counts);
    });
  };
  auto tgt_one = [&b, cached](const HttpRequest& r, bool detail) {
    std::string ip = r.Query("tgt");
    if (ip.empty()) return Fail(Status::InvalidArgument("tgt is missing"));
    return cached(r, detail ? "detailtgt" : "tgt", ip, [&b, &ip, detail]() -> Result<JObj> {
      auto t = b.db()->GetTarget(ip);
      if (!t.ok()) return t.status();
      if (!t->has_value()) return Status::NotFound("no such tgt: " + ip);
      auto luns = b.db()->LunsOfTarget(ip);
      if (!luns.ok()) return luns.status();
      JObj info = ServerInfo(ip, static_cast<int64_t>(luns->size()), std::nullopt);
      if (!detail) return info;
      JObj o = NewObj();
      o->set("Info", info);
      JArr a = NewArr();
      for (auto& l : *luns) a->add(VolumeLine(l.volume, l.gateway, l.target));
      o->set("Volumes", a);
      return o;
    });
  };
  auto gw_one = [&b, cached](const HttpRequest& r, bool detail) {
    std::string gw = r.Query("gw");
    if (gw.empty()) return Fail(Status::InvalidArgument("gw is missing"));
    return cached(r, detail ? "detailgateway" : "gateway", gw, [&b, &gw, detail]() -> Result<JObj> {
      auto g = b.db()->GetGateway(gw);
      if (!g.ok()) return g.status();
      if (!g->has_value()) return Status::NotFound("no such gateway: " + gw);
      auto luns = b.db()->LunsOfGateway(gw);
      if (!luns.ok()) return luns.status();
      std::set<std::string> vols;
      for (auto& l : *luns) vols.insert(l.volume);
      JObj info = ServerInfo(gw, static_cast<int64_t>(vols.size()), std::nullopt);
      if (!detail) return info;
      JObj o = NewObj();
      o->set("Info", info);
      JArr a = NewArr();
      for (auto& l : *luns) a->add(VolumeLine(l.volume, l.gateway, l.target));
      o->set("Volumes", a);
      return o;
    });
  };
  auto volume = [&b](const HttpRequest& r) {
    std::string name = r.Query("volname");
    if (name.empty()) return Fail(Status::InvalidArgument("volname is missing"));
    auto v = b.GetVolume(name);
    if (!v.ok()) return Fail(v.status());
    if (v->luns.empty()) return Reply(r, VolumeLine(name, v->row.preferred_gw, ""));
    const auto& l = v->luns.front();
    JObj o = VolumeLine(name, l.gateway, l.target);
    if (v->luns.size() > 1) {
      JArr all = NewArr();
      for (auto& x : v->luns) all->add(VolumeLine(name, x.gateway, x.target));
      o->set("Exports", all);
    }
    return Reply(r, o);
  };
  HttpServer::RouteOpts query{false};
  for (const char* m : {"PUT", "GET"}) {
    server.Route(m, "/tgtmaster/gatewaymap", gatewaymap, query);
    server.Route(m, "/tgtmaster/tgtmap", tgtmap, query);
    server.Route(m, "/tgtmaster/tgt", [tgt_one](const HttpRequest& r) { return tgt_one(r, false); }, query);
    server.Route(m, "/tgtmaster/detailtgt", [tgt_one](const HttpRequest& r) { return tgt_one(r, true); }, query);
    server.Route(m, "/tgtmaster/gateway", [gw_one](const HttpRequest& r) { return gw_one(r, false); }, query);
    server.Route(m, "/tgtmaster/detailgateway", [gw_one](const HttpRequest& r) { return gw_one(r, true); }, query);
    server.Route(m, "/tgtmaster/volume", volume, query);
  }

  server.Route("GET", "/tgtmaster/volume/status", [&b](const HttpRequest& r) {
    auto shared = b.SharedTargetStatus();
    if (!shared.ok()) return Fail(shared.status());
    // The text is made once per set of target bodies (they are shared for up
    // to --status-max-age-ms) and reused while they are the same object.
    const bool pretty = Pretty(r);
    std::shared_ptr<const Backend::Bodies> bodies = *shared;
    auto text = b.StatusAnswer(pretty ? "pretty" : "compact", bodies,
                               [&]() -> Result<std::string> { return StatusText(*bodies, pretty); });
    if (!text.ok()) return Fail(text.status());
    return HttpResponse::Json(200, **text);
  });

  server.Route("PUT", "/sys/debug/fixedmode", [&b](const HttpRequest& r) {
    if (r.Query("gateway").empty()) return Fail(Status::InvalidArgument("gateway is missing"));
    Status s = b.SetFixedMode(r.Query("gateway"));
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  });
  server.Route("DELETE", "/sys/debug/fixedmode", [&b](const HttpRequest& r) {
    Status s = b.ClearFixedMode();
    if (!s.ok()) return Fail(s);
    return Reply(r, Success());
  });
}

}  // namespace ferry::backend
