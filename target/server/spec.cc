#include "target/server/spec.h"

#include <arpa/inet.h>

#include <cstring>
#include <set>

#include "target/common/config.h"
#include "target/server/json_util.h"

namespace ferry::server {

const std::vector<std::string>& TimeoutValues::Names() {
  static const std::vector<std::string> kNames = {"read",     "write",    "readretry", "writeretry",
                                                  "switch",   "recovery", "reconnect"};
  return kNames;
}

std::optional<int64_t> TimeoutValues::Get(const std::string& n) const {
  if (n == "read") return read;
  if (n == "write") return write;
  if (n == "readretry") return readretry;
  if (n == "writeretry") return writeretry;
  if (n == "switch") return sw;
  if (n == "recovery") return recovery;
  if (n == "reconnect") return reconnect;
  return std::nullopt;
}

Status TimeoutValues::Set(const std::string& n, int64_t v) {
  if (!Get(n)) return Status::InvalidArgument("unknown timeout type '" + n + "'");
  if (v > 10LL * 365 * 86400) return Status::InvalidArgument("timeout " + n + " is too large");
  if (n == "switch") {
    if (v < 0) return Status::InvalidArgument("timeout switch must be >= 0");
  } else if (v <= 0) {
    return Status::InvalidArgument("timeout " + n + " must be > 0");
  }
  if ((n == "recovery" || n == "reconnect") && v % 10 != 0)
    return Status::InvalidArgument("timeout " + n + " must be a multiple of 10");
  if (n == "read") read = v;
  if (n == "write") write = v;
  if (n == "readretry") readretry = v;
  if (n == "writeretry") writeretry = v;
  if (n == "switch") sw = v;
  if (n == "recovery") recovery = v;
  if (n == "reconnect") reconnect = v;
  return Status::Ok();
}

Status ValidateIqn(const std::string& iqn) {
  if (iqn.empty() || iqn.size() > 223) return Status::InvalidArgument("iqn must be 1..223 characters");
  if (iqn.rfind("iqn.", 0) != 0 && iqn.rfind("eui.", 0) != 0 && iqn.rfind("naa.", 0) != 0)
    return Status::InvalidArgument("iqn must start with iqn., eui. or naa.: " + iqn);
  for (char c : iqn) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == ':' ||
              (c >= 'A' && c <= 'Z' && iqn.rfind("iqn.", 0) != 0);
    if (!ok) return Status::InvalidArgument("iqn has a character outside [a-z0-9.:-]: " + iqn);
  }
  return Status::Ok();
}

Status ValidateVolumeName(const std::string& n) {
  if (n.empty() || n.size() > 128) return Status::InvalidArgument("volume name must be 1..128 characters");
  if (n == "." || n == "..") return Status::InvalidArgument("volume name must not be . or ..");
  for (char c : n) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-';
    if (!ok) return Status::InvalidArgument("volume name has a character outside [A-Za-z0-9._-]: " + n);
  }
  return Status::Ok();
}

Status ValidateGateway(const std::string& hp) {
  auto r = ParseHostPort(hp);
  if (!r.ok()) return Status::InvalidArgument("gateway '" + hp + "': " + r.status().message());
  return Status::Ok();
}

namespace {

// Parses "ip" or "ip/prefix" into family, 16 bytes and prefix length.
bool ParseCidr(const std::string& s, int* family, unsigned char addr[16], int* prefix) {
  std::string ip = s;
  *prefix = -1;
  size_t slash = s.find('/');
  if (slash != std::string::npos) {
    ip = s.substr(0, slash);
    std::string p = s.substr(slash + 1);
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos) return false;
    *prefix = std::stoi(p);
  }
  std::memset(addr, 0, 16);
  if (inet_pton(AF_INET, ip.c_str(), addr) == 1) {
    *family = AF_INET;
    if (*prefix < 0) *prefix = 32;
    return *prefix <= 32;
  }
  if (inet_pton(AF_INET6, ip.c_str(), addr) == 1) {
    *family = AF_INET6;
    if (*prefix < 0) *prefix = 128;
    return *prefix <= 128;
  }
  return false;
}

}  // namespace

