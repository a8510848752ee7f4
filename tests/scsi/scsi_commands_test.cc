// Commands through scsi::Target over a RAM device: happy paths and their
// sense errors (SPC-4 / SBC-3).
#include "tests/scsi/harness.h"

#include "target/scsi/logical_unit.h"

namespace ferry::scsi::testing {
namespace {

const std::vector<uint8_t> kTur = {0, 0, 0, 0, 0, 0};

std::vector<uint8_t> Inquiry(bool evpd, uint8_t page, uint16_t alloc = 255) {
  std::vector<uint8_t> c = {0x12, uint8_t(evpd), page, 0, 0, 0};
  Put16(&c[3], alloc);
  return c;
}

TEST(ScsiSpc, InquiryStandardData) {
  Harness h;
  auto r = h.Run(h.a, Inquiry(false, 0));
  EXPECT_GOOD(r);
  ASSERT_EQ(r.data_in.size(), 96u);
  EXPECT_EQ(r.data_in[0], 0x00);  // block device, connected
  EXPECT_EQ(r.data_in[2], 0x06);  // SPC-4
  EXPECT_EQ(r.data_in[3] & 0x0f, 2);
  EXPECT_EQ(r.data_in[4], 91);
  EXPECT_EQ(std::string(r.data_in.begin() + 8, r.data_in.begin() + 16), "FERRY   ");
  EXPECT_TRUE(r.data_in[7] & 0x02);  // CMDQUE
  // Allocation length truncates.
  EXPECT_EQ(h.Run(h.a, Inquiry(false, 0, 5)).data_in.size(), 5u);
  // Page code without EVPD, CMDDT, unknown VPD page.
  auto bad = h.Run(h.a, Inquiry(false, 0x80));
  EXPECT_SENSE(bad, 5, 0x24, 0);
  ASSERT_GE(bad.sense.size(), 18u);
  EXPECT_EQ(bad.sense[15], 0xc0);  // SKSV, C/D = CDB, no bit pointer
  EXPECT_EQ(Get16(&bad.sense[16]), 2);
  EXPECT_SENSE(h.Run(h.a, {0x12, 0x02, 0, 0, 255, 0}), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, Inquiry(true, 0x42)), 5, 0x24, 0);
}

TEST(ScsiSpc, VpdPages) {
  Harness h;
  auto r = h.Run(h.a, Inquiry(true, 0x00));
  EXPECT_GOOD(r);
  EXPECT_EQ(std::vector<uint8_t>(r.data_in.begin() + 4, r.data_in.end()),
            (std::vector<uint8_t>{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}));
  r = h.Run(h.a, Inquiry(true, 0x80));
  EXPECT_GOOD(r);
  EXPECT_EQ(Get16(&r.data_in[2]) + 4u, r.data_in.size());
  EXPECT_GT(r.data_in.size(), 4u);

  r = h.Run(h.a, Inquiry(true, 0x83));
  EXPECT_GOOD(r);
  ASSERT_GE(r.data_in.size(), 24u);
  // First designator: binary NAA, 16 bytes, NAA 6.
  EXPECT_EQ(r.data_in[4], 0x01);
  EXPECT_EQ(r.data_in[5], 0x03);
  EXPECT_EQ(r.data_in[7], 16);
  EXPECT_EQ(r.data_in[8] >> 4, 6);
  std::vector<uint8_t> naa(r.data_in.begin() + 8, r.data_in.begin() + 24);
  // Walk designators: find relative target port (type 4) and target port name (type 8, assoc 1).
  bool rtp = false, port_name = false, dev_name = false;
  for (size_t off = 4; off + 4 <= r.data_in.size();) {
    uint8_t type = r.data_in[off + 1] & 0x0f, assoc = (r.data_in[off + 1] >> 4) & 3;
    size_t len = r.data_in[off + 3];
    if (type == 4 && assoc == 1) rtp = Get16(&r.data_in[off + 6]) == 1;
    if (type == 8 && assoc == 1)
      port_name = std::string(reinterpret_cast<const char*>(&r.data_in[off + 4])) == "iqn.2026-11.io.ferry:tgt,t,0x1";
    if (type == 8 && assoc == 2) dev_name = true;
    off += 4 + len;
  }
  EXPECT_TRUE(rtp);
  EXPECT_TRUE(port_name);
  EXPECT_TRUE(dev_name);

  // The NAA id is stable per volume name and differs between volumes.
  Harness h2;
  auto r2 = h2.Run(h2.a, Inquiry(true, 0x83));
  EXPECT_EQ(std::vector<uint8_t>(r2.data_in.begin() + 8, r2.data_in.begin() + 24), naa);
  auto dev2 = std::make_shared<RamDevice>(1 << 20);
  ASSERT_TRUE(h.target.AddLun(1, dev2, Id("volume-1")).ok());
  auto r3 = h.Run(h.a, Inquiry(true, 0x83), {}, 1);
  EXPECT_NE(std::vector<uint8_t>(r3.data_in.begin() + 8, r3.data_in.begin() + 24), naa);
  EXPECT_EQ(h.target.Luns().size(), 2u);

  r = h.Run(h.a, Inquiry(true, 0xb0));
  EXPECT_GOOD(r);
  ASSERT_EQ(r.data_in.size(), 64u);
  EXPECT_EQ(Get16(&r.data_in[2]), 0x3c);
  EXPECT_EQ(r.data_in[5], LuLimits::kMaxCompareAndWriteBlocks);
  EXPECT_EQ(Get32(&r.data_in[8]), LuLimits::kMaxTransferBytes / 512);
  EXPECT_EQ(Get32(&r.data_in[24]), LuLimits::kMaxUnmapDescriptors);
  r = h.Run(h.a, Inquiry(true, 0xb1));
  EXPECT_EQ(Get16(&r.data_in[4]), 1);  // non-rotating
  r = h.Run(h.a, Inquiry(true, 0xb2));
  EXPECT_EQ(r.data_in[5] & 0xe4, 0xe4);  // LBPU LBPWS LBPWS10 LBPRZ
}

TEST(ScsiSpc, UnitAttentionLifecycle) {
  Harness h;
  // INQUIRY does not consume the POWER ON unit attention; TUR reports it once.
  EXPECT_GOOD(h.Run(h.a, Inquiry(false, 0)));
  EXPECT_SENSE(h.Run(h.a, kTur), 6, 0x29, 0x00);
  EXPECT_GOOD(h.Run(h.a, kTur));
  // REQUEST SENSE returns (and clears) it for b, in descriptor format if asked.
  auto rs = h.Run(h.b, {0x03, 0x01, 0, 0, 252, 0});
  EXPECT_GOOD(rs);
  auto st = ParseSense(rs.data_in);
  EXPECT_TRUE(st.descriptor);
  EXPECT_EQ(st.key, 6);
  EXPECT_EQ(st.asc, 0x29);
  EXPECT_GOOD(h.Run(h.b, kTur));
  rs = h.Run(h.b, {0x03, 0, 0, 0, 252, 0});
  EXPECT_EQ(ParseSense(rs.data_in).key, 0);  // NO SENSE now
  // A nexus that reconnects gets POWER ON again.
  h.target.NexusLost(*h.a);
  h.target.NexusAdded(*h.a);
  EXPECT_SENSE(h.Run(h.a, kTur), 6, 0x29, 0x00);
}

TEST(ScsiSpc, CapacityChangedAfterResize) {
  Harness h;
  h.ClearAll();
  h.dev->Resize(2 << 20);
  ASSERT_TRUE(h.target.NotifyCapacityChanged(0).ok());
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 0, 1)), 6, 0x2a, 0x09);
  EXPECT_SENSE(h.Run(h.b, kTur), 6, 0x2a, 0x09);
  std::vector<uint8_t> rc16(16, 0);
  rc16[0] = 0x9e; rc16[1] = 0x10; rc16[13] = 32;
  auto r = h.Run(h.a, rc16);
  EXPECT_GOOD(r);
  EXPECT_EQ(Get64(&r.data_in[0]), (2u << 20) / 512 - 1);
  EXPECT_EQ(h.target.NotifyCapacityChanged(9).code(), Status::Code::kNotFound);
}

