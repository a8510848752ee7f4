// Persistent reservations (SPC-4 5.13) and SPC-2 RESERVE/RELEASE across
// several I_T nexuses.
#include "tests/scsi/harness.h"

#include "target/scsi/persistent_reservations.h"

namespace ferry::scsi::testing {
namespace {

constexpr uint8_t kConflict = kStatusReservationConflict;
const std::vector<uint8_t> kTur = {0, 0, 0, 0, 0, 0};

std::vector<uint8_t> ProutCdb(uint8_t sa, uint8_t type = 0, uint32_t len = 24) {
  std::vector<uint8_t> c(10, 0);
  c[0] = 0x5f; c[1] = sa; c[2] = type; Put32(&c[5], len);
  return c;
}
std::vector<uint8_t> Params(uint64_t key, uint64_t sa_key, uint8_t flags = 0) {
  std::vector<uint8_t> p(24, 0);
  Put64(&p[0], key); Put64(&p[8], sa_key); p[20] = flags;
  return p;
}
std::vector<uint8_t> PrinCdb(uint8_t sa, uint16_t alloc = 4096) {
  std::vector<uint8_t> c(10, 0);
  c[0] = 0x5e; c[1] = sa; Put16(&c[7], alloc);
  return c;
}
std::vector<uint8_t> Read1() { return Cdb10(0x28, 0, 0, 1); }
std::vector<uint8_t> Write1() { return Cdb10(0x2a, 0, 0, 1); }

class PrTest : public ::testing::Test {
 protected:
  void SetUp() override { h.ClearAll(); }
  ScsiResult Out(const std::shared_ptr<Nexus>& n, uint8_t sa, uint8_t type, uint64_t key, uint64_t sa_key,
                 uint8_t flags = 0) {
    return h.Run(n, ProutCdb(sa, type), Params(key, sa_key, flags));
  }
  ScsiResult Register(const std::shared_ptr<Nexus>& n, uint64_t key) { return Out(n, 0, 0, 0, key); }
  // READ KEYS through b (the tests never leave a unit attention pending for b here).
  std::vector<uint64_t> Keys() {
    auto r = h.Run(h.b, PrinCdb(0));
    EXPECT_GOOD(r);
    std::vector<uint64_t> k;
    for (size_t i = 8; i + 8 <= r.data_in.size(); i += 8) k.push_back(Get64(&r.data_in[i]));
    return k;
  }
  uint8_t WriteStatus(const std::shared_ptr<Nexus>& n) { return h.Run(n, Write1(), Pattern(512, 1)).status; }
  uint8_t ReadStatus(const std::shared_ptr<Nexus>& n) { return h.Run(n, Read1()).status; }
  Harness h;
};

TEST_F(PrTest, RegisterReserveWriteExclusive) {
  EXPECT_GOOD(Register(h.a, 0xa));
  EXPECT_GOOD(Register(h.b, 0xb));
  auto r = h.Run(h.a, PrinCdb(0));
  EXPECT_EQ(Get32(&r.data_in[0]), 2u);  // generation
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{0xa, 0xb}));
  EXPECT_GOOD(Out(h.a, 1, 1, 0xa, 0));  // RESERVE, Write Exclusive
  EXPECT_GOOD(Out(h.a, 1, 1, 0xa, 0));  // again: no-op
  EXPECT_EQ(Out(h.a, 1, 3, 0xa, 0).status, kConflict);  // different type
  EXPECT_EQ(Out(h.b, 1, 1, 0xb, 0).status, kConflict);  // someone else holds it
  EXPECT_EQ(WriteStatus(h.b), kConflict);
  EXPECT_EQ(WriteStatus(h.c), kConflict);
  EXPECT_EQ(ReadStatus(h.b), kStatusGood);
  EXPECT_EQ(ReadStatus(h.c), kStatusGood);
  EXPECT_EQ(WriteStatus(h.a), kStatusGood);
  r = h.Run(h.b, PrinCdb(1));
  EXPECT_EQ(Get32(&r.data_in[4]), 16u);
  EXPECT_EQ(Get64(&r.data_in[8]), 0xau);
  EXPECT_EQ(r.data_in[21], 1);
  EXPECT_EQ(Get32(&r.data_in[0]), 2u);  // RESERVE does not bump the generation
  // RELEASE with the wrong type, by a non-holder, then properly.
  EXPECT_SENSE(Out(h.a, 2, 3, 0xa, 0), 5, 0x26, 0x04);
  EXPECT_GOOD(Out(h.b, 2, 1, 0xb, 0));  // not the holder: no effect
  EXPECT_EQ(WriteStatus(h.b), kConflict);
  EXPECT_GOOD(Out(h.a, 2, 1, 0xa, 0));
  EXPECT_EQ(WriteStatus(h.b), kStatusGood);
  EXPECT_EQ(h.Run(h.a, PrinCdb(1)).data_in.size(), 8u);
}

