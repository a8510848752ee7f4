#include "backend/ctl/ctl.h"

#include <algorithm>
#include <map>
#include <optional>

#include "backend/json.h"
#include "target/common/http_client.h"

#include <Poco/JSON/Parser.h>
#include <functional>

namespace ferry::ctl {
namespace {

using backend::JArr;
using backend::JObj;

const char* kUsage = R"(usage: ferryctl [--url URL] [--token T] [--json] COMMAND ...
  volume create NAME SIZE_GB [--from VOL [--snapshot SNAP]] | list | show NAME | extend NAME SIZE_GB | delete NAME
  snapshot create VOL NAME | list VOL | delete VOL NAME | revert VOL NAME
  lun add VOL [--tgt IP] [--iqn IQN] | del VOL [--tgt IP] | show | move VOL IP | switchable VOL on|off
  gateway register IP:NBDPORT:ADMINPORT | unregister IP:NBDPORT | list | show IP:NBDPORT
  target list | show IP
  timeout set TYPE SECONDS [--tgt IP] | show [--tgt IP]
  status
environment: FERRY_URL, FERRY_TOKEN
)";

struct Failure {
  std::string msg;
  int code = 1;
};

class Cmd {
 public:
  Cmd(std::vector<std::string> args, const CtlEnv& env, std::ostream& out)
      : args_(std::move(args)), env_(env), out_(out) {}

  int Main() {
    if (args_.empty()) throw Failure{"no command (try --help)", 2};
    std::string noun = Next("command"), verb = args_.empty() ? "" : Next("subcommand");
    if (noun == "status") {
      if (!verb.empty()) args_.insert(args_.begin(), verb);
      return Status();
    }
    if (noun == "volume") return Volume(verb);
    if (noun == "snapshot") return Snapshot(verb);
    if (noun == "lun") return Lun(verb);
    if (noun == "gateway") return Gateway(verb);
    if (noun == "target") return Target(verb);
    if (noun == "timeout") return Timeout(verb);
    throw Failure{"unknown command '" + noun + "' (try --help)", 2};
  }

  bool json = false;

 private:
  std::string Next(const std::string& what) {
    if (args_.empty()) throw Failure{"missing " + what, 2};
    std::string a = args_.front();
    args_.erase(args_.begin());
    return a;
  }
  std::optional<std::string> Opt(const std::string& flag) {
    for (size_t i = 0; i < args_.size(); ++i)
      if (args_[i] == flag) {
        if (i + 1 >= args_.size()) throw Failure{flag + " needs a value", 2};
        std::string v = args_[i + 1];
        args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(i) + 2);
        return v;
      }
    return std::nullopt;
  }
  void Done() {
    if (!args_.empty()) throw Failure{"unexpected argument '" + args_.front() + "'", 2};
  }
  int64_t Int(const std::string& s, const std::string& what) {
    try {
      size_t pos = 0;
      long long v = std::stoll(s, &pos);
      if (pos == s.size()) return v;
    } catch (...) {
    }
    throw Failure{what + " must be an integer: " + s, 2};
  }

  JObj Call(const std::string& method, const std::string& path, const JObj& body = nullptr) {
    HttpClient c(HttpClient::Options{env_.token, std::chrono::milliseconds(60000), false, ""});
    auto r = c.Do(method, env_.url + path, body ? backend::Render(body) : "");
    if (!r.ok()) throw Failure{r.status().message()};
    auto o = backend::ParseObject(r->body);
    if (r->status >= 300) {
      std::string msg = o.ok() ? backend::StrOr(*o, "error", r->body) : r->body;
      throw Failure{"HTTP " + std::to_string(r->status) + ": " + msg};
    }
    if (!o.ok()) {
      // Top-level arrays (volume/status) come wrapped.
      JObj w = backend::NewObj();
      w->set("raw", r->body);
      return w;
    }
    return *o;
  }
  std::string Q(const std::string& s) { return UrlEncode(s); }

