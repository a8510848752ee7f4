// FakeNbdServer: a scripted NBD server for unit tests of the gateway client.
//
// Promise: listens on 127.0.0.1 (ephemeral port), speaks fixed newstyle with
// NBD_OPT_GO / NBD_OPT_INFO / NBD_OPT_ABORT, serves an in-memory disk, and lets
// a test decide per request what happens (reply, error, hang, drop, garbage).
// Records the export names asked for. Stop() joins every thread it started.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "target/nbd/protocol.h"

namespace ferry::blockdev::testing {

class FakeNbdServer {
 public:
  enum class Kind { kReply, kHang, kDrop, kGarbageMagic, kUnknownCookie, kShortRead };
  struct Action {
    Kind kind = Kind::kReply;
    uint32_t error = 0;  // for kReply
  };
  using Script = std::function<Action(const nbd::Request&)>;

  explicit FakeNbdServer(uint64_t size, uint16_t port = 0);
  ~FakeNbdServer();

  uint16_t port() const { return port_; }
  std::string addr() const { return "127.0.0.1:" + std::to_string(port_); }
  // Accepts any export name unless set: then only these names.
  void SetExports(std::vector<std::string> names);
  void SetScript(Script s);
  // Answer INFO/GO with this NBD_INFO_NAME too (a gateway granting an epoch: "vol@9").
  void SetInfoName(std::string name);
  void SetSize(uint64_t size);
  // Never send the greeting (a hung process whose kernel still accepts).
  void SetMute(bool mute) { mute_ = mute; }
  // Closes the listener and every connection (kill -9) / listens again on the same port.
  void Down();
  bool Up();
  // Releases every hung request's connection by closing it.
  void DropAll();

  std::vector<std::string> exports_asked();
  uint64_t requests_seen() const { return requests_.load(); }
  uint64_t writes_seen() const { return writes_.load(); }
  std::vector<char> Data();

 private:
  void AcceptLoop(int lfd);
  void Serve(int fd);
  bool Listen();

  std::mutex mu_;
  std::vector<char> disk_;
  std::vector<std::string> exports_;
  std::string info_name_;
  std::vector<std::string> asked_;
  Script script_;
  uint16_t port_ = 0;
  int lfd_ = -1;
  std::thread acceptor_;
  std::list<std::thread> conns_;
  std::vector<int> fds_;
  std::atomic<bool> mute_{false};
  std::atomic<uint64_t> requests_{0}, writes_{0};
};

}  // namespace ferry::blockdev::testing
