#include "bench/httpload/load_runner.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <latch>
#include <thread>

namespace ferry::httpload {

namespace {

constexpr size_t kBodySnippet = 200;

// Length of the valid UTF-8 sequence starting at s[k], or 0.
size_t Utf8Len(const std::string& s, size_t k) {
  unsigned char c = static_cast<unsigned char>(s[k]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || k + len > s.size()) return 0;
  for (size_t j = 1; j < len; ++j)
    if ((static_cast<unsigned char>(s[k + j]) & 0xC0) != 0x80) return 0;
  return len;
}

// A JSON string literal; bytes that are not valid UTF-8 become '?'.
std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (size_t k = 0; k < s.size();) {
    size_t len = Utf8Len(s, k);
    unsigned char c = static_cast<unsigned char>(s[k]);
    if (len == 0) {
      out += '?';
      ++k;
      continue;
    }
    if (len == 1) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += static_cast<char>(c);
      } else if (c < 0x20 || c == 0x7F) {
        char esc[8];
        std::snprintf(esc, sizeof esc, "\\u%04x", c);
        out += esc;
      } else {
        out += static_cast<char>(c);
      }
    } else {
      out.append(s, k, len);
    }
    k += len;
  }
  return out + "\"";
}

std::string Fixed(double v, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// What one thread measured.
struct WorkerResult {
  std::vector<double> latencies_ms;
  int64_t errors = 0;
  std::vector<ErrorSample> samples;
};

}  // namespace

double LoadReport::Percentile(int p) const {
  if (latencies_ms.empty()) return 0;
  size_t n = latencies_ms.size();
  return latencies_ms[std::min(n - 1, n * static_cast<size_t>(p) / 100)];
}

std::string LoadReport::ToJson() const {
  double max = latencies_ms.empty() ? 0 : latencies_ms.back();
  double rps = seconds > 0 ? static_cast<double>(latencies_ms.size()) / seconds : 0;
  std::string out = "{\"n\": " + std::to_string(latencies_ms.size()) + ", \"errors\": " + std::to_string(errors) +
                    ", \"p50_ms\": " + Fixed(Percentile(50), 3) + ", \"p90_ms\": " + Fixed(Percentile(90), 3) +
                    ", \"p99_ms\": " + Fixed(Percentile(99), 3) + ", \"max_ms\": " + Fixed(max, 3) +
                    ", \"seconds\": " + Fixed(seconds, 3) + ", \"rps\": " + Fixed(rps, 1) + ", \"first_errors\": [";
  for (size_t k = 0; k < first_errors.size(); ++k) {
    const ErrorSample& e = first_errors[k];
    out += (k ? ", " : "") + std::string("{\"item\": ") + std::to_string(e.item) +
           ", \"status\": " + std::to_string(e.status) + ", \"error\": " + JsonString(e.error) +
           ", \"body\": " + JsonString(e.body) + "}";
  }
  return out + "]}";
}

std::string LoadRunner::BuildRequest(int64_t item) const {
  std::string body = spec_.body ? spec_.body->Expand(item) : std::string();
  std::string req = spec_.method + " " + spec_.path.Expand(item) + " HTTP/1.1\r\nHost: " +
                    spec_.endpoint.host_header + "\r\n";
  if (!spec_.token.empty()) req += "X-Ferry-Token: " + spec_.token + "\r\n";
  if (spec_.body) req += "Content-Type: application/json\r\n";
  req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  return req + body;
}

LoadReport LoadRunner::Run() const {
  const int64_t end = spec_.from + spec_.count;
  const int threads = static_cast<int>(std::min<int64_t>(spec_.clients, spec_.count));
  const bool head = spec_.method == "HEAD";
  std::atomic<int64_t> next{spec_.from};
  std::latch start(threads + 1);
  std::vector<WorkerResult> results(static_cast<size_t>(threads));
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      WorkerResult& out = results[static_cast<size_t>(t)];
      HttpConnection conn(spec_.endpoint);
      (void)conn.Connect(Clock::now() + spec_.timeout);  // on failure, the first Exchange reconnects
      start.arrive_and_wait();
      for (;;) {
        int64_t item = next.fetch_add(1, std::memory_order_relaxed);
        if (item >= end) return;
        std::string req = BuildRequest(item);
        auto t0 = Clock::now();
        Result<Reply> r = conn.Exchange(req, head, t0 + spec_.timeout);
        auto t1 = Clock::now();
        out.latencies_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (r.ok() && r->status < 300) continue;
        ++out.errors;
        if (static_cast<int>(out.samples.size()) >= spec_.keep_errors) continue;
        ErrorSample e;
        e.item = item;
        if (r.ok()) {
          e.status = r->status;
          e.body = r->body.substr(0, kBodySnippet);
        } else {
          e.error = r.status().message();
        }
        out.samples.push_back(std::move(e));
      }
    });
  }
  start.arrive_and_wait();
  auto began = Clock::now();
  for (auto& th : pool) th.join();
  LoadReport report;
  report.seconds = std::chrono::duration<double>(Clock::now() - began).count();
  for (WorkerResult& w : results) {
    report.latencies_ms.insert(report.latencies_ms.end(), w.latencies_ms.begin(), w.latencies_ms.end());
    report.errors += w.errors;
    for (ErrorSample& e : w.samples) report.first_errors.push_back(std::move(e));
  }
  std::sort(report.latencies_ms.begin(), report.latencies_ms.end());
  std::sort(report.first_errors.begin(), report.first_errors.end(),
            [](const ErrorSample& a, const ErrorSample& b) { return a.item < b.item; });
  if (static_cast<int>(report.first_errors.size()) > spec_.keep_errors)
    report.first_errors.resize(static_cast<size_t>(spec_.keep_errors));
  return report;
}

}  // namespace ferry::httpload
