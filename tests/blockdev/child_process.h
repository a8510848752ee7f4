// ChildProcess: a real peer process (qemu-nbd, ferry-gateway) for integration
// tests, plus loopback port helpers.
//
// Promise: the child dies with the test process (PR_SET_PDEATHSIG) and is
// SIGKILLed and reaped by the destructor; stdout/stderr go to a log file.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ferry::blockdev::testing {

class ChildProcess {
 public:
  // Starts argv[0] (searched in PATH) with its output appended to log_path.
  static std::unique_ptr<ChildProcess> Spawn(const std::vector<std::string>& argv, const std::string& log_path);
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  void Signal(int sig);
  // SIGKILL and reap. Idempotent.
  void Kill();
  // True once the process has exited (reaps it).
  bool Exited();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
};

// A port the kernel just handed out on 127.0.0.1 (free at the time of the call).
uint16_t FreePort();
// Polls a TCP connect to 127.0.0.1:port until it succeeds or the limit passes.
bool WaitPort(uint16_t port, std::chrono::milliseconds limit);
// mkdtemp under $TMPDIR or /tmp; RemoveTree deletes it.
std::string MakeTempDir(const std::string& prefix);
void RemoveTree(const std::string& path);

}  // namespace ferry::blockdev::testing
