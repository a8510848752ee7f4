// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.4 / 6.18) for
// copies inside one logical unit: identification-descriptor CSCDs (0xE4)
// naming this LU by its NAA designator, block-to-block segment descriptors
// (0x02). The data goes through the LU's BlockDevice, 1 MiB at a time.
#include <algorithm>
#include <cstring>

#include "target/scsi/cdb.h"
#include "target/scsi/logical_unit.h"

namespace ferry::scsi {

namespace {

constexpr size_t kHeaderLen = 16;
constexpr size_t kCscdLen = 32;
constexpr size_t kB2bSegmentLen = 28;

Sense CopyAborted(uint8_t asc, uint8_t ascq) { return Sense::Make(0x0a, asc, ascq); }

Sense ParamPointer(uint8_t asc, uint8_t ascq, size_t byte) {
  Sense s = Sense::Make(sk::kIllegalRequest, asc, ascq);
  s.has_sks = true;
  s.sks_cdb = false;
  s.sks_field = uint16_t(std::min<size_t>(byte, 0xffff));
  return s;
}

}  // namespace

struct LogicalUnit::CopyJob {
  struct Segment {
    uint64_t src_lba, dst_lba;
    uint32_t blocks;
  };
  std::vector<Segment> segments;
  size_t index = 0;       // current segment
  uint32_t done = 0;      // blocks of the current segment copied
  uint64_t bytes = 0;     // total copied
  bool hold = false;      // keep the result for RECEIVE COPY RESULTS
  uint8_t list_id = 0;
  std::string nexus_key;
};

void LogicalUnit::ExtendedCopy(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  if ((cdb[1] & 0x1f) != 0x00) return Check(t, Sense::InvalidFieldInCdb(1, 4));
  uint32_t plen = Get32(cdb + 10);
  if (plen == 0) return Good(t);
  const DataBuffer& p = t->cmd->data_out;
  if (p.size() < plen || plen < kHeaderLen) return Check(t, Sense::ParamListLengthError());
  uint8_t list_id = p[0];
  uint8_t usage = (p[1] >> 3) & 3;
  size_t tlen = Get16(&p[2]);
  size_t slen = Get32(&p[8]);
  size_t ilen = Get32(&p[12]);
  if (kHeaderLen + tlen + slen + ilen > plen) return Check(t, Sense::ParamListLengthError());
  if (tlen + slen > LuLimits::kXcopyMaxDescListBytes) return Check(t, Sense::ParamListLengthError());
  if (ilen != 0) return Check(t, Sense::InvalidFieldInParam(12));
  if (usage == 3 && list_id != 0) return Check(t, Sense::InvalidFieldInParam(0));
  if (tlen % kCscdLen != 0) return Check(t, Sense::ParamListLengthError());
  size_t ncscd = tlen / kCscdLen;
  if (ncscd > LuLimits::kXcopyMaxCscds) return Check(t, Sense::Make(sk::kIllegalRequest, 0x26, 0x06));
  std::vector<bool> local(ncscd, false);
  for (size_t i = 0; i < ncscd; ++i) {
    const uint8_t* d = &p[kHeaderLen + i * kCscdLen];
    if (d[0] != 0xe4) return Check(t, ParamPointer(0x26, 0x07, kHeaderLen + i * kCscdLen));
    uint8_t dtype = d[5] & 0x0f, dlen = d[7];
    uint32_t bs = Get24(d + 29);
    local[i] = dtype == 3 && dlen == 16 && std::memcmp(d + 8, naa_, 16) == 0 && (bs == 0 || bs == block_size_);
  }
  auto job = std::make_shared<CopyJob>();
  job->list_id = list_id;
  job->hold = usage == 0 || usage == 1;
  uint64_t cap = blocks_.load();
  size_t off = kHeaderLen + tlen, end = kHeaderLen + tlen + slen;
  size_t nseg = 0;
  while (off < end) {
    if (end - off < 4) return Check(t, Sense::ParamListLengthError());
    const uint8_t* d = &p[off];
    size_t len = size_t(Get16(d + 2)) + 4;
    if (++nseg > LuLimits::kXcopyMaxSegments) return Check(t, Sense::Make(sk::kIllegalRequest, 0x26, 0x08));
    if (d[0] != 0x02) return Check(t, ParamPointer(0x26, 0x09, off));
    if (len != kB2bSegmentLen || off + len > end) return Check(t, Sense::ParamListLengthError());
    uint16_t src = Get16(d + 4), dst = Get16(d + 6);
    if (src >= ncscd || dst >= ncscd || !local[src] || !local[dst])
      return Check(t, CopyAborted(0x08, 0x04));  // UNREACHABLE COPY TARGET
    CopyJob::Segment s{Get64(d + 12), Get64(d + 20), Get16(d + 10)};
    if (s.src_lba > cap || s.blocks > cap - s.src_lba || s.dst_lba > cap || s.blocks > cap - s.dst_lba) {
      Sense e = CopyAborted(0x00, 0x00);
      e.has_info = true;
      e.info = nseg - 1;  // the segment that could not be processed
      return Check(t, e);
    }
    if (s.blocks) job->segments.push_back(s);
    off += len;
  }
  if (!job->segments.empty() && !CheckWritable(t)) return;
  if (t->cmd->nexus) job->nexus_key = NexusIdOf(*t->cmd->nexus).Key();
  t->buf.resize(std::min<size_t>(LuLimits::kOptimalTransferBytes, size_t(0xffff) * block_size_));
  CopyStep(t, job);
}

void LogicalUnit::CopyStep(const TaskPtr& t, std::shared_ptr<CopyJob> job) {
  while (job->index < job->segments.size() && job->done == job->segments[job->index].blocks) {
    job->index++;
    job->done = 0;
  }
  if (job->index == job->segments.size() || Aborted(t)) {
    if (job->hold) {
      std::lock_guard<std::mutex> l(st_mu_);
      copy_results_[{job->nexus_key, job->list_id}] = CopyResult{uint16_t(job->segments.size()), job->bytes};
      while (copy_results_.size() > 64) copy_results_.erase(copy_results_.begin());
    }
    return Good(t);
  }
  const CopyJob::Segment& s = job->segments[job->index];
  uint32_t per = uint32_t(t->buf.size() / block_size_);
  uint32_t now = std::min(per, s.blocks - job->done);
  uint64_t src = (s.src_lba + job->done) * block_size_, dst = (s.dst_lba + job->done) * block_size_;
  uint32_t bytes = now * block_size_;
  bool fua = !wce_.load(std::memory_order_relaxed);
  auto self = shared_from_this();
  dev_->Read(src, bytes, reinterpret_cast<char*>(t->buf.data()), [self, t, job, dst, bytes, now, fua](Status s) {
    if (!s.ok()) return self->Check(t, self->DeviceError(s, false));
    if (self->Aborted(t)) return self->Retire(t);
    self->dev_->Write(dst, bytes, reinterpret_cast<const char*>(t->buf.data()), fua,
                      [self, t, job, bytes, now](Status ws) {
                        if (!ws.ok()) return self->Check(t, self->DeviceError(ws, true));
                        job->done += now;
                        job->bytes += bytes;
                        self->CopyStep(t, job);
                      });
  });
}

void LogicalUnit::ReceiveCopyResults(const TaskPtr& t) {
  const uint8_t* cdb = t->cmd->cdb;
  uint8_t sa = cdb[1] & 0x1f;
  uint32_t alloc = Get32(cdb + 10);
  std::vector<uint8_t> d;
  if (sa == 0x03) {  // OPERATING PARAMETERS
    d.assign(46, 0);
    Put32(&d[0], uint32_t(d.size() - 4));
    Put16(&d[8], LuLimits::kXcopyMaxCscds);
    Put16(&d[10], LuLimits::kXcopyMaxSegments);
    Put32(&d[12], LuLimits::kXcopyMaxDescListBytes);
    Put32(&d[16], 0xffffu * block_size_);  // what one block-to-block descriptor can ask for
    Put16(&d[34], 1);                      // total concurrent copies (per nexus, synchronous)
    d[36] = 1;
    d[37] = 0;                             // data segment granularity 2^0
    d[43] = 2;                             // implemented descriptor codes:
    d[44] = 0x02;                          //   block -> block
    d[45] = 0xe4;                          //   identification descriptor CSCD
  } else if (sa == 0x00) {  // COPY STATUS
    std::string key = t->cmd->nexus ? NexusIdOf(*t->cmd->nexus).Key() : std::string();
    std::optional<CopyResult> r;
    {
      std::lock_guard<std::mutex> l(st_mu_);
      auto it = copy_results_.find({key, cdb[2]});
      if (it != copy_results_.end()) r = it->second;
    }
    if (!r) return Check(t, Sense::InvalidFieldInCdb(2));
    d.assign(12, 0);
    Put32(&d[0], 8);
    d[4] = 0x01;  // completed without errors
    Put16(&d[5], r->segments);
    d[7] = 0x01;  // transfer count in KiB
    Put32(&d[8], uint32_t(std::min<uint64_t>(r->bytes / 1024, 0xffffffffu)));
  } else {
    return Check(t, Sense::InvalidFieldInCdb(1, 4));
  }
  if (d.size() > alloc) d.resize(alloc);
  Good(t, std::move(d));
}

}  // namespace ferry::scsi
