#include "target/common/logger.h"

#include <sys/time.h>
#include <unistd.h>

#include <ctime>

namespace ferry {

LogLevel ParseLogLevel(const std::string& s) {
  if (s == "debug") return LogLevel::kDebug;
  if (s == "warn" || s == "warning") return LogLevel::kWarn;
  if (s == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

void Logger::Log(LogLevel l, const std::string& msg) const {
  if (l < min_) return;
  static const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[40];
  size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(ts + n, sizeof ts - n, ".%03dZ", static_cast<int>(tv.tv_usec / 1000));
  std::string line = std::string(ts) + " " + kNames[static_cast<int>(l)] + " " + component_ +
                     ": " + msg + "\n";
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    ssize_t w = ::write(fd_, p, left);
    if (w <= 0) break;
    p += w;
    left -= static_cast<size_t>(w);
  }
}

}  // namespace ferry
