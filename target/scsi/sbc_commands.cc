// SBC-3 command handlers of LogicalUnit: READ CAPACITY, READ/WRITE (6/10/12/
// 16), WRITE AND VERIFY, VERIFY, COMPARE AND WRITE, ORWRITE, WRITE SAME,
// UNMAP, GET LBA STATUS, SYNCHRONIZE CACHE, PRE-FETCH, READ DEFECT DATA.
#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.h"
#include "target/scsi/logical_unit.h"

namespace ferry::scsi {

namespace {

// Offset of the first differing byte, or -1.
int64_t FirstMismatch(const uint8_t* a, const uint8_t* b, size_t n) {
  if (std::memcmp(a, b, n) == 0) return -1;
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return int64_t(i);
  return -1;
}

// Data-Out shorter than a command that needs all of it (COMPARE AND WRITE,
// WRITE SAME, VERIFY, ORWRITE): INVALID FIELD IN COMMAND INFORMATION UNIT,
// nothing is written.
Sense ShortDataOut() { return Sense::Make(sk::kIllegalRequest, 0x0e, 0x03); }

}  // namespace

bool LogicalUnit::CheckRange(const TaskPtr& t, uint64_t lba, uint64_t blocks) {
  uint64_t cap = blocks_.load(std::memory_order_relaxed);
  if (lba > cap || blocks > cap - lba) {
    Check(t, Sense::LbaOutOfRange());
    return false;
  }
  return true;
}

bool LogicalUnit::CheckWritable(const TaskPtr& t) {
  if (read_only_) {
    Check(t, Sense::WriteProtected());
    return false;
  }
  if (swp_.load(std::memory_order_relaxed)) {
    Check(t, Sense::Make(sk::kDataProtect, 0x27, 0x02));  // LOGICAL UNIT SOFTWARE WRITE PROTECTED
    return false;
  }
  return true;
}

bool LogicalUnit::CheckDataOut(const TaskPtr& t, size_t need) {
  if (t->cmd->data_out.size() < need) {
    Check(t, ShortDataOut());
    return false;
  }
  return true;
}

void LogicalUnit::ReadCapacity10(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  if (!(cdb[8] & 0x01) && Get32(cdb + 2) != 0) return Check(t, Sense::InvalidFieldInCdb(2));
  uint64_t last = blocks_.load() - 1;
  std::vector<uint8_t> d(8);
  Put32(&d[0], uint32_t(std::min<uint64_t>(last, 0xffffffffull)));
  Put32(&d[4], block_size_);
  Good(t, std::move(d));
}

void LogicalUnit::ReadCapacity16(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  std::vector<uint8_t> d(32, 0);
  Put64(&d[0], blocks_.load() - 1);
  Put32(&d[8], block_size_);
  // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT stays 0: the store has no
  // physical block larger than a logical block that callers must align to.
  d[14] = uint8_t((read_only_ ? 0 : 0x80) | 0x40);  // LBPME, LBPRZ
  uint32_t alloc = Get32(cdb + 10);
  if (d.size() > alloc) d.resize(alloc);
  Good(t, std::move(d));
}

void LogicalUnit::ReadWrite(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  uint8_t opc = cdb[0];
  uint64_t lba;
  uint32_t n;
  uint16_t len_byte;
  switch (opc) {
    case op::kRead6: case op::kWrite6:
      lba = Get24(cdb + 1) & 0x1fffff;
      n = cdb[4] ? cdb[4] : 256;
      len_byte = 4;
      break;
    case op::kRead10: case op::kWrite10: case op::kWriteVerify10:
      lba = Get32(cdb + 2); n = Get16(cdb + 7); len_byte = 7;
      break;
    case op::kRead12: case op::kWrite12: case op::kWriteVerify12:
      lba = Get32(cdb + 2); n = Get32(cdb + 6); len_byte = 6;
      break;
    default:
      lba = Get64(cdb + 2); n = Get32(cdb + 10); len_byte = 10;
      break;
  }
  bool six = opc == op::kRead6 || opc == op::kWrite6;
  bool verify = opc == op::kWriteVerify10 || opc == op::kWriteVerify12 || opc == op::kWriteVerify16;
  bool write = verify || opc == op::kWrite6 || opc == op::kWrite10 || opc == op::kWrite12 || opc == op::kWrite16;
  if (!six && (cdb[1] & 0xe0)) return Check(t, Sense::InvalidFieldInCdb(1, 7));  // no protection information
  if (write && !CheckWritable(t)) return;
  if (!CheckRange(t, lba, n)) return;
  if (n == 0) return Good(t);
  if (uint64_t(n) * block_size_ > LuLimits::kMaxTransferBytes) return Check(t, Sense::InvalidFieldInCdb(len_byte));
  if (!write) return DoRead(t, lba, n);
  bool fua = verify || (!six && (cdb[1] & 0x08)) || !wce_.load(std::memory_order_relaxed);
  // Less Data-Out than the CDB asks for (iSCSI EDTL < SCSI transfer length):
  // write only the whole blocks that arrived (FCP-4 / RFC 7143 overflow
  // rule: data beyond the expected length is neither requested nor
  // written); the transport reports the residual.
  size_t have = t->cmd->data_out.size() / block_size_;
  if (have < n) n = uint32_t(have);
  if (n == 0) return Good(t);
  DoWrite(t, lba, n, fua);
}

void LogicalUnit::DoRead(const TaskPtr& t, uint64_t lba, uint32_t n) {
  uint32_t bytes = n * block_size_;
  auto self = shared_from_this();
  // Zero-copy when both the transport and the device can: the data stays in
  // a pipe from the gateway's socket to the initiator's.
  if (t->cmd->accepts_spliced &&
      dev_->ReadSpliced(lba * block_size_, bytes, [self, t](Status s, std::shared_ptr<SplicedData> d) {
        if (!s.ok()) return self->Check(t, self->DeviceError(s, false));
        ScsiResult r;
        r.data_in_spliced = std::move(d);
        self->Finish(t, std::move(r));
      }))
    return;
  t->buf.resize(bytes);
  dev_->Read(lba * block_size_, bytes, reinterpret_cast<char*>(t->buf.data()), [self, t](Status s) {
    if (!s.ok()) return self->Check(t, self->DeviceError(s, false));
    self->Good(t, std::move(t->buf));
  });
}

void LogicalUnit::DoWrite(const TaskPtr& t, uint64_t lba, uint32_t n, bool fua) {
  uint32_t bytes = n * block_size_;
  if (!CheckDataOut(t, bytes)) return;
  auto self = shared_from_this();
  dev_->Write(lba * block_size_, bytes, reinterpret_cast<const char*>(t->cmd->data_out.data()), fua,
              [self, t](Status s) {
                if (!s.ok()) return self->Check(t, self->DeviceError(s, true));
                self->Good(t);
              });
}

void LogicalUnit::Verify(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  uint64_t lba;
  uint32_t n;
  uint16_t len_byte;
  if (cdb[0] == op::kVerify10) { lba = Get32(cdb + 2); n = Get16(cdb + 7); len_byte = 7; }
  else if (cdb[0] == op::kVerify12) { lba = Get32(cdb + 2); n = Get32(cdb + 6); len_byte = 6; }
  else { lba = Get64(cdb + 2); n = Get32(cdb + 10); len_byte = 10; }
  if (cdb[1] & 0xe0) return Check(t, Sense::InvalidFieldInCdb(1, 7));
  uint8_t bytchk = (cdb[1] >> 1) & 0x03;
  if (bytchk == 2) return Check(t, Sense::InvalidFieldInCdb(1, 2));
  if (!CheckRange(t, lba, n)) return;
  if (n == 0) return Good(t);
  // BYTCHK 0: the medium behind the gateway has no verify operation of its
  // own; the range is valid, so there is nothing more to check.
  if (bytchk == 0) return Good(t);
  if (uint64_t(n) * block_size_ > LuLimits::kMaxTransferBytes) return Check(t, Sense::InvalidFieldInCdb(len_byte));
  uint32_t bytes = n * block_size_;
  size_t need = bytchk == 1 ? bytes : block_size_;
  if (!CheckDataOut(t, need)) return;
  t->buf.resize(bytes);
  auto self = shared_from_this();
  dev_->Read(lba * block_size_, bytes, reinterpret_cast<char*>(t->buf.data()), [self, t, bytchk, bytes](Status s) {
    if (!s.ok()) return self->Check(t, self->DeviceError(s, false));
    const uint8_t* want = t->cmd->data_out.data();
    uint32_t bs = self->block_size_;
    if (bytchk == 1) {
      int64_t at = FirstMismatch(t->buf.data(), want, bytes);
      if (at >= 0) return self->Check(t, Sense::Miscompare(uint64_t(at)));
    } else {
      for (uint32_t off = 0; off < bytes; off += bs) {
        int64_t at = FirstMismatch(t->buf.data() + off, want, bs);
        if (at >= 0) return self->Check(t, Sense::Miscompare(uint64_t(off + at)));
      }
    }
    self->Good(t);
  });
}

void LogicalUnit::CompareAndWrite(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  if (cdb[1] & 0xe0) return Check(t, Sense::InvalidFieldInCdb(1, 7));
  uint64_t lba = Get64(cdb + 2);
  uint32_t n = cdb[13];
  if (n > LuLimits::kMaxCompareAndWriteBlocks) return Check(t, Sense::InvalidFieldInCdb(13));
  if (!CheckWritable(t)) return;
  if (!CheckRange(t, lba, n)) return;
  // The Data-Out buffer must hold exactly the verify and the write data.
  if (t->cmd->data_out.size() != 2 * size_t(n) * block_size_) {
    if (n == 0) return Check(t, Sense::InvalidFieldInCdb(13));
    return Check(t, ShortDataOut());
  }
  if (n == 0) return Good(t);
  uint32_t bytes = n * block_size_;
  bool fua = (cdb[1] & 0x08) || !wce_.load(std::memory_order_relaxed);
  t->buf.resize(bytes);
  auto self = shared_from_this();
  // This task runs alone in the task set (exclusive), so no other write can
  // land between the read and the write.
  dev_->Read(lba * block_size_, bytes, reinterpret_cast<char*>(t->buf.data()),
             [self, t, lba, bytes, fua](Status s) {
               if (!s.ok()) return self->Check(t, self->DeviceError(s, false));
               if (self->Aborted(t)) return self->Retire(t);
               const uint8_t* verify = t->cmd->data_out.data();
               int64_t at = FirstMismatch(t->buf.data(), verify, bytes);
               if (at >= 0) return self->Check(t, Sense::Miscompare(uint64_t(at)));
               const char* data = reinterpret_cast<const char*>(verify + bytes);
               self->dev_->Write(lba * self->block_size_, bytes, data, fua, [self, t](Status ws) {
                 if (!ws.ok()) return self->Check(t, self->DeviceError(ws, true));
                 self->Good(t);
               });
             });
}

void LogicalUnit::ZeroRange(uint64_t offset, uint64_t len, bool may_trim, bool fua, const TaskPtr& t,
                            std::function<void(Status)> done) {
  if (len == 0) return done(Status::Ok());
  if (Aborted(t)) return done(Status::Ok());
  uint32_t chunk = uint32_t(std::min<uint64_t>(len, LuLimits::kDeviceChunkBytes));
  auto self = shared_from_this();
  dev_->WriteZeroes(offset, chunk, may_trim, fua,
                    [self, offset, len, chunk, may_trim, fua, t, done = std::move(done)](Status s) mutable {
                      if (!s.ok()) return done(s);
                      self->ZeroRange(offset + chunk, len - chunk, may_trim, fua, t, std::move(done));
                    });
}

void LogicalUnit::WriteSame(const TaskPtr& t, bool sixteen) {
  const uint8_t* cdb = t->cmd->cdb;
  uint64_t lba = sixteen ? Get64(cdb + 2) : Get32(cdb + 2);
  uint32_t n = sixteen ? Get32(cdb + 10) : Get16(cdb + 7);
  uint16_t len_byte = sixteen ? 10 : 7;
  bool unmap = cdb[1] & 0x08;
  bool ndob = sixteen && (cdb[1] & 0x01);
  if (cdb[1] & 0xe0) return Check(t, Sense::InvalidFieldInCdb(1, 7));
  if (cdb[1] & 0x10) return Check(t, Sense::InvalidFieldInCdb(1, 4));  // ANCHOR: ANC_SUP = 0
  if (!CheckWritable(t)) return;
  if (n == 0) return Check(t, Sense::InvalidFieldInCdb(len_byte));  // WSNZ = 1
  if (n > LuLimits::kMaxWriteSameBlocks) return Check(t, Sense::InvalidFieldInCdb(len_byte));
  if (!CheckRange(t, lba, n)) return;
  if (t->cmd->data_out.size() != (ndob ? 0 : block_size_)) return Check(t, ShortDataOut());
  const uint8_t* pattern = ndob ? nullptr : t->cmd->data_out.data();
  bool zero = ndob || std::all_of(pattern, pattern + block_size_, [](uint8_t b) { return b == 0; });
  bool fua = !wce_.load(std::memory_order_relaxed);
  auto self = shared_from_this();
  auto finish = [self, t](Status s) {
    if (!s.ok()) return self->Check(t, self->DeviceError(s, true));
    self->Good(t);
  };
  if (zero) return ZeroRange(lba * block_size_, uint64_t(n) * block_size_, unmap, fua, t, finish);
  // A non-zero pattern: fill one buffer of up to kOptimalTransferBytes and
  // write it repeatedly, one device call at a time.
  uint32_t per = std::min<uint32_t>(n, LuLimits::kOptimalTransferBytes / block_size_);
  t->buf.resize(size_t(per) * block_size_);
  for (uint32_t i = 0; i < per; ++i) std::memcpy(&t->buf[size_t(i) * block_size_], pattern, block_size_);
  struct Loop {
    static void Step(std::shared_ptr<LogicalUnit> lu, TaskPtr t, uint64_t lba, uint32_t left, uint32_t per,
                     bool fua, std::function<void(Status)> fin) {
      if (left == 0 || lu->Aborted(t)) return fin(Status::Ok());
      uint32_t now = std::min(left, per);
      uint32_t bs = lu->block_size_;
      auto dev = lu->dev_;
      dev->Write(lba * bs, now * bs, reinterpret_cast<const char*>(t->buf.data()), fua,
                 [lu, t, lba, left, per, now, fua, fin](Status s) {
                   if (!s.ok()) return fin(s);
                   Step(lu, t, lba + now, left - now, per, fua, fin);
                 });
    }
  };
  Loop::Step(self, t, lba, n, per, fua, finish);
}

void LogicalUnit::Unmap(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  if (cdb[1] & 0x01) return Check(t, Sense::InvalidFieldInCdb(1, 0));  // ANCHOR
  if (!CheckWritable(t)) return;
  size_t plen = Get16(cdb + 7);
  if (plen == 0) return Good(t);
  const DataBuffer& p = t->cmd->data_out;
  if (plen < 8 || p.size() < plen) return Check(t, Sense::ParamListLengthError());
  size_t bdl = Get16(&p[2]);
  if (bdl % 16 != 0 && bdl + 8 <= plen) return Check(t, Sense::ParamListLengthError());
  size_t count = std::min(bdl, plen - 8) / 16;
  if (count > LuLimits::kMaxUnmapDescriptors) return Check(t, Sense::InvalidFieldInParam(2));
  uint64_t cap = blocks_.load();
  uint64_t max_blocks = LuLimits::kMaxUnmapBlocks;
  struct Range { uint64_t lba, n; };
  auto ranges = std::make_shared<std::vector<Range>>();
  for (size_t i = 0; i < count; ++i) {
    const uint8_t* d = &p[8 + 16 * i];
    uint64_t lba = Get64(d);
    uint64_t n = Get32(d + 8);
    if (lba > cap || n > cap - lba) return Check(t, Sense::LbaOutOfRange());
    if (n > max_blocks) return Check(t, Sense::InvalidFieldInParam(uint16_t(8 + 16 * i + 8)));
    if (n) ranges->push_back({lba, n});
  }
  if (ranges->empty()) return Good(t);
  // Unmapped blocks must read back as zeros (LBPRZ = 1), so UNMAP is a
  // WRITE ZEROES that may deallocate, one range after the other.
  auto self = shared_from_this();
  struct Loop {
    static void Step(std::shared_ptr<LogicalUnit> lu, TaskPtr t, std::shared_ptr<std::vector<Range>> r, size_t i) {
      if (i == r->size()) return lu->Good(t);
      uint32_t bs = lu->block_size_;
      lu->ZeroRange((*r)[i].lba * bs, (*r)[i].n * bs, true, false, t, [lu, t, r, i](Status s) {
        if (!s.ok()) return lu->Check(t, lu->DeviceError(s, true));
        Step(lu, t, r, i + 1);
      });
    }
  };
  Loop::Step(self, t, ranges, 0);
}

void LogicalUnit::GetLbaStatus(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  uint64_t lba = Get64(cdb + 2);
  uint32_t alloc = Get32(cdb + 10);
  uint64_t cap = blocks_.load();
  if (lba >= cap) return Check(t, Sense::LbaOutOfRange());
  if (alloc == 0) return Good(t);
  uint32_t bs = block_size_;
  uint64_t want = std::min<uint64_t>(cap - lba, (4ull << 30) / bs);
  size_t max_desc = alloc > 8 ? std::max<size_t>(1, (alloc - 8) / 16) : 1;
  auto self = shared_from_this();
  dev_->Map(lba * bs, want * bs, [self, t, lba, want, alloc, max_desc, bs](Result<std::vector<blockdev::Extent>> r) {
    if (!r.ok()) return self->Check(t, self->DeviceError(r.status(), false));
    struct Desc { uint64_t lba, n; bool mapped; };
    std::vector<Desc> out;
    uint64_t pos = lba, end = lba + want;
    auto add = [&](uint64_t from, uint64_t to, bool mapped) {
      if (to <= from) return;
      if (!out.empty() && out.back().mapped == mapped && out.back().lba + out.back().n == from) {
        out.back().n += to - from;
      } else {
        out.push_back({from, to - from, mapped});
      }
    };
    std::vector<blockdev::Extent> ext = std::move(r.value());
    std::sort(ext.begin(), ext.end(), [](const auto& a, const auto& b) { return a.offset < b.offset; });
    for (const auto& e : ext) {
      // Partial blocks count as mapped: round allocated extents outwards and
      // holes inwards.
      uint64_t s = e.allocated ? e.offset / bs : (e.offset + bs - 1) / bs;
      uint64_t f = e.allocated ? (e.offset + e.length + bs - 1) / bs : (e.offset + e.length) / bs;
      s = std::max(s, pos);
      f = std::min(f, end);
      if (f <= s) continue;
      add(pos, s, true);  // gaps in the map count as mapped
      add(s, f, e.allocated);
      pos = f;
    }
    add(pos, end, true);
    std::vector<uint8_t> d(8, 0);
    for (const Desc& x : out) {
      uint64_t at = x.lba, left = x.n;
      while (left > 0 && (d.size() - 8) / 16 < max_desc) {
        uint32_t now = uint32_t(std::min<uint64_t>(left, 0xffffffffull));
        uint8_t desc[16] = {0};
        Put64(desc, at);
        Put32(desc + 8, now);
        desc[12] = x.mapped ? 0 : 1;
        d.insert(d.end(), desc, desc + 16);
        at += now;
        left -= now;
      }
    }
    Put32(&d[0], uint32_t(d.size() - 4));
    if (d.size() > alloc) d.resize(alloc);
    self->Good(t, std::move(d));
  });
}

void LogicalUnit::SyncCache(const TaskPtr& t, bool sixteen) {
  const uint8_t* cdb = t->cmd->cdb;
  uint64_t lba = sixteen ? Get64(cdb + 2) : Get32(cdb + 2);
  uint64_t n = sixteen ? Get32(cdb + 10) : Get16(cdb + 7);
  if (!CheckRange(t, lba, n)) return;
  auto self = shared_from_this();
  dev_->Flush([self, t](Status s) {
    if (!s.ok()) return self->Check(t, self->DeviceError(s, true));
    self->Good(t);
  });
}

void LogicalUnit::Prefetch(const TaskPtr& t, bool sixteen) {
  // Nothing is cached here, so the blocks are not "fetched": GOOD, not
  // CONDITION MET (SBC-3 5.9), once the range is valid.
  const uint8_t* cdb = t->cmd->cdb;
  uint64_t lba = sixteen ? Get64(cdb + 2) : Get32(cdb + 2);
  uint64_t n = sixteen ? Get32(cdb + 10) : Get16(cdb + 7);
  if (!CheckRange(t, lba, n)) return;
  Good(t);
}

void LogicalUnit::ReadDefectData(const TaskPtr& t, bool twelve) {
  // No defects: an empty list in the requested format.
  const uint8_t* cdb = t->cmd->cdb;
  uint8_t flags = twelve ? cdb[1] : cdb[2];
  uint32_t alloc = twelve ? Get32(cdb + 6) : Get16(cdb + 7);
  std::vector<uint8_t> d(twelve ? 8 : 4, 0);
  d[1] = flags & 0x1f;  // echo PLISTV/GLISTV and the format: both lists present, empty
  if (d.size() > alloc) d.resize(alloc);
  Good(t, std::move(d));
}

void LogicalUnit::OrWrite(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  if (cdb[1] & 0xe0) return Check(t, Sense::InvalidFieldInCdb(1, 7));
  uint64_t lba = Get64(cdb + 2);
  uint32_t n = Get32(cdb + 10);
  if (!CheckWritable(t)) return;
  if (!CheckRange(t, lba, n)) return;
  if (n == 0) return Good(t);
  if (uint64_t(n) * block_size_ > LuLimits::kMaxTransferBytes) return Check(t, Sense::InvalidFieldInCdb(10));
  uint32_t bytes = n * block_size_;
  if (!CheckDataOut(t, bytes)) return;
  bool fua = (cdb[1] & 0x08) || !wce_.load(std::memory_order_relaxed);
  t->buf.resize(bytes);
  auto self = shared_from_this();
  // Runs alone in the task set, like COMPARE AND WRITE.
  dev_->Read(lba * block_size_, bytes, reinterpret_cast<char*>(t->buf.data()),
             [self, t, lba, bytes, fua](Status s) {
               if (!s.ok()) return self->Check(t, self->DeviceError(s, false));
               if (self->Aborted(t)) return self->Retire(t);
               const uint8_t* in = t->cmd->data_out.data();
               for (uint32_t i = 0; i < bytes; ++i) t->buf[i] |= in[i];
               self->dev_->Write(lba * self->block_size_, bytes, reinterpret_cast<const char*>(t->buf.data()), fua,
                                 [self, t](Status ws) {
                                   if (!ws.ok()) return self->Check(t, self->DeviceError(ws, true));
                                   self->Good(t);
                                 });
             });
}

}  // namespace ferry::scsi
