// Small JSON helpers over Poco::JSON so the rest of the backend reads clearly.
//
// Promise: parsing never throws (errors are kInvalidArgument with a reason);
// objects keep key insertion order; Render() indents when pretty.
#pragma once

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <cstdint>
#include <optional>
#include <string>

#include "target/common/status.h"

namespace ferry::backend {

using JObj = Poco::JSON::Object::Ptr;
using JArr = Poco::JSON::Array::Ptr;

JObj NewObj();
JArr NewArr();
Result<JObj> ParseObject(const std::string& text);
std::string Render(const JObj& o, bool pretty = false);
std::string Render(const JArr& a, bool pretty = false);

// Typed field access; absent -> nullopt; wrong type -> error.
Result<std::optional<std::string>> GetStr(const JObj& o, const std::string& k);
Result<std::optional<int64_t>> GetInt(const JObj& o, const std::string& k);
Result<std::optional<bool>> GetBool(const JObj& o, const std::string& k);
Result<JObj> GetObj(const JObj& o, const std::string& k);  // null Ptr when absent
// Lenient readers for peer replies (numbers may be strings): default when absent/bad.
std::string StrOr(const JObj& o, const std::string& k, const std::string& def = "");
int64_t IntOr(const JObj& o, const std::string& k, int64_t def = 0);

// Fast path for large peer answers (no Poco parse): appends to *out each
// object of the array member `key` of the JSON object `body`, with
// `"field":"value"` added as its last member, separated by commas (*first
// tells whether *out has no element yet; it is updated). Returns false and
// appends nothing when `body` is not an object whose `key` member is an array
// of objects (a malformed body is never copied half-way).
bool AppendObjectsWithField(const std::string& body, const std::string& key, const std::string& field,
                            const std::string& value, std::string* out, bool* first);

}  // namespace ferry::backend
