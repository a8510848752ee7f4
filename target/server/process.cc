#include "target/server/process.h"

#include <sys/resource.h>

#include <cctype>

#include "target/common/http_server.h"
#include "target/iscsi/portal.h"
#include "target/server/admin_api.h"
#include "target/server/gateway_volume.h"
#include "target/server/heartbeat.h"
#include "target/server/spec.h"
#include "target/server/registry.h"
#include "target/server/state_file.h"

namespace ferry::server {

const std::vector<std::string>& TargetProcessOptions::Flags() {
  static const std::vector<std::string> kFlags = {
      "state-dir",           "iscsi-listen",          "admin-listen",  "token",
      "backend",             "log-level",             "demo-open",     "discovery-chap-user",
      "advertise-ip",          "host-name",
      "discovery-chap-secret", "http-threads",        "heartbeat-ms",  "nop-interval-ms",
      "nop-timeout-ms"};
  return kFlags;
}

std::string TargetProcessOptions::Usage() {
  return "usage: ferry-target [--config FILE] [flags]   (flags are also [target] keys, '-' -> '_')\n"
         "  --state-dir DIR            persisted targets/LUNs/ACL/CHAP/timeouts (default ./var/target)\n"
         "  --iscsi-listen HOST:PORT   iSCSI portal; repeat for several (default 127.0.0.1:3260)\n"
         "                             the first portal's IP identifies this target to the backend\n"
         "  --admin-listen HOST:PORT   admin HTTP API (default 127.0.0.1:8890)\n"
         "  --token T                  required on mutating admin calls; sent to the backend\n"
         "  --backend URL              register + heartbeat every 5 s (optional)\n"
         "  --advertise-ip IP          identity sent to the backend (default: first portal's IP;\n"
         "                             set it when that portal listens on 0.0.0.0)\n"
         "  --host-name NAME           compute host name sent to the backend, which places an\n"
         "                             attachment on the target of the connector's host\n"
         "  --demo-open                targets created with \"open\": true admit any loopback\n"
         "                             initiator without ACL (demo/tests only)\n"
         "  --discovery-chap-user U --discovery-chap-secret S   CHAP for SendTargets discovery\n"
         "  --log-level debug|info|warn|error\n"
         "  --http-threads N  --heartbeat-ms MS  --nop-interval-ms MS  --nop-timeout-ms MS\n";
}

Result<TargetProcessOptions> TargetProcessOptions::FromConfig(const Config& c) {
  const std::string s = "target";
  TargetProcessOptions o;
  o.state_dir = c.Get(s, "state_dir", o.state_dir);
  auto listen = c.GetAll(s, "iscsi_listen");
  if (!listen.empty()) o.iscsi_listen = listen;
  for (const auto& l : o.iscsi_listen) {
    auto hp = ParseHostPort(l);
    if (!hp.ok()) return Status::InvalidArgument("--iscsi-listen: " + hp.status().message());
  }
  o.admin_listen = c.Get(s, "admin_listen", o.admin_listen);
  auto ahp = ParseHostPort(o.admin_listen);
  if (!ahp.ok()) return Status::InvalidArgument("--admin-listen: " + ahp.status().message());
  o.token = c.Get(s, "token", c.Get("auth", "token"));
  o.backend = c.Get(s, "backend");
  if (!o.backend.empty() && o.backend.rfind("http://", 0) != 0 && o.backend.rfind("https://", 0) != 0)
    return Status::InvalidArgument("--backend must be an http:// or https:// URL");
  o.advertise_ip = c.Get(s, "advertise_ip");
  if (!o.advertise_ip.empty() && !AddressMatches("0.0.0.0/0", o.advertise_ip) &&
      !AddressMatches("::/0", o.advertise_ip))
    return Status::InvalidArgument("--advertise-ip must be an IP address");
  o.host_name = c.Get(s, "host_name");
  for (char ch : o.host_name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '-' && ch != '_')
      return Status::InvalidArgument("--host-name may hold letters, digits, '.', '-' and '_' only");
  o.demo_open = c.GetBool(s, "demo_open", false);
  o.discovery_chap_user = c.Get(s, "discovery_chap_user");
  o.discovery_chap_secret = c.Get(s, "discovery_chap_secret");
  if (o.discovery_chap_user.empty() != o.discovery_chap_secret.empty())
    return Status::InvalidArgument("--discovery-chap-user and --discovery-chap-secret go together");
  std::string lvl = c.Get(s, "log_level", "info");
  if (lvl != "debug" && lvl != "info" && lvl != "warn" && lvl != "error")
    return Status::InvalidArgument("--log-level must be debug, info, warn or error");
  o.log_level = ParseLogLevel(lvl);
  struct IntKey {
    const char* key;
    int* out;
    int min, max;
  } ints[] = {{"http_threads", &o.http_threads, 2, 256},
              {"heartbeat_ms", &o.heartbeat_ms, 100, 600000},
              {"nop_interval_ms", &o.nop_interval_ms, 0, 3600000},
              {"nop_timeout_ms", &o.nop_timeout_ms, 100, 3600000}};
  for (auto& k : ints) {
    auto v = c.GetInt(s, k.key, *k.out);
    if (!v.ok()) return v.status();
    if (*v < k.min || *v > k.max)
      return Status::InvalidArgument(std::string(k.key) + " must be " + std::to_string(k.min) + ".." +
                                     std::to_string(k.max));
    *k.out = static_cast<int>(*v);
  }
  return o;
}

TargetProcess::TargetProcess(TargetProcessOptions o)
    : opts_(std::move(o)), log_("ferry-target", opts_.log_level) {}

TargetProcess::~TargetProcess() { Stop(); }

Status TargetProcess::Start() {
  // Every LUN holds a gateway connection and every session a socket, so a
  // target with a thousand LUNs needs more than the usual soft limit of 1024
  // descriptors: lift it to the hard limit, and say so when that is low.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < 8192)
      log_.Warn("open-file limit is " + std::to_string(rl.rlim_cur) +
                " (one descriptor per LUN and per session): raise LimitNOFILE for more LUNs");
  }
  state_ = std::make_unique<StateFile>(opts_.state_dir);
  FERRY_RETURN_IF_ERROR(state_->Init());
  factory_ = std::make_unique<GatewayVolumeFactory>(log_.Child("blockdev"));
  Registry::Options ro;
  ro.demo_open = opts_.demo_open;
  ro.discovery_auth.chap_user = opts_.discovery_chap_user;
  ro.discovery_auth.chap_secret = opts_.discovery_chap_secret;
  ro.log = log_.Child("registry");
  registry_ = std::make_shared<Registry>(ro, state_.get(), factory_.get());
  Status st = registry_->Restore();
  if (!st.ok()) {
    Stop();
    return st;
  }