TEST_F(PrTest, ExclusiveAccessBlocksReads) {
  Register(h.a, 1);
  Register(h.b, 2);
  EXPECT_GOOD(Out(h.a, 1, 3, 1, 0));
  EXPECT_EQ(ReadStatus(h.b), kConflict);
  EXPECT_EQ(ReadStatus(h.c), kConflict);
  EXPECT_EQ(h.Run(h.b, {0x1a, 0, 0x3f, 0, 255, 0}).status, kConflict);  // MODE SENSE
  EXPECT_GOOD(h.Run(h.b, {0x12, 0, 0, 0, 36, 0}));
  EXPECT_GOOD(h.Run(h.b, kTur));
  EXPECT_GOOD(h.Run(h.b, {0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_GOOD(h.Run(h.b, PrinCdb(0)));
  EXPECT_EQ(ReadStatus(h.a), kStatusGood);
}

TEST_F(PrTest, RegistrantsOnlyAndHolderLeaving) {
  Register(h.a, 1);
  Register(h.b, 2);
  EXPECT_GOOD(Out(h.a, 1, 5, 1, 0));  // WERO
  EXPECT_EQ(WriteStatus(h.b), kStatusGood);
  EXPECT_EQ(WriteStatus(h.c), kConflict);
  EXPECT_EQ(ReadStatus(h.c), kStatusGood);
  // The holder unregisters: the reservation goes and b is told.
  EXPECT_GOOD(Out(h.a, 0, 0, 1, 0));
  EXPECT_SENSE(h.Run(h.b, kTur), 6, 0x2a, 0x04);
  EXPECT_EQ(WriteStatus(h.c), kStatusGood);
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{2}));
}

TEST_F(PrTest, AllRegistrants) {
  Register(h.a, 1);
  Register(h.b, 2);
  EXPECT_GOOD(Out(h.a, 1, 8, 1, 0));  // EAAR
  EXPECT_EQ(ReadStatus(h.b), kStatusGood);
  EXPECT_EQ(ReadStatus(h.c), kConflict);
  auto r = h.Run(h.a, PrinCdb(1));
  EXPECT_EQ(Get64(&r.data_in[8]), 0u);  // all-registrants: key 0
  EXPECT_EQ(r.data_in[21], 8);
  // The reservation stays while any registrant remains.
  EXPECT_GOOD(Out(h.a, 0, 0, 1, 0));
  EXPECT_EQ(ReadStatus(h.c), kConflict);
  EXPECT_GOOD(Out(h.b, 0, 0, 2, 0));
  EXPECT_EQ(ReadStatus(h.c), kStatusGood);
}

TEST_F(PrTest, Preempt) {
  Register(h.a, 0xa);
  Register(h.b, 0xb);
  EXPECT_GOOD(Out(h.a, 1, 1, 0xa, 0));
  EXPECT_GOOD(Out(h.b, 4, 3, 0xb, 0xa));  // PREEMPT a, take Exclusive Access
  EXPECT_SENSE(h.Run(h.a, kTur), 6, 0x2a, 0x05);  // REGISTRATIONS PREEMPTED
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{0xb}));
  auto r = h.Run(h.b, PrinCdb(1));
  EXPECT_EQ(Get64(&r.data_in[8]), 0xbu);
  EXPECT_EQ(r.data_in[21], 3);
  EXPECT_EQ(ReadStatus(h.a), kConflict);
  // a is no longer registered: anything but REGISTER conflicts.
  EXPECT_EQ(Out(h.a, 1, 1, 0xa, 0).status, kConflict);
  // Without a reservation PREEMPT only removes registrations; unknown key conflicts.
  EXPECT_GOOD(Out(h.b, 2, 3, 0xb, 0));
  Register(h.c, 0xc);
  EXPECT_EQ(Out(h.b, 4, 0, 0xb, 0x99).status, kConflict);
  EXPECT_SENSE(Out(h.b, 4, 0, 0xb, 0), 5, 0x26, 0);
  EXPECT_GOOD(Out(h.b, 4, 0, 0xb, 0xc));
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{0xb}));
  EXPECT_SENSE(h.Run(h.c, kTur), 6, 0x2a, 0x05);
}

