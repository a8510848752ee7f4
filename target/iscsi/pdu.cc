#include "target/iscsi/pdu.h"

#include "target/iscsi/crc32c.h"

namespace ferry::iscsi {

uint64_t DecodeLun(uint64_t field) {
  uint8_t b0 = uint8_t(field >> 56), b1 = uint8_t(field >> 48);
  bool rest_zero = (field & 0x0000ffffffffffffull) == 0;
  if (rest_zero) {
    if ((b0 >> 6) == 0 && (b0 & 0x3f) == 0) return b1;      // peripheral, bus 0
    if ((b0 >> 6) == 1) return uint64_t(b0 & 0x3f) << 8 | b1;  // flat space
  }
  return field;  // another addressing method: passed through (no such LUN)
}

uint64_t EncodeLun(uint64_t lun) {
  if (lun < 256) return lun << 48;
  if (lun < 16384) return (uint64_t(0x40 | (lun >> 8)) << 56) | (uint64_t(lun & 0xff) << 48);
  return lun;  // already a raw field
}

PduFramer::PduFramer(size_t initial_capacity) : buf_(initial_capacity) {}

uint8_t* PduFramer::Buffer(size_t min_free, size_t* avail) {
  if (buf_.size() - end_ < min_free) {
    // Compact first; grow only if that is not enough.
    if (start_ > 0) {
      std::memmove(buf_.data(), buf_.data() + start_, end_ - start_);
      end_ -= start_;
      start_ = 0;
    }
    if (buf_.size() - end_ < min_free) buf_.resize(end_ + min_free);
  }
  *avail = buf_.size() - end_;
  return buf_.data() + end_;
}

void PduFramer::Feed(const uint8_t* p, size_t n) {
  size_t avail;
  uint8_t* dst = Buffer(n, &avail);
  std::memcpy(dst, p, n);
  Commit(n);
}

PduFramer::Result PduFramer::Next(PduView* out) {
  if (!error_.empty()) return Result::kError;
  size_t have = end_ - start_;
  if (have < kBhsLen) {
    if (have == 0) start_ = end_ = 0;
    return Result::kNeedMore;
  }
  const uint8_t* p = buf_.data() + start_;
  BhsView h(p);
  size_t ahs_len = size_t(h.total_ahs_len()) * 4;
  size_t hd = limits_.header_digest ? 4 : 0;
  size_t dlen = h.data_len();
  if (dlen > limits_.max_data_len) {
    error_ = "data segment of " + std::to_string(dlen) + " bytes exceeds MaxRecvDataSegmentLength " +
             std::to_string(limits_.max_data_len);
    return Result::kError;
  }
  size_t dd = (limits_.data_digest && dlen > 0) ? 4 : 0;
  size_t total = kBhsLen + ahs_len + hd + Pad4(dlen) + dd;
  if (have < total) {
    // Make sure the whole PDU will fit in the buffer.
    if (buf_.size() - start_ < total) {
      std::memmove(buf_.data(), buf_.data() + start_, have);
      start_ = 0;
      end_ = have;
      if (buf_.size() < total) buf_.resize(total);
    }
    return Result::kNeedMore;
  }
  if (hd) {
    uint32_t want = Crc32c(p, kBhsLen + ahs_len);
    const uint8_t* d = p + kBhsLen + ahs_len;
    uint32_t got = uint32_t(d[0]) | uint32_t(d[1]) << 8 | uint32_t(d[2]) << 16 | uint32_t(d[3]) << 24;
    if (want != got) {
      error_ = "header digest mismatch";
      return Result::kError;
    }
  }
  out->bhs = p;
  out->ahs = ahs_len ? p + kBhsLen : nullptr;
  out->ahs_len = ahs_len;
  out->data = p + kBhsLen + ahs_len + hd;
  out->data_len = dlen;
  out->data_digest_error = false;
  if (dd) {
    uint32_t want = Crc32c(out->data, Pad4(dlen));
    const uint8_t* d = out->data + Pad4(dlen);
    uint32_t got = uint32_t(d[0]) | uint32_t(d[1]) << 8 | uint32_t(d[2]) << 16 | uint32_t(d[3]) << 24;
    out->data_digest_error = want != got;
  }
  start_ += total;
  return Result::kPdu;
}

std::vector<uint8_t> Encode(const OutPdu& p, bool header_digest, bool data_digest) {
  std::vector<uint8_t> v(p.bhs, p.bhs + kBhsLen);
  auto put_le = [&v](uint32_t c) {
    for (int i = 0; i < 4; ++i) v.push_back(uint8_t(c >> (8 * i)));
  };
  if (header_digest) put_le(Crc32c(p.bhs, kBhsLen));
  if (p.data_len) {
    v.insert(v.end(), p.data, p.data + p.data_len);
    v.resize(v.size() + Pad4(p.data_len) - p.data_len, 0);
    if (data_digest) {
      size_t off = v.size() - Pad4(p.data_len);
      put_le(Crc32c(v.data() + off, Pad4(p.data_len)));
    }
  }
  return v;
}

}  // namespace ferry::iscsi
