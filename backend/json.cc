#include "backend/json.h"

#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>

#include <sstream>

namespace ferry::backend {

JObj NewObj() { return new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER); }
JArr NewArr() { return new Poco::JSON::Array(Poco::JSON_PRESERVE_KEY_ORDER); }

Result<JObj> ParseObject(const std::string& text) {
  if (text.empty()) return Status::InvalidArgument("request body must be a JSON object");
  try {
    Poco::JSON::Parser p;
    Poco::Dynamic::Var v = p.parse(text);
    if (v.type() != typeid(Poco::JSON::Object::Ptr))
      return Status::InvalidArgument("request body must be a JSON object");
    return v.extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("malformed JSON: ") + e.what());
  }
}

std::string Render(const JObj& o, bool pretty) {
  std::ostringstream ss;
  o->stringify(ss, pretty ? 2 : 0);
  if (pretty) ss << "\n";
  return ss.str();
}
std::string Render(const JArr& a, bool pretty) {
  std::ostringstream ss;
  a->stringify(ss, pretty ? 2 : 0);
  if (pretty) ss << "\n";
  return ss.str();
}

Result<std::optional<std::string>> GetStr(const JObj& o, const std::string& k) {
  if (!o || !o->has(k) || o->isNull(k)) return std::optional<std::string>();
  Poco::Dynamic::Var v = o->get(k);
  if (!v.isString()) return Status::InvalidArgument("field \"" + k + "\" must be a string");
  return std::optional<std::string>(v.convert<std::string>());
}

Result<std::optional<int64_t>> GetInt(const JObj& o, const std::string& k) {
  if (!o || !o->has(k) || o->isNull(k)) return std::optional<int64_t>();
  Poco::Dynamic::Var v = o->get(k);
  if (!v.isInteger()) return Status::InvalidArgument("field \"" + k + "\" must be an integer");
  try {
    return std::optional<int64_t>(v.convert<int64_t>());
  } catch (const std::exception&) {
    return Status::InvalidArgument("field \"" + k + "\" out of range");
  }
}

Result<std::optional<bool>> GetBool(const JObj& o, const std::string& k) {
  if (!o || !o->has(k) || o->isNull(k)) return std::optional<bool>();
  Poco::Dynamic::Var v = o->get(k);
  if (!v.isBoolean()) return Status::InvalidArgument("field \"" + k + "\" must be true or false");
  return std::optional<bool>(v.extract<bool>());
}

Result<JObj> GetObj(const JObj& o, const std::string& k) {
  if (!o || !o->has(k) || o->isNull(k)) return JObj();
  JObj r = o->getObject(k);
  if (!r) return Status::InvalidArgument("field \"" + k + "\" must be an object");
  return r;
}

std::string StrOr(const JObj& o, const std::string& k, const std::string& def) {
  try {
    if (!o || !o->has(k) || o->isNull(k)) return def;
    return o->get(k).convert<std::string>();
  } catch (...) {
    return def;
  }
}

int64_t IntOr(const JObj& o, const std::string& k, int64_t def) {
  try {
    if (!o || !o->has(k) || o->isNull(k)) return def;
    return o->get(k).convert<int64_t>();
  } catch (...) {
    return def;
  }
}

}  // namespace ferry::backend
