// FaultInjector: a test/debug facility of ferry-gateway. Rules armed through
// the admin API (FaultApi, `POST /v1/faults`) make matching NBD requests fail
// with a chosen NBD error instead of being executed, so the targets' retry and
// error paths can be exercised against a real gateway. See docs/gateway.md
// ("Fault injection").
//
// Promise: with no active rule, Check() costs one relaxed atomic load and
// never takes a lock. A request for which Check() returns an error must not be
// executed (the caller answers it with that error; a failed write never lands).
// A rule ends after `count` injected errors or after `duration`, whichever
// comes first (at least one of the two is required); ended rules stay listed
// (with their figures) until cleared. Every call is thread-safe.
//
// FaultApi: the HTTP handlers (`POST/GET/DELETE /v1/faults`,
// `DELETE /v1/faults/{id}`). Off unless the gateway was started with
// `--fault-injection on`; when off, every call answers 403 and no rule can be
// armed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "target/common/http_server.h"
#include "target/common/logger.h"
#include "target/common/status.h"

namespace ferry::gateway {

class FaultInjector {
 public:
  using Clock = std::chrono::steady_clock;

  // Which NBD commands a rule hits. kWrite covers every command that changes
  // data (WRITE, WRITE_ZEROES, TRIM); kAny also READ and FLUSH.
  enum class Op { kRead, kWrite, kFlush, kAny };

  struct Spec {
    std::string volume;  // empty: every volume
    Op op = Op::kAny;
    uint32_t error = 0;  // NBD error value sent to the client (non-zero)
    uint64_t count = 0;  // errors to inject; 0: unlimited until `duration` ends
    std::optional<std::chrono::milliseconds> duration;
    uint32_t every = 1;  // fail one matching request out of `every` (1: all)
  };

  struct RuleInfo {
    uint64_t id = 0;
    Spec spec;
    uint64_t matched = 0;   // matching requests seen while active
    uint64_t injected = 0;  // requests failed
    bool active = false;
    int64_t remaining_ms = -1;  // time left; -1 without a duration
  };

  explicit FaultInjector(Logger log, std::function<Clock::time_point()> now = Clock::now);

  // Validates and arms a rule; returns its id.
  Result<uint64_t> Add(const Spec& spec);
  // The NBD error to answer `cmd` (an nbd::kCmd* value) on export `export_name`
  // with, or 0 to execute it normally.
  uint32_t Check(const std::string& export_name, uint16_t cmd);
  std::vector<RuleInfo> List();
  // Removes every rule; returns how many there were.
  size_t Clear();
  Status Remove(uint64_t id);

  // "EAGAIN" -> 11 etc. (the table in docs/gateway.md); nullopt if unknown.
  static std::optional<uint32_t> ErrorByName(const std::string& name);
  static std::string ErrorName(uint32_t error);
  static std::optional<Op> OpByName(const std::string& name);
  static const char* OpName(Op op);

 private:
  struct Rule {
    uint64_t id;
    Spec spec;
    std::optional<Clock::time_point> deadline;
    uint64_t matched = 0;
    uint64_t injected = 0;
    bool active = true;
  };
  static bool Matches(Op op, uint16_t cmd);
  // Marks `r` ended if its count or time is used up. Caller holds mu_.
  bool Expire(Rule& r, Clock::time_point now);
  void RecountLocked();

  Logger log_;
  std::function<Clock::time_point()> now_;
  std::atomic<int> active_{0};  // rules not yet ended (fast-path gate)
  std::mutex mu_;
  std::vector<Rule> rules_;
  uint64_t next_id_ = 1;
};

class FaultApi {
 public:
  FaultApi(FaultInjector* faults, bool enabled, Logger log)
      : faults_(faults), enabled_(enabled), log_(std::move(log)) {}

  void Register(HttpServer* server);

  HttpResponse Add(const HttpRequest& r);
  HttpResponse List(const HttpRequest& r);
  HttpResponse Clear(const HttpRequest& r);
  HttpResponse Remove(const HttpRequest& r);

 private:
  HttpResponse Disabled() const;
  FaultInjector* faults_;
  bool enabled_;
  Logger log_;
};

}  // namespace ferry::gateway
