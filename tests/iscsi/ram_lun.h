// TEST HARNESS ONLY: a tiny SCSI responder serving one RAM LUN, just enough
// SCSI (INQUIRY, READ CAPACITY, READ/WRITE, TEST UNIT READY, REPORT LUNS,
// MODE SENSE, SYNCHRONIZE CACHE) to drive the iSCSI transport from real
// initiators. The real device server is target/scsi; nothing here is product code.
//
// Promise: thread-safe; completes every command synchronously on the calling
// thread; unknown opcodes get CHECK CONDITION / ILLEGAL REQUEST.
#pragma once

#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "target/scsi/scsi_task.h"

namespace ferry::iscsi::testing {

class RamLun : public scsi::CommandSink {
 public:
  explicit RamLun(uint64_t bytes, uint32_t block = 512) : block_(block), data_(bytes) {}

  std::atomic<int> nexus_added{0}, nexus_lost{0}, aborts{0}, resets{0};
  std::atomic<uint64_t> commands{0};

  void Submit(std::unique_ptr<scsi::ScsiCommand> c, scsi::Completion done) override {
    ++commands;
    done(Execute(*c));
  }
  scsi::TmfResult AbortTask(const scsi::Nexus&, uint32_t) override { ++aborts; return scsi::TmfResult::kTaskDoesNotExist; }
  scsi::TmfResult AbortTaskSet(const scsi::Nexus&, uint64_t lun) override { return LunOk(lun); }
  scsi::TmfResult ClearTaskSet(const scsi::Nexus&, uint64_t lun) override { return LunOk(lun); }
  scsi::TmfResult LunReset(const scsi::Nexus&, uint64_t lun) override { ++resets; return LunOk(lun); }
  scsi::TmfResult TargetReset(const scsi::Nexus&, bool) override { ++resets; return scsi::TmfResult::kComplete; }
  void NexusLost(const scsi::Nexus&) override { ++nexus_lost; }
  void NexusAdded(const scsi::Nexus&) override { ++nexus_added; }

  // Direct access for tests.
  std::vector<uint8_t> Read(uint64_t off, size_t n) {
    std::lock_guard<std::mutex> g(mu_);
    return std::vector<uint8_t>(data_.begin() + off, data_.begin() + off + n);
  }

