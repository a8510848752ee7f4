// Heartbeat: registers the target with the backend and keeps re-registering.
//
// Promise: with a backend URL, sends
//   PUT {backend}/tgtmaster/register/tgt?tgt=<portal IP>&port=<iscsi port>&admin=<host:port>[&host=NAME]
// at Start() and then every `interval` (the heartbeat is the repeated
// registration). Failures are logged (on the first failure and when the backend
// comes back, not on every beat) and retried; never fatal. Each request has a
// timeout; Stop() wakes the thread and joins it at once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "target/common/http_client.h"
#include "target/common/logger.h"

namespace ferry::server {

class Heartbeat {
 public:
  struct Options {
    std::string backend_url;  // e.g. http://127.0.0.1:8888
    std::string token;
    std::string tgt_ip;       // first portal's IP: the target's identity
    uint16_t port = 3260;     // that portal's iSCSI port
    std::string admin;        // admin "host:port"
    std::string host;         // compute host name (optional; sent as host=)
    std::chrono::milliseconds interval{5000};
    std::chrono::milliseconds timeout{3000};
    Logger log{"heartbeat"};
  };
  explicit Heartbeat(Options o);
  ~Heartbeat();
  Heartbeat(const Heartbeat&) = delete;
  Heartbeat& operator=(const Heartbeat&) = delete;

  void Start();
  void Stop();
  std::string url() const;
  uint64_t sent_ok() const { return ok_.load(); }
  uint64_t failed() const { return failed_.load(); }  // consecutive failures

 private:
  void Loop();
  bool Beat();

  Options opts_;
  HttpClient client_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
  std::atomic<uint64_t> ok_{0}, failed_{0};
};

}  // namespace ferry::server
