// FakePeers: an in-memory PeerApi for unit tests of Backend (one class under
// test; the real gateways and targets are exercised by tests/backend/*.py).
#pragma once

#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "backend/peers.h"

namespace ferry::backend {

class FakePeers : public PeerApi {
 public:
  struct Lun {
    LunSpec spec;
    bool switchable = true;
    std::string current;
    int64_t epoch = 0;
  };
  struct Tgt {
    std::map<std::string, int64_t> tids;                    // iqn -> tid
    std::map<std::string, TargetAccess> access;             // iqn -> ACL + CHAP
    std::map<std::string, std::map<int64_t, Lun>> luns;     // iqn -> lun -> spec
    std::map<std::string, int64_t> timeouts;
    std::string fixed;
    int64_t next_tid = 1;
  };
  std::mutex mu;
  std::map<std::string, VolInfo> vols;   // shared store: every gateway sees the same
  bool targets_know_raise = true;        // false: targets that predate raise_epoch (ignore it, join at the floor)
  std::map<std::string, Tgt> tgts;       // admin -> target
  std::vector<std::string> calls;        // "op admin arg"
  std::set<std::string> down;            // admins that are unreachable
  std::string fail_next;                 // op name that fails once with kUnavailable

  Status Gate(const std::string& op, const std::string& admin, const std::string& arg) {
    calls.push_back(op + " " + admin + " " + arg);
    if (down.count(admin)) return Status::Unavailable(admin + " down");
    if (fail_next == op) {
      fail_next.clear();
      return Status::Unavailable("injected failure of " + op);
    }
    return Status::Ok();
  }
  int Count(const std::string& prefix) {
    std::lock_guard<std::mutex> lk(mu);
    int n = 0;
    for (auto& c : calls) n += c.rfind(prefix, 0) == 0;
    return n;
  }
  int IndexOf(const std::string& prefix) {
    std::lock_guard<std::mutex> lk(mu);
    for (size_t i = 0; i < calls.size(); ++i)
      if (calls[i].rfind(prefix, 0) == 0) return static_cast<int>(i);
    return -1;
  }
  Lun* FindLun(const std::string& admin, const std::string& vol) {
    for (auto& [iqn, m] : tgts[admin].luns)
      for (auto& [id, l] : m)
        if (l.spec.volume == vol) return &l;
    return nullptr;
  }