TEST(ScsiSpc, ReportLunsAndLunChanges) {
  Harness h;
  h.ClearAll();
  std::vector<uint8_t> rl(12, 0);
  rl[0] = 0xa0; Put32(&rl[6], 4096);
  auto r = h.Run(h.a, rl);
  EXPECT_GOOD(r);
  EXPECT_EQ(Get32(&r.data_in[0]), 8u);
  ASSERT_TRUE(h.target.AddLun(300, std::make_shared<RamDevice>(1 << 20), Id("v300")).ok());
  EXPECT_EQ(h.target.AddLun(300, std::make_shared<RamDevice>(1 << 20), Id("x")).code(),
            Status::Code::kAlreadyExists);
  EXPECT_EQ(h.target.AddLun(5, std::make_shared<RamDevice>(1000), Id("x")).code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(h.target.AddLun(20000, std::make_shared<RamDevice>(4096), Id("x")).code(),
            Status::Code::kInvalidArgument);
  // LUN 0 reports REPORTED LUNS DATA HAS CHANGED to b; REPORT LUNS clears it for a.
  r = h.Run(h.a, rl);
  EXPECT_EQ(Get32(&r.data_in[0]), 16u);
  EXPECT_EQ(r.data_in[16], 0x41);  // flat space addressing for 300
  EXPECT_EQ(r.data_in[17], 300 & 0xff);
  EXPECT_GOOD(h.Run(h.a, kTur));
  EXPECT_SENSE(h.Run(h.b, kTur), 6, 0x3f, 0x0e);
  // The new LUN greets known nexuses with POWER ON.
  EXPECT_SENSE(h.Run(h.b, kTur, {}, 300), 6, 0x29, 0x00);
  ASSERT_TRUE(h.target.RemoveLun(300).ok());
  EXPECT_EQ(h.target.RemoveLun(300).code(), Status::Code::kNotFound);
  EXPECT_SENSE(h.Run(h.c, kTur), 6, 0x3f, 0x0e);
  // Select report: well known only / all / invalid.
  rl[2] = 0x01;
  r = h.Run(h.a, rl);
  ASSERT_EQ(r.data_in.size(), 16u);
  EXPECT_EQ(r.data_in[8], 0xc1);
  rl[2] = 0x02;
  EXPECT_EQ(Get32(&h.Run(h.a, rl).data_in[0]), 16u);
  rl[2] = 0x07;
  EXPECT_SENSE(h.Run(h.a, rl), 5, 0x24, 0);
}

TEST(ScsiSpc, AbsentLun) {
  Harness h;
  auto r = h.Run(h.a, Inquiry(false, 0), {}, 7);
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in[0], 0x7f);
  EXPECT_SENSE(h.Run(h.a, kTur, {}, 7), 5, 0x25, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 0, 1), {}, 7), 5, 0x25, 0);
  r = h.Run(h.a, {0x03, 0, 0, 0, 18, 0}, {}, 7);
  EXPECT_EQ(ParseSense(r.data_in).asc, 0x25);
}

