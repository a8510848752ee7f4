// TEST HARNESS ONLY: a fixed TargetDirectory (one or more targets, optional
// initiator-name ACL and CHAP) for the iSCSI transport's own tests.
#pragma once

#include <mutex>

#include "target/iscsi/target_directory.h"

namespace ferry::iscsi::testing {

class FixedDirectory : public TargetDirectory {
 public:
  void Add(TargetEntry e, std::vector<std::string> allowed_initiators = {}) {
    std::lock_guard<std::mutex> g(mu_);
    targets_.push_back({std::move(e), std::move(allowed_initiators)});
  }
  void SetDiscoveryAuth(TargetAuth a) {
    std::lock_guard<std::mutex> g(mu_);
    discovery_ = std::move(a);
  }
  std::optional<TargetEntry> Find(const std::string& iqn) override {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& t : targets_)
      if (t.entry.iqn == iqn) return t.entry;
    return std::nullopt;
  }
  bool Admits(const std::string& iqn, const std::string& name, const std::string&) override {
    std::lock_guard<std::mutex> g(mu_);
    for (const auto& t : targets_) {
      if (t.entry.iqn != iqn) continue;
      if (t.allowed.empty()) return true;
      for (const auto& a : t.allowed)
        if (a == name) return true;
    }
    return false;
  }
  std::vector<DiscoveredTarget> Discover(const std::string& name, const std::string& addr,
                                         const std::string&) override {
    std::vector<DiscoveredTarget> out;
    std::vector<std::string> iqns;
    {
      std::lock_guard<std::mutex> g(mu_);
      for (const auto& t : targets_) iqns.push_back(t.entry.iqn);
    }
    for (const auto& i : iqns)
      if (Admits(i, name, addr)) out.push_back({i, 1, {}});
    return out;
  }
  TargetAuth DiscoveryAuth() override {
    std::lock_guard<std::mutex> g(mu_);
    return discovery_;
  }

 private:
  struct T {
    TargetEntry entry;
    std::vector<std::string> allowed;
  };
  std::mutex mu_;
  std::vector<T> targets_;
  TargetAuth discovery_;
};

}  // namespace ferry::iscsi::testing
