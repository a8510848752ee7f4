// Gateway: the ferry-gateway process as an object — its options from the
// config ([gateway] section and flags), the Store, the NBD server, the admin
// HTTP API and the backend registration, started and stopped together.
//
// Promise: FromConfig() validates every option and reports the first bad one
// as a Status; Start() either starts everything or nothing keeps running;
// Stop() is idempotent. main.cpp only parses flags and calls these.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "target/common/config.h"
#include "target/common/http_server.h"
#include "target/common/logger.h"
#include "target/gateway/admin_api.h"
#include "target/gateway/fault_injector.h"
#include "target/gateway/nbd_server.h"
#include "target/gateway/registrar.h"
#include "target/store/store.h"

namespace ferry::gateway {

struct GatewayOptions {
  std::string data_dir;
  HostPort nbd{"127.0.0.1", 8585};
  HostPort admin{"127.0.0.1", 8686};
  std::string token;
  std::string backend;  // empty: run alone
  LogLevel log_level = LogLevel::kInfo;
  uint32_t chunk_size = 4u << 20;
  int io_threads = 4;
  int handshake_timeout_ms = 10000;
  int heartbeat_ms = 5000;
  int fence_drain_timeout_ms = 2000;
  int max_connections = 8192;  // NBD connections served at once (one per LUN of every target)
  std::string advertise_host;  // IP registered with the backend (default: the NBD host)
  bool fault_injection = false;  // test/debug: allow /v1/faults (fault_injector.h)

  // Flag names accepted by ferry-gateway (without "--").
  static const std::vector<std::string>& Flags();
  static Result<GatewayOptions> FromConfig(const Config& c);
  static std::string Usage();
};

class Gateway {
 public:
  Gateway(GatewayOptions opts, Logger log);
  ~Gateway();
  Status Start();
  void Stop();
  uint16_t nbd_port() const { return nbd_ ? nbd_->port() : 0; }
  uint16_t admin_port() const { return http_ ? http_->port() : 0; }

 private:
  GatewayOptions opts_;
  Logger log_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<FaultInjector> faults_;  // outlives nbd_ (its connections use it)
  std::unique_ptr<FaultApi> fault_api_;
  std::unique_ptr<NbdServer> nbd_;
  std::unique_ptr<AdminApi> api_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<Registrar> registrar_;
};

}  // namespace ferry::gateway
