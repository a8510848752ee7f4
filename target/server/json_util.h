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

// A new object that keeps keys in insertion order (stable, readable output).
JsonObject NewObject();
Poco::JSON::Array::Ptr NewArray(const std::vector<std::string>& items);
std::string ToJson(const JsonObject& o, bool pretty = false);

}  // namespace ferry::server
