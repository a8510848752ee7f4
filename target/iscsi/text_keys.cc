#include "target/iscsi/text_keys.h"

#include <algorithm>

namespace ferry::iscsi {

Result<KeyValues> ParseTextKeys(const uint8_t* data, size_t len) {
  KeyValues out;
  size_t i = 0;
  while (i < len) {
    size_t j = i;
    while (j < len && data[j] != 0) ++j;
    if (j > i) {
      std::string s(reinterpret_cast<const char*>(data + i), j - i);
      size_t eq = s.find('=');
      if (eq == std::string::npos) return Status::InvalidArgument("text key without '=': " + s.substr(0, 64));
      if (eq == 0) return Status::InvalidArgument("empty text key");
      if (eq > kMaxKeyLen) return Status::InvalidArgument("text key longer than 63 bytes");
      if (s.size() - eq - 1 > kMaxValueLen) return Status::InvalidArgument("text value too long");
      for (size_t k = 0; k < eq; ++k) {
        char c = s[k];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '-' || c == '+' || c == '@' || c == '_' || c == '#';
        if (!ok) return Status::InvalidArgument("bad character in text key");
      }
      out.emplace_back(s.substr(0, eq), s.substr(eq + 1));
    }
    i = j + 1;
  }
  return out;
}

std::string SerializeTextKeys(const KeyValues& kv) {
  std::string s;
  for (const auto& [k, v] : kv) {
    s += k;
    s += '=';
    s += v;
    s.push_back('\0');
  }
  return s;
}

std::optional<uint32_t> ParseNumber(const std::string& s) {
  if (s.empty() || s.size() > 20) return std::nullopt;
  uint64_t v = 0;
  if (s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    for (size_t i = 2; i < s.size(); ++i) {
      char c = s[i];
      int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v * 16 + uint64_t(d);
      if (v > 0xffffffffull) return std::nullopt;
    }
    return uint32_t(v);
  }
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + uint64_t(c - '0');
    if (v > 0xffffffffull) return std::nullopt;
  }
  return uint32_t(v);
}

std::optional<std::string> NegChoose(const std::string& offered, const std::vector<std::string>& supported) {
  size_t i = 0;
  while (i <= offered.size()) {
    size_t j = offered.find(',', i);
    if (j == std::string::npos) j = offered.size();
    std::string item = offered.substr(i, j - i);
    for (const auto& s : supported)
      if (s == item) return item;
    i = j + 1;
  }
  return std::nullopt;
}

namespace {
std::optional<bool> ParseBool(const std::string& v) {
  if (v == "Yes") return true;
  if (v == "No") return false;
  return std::nullopt;
}
const char* YesNo(bool b) { return b ? "Yes" : "No"; }
bool IsAnswerValue(const std::string& v) {
  return v == "NotUnderstood" || v == "Reject" || v == "Irrelevant";
}
}  // namespace

KeyNegotiator::KeyNegotiator(const NegotiationLimits& limits) : lim_(limits) {
  p_.target_mrdsl = std::max<uint32_t>(512, lim_.max_recv_data_segment_length);
  p_.default_time2retain = 20;
}

bool KeyNegotiator::IsLoginKey(const std::string& key) {
  return key == "InitiatorName" || key == "InitiatorAlias" || key == "TargetName" ||
         key == "SessionType" || key == "AuthMethod" || key.rfind("CHAP_", 0) == 0;
}

bool KeyNegotiator::IsOperationalKey(const std::string& key) {
  static constexpr const char* kKeys[] = {
      "HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength",
      "MaxOutstandingR2T", "MaxConnections", "ErrorRecoveryLevel", "DefaultTime2Wait", "DefaultTime2Retain",
      "InitialR2T", "ImmediateData", "DataPDUInOrder", "DataSequenceInOrder", "IFMarker", "OFMarker",
      "IFMarkInt", "OFMarkInt", "iSCSIProtocolLevel"};
  for (const char* k : kKeys)
    if (key == k) return true;
  return false;
}