TEST(ScsiSpc, InvalidOpcodeAndNaca) {
  Harness h;
  h.ClearAll();
  EXPECT_SENSE(h.Run(h.a, {0xd7, 0, 0, 0, 0, 0}), 5, 0x20, 0);
  EXPECT_SENSE(h.Run(h.a, {0x00, 0, 0, 0, 0, 0x04}), 5, 0x24, 0);
  std::vector<uint8_t> si(16, 0);
  si[0] = 0x9e; si[1] = 0x1f;
  EXPECT_SENSE(h.Run(h.a, si), 5, 0x24, 0);
}

TEST(ScsiSbc, ReadWriteAllSizes) {
  Harness h;
  h.ClearAll();
  auto data = Pattern(4 * 512, 3);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2a, 0, 10, 4), data));
  EXPECT_EQ(h.dev->Bytes(10 * 512, 4 * 512), data);
  auto r = h.Run(h.a, Cdb10(0x28, 0, 10, 4));
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in, data);
  // READ/WRITE 6 (0 blocks = 256).
  auto d6 = Pattern(512, 9);
  EXPECT_GOOD(h.Run(h.a, {0x0a, 0, 0, 20, 1, 0}, d6));
  r = h.Run(h.a, {0x08, 0, 0, 20, 1, 0});
  EXPECT_EQ(r.data_in, d6);
  EXPECT_EQ(h.Run(h.a, {0x08, 0, 0, 0, 0, 0}).data_in.size(), 256u * 512);
  // 12 and 16, FUA passed through.
  EXPECT_GOOD(h.Run(h.a, Cdb12(0xaa, 0x08, 30, 1), d6));
  EXPECT_TRUE(h.dev->last_fua);
  EXPECT_GOOD(h.Run(h.a, Cdb16(0x8a, 0, 31, 1), d6));
  EXPECT_FALSE(h.dev->last_fua);
  EXPECT_EQ(h.Run(h.a, Cdb16(0x88, 0x08, 30, 2)).data_in, [&] {
    auto v = d6; v.insert(v.end(), d6.begin(), d6.end()); return v; }());
  EXPECT_EQ(h.Run(h.a, Cdb12(0xa8, 0, 31, 1)).data_in, d6);
  // WRITE AND VERIFY writes durably.
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2e, 0x02, 40, 1), d6));
  EXPECT_TRUE(h.dev->last_fua);
  EXPECT_EQ(h.dev->Bytes(40 * 512, 512), d6);
  // Zero-length transfers are fine.
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x28, 0, 0, 0)));
}

TEST(ScsiSbc, ReadWriteErrors) {
  Harness h;  // 2048 blocks
  h.ClearAll();
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 2047, 2)), 5, 0x21, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb16(0x88, 0, ~0ull, 1)), 5, 0x21, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2a, 0, 2048, 1), Pattern(512, 1)), 5, 0x21, 0);
  auto r = h.Run(h.a, Cdb10(0x28, 0x20, 0, 1));  // RDPROTECT
  EXPECT_SENSE(r, 5, 0x24, 0);
  EXPECT_EQ(r.sense[15], 0xc8 | 7);  // SKSV, C/D, BPV, bit 7
  EXPECT_EQ(Get16(&r.sense[16]), 1);
  Harness big(64 << 20);
  big.ClearAll();
  EXPECT_SENSE(big.Run(big.a, Cdb10(0x28, 0, 0, 0xffff)), 5, 0x24, 0);  // > max transfer
  // Data-Out shorter than the transfer length: only the whole blocks that
  // arrived are written; the transfer length is reported for the residual.
  h.dev->Fill(0, 1024, 0xaa);
  r = h.Run(h.a, Cdb10(0x2a, 0, 0, 2), Pattern(512, 1));
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_out_length, 1024);
  EXPECT_EQ(h.dev->Bytes(0, 512), Pattern(512, 1));
  EXPECT_EQ(h.dev->Bytes(512, 512), std::vector<uint8_t>(512, 0xaa));
  r = h.Run(h.a, Cdb10(0x2a, 0, 1, 1), Pattern(200, 1));  // not even one block
  EXPECT_GOOD(r);
  EXPECT_EQ(h.dev->Bytes(512, 512), std::vector<uint8_t>(512, 0xaa));
  // More Data-Out than needed: only the transfer length is written.
  auto more = Pattern(1024, 5);
  r = h.Run(h.a, Cdb10(0x2a, 0, 0, 1), more);
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_out_length, 512);
  EXPECT_EQ(h.dev->Bytes(512, 512), std::vector<uint8_t>(512, 0xaa));
}

