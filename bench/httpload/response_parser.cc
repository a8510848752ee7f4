#include "bench/httpload/response_parser.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <vector>

namespace ferry::httpload {

namespace {

constexpr size_t kMaxLine = 4096;

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Comma-separated tokens of a header value, trimmed and lower-cased.
std::vector<std::string> Tokens(const std::string& value) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= value.size()) {
    size_t comma = value.find(',', pos);
    if (comma == std::string::npos) comma = value.size();
    std::string t = Lower(Trim(value.substr(pos, comma - pos)));
    if (!t.empty()) out.push_back(t);
    pos = comma + 1;
  }
  return out;
}

bool ParseDecimal(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 18) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

bool ParseHex(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 15) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    int d = std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : std::tolower(c) - 'a' + 10;
    v = v * 16 + static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

}  // namespace

void ResponseParser::Fail(const std::string& why) {
  state_ = State::kError;
  error_ = why;
}

void ResponseParser::AppendBody(const char* data, size_t n) {
  if (body_.size() + n > kMaxBody) return Fail("response body larger than " + std::to_string(kMaxBody) + " bytes");
  body_.append(data, n);
}

size_t ResponseParser::Feed(const char* data, size_t n) {
  size_t used = 0;
  if (n > 0) started_ = true;
  while (used < n && state_ == State::kNeedMore) {
    switch (phase_) {
      case Phase::kHead:
        used += FeedHead(data + used, n - used);
        break;
      case Phase::kFixedBody:
      case Phase::kChunkData: {
        size_t k = static_cast<size_t>(std::min<uint64_t>(remaining_, n - used));
        AppendBody(data + used, k);
        used += k;
        remaining_ -= k;
        if (remaining_ == 0 && state_ == State::kNeedMore) {
          if (phase_ == Phase::kFixedBody)
            Finish();
          else
            phase_ = Phase::kChunkDataEnd;
        }
        break;
      }
      case Phase::kUntilClose:
        AppendBody(data + used, n - used);
        used = n;
        break;
      case Phase::kChunkSize:
      case Phase::kChunkDataEnd:
      case Phase::kTrailers:
        used += FeedLine(data + used, n - used);
        if (line_complete_ && state_ == State::kNeedMore) {
          OnLine();
          line_.clear();
          line_complete_ = false;
        }
        break;
    }
  }
  return used;
}

void ResponseParser::FeedEof() {
  if (state_ != State::kNeedMore) return;
  if (phase_ == Phase::kUntilClose) {
    keep_alive_ = false;
    return Finish();
  }
  Fail(started_ ? "connection closed in the middle of the response" : "connection closed before any response");
}

size_t ResponseParser::FeedHead(const char* data, size_t n) {
  for (size_t k = 0; k < n; ++k) {
    head_.push_back(data[k]);
    if (head_.size() > kMaxHead) {
      Fail("response head larger than " + std::to_string(kMaxHead) + " bytes");
      return k + 1;
    }
    if (data[k] != '\n') continue;
    size_t s = head_.size();
    bool blank = (s >= 2 && head_[s - 2] == '\n') || (s >= 3 && head_[s - 2] == '\r' && head_[s - 3] == '\n');
    if (s <= 2 && Trim(head_).empty()) {  // tolerate empty lines before the status line
      head_.clear();
      continue;
    }
    if (blank) {
      ParseHead();
      return k + 1;
    }
  }
  return n;
}

size_t ResponseParser::FeedLine(const char* data, size_t n) {
  const char* nl = static_cast<const char*>(std::memchr(data, '\n', n));
  size_t k = nl ? static_cast<size_t>(nl - data) + 1 : n;
  line_.append(data, k);
  if (line_.size() > kMaxLine) {
    Fail("chunk-size or trailer line longer than " + std::to_string(kMaxLine) + " bytes");
    return k;
  }
  line_complete_ = nl != nullptr;
  return k;
}