void KeyNegotiator::Offer(const std::string& key, const std::string& value, KeyValues* reply) {
  // Answers to something we proposed or declared: nothing to say back.
  if (IsAnswerValue(value)) return;
  auto reject = [&] { reply->emplace_back(key, "Reject"); };
  auto number = [&](uint32_t lo, uint32_t hi) -> std::optional<uint32_t> {
    auto n = ParseNumber(value);
    if (!n || *n < lo || *n > hi) return std::nullopt;
    return n;
  };
  if (std::find(seen_.begin(), seen_.end(), key) != seen_.end() && key != "MaxRecvDataSegmentLength") {
    // RFC 7143 §6.2: a key offered twice in one negotiation is an error; refuse the repeat.
    reject();
    return;
  }
  seen_.push_back(key);

  if (key == "HeaderDigest" || key == "DataDigest") {
    bool allow = key == "HeaderDigest" ? lim_.allow_header_digest : lim_.allow_data_digest;
    std::vector<std::string> sup = allow ? std::vector<std::string>{"CRC32C", "None"}
                                         : std::vector<std::string>{"None"};
    auto c = NegChoose(value, sup);
    if (!c) return reject();
    (key == "HeaderDigest" ? p_.header_digest : p_.data_digest) = (*c == "CRC32C");
    reply->emplace_back(key, *c);
  } else if (key == "MaxRecvDataSegmentLength") {
    auto n = number(512, 16777215);
    if (!n) return reject();
    p_.initiator_mrdsl = *n;  // declarative: no answer
  } else if (key == "MaxBurstLength") {
    auto n = number(512, 16777215);
    if (!n) return reject();
    p_.max_burst_length = NegMin(*n, lim_.max_burst_length);
    reply->emplace_back(key, std::to_string(p_.max_burst_length));
  } else if (key == "FirstBurstLength") {
    auto n = number(512, 16777215);
    if (!n) return reject();
    p_.first_burst_length = NegMin(*n, lim_.first_burst_length);
    reply->emplace_back(key, std::to_string(p_.first_burst_length));
  } else if (key == "MaxOutstandingR2T") {
    auto n = number(1, 65535);
    if (!n) return reject();
    p_.max_outstanding_r2t = NegMin(*n, std::max<uint32_t>(1, lim_.max_outstanding_r2t));
    reply->emplace_back(key, std::to_string(p_.max_outstanding_r2t));
  } else if (key == "MaxConnections") {
    auto n = number(1, 65535);
    if (!n) return reject();
    p_.max_connections = NegMin(*n, 1);
    reply->emplace_back(key, std::to_string(p_.max_connections));
  } else if (key == "ErrorRecoveryLevel") {
    auto n = number(0, 2);
    if (!n) return reject();
    p_.error_recovery_level = 0;
    reply->emplace_back(key, "0");
  } else if (key == "DefaultTime2Wait") {
    auto n = number(0, 3600);
    if (!n) return reject();
    p_.default_time2wait = NegMax(*n, lim_.default_time2wait);
    reply->emplace_back(key, std::to_string(p_.default_time2wait));
  } else if (key == "DefaultTime2Retain") {
    auto n = number(0, 3600);
    if (!n) return reject();
    p_.default_time2retain = NegMin(*n, lim_.default_time2retain);
    reply->emplace_back(key, std::to_string(p_.default_time2retain));
  } else if (key == "InitialR2T") {
    auto b = ParseBool(value);
    if (!b) return reject();
    p_.initial_r2t = NegOr(*b, lim_.initial_r2t);
    reply->emplace_back(key, YesNo(p_.initial_r2t));
  } else if (key == "ImmediateData") {
    auto b = ParseBool(value);
    if (!b) return reject();
    p_.immediate_data = NegAnd(*b, lim_.immediate_data);
    reply->emplace_back(key, YesNo(p_.immediate_data));
  } else if (key == "DataPDUInOrder" || key == "DataSequenceInOrder") {
    auto b = ParseBool(value);
    if (!b) return reject();
    // OR with our Yes: we always deliver and expect data in order.
    reply->emplace_back(key, "Yes");
  } else if (key == "IFMarker" || key == "OFMarker") {
    auto b = ParseBool(value);
    if (!b) return reject();
    reply->emplace_back(key, "No");  // markers are not supported (AND)
  } else if (key == "IFMarkInt" || key == "OFMarkInt") {
    reply->emplace_back(key, "Irrelevant");  // markers are off
  } else if (key == "iSCSIProtocolLevel") {
    auto n = number(0, 31);
    if (!n) return reject();
    reply->emplace_back(key, std::to_string(NegMin(*n, 1)));
  } else if (key == "TargetAlias" || key == "TargetAddress" || key == "TargetPortalGroupTag") {
    reject();  // only a target sends these
  } else {
    reply->emplace_back(key, "NotUnderstood");
  }
}

void KeyNegotiator::AppendDeclarations(KeyValues* reply) {
  if (declared_) return;
  declared_ = true;
  reply->emplace_back("MaxRecvDataSegmentLength", std::to_string(p_.target_mrdsl));
}

SessionParams KeyNegotiator::Finish() const {
  SessionParams p = p_;
  // Defaults not negotiated are RFC defaults, bounded by our limits.
  if (std::find(seen_.begin(), seen_.end(), "MaxBurstLength") == seen_.end())
    p.max_burst_length = NegMin(262144, lim_.max_burst_length);
  if (std::find(seen_.begin(), seen_.end(), "FirstBurstLength") == seen_.end())
    p.first_burst_length = NegMin(65536, lim_.first_burst_length);
  if (p.first_burst_length > p.max_burst_length) p.first_burst_length = p.max_burst_length;
  if (!declared_) p.target_mrdsl = 8192;  // never declared: the initiator assumes the default
  return p;
}

}  // namespace ferry::iscsi