  iscsi::IscsiServerOptions io;
  io.listen = opts_.iscsi_listen;
  io.nop_interval_ms = opts_.nop_interval_ms;
  io.nop_timeout_ms = opts_.nop_timeout_ms;
  iscsi_ = std::make_unique<iscsi::IscsiServer>(io, registry_, log_.Child("iscsi"));
  iscsi::IscsiServer* server = iscsi_.get();
  registry_->SetSessionHooks({[server](const std::string& iqn) { return server->DropTarget(iqn); }});
  st = iscsi_->Start();
  if (!st.ok()) {
    Stop();
    return st;
  }

  auto ahp = ParseHostPort(opts_.admin_listen);
  HttpServer::Options ho;
  ho.host = ahp->host;
  ho.port = ahp->port;
  ho.token = opts_.token;
  ho.threads = opts_.http_threads;
  http_ = std::make_unique<HttpServer>(ho, log_.Child("admin"));
  api_ = std::make_unique<AdminApi>(registry_.get(), [server] { return server->Sessions(); });
  api_->Install(http_.get());
  st = http_->Start();
  if (!st.ok()) {
    Stop();
    return st;
  }
  api_->SetInfo({portals(), admin()});

  if (!opts_.backend.empty()) {
    auto bound = iscsi_->BoundAddresses();
    Heartbeat::Options hb;
    hb.backend_url = opts_.backend;
    hb.token = opts_.token;
    hb.tgt_ip = !opts_.advertise_ip.empty() ? opts_.advertise_ip
                : bound.empty()               ? ParseHostPort(opts_.iscsi_listen.front())->host
                                              : bound.front().host;
    hb.port = bound.empty() ? ParseHostPort(opts_.iscsi_listen.front())->port : bound.front().port;
    hb.admin = admin();
    hb.host = opts_.host_name;
    hb.interval = std::chrono::milliseconds(opts_.heartbeat_ms);
    hb.log = log_.Child("heartbeat");
    heartbeat_ = std::make_unique<Heartbeat>(hb);
    heartbeat_->Start();
  }
  started_ = true;
  std::string p;
  for (const auto& x : portals()) p += (p.empty() ? "" : ",") + x;
  log_.Info("serving iSCSI on " + p + ", admin on http://" + admin() + ", state in " + state_->path() +
            (opts_.demo_open ? " (demo-open)" : ""));
  return Status::Ok();
}

void TargetProcess::Stop() {
  if (heartbeat_) heartbeat_->Stop();
  if (http_) http_->Stop();
  if (iscsi_) iscsi_->Stop();
  if (registry_) registry_->Shutdown();
  heartbeat_.reset();
  http_.reset();
  api_.reset();
  iscsi_.reset();
  registry_.reset();
  factory_.reset();
  if (started_) log_.Info("stopped");
  started_ = false;
}

std::vector<std::string> TargetProcess::portals() const {
  std::vector<std::string> out;
  if (iscsi_)
    for (const auto& hp : iscsi_->BoundAddresses()) out.push_back(hp.ToString());
  return out;
}

std::string TargetProcess::admin() const {
  if (!http_) return "";
  auto ahp = ParseHostPort(opts_.admin_listen);
  HostPort hp{ahp->host, http_->port()};
  return hp.ToString();
}

}  // namespace ferry::server