bool AddressMatches(const std::string& pattern, const std::string& addr) {
  int pf, af, pp, ap;
  unsigned char pa[16], aa[16];
  if (!ParseCidr(pattern, &pf, pa, &pp) || !ParseCidr(addr, &af, aa, &ap)) return false;
  if (pf != af) return false;
  for (int bit = 0; bit < pp; ++bit) {
    int byte = bit / 8, mask = 0x80 >> (bit % 8);
    if ((pa[byte] & mask) != (aa[byte] & mask)) return false;
  }
  return true;
}

bool IsLoopback(const std::string& addr) {
  return AddressMatches("127.0.0.0/8", addr) || AddressMatches("::1", addr) ||
         AddressMatches("::ffff:127.0.0.0/104", addr);
}

std::string PeerIp(const std::string& peer) {
  if (!peer.empty() && peer[0] == '[') {
    size_t close = peer.find(']');
    return close == std::string::npos ? peer : peer.substr(1, close - 1);
  }
  size_t colon = peer.rfind(':');
  if (colon != std::string::npos && peer.find(':') == colon) return peer.substr(0, colon);
  return peer;  // bare IPv4 or bare IPv6
}

Status ValidateAcl(const Acl& acl) {
  for (const auto& i : acl.initiators)
    if (i.empty() || i.size() > 223) return Status::InvalidArgument("acl initiator names must be 1..223 characters");
  for (const auto& a : acl.addresses) {
    int f, p;
    unsigned char b[16];
    if (!ParseCidr(a, &f, b, &p)) return Status::InvalidArgument("acl address is not an IP or IP/prefix: " + a);
  }
  return Status::Ok();
}

Status ValidateChap(const Chap& c) {
  auto check = [](const std::string& user, const std::string& secret, const std::string& what) -> Status {
    if (user.empty() != secret.empty())
      return Status::InvalidArgument(what + ": user and secret go together");
    if (user.size() > 255) return Status::InvalidArgument(what + ": user longer than 255 characters");
    if (!secret.empty() && (secret.size() < 12 || secret.size() > 255))
      return Status::InvalidArgument(what + ": secret must be 12..255 characters (RFC 7143 12.1.3)");
    return Status::Ok();
  };
  FERRY_RETURN_IF_ERROR(check(c.user, c.secret, "chap"));
  FERRY_RETURN_IF_ERROR(check(c.mutual_user, c.mutual_secret, "mutual chap"));
  if (!c.mutual_user.empty() && c.user.empty())
    return Status::InvalidArgument("mutual chap needs one-way chap (user, secret) too");
  if (!c.mutual_secret.empty() && c.mutual_secret == c.secret)
    return Status::InvalidArgument("mutual secret must differ from the initiator secret");
  return Status::Ok();
}

Status ValidateLun(const LunSpec& l) {
  FERRY_RETURN_IF_ERROR(ValidateVolumeName(l.volume));
  if (l.lun > kMaxLun) return Status::InvalidArgument("lun must be 0.." + std::to_string(kMaxLun));
  if (l.gateways.empty()) return Status::InvalidArgument("gateways must list at least one host:port");
  std::set<std::string> seen;
  for (const auto& g : l.gateways) {
    FERRY_RETURN_IF_ERROR(ValidateGateway(g));
    if (!seen.insert(g).second) return Status::InvalidArgument("gateway listed twice: " + g);
  }
  if (!seen.count(l.preferred)) return Status::InvalidArgument("preferred must be one of gateways");
  if (!seen.count(l.current)) return Status::InvalidArgument("current must be one of gateways");
  return Status::Ok();
}

// ---- JSON

