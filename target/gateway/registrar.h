// Registrar: registers the gateway with the backend and heartbeats by
// repeating the registration: PUT {backend}/tgtmaster/register/gateway?gateway=IP:NBDPORT:ADMINPORT
// at Start() and every `interval` after.
//
// Promise: failures are logged and retried at the next tick, never fatal; no
// call blocks longer than the HTTP timeout; Stop() wakes the thread at once and
// joins it. It never deregisters (an operator does).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "target/common/http_client.h"
#include "target/common/logger.h"
#include "target/common/status.h"

namespace ferry::gateway {

class Registrar {
 public:
  struct Options {
    std::string backend_url;  // "http://host:port"
    std::string token;
    std::string gateway;      // "IP:NBDPORT:ADMINPORT"
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{3000};
  };
  Registrar(Options opts, Logger log);
  ~Registrar();

  void Start();
  void Stop();
  // One registration call (also used by the thread).
  Status RegisterOnce();
  uint64_t successes() const { return ok_.load(); }

 private:
  void Loop();
  Options opts_;
  Logger log_;
  HttpClient client_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool failing_ = false;
  std::atomic<uint64_t> ok_{0};
  std::thread thread_;
};

}  // namespace ferry::gateway
