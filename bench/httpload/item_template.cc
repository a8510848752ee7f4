#include "bench/httpload/item_template.h"

#include <cctype>

namespace ferry::httpload {

namespace {

// Reads a placeholder starting at text[pos] == '{' followed by 'i'. Returns the
// width (0 for `{i}`) and sets `end` past the closing brace, or an error.
Result<int> ReadPlaceholder(const std::string& text, size_t pos, size_t* end) {
  size_t close = text.find('}', pos);
  std::string ph = close == std::string::npos ? text.substr(pos) : text.substr(pos, close - pos + 1);
  auto bad = [&ph]() {
    return Status::InvalidArgument("bad placeholder '" + ph + "' (use {i} or {i:0N}, e.g. {i:05})");
  };
  if (close == std::string::npos) return bad();
  std::string inner = text.substr(pos + 1, close - pos - 1);  // "i" or "i:0N"
  *end = close + 1;
  if (inner == "i") return 0;
  if (inner.size() < 4 || inner.compare(0, 3, "i:0") != 0) return bad();
  int width = 0;
  for (size_t k = 3; k < inner.size(); ++k) {
    if (!std::isdigit(static_cast<unsigned char>(inner[k])) || width > 20) return bad();
    width = width * 10 + (inner[k] - '0');
  }
  if (width < 1 || width > 20) return bad();
  return width;
}

}  // namespace

Result<ItemTemplate> ItemTemplate::Parse(const std::string& text) {
  ItemTemplate t;
  std::string lit;
  size_t pos = 0;
  while (pos < text.size()) {
    if (text[pos] == '{' && pos + 1 < text.size() && text[pos + 1] == 'i') {
      size_t end = 0;
      auto width = ReadPlaceholder(text, pos, &end);
      if (!width.ok()) return width.status();
      if (!lit.empty()) t.pieces_.push_back({std::move(lit), -1});
      lit.clear();
      t.pieces_.push_back({"", *width});
      pos = end;
    } else {
      lit.push_back(text[pos++]);
    }
  }
  if (!lit.empty()) t.pieces_.push_back({std::move(lit), -1});
  return t;
}

std::string ItemTemplate::Expand(int64_t item) const {
  std::string out;
  for (const Piece& p : pieces_) {
    if (p.width < 0) {
      out += p.literal;
      continue;
    }
    std::string digits = std::to_string(item);
    if (static_cast<int>(digits.size()) < p.width) out.append(p.width - digits.size(), '0');
    out += digits;
  }
  return out;
}

bool ItemTemplate::HasPlaceholder() const {
  for (const Piece& p : pieces_)
    if (p.width >= 0) return true;
  return false;
}

}  // namespace ferry::httpload
