// Test harness for the SCSI device server: a Target with one RAM LUN, three
// I_T nexuses, CDB builders, synchronous and deferred command submission,
// and sense decoding.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "target/scsi/cdb.h"
#include "target/scsi/target.h"
#include "tests/scsi/ram_device.h"

namespace ferry::scsi::testing {

struct SenseTriple {
  uint8_t key = 0, asc = 0, ascq = 0;
  bool descriptor = false;
};

inline SenseTriple ParseSense(const std::vector<uint8_t>& s) {
  SenseTriple t;
  if (s.size() < 4) return t;
  if ((s[0] & 0x7f) == 0x72 || (s[0] & 0x7f) == 0x73) {
    t.descriptor = true;
    t.key = s[1] & 0x0f; t.asc = s[2]; t.ascq = s[3];
  } else if (s.size() >= 14) {
    t.key = s[2] & 0x0f; t.asc = s[12]; t.ascq = s[13];
  }
  return t;
}

#define EXPECT_SENSE(res, k, a, q)                                              \
  do {                                                                          \
    const auto& r_ = (res);                                                     \
    EXPECT_EQ(r_.status, ::ferry::scsi::kStatusCheckCondition);                 \
    auto st_ = ::ferry::scsi::testing::ParseSense(r_.sense);                    \
    EXPECT_EQ(int(st_.key), (k));                                               \
    EXPECT_EQ(int(st_.asc), (a));                                               \
    EXPECT_EQ(int(st_.ascq), (q));                                              \
  } while (0)

#define EXPECT_GOOD(res)                                                        \
  do {                                                                          \
    const auto& r_ = (res);                                                     \
    EXPECT_EQ(int(r_.status), 0) << "sense " << ::testing::PrintToString(r_.sense); \
  } while (0)

// Holds a deferred command's result; counts completions.
struct Slot {
  std::optional<ScsiResult> result;
  int calls = 0;
};

inline std::vector<uint8_t> Cdb10(uint8_t op, uint8_t b1, uint32_t lba, uint16_t n) {
  std::vector<uint8_t> c(10, 0);
  c[0] = op; c[1] = b1; Put32(&c[2], lba); Put16(&c[7], n);
  return c;
}
inline std::vector<uint8_t> Cdb16(uint8_t op, uint8_t b1, uint64_t lba, uint32_t n) {
  std::vector<uint8_t> c(16, 0);
  c[0] = op; c[1] = b1; Put64(&c[2], lba); Put32(&c[10], n);
  return c;
}
inline std::vector<uint8_t> Cdb12(uint8_t op, uint8_t b1, uint32_t lba, uint32_t n) {
  std::vector<uint8_t> c(12, 0);
  c[0] = op; c[1] = b1; Put32(&c[2], lba); Put32(&c[6], n);
  return c;
}
inline std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + i * 7);
  return v;
}

inline LunIdentity Id(const std::string& volume) {
  LunIdentity i;
  i.volume_name = volume;
  return i;
}

class Harness {
 public:
  explicit Harness(uint64_t size = 1 << 20, uint32_t bs = 512)
      : dev(std::make_shared<RamDevice>(size, bs)),
        target(TargetOptions{"iqn.2026-11.io.ferry:tgt", Logger("scsi-test", LogLevel::kWarn)}) {
    a = MakeNexus(1, "iqn.1994-05.com.example:alpha", "0x23d000000001");
    b = MakeNexus(2, "iqn.1994-05.com.example:beta", "0x23d000000002");
    c = MakeNexus(3, "iqn.1994-05.com.example:gamma", "0x23d000000003");
    EXPECT_TRUE(target.AddLun(0, dev, Id("volume-0")).ok());
    target.NexusAdded(*a);
    target.NexusAdded(*b);
    target.NexusAdded(*c);
  }

  static std::shared_ptr<Nexus> MakeNexus(uint64_t id, const std::string& name, const std::string& isid) {
    auto n = std::make_shared<Nexus>();
    n->id = id;
    n->initiator_name = name;
    n->initiator_port = name + ",i," + isid;
    n->target_port = "iqn.2026-11.io.ferry:tgt,t,0x1";
    n->relative_target_port = 1;
    return n;
  }

  std::unique_ptr<ScsiCommand> Make(const std::shared_ptr<Nexus>& n, const std::vector<uint8_t>& cdb,
                                    std::vector<uint8_t> out, uint64_t lun, TaskAttr attr, uint32_t tag) {
    auto cmd = std::make_unique<ScsiCommand>();
    cmd->nexus = n;
    cmd->lun = lun;
    std::copy(cdb.begin(), cdb.end(), cmd->cdb);
    cmd->cdb_len = uint8_t(cdb.size());
    cmd->tag = tag;
    cmd->attr = attr;
    cmd->dir = out.empty() ? DataDir::kRead : DataDir::kWrite;
    cmd->expected_length = out.empty() ? 1u << 24 : uint32_t(out.size());
    cmd->data_out.assign(out.begin(), out.end());
    return cmd;
  }

  // Submits and returns the slot that the completion fills.
  std::shared_ptr<Slot> Start(const std::shared_ptr<Nexus>& n, const std::vector<uint8_t>& cdb,
                              std::vector<uint8_t> out = {}, uint64_t lun = 0,
                              TaskAttr attr = TaskAttr::kSimple, uint32_t tag = 0) {
    auto slot = std::make_shared<Slot>();
    target.Submit(Make(n, cdb, std::move(out), lun, attr, tag), [slot](ScsiResult r) {
      slot->calls++;
      slot->result = std::move(r);
    });
    return slot;
  }

  // Runs a command against a non-deferred device; it must complete at once.
  ScsiResult Run(const std::shared_ptr<Nexus>& n, const std::vector<uint8_t>& cdb,
                 std::vector<uint8_t> out = {}, uint64_t lun = 0) {
    auto slot = Start(n, cdb, std::move(out), lun);
    EXPECT_EQ(slot->calls, 1) << "command did not complete synchronously";
    ScsiResult none;
    none.status = 0xff;
    return slot->result.value_or(none);
  }

  // Consumes pending unit attentions of `n` on `lun` (TEST UNIT READY until GOOD).
  void ClearUa(const std::shared_ptr<Nexus>& n, uint64_t lun = 0) {
    for (int i = 0; i < 20; ++i)
      if (Run(n, {0, 0, 0, 0, 0, 0}, {}, lun).status == kStatusGood) return;
    ADD_FAILURE() << "unit attentions never cleared";
  }
  void ClearAll() { ClearUa(a); ClearUa(b); ClearUa(c); }

  std::shared_ptr<RamDevice> dev;
  Target target;
  std::shared_ptr<Nexus> a, b, c;
};

}  // namespace ferry::scsi::testing
