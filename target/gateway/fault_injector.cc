#include "target/gateway/fault_injector.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <algorithm>
#include <cerrno>

#include "target/nbd/protocol.h"

namespace ferry::gateway {
namespace {

struct ErrorEntry {
  const char* name;
  uint32_t value;
};

// The NBD spec's error values first, then the Linux errno values the targets'
// blockdev also understands (retryable ones and EDQUOT; docs/failover.md).
constexpr ErrorEntry kErrors[] = {
    {"EPERM", nbd::kEPERM},   {"EIO", nbd::kEIO},     {"ENOMEM", nbd::kENOMEM},
    {"EINVAL", nbd::kEINVAL}, {"ENOSPC", nbd::kENOSPC}, {"EOVERFLOW", nbd::kEOVERFLOW},
    {"ENOTSUP", nbd::kENOTSUP}, {"ESHUTDOWN", nbd::kESHUTDOWN},
    {"EAGAIN", EAGAIN},       {"EINTR", EINTR},       {"EBUSY", EBUSY},
    {"ETIMEDOUT", ETIMEDOUT}, {"EDQUOT", EDQUOT},
};

constexpr uint64_t kMaxDurationMs = 24ull * 3600 * 1000;

}  // namespace

FaultInjector::FaultInjector(Logger log, std::function<Clock::time_point()> now)
    : log_(std::move(log)), now_(std::move(now)) {}

std::optional<uint32_t> FaultInjector::ErrorByName(const std::string& name) {
  for (const auto& e : kErrors) {
    if (name == e.name) return e.value;
  }
  return std::nullopt;
}

std::string FaultInjector::ErrorName(uint32_t error) {
  for (const auto& e : kErrors) {
    if (error == e.value) return e.name;
  }
  return std::to_string(error);
}

std::optional<FaultInjector::Op> FaultInjector::OpByName(const std::string& name) {
  if (name == "read") return Op::kRead;
  if (name == "write") return Op::kWrite;
  if (name == "flush") return Op::kFlush;
  if (name == "any") return Op::kAny;
  return std::nullopt;
}

const char* FaultInjector::OpName(Op op) {
  switch (op) {
    case Op::kRead: return "read";
    case Op::kWrite: return "write";
    case Op::kFlush: return "flush";
    case Op::kAny: return "any";
  }
  return "any";
}

bool FaultInjector::Matches(Op op, uint16_t cmd) {
  const bool read = cmd == nbd::kCmdRead;
  const bool write = cmd == nbd::kCmdWrite || cmd == nbd::kCmdWriteZeroes || cmd == nbd::kCmdTrim;
  const bool flush = cmd == nbd::kCmdFlush;
  switch (op) {
    case Op::kRead: return read;
    case Op::kWrite: return write;
    case Op::kFlush: return flush;
    case Op::kAny: return read || write || flush;
  }
  return false;
}

Result<uint64_t> FaultInjector::Add(const Spec& spec) {
  if (spec.error == 0) return Status::InvalidArgument("an error value is required");
  if (spec.count == 0 && !spec.duration) return Status::InvalidArgument("a count or a duration is required");
  if (spec.duration && (spec.duration->count() <= 0 || static_cast<uint64_t>(spec.duration->count()) > kMaxDurationMs)) {
    return Status::InvalidArgument("duration must be from 1 ms to 24 h");
  }
  if (spec.every == 0) return Status::InvalidArgument("every must be at least 1");
  std::lock_guard<std::mutex> l(mu_);
  Rule r{next_id_++, spec, std::nullopt};
  if (spec.duration) r.deadline = now_() + *spec.duration;
  rules_.push_back(r);
  RecountLocked();
  log_.Warn("fault injection armed: rule " + std::to_string(r.id) + ": " + OpName(spec.op) + " on " +
            (spec.volume.empty() ? std::string("every volume") : "volume " + spec.volume) + " fails with " +
            ErrorName(spec.error) + (spec.count ? ", " + std::to_string(spec.count) + " times" : std::string()) +
            (spec.duration ? ", for " + std::to_string(spec.duration->count()) + " ms" : std::string()) +
            (spec.every > 1 ? ", one request in " + std::to_string(spec.every) : std::string()));
  return r.id;
}

bool FaultInjector::Expire(Rule& r, Clock::time_point now) {
  if (!r.active) return true;
  if ((r.spec.count != 0 && r.injected >= r.spec.count) || (r.deadline && now >= *r.deadline)) {
    r.active = false;
    log_.Info("fault injection rule " + std::to_string(r.id) + " ended after " + std::to_string(r.injected) +
              " injected errors");
    return true;
  }
  return false;
}

void FaultInjector::RecountLocked() {
  int n = 0;
  for (const auto& r : rules_) n += r.active ? 1 : 0;
  active_.store(n, std::memory_order_relaxed);
}

uint32_t FaultInjector::Check(const std::string& export_name, uint16_t cmd) {
  if (active_.load(std::memory_order_relaxed) == 0) return 0;
  nbd::ExportName e;
  if (!nbd::ParseExportName(export_name, &e)) e.volume = export_name;
  std::lock_guard<std::mutex> l(mu_);
  const auto now = now_();
  uint32_t err = 0;
  bool ended = false;
  for (auto& r : rules_) {
    if (Expire(r, now)) {
      ended = true;
      continue;
    }
    if (err != 0 || !Matches(r.spec.op, cmd)) continue;
    if (!r.spec.volume.empty() && r.spec.volume != e.volume) continue;
    if (r.matched++ % r.spec.every != 0) continue;
    ++r.injected;
    err = r.spec.error;
    if (Expire(r, now)) ended = true;
  }
  if (ended) RecountLocked();
  return err;
}

std::vector<FaultInjector::RuleInfo> FaultInjector::List() {
  std::lock_guard<std::mutex> l(mu_);
  const auto now = now_();
  std::vector<RuleInfo> out;
  for (auto& r : rules_) {
    Expire(r, now);
    RuleInfo i{r.id, r.spec, r.matched, r.injected, r.active, -1};
    if (r.deadline) {
      i.remaining_ms = r.active ? std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                           *r.deadline - now).count())
                                : 0;
    }
    out.push_back(i);
  }
  RecountLocked();
  return out;
}

