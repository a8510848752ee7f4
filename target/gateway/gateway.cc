#include "target/gateway/gateway.h"

#include <unistd.h>

namespace ferry::gateway {

const std::vector<std::string>& GatewayOptions::Flags() {
  static const std::vector<std::string> k = {"data-dir",   "nbd-listen",   "admin-listen",         "token",
                                             "backend",    "log-level",    "chunk-size",           "io-threads",
                                             "handshake-timeout-ms",       "heartbeat-ms",         "advertise-host",
                                             "fence-drain-timeout-ms", "fault-injection",      "max-connections"};
  return k;
}

std::string GatewayOptions::Usage() {
  return "usage: ferry-gateway [--config FILE] [--data-dir DIR] [--nbd-listen HOST:PORT]\n"
         "                     [--admin-listen HOST:PORT] [--token T] [--backend URL]\n"
         "                     [--log-level debug|info|warn|error] [--chunk-size BYTES]\n"
         "                     [--io-threads N] [--handshake-timeout-ms MS] [--heartbeat-ms MS]\n"
         "                     [--advertise-host IP] [--fence-drain-timeout-ms MS] [--max-connections N]\n"
         "                     [--fault-injection on|off]   (test/debug only; default off)\n"
         "Every flag is also a key of the [gateway] section (data_dir, nbd_listen, ...).\n"
         "Defaults: --data-dir ./var/data --nbd-listen 127.0.0.1:8585 --admin-listen 127.0.0.1:8686\n";
}

Result<GatewayOptions> GatewayOptions::FromConfig(const Config& c) {
  const std::string s = "gateway";
  GatewayOptions o;
  o.data_dir = c.Get(s, "data_dir", "./var/data");
  if (o.data_dir.empty()) return Status::InvalidArgument("--data-dir must not be empty");
  auto nbd = ParseHostPort(c.Get(s, "nbd_listen", "127.0.0.1:8585"));
  if (!nbd.ok()) return Status::InvalidArgument("--nbd-listen: " + nbd.status().message());
  o.nbd = nbd.value();
  auto admin = ParseHostPort(c.Get(s, "admin_listen", "127.0.0.1:8686"));
  if (!admin.ok()) return Status::InvalidArgument("--admin-listen: " + admin.status().message());
  o.admin = admin.value();
  o.token = c.Get(s, "token", c.Get("auth", "token", ""));
  o.backend = c.Get(s, "backend", "");
  if (!o.backend.empty() && o.backend.rfind("http://", 0) != 0 && o.backend.rfind("https://", 0) != 0) {
    return Status::InvalidArgument("--backend must be an http:// or https:// URL");
  }
  std::string lvl = c.Get(s, "log_level", "info");
  if (lvl != "debug" && lvl != "info" && lvl != "warn" && lvl != "error") {
    return Status::InvalidArgument("--log-level must be debug, info, warn or error");
  }
  o.log_level = ParseLogLevel(lvl);
  auto chunk = c.GetInt(s, "chunk_size", 4 << 20);
  if (!chunk.ok()) return Status::InvalidArgument("--chunk-size: " + chunk.status().message());
  if (*chunk < (64 << 10) || *chunk > (1ll << 30) || (*chunk & (*chunk - 1)) != 0) {
    return Status::InvalidArgument("--chunk-size must be a power of two from 65536 to 1073741824");
  }
  o.chunk_size = static_cast<uint32_t>(*chunk);
  struct IntKey {
    const char* key;
    int lo, hi;
    int* dst;
  };
  for (IntKey k : {IntKey{"io_threads", 1, 256, &o.io_threads},
                   IntKey{"handshake_timeout_ms", 100, 600000, &o.handshake_timeout_ms},
                   IntKey{"heartbeat_ms", 100, 3600000, &o.heartbeat_ms},
                   IntKey{"fence_drain_timeout_ms", 10, 600000, &o.fence_drain_timeout_ms},
                   IntKey{"max_connections", 1, 1000000, &o.max_connections}}) {
    auto v = c.GetInt(s, k.key, *k.dst);
    if (!v.ok() || *v < k.lo || *v > k.hi) {
      std::string flag = k.key;
      for (auto& ch : flag) ch = ch == '_' ? '-' : ch;
      return Status::InvalidArgument("--" + flag + " must be an integer from " + std::to_string(k.lo) + " to " +
                                     std::to_string(k.hi));
    }
    *k.dst = static_cast<int>(*v);
  }
  std::string adv = c.Get(s, "advertise_host", "");
  if (!adv.empty()) o.advertise_host = adv;
  std::string fi = c.Get(s, "fault_injection", "off");
  if (fi != "on" && fi != "off") return Status::InvalidArgument("--fault-injection must be on or off");
  o.fault_injection = fi == "on";
  return o;
}

Gateway::Gateway(GatewayOptions opts, Logger log) : opts_(std::move(opts)), log_(std::move(log)) {}

Gateway::~Gateway() { Stop(); }

Status Gateway::Start() {
  store::Store::Options so;
  so.chunk_size = opts_.chunk_size;
  so.fence_drain_timeout = std::chrono::milliseconds(opts_.fence_drain_timeout_ms);
  auto st = store::Store::Open(opts_.data_dir, so, log_.Child("store"));
  if (!st.ok()) return st.status();
  store_ = std::move(st.value());

  NbdServer::Options no;
  no.host = opts_.nbd.host;
  no.port = opts_.nbd.port;
  no.io_threads = opts_.io_threads;
  no.max_connections = opts_.max_connections;
  no.conn.handshake_timeout = std::chrono::milliseconds(opts_.handshake_timeout_ms);
  faults_ = std::make_unique<FaultInjector>(log_.Child("faults"));
  if (opts_.fault_injection) no.conn.faults = faults_.get();
  nbd_ = std::make_unique<NbdServer>(store_.get(), no, log_.Child("nbd"));
  if (Status s = nbd_->Start(); !s.ok()) {
    Stop();
    return s;
  }

  HttpServer::Options ho;
  ho.host = opts_.admin.host;
  ho.port = opts_.admin.port;
  ho.token = opts_.token;
  http_ = std::make_unique<HttpServer>(ho, log_.Child("admin"));
  AdminApi::Identity id{static_cast<int>(::getpid()), "", "", opts_.data_dir};
  api_ = std::make_unique<AdminApi>(store_.get(), id, log_.Child("api"));
  api_->Register(http_.get());
  fault_api_ = std::make_unique<FaultApi>(faults_.get(), opts_.fault_injection, log_.Child("faults"));
  fault_api_->Register(http_.get());
  if (opts_.fault_injection) log_.Warn("fault injection is on (/v1/faults); a test/debug setting");
  if (Status s = http_->Start(); !s.ok()) {
    Stop();
    return s;
  }
  id.nbd = HostPort{opts_.nbd.host, nbd_->port()}.ToString();
  id.admin = HostPort{opts_.admin.host, http_->port()}.ToString();
  api_->set_identity(id);
  log_.Info("gateway up: nbd " + id.nbd + ", admin " + id.admin + ", data " + opts_.data_dir);

  if (!opts_.backend.empty()) {
    Registrar::Options ro;
    ro.backend_url = opts_.backend;
    ro.token = opts_.token;
    std::string host = opts_.advertise_host.empty() ? opts_.nbd.host : opts_.advertise_host;
    if (host == "0.0.0.0" || host == "::") {
      log_.Warn("registering the wildcard address " + host + "; set --advertise-host to a reachable IP");
    }
    ro.gateway = host + ":" + std::to_string(nbd_->port()) + ":" + std::to_string(http_->port());
    ro.interval = std::chrono::milliseconds(opts_.heartbeat_ms);
    registrar_ = std::make_unique<Registrar>(ro, log_.Child("register"));
    registrar_->Start();
  }
  return Status::Ok();
}

void Gateway::Stop() {
  if (registrar_) registrar_->Stop();
  if (http_) http_->Stop();
  if (nbd_) nbd_->Stop();
  registrar_.reset();
  http_.reset();
  api_.reset();
  fault_api_.reset();
  nbd_.reset();
  store_.reset();
}

}  // namespace ferry::gateway