TEST_F(PrTest, PreemptAndAbortAbortsTasks) {
  Register(h.a, 0xa);
  Register(h.b, 0xb);
  EXPECT_GOOD(Out(h.a, 1, 1, 0xa, 0));
  h.dev->SetDeferred(true);
  auto inflight = h.Start(h.a, Cdb10(0x28, 0, 5, 1), {}, 0, TaskAttr::kSimple, 77);
  auto other = h.Start(h.c, Cdb10(0x28, 0, 6, 1), {}, 0, TaskAttr::kSimple, 78);
  auto pa = h.Start(h.b, ProutCdb(5, 1), Params(0xb, 0xa));
  ASSERT_EQ(pa->calls, 1);  // PR OUT needs no device I/O
  EXPECT_GOOD(*pa->result);
  ASSERT_EQ(inflight->calls, 1);
  EXPECT_EQ(inflight->result->status, kStatusTaskAborted);
  EXPECT_EQ(other->calls, 0);
  h.dev->RunPending();
  EXPECT_EQ(inflight->calls, 1);  // never completed twice
  ASSERT_EQ(other->calls, 1);
  EXPECT_GOOD(*other->result);
  h.dev->SetDeferred(false);
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{0xb}));
}

TEST_F(PrTest, Clear) {
  Register(h.a, 1);
  Register(h.b, 2);
  Out(h.a, 1, 1, 1, 0);
  uint32_t gen = Get32(&h.Run(h.a, PrinCdb(0)).data_in[0]);
  EXPECT_EQ(Out(h.b, 3, 0, 9, 0).status, kConflict);  // wrong key
  EXPECT_GOOD(Out(h.b, 3, 0, 2, 0));
  EXPECT_SENSE(h.Run(h.a, kTur), 6, 0x2a, 0x03);
  EXPECT_TRUE(Keys().empty());
  EXPECT_EQ(Get32(&h.Run(h.a, PrinCdb(0)).data_in[0]), gen + 1);
  EXPECT_EQ(WriteStatus(h.c), kStatusGood);
}

