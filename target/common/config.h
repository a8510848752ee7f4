// Config: the one INI file (sections [backend] [target] [gateway] [db] [kafka]
// [auth] [tls]) plus command-line flags that override it.
//
// Promise: Parse* never throws; errors come back as Status with the file, line
// and reason. A flag `--iscsi-listen X` (or `--iscsi-listen=X`) sets key
// `iscsi_listen` of the process's own section; flags may repeat (GetAll).
// `--config FILE` names the INI file. Unknown keys are kept (callers decide).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "target/common/status.h"

namespace ferry {

class Config {
 public:
  // Reads INI text. `origin` names it in error messages.
  Status ParseIni(const std::string& text, const std::string& origin);
  Status LoadFile(const std::string& path);
  // Parses argv into `section`. Loads --config FILE first if given, so flags win.
  // `known` lists the accepted flag names (without "--", with '-'); others are errors.
  // "--help" sets key "help" to "1".
  Status ParseArgs(int argc, char** argv, const std::string& section,
                   const std::vector<std::string>& known);

  void Set(const std::string& section, const std::string& key, const std::string& value);
  void Add(const std::string& section, const std::string& key, const std::string& value);
  bool Has(const std::string& section, const std::string& key) const;
  std::string Get(const std::string& section, const std::string& key,
                  const std::string& def = "") const;
  std::vector<std::string> GetAll(const std::string& section, const std::string& key) const;
  Result<int64_t> GetInt(const std::string& section, const std::string& key, int64_t def) const;
  bool GetBool(const std::string& section, const std::string& key, bool def) const;

 private:
  // section -> key -> values (last one wins for Get)
  std::map<std::string, std::map<std::string, std::vector<std::string>>> data_;
  std::map<std::string, std::map<std::string, bool>> from_flags_;
};

// Splits "host:port" (also "[v6]:port"). Port must be 1..65535.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;
};
Result<HostPort> ParseHostPort(const std::string& s);

}  // namespace ferry
