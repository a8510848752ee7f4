#include "backend/json.h"

#include <cctype>
#include <cstdio>
#include <cstring>

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

namespace {

// A strict JSON skipper (RFC 8259 structure; string escapes are only stepped
// over), used to split a peer's answer without building a DOM.
class Skipper {
 public:
  explicit Skipper(const std::string& s) : s_(s) {}
  size_t pos = 0;
  void Ws() {
    while (pos < s_.size() && (s_[pos] == ' ' || s_[pos] == '\n' || s_[pos] == '\r' || s_[pos] == '\t')) ++pos;
  }
  bool At(char c) {
    Ws();
    return pos < s_.size() && s_[pos] == c;
  }
  bool Eat(char c) {
    if (!At(c)) return false;
    ++pos;
    return true;
  }
  // A string; its raw text (between the quotes) into *raw when given.
  bool String(std::string* raw = nullptr) {
    if (!At('"')) return false;
    size_t start = ++pos;
    while (pos < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[pos++]);
      if (c == '\\') {
        if (pos >= s_.size()) return false;
        ++pos;
      } else if (c == '"') {
        if (raw) *raw = s_.substr(start, pos - 1 - start);
        return true;
      } else if (c < 0x20) {
        return false;
      }
    }
    return false;
  }
  bool Value(int depth = 0) {
    if (depth > 64) return false;
    Ws();
    if (pos >= s_.size()) return false;
    char c = s_[pos];
    if (c == '"') return String();
    if (c == '{' || c == '[') {
      char close = c == '{' ? '}' : ']';
      ++pos;
      if (Eat(close)) return true;
      for (;;) {
        if (c == '{' && !(String() && Eat(':'))) return false;
        if (!Value(depth + 1)) return false;
        if (Eat(',')) continue;
        return Eat(close);
      }
    }
    for (const char* lit : {"true", "false", "null"}) {
      size_t n = std::strlen(lit);
      if (s_.compare(pos, n, lit) == 0) {
        pos += n;
        return true;
      }
    }
    size_t start = pos;
    if (pos < s_.size() && s_[pos] == '-') ++pos;
    if (pos >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos]))) return false;
    while (pos < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos])) || s_[pos] == '.' ||
                               s_[pos] == 'e' || s_[pos] == 'E' || s_[pos] == '+' || s_[pos] == '-'))
      ++pos;
    return pos > start;
  }

 private:
  const std::string& s_;
};

std::string JsonString(const std::string& v) {
  std::string o = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

}  // namespace

bool AppendObjectsWithField(const std::string& body, const std::string& key, const std::string& field,
                            const std::string& value, std::string* out, bool* first) {
  Skipper sk(body);
  if (!sk.Eat('{')) return false;
  const std::string extra = JsonString(field) + ":" + JsonString(value);
  std::string rows;
  bool found = false, my_first = *first;
  if (!sk.Eat('}')) {
    for (;;) {
      std::string k;
      if (!sk.String(&k) || !sk.Eat(':')) return false;
      if (k == key && !found && sk.At('[')) {
        found = true;
        sk.Eat('[');
        if (!sk.Eat(']')) {
          for (;;) {
            if (!sk.At('{')) return false;
            size_t start = sk.pos;
            if (!sk.Value()) return false;
            // body[start .. sk.pos) is one object ending in '}'.
            std::string obj = body.substr(start, sk.pos - start - 1);
            size_t last = obj.find_last_not_of(" \n\r\t");
            bool empty = last == 0;  // only the '{'
            if (!my_first) rows += ',';
            my_first = false;
            rows += obj.substr(0, last + 1);
            rows += empty ? "" : ",";
            rows += extra;
            rows += '}';
            if (sk.Eat(',')) continue;
            if (!sk.Eat(']')) return false;
            break;
          }
        }
      } else if (!sk.Value()) {
        return false;
      }
      if (sk.Eat(',')) continue;
      if (!sk.Eat('}')) return false;
      break;
    }
  }
  sk.Ws();
  if (!found || sk.pos != body.size()) return false;
  *out += rows;
  *first = my_first;
  return true;
}

}  // namespace ferry::backend