  Result<VolInfo> GwCreateVolume(const std::string& a, const std::string& n, int64_t size, const std::string& sv,
                                 const std::string&) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.create", a, n));
    if (vols.count(n)) {
      if (vols[n].size != size) return Status::Conflict("exists");
      return vols[n];
    }
    if (!sv.empty() && !vols.count(sv)) return Status::NotFound("no source");
    VolInfo v;
    v.name = n;
    v.size = size;
    vols[n] = v;
    return v;
  }
  Result<VolInfo> GwGetVolume(const std::string& a, const std::string& n) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.get", a, n));
    if (!vols.count(n)) return Status::NotFound("no volume " + n);
    return vols[n];
  }
  Status GwDeleteVolume(const std::string& a, const std::string& n) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.delete", a, n));
    if (!vols.erase(n)) return Status::NotFound("no volume");
    return Status::Ok();
  }
  Result<VolInfo> GwExtend(const std::string& a, const std::string& n, int64_t size) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.extend", a, n));
    if (!vols.count(n)) return Status::NotFound("no volume");
    vols[n].size = size;
    return vols[n];
  }
  Status GwCreateSnapshot(const std::string& a, const std::string& v, const std::string& s) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.snap", a, v + "@" + s));
    vols[v].snapshots.push_back({s, vols[v].size, 1});
    return Status::Ok();
  }
  Status GwDeleteSnapshot(const std::string& a, const std::string& v, const std::string& s) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.delsnap", a, v + "@" + s));
    auto& ss = vols[v].snapshots;
    for (auto it = ss.begin(); it != ss.end(); ++it)
      if (it->name == s) {
        ss.erase(it);
        return Status::Ok();
      }
    return Status::NotFound("no snapshot");
  }
  Status GwRevert(const std::string& a, const std::string& v, const std::string& s) override {
    std::lock_guard<std::mutex> lk(mu);
    return Gate("gw.revert", a, v + "@" + s);
  }
  Result<int64_t> GwFence(const std::string& a, const std::string& v, int64_t epoch) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("gw.fence", a, v + "=" + std::to_string(epoch)));
    vols[v].epoch = std::max(vols[v].epoch, epoch);
    return vols[v].epoch;
  }
  Result<int64_t> TgtCreateTarget(const std::string& a, const std::string& iqn,
                                  const TargetAccess& access) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.create", a, iqn));
    auto& t = tgts[a];
    if (t.tids.count(iqn)) return Status::Conflict("exists");
    t.tids[iqn] = t.next_tid++;
    t.access[iqn] = access;
    return t.tids[iqn];
  }
  Status TgtSetAcl(const std::string& a, const std::string& iqn,
                   const std::vector<std::string>& initiators) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.acl", a, iqn));
    auto& t = tgts[a];
    if (!t.tids.count(iqn)) return Status::NotFound("no target " + iqn);
    t.access[iqn].initiators = initiators;
    return Status::Ok();
  }
  Status TgtSetChap(const std::string& a, const std::string& iqn, const std::string& user,
                    const std::string& secret) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.chap", a, iqn));
    auto& t = tgts[a];
    if (!t.tids.count(iqn)) return Status::NotFound("no target " + iqn);
    t.access[iqn].chap_user = user;
    t.access[iqn].chap_secret = secret;
    return Status::Ok();
  }
  Status TgtDeleteTarget(const std::string& a, const std::string& iqn) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.delete", a, iqn));
    auto& t = tgts[a];
    if (!t.tids.erase(iqn)) return Status::NotFound("no target");
    t.luns.erase(iqn);
    t.access.erase(iqn);
    return Status::Ok();
  }
  Result<LunInfo> TgtAddLun(const std::string& a, const std::string& iqn, const LunSpec& s) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.addlun", a, s.volume));
    auto& t = tgts[a];
    bool created = false;
    if (!t.tids.count(iqn)) {
      if (!s.create_target) return Status::NotFound("no target " + iqn);
      // As the real target: the target and its first LUN in one change.
      FERRY_RETURN_IF_ERROR(Gate("tgt.create", a, iqn));
      t.tids[iqn] = t.next_tid++;
      t.access[iqn] = *s.create_target;
      created = true;
    } else if (s.create_target && (t.access[iqn].initiators != s.create_target->initiators ||
                                   t.access[iqn].chap_user != s.create_target->chap_user ||
                                   t.access[iqn].chap_secret != s.create_target->chap_secret)) {
      return Status::Conflict("target " + iqn + " exists with other settings");
    }
    Lun l;
    l.spec = s;
    l.switchable = s.switchable.value_or(true);
    l.current = s.current.empty() ? s.preferred : s.current;
    const bool raise = s.raise_epoch && targets_know_raise;
    if (raise)  // the gateway grants max(stored + 1, floor)
      l.epoch = std::max(vols[s.volume].epoch + 1, s.epoch.value_or(1));
    else
      l.epoch = s.epoch.value_or(vols[s.volume].epoch + 1);
    vols[s.volume].epoch = std::max(vols[s.volume].epoch, l.epoch);  // the store learns the epoch
    t.luns[iqn][s.lun] = l;
    LunInfo info{s.lun, vols[s.volume].size, l.epoch, l.current};
    info.tid = t.tids[iqn];
    info.target_created = created;
    info.epoch_raised = raise;
    return info;
  }
  Status TgtDeleteLun(const std::string& a, const std::string& iqn, int64_t lun) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.dellun", a, iqn));
    auto& t = tgts[a];
    if (!t.luns[iqn].erase(lun)) return Status::NotFound("no lun");
    return Status::Ok();
  }
  Result<int64_t> TgtResize(const std::string& a, const std::string& v) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.resize", a, v));
    return vols[v].size;
  }
  Status TgtSwitchable(const std::string& a, const std::string& v, bool on) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.switchable", a, v + "=" + (on ? "1" : "0")));
    Lun* l = FindLun(a, v);
    if (!l) return Status::NotFound("no volume");
    l->switchable = on;
    return Status::Ok();
  }
  Status TgtSetTimeout(const std::string& a, const std::string& type, int64_t s) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.timeout", a, type));
    tgts[a].timeouts[type] = s;
    return Status::Ok();
  }
  Status TgtSetFixed(const std::string& a, const std::string& g) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.fixed", a, g));
    tgts[a].fixed = g;
    return Status::Ok();
  }
  Status TgtClearFixed(const std::string& a) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.unfixed", a, ""));
    tgts[a].fixed.clear();
    return Status::Ok();
  }
  std::function<void()> before_status_json;  // test hook, called outside the lock
  Result<std::string> TgtStatusJson(const std::string& a) override {
    if (before_status_json) before_status_json();
    auto st = TgtStatus(a);
    if (!st.ok()) return st.status();
    std::string out = "{\"volumes\":[";
    for (size_t i = 0; i < st->size(); ++i) {
      auto& s = (*st)[i];
      out += (i ? "," : "") + std::string("{\"volumeName\":\"") + s.volume + "\",\"currentGw\":\"" + s.current +
             "\",\"status\":\"0\",\"epoch\":\"" + std::to_string(s.epoch) + "\",\"iqn\":\"" + s.iqn +
             "\",\"lun\":\"" + std::to_string(s.lun) + "\"}";
    }
    return out + "]}";
  }
  Result<std::string> TgtSessionsJson(const std::string& a) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.sessions", a, ""));
    return std::string("{\"sessions\":[]}");
  }
  Result<std::vector<TargetVolumeStatus>> TgtStatus(const std::string& a) override {
    std::lock_guard<std::mutex> lk(mu);
    FERRY_RETURN_IF_ERROR(Gate("tgt.status", a, ""));
    std::vector<TargetVolumeStatus> out;
    for (auto& [iqn, m] : tgts[a].luns)
      for (auto& [id, l] : m)
        out.push_back({l.spec.volume, iqn, l.spec.preferred, l.current, id, l.epoch, l.switchable});
    return out;
  }
};

}  // namespace ferry::backend