namespace {

Status Need(const JsonObject& o, const std::string& key, std::string* out) {
  bool present = false;
  FERRY_RETURN_IF_ERROR(GetString(o, key, out, &present));
  if (!present) return Status::InvalidArgument("missing field '" + key + "'");
  return Status::Ok();
}

Status NeedU64(const JsonObject& o, const std::string& key, uint64_t* out) {
  bool present = false;
  int64_t v = 0;
  FERRY_RETURN_IF_ERROR(GetInt(o, key, &v, &present));
  if (!present || v < 0) return Status::InvalidArgument("missing or negative field '" + key + "'");
  *out = static_cast<uint64_t>(v);
  return Status::Ok();
}

}  // namespace

Result<LunSpec> LunFromJson(const JsonObject& o) {
  LunSpec l;
  bool present = false;
  uint64_t n = 0;
  FERRY_RETURN_IF_ERROR(NeedU64(o, "lun", &n));
  l.lun = static_cast<uint32_t>(n);
  FERRY_RETURN_IF_ERROR(Need(o, "volume", &l.volume));
  FERRY_RETURN_IF_ERROR(GetStringList(o, "gateways", &l.gateways, &present));
  FERRY_RETURN_IF_ERROR(Need(o, "preferred", &l.preferred));
  FERRY_RETURN_IF_ERROR(Need(o, "current", &l.current));
  FERRY_RETURN_IF_ERROR(NeedU64(o, "epoch", &l.epoch));
  FERRY_RETURN_IF_ERROR(GetBool(o, "switchable", &l.switchable, &present));
  FERRY_RETURN_IF_ERROR(NeedU64(o, "size", &l.size));
  FERRY_RETURN_IF_ERROR(ValidateLun(l));
  return l;
}

void WriteLun(JsonWriter& w, const LunSpec& l) {
  w.BeginObject().Field("lun", l.lun).Field("volume", l.volume).Field("gateways", l.gateways);
  w.Field("preferred", l.preferred).Field("current", l.current).Field("epoch", l.epoch);
  w.Field("switchable", l.switchable).Field("size", l.size).EndObject();
}

void WriteTargetFields(JsonWriter& w, const TargetSpec& t) {
  w.Field("iqn", t.iqn).Field("tid", t.tid).Field("open", t.open);
  w.Key("acl").BeginObject().Field("initiators", t.acl.initiators).Field("addresses", t.acl.addresses).EndObject();
  w.Key("chap").BeginObject().Field("user", t.chap.user).Field("secret", t.chap.secret);
  w.Field("mutual_user", t.chap.mutual_user).Field("mutual_secret", t.chap.mutual_secret).EndObject();
}

void WriteTimeouts(JsonWriter& w, const TimeoutValues& t) {
  w.BeginObject();
  for (const auto& name : TimeoutValues::Names()) w.Field(name, *t.Get(name));
  w.EndObject();
}

Result<TargetSpec> TargetFieldsFromJson(const JsonObject& o) {
  TargetSpec t;
  bool present = false;
  FERRY_RETURN_IF_ERROR(Need(o, "iqn", &t.iqn));
  FERRY_RETURN_IF_ERROR(ValidateIqn(t.iqn));
  uint64_t tid = 0;
  FERRY_RETURN_IF_ERROR(NeedU64(o, "tid", &tid));
  if (tid == 0 || tid > 65535) return Status::InvalidArgument("bad tid for " + t.iqn);
  t.tid = static_cast<uint32_t>(tid);
  FERRY_RETURN_IF_ERROR(GetBool(o, "open", &t.open, &present));
  JsonObject acl, chap;
  FERRY_RETURN_IF_ERROR(GetObject(o, "acl", &acl, &present));
  if (present) {
    FERRY_RETURN_IF_ERROR(GetStringList(acl, "initiators", &t.acl.initiators, &present));
    FERRY_RETURN_IF_ERROR(GetStringList(acl, "addresses", &t.acl.addresses, &present));
  }
  FERRY_RETURN_IF_ERROR(GetObject(o, "chap", &chap, &present));
  if (present) {
    FERRY_RETURN_IF_ERROR(GetString(chap, "user", &t.chap.user, &present));
    FERRY_RETURN_IF_ERROR(GetString(chap, "secret", &t.chap.secret, &present));
    FERRY_RETURN_IF_ERROR(GetString(chap, "mutual_user", &t.chap.mutual_user, &present));
    FERRY_RETURN_IF_ERROR(GetString(chap, "mutual_secret", &t.chap.mutual_secret, &present));
  }
  return t;
}