TEST_F(PrTest, RegisterAndMoveAndReadFullStatus) {
  Register(h.a, 0xa);
  EXPECT_GOOD(Out(h.a, 1, 1, 0xa, 0));
  // Parameter list: key, SA key, UNREG, relative port 1, TransportID of c.
  std::vector<uint8_t> tid = MakeIscsiTransportId(h.c->initiator_port);
  std::vector<uint8_t> p(24, 0);
  Put64(&p[0], 0xa); Put64(&p[8], 0xc); p[17] = 0x02; Put16(&p[18], 1); Put32(&p[20], uint32_t(tid.size()));
  p.insert(p.end(), tid.begin(), tid.end());
  EXPECT_GOOD(h.Run(h.a, ProutCdb(7, 1, uint32_t(p.size())), p));
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{0xc}));
  EXPECT_EQ(WriteStatus(h.c), kStatusGood);
  EXPECT_EQ(WriteStatus(h.a), kConflict);
  Register(h.b, 0xb);
  auto r = h.Run(h.b, PrinCdb(3));
  EXPECT_GOOD(r);
  ASSERT_GE(r.data_in.size(), 8u);
  std::vector<std::string> ports;
  int holders = 0;
  for (size_t off = 8; off + 24 <= r.data_in.size();) {
    const uint8_t* d = &r.data_in[off];
    uint32_t add = Get32(d + 20);
    if (d[12] & 1) {
      holders++;
      EXPECT_EQ(Get64(d), 0xcu);
      EXPECT_EQ(d[13], 1);
    }
    EXPECT_EQ(Get16(d + 18), 1);
    EXPECT_EQ(d[24] & 0x0f, 5);     // iSCSI
    EXPECT_EQ(d[24] >> 6, 1);       // format 01: name,i,0xISID
    ports.push_back(reinterpret_cast<const char*>(d + 28));
    off += 24 + add;
  }
  EXPECT_EQ(holders, 1);
  EXPECT_EQ(ports, (std::vector<std::string>{h.c->initiator_port, h.b->initiator_port}));
  // Moving to oneself, or without being the holder, is refused.
  EXPECT_EQ(h.Run(h.b, ProutCdb(7, 1, uint32_t(p.size())), [&] {
    auto q = p; Put64(&q[0], 0xb); return q; }()).status, kConflict);
  auto self_tid = MakeIscsiTransportId(h.c->initiator_port);
  auto q = p;
  Put64(&q[0], 0xc);
  EXPECT_SENSE(h.Run(h.c, ProutCdb(7, 1, uint32_t(q.size())), q), 5, 0x26, 0);
}

TEST_F(PrTest, Errors) {
  EXPECT_EQ(Out(h.a, 0, 0, 5, 6).status, kConflict);  // REGISTER with a key while unregistered
  EXPECT_GOOD(Out(h.a, 6, 0, 0x77, 0x10));            // REGISTER AND IGNORE EXISTING KEY
  EXPECT_EQ(Keys(), (std::vector<uint64_t>{0x10}));
  EXPECT_EQ(Out(h.a, 0, 0, 0x11, 0x12).status, kConflict);  // wrong key
  EXPECT_GOOD(Out(h.a, 0, 0, 0x10, 0x12));                  // change key
  EXPECT_EQ(Out(h.b, 1, 1, 0, 0).status, kConflict);         // RESERVE unregistered
  EXPECT_SENSE(Out(h.a, 0, 0, 0x12, 0x13, 0x01), 5, 0x26, 0);  // APTPL refused
  EXPECT_SENSE(Out(h.a, 0, 0, 0x12, 0x13, 0x08), 5, 0x26, 0);  // SPEC_I_PT refused
  EXPECT_SENSE(Out(h.a, 1, 2, 0x12, 0), 5, 0x24, 0);           // bad type
  EXPECT_SENSE(Out(h.a, 1, 0x21, 0x12, 0), 5, 0x24, 0);        // bad scope
  EXPECT_SENSE(h.Run(h.a, ProutCdb(0, 0, 20), std::vector<uint8_t>(20, 0)), 5, 0x1a, 0);
  EXPECT_SENSE(h.Run(h.a, ProutCdb(0, 0, 24), std::vector<uint8_t>(10, 0)), 5, 0x1a, 0);
  EXPECT_SENSE(h.Run(h.a, ProutCdb(9, 0)), 5, 0x24, 0);
  EXPECT_SENSE(h.Run(h.a, PrinCdb(7)), 5, 0x24, 0);
  auto r = h.Run(h.a, PrinCdb(2));  // REPORT CAPABILITIES
  EXPECT_GOOD(r);
  EXPECT_EQ(Get16(&r.data_in[0]), 8);
  EXPECT_EQ(r.data_in[2] & 0x01, 0);  // PTPL_C
  EXPECT_EQ(r.data_in[4], 0xea);
  EXPECT_EQ(r.data_in[5], 0x01);
  // Allocation length truncates PR IN data.
  EXPECT_EQ(h.Run(h.a, PrinCdb(0, 4)).data_in.size(), 4u);
}