size_t FaultInjector::Clear() {
  std::lock_guard<std::mutex> l(mu_);
  size_t n = rules_.size();
  rules_.clear();
  RecountLocked();
  if (n) log_.Warn("fault injection: " + std::to_string(n) + " rule(s) cleared");
  return n;
}

Status FaultInjector::Remove(uint64_t id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = std::find_if(rules_.begin(), rules_.end(), [id](const Rule& r) { return r.id == id; });
  if (it == rules_.end()) return Status::NotFound("no fault rule " + std::to_string(id));
  rules_.erase(it);
  RecountLocked();
  log_.Warn("fault injection rule " + std::to_string(id) + " removed");
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// FaultApi

namespace {

std::string RuleJson(const FaultInjector::RuleInfo& i) {
  const auto& s = i.spec;
  std::string j = "{\"id\":" + std::to_string(i.id) + ",\"volume\":" + (s.volume.empty() ? "null" : JsonEscape(s.volume)) +
                  ",\"op\":\"" + FaultInjector::OpName(s.op) + "\",\"errno\":" +
                  JsonEscape(FaultInjector::ErrorName(s.error)) + ",\"error_value\":" + std::to_string(s.error) +
                  ",\"count\":" + std::to_string(s.count) + ",\"every\":" + std::to_string(s.every) +
                  ",\"duration_ms\":" + (s.duration ? std::to_string(s.duration->count()) : "null") +
                  ",\"matched\":" + std::to_string(i.matched) + ",\"injected\":" + std::to_string(i.injected) +
                  ",\"active\":" + (i.active ? "true" : "false") + ",\"remaining_ms\":" +
                  (i.remaining_ms >= 0 ? std::to_string(i.remaining_ms) : "null") + "}";
  return j;
}

// A non-negative integer field; absent or null -> nullopt.
Result<std::optional<uint64_t>> UintField(const Poco::JSON::Object::Ptr& o, const std::string& key) {
  if (!o->has(key) || o->isNull(key)) return std::optional<uint64_t>();
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isInteger()) return Status::InvalidArgument("\"" + key + "\" must be an integer");
  try {
    if (v.isSigned() && v.convert<Poco::Int64>() < 0) {
      return Status::InvalidArgument("\"" + key + "\" must not be negative");
    }
    return std::optional<uint64_t>(v.convert<Poco::UInt64>());
  } catch (const std::exception& e) {
    return Status::InvalidArgument("\"" + key + "\": " + e.what());
  }
}

Result<std::string> StringField(const Poco::JSON::Object::Ptr& o, const std::string& key) {
  if (!o->has(key) || o->isNull(key)) return std::string();
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isString()) return Status::InvalidArgument("\"" + key + "\" must be a string");
  return v.extract<std::string>();
}