TEST(ScsiSbc, DeviceErrorsMapToSense) {
  Harness h;
  h.ClearAll();
  h.dev->FailNext(Status::IoError("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 0, 1)), 3, 0x11, 0);
  h.dev->FailNext(Status::IoError("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 0)), 3, 0x0c, 0);
  h.dev->FailNext(Status::NoSpace("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 0)), 7, 0x27, 0x07);
  h.dev->FailNext(Status::Fenced("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 0)), 7, 0x27, 0x00);
  h.dev->FailNext(Status::Timeout("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 0, 1)), 2, 0x04, 0x0c);
  h.dev->FailNext(Status::Unavailable("x"));
  EXPECT_SENSE(h.Run(h.a, {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}), 2, 0x04, 0x0c);
  h.dev->FailNext(Status::InvalidArgument("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 0, 1)), 5, 0x21, 0);
  h.dev->FailNext(Status::Internal("x"));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x28, 0, 0, 1)), 4, 0x44, 0);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x28, 0, 0, 1)));
}

TEST(ScsiSbc, ReadOnlyLun) {
  Harness h;
  ASSERT_TRUE(h.target.AddLun(2, std::make_shared<RamDevice>(1 << 20, 512, true), Id("ro")).ok());
  h.ClearUa(h.a, 2);
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 0), 2), 7, 0x27, 0);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x28, 0, 0, 1), {}, 2));
  auto r = h.Run(h.a, {0x1a, 0x08, 0x3f, 0, 255, 0}, {}, 2);
  EXPECT_TRUE(r.data_in[2] & 0x80);  // WP
  LunIdentity id = Id("ro2");
  id.read_only = true;
  ASSERT_TRUE(h.target.AddLun(3, std::make_shared<RamDevice>(1 << 20), id).ok());
  h.ClearUa(h.a, 3);
  EXPECT_SENSE(h.Run(h.a, Cdb16(0x93, 0x08, 0, 1), Pattern(512, 0), 3), 7, 0x27, 0);
}

TEST(ScsiSbc, ReadCapacity) {
  Harness h(1 << 20, 4096);
  h.ClearAll();
  auto r = h.Run(h.a, {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0});
  EXPECT_GOOD(r);
  EXPECT_EQ(Get32(&r.data_in[0]), 255u);
  EXPECT_EQ(Get32(&r.data_in[4]), 4096u);
  EXPECT_SENSE(h.Run(h.a, {0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0}), 5, 0x24, 0);
  std::vector<uint8_t> rc16(16, 0);
  rc16[0] = 0x9e; rc16[1] = 0x10; rc16[13] = 32;
  r = h.Run(h.a, rc16);
  EXPECT_EQ(r.data_in.size(), 32u);
  EXPECT_EQ(r.data_in[14] & 0xc0, 0xc0);  // LBPME LBPRZ
  rc16[13] = 8;
  EXPECT_EQ(h.Run(h.a, rc16).data_in.size(), 8u);
}

TEST(ScsiSbc, CompareAndWrite) {
  Harness h;
  h.ClearAll();
  auto old = Pattern(1024, 1), neu = Pattern(1024, 77);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2a, 0, 100, 2), old));
  std::vector<uint8_t> caw(16, 0);
  caw[0] = 0x89; Put64(&caw[2], 100); caw[13] = 2;
  auto buf = old;
  buf.insert(buf.end(), neu.begin(), neu.end());
  EXPECT_GOOD(h.Run(h.a, caw, buf));
  EXPECT_EQ(h.dev->Bytes(100 * 512, 1024), neu);
  // Now the verify half no longer matches: MISCOMPARE at the first differing byte.
  auto verify = neu;
  verify[700] ^= 0xff;
  buf = verify;
  buf.insert(buf.end(), old.begin(), old.end());
  auto r = h.Run(h.a, caw, buf);
  EXPECT_SENSE(r, 0x0e, 0x1d, 0);
  EXPECT_TRUE(r.sense[0] & 0x80);  // VALID
  EXPECT_EQ(Get32(&r.sense[3]), 700u);
  EXPECT_EQ(h.dev->Bytes(100 * 512, 1024), neu);  // nothing written
  // Descriptor format carries the offset in an information descriptor.
  std::vector<uint8_t> ms = {0x1a, 0x08, 0x0a, 0, 255, 0};
  auto cur = h.Run(h.a, ms).data_in;
  std::vector<uint8_t> sel = {0, 0, 0, 0};
  sel.insert(sel.end(), cur.begin() + 4, cur.end());
  sel[4 + 2] |= 0x04;  // D_SENSE
  EXPECT_GOOD(h.Run(h.a, {0x15, 0x10, 0, 0, uint8_t(sel.size()), 0}, sel));
  r = h.Run(h.a, caw, buf);
  auto st = ParseSense(r.sense);
  EXPECT_TRUE(st.descriptor);
  EXPECT_EQ(st.key, 0x0e);
  ASSERT_GE(r.sense.size(), 20u);
  EXPECT_EQ(r.sense[8], 0x00);  // information descriptor
  EXPECT_EQ(Get64(&r.sense[12]), 700u);
  // Errors: too short, too long, out of range, zero blocks.
  EXPECT_SENSE(h.Run(h.a, caw, old), 5, 0x0e, 0x03);
  caw[13] = 0;
  EXPECT_GOOD(h.Run(h.a, caw));
  caw[13] = 1;
  Put64(&caw[2], 2048);
  EXPECT_SENSE(h.Run(h.a, caw, Pattern(1024, 0)), 5, 0x21, 0);
}