TEST_F(PrTest, TransportIdParsing) {
  size_t used = 0;
  auto tid = MakeIscsiTransportId("iqn.x:y,i,0x1234");
  auto s = ParseIscsiTransportId(tid.data(), tid.size(), &used);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(*s, "iqn.x:y,i,0x1234");
  EXPECT_EQ(used, tid.size());
  auto bad = tid;
  bad[0] = 0x41;  // wrong protocol
  EXPECT_FALSE(ParseIscsiTransportId(bad.data(), bad.size(), &used));
  bad = tid;
  std::fill(bad.begin() + 4, bad.end(), 'x');  // no terminator
  EXPECT_FALSE(ParseIscsiTransportId(bad.data(), bad.size(), &used));
  EXPECT_FALSE(ParseIscsiTransportId(tid.data(), 10, &used));
}

TEST_F(PrTest, Spc2ReserveRelease) {
  EXPECT_GOOD(h.Run(h.a, {0x16, 0, 0, 0, 0, 0}));
  EXPECT_EQ(h.Run(h.b, kTur).status, kConflict);
  EXPECT_EQ(ReadStatus(h.b), kConflict);
  EXPECT_GOOD(h.Run(h.b, {0x12, 0, 0, 0, 36, 0}));
  EXPECT_EQ(h.Run(h.b, {0x16, 0, 0, 0, 0, 0}).status, kConflict);
  EXPECT_GOOD(h.Run(h.b, {0x17, 0, 0, 0, 0, 0}));  // RELEASE by a non-holder: no effect
  EXPECT_EQ(ReadStatus(h.b), kConflict);
  EXPECT_EQ(h.Run(h.b, PrinCdb(0)).status, kConflict);
  EXPECT_GOOD(h.Run(h.a, {0x17, 0, 0, 0, 0, 0}));
  EXPECT_EQ(ReadStatus(h.b), kStatusGood);
  // RESERVE(10); lost on I_T nexus loss.
  EXPECT_GOOD(h.Run(h.a, {0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(ReadStatus(h.c), kConflict);
  EXPECT_SENSE(h.Run(h.a, {0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0}), 5, 0x24, 0);  // third party
  h.target.NexusLost(*h.a);
  EXPECT_EQ(ReadStatus(h.c), kStatusGood);
  // And on LUN reset.
  EXPECT_GOOD(h.Run(h.b, {0x16, 0, 0, 0, 0, 0}));
  EXPECT_EQ(h.target.LunReset(*h.c, 0), TmfResult::kComplete);
  h.ClearUa(h.c);
  EXPECT_EQ(ReadStatus(h.c), kStatusGood);
  // With persistent registrations, RESERVE from a non-holder conflicts.
  h.ClearUa(h.b);
  Register(h.b, 5);
  EXPECT_EQ(h.Run(h.c, {0x16, 0, 0, 0, 0, 0}).status, kConflict);
  EXPECT_EQ(h.Run(h.b, {0x16, 0, 0, 0, 0, 0}).status, kConflict);  // registered, not holder
  Out(h.b, 1, 1, 5, 0);
  EXPECT_GOOD(h.Run(h.b, {0x16, 0, 0, 0, 0, 0}));  // CRH: the holder gets GOOD
  EXPECT_GOOD(h.Run(h.b, {0x17, 0, 0, 0, 0, 0}));
  EXPECT_EQ(h.Run(h.b, PrinCdb(1)).data_in.size(), 24u);  // PR untouched
  EXPECT_EQ(h.Run(h.c, {0x17, 0, 0, 0, 0, 0}).status, kConflict);
}

}  // namespace
}  // namespace ferry::scsi::testing