Status TimeoutsFromJson(const JsonObject& o, TimeoutValues* out) {
  bool present = false;
  for (const auto& name : TimeoutValues::Names()) {
    int64_t v = 0;
    FERRY_RETURN_IF_ERROR(GetInt(o, name, &v, &present));
    if (present) FERRY_RETURN_IF_ERROR(out->Set(name, v));
  }
  return Status::Ok();
}

std::string StateToJson(const ServerState& s) {
  JsonWriter w;
  w.BeginObject().Field("version", 1).Key("targets").BeginArray();
  for (const auto& [iqn, t] : s.targets) {
    w.BeginObject();
    WriteTargetFields(w, t);
    w.Key("luns").BeginArray();
    for (const auto& [n, l] : t.luns) WriteLun(w, l);
    w.EndArray().EndObject();
  }
  w.EndArray().Key("timeouts");
  WriteTimeouts(w, s.timeouts);
  w.Field("fixed_gateway", s.fixed_gateway).EndObject();
  return w.Take() + "\n";
}

Result<ServerState> StateFromJson(const std::string& text) {
  auto parsed = ParseJsonObject(text);
  if (!parsed.ok()) return parsed.status();
  JsonObject root = parsed.value();
  ServerState s;
  bool present = false;
  int64_t version = 0;
  FERRY_RETURN_IF_ERROR(GetInt(root, "version", &version, &present));
  if (!present || version != 1) return Status::InvalidArgument("state: unsupported version");
  Poco::JSON::Array::Ptr targets;
  try {
    targets = root->getArray("targets");
  } catch (const std::exception&) {
  }
  if (targets.isNull()) return Status::InvalidArgument("state: 'targets' must be a list");
  std::set<uint32_t> tids;
  for (size_t i = 0; i < targets->size(); ++i) {
    JsonObject o;
    try {
      o = targets->getObject(static_cast<unsigned>(i));
    } catch (const std::exception&) {
    }
    if (o.isNull()) return Status::InvalidArgument("state: target entry is not an object");
    auto fields = TargetFieldsFromJson(o);
    if (!fields.ok()) return Status::InvalidArgument("state: " + fields.status().message());
    TargetSpec t = std::move(fields.value());
    if (!tids.insert(t.tid).second) return Status::InvalidArgument("state: bad or duplicate tid for " + t.iqn);
    Poco::JSON::Array::Ptr luns;
    try {
      luns = o->getArray("luns");
    } catch (const std::exception&) {
    }
    if (luns.isNull()) return Status::InvalidArgument("state: 'luns' must be a list");
    for (size_t j = 0; j < luns->size(); ++j) {
      JsonObject lo;
      try {
        lo = luns->getObject(static_cast<unsigned>(j));
      } catch (const std::exception&) {
      }
      if (lo.isNull()) return Status::InvalidArgument("state: lun entry is not an object");
      auto l = LunFromJson(lo);
      if (!l.ok()) return Status::InvalidArgument("state: " + t.iqn + ": " + l.status().message());
      if (!t.luns.emplace(l->lun, l.value()).second)
        return Status::InvalidArgument("state: duplicate lun in " + t.iqn);
    }
    if (s.targets.count(t.iqn)) return Status::InvalidArgument("state: duplicate target " + t.iqn);
    s.targets.emplace(t.iqn, std::move(t));
  }
  JsonObject to;
  FERRY_RETURN_IF_ERROR(GetObject(root, "timeouts", &to, &present));
  if (present) FERRY_RETURN_IF_ERROR(TimeoutsFromJson(to, &s.timeouts));
  FERRY_RETURN_IF_ERROR(GetString(root, "fixed_gateway", &s.fixed_gateway, &present));
  if (!s.fixed_gateway.empty()) FERRY_RETURN_IF_ERROR(ValidateGateway(s.fixed_gateway));
  return s;
}

}  // namespace ferry::server