TEST(ScsiSbc, CompareAndWriteIsAtomicAgainstWrites) {
  Harness h;
  h.ClearAll();
  h.dev->SetDeferred(true);
  // A write is in flight; COMPARE AND WRITE must not read before it lands.
  auto w = h.Start(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 5));
  std::vector<uint8_t> caw(16, 0);
  caw[0] = 0x89; caw[13] = 1;
  auto buf = Pattern(512, 5);
  auto nw = Pattern(512, 99);
  buf.insert(buf.end(), nw.begin(), nw.end());
  auto c = h.Start(h.b, caw, buf);
  auto later = h.Start(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 42));  // must wait for the CAW
  EXPECT_EQ(h.dev->PendingCount(), 1u);  // only the first write reached the device
  h.dev->RunPending();
  ASSERT_EQ(w->calls, 1);
  ASSERT_EQ(c->calls, 1);
  ASSERT_EQ(later->calls, 1);
  EXPECT_GOOD(*c->result);  // it compared against the first write's data
  EXPECT_EQ(h.dev->Bytes(0, 512), Pattern(512, 42));
}

TEST(ScsiSbc, WriteSameAndGetLbaStatus) {
  Harness h;
  h.ClearAll();
  h.dev->Fill(0, 64 * 512, 0x11);
  auto gls = [&](uint64_t lba) {
    std::vector<uint8_t> c(16, 0);
    c[0] = 0x9e; c[1] = 0x12; Put64(&c[2], lba); Put32(&c[10], 1024);
    return h.Run(h.a, c);
  };
  // WRITE SAME 16 with UNMAP and zero data deallocates.
  EXPECT_GOOD(h.Run(h.a, Cdb16(0x93, 0x08, 8, 8), std::vector<uint8_t>(512, 0)));
  EXPECT_TRUE(h.dev->last_may_trim);
  EXPECT_EQ(h.dev->Bytes(8 * 512, 8 * 512), std::vector<uint8_t>(8 * 512, 0));
  auto r = gls(0);
  EXPECT_GOOD(r);
  ASSERT_GE(r.data_in.size(), 8u + 3 * 16);
  EXPECT_EQ(Get64(&r.data_in[8]), 0u);
  EXPECT_EQ(Get32(&r.data_in[16]), 8u);
  EXPECT_EQ(r.data_in[20], 0);  // mapped
  EXPECT_EQ(Get64(&r.data_in[24]), 8u);
  EXPECT_EQ(Get32(&r.data_in[32]), 8u);
  EXPECT_EQ(r.data_in[36], 1);  // deallocated
  EXPECT_EQ(Get64(&r.data_in[40]), 16u);
  EXPECT_EQ(r.data_in[52], 0);
  // A start inside a hole: the first descriptor starts at the requested LBA.
  r = gls(10);
  EXPECT_EQ(Get64(&r.data_in[8]), 10u);
  EXPECT_EQ(Get32(&r.data_in[16]), 6u);
  EXPECT_EQ(r.data_in[20], 1);
  EXPECT_SENSE(gls(2048), 5, 0x21, 0);
  // WRITE SAME 10 with a pattern fills every block.
  auto pat = Pattern(512, 33);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x41, 0, 100, 5), pat));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(h.dev->Bytes((100 + i) * 512, 512), pat);
  // NDOB writes zeros without a Data-Out buffer.
  EXPECT_GOOD(h.Run(h.a, Cdb16(0x93, 0x01, 100, 2)));
  EXPECT_EQ(h.dev->Bytes(100 * 512, 1024), std::vector<uint8_t>(1024, 0));
  EXPECT_EQ(h.dev->Bytes(102 * 512, 512), pat);
  // Errors: zero blocks (WSNZ), ANCHOR, out of range, missing data.
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x41, 0, 0, 0), pat), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb16(0x93, 0x10, 0, 1), pat), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb16(0x93, 0, 2047, 2), pat), 5, 0x21, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb16(0x93, 0, 0, 2)), 5, 0x0e, 0x03);
}

