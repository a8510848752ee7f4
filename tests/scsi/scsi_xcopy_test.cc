// EXTENDED COPY (LID1) and RECEIVE COPY RESULTS inside one LU.
#include "tests/scsi/harness.h"

#include "target/scsi/logical_unit.h"

namespace ferry::scsi::testing {
namespace {

std::vector<uint8_t> Naa(Harness& h) {
  auto r = h.Run(h.a, {0x12, 1, 0x83, 0, 255, 0});
  return std::vector<uint8_t>(r.data_in.begin() + 8, r.data_in.begin() + 24);
}

std::vector<uint8_t> Cscd(const std::vector<uint8_t>& naa, uint8_t type = 0xe4) {
  std::vector<uint8_t> d(32, 0);
  d[0] = type; d[4] = 1; d[5] = 3; d[7] = 16;
  std::copy(naa.begin(), naa.end(), d.begin() + 8);
  Put24(&d[29], 512);
  return d;
}

std::vector<uint8_t> Segment(uint16_t src, uint16_t dst, uint16_t n, uint64_t src_lba, uint64_t dst_lba) {
  std::vector<uint8_t> d(28, 0);
  d[0] = 0x02; Put16(&d[2], 24); Put16(&d[4], src); Put16(&d[6], dst); Put16(&d[10], n);
  Put64(&d[12], src_lba); Put64(&d[20], dst_lba);
  return d;
}

std::vector<uint8_t> Params(uint8_t list_id, uint8_t usage, const std::vector<std::vector<uint8_t>>& cscds,
                            const std::vector<std::vector<uint8_t>>& segs) {
  std::vector<uint8_t> p(16, 0);
  p[0] = list_id; p[1] = uint8_t(usage << 3);
  size_t tl = 0, sl = 0;
  for (auto& c : cscds) { p.insert(p.end(), c.begin(), c.end()); tl += c.size(); }
  for (auto& s : segs) { p.insert(p.end(), s.begin(), s.end()); sl += s.size(); }
  Put16(&p[2], uint16_t(tl));
  Put32(&p[8], uint32_t(sl));
  return p;
}

std::vector<uint8_t> XcopyCdb(size_t len) {
  std::vector<uint8_t> c(16, 0);
  c[0] = 0x83; Put32(&c[10], uint32_t(len));
  return c;
}

std::vector<uint8_t> RcrCdb(uint8_t sa, uint8_t list_id) {
  std::vector<uint8_t> c(16, 0);
  c[0] = 0x84; c[1] = sa; c[2] = list_id; Put32(&c[10], 1024);
  return c;
}

TEST(ScsiXcopy, CopiesInsideTheLunAndReportsStatus) {
  Harness h;
  h.ClearAll();
  auto naa = Naa(h);
  std::vector<uint8_t> data = Pattern(2100 * 512, 9);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2a, 0, 0, 2048), std::vector<uint8_t>(data.begin(), data.begin() + 2048 * 512)));
  // Nothing held yet for list 5.
  EXPECT_SENSE(h.Run(h.a, RcrCdb(0, 5)), 5, 0x24, 0);
  auto p = Params(5, 0, {Cscd(naa)}, {Segment(0, 0, 1000, 0, 1000)});
  EXPECT_GOOD(h.Run(h.a, XcopyCdb(p.size()), p));
  EXPECT_EQ(h.dev->Bytes(1000 * 512, 1000 * 512), std::vector<uint8_t>(data.begin(), data.begin() + 1000 * 512));
  auto r = h.Run(h.a, RcrCdb(0, 5));
  EXPECT_GOOD(r);
  ASSERT_EQ(r.data_in.size(), 12u);
  EXPECT_EQ(r.data_in[4] & 0x7f, 1);      // completed without errors
  EXPECT_EQ(Get16(&r.data_in[5]), 1);     // one segment
  EXPECT_EQ(Get32(&r.data_in[8]), 500u);  // 500 KiB
  EXPECT_SENSE(h.Run(h.b, RcrCdb(0, 5)), 5, 0x24, 0);  // per nexus
  // Operating parameters.
  r = h.Run(h.a, RcrCdb(3, 0));
  EXPECT_EQ(Get16(&r.data_in[8]), LuLimits::kXcopyMaxCscds);
  EXPECT_EQ(Get16(&r.data_in[10]), LuLimits::kXcopyMaxSegments);
  EXPECT_EQ(r.data_in[43], 2);
  EXPECT_GOOD(h.Run(h.a, XcopyCdb(0)));  // empty parameter list
}

TEST(ScsiXcopy, Errors) {
  Harness h;
  h.ClearAll();
  auto naa = Naa(h);
  auto other = naa;
  other[15] ^= 1;
  auto run = [&](const std::vector<uint8_t>& p) { return h.Run(h.a, XcopyCdb(p.size()), p); };
  // Another LU's designator, or an index past the list: COPY ABORTED, UNREACHABLE COPY TARGET.
  EXPECT_SENSE(run(Params(1, 2, {Cscd(other)}, {Segment(0, 0, 1, 0, 1)})), 0x0a, 0x08, 0x04);
  EXPECT_SENSE(run(Params(1, 2, {Cscd(naa)}, {Segment(0, 1, 1, 0, 1)})), 0x0a, 0x08, 0x04);
  // Beyond the end of the LU.
  EXPECT_SENSE(run(Params(1, 2, {Cscd(naa)}, {Segment(0, 0, 8, 0, 2044)})), 0x0a, 0, 0);
  // Unsupported descriptor codes, too many descriptors.
  EXPECT_SENSE(run(Params(1, 2, {Cscd(naa, 0xe0)}, {Segment(0, 0, 1, 0, 1)})), 5, 0x26, 0x07);
  auto seg = Segment(0, 0, 1, 0, 1);
  seg[0] = 0x01;
  EXPECT_SENSE(run(Params(1, 2, {Cscd(naa)}, {seg})), 5, 0x26, 0x09);
  std::vector<std::vector<uint8_t>> many_c(LuLimits::kXcopyMaxCscds + 1, Cscd(naa));
  EXPECT_SENSE(run(Params(1, 2, many_c, {Segment(0, 0, 1, 0, 1)})), 5, 0x26, 0x06);
  std::vector<std::vector<uint8_t>> many_s(LuLimits::kXcopyMaxSegments + 1, Segment(0, 0, 1, 0, 1));
  EXPECT_SENSE(run(Params(1, 2, {Cscd(naa)}, many_s)), 5, 0x26, 0x08);
  // Truncated lists.
  auto p = Params(1, 2, {Cscd(naa)}, {Segment(0, 0, 1, 0, 1)});
  p.resize(p.size() - 1);
  EXPECT_SENSE(run(p), 5, 0x1a, 0);
  // Read-only LU refuses to be a destination.
  LunIdentity ro = Id("ro");
  ro.read_only = true;
  ASSERT_TRUE(h.target.AddLun(4, std::make_shared<RamDevice>(1 << 20), ro).ok());
  h.ClearUa(h.a, 4);
  auto naa4 = [&] {
    auto r = h.Run(h.a, {0x12, 1, 0x83, 0, 255, 0}, {}, 4);
    return std::vector<uint8_t>(r.data_in.begin() + 8, r.data_in.begin() + 24);
  }();
  p = Params(1, 2, {Cscd(naa4)}, {Segment(0, 0, 1, 0, 1)});
  EXPECT_SENSE(h.Run(h.a, XcopyCdb(p.size()), p, 4), 7, 0x27, 0);
}

}  // namespace
}  // namespace ferry::scsi::testing
