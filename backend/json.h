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

}  // namespace ferry::backend
