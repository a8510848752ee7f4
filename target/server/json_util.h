// JSON helpers for the target's admin API and state file: strict, typed reads
// from a parsed object, and a compact writer.
//
// Promise: never throws. Parsing garbage, a non-object root or a field of the
// wrong type yields kInvalidArgument naming the field; a missing optional field
// leaves the output untouched and reports "absent" (false).
#pragma once

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "target/common/status.h"

namespace ferry::server {

using JsonObject = Poco::JSON::Object::Ptr;

// Parses text whose root must be a JSON object. Empty text parses as {}.
Result<JsonObject> ParseJsonObject(const std::string& text);

// Each getter: returns Ok and sets *present=false when the key is absent (or
// null); InvalidArgument when present with the wrong type.
Status GetString(const JsonObject& o, const std::string& key, std::string* out, bool* present);
Status GetInt(const JsonObject& o, const std::string& key, int64_t* out, bool* present);
Status GetBool(const JsonObject& o, const std::string& key, bool* out, bool* present);
Status GetStringList(const JsonObject& o, const std::string& key, std::vector<std::string>* out,
                     bool* present);
Status GetObject(const JsonObject& o, const std::string& key, JsonObject* out, bool* present);

// JsonWriter: a fast streaming writer (Poco's stringify costs ~100 ms for a
// 1000-LUN state). Commas are placed automatically; the caller pairs Begin/End.
class JsonWriter {
 public:
  JsonWriter& BeginObject() { return Open('{'); }
  JsonWriter& EndObject() { return Close('}'); }
  JsonWriter& BeginArray() { return Open('['); }
  JsonWriter& EndArray() { return Close(']'); }
  JsonWriter& Key(std::string_view k);
  JsonWriter& String(std::string_view v);
  JsonWriter& Int(int64_t v);
  JsonWriter& Uint(uint64_t v);
  JsonWriter& Bool(bool v);
  JsonWriter& StringArray(const std::vector<std::string>& v);
  // Shorthands for one member.
  JsonWriter& Field(std::string_view k, std::string_view v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, const char* v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, const std::string& v) { return Key(k).String(v); }
  JsonWriter& Field(std::string_view k, bool v) { return Key(k).Bool(v); }
  JsonWriter& Field(std::string_view k, int64_t v) { return Key(k).Int(v); }
  JsonWriter& Field(std::string_view k, uint64_t v) { return Key(k).Uint(v); }
  JsonWriter& Field(std::string_view k, uint32_t v) { return Key(k).Uint(v); }
  JsonWriter& Field(std::string_view k, int v) { return Key(k).Int(v); }
  JsonWriter& Field(std::string_view k, const std::vector<std::string>& v) { return Key(k).StringArray(v); }
  void Reserve(size_t bytes) { out_.reserve(bytes); }
  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  JsonWriter& Open(char c);
  JsonWriter& Close(char c);
  void Comma();
  std::string out_;
  std::vector<bool> first_;  // per open container: no member written yet
  bool after_key_ = false;
};

// A new object that keeps keys in insertion order (stable, readable output).
JsonObject NewObject();
Poco::JSON::Array::Ptr NewArray(const std::vector<std::string>& items);
std::string ToJson(const JsonObject& o, bool pretty = false);

}  // namespace ferry::server
