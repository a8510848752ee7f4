// Logger: one line per event to stderr, "TIME LEVEL component: message".
//
// Promise: thread-safe (one write(2) per line, so lines never interleave);
// no global state — each object that logs holds its own Logger (cheap to copy).
#pragma once

#include <memory>
#include <sstream>
#include <string>

namespace ferry {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

// Parses "debug|info|warn|error"; unknown strings give kInfo.
LogLevel ParseLogLevel(const std::string& s);

class Logger {
 public:
  explicit Logger(std::string component = "ferry", LogLevel min = LogLevel::kInfo, int fd = 2)
      : component_(std::move(component)), min_(min), fd_(fd) {}

  // A logger for a sub-component: same level and sink, name "parent/child".
  Logger Child(const std::string& name) const { return Logger(component_ + "/" + name, min_, fd_); }

  bool enabled(LogLevel l) const { return l >= min_; }
  void Log(LogLevel l, const std::string& msg) const;
  void Debug(const std::string& m) const { if (enabled(LogLevel::kDebug)) Log(LogLevel::kDebug, m); }
  void Info(const std::string& m) const { Log(LogLevel::kInfo, m); }
  void Warn(const std::string& m) const { Log(LogLevel::kWarn, m); }
  void Error(const std::string& m) const { Log(LogLevel::kError, m); }

 private:
  std::string component_;
  LogLevel min_;
  int fd_;
};

}  // namespace ferry
