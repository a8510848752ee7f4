// LoadRunner: a closed-loop HTTP load — `clients` threads, each with its own
// keep-alive HttpConnection, taking item numbers from one shared counter over
// [from, from + count) and sending one request per item.
//
// Promise: every item is sent exactly once (plus at most one retry on a
// broken connection) and yields exactly one latency sample, measured with
// steady_clock from just before the send to the last byte of the response
// body; a response status >= 300 or any failure counts as an error and the
// first `keep_errors` of them are kept. Connections are opened before the
// clock starts. Threads never share a connection; no global state.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench/httpload/http_connection.h"
#include "bench/httpload/item_template.h"

namespace ferry::httpload {

struct LoadSpec {
  Endpoint endpoint;
  std::string method = "GET";
  ItemTemplate path;
  std::optional<ItemTemplate> body;
  std::string token;  // sent as X-Ferry-Token when not empty
  int clients = 16;
  int64_t from = 0;
  int64_t count = 1;
  std::chrono::milliseconds timeout{120000};
  int keep_errors = 5;
};

struct ErrorSample {
  int64_t item = 0;
  int status = 0;     // 0 when no HTTP response was read
  std::string error;  // transport failure, or empty
  std::string body;   // first 200 bytes of the response body
};

struct LoadReport {
  std::vector<double> latencies_ms;  // sorted ascending, one per item
  int64_t errors = 0;
  double seconds = 0;  // wall time from the start signal to the last response
  std::vector<ErrorSample> first_errors;

  // sorted[min(n - 1, n * p / 100)], as bench/control's pct() does; 0 when empty.
  double Percentile(int p) const;
  // {"n":..,"errors":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"max_ms":..,"seconds":..,"rps":..,"first_errors":[..]}
  std::string ToJson() const;
};

class LoadRunner {
 public:
  explicit LoadRunner(LoadSpec spec) : spec_(std::move(spec)) {}
  LoadReport Run() const;

  // The request text for one item (exposed for tests and for --dry-run).
  std::string BuildRequest(int64_t item) const;

 private:
  LoadSpec spec_;
};

}  // namespace ferry::httpload
