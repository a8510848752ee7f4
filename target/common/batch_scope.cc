#include "target/common/batch_scope.h"

namespace ferry {
namespace {
thread_local BatchScope* t_innermost = nullptr;
}  // namespace

BatchScope::BatchScope() : outer_(t_innermost) { t_innermost = this; }

BatchScope::~BatchScope() {
  Flush();
  t_innermost = outer_;
}

BatchScope* BatchScope::Current() { return t_innermost; }

bool BatchScope::Defer(const void* key, std::function<void()> fn) {
  for (const auto& w : work_)
    if (w.first == key) return false;
  work_.emplace_back(key, std::move(fn));
  return true;
}

void BatchScope::Flush() {
  while (!work_.empty()) {
    std::vector<std::pair<const void*, std::function<void()>>> now;
    now.swap(work_);
    for (auto& w : now) w.second();
  }
}

}  // namespace ferry
