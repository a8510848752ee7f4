#include "target/server/state_journal.h"

#include <Poco/Checksum.h>

#include <cstdio>

namespace ferry::server::journal {
namespace {

bool SameFields(const TargetSpec& a, const TargetSpec& b) {
  return a.iqn == b.iqn && a.tid == b.tid && a.open == b.open && a.acl == b.acl && a.chap == b.chap;
}

std::string TargetRecord(const TargetSpec& t) {
  JsonWriter w;
  w.BeginObject().Field("op", "target");
  WriteTargetFields(w, t);
  return w.EndObject().Take();
}

std::string TargetDelRecord(const std::string& iqn) {
  JsonWriter w;
  return w.BeginObject().Field("op", "target_del").Field("iqn", iqn).EndObject().Take();
}

std::string LunRecord(const std::string& iqn, const LunSpec& l) {
  JsonWriter w;
  w.BeginObject().Field("op", "lun").Field("iqn", iqn).Key("spec");
  WriteLun(w, l);
  return w.EndObject().Take();
}

std::string LunDelRecord(const std::string& iqn, uint32_t lun) {
  JsonWriter w;
  return w.BeginObject().Field("op", "lun_del").Field("iqn", iqn).Field("lun", lun).EndObject().Take();
}

uint32_t Crc(const char* data, size_t n) {
  Poco::Checksum c(Poco::Checksum::TYPE_CRC32);
  c.update(data, static_cast<unsigned>(n));
  return c.checksum();
}

// Reads a record's "iqn"; kInvalidArgument when absent.
Result<std::string> Iqn(const JsonObject& o) {
  std::string iqn;
  bool present = false;
  FERRY_RETURN_IF_ERROR(GetString(o, "iqn", &iqn, &present));
  if (!present) return Status::InvalidArgument("journal record without iqn");
  FERRY_RETURN_IF_ERROR(ValidateIqn(iqn));
  return iqn;
}

}  // namespace

namespace {

void DiffTarget(const TargetSpec* old, const TargetSpec& t, std::vector<std::string>* out) {
  if (!old || !SameFields(*old, t)) out->push_back(TargetRecord(t));
  if (!old) {
    for (const auto& [n, l] : t.luns) out->push_back(LunRecord(t.iqn, l));
    return;
  }
  // Both LUN maps are sorted: walk them side by side.
  auto o = old->luns.begin();
  auto n = t.luns.begin();
  while (o != old->luns.end() || n != t.luns.end()) {
    if (n == t.luns.end() || (o != old->luns.end() && o->first < n->first)) {
      out->push_back(LunDelRecord(t.iqn, o->first));
      ++o;
    } else if (o == old->luns.end() || n->first < o->first) {
      out->push_back(LunRecord(t.iqn, n->second));
      ++n;
    } else {
      if (!(o->second == n->second)) out->push_back(LunRecord(t.iqn, n->second));
      ++o, ++n;
    }
  }
}

void DiffGlobals(const ServerState& from, const ServerState& to, std::vector<std::string>* out) {
  if (!(from.timeouts == to.timeouts)) {
    JsonWriter w;
    w.BeginObject().Field("op", "timeouts").Key("timeouts");
    WriteTimeouts(w, to.timeouts);
    out->push_back(w.EndObject().Take());
  }
  if (from.fixed_gateway != to.fixed_gateway) {
    JsonWriter w;
    out->push_back(
        w.BeginObject().Field("op", "fixed_gateway").Field("gateway", to.fixed_gateway).EndObject().Take());
  }
}

}  // namespace

std::vector<std::string> Diff(const ServerState& from, const ServerState& to) {
  std::vector<std::string> out;
  // Both target maps are sorted by iqn: one pass, one key comparison a step.
  auto o = from.targets.begin();
  auto n = to.targets.begin();
  while (o != from.targets.end() || n != to.targets.end()) {
    int c = o == from.targets.end() ? 1 : n == to.targets.end() ? -1 : o->first.compare(n->first);
    if (c < 0) {
      out.push_back(TargetDelRecord(o->first));
      ++o;
    } else if (c > 0) {
      DiffTarget(nullptr, n->second, &out);
      ++n;
    } else {
      if (&o->second != &n->second) DiffTarget(&o->second, n->second, &out);
      ++o, ++n;
    }
  }
  DiffGlobals(from, to, &out);
  return out;
}

std::vector<std::string> Diff(const ServerState& from, const ServerState& to, const Keys& keys) {
  std::vector<std::string> out;
  for (const auto& iqn : keys.targets) {
    auto o = from.targets.find(iqn);
    auto n = to.targets.find(iqn);
    if (n != to.targets.end())
      DiffTarget(o == from.targets.end() ? nullptr : &o->second, n->second, &out);
    else if (o != from.targets.end())
      out.push_back(TargetDelRecord(iqn));
  }
  if (keys.globals) DiffGlobals(from, to, &out);
  return out;
}

void CopyKeys(const ServerState& from, const Keys& keys, ServerState* to) {
  for (const auto& iqn : keys.targets) {
    auto f = from.targets.find(iqn);
    if (f == from.targets.end())
      to->targets.erase(iqn);
    else
      to->targets[iqn] = f->second;
  }
  if (keys.globals) {
    to->timeouts = from.timeouts;
    to->fixed_gateway = from.fixed_gateway;
  }
}

Status Apply(const std::string& record, ServerState* s) {
  auto parsed = ParseJsonObject(record);
  if (!parsed.ok()) return parsed.status();
  const JsonObject& o = parsed.value();
  std::string op;
  bool present = false;
  FERRY_RETURN_IF_ERROR(GetString(o, "op", &op, &present));
  if (op == "target") {
    auto t = TargetFieldsFromJson(o);
    if (!t.ok()) return t.status();
    auto it = s->targets.find(t->iqn);
    if (it != s->targets.end()) t->luns = std::move(it->second.luns);
    s->targets[t->iqn] = std::move(t.value());
    return Status::Ok();
  }
  if (op == "target_del") {
    auto iqn = Iqn(o);
    if (!iqn.ok()) return iqn.status();
    s->targets.erase(*iqn);
    return Status::Ok();
  }
  if (op == "lun" || op == "lun_del") {
    auto iqn = Iqn(o);
    if (!iqn.ok()) return iqn.status();
    auto t = s->targets.find(*iqn);
    if (op == "lun") {
      JsonObject spec;
      FERRY_RETURN_IF_ERROR(GetObject(o, "spec", &spec, &present));
      if (!present) return Status::InvalidArgument("journal lun record without spec");
      auto l = LunFromJson(spec);
      if (!l.ok()) return l.status();
      // A LUN of a target that is not there can only be followed by that
      // target's removal later in the same journal (replay onto a newer
      // snapshot): nothing to keep.
      if (t != s->targets.end()) t->second.luns[l->lun] = std::move(l.value());
      return Status::Ok();
    }
    int64_t lun = 0;
    FERRY_RETURN_IF_ERROR(GetInt(o, "lun", &lun, &present));
    if (!present || lun < 0 || lun > kMaxLun) return Status::InvalidArgument("journal lun_del record without lun");
    if (t != s->targets.end()) t->second.luns.erase(static_cast<uint32_t>(lun));
    return Status::Ok();
  }
  if (op == "timeouts") {
    JsonObject to;
    FERRY_RETURN_IF_ERROR(GetObject(o, "timeouts", &to, &present));
    if (!present) return Status::InvalidArgument("journal timeouts record without timeouts");
    TimeoutValues v;
    FERRY_RETURN_IF_ERROR(TimeoutsFromJson(to, &v));
    s->timeouts = v;
    return Status::Ok();
  }
  if (op == "fixed_gateway") {
    std::string g;
    FERRY_RETURN_IF_ERROR(GetString(o, "gateway", &g, &present));
    if (!g.empty()) FERRY_RETURN_IF_ERROR(ValidateGateway(g));
    s->fixed_gateway = g;
    return Status::Ok();
  }
  return Status::InvalidArgument("journal record with unknown op '" + op + "'");
}

namespace {

void AppendLine(const std::string& json, std::string* out) {
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x ", Crc(json.data(), json.size()));
  out->append(crc).append(json).push_back('\n');
}

// One line of a journal: intact (CRC matches) or not, and its JSON text.
struct Line {
  bool intact = false;
  std::string json;
  size_t end = 0;  // offset just past the line (or the data's end)
};

Line ReadLine(const std::string& bytes, size_t pos) {
  Line l;
  size_t nl = bytes.find('\n', pos);
  l.end = nl == std::string::npos ? bytes.size() : nl + 1;
  if (nl == std::string::npos || nl - pos < 10 || bytes[pos + 8] != ' ') return l;
  char hex[9] = {};
  bytes.copy(hex, 8, pos);
  char* end = nullptr;
  auto crc = static_cast<uint32_t>(std::strtoul(hex, &end, 16));
  if (end != hex + 8 || crc != Crc(bytes.data() + pos + 9, nl - pos - 9)) return l;
  l.intact = true;
  l.json = bytes.substr(pos + 9, nl - pos - 9);
  return l;
}

const char kCommitPrefix[] = "{\"op\":\"commit\",\"n\":";

// The record count of a commit line, or -1 when `json` is not one.
long CommitCount(const std::string& json) {
  if (json.rfind(kCommitPrefix, 0) != 0 || json.back() != '}') return -1;
  std::string n = json.substr(sizeof kCommitPrefix - 1, json.size() - sizeof kCommitPrefix);
  if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stol(n);
}

}  // namespace

std::string FrameBatch(const std::vector<std::string>& records) {
  std::string out;
  for (const auto& r : records) AppendLine(r, &out);
  AppendLine(kCommitPrefix + std::to_string(records.size()) + "}", &out);
  return out;
}

Result<Parsed> Parse(const std::string& bytes) {
  Parsed p;
  std::vector<std::string> pending;
  size_t pos = 0;
  while (pos < bytes.size()) {
    Line l = ReadLine(bytes, pos);
    long n = l.intact ? CommitCount(l.json) : -1;
    if (l.intact && n < 0) {
      pending.push_back(std::move(l.json));
    } else if (l.intact && static_cast<size_t>(n) == pending.size()) {
      for (auto& r : pending) p.records.push_back(std::move(r));
      pending.clear();
      p.valid_bytes = l.end;
    } else {
      // Damage. Tolerable only in the last batch: at most its own commit
      // line may follow intact.
      int commits_after = 0;
      for (size_t q = l.end; q < bytes.size();) {
        Line m = ReadLine(bytes, q);
        if (m.intact && CommitCount(m.json) >= 0) ++commits_after;
        q = m.end;
      }
      if (commits_after >= 2)
        return Status::InvalidArgument("journal damaged at byte " + std::to_string(pos) +
                                       " with committed changes after it");
      break;
    }
    pos = l.end;
  }
  p.dropped_bytes = bytes.size() - p.valid_bytes;
  return p;
}

}  // namespace ferry::server::journal
