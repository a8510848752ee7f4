#include "target/common/config.h"

#include <fstream>
#include <sstream>

namespace ferry {
namespace {

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string FlagToKey(std::string f) {
  for (char& c : f)
    if (c == '-') c = '_';
  return f;
}

}  // namespace

Status Config::ParseIni(const std::string& text, const std::string& origin) {
  std::istringstream in(text);
  std::string line, section;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    std::string t = Trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t[0] == '[') {
      if (t.back() != ']' || t.size() < 3)
        return Status::InvalidArgument(origin + ":" + std::to_string(n) + ": bad section header");
      section = Trim(t.substr(1, t.size() - 2));
      continue;
    }
    size_t eq = t.find('=');
    if (eq == std::string::npos)
      return Status::InvalidArgument(origin + ":" + std::to_string(n) + ": expected key = value");
    if (section.empty())
      return Status::InvalidArgument(origin + ":" + std::to_string(n) + ": key outside a section");
    std::string key = FlagToKey(Trim(t.substr(0, eq)));
    std::string val = Trim(t.substr(eq + 1));
    // Flags given on the command line win over the file.
    if (from_flags_[section][key]) continue;
    Add(section, key, val);
  }
  return Status::Ok();
}

Status Config::LoadFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Status::NotFound("cannot open config file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ParseIni(ss.str(), path);
}

Status Config::ParseArgs(int argc, char** argv, const std::string& section,
                         const std::vector<std::string>& known) {
  std::string config_file;
  std::vector<std::pair<std::string, std::string>> flags;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      Set(section, "help", "1");
      continue;
    }
    if (a.rfind("--", 0) != 0) return Status::InvalidArgument("unexpected argument: " + a);
    std::string name = a.substr(2), value;
    size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    } else {
      if (i + 1 >= argc) return Status::InvalidArgument("flag --" + name + " needs a value");
      value = argv[++i];
    }
    if (name == "config") {
      config_file = value;
      continue;
    }
    bool ok = false;
    for (const auto& k : known) ok = ok || k == name;
    if (!ok) return Status::InvalidArgument("unknown flag --" + name);
    flags.emplace_back(FlagToKey(name), value);
  }
  for (const auto& [k, v] : flags) {
    if (!from_flags_[section][k]) data_[section][k].clear();
    from_flags_[section][k] = true;
    data_[section][k].push_back(v);
  }
  if (!config_file.empty()) return LoadFile(config_file);
  return Status::Ok();
}

void Config::Set(const std::string& section, const std::string& key, const std::string& value) {
  data_[section][key] = {value};
}

void Config::Add(const std::string& section, const std::string& key, const std::string& value) {
  data_[section][key].push_back(value);
}

bool Config::Has(const std::string& section, const std::string& key) const {
  auto s = data_.find(section);
  if (s == data_.end()) return false;
  auto k = s->second.find(key);
  return k != s->second.end() && !k->second.empty();
}

std::string Config::Get(const std::string& section, const std::string& key,
                        const std::string& def) const {
  if (!Has(section, key)) return def;
  return data_.at(section).at(key).back();
}

std::vector<std::string> Config::GetAll(const std::string& section, const std::string& key) const {
  if (!Has(section, key)) return {};
  return data_.at(section).at(key);
}

Result<int64_t> Config::GetInt(const std::string& section, const std::string& key,
                               int64_t def) const {
  if (!Has(section, key)) return def;
  std::string v = Get(section, key);
  try {
    size_t pos = 0;
    long long x = std::stoll(v, &pos);
    if (pos != v.size()) throw std::invalid_argument(v);
    return static_cast<int64_t>(x);
  } catch (...) {
    return Status::InvalidArgument("[" + section + "] " + key + ": not an integer: " + v);
  }
}

bool Config::GetBool(const std::string& section, const std::string& key, bool def) const {
  if (!Has(section, key)) return def;
  std::string v = Get(section, key);
  return v == "1" || v == "true" || v == "yes" || v == "on";
}

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<HostPort> ParseHostPort(const std::string& s) {
  HostPort hp;
  std::string port;
  if (!s.empty() && s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return Status::InvalidArgument("bad address: " + s);
    hp.host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return Status::InvalidArgument("bad address (want host:port): " + s);
    hp.host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos)
    return Status::InvalidArgument("bad port in " + s);
  int p = std::stoi(port);
  if (p < 1 || p > 65535) return Status::InvalidArgument("port out of range in " + s);
  hp.port = static_cast<uint16_t>(p);
  return hp;
}

}  // namespace ferry
