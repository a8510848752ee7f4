#include "target/server/json_util.h"

#include <Poco/JSON/Parser.h>
#include <Poco/JSON/Stringifier.h>

#include <cstdio>
#include <sstream>

namespace ferry::server {

Result<JsonObject> ParseJsonObject(const std::string& text) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return NewObject();
  try {
    Poco::JSON::Parser p;
    Poco::Dynamic::Var v = p.parse(text);
    if (v.type() != typeid(Poco::JSON::Object::Ptr))
      return Status::InvalidArgument("body must be a JSON object");
    auto o = v.extract<Poco::JSON::Object::Ptr>();
    if (o.isNull()) return Status::InvalidArgument("body must be a JSON object");
    return o;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("malformed JSON: ") + e.what());
  }
}

namespace {
bool Absent(const JsonObject& o, const std::string& key) {
  return o.isNull() || !o->has(key) || o->isNull(key);
}
}  // namespace

Status GetString(const JsonObject& o, const std::string& key, std::string* out, bool* present) {
  *present = false;
  if (Absent(o, key)) return Status::Ok();
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isString()) return Status::InvalidArgument("field '" + key + "' must be a string");
  *out = v.extract<std::string>();
  *present = true;
  return Status::Ok();
}

Status GetInt(const JsonObject& o, const std::string& key, int64_t* out, bool* present) {
  *present = false;
  if (Absent(o, key)) return Status::Ok();
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isInteger() || v.isBoolean())
    return Status::InvalidArgument("field '" + key + "' must be an integer");
  try {
    if (!v.isSigned()) {
      uint64_t u = v.convert<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX))
        return Status::InvalidArgument("field '" + key + "' is out of range");
      *out = static_cast<int64_t>(u);
    } else {
      *out = v.convert<int64_t>();
    }
  } catch (const std::exception&) {
    return Status::InvalidArgument("field '" + key + "' is out of range");
  }
  *present = true;
  return Status::Ok();
}

Status GetBool(const JsonObject& o, const std::string& key, bool* out, bool* present) {
  *present = false;
  if (Absent(o, key)) return Status::Ok();
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isBoolean()) return Status::InvalidArgument("field '" + key + "' must be true or false");
  *out = v.extract<bool>();
  *present = true;
  return Status::Ok();
}

Status GetStringList(const JsonObject& o, const std::string& key, std::vector<std::string>* out,
                     bool* present) {
  *present = false;
  if (Absent(o, key)) return Status::Ok();
  Poco::JSON::Array::Ptr a;
  try {
    a = o->getArray(key);
  } catch (const std::exception&) {
  }
  if (a.isNull()) return Status::InvalidArgument("field '" + key + "' must be a list of strings");
  std::vector<std::string> items;
  for (size_t i = 0; i < a->size(); ++i) {
    Poco::Dynamic::Var v = a->get(static_cast<unsigned>(i));
    if (!v.isString()) return Status::InvalidArgument("field '" + key + "' must be a list of strings");
    items.push_back(v.extract<std::string>());
  }
  *out = std::move(items);
  *present = true;
  return Status::Ok();
}

Status GetObject(const JsonObject& o, const std::string& key, JsonObject* out, bool* present) {
  *present = false;
  if (Absent(o, key)) return Status::Ok();
  JsonObject sub;
  try {
    sub = o->getObject(key);
  } catch (const std::exception&) {
  }
  if (sub.isNull()) return Status::InvalidArgument("field '" + key + "' must be an object");
  *out = sub;
  *present = true;
  return Status::Ok();
}

JsonObject NewObject() { return new Poco::JSON::Object(Poco::JSON_PRESERVE_KEY_ORDER); }

Poco::JSON::Array::Ptr NewArray(const std::vector<std::string>& items) {
  Poco::JSON::Array::Ptr a = new Poco::JSON::Array();
  for (const auto& s : items) a->add(s);
  return a;
}

std::string ToJson(const JsonObject& o, bool pretty) {
  std::ostringstream ss;
  Poco::JSON::Stringifier::stringify(o, ss, pretty ? 2 : 0);
  return ss.str();
}

void JsonWriter::Comma() {
  if (after_key_) {
    after_key_ = false;
    return;
  }
  if (!first_.empty()) {
    if (!first_.back()) out_ += ',';
    first_.back() = false;
  }
}

JsonWriter& JsonWriter::Open(char c) {
  Comma();
  out_ += c;
  first_.push_back(true);
  return *this;
}

JsonWriter& JsonWriter::Close(char c) {
  out_ += c;
  if (!first_.empty()) first_.pop_back();
  return *this;
}

JsonWriter& JsonWriter::Key(std::string_view k) {
  String(k);
  out_ += ':';
  after_key_ = true;
  return *this;
}

JsonWriter& JsonWriter::String(std::string_view v) {
  Comma();
  out_ += '"';
  size_t plain = 0;  // start of the run of characters that need no escape
  for (size_t i = 0; i < v.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(v[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out_.append(v.data() + plain, i - plain);
    plain = i + 1;
    switch (c) {
      case '"': out_ += "\\\""; break;
      case '\\': out_ += "\\\\"; break;
      case '\n': out_ += "\\n"; break;
      case '\r': out_ += "\\r"; break;
      case '\t': out_ += "\\t"; break;
      default:
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", c);
        out_ += buf;
    }
  }
  out_.append(v.data() + plain, v.size() - plain);
  out_ += '"';
  return *this;
}

JsonWriter& JsonWriter::Int(int64_t v) {
  Comma();
  out_ += std::to_string(v);
  return *this;
}

JsonWriter& JsonWriter::Uint(uint64_t v) {
  Comma();
  out_ += std::to_string(v);
  return *this;
}

JsonWriter& JsonWriter::Bool(bool v) {
  Comma();
  out_ += v ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::StringArray(const std::vector<std::string>& v) {
  BeginArray();
  for (const auto& s : v) String(s);
  return EndArray();
}

}  // namespace ferry::server