// SBC-4 WRITE SAME: written or unmapped, later reads behave as if the Data-Out
// block had been written. So UNMAP = 1 unmaps zero blocks (LBPRZ = 1) and
// writes any other pattern.
// (libiscsi 1.19's WriteSame10.UnmapUntilEnd sends 0xFF with UNMAP and wants
// zeros back; it only runs with WSNZ = 0, which is one reason WSNZ stays 1.)
TEST(ScsiSbc, WriteSameUnmapWithNonZeroPatternWritesIt) {
  Harness h;
  h.ClearAll();
  h.dev->Fill(0, 64 * 512, 0x11);
  std::vector<uint8_t> ff(512, 0xff);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x41, 0x08, 20, 4), ff));
  for (int i = 20; i < 24; ++i) EXPECT_EQ(h.dev->Bytes(uint64_t(i) * 512, 512), ff) << i;
  EXPECT_EQ(h.dev->Bytes(24 * 512, 512), std::vector<uint8_t>(512, 0x11));
  EXPECT_GOOD(h.Run(h.a, Cdb16(0x93, 0x08, 30, 2), ff));
  EXPECT_EQ(h.dev->Bytes(30 * 512, 1024), std::vector<uint8_t>(1024, 0xff));
  // Zero data with UNMAP is unmapped (may_trim) and reads as zeros.
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x41, 0x08, 20, 4), std::vector<uint8_t>(512, 0)));
  EXPECT_TRUE(h.dev->last_may_trim);
  EXPECT_EQ(h.dev->Bytes(20 * 512, 4 * 512), std::vector<uint8_t>(4 * 512, 0));
  // WSNZ = 1: zero blocks is an invalid field, in both CDB sizes.
  auto bl = h.Run(h.a, {0x12, 0x01, 0xb0, 0, 64, 0});
  ASSERT_GE(bl.data_in.size(), 8u);
  EXPECT_EQ(bl.data_in[4] & 0x01, 1);
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x41, 0x08, 100, 0), ff), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, Cdb16(0x93, 0, 100, 0), ff), 5, 0x24, 0);
}

std::vector<uint8_t> UnmapList(const std::vector<std::pair<uint64_t, uint32_t>>& ranges) {
  std::vector<uint8_t> p(8 + 16 * ranges.size(), 0);
  Put16(&p[0], uint16_t(p.size() - 2));
  Put16(&p[2], uint16_t(16 * ranges.size()));
  for (size_t i = 0; i < ranges.size(); ++i) {
    Put64(&p[8 + 16 * i], ranges[i].first);
    Put32(&p[8 + 16 * i + 8], ranges[i].second);
  }
  return p;
}

TEST(ScsiSbc, Unmap) {
  Harness h;
  h.ClearAll();
  h.dev->Fill(0, 100 * 512, 0x5a);
  auto p = UnmapList({{1, 2}, {10, 5}});
  std::vector<uint8_t> cdb = {0x42, 0, 0, 0, 0, 0, 0, 0, uint8_t(p.size()), 0};
  EXPECT_GOOD(h.Run(h.a, cdb, p));
  EXPECT_EQ(h.dev->Bytes(512, 1024), std::vector<uint8_t>(1024, 0));
  EXPECT_EQ(h.dev->Bytes(10 * 512, 5 * 512), std::vector<uint8_t>(5 * 512, 0));
  EXPECT_EQ(h.dev->Bytes(3 * 512, 512), std::vector<uint8_t>(512, 0x5a));
  // Out of range, too many descriptors, short list, ANCHOR.
  p = UnmapList({{2040, 9}});
  cdb[8] = uint8_t(p.size());
  EXPECT_SENSE(h.Run(h.a, cdb, p), 5, 0x21, 0);
  std::vector<std::pair<uint64_t, uint32_t>> many(LuLimits::kMaxUnmapDescriptors + 1, {0, 1});
  p = UnmapList(many);
  Put16(&cdb[7], uint16_t(p.size()));
  EXPECT_SENSE(h.Run(h.a, cdb, p), 5, 0x26, 0);
  cdb[7] = 0; cdb[8] = 4;
  EXPECT_SENSE(h.Run(h.a, cdb, {0, 0, 0, 0}), 5, 0x1a, 0);
  EXPECT_SENSE(h.Run(h.a, {0x42, 1, 0, 0, 0, 0, 0, 0, 0, 0}), 5, 0x24, 0);
  EXPECT_GOOD(h.Run(h.a, {0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
}

TEST(ScsiSbc, VerifyBytchk) {
  Harness h;
  h.ClearAll();
  auto d = Pattern(1024, 4);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2a, 0, 50, 2), d));
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2f, 0, 50, 2)));  // BYTCHK 0
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2f, 0x02, 50, 2), d));  // BYTCHK 1
  auto bad = d;
  bad[600] ^= 1;
  auto r = h.Run(h.a, Cdb16(0x8f, 0x02, 50, 2), bad);
  EXPECT_SENSE(r, 0x0e, 0x1d, 0);
  EXPECT_EQ(Get32(&r.sense[3]), 600u);
  // BYTCHK 3: one block compared against each block.
  h.dev->Fill(60 * 512, 3 * 512, 0x77);
  EXPECT_GOOD(h.Run(h.a, Cdb12(0xaf, 0x06, 60, 3), std::vector<uint8_t>(512, 0x77)));
  r = h.Run(h.a, Cdb12(0xaf, 0x06, 59, 3), std::vector<uint8_t>(512, 0x77));
  EXPECT_SENSE(r, 0x0e, 0x1d, 0);
  EXPECT_EQ(Get32(&r.sense[3]), 0u);
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2f, 0x04, 50, 1), d), 5, 0x24, 0);  // BYTCHK 2
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2f, 0, 2048, 1)), 5, 0x21, 0);
}

