// ItemTemplate: a request path or body with the item number substituted.
//
// Promise: Parse() accepts any text; the placeholders `{i}` (the item number)
// and `{i:0N}` (zero-padded to N digits, N in 1..20) are replaced by Expand();
// every other character, including JSON's own braces, is kept as is. A
// malformed placeholder that starts with `{i` (e.g. `{i:5}`, `{i:0}`, `{i`)
// is an error, so a typo is never sent silently as literal text.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "target/common/status.h"

namespace ferry::httpload {

class ItemTemplate {
 public:
  static Result<ItemTemplate> Parse(const std::string& text);

  // `item` is >= 0 (the caller's range); padding counts digits only.
  std::string Expand(int64_t item) const;
  // True when Expand() depends on the item (the template has a placeholder).
  bool HasPlaceholder() const;

 private:
  struct Piece {
    std::string literal;  // used when width < 0
    int width = -1;       // -1: literal; 0: {i}; N > 0: {i:0N}
  };
  std::vector<Piece> pieces_;
};

}  // namespace ferry::httpload