Result<FaultInjector::Spec> ParseSpec(const std::string& body) {
  if (body.empty()) return Status::InvalidArgument("a JSON object body is required");
  Poco::JSON::Object::Ptr o;
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(body);
    if (v.type() != typeid(Poco::JSON::Object::Ptr)) return Status::InvalidArgument("body must be a JSON object");
    o = v.extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("body is not valid JSON: ") + e.what());
  }
  static const char* kKeys[] = {"volume", "op", "errno", "count", "duration_ms", "every"};
  for (const auto& k : o->getNames()) {
    if (std::find_if(std::begin(kKeys), std::end(kKeys), [&](const char* x) { return k == x; }) == std::end(kKeys)) {
      return Status::InvalidArgument("unknown key \"" + k + "\" (volume, op, errno, count, duration_ms, every)");
    }
  }
  FaultInjector::Spec s;
  auto vol = StringField(o, "volume");
  if (!vol.ok()) return vol.status();
  s.volume = *vol;
  if (s.volume.size() > 128) return Status::InvalidArgument("\"volume\" is too long");
  auto op = StringField(o, "op");
  if (!op.ok()) return op.status();
  if (!op->empty()) {
    auto p = FaultInjector::OpByName(*op);
    if (!p) return Status::InvalidArgument("\"op\" must be read, write, flush or any");
    s.op = *p;
  }
  auto err = StringField(o, "errno");
  if (!err.ok()) return err.status();
  if (err->empty()) return Status::InvalidArgument("\"errno\" is required (e.g. \"EAGAIN\", \"EIO\")");
  auto ev = FaultInjector::ErrorByName(*err);
  if (!ev) {
    return Status::InvalidArgument("unknown \"errno\" " + *err +
                                   " (EPERM EIO ENOMEM EINVAL ENOSPC EOVERFLOW ENOTSUP ESHUTDOWN EAGAIN EINTR "
                                   "EBUSY ETIMEDOUT EDQUOT)");
  }
  s.error = *ev;
  auto count = UintField(o, "count");
  if (!count.ok()) return count.status();
  s.count = count->value_or(0);
  auto dur = UintField(o, "duration_ms");
  if (!dur.ok()) return dur.status();
  if (dur->has_value()) {
    if (**dur == 0 || **dur > kMaxDurationMs) return Status::InvalidArgument("\"duration_ms\" must be from 1 to 86400000");
    s.duration = std::chrono::milliseconds(**dur);
  }
  auto every = UintField(o, "every");
  if (!every.ok()) return every.status();
  if (every->has_value()) {
    if (**every == 0 || **every > 1000000) return Status::InvalidArgument("\"every\" must be from 1 to 1000000");
    s.every = static_cast<uint32_t>(**every);
  }
  if (s.count == 0 && !s.duration) return Status::InvalidArgument("\"count\" (> 0) or \"duration_ms\" is required");
  return s;
}

}  // namespace

void FaultApi::Register(HttpServer* s) {
  auto bind = [this](HttpResponse (FaultApi::*m)(const HttpRequest&)) {
    return [this, m](const HttpRequest& r) { return (this->*m)(r); };
  };
  s->Route("POST", "/v1/faults", bind(&FaultApi::Add));
  s->Route("GET", "/v1/faults", bind(&FaultApi::List));
  s->Route("DELETE", "/v1/faults", bind(&FaultApi::Clear));
  s->Route("DELETE", "/v1/faults/{id}", bind(&FaultApi::Remove));
}

HttpResponse FaultApi::Disabled() const {
  return HttpResponse::Error(403, "fault injection is off (start ferry-gateway with --fault-injection on)");
}

HttpResponse FaultApi::Add(const HttpRequest& r) {
  if (!enabled_) return Disabled();
  auto spec = ParseSpec(r.body);
  if (!spec.ok()) return HttpResponse::Error(spec.status());
  auto id = faults_->Add(*spec);
  if (!id.ok()) return HttpResponse::Error(id.status());
  // The rule as armed (requests may already be hitting it; GET shows that).
  FaultInjector::RuleInfo armed{*id, *spec, 0, 0, true,
                                spec->duration ? static_cast<int64_t>(spec->duration->count()) : -1};
  return HttpResponse::Json(201, RuleJson(armed));
}

HttpResponse FaultApi::List(const HttpRequest&) {
  if (!enabled_) return Disabled();
  std::string s = "{\"faults\":[";
  bool first = true;
  for (const auto& i : faults_->List()) {
    if (!first) s += ",";
    first = false;
    s += RuleJson(i);
  }
  return HttpResponse::Json(200, s + "]}");
}

HttpResponse FaultApi::Clear(const HttpRequest&) {
  if (!enabled_) return Disabled();
  return HttpResponse::Json(200, "{\"deleted\":" + std::to_string(faults_->Clear()) + "}");
}

HttpResponse FaultApi::Remove(const HttpRequest& r) {
  if (!enabled_) return Disabled();
  const std::string& id = r.params.at("id");
  if (id.empty() || id.size() > 19 || id.find_first_not_of("0123456789") != std::string::npos) {
    return HttpResponse::Error(400, "fault id must be a decimal number");
  }
  Status st = faults_->Remove(std::stoull(id));
  if (!st.ok()) return HttpResponse::Error(st);
  return HttpResponse::Json(200, "{\"deleted\":" + id + "}");
}

}  // namespace ferry::gateway