TEST(ScsiSbc, SyncCacheStartStopPrevent) {
  Harness h;
  h.ClearAll();
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x35, 0, 0, 0)));
  EXPECT_EQ(h.dev->flushes, 1);
  EXPECT_GOOD(h.Run(h.a, Cdb16(0x91, 0x02, 10, 10)));
  EXPECT_EQ(h.dev->flushes, 2);
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x35, 0, 2040, 10)), 5, 0x21, 0);
  EXPECT_GOOD(h.Run(h.a, {0x1b, 0, 0, 0, 0x00, 0}));  // stop: flushes
  EXPECT_EQ(h.dev->flushes, 3);
  EXPECT_GOOD(h.Run(h.a, {0x1b, 0, 0, 0, 0x01, 0}));
  EXPECT_GOOD(h.Run(h.a, {0x1e, 0, 0, 0, 0x01, 0}));
  EXPECT_GOOD(h.Run(h.a, {0x1e, 0, 0, 0, 0x00, 0}));
}

std::vector<uint8_t> ModeSense10(uint8_t pc_page, uint16_t alloc = 1024, uint8_t b1 = 0x08) {
  std::vector<uint8_t> c(10, 0);
  c[0] = 0x5a; c[1] = b1; c[2] = pc_page; Put16(&c[7], alloc);
  return c;
}

TEST(ScsiSpc, ModeSenseSelect) {
  Harness h;
  h.ClearAll();
  // All pages, current values, with a block descriptor (MODE SENSE 6).
  auto r = h.Run(h.a, {0x1a, 0, 0x3f, 0, 255, 0});
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in[0] + 1u, r.data_in.size());
  EXPECT_EQ(r.data_in[2] & 0x10, 0x10);  // DPOFUA
  EXPECT_EQ(r.data_in[3], 8);
  EXPECT_EQ(Get32(&r.data_in[4]), 2048u);
  EXPECT_EQ(Get24(&r.data_in[9]), 512u);
  std::vector<uint8_t> codes;
  for (size_t off = 12; off < r.data_in.size(); off += r.data_in[off + 1] + 2) codes.push_back(r.data_in[off] & 0x3f);
  EXPECT_EQ(codes, (std::vector<uint8_t>{0x01, 0x08, 0x0a, 0x1c}));
  // Long LBA block descriptor in MODE SENSE 10.
  r = h.Run(h.a, ModeSense10(0x08, 1024, 0x10));
  EXPECT_EQ(r.data_in[4] & 1, 1);
  EXPECT_EQ(Get16(&r.data_in[6]), 16);
  EXPECT_EQ(Get64(&r.data_in[8]), 2048u);
  // Changeable values: WCE only in the caching page.
  r = h.Run(h.a, ModeSense10(0x40 | 0x08));
  EXPECT_EQ(r.data_in[8 + 2], 0x04);
  // Default vs saved.
  EXPECT_GOOD(h.Run(h.a, ModeSense10(0x80 | 0x08)));
  EXPECT_SENSE(h.Run(h.a, ModeSense10(0xc0 | 0x08)), 5, 0x39, 0);
  EXPECT_SENSE(h.Run(h.a, ModeSense10(0x05)), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, {0x1a, 0, 0x08, 0x01, 255, 0}), 5, 0x24, 0);

  // Turn the write cache off: writes become FUA; b sees MODE PARAMETERS CHANGED.
  r = h.Run(h.a, ModeSense10(0x08));
  std::vector<uint8_t> sel(r.data_in.begin(), r.data_in.end());
  sel[0] = sel[1] = 0;
  sel[8 + 2] &= ~0x04;
  std::vector<uint8_t> cdb(10, 0);
  cdb[0] = 0x55; cdb[1] = 0x10; Put16(&cdb[7], uint16_t(sel.size()));
  EXPECT_GOOD(h.Run(h.a, cdb, sel));
  EXPECT_EQ(h.Run(h.a, ModeSense10(0x08)).data_in[8 + 2] & 0x04, 0);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 0)));
  EXPECT_TRUE(h.dev->last_fua);
  EXPECT_SENSE(h.Run(h.b, kTur), 6, 0x2a, 0x01);
  EXPECT_GOOD(h.Run(h.a, kTur));
  // Changing a bit that is not changeable: INVALID FIELD IN PARAMETER LIST at that byte.
  sel[8 + 3] = 0x01;
  r = h.Run(h.a, cdb, sel);
  EXPECT_SENSE(r, 5, 0x26, 0);
  EXPECT_EQ(r.sense[15] & 0x40, 0);  // C/D = parameter list
  EXPECT_EQ(Get16(&r.sense[16]), 11);
  // Wrong page length, unknown page, SP, short list.
  sel[8 + 3] = 0;
  sel[8 + 1] = 0x10;
  EXPECT_SENSE(h.Run(h.a, cdb, sel), 5, 0x26, 0);
  sel[8 + 1] = 0x12;
  sel[8] = 0x05;
  EXPECT_SENSE(h.Run(h.a, cdb, sel), 5, 0x26, 0);
  sel[8] = 0x08;
  cdb[1] = 0x11;
  EXPECT_SENSE(h.Run(h.a, cdb, sel), 5, 0x24, 0);
  cdb[1] = 0x10;
  EXPECT_SENSE(h.Run(h.a, cdb, std::vector<uint8_t>(sel.begin(), sel.begin() + 10)), 5, 0x1a, 0);
  // Informational exceptions: MRIE 7 is invalid, 6 accepted.
  r = h.Run(h.a, ModeSense10(0x1c));
  std::vector<uint8_t> ie(r.data_in.begin(), r.data_in.end());
  ie[0] = ie[1] = 0;
  ie[8 + 3] = 7;
  Put16(&cdb[7], uint16_t(ie.size()));
  EXPECT_SENSE(h.Run(h.a, cdb, ie), 5, 0x26, 0);
  ie[8 + 3] = 6;
  EXPECT_GOOD(h.Run(h.a, cdb, ie));
  EXPECT_EQ(h.Run(h.a, ModeSense10(0x1c)).data_in[8 + 3], 6);
}