  // Prints rows as an aligned table.
  void Table(const std::vector<std::string>& head, const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> w(head.size());
    for (size_t i = 0; i < head.size(); ++i) w[i] = head[i].size();
    for (auto& r : rows)
      for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], r[i].size());
    auto line = [&](const std::vector<std::string>& r) {
      std::string s;
      for (size_t i = 0; i < head.size(); ++i) {
        std::string c = i < r.size() ? r[i] : "";
        s += c + (i + 1 < head.size() ? std::string(w[i] - c.size() + 2, ' ') : "");
      }
      while (!s.empty() && s.back() == ' ') s.pop_back();
      out_ << s << "\n";
    };
    line(head);
    for (auto& r : rows) line(r);
  }
  int Print(const JObj& o, const std::function<void()>& human) {
    if (json) out_ << backend::Render(o, true);
    else human();
    return 0;
  }
  static std::string S(const JObj& o, const std::string& k) { return backend::StrOr(o, k); }
  std::vector<JObj> Items(const JObj& o, const std::string& k) {
    std::vector<JObj> v;
    JArr a = o->getArray(k);
    for (size_t i = 0; a && i < a->size(); ++i) v.push_back(a->getObject(static_cast<unsigned>(i)));
    return v;
  }

  int ShowVolume(const JObj& v) {
    return Print(v, [&] {
      out_ << "name:     " << S(v, "name") << "\nsize:     " << S(v, "size_gb") << " GiB (" << S(v, "size")
           << " bytes)\nstate:    " << S(v, "state") << "\ngateway:  " << S(v, "gateway") << "\nepoch:    "
           << S(v, "epoch") << "\n";
      if (!S(v, "source").empty()) out_ << "source:   " << S(v, "source") << "\n";
      std::vector<std::vector<std::string>> rows;
      for (auto& e : Items(v, "exports"))
        rows.push_back({S(e, "target"), S(e, "iqn"), S(e, "lun"), S(e, "state"), S(e, "switchable"), S(e, "epoch")});
      if (!rows.empty()) Table({"TARGET", "IQN", "LUN", "STATE", "SWITCHABLE", "EPOCH"}, rows);
      std::vector<std::vector<std::string>> snaps;
      for (auto& s : Items(v, "snapshots")) snaps.push_back({S(s, "name"), S(s, "size"), S(s, "created")});
      if (!snaps.empty()) Table({"SNAPSHOT", "SIZE", "CREATED"}, snaps);
    });
  }
  int Ok(const JObj& o, const std::string& msg) {
    return Print(o, [&] { out_ << msg << "\n"; });
  }

  int Volume(const std::string& verb) {
    if (verb == "create") {
      std::string name = Next("volume name");
      int64_t gb = Int(Next("size in GiB"), "size");
      auto from = Opt("--from");
      auto snap = Opt("--snapshot");
      Done();
      JObj b = backend::NewObj();
      b->set("name", name);
      b->set("size_gb", gb);
      if (from) {
        JObj src = backend::NewObj();
        if (snap) {
          JObj s = backend::NewObj();
          s->set("volume", *from);
          s->set("name", *snap);
          src->set("snapshot", s);
        } else {
          src->set("volume", *from);
        }
        b->set("source", src);
      } else if (snap) {
        throw Failure{"--snapshot needs --from VOL", 2};
      }
      return ShowVolume(Call("POST", "/v1/volumes", b));
    }
    if (verb == "list") {
      Done();
      JObj o = Call("GET", "/v1/volumes");
      return Print(o, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& v : Items(o, "volumes"))
          rows.push_back({S(v, "name"), S(v, "size_gb"), S(v, "state"), S(v, "gateway"), S(v, "epoch")});
        Table({"NAME", "SIZE_GB", "STATE", "GATEWAY", "EPOCH"}, rows);
      });
    }
    if (verb == "show") {
      std::string name = Next("volume name");
      Done();
      return ShowVolume(Call("GET", "/v1/volumes/" + Q(name)));
    }
    if (verb == "extend") {
      std::string name = Next("volume name");
      int64_t gb = Int(Next("size in GiB"), "size");
      Done();
      JObj b = backend::NewObj();
      b->set("size_gb", gb);
      return ShowVolume(Call("POST", "/v1/volumes/" + Q(name) + "/extend", b));
    }
    if (verb == "delete") {
      std::string name = Next("volume name");
      Done();
      return Ok(Call("DELETE", "/v1/volumes/" + Q(name)), "deleted " + name);
    }
    throw Failure{"volume: unknown subcommand '" + verb + "'", 2};
  }

  int Snapshot(const std::string& verb) {
    std::string vol = Next("volume name");
    if (verb == "list") {
      Done();
      JObj o = Call("GET", "/v1/volumes/" + Q(vol) + "/snapshots");
      return Print(o, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& s : Items(o, "snapshots")) rows.push_back({S(s, "name"), S(s, "size"), S(s, "created")});
        Table({"NAME", "SIZE", "CREATED"}, rows);
      });
    }
    std::string name = Next("snapshot name");
    Done();
    JObj b = backend::NewObj();
    if (verb == "create") {
      b->set("name", name);
      return Ok(Call("POST", "/v1/volumes/" + Q(vol) + "/snapshots", b), "created " + vol + "@" + name);
    }
    if (verb == "delete") return Ok(Call("DELETE", "/v1/volumes/" + Q(vol) + "/snapshots/" + Q(name)), "deleted " + vol + "@" + name);
    if (verb == "revert") {
      b->set("snapshot", name);
      return Ok(Call("POST", "/v1/volumes/" + Q(vol) + "/revert", b), "reverted " + vol + " to " + name);
    }
    throw Failure{"snapshot: unknown subcommand '" + verb + "'", 2};
  }

  int Lun(const std::string& verb) {
    if (verb == "show") {
      Done();
      JObj o = Call("GET", "/sys/iscsi?ops=show");
      return Print(o, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& t : Items(o, "Iscsi"))
          for (auto& n : Items(t, "Names"))
            rows.push_back({S(t, "Ip"), S(t, "Status") == "0" ? "online" : "offline", S(n, "VolName"), S(n, "Iqn"),
                            S(n, "LunId"), S(n, "Tid")});
        Table({"TARGET", "STATUS", "VOLUME", "IQN", "LUN", "TID"}, rows);
      });
    }
    std::string vol = Next("volume name");
    std::string q = "/sys/iscsi?name=" + Q(vol);
    if (verb == "add") {
      if (auto t = Opt("--tgt")) q += "&tgt=" + Q(*t);
      if (auto i = Opt("--iqn")) q += "&iqn=" + Q(*i);
      Done();
      JObj o = Call("GET", q + "&ops=add_lun");
      return Ok(o, vol + " exported on " + S(o, "ip") + " as " + S(o, "iqn"));
    }
    if (verb == "del") {
      if (auto t = Opt("--tgt")) q += "&tgt=" + Q(*t);
      Done();
      return Ok(Call("GET", q + "&ops=del_lun"), "removed LUN of " + vol);
    }
    if (verb == "move") {
      std::string ip = Next("target IP");
      Done();
      JObj o = Call("GET", q + "&ops=mov_lun&iscsi=" + Q(ip));
      return Ok(o, vol + " moved to " + S(o, "ip"));
    }
    if (verb == "switchable") {
      std::string flag = Next("on|off");
      Done();
      return Ok(Call("GET", q + "&ops=switchable_lun&flag=" + Q(flag)), vol + " switchable " + flag);
    }
    throw Failure{"lun: unknown subcommand '" + verb + "'", 2};
  }

  int Gateway(const std::string& verb) {
    if (verb == "list") {
      Done();
      JObj o = Call("GET", "/v1/gateways");
      return Print(o, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& g : Items(o, "gateways"))
          rows.push_back({S(g, "addr"), S(g, "admin"), S(g, "online") == "true" ? "online" : "offline", S(g, "volumes")});
        Table({"GATEWAY", "ADMIN", "STATUS", "VOLUMES"}, rows);
      });
    }
    std::string gw = Next("gateway");
    Done();
    if (verb == "register") return Ok(Call("PUT", "/tgtmaster/register/gateway?gateway=" + Q(gw)), "registered " + gw);
    if (verb == "unregister") return Ok(Call("DELETE", "/tgtmaster/register/gateway?gateway=" + Q(gw)), "unregistered " + gw);
    if (verb == "show") {
      JObj o = Call("PUT", "/tgtmaster/detailgateway?gw=" + Q(gw));
      return Print(o, [&] {
        out_ << "gateway: " << gw << "  volumes: " << S(o->getObject("Info"), "VolumeCount") << "\n";
        std::vector<std::vector<std::string>> rows;
        for (auto& v : Items(o, "Volumes")) rows.push_back({S(v, "VolumeName"), S(v, "TgtServer")});
        Table({"VOLUME", "TARGET"}, rows);
      });
    }
    throw Failure{"gateway: unknown subcommand '" + verb + "'", 2};
  }

  int Target(const std::string& verb) {
    if (verb == "list") {
      Done();
      JObj o = Call("GET", "/v1/targets");
      return Print(o, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& t : Items(o, "targets"))
          rows.push_back({S(t, "ip"), S(t, "port"), S(t, "admin"), S(t, "online") == "true" ? "online" : "offline",
                          S(t, "luns")});
        Table({"TARGET", "PORT", "ADMIN", "STATUS", "LUNS"}, rows);
      });
    }
    if (verb == "show") {
      std::string ip = Next("target IP");
      Done();
      JObj o = Call("PUT", "/tgtmaster/detailtgt?tgt=" + Q(ip));
      return Print(o, [&] {
        out_ << "target: " << ip << "  volumes: " << S(o->getObject("Info"), "VolumeCount") << "\n";
        std::vector<std::vector<std::string>> rows;
        for (auto& v : Items(o, "Volumes")) rows.push_back({S(v, "VolumeName"), S(v, "GateWay")});
        Table({"VOLUME", "GATEWAY"}, rows);
      });
    }
    throw Failure{"target: unknown subcommand '" + verb + "'", 2};
  }

  int Timeout(const std::string& verb) {
    auto tgt = Opt("--tgt");
    std::string q = tgt ? "&tgt=" + Q(*tgt) : "";
    if (verb == "set") {
      std::string type = Next("timeout type");
      std::string secs = Next("seconds");
      Int(secs, "seconds");
      Done();
      return Ok(Call("GET", "/sys/iscsi?ops=timeout&type=" + Q(type) + "&duration=" + Q(secs) + q),
                type + " = " + secs + " s");
    }
    if (verb == "show") {
      Done();
      JObj o = Call("GET", "/sys/iscsi?ops=timeout&type=show" + q);
      return Print(o, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& t : Items(o, "Timeouts"))
          rows.push_back({S(t, "tgt"), S(t, "read"), S(t, "write"), S(t, "readretry"), S(t, "writeretry"),
                          S(t, "switch"), S(t, "recovery"), S(t, "reconnect")});
        Table({"TARGET", "READ", "WRITE", "READRETRY", "WRITERETRY", "SWITCH", "RECOVERY", "RECONNECT"}, rows);
      });
    }
    throw Failure{"timeout: unknown subcommand '" + verb + "'", 2};
  }

  int Status() {
    Done();
    JObj o = Call("GET", "/tgtmaster/volume/status");
    auto arr = [&]() -> JArr {
      try {
        Poco::JSON::Parser p;
        return p.parse(S(o, "raw")).extract<JArr>();
      } catch (...) {
        return backend::NewArr();
      }
    }();
    if (json) {
      out_ << backend::Render(arr, true);
      return 0;
    }
    std::vector<std::vector<std::string>> rows;
    for (size_t i = 0; i < arr->size(); ++i) {
      JObj r = arr->getObject(static_cast<unsigned>(i));
      std::string st = S(r, "status");
      rows.push_back({S(r, "volumeName"), S(r, "tgt"), S(r, "perferGw"), S(r, "currentGw"),
                      st == "0" ? "normal" : st == "2" ? "fault" : st == "3" ? "switch" : st, S(r, "switchable"),
                      S(r, "epoch"), S(r, "readIops"), S(r, "writeIops")});
    }
    Table({"VOLUME", "TARGET", "PREFERRED", "CURRENT", "STATUS", "SWITCHABLE", "EPOCH", "R_IOPS", "W_IOPS"}, rows);
    return 0;
  }

  std::vector<std::string> args_;
  CtlEnv env_;
  std::ostream& out_;
};

}  // namespace

int Run(const std::vector<std::string>& in, const CtlEnv& env0, std::ostream& out, std::ostream& err) {
  CtlEnv env = env0;
  std::vector<std::string> args;
  bool json = false;
  for (size_t i = 0; i < in.size(); ++i) {
    const std::string& a = in[i];
    if (a == "--help" || a == "-h") {
      out << kUsage;
      return 0;
    }
    if (a == "--json") {
      json = true;
    } else if ((a == "--url" || a == "--token") && i + 1 < in.size()) {
      (a == "--url" ? env.url : env.token) = in[++i];
    } else if (a == "--url" || a == "--token") {
      err << "ferryctl: " << a << " needs a value\n";
      return 2;
    } else {
      args.push_back(a);
    }
  }
  while (!env.url.empty() && env.url.back() == '/') env.url.pop_back();
  try {
    Cmd c(args, env, out);
    c.json = json;
    return c.Main();
  } catch (const Failure& f) {
    err << "ferryctl: " << f.msg << "\n";
    return f.code;
  } catch (const std::exception& e) {
    err << "ferryctl: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace ferry::ctl
