#include "backend/events.h"

#include "backend/json.h"
#include "target/common/http_server.h"

namespace ferry::backend {

int64_t Event::GetInt(const std::string& k) const {
  std::string v = Get(k);
  try {
    return v.empty() ? 0 : std::stoll(v);
  } catch (...) {
    return 0;
  }
}

std::string Event::PayloadJson() const {
  // A flat object of strings, written directly: every change appends one,
  // and Poco's Object + stringify was 7 % of the backend's add_lun CPU.
  std::string out = "{";
  for (const auto& [k, v] : fields) {
    if (out.size() > 1) out += ',';
    out += JsonEscape(k);
    out += ':';
    out += JsonEscape(v);
  }
  out += '}';
  return out;
}

Result<Event> Event::FromJson(const std::string& type, const std::string& payload) {
  auto o = ParseObject(payload);
  if (!o.ok()) return o.status();
  Event e;
  e.type = type;
  for (const auto& [k, v] : **o) e.fields[k] = v.convert<std::string>();
  return e;
}

Status ApplyEvent(db::Txn& t, const Event& e) {
  const std::string& ty = e.type;
  if (ty == "volume.creating" || ty == "volume.put") {
    db::VolumeRow v;
    v.name = e.Get("name");
    v.size = e.GetInt("size");
    v.state = ty == "volume.creating" ? "creating" : e.Get("state");
    v.preferred_gw = e.Get("gateway");
    v.epoch = e.GetInt("epoch");
    v.created = e.GetInt("created");
    v.source = e.Get("source");
    return t.PutVolume(v);
  }
  if (ty == "volume.created") {
    FERRY_RETURN_IF_ERROR(t.SetVolumeSize(e.Get("name"), e.GetInt("size")));
    return t.SetVolumeState(e.Get("name"), "available");
  }
  if (ty == "volume.state") return t.SetVolumeState(e.Get("name"), e.Get("state"));
  if (ty == "volume.resized") {
    FERRY_RETURN_IF_ERROR(t.SetVolumeSize(e.Get("name"), e.GetInt("size")));
    return t.SetVolumeState(e.Get("name"), "available");
  }
  if (ty == "volume.epoch") return t.SetVolumeEpoch(e.Get("name"), e.GetInt("epoch"));
  if (ty == "volume.gateway") return t.SetVolumeGateway(e.Get("name"), e.Get("gateway"));
  if (ty == "volume.deleted") return t.DeleteVolume(e.Get("name"));
  if (ty == "snapshot.created")
    return t.PutSnapshot({e.Get("volume"), e.Get("name"), e.GetInt("size"), e.GetInt("created")});
  if (ty == "snapshot.deleted") return t.DeleteSnapshot(e.Get("volume"), e.Get("name"));
  if (ty == "target.registered")
    return t.PutTarget({e.Get("ip"), static_cast<int>(e.GetInt("port")), e.Get("admin"), true,
                        e.GetInt("at"), e.Get("host")});
  if (ty == "target.online" || ty == "target.offline")
    return t.SetTargetOnline(e.Get("ip"), ty == "target.online", e.GetInt("at"));
  if (ty == "gateway.registered") return t.PutGateway({e.Get("addr"), e.Get("admin"), true, e.GetInt("at")});
  if (ty == "gateway.unregistered") return t.DeleteGateway(e.Get("addr"));
  if (ty == "gateway.online" || ty == "gateway.offline")
    return t.SetGatewayOnline(e.Get("addr"), ty == "gateway.online", e.GetInt("at"));
  if (ty == "lun.put") {
    db::LunRow l;
    l.volume = e.Get("volume");
    l.target = e.Get("target");
    l.iqn = e.Get("iqn");
    l.tid = e.GetInt("tid");
    l.lun = e.GetInt("lun");
    l.switchable = e.Get("switchable") != "0";
    l.gateway = e.Get("gateway");
    l.state = e.Get("state");
    l.epoch = e.GetInt("epoch");
    return t.PutLun(l);
  }
  if (ty == "lun.state") return t.SetLunState(e.Get("volume"), e.Get("target"), e.Get("state"));
  if (ty == "lun.switchable") return t.SetLunSwitchable(e.Get("volume"), e.Get("target"), e.Get("on") == "1");
  if (ty == "lun.removed") return t.DeleteLun(e.Get("volume"), e.Get("target"));
  if (ty == "attachment.added")
    return t.PutAttachment({e.Get("volume"), e.Get("host"), e.Get("target"), e.Get("initiator"),
                            e.Get("connector")});
  if (ty == "attachment.removed") return t.DeleteAttachment(e.Get("volume"), e.Get("host"));
  if (ty == "attachment.moved") return t.MoveAttachments(e.Get("volume"), e.Get("from"), e.Get("to"));
  if (ty == "chap.set") return t.PutChap({e.Get("volume"), e.Get("user"), e.Get("secret"), e.GetInt("created")});
  if (ty == "setting.set") return t.PutSetting(e.Get("target"), e.Get("key"), e.Get("value"));
  if (ty == "setting.deleted") return t.DeleteSetting(e.Get("target"), e.Get("key"));
  return Status::InvalidArgument("unknown event type " + ty);
}

Result<int64_t> EventLog::CommitAll(const std::vector<Event>& es) {
  int64_t last = 0;
  Status s = db_->Write([&](db::Txn& t) -> Status {
    for (const auto& e : es) {
      auto seq = t.AppendEvent(0, e.type, e.PayloadJson(), 0);
      if (!seq.ok()) return seq.status();
      FERRY_RETURN_IF_ERROR(ApplyEvent(t, e));
      last = *seq;
    }
    return Status::Ok();
  });
  if (!s.ok()) return s;
  Notify(last);
  return last;
}

Result<int64_t> EventLog::Commit(const Event& e) { return CommitAll({e}); }

Status EventLog::Replay(int64_t seq, const Event& e) {
  Status s = db_->Write([&](db::Txn& t) -> Status {
    auto r = t.AppendEvent(seq, e.type, e.PayloadJson(), 0);
    if (!r.ok()) return r.status();
    return ApplyEvent(t, e);
  });
  if (s.ok()) Notify(seq);
  return s;
}

Result<int64_t> EventLog::Prune(int64_t keep, bool only_sent) {
  int64_t total = 0;
  for (;;) {
    auto n = db_->PruneEvents(keep, only_sent, kPrunePass);
    if (!n.ok()) return n.status();
    total += *n;
    if (*n < kPrunePass) return total;
  }
}

void EventLog::OnCommit(std::function<void(int64_t)> fn) {
  std::lock_guard<std::mutex> lk(mu_);
  listeners_.push_back(std::move(fn));
}

void EventLog::Notify(int64_t seq) {
  std::vector<std::function<void(int64_t)>> ls;
  {
    std::lock_guard<std::mutex> lk(mu_);
    ls = listeners_;
  }
  for (auto& f : ls) f(seq);
}

}  // namespace ferry::backend