TEST(ScsiSpc, SoftwareWriteProtect) {
  Harness h;
  h.ClearAll();
  auto r = h.Run(h.a, {0x1a, 0x08, 0x0a, 0, 255, 0});
  std::vector<uint8_t> sel = {0, 0, 0, 0};
  sel.insert(sel.end(), r.data_in.begin() + 4, r.data_in.end());
  sel[4 + 4] |= 0x08;  // SWP
  EXPECT_GOOD(h.Run(h.a, {0x15, 0x10, 0, 0, uint8_t(sel.size()), 0}, sel));
  EXPECT_SENSE(h.Run(h.a, Cdb10(0x2a, 0, 0, 1), Pattern(512, 0)), 7, 0x27, 0x02);
  EXPECT_TRUE(h.Run(h.a, {0x1a, 0x08, 0x0a, 0, 255, 0}).data_in[2] & 0x80);
  EXPECT_GOOD(h.Run(h.a, Cdb10(0x28, 0, 0, 1)));
}

TEST(ScsiSpc, ReportSupportedOpcodes) {
  Harness h;
  h.ClearAll();
  auto rsoc = [](uint8_t opts, uint8_t op, uint16_t sa, uint32_t alloc = 8192) {
    std::vector<uint8_t> c(12, 0);
    c[0] = 0xa3; c[1] = 0x0c; c[2] = opts; c[3] = op; Put16(&c[4], sa); Put32(&c[6], alloc);
    return c;
  };
  auto r = h.Run(h.a, rsoc(0, 0, 0));
  EXPECT_GOOD(r);
  size_t n = Get32(&r.data_in[0]) / 8;
  EXPECT_EQ(n * 8 + 4, r.data_in.size());
  bool read10 = false, prout_clear = false;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* d = &r.data_in[4 + 8 * i];
    if (d[0] == 0x28) read10 = Get16(d + 6) == 10 && !(d[5] & 1);
    if (d[0] == 0x5f && Get16(d + 2) == 3) prout_clear = d[5] & 1;
  }
  EXPECT_TRUE(read10);
  EXPECT_TRUE(prout_clear);
  // With timeouts descriptors: 20 bytes each.
  r = h.Run(h.a, rsoc(0x80, 0, 0));
  EXPECT_EQ(Get32(&r.data_in[0]) % 20, 0u);
  // One command.
  r = h.Run(h.a, rsoc(1, 0x88, 0));
  EXPECT_GOOD(r);
  EXPECT_EQ(r.data_in[1] & 7, 3);
  EXPECT_EQ(Get16(&r.data_in[2]), 16);
  EXPECT_EQ(r.data_in[4], 0x88);
  EXPECT_EQ(r.data_in.size(), 20u);
  r = h.Run(h.a, rsoc(0x81, 0x88, 0));
  EXPECT_EQ(r.data_in.size(), 32u);
  EXPECT_TRUE(r.data_in[1] & 0x80);
  r = h.Run(h.a, rsoc(1, 0xd7, 0));
  EXPECT_EQ(r.data_in[1] & 7, 1);  // not supported
  EXPECT_SENSE(h.Run(h.a, rsoc(1, 0x5f, 0)), 5, 0x24, 0);  // has service actions
  r = h.Run(h.a, rsoc(2, 0x5f, 3));
  EXPECT_EQ(r.data_in[1] & 7, 3);
  EXPECT_EQ(Get16(&r.data_in[2]), 10);
  r = h.Run(h.a, rsoc(2, 0x9e, 0x10));
  EXPECT_EQ(r.data_in[1] & 7, 3);
  r = h.Run(h.a, rsoc(2, 0x9e, 0x11));
  EXPECT_EQ(r.data_in[1] & 7, 1);
  EXPECT_SENSE(h.Run(h.a, rsoc(2, 0x28, 0)), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, rsoc(5, 0x28, 0)), 5, 0x24, 0);
  // REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS.
  std::vector<uint8_t> tmf(12, 0);
  tmf[0] = 0xa3; tmf[1] = 0x0d; Put32(&tmf[6], 4);
  r = h.Run(h.a, tmf);
  EXPECT_EQ(r.data_in[0], 0xda);
}

}  // namespace
}  // namespace ferry::scsi::testing