void ResponseParser::ParseHead() {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < head_.size()) {
    size_t nl = head_.find('\n', pos);
    if (nl == std::string::npos) nl = head_.size();
    std::string line = head_.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
    pos = nl + 1;
  }
  head_.clear();
  const std::string& sl = lines.empty() ? std::string() : lines[0];
  if (sl.size() < 12 || sl.compare(0, 7, "HTTP/1.") != 0 || sl[8] != ' ' || !std::isdigit(static_cast<unsigned char>(sl[9])) ||
      !std::isdigit(static_cast<unsigned char>(sl[10])) || !std::isdigit(static_cast<unsigned char>(sl[11])) ||
      (sl.size() > 12 && sl[12] != ' '))
    return Fail("bad status line: '" + sl.substr(0, 80) + "'");
  status_ = (sl[9] - '0') * 100 + (sl[10] - '0') * 10 + (sl[11] - '0');
  if (status_ < 100 || status_ > 599) return Fail("bad status code in '" + sl.substr(0, 80) + "'");
  keep_alive_ = sl[7] != '0';
  bool chunked = false, has_length = false;
  uint64_t length = 0;
  for (size_t k = 1; k < lines.size(); ++k) {
    size_t colon = lines[k].find(':');
    if (colon == std::string::npos || colon == 0) return Fail("bad header line: '" + lines[k].substr(0, 80) + "'");
    std::string name = Lower(Trim(lines[k].substr(0, colon)));
    std::string value = Trim(lines[k].substr(colon + 1));
    if (name == "content-length") {
      uint64_t v = 0;
      if (!ParseDecimal(value, &v)) return Fail("bad Content-Length: '" + value.substr(0, 40) + "'");
      if (has_length && v != length) return Fail("conflicting Content-Length headers");
      has_length = true;
      length = v;
    } else if (name == "transfer-encoding") {
      for (const std::string& t : Tokens(value)) {
        if (t == "chunked")
          chunked = true;
        else if (t != "identity")
          return Fail("unsupported Transfer-Encoding: '" + value.substr(0, 40) + "'");
      }
    } else if (name == "connection") {
      for (const std::string& t : Tokens(value)) {
        if (t == "close") keep_alive_ = false;
        if (t == "keep-alive") keep_alive_ = true;
      }
    }
  }
  if (status_ == 101) return Fail("unexpected 101 Switching Protocols");
  if (status_ < 200) return;  // interim response: the real one follows
  if (head_request_ || status_ == 204 || status_ == 304) return Finish();
  if (chunked) {
    phase_ = Phase::kChunkSize;
  } else if (has_length) {
    if (length > kMaxBody) return Fail("response body larger than " + std::to_string(kMaxBody) + " bytes");
    if (length == 0) return Finish();
    phase_ = Phase::kFixedBody;
    remaining_ = length;
    body_.reserve(static_cast<size_t>(length));
  } else {
    phase_ = Phase::kUntilClose;
    keep_alive_ = false;
  }
}

void ResponseParser::OnLine() {
  std::string line = line_;
  if (!line.empty() && line.back() == '\n') line.pop_back();
  if (!line.empty() && line.back() == '\r') line.pop_back();
  switch (phase_) {
    case Phase::kChunkSize: {
      std::string size = Trim(line.substr(0, line.find(';')));
      uint64_t v = 0;
      if (!ParseHex(size, &v)) return Fail("bad chunk size line: '" + line.substr(0, 40) + "'");
      if (v == 0) {
        phase_ = Phase::kTrailers;
      } else if (body_.size() + v > kMaxBody) {
        Fail("response body larger than " + std::to_string(kMaxBody) + " bytes");
      } else {
        phase_ = Phase::kChunkData;
        remaining_ = v;
      }
      return;
    }
    case Phase::kChunkDataEnd:
      if (!line.empty()) return Fail("chunk data longer than its declared size");
      phase_ = Phase::kChunkSize;
      return;
    case Phase::kTrailers:
      if (line.empty()) Finish();  // otherwise a trailer field: ignored
      return;
    default:
      return;
  }
}

}  // namespace ferry::httpload
