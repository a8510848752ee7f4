// NbdServer: the gateway's NBD listener. Accepts TCP connections (TCP_NODELAY)
// and runs each in its own NbdConnection thread; large requests of every
// connection share one WorkerPool.
//
// Promise: a slow, silent or malformed client only ever holds its own thread
// (the handshake is time-bounded), so it cannot stall other clients.
// Connections beyond Options::max_connections are closed at once. Stop()
// closes the listener, shuts every connection down and waits (bounded) for
// their threads to finish.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "target/common/logger.h"
#include "target/common/status.h"
#include "target/gateway/nbd_connection.h"
#include "target/gateway/worker_pool.h"
#include "target/store/store.h"

namespace ferry::gateway {

class NbdServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";
    uint16_t port = 8585;  // 0 = pick a free port (see port())
    int io_threads = 4;
    int max_connections = 8192;
    NbdConnection::Options conn;
  };

  NbdServer(store::Store* store, Options opts, Logger log);
  ~NbdServer();
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  Status Start();
  void Stop();
  uint16_t port() const { return port_; }
  int connections() const;

 private:
  void AcceptLoop();
  void RunConnection(std::shared_ptr<NbdConnection> c);

  store::Store* store_;
  Options opts_;
  Logger log_;
  const std::vector<char> zeros_;
  std::unique_ptr<WorkerPool> pool_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::shared_ptr<NbdConnection>> conns_;
  int threads_ = 0;  // connection threads still running
};

}  // namespace ferry::gateway