 private:
  static scsi::TmfResult LunOk(uint64_t lun) {
    return lun == 0 ? scsi::TmfResult::kComplete : scsi::TmfResult::kLunDoesNotExist;
  }
  static scsi::ScsiResult Check(uint8_t key, uint8_t asc, uint8_t ascq) {
    scsi::ScsiResult r;
    r.status = scsi::kStatusCheckCondition;
    r.sense.assign(18, 0);
    r.sense[0] = 0x70;
    r.sense[2] = key;
    r.sense[7] = 10;
    r.sense[12] = asc;
    r.sense[13] = ascq;
    return r;
  }
  static uint32_t Be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
  static uint64_t Be64(const uint8_t* p) { return uint64_t(Be32(p)) << 32 | Be32(p + 4); }
  static void Put32(uint8_t* p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
  static void Put64(uint8_t* p, uint64_t v) { Put32(p, uint32_t(v >> 32)); Put32(p + 4, uint32_t(v)); }

  scsi::ScsiResult Execute(const scsi::ScsiCommand& c) {
    const uint8_t* cdb = c.cdb;
    scsi::ScsiResult r;
    uint64_t blocks = data_.size() / block_;
    if (c.lun != 0 && cdb[0] != 0x12 && cdb[0] != 0xa0) return Check(0x05, 0x25, 0x00);
    switch (cdb[0]) {
      case 0x00:  // TEST UNIT READY
      case 0x35:  // SYNCHRONIZE CACHE 10
      case 0x91:  // SYNCHRONIZE CACHE 16
        return r;
      case 0x12: {  // INQUIRY
        uint16_t alloc = uint16_t(cdb[3] << 8 | cdb[4]);
        if (cdb[1] & 1) {
          std::vector<uint8_t> v(4, 0);
          v[1] = cdb[2];
          if (cdb[2] == 0x00) {
            v.insert(v.end(), {0x00, 0x80, 0x83});
          } else if (cdb[2] == 0x80) {
            std::string sn = "FERRYTEST0001";
            v.insert(v.end(), sn.begin(), sn.end());
          } else if (cdb[2] == 0x83) {
            v.insert(v.end(), {0x01, 0x03, 0x00, 0x08, 0x60, 0x01, 0x40, 0x5f, 0x00, 0x00, 0x00, 0x01});
          } else {
            return Check(0x05, 0x24, 0x00);
          }
          v[3] = uint8_t(v.size() - 4);
          v.resize(std::min<size_t>(v.size(), alloc));
          r.data_in = std::move(v);
          return r;
        }
        std::vector<uint8_t> v(36, 0);
        v[0] = c.lun == 0 ? 0x00 : 0x7f;
        v[2] = 0x06;
        v[3] = 0x02;
        v[4] = 31;
        v[7] = 0x02;  // CmdQue
        std::memcpy(&v[8], "FERRY   ", 8);
        std::memcpy(&v[16], "iSCSI TEST LUN  ", 16);
        std::memcpy(&v[32], "0001", 4);
        v.resize(std::min<size_t>(v.size(), alloc));
        r.data_in = std::move(v);
        return r;
      }
      case 0x25: {  // READ CAPACITY 10
        std::vector<uint8_t> v(8);
        Put32(&v[0], blocks - 1 > 0xffffffffull ? 0xffffffffu : uint32_t(blocks - 1));
        Put32(&v[4], block_);
        r.data_in = std::move(v);
        return r;
      }
      case 0x9e: {  // READ CAPACITY 16
        if ((cdb[1] & 0x1f) != 0x10) return Check(0x05, 0x20, 0x00);
        std::vector<uint8_t> v(32, 0);
        Put64(&v[0], blocks - 1);
        Put32(&v[8], block_);
        v.resize(std::min<size_t>(v.size(), Be32(cdb + 10)));
        r.data_in = std::move(v);
        return r;
      }
      case 0xa0: {  // REPORT LUNS
        std::vector<uint8_t> v(16, 0);
        Put32(&v[0], 8);
        v.resize(std::min<size_t>(v.size(), Be32(cdb + 6)));
        r.data_in = std::move(v);
        return r;
      }
      case 0x1a:    // MODE SENSE 6
      case 0x5a: {  // MODE SENSE 10
        std::vector<uint8_t> v(cdb[0] == 0x1a ? 4 : 8, 0);
        if (cdb[0] == 0x1a) v[0] = 3;
        else v[1] = 6;
        r.data_in = std::move(v);
        return r;
      }
      case 0x08: case 0x28: case 0x88: case 0xa8:   // READ 6/10/16/12
      case 0x0a: case 0x2a: case 0x8a: case 0xaa: {  // WRITE 6/10/16/12
        uint64_t lba;
        uint32_t n;
        switch (cdb[0]) {
          case 0x08: case 0x0a:
            lba = uint64_t(cdb[1] & 0x1f) << 16 | cdb[2] << 8 | cdb[3];
            n = cdb[4] ? cdb[4] : 256;
            break;
          case 0x28: case 0x2a:
            lba = Be32(cdb + 2);
            n = uint32_t(cdb[7] << 8 | cdb[8]);
            break;
          case 0xa8: case 0xaa:
            lba = Be32(cdb + 2);
            n = Be32(cdb + 6);
            break;
          default:
            lba = Be64(cdb + 2);
            n = Be32(cdb + 10);
        }
        if (lba + n > blocks) return Check(0x05, 0x21, 0x00);
        size_t off = lba * block_, len = size_t(n) * block_;
        bool write = cdb[0] == 0x0a || cdb[0] == 0x2a || cdb[0] == 0x8a || cdb[0] == 0xaa;
        std::lock_guard<std::mutex> g(mu_);
        if (write) {
          r.data_out_length = int64_t(len);
          size_t have = std::min(len, c.data_out.size());
          if (have) std::memcpy(data_.data() + off, c.data_out.data(), have);
        } else {
          r.data_in.assign(data_.begin() + off, data_.begin() + off + len);
        }
        return r;
      }
      default:
        return Check(0x05, 0x20, 0x00);  // INVALID COMMAND OPERATION CODE
    }
  }

  uint32_t block_;
  std::mutex mu_;
  std::vector<uint8_t> data_;
};

}  // namespace ferry::iscsi::testing
