// TargetProcess: the ferry-target process as an object — config to objects,
// start in order (state, registry restore, iSCSI portals, admin API,
// heartbeat), stop in reverse. main.cpp only parses flags and waits for a
// signal.
//
// Promise: Start() either serves everything or returns an error with nothing
// left listening. Stop() is idempotent and joins every thread it started.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "target/common/config.h"
#include "target/common/logger.h"
#include "target/common/status.h"

namespace ferry {
class HttpServer;
namespace iscsi {
class IscsiServer;
}
}  // namespace ferry

namespace ferry::server {

class AdminApi;
class GatewayVolumeFactory;
class Heartbeat;
class Registry;
class StateFile;

struct TargetProcessOptions {
  std::string state_dir = "./var/target";
  std::vector<std::string> iscsi_listen = {"127.0.0.1:3260"};
  std::string admin_listen = "127.0.0.1:8890";
  std::string token;
  std::string backend;
  std::string advertise_ip;  // identity sent to the backend; default: first portal's IP
  std::string host_name;     // compute host name sent to the backend (optional)
  bool demo_open = false;
  std::string discovery_chap_user, discovery_chap_secret;
  int http_threads = 8;
  int heartbeat_ms = 5000;
  int nop_interval_ms = 5000, nop_timeout_ms = 30000;
  LogLevel log_level = LogLevel::kInfo;

  // The flags ferry-target accepts (also [target] keys of the INI file).
  static const std::vector<std::string>& Flags();
  static std::string Usage();
  static Result<TargetProcessOptions> FromConfig(const Config& c);
};

class TargetProcess {
 public:
  explicit TargetProcess(TargetProcessOptions o);
  ~TargetProcess();
  TargetProcess(const TargetProcess&) = delete;
  TargetProcess& operator=(const TargetProcess&) = delete;

  Status Start();
  void Stop();
  // What is bound, for the log line and /healthz.
  std::vector<std::string> portals() const;
  std::string admin() const;

 private:
  TargetProcessOptions opts_;
  Logger log_;
  std::unique_ptr<StateFile> state_;
  std::unique_ptr<GatewayVolumeFactory> factory_;
  std::shared_ptr<Registry> registry_;
  std::unique_ptr<iscsi::IscsiServer> iscsi_;
  std::unique_ptr<AdminApi> api_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<Heartbeat> heartbeat_;
  bool started_ = false;
};

}  // namespace ferry::server
