// Unit tests of the socket-free parts of the iSCSI transport: CRC32C, the PDU
// framer, LUN encoding, text keys and negotiation, CHAP, the login machine,
// the CmdSN window, Data-In segmentation and R2T planning.
#include <gtest/gtest.h>

#include <random>

#include "target/iscsi/chap.h"
#include "target/iscsi/crc32c.h"
#include "target/iscsi/datapath.h"
#include "target/iscsi/login.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/text_keys.h"
#include "tests/iscsi/ram_lun.h"
#include "tests/iscsi/test_directory.h"

namespace ferry::iscsi {
namespace {

// ------------------------------------------------------------------ CRC32C

TEST(Crc32c, KnownVectors) {
  const char* s = "123456789";
  EXPECT_EQ(Crc32c(s, 9), 0xE3069283u);
  uint8_t zeros[32] = {};
  EXPECT_EQ(Crc32c(zeros, 32), 0x8A9136AAu);  // RFC 3720 B.4
  uint8_t ones[32];
  std::memset(ones, 0xff, sizeof ones);
  EXPECT_EQ(Crc32c(ones, 32), 0x62A8AB43u);   // RFC 3720 B.4
  uint8_t inc[32];
  for (int i = 0; i < 32; ++i) inc[i] = uint8_t(i);
  EXPECT_EQ(Crc32c(inc, 32), 0x46DD794Eu);    // RFC 3720 B.4
}

TEST(Crc32c, ExtendAndPortableAgree) {
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(4099);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t len : {0u, 1u, 7u, 8u, 9u, 63u, 64u, 1000u, 4099u}) {
    uint32_t whole = Crc32c(buf.data(), len);
    EXPECT_EQ(whole, Crc32cExtendPortable(0, buf.data(), len)) << len;
    size_t half = len / 3;
    EXPECT_EQ(whole, Crc32cExtend(Crc32cExtend(0, buf.data(), half), buf.data() + half, len - half)) << len;
  }
}

// ------------------------------------------------------------------ PDUs

TEST(Lun, EncodeDecode) {
  EXPECT_EQ(EncodeLun(0), 0u);
  EXPECT_EQ(EncodeLun(5), 0x0005000000000000ull);
  EXPECT_EQ(EncodeLun(300), 0x412c000000000000ull);  // flat space
  for (uint64_t l : {0ull, 1ull, 255ull, 256ull, 16383ull}) EXPECT_EQ(DecodeLun(EncodeLun(l)), l);
  // Other addressing methods never alias a small LUN.
  EXPECT_GT(DecodeLun(0xc101000000000000ull), 16383u);
}

OutPdu SamplePdu(const std::string& data) {
  OutPdu p;
  p.set_opcode(kOpScsiCmd);
  p.set_flags(0xa1);
  p.set_lun(3);
  p.set_itt(0x11223344);
  p.set_u32(20, 4096);
  p.set_u32(24, 77);
  p.set_data(reinterpret_cast<const uint8_t*>(data.data()), data.size());
  return p;
}

TEST(PduFramer, ParsesFieldsPaddingAndDigestsByteByByte) {
  std::string data = "hello, iSCSI";  // 12 bytes... make it odd below
  data += "!";                          // 13 bytes -> 3 pad bytes
  OutPdu p = SamplePdu(data);
  auto wire = Encode(p, true, true);
  ASSERT_EQ(wire.size(), 48u + 4 + 16 + 4);
  PduFramer f(16);
  f.set_limits({8192, true, true});
  PduView v;
  for (size_t i = 0; i < wire.size(); ++i) {
    ASSERT_EQ(f.Next(&v), PduFramer::Result::kNeedMore) << i;
    f.Feed(&wire[i], 1);
  }
  ASSERT_EQ(f.Next(&v), PduFramer::Result::kPdu);
  EXPECT_EQ(v.h().opcode(), kOpScsiCmd);
  EXPECT_EQ(v.h().flags(), 0xa1);
  EXPECT_EQ(DecodeLun(v.h().lun_field()), 3u);
  EXPECT_EQ(v.h().itt(), 0x11223344u);
  EXPECT_EQ(v.h().u32(20), 4096u);
  EXPECT_EQ(v.data_len, 13u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v.data), v.data_len), data);
  EXPECT_FALSE(v.data_digest_error);
  EXPECT_EQ(f.Next(&v), PduFramer::Result::kNeedMore);
}

TEST(PduFramer, AhsIsDelivered) {
  std::vector<uint8_t> wire(48 + 8, 0);
  wire[0] = kOpScsiCmd;
  wire[4] = 2;  // two words of AHS
  wire[48] = 0; wire[49] = 5; wire[50] = 2;  // bidi read length AHS
  Put32(&wire[52], 12345);
  PduFramer f;
  f.Feed(wire.data(), wire.size());
  PduView v;
  ASSERT_EQ(f.Next(&v), PduFramer::Result::kPdu);
  ASSERT_EQ(v.ahs_len, 8u);
  EXPECT_EQ(Get32(v.ahs + 4), 12345u);
  EXPECT_EQ(v.data_len, 0u);
}

TEST(PduFramer, HeaderDigestMismatchIsAnError) {
  std::string payload = "abc";  // outlives the OutPdu that points at it
  OutPdu p = SamplePdu(payload);
  auto wire = Encode(p, true, false);
  wire[50] ^= 1;  // inside the header digest
  PduFramer f;
  f.set_limits({8192, true, false});
  f.Feed(wire.data(), wire.size());
  PduView v;
  EXPECT_EQ(f.Next(&v), PduFramer::Result::kError);
  EXPECT_NE(f.error().find("digest"), std::string::npos);
  EXPECT_EQ(f.Next(&v), PduFramer::Result::kError);  // stays in error
}

TEST(PduFramer, DataDigestMismatchIsFlaggedNotFatal) {
  std::string payload = "abcdefgh";
  OutPdu p = SamplePdu(payload);
  auto wire = Encode(p, false, true);
  wire[48] ^= 0x40;  // corrupt data
  PduFramer f;
  f.set_limits({8192, false, true});
  f.Feed(wire.data(), wire.size());
  PduView v;
  ASSERT_EQ(f.Next(&v), PduFramer::Result::kPdu);
  EXPECT_TRUE(v.data_digest_error);
}

TEST(PduFramer, OversizedDataSegmentIsRefusedBeforeBuffering) {
  uint8_t bhs[48] = {};
  Put24(bhs + 5, 9000);
  PduFramer f;
  f.set_limits({8192, false, false});
  f.Feed(bhs, sizeof bhs);
  PduView v;
  EXPECT_EQ(f.Next(&v), PduFramer::Result::kError);
}

TEST(PduFramer, ManyPdusInOneBuffer) {
  std::vector<uint8_t> all;
  for (int i = 0; i < 50; ++i) {
    std::string d(size_t(i), char('a' + i % 26));
    OutPdu p = SamplePdu(d);
    p.set_itt(uint32_t(i));
    auto w = Encode(p, false, false);
    all.insert(all.end(), w.begin(), w.end());
  }
  PduFramer f(64);
  f.Feed(all.data(), all.size());
  PduView v;
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(f.Next(&v), PduFramer::Result::kPdu);
    EXPECT_EQ(v.h().itt(), uint32_t(i));
    EXPECT_EQ(v.data_len, size_t(i));
  }
  EXPECT_EQ(f.Next(&v), PduFramer::Result::kNeedMore);
}

// ------------------------------------------------------------------ text keys

TEST(TextKeys, ParseAndSerialize) {
  std::string s = std::string("InitiatorName=iqn.x") + '\0' + "MaxBurstLength=262144" + '\0';
  auto kv = ParseTextKeys(reinterpret_cast<const uint8_t*>(s.data()), s.size());
  ASSERT_TRUE(kv.ok());
  ASSERT_EQ(kv->size(), 2u);
  EXPECT_EQ((*kv)[1].first, "MaxBurstLength");
  EXPECT_EQ((*kv)[1].second, "262144");
  EXPECT_EQ(SerializeTextKeys(*kv), s);
}

TEST(TextKeys, Malformed) {
  auto parse = [](const std::string& s) { return ParseTextKeys(reinterpret_cast<const uint8_t*>(s.data()), s.size()); };
  EXPECT_FALSE(parse(std::string("NoEquals") + '\0').ok());
  EXPECT_FALSE(parse(std::string("=value") + '\0').ok());
  EXPECT_FALSE(parse(std::string(64, 'K') + "=v" + '\0').ok());
  EXPECT_FALSE(parse(std::string("Bad Key=v") + '\0').ok());
  EXPECT_TRUE(parse(std::string("Empty=") + '\0').ok());
  EXPECT_TRUE(parse("").ok());
}

TEST(TextKeys, Numbers) {
  EXPECT_EQ(ParseNumber("0"), 0u);
  EXPECT_EQ(ParseNumber("65536"), 65536u);
  EXPECT_EQ(ParseNumber("0x10"), 16u);
  EXPECT_FALSE(ParseNumber("").has_value());
  EXPECT_FALSE(ParseNumber("12a").has_value());
  EXPECT_FALSE(ParseNumber("4294967296").has_value());
  EXPECT_FALSE(ParseNumber("-1").has_value());
}

TEST(Negotiation, ResultFunctions) {
  EXPECT_EQ(NegMin(5, 3), 3u);
  EXPECT_EQ(NegMax(5, 3), 5u);
  EXPECT_TRUE(NegOr(false, true));
  EXPECT_FALSE(NegAnd(true, false));
  EXPECT_EQ(NegChoose("CRC32C,None", {"None"}), "None");
  EXPECT_EQ(NegChoose("CRC32C,None", {"CRC32C", "None"}), "CRC32C");
  EXPECT_FALSE(NegChoose("MD4", {"None"}).has_value());
}

std::string Answer(const KeyValues& kv, const std::string& k) {
  for (const auto& p : kv)
    if (p.first == k) return p.second;
  return "<none>";
}

TEST(Negotiation, OperationalKeys) {
  NegotiationLimits lim;
  lim.max_burst_length = 1 << 20;
  lim.first_burst_length = 65536;
  lim.max_outstanding_r2t = 4;
  lim.initial_r2t = false;
  lim.immediate_data = true;
  lim.default_time2wait = 2;
  lim.default_time2retain = 0;
  lim.allow_header_digest = true;
  lim.allow_data_digest = false;
  KeyNegotiator n(lim);
  KeyValues out;
  n.Offer("MaxBurstLength", "16776192", &out);
  n.Offer("FirstBurstLength", "262144", &out);
  n.Offer("MaxOutstandingR2T", "8", &out);
  n.Offer("InitialR2T", "Yes", &out);
  n.Offer("ImmediateData", "No", &out);
  n.Offer("DefaultTime2Wait", "0", &out);
  n.Offer("DefaultTime2Retain", "20", &out);
  n.Offer("HeaderDigest", "CRC32C,None", &out);
  n.Offer("DataDigest", "CRC32C", &out);
  n.Offer("MaxConnections", "4", &out);
  n.Offer("ErrorRecoveryLevel", "2", &out);
  n.Offer("MaxRecvDataSegmentLength", "65536", &out);
  n.Offer("X-com.example.Foo", "1", &out);
  n.Offer("OFMarker", "Yes", &out);
  n.Offer("OFMarkInt", "2048~8192", &out);
  n.Offer("DataPDUInOrder", "No", &out);
  EXPECT_EQ(Answer(out, "MaxBurstLength"), "1048576");      // min
  EXPECT_EQ(Answer(out, "FirstBurstLength"), "65536");      // min
  EXPECT_EQ(Answer(out, "MaxOutstandingR2T"), "4");         // min
  EXPECT_EQ(Answer(out, "InitialR2T"), "Yes");              // OR
  EXPECT_EQ(Answer(out, "ImmediateData"), "No");            // AND
  EXPECT_EQ(Answer(out, "DefaultTime2Wait"), "2");          // max
  EXPECT_EQ(Answer(out, "DefaultTime2Retain"), "0");        // min
  EXPECT_EQ(Answer(out, "HeaderDigest"), "CRC32C");
  EXPECT_EQ(Answer(out, "DataDigest"), "Reject");           // no common value
  EXPECT_EQ(Answer(out, "MaxConnections"), "1");
  EXPECT_EQ(Answer(out, "ErrorRecoveryLevel"), "0");
  EXPECT_EQ(Answer(out, "MaxRecvDataSegmentLength"), "<none>");  // declarative: no answer
  EXPECT_EQ(Answer(out, "X-com.example.Foo"), "NotUnderstood");
  EXPECT_EQ(Answer(out, "OFMarker"), "No");
  EXPECT_EQ(Answer(out, "OFMarkInt"), "Irrelevant");
  EXPECT_EQ(Answer(out, "DataPDUInOrder"), "Yes");
  SessionParams p = n.Finish();
  EXPECT_EQ(p.initiator_mrdsl, 65536u);
  EXPECT_EQ(p.max_burst_length, 1u << 20);
  EXPECT_EQ(p.first_burst_length, 65536u);
  EXPECT_TRUE(p.initial_r2t);
  EXPECT_FALSE(p.immediate_data);
  EXPECT_TRUE(p.header_digest);
  EXPECT_FALSE(p.data_digest);
  EXPECT_EQ(p.max_outstanding_r2t, 4u);
}

TEST(Negotiation, BadValuesAndRepeatsAreRejected) {
  KeyNegotiator n(NegotiationLimits{});
  KeyValues out;
  n.Offer("MaxBurstLength", "100", &out);         // below 512
  n.Offer("InitialR2T", "Maybe", &out);
  n.Offer("MaxOutstandingR2T", "0", &out);
  n.Offer("TargetPortalGroupTag", "1", &out);     // target-only key
  ASSERT_EQ(out.size(), 4u);
  for (const auto& kv : out) EXPECT_EQ(kv.second, "Reject") << kv.first;
  KeyValues again;
  n.Offer("ImmediateData", "Yes", &again);
  n.Offer("ImmediateData", "Yes", &again);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[1].second, "Reject");
}

TEST(Negotiation, DefaultsAndFirstBurstNeverExceedsMaxBurst) {
  NegotiationLimits lim;
  KeyNegotiator n(lim);
  KeyValues out;
  n.Offer("MaxBurstLength", "4096", &out);
  n.Offer("FirstBurstLength", "65536", &out);
  SessionParams p = n.Finish();
  EXPECT_EQ(p.max_burst_length, 4096u);
  EXPECT_EQ(p.first_burst_length, 4096u);
  KeyNegotiator d(lim);
  SessionParams q = d.Finish();
  EXPECT_TRUE(q.initial_r2t);        // RFC defaults when nothing is offered
  EXPECT_TRUE(q.immediate_data);
  EXPECT_EQ(q.max_burst_length, 262144u);
  EXPECT_EQ(q.first_burst_length, 65536u);
  EXPECT_EQ(q.initiator_mrdsl, 8192u);
}

// ------------------------------------------------------------------ CHAP

TEST(Chap, KnownVector) {
  std::vector<uint8_t> c(16);
  for (int i = 0; i < 16; ++i) c[i] = uint8_t(i);
  auto r = ChapResponse(1, "secret", c);  // MD5(0x01 || "secret" || 00..0f)
  EXPECT_EQ(EncodeChapHex(r.data(), r.size()), "0x740e86463bda3a4d7017d6e0fba0699d");
}

TEST(Chap, BinaryEncodings) {
  auto h = DecodeChapBinary("0x0aFF");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, (std::vector<uint8_t>{0x0a, 0xff}));
  auto b = DecodeChapBinary("0bAQID");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_FALSE(DecodeChapBinary("1234").ok());
  EXPECT_FALSE(DecodeChapBinary("0xzz").ok());
  EXPECT_FALSE(DecodeChapBinary("0b!!").ok());
}

TargetAuth MutualAuth() { return {"alice", "secret", "tgt", "tgtsecret12345"}; }

TEST(Chap, OneWayAndMutual) {
  ChapAuthenticator a(MutualAuth());
  std::vector<uint8_t> ch(16);
  for (int i = 0; i < 16; ++i) ch[i] = uint8_t(i);
  a.SetChallengeForTest(1, ch);
  KeyValues out;
  ASSERT_TRUE(a.OnAlgorithms("7,5", &out).ok());
  EXPECT_EQ(Answer(out, "CHAP_A"), "5");
  EXPECT_EQ(Answer(out, "CHAP_I"), "1");
  EXPECT_EQ(Answer(out, "CHAP_C"), "0x000102030405060708090a0b0c0d0e0f");
  out.clear();
  ASSERT_TRUE(a.OnResponse("alice", "0x740e86463bda3a4d7017d6e0fba0699d", "42",
                           "0x0123456789abcdef0123456789abcdef", &out).ok());
  EXPECT_EQ(a.state(), ChapAuthenticator::State::kDone);
  EXPECT_EQ(Answer(out, "CHAP_N"), "tgt");
  // MD5(0x2a || "tgtsecret12345" || 0123..ef x2)
  EXPECT_EQ(Answer(out, "CHAP_R"), "0xd668179d93729be9704aeac55dc4d1cd");
}

TEST(Chap, WrongResponseUserAndReflectionAreRefused) {
  std::vector<uint8_t> ch(16, 0x5a);
  auto fresh = [&] {
    auto a = std::make_unique<ChapAuthenticator>(MutualAuth());
    a->SetChallengeForTest(9, ch);
    KeyValues out;
    EXPECT_TRUE(a->OnAlgorithms("5", &out).ok());
    return a;
  };
  KeyValues out;
  auto good = ChapResponse(9, "secret", ch);
  std::string good_hex = EncodeChapHex(good.data(), good.size());
  EXPECT_FALSE(fresh()->OnResponse("alice", "0x00112233445566778899aabbccddeeff", "", "", &out).ok());
  EXPECT_FALSE(fresh()->OnResponse("mallory", good_hex, "", "", &out).ok());
  // The initiator hands our own challenge back for mutual CHAP: refused.
  EXPECT_FALSE(fresh()->OnResponse("alice", good_hex, "9", EncodeChapHex(ch.data(), ch.size()), &out).ok());
  EXPECT_TRUE(fresh()->OnResponse("alice", good_hex, "", "", &out).ok());
  ChapAuthenticator md4(MutualAuth());
  EXPECT_FALSE(md4.OnAlgorithms("7", &out).ok());
}

TEST(Chap, RandomChallengesDiffer) {
  ChapAuthenticator a(MutualAuth()), b(MutualAuth());
  KeyValues x, y;
  ASSERT_TRUE(a.OnAlgorithms("5", &x).ok());
  ASSERT_TRUE(b.OnAlgorithms("5", &y).ok());
  EXPECT_NE(Answer(x, "CHAP_C"), Answer(y, "CHAP_C"));
  EXPECT_EQ(Answer(x, "CHAP_C").size(), 2u + 32u);
}

// ------------------------------------------------------------------ login machine

class LoginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    lun_ = std::make_shared<testing::RamLun>(1 << 20);
    TargetEntry e;
    e.iqn = "iqn.t:open";
    e.sink = lun_;
    dir_.Add(e);
    TargetEntry s = e;
    s.iqn = "iqn.t:chap";
    s.auth = {"alice", "secret", "", ""};
    dir_.Add(s);
    TargetEntry acl = e;
    acl.iqn = "iqn.t:acl";
    dir_.Add(acl, {"iqn.only:me"});
  }
  LoginContext Ctx() {
    LoginContext c;
    c.directory = &dir_;
    c.initiator_addr = "127.0.0.1";
    c.allocate_tsih = [] { return uint16_t(7); };
    c.tsih_exists = [](uint16_t) { return false; };
    return c;
  }
  // Builds and runs one login request.
  LoginMachine::Step Step(LoginMachine& m, int csg, int nsg, bool t, const KeyValues& kv, KeyValues* reply,
                          uint8_t* status_class = nullptr, uint8_t* reply_flags = nullptr, uint8_t version_min = 0) {
    OutPdu p;
    p.set_opcode(kOpLoginReq | 0x40);
    p.set_flags(uint8_t((t ? 0x80 : 0) | csg << 2 | nsg));
    p.bhs[3] = version_min;
    Put16(p.bhs + 8, 0x8000);
    Put32(p.bhs + 10, 0x12345678);
    std::string text = SerializeTextKeys(kv);
    p.set_data(reinterpret_cast<const uint8_t*>(text.data()), text.size());
    auto wire = Encode(p, false, false);
    PduFramer f;
    f.Feed(wire.data(), wire.size());
    PduView v;
    EXPECT_EQ(f.Next(&v), PduFramer::Result::kPdu);
    OutPdu out;
    std::string data;
    auto step = m.Handle(v, &out, &data);
    EXPECT_EQ(out.bhs[0], kOpLoginResp);
    if (status_class) *status_class = out.bhs[36];
    if (reply_flags) *reply_flags = out.bhs[1];
    auto kvr = ParseTextKeys(reinterpret_cast<const uint8_t*>(data.data()), data.size());
    EXPECT_TRUE(kvr.ok());
    if (reply) *reply = *kvr;
    if (step == LoginMachine::Step::kFailed) last_status_ = Get16(out.bhs + 36);
    return step;
  }
  std::shared_ptr<testing::RamLun> lun_;
  testing::FixedDirectory dir_;
  uint16_t last_status_ = 0;
};

TEST_F(LoginTest, NoAuthTwoStages) {
  LoginMachine m(Ctx());
  KeyValues r;
  uint8_t flags = 0;
  ASSERT_EQ(Step(m, 0, 1, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:open"},
                                 {"SessionType", "Normal"}, {"AuthMethod", "CHAP,None"}}, &r, nullptr, &flags),
            LoginMachine::Step::kContinue);
  EXPECT_EQ(Answer(r, "AuthMethod"), "None");
  EXPECT_EQ(Answer(r, "TargetPortalGroupTag"), "1");
  EXPECT_EQ(flags, 0x81);  // T, CSG 0, NSG 1
  ASSERT_EQ(Step(m, 1, 3, true, {{"MaxRecvDataSegmentLength", "16384"}, {"ImmediateData", "Yes"}}, &r, nullptr,
                 &flags),
            LoginMachine::Step::kFullFeature);
  EXPECT_EQ(flags, 0x87);
  EXPECT_EQ(Answer(r, "MaxRecvDataSegmentLength"), "262144");  // our declaration
  EXPECT_EQ(m.tsih(), 7);
  EXPECT_EQ(m.params().initiator_mrdsl, 16384u);
  EXPECT_EQ(m.target()->iqn, "iqn.t:open");
}

TEST_F(LoginTest, Failures) {
  {
    LoginMachine m(Ctx());
    EXPECT_EQ(Step(m, 0, 1, true, {{"TargetName", "iqn.t:open"}}, nullptr), LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginMissingParameter);
  }
  {
    LoginMachine m(Ctx());
    EXPECT_EQ(Step(m, 0, 1, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:nope"}}, nullptr),
              LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginNotFound);
  }
  {
    LoginMachine m(Ctx());
    EXPECT_EQ(Step(m, 0, 1, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:acl"}}, nullptr),
              LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginForbidden);
    LoginMachine ok(Ctx());
    EXPECT_EQ(Step(ok, 0, 1, true, {{"InitiatorName", "iqn.only:me"}, {"TargetName", "iqn.t:acl"}}, nullptr),
              LoginMachine::Step::kContinue);
  }
  {
    LoginMachine m(Ctx());
    EXPECT_EQ(Step(m, 0, 1, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:open"}}, nullptr, nullptr,
                   nullptr, 1),
              LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginUnsupportedVersion);
  }
  {
    LoginMachine m(Ctx());  // CHAP target, initiator skips security
    EXPECT_EQ(Step(m, 1, 3, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:chap"}}, nullptr),
              LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginAuthFailed);
  }
  {
    LoginMachine m(Ctx());  // CHAP target, initiator offers only None
    EXPECT_EQ(Step(m, 0, 1, true,
                   {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:chap"}, {"AuthMethod", "None"}}, nullptr),
              LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginAuthFailed);
  }
  {
    LoginMachine m(Ctx());  // T and a backwards stage transition
    EXPECT_EQ(Step(m, 1, 0, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:open"}}, nullptr),
              LoginMachine::Step::kFailed);
    EXPECT_EQ(last_status_, kLoginInvalidDuringLogin);
  }
}

TEST_F(LoginTest, ChapExchange) {
  LoginMachine m(Ctx());
  KeyValues r;
  uint8_t flags = 0;
  ASSERT_EQ(Step(m, 0, 1, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:chap"},
                                 {"AuthMethod", "CHAP,None"}}, &r, nullptr, &flags),
            LoginMachine::Step::kContinue);
  EXPECT_EQ(Answer(r, "AuthMethod"), "CHAP");
  EXPECT_EQ(flags & 0x80, 0);  // no transit before authentication
  ASSERT_EQ(Step(m, 0, 1, false, {{"CHAP_A", "5"}}, &r), LoginMachine::Step::kContinue);
  auto id = ParseNumber(Answer(r, "CHAP_I"));
  auto ch = DecodeChapBinary(Answer(r, "CHAP_C"));
  ASSERT_TRUE(id.has_value());
  ASSERT_TRUE(ch.ok());
  auto resp = ChapResponse(uint8_t(*id), "secret", *ch);
  ASSERT_EQ(Step(m, 0, 1, true, {{"CHAP_N", "alice"}, {"CHAP_R", EncodeChapHex(resp.data(), resp.size())}}, &r,
                 nullptr, &flags),
            LoginMachine::Step::kContinue);
  EXPECT_EQ(flags, 0x81);
  ASSERT_EQ(Step(m, 1, 3, true, {}, &r), LoginMachine::Step::kFullFeature);
}

TEST_F(LoginTest, ChapWrongSecretFails) {
  LoginMachine m(Ctx());
  KeyValues r;
  Step(m, 0, 1, true, {{"InitiatorName", "iqn.i"}, {"TargetName", "iqn.t:chap"}, {"AuthMethod", "CHAP"}}, &r);
  Step(m, 0, 1, false, {{"CHAP_A", "5"}}, &r);
  auto id = ParseNumber(Answer(r, "CHAP_I"));
  auto ch = DecodeChapBinary(Answer(r, "CHAP_C"));
  auto resp = ChapResponse(uint8_t(*id), "not-the-secret", *ch);
  EXPECT_EQ(Step(m, 0, 1, true, {{"CHAP_N", "alice"}, {"CHAP_R", EncodeChapHex(resp.data(), resp.size())}}, &r),
            LoginMachine::Step::kFailed);
  EXPECT_EQ(last_status_, kLoginAuthFailed);
}

TEST_F(LoginTest, DiscoverySessionNeedsNoTargetName) {
  LoginMachine m(Ctx());
  KeyValues r;
  ASSERT_EQ(Step(m, 0, 3, true, {{"InitiatorName", "iqn.i"}, {"SessionType", "Discovery"}, {"AuthMethod", "None"}},
                 &r),
            LoginMachine::Step::kFullFeature);
  EXPECT_TRUE(m.discovery());
  EXPECT_EQ(Answer(r, "TargetPortalGroupTag"), "<none>");
}

// ------------------------------------------------------------------ data path

TEST(CmdWindow, DepthBoundsInflightAndMaxCmdSnIsMonotonic) {
  CmdWindow w(100, 4);
  EXPECT_EQ(w.max_cmdsn(), 103u);
  EXPECT_EQ(w.Classify(100), CmdWindow::Verdict::kNow);
  EXPECT_EQ(w.Classify(102), CmdWindow::Verdict::kAhead);
  EXPECT_EQ(w.Classify(104), CmdWindow::Verdict::kOutside);
  EXPECT_EQ(w.Classify(99), CmdWindow::Verdict::kOutside);
  uint32_t last_max = w.max_cmdsn();
  for (int i = 0; i < 4; ++i) {
    w.Advance(true);
    EXPECT_GE(w.max_cmdsn(), last_max);
    last_max = w.max_cmdsn();
  }
  EXPECT_EQ(w.inflight(), 4u);
  EXPECT_EQ(w.Classify(104), CmdWindow::Verdict::kOutside);  // full
  w.Release();
  EXPECT_EQ(w.max_cmdsn(), 104u);
  EXPECT_EQ(w.Classify(104), CmdWindow::Verdict::kNow);
  w.Advance(false);  // e.g. a NOP-Out: no slot held
  EXPECT_EQ(w.max_cmdsn(), 105u);
}

TEST(CmdWindow, WrapsAround) {
  CmdWindow w(0xfffffffeu, 8);
  EXPECT_EQ(w.Classify(0xfffffffeu), CmdWindow::Verdict::kNow);
  EXPECT_EQ(w.Classify(3), CmdWindow::Verdict::kAhead);
  EXPECT_EQ(w.Classify(6), CmdWindow::Verdict::kOutside);
  w.Advance(true);
  w.Advance(true);
  EXPECT_EQ(w.exp_cmdsn(), 0u);
  EXPECT_EQ(w.Classify(0), CmdWindow::Verdict::kNow);
}

TEST(DataIn, SplitsByMrdslAndMarksBursts) {
  auto s = SplitDataIn(10000, 4096, 8192);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].offset, 0u);
  EXPECT_EQ(s[0].length, 4096u);
  EXPECT_FALSE(s[0].final_in_sequence);
  EXPECT_EQ(s[1].length, 4096u);
  EXPECT_TRUE(s[1].final_in_sequence);  // end of the first 8 KiB burst
  EXPECT_EQ(s[2].offset, 8192u);
  EXPECT_EQ(s[2].length, 1808u);
  EXPECT_TRUE(s[2].final_in_sequence);
  EXPECT_TRUE(SplitDataIn(0, 4096, 8192).empty());
  auto odd = SplitDataIn(10000, 3000, 5000);  // burst not a multiple of MRDSL
  uint32_t sum = 0;
  for (const auto& x : odd) {
    EXPECT_LE(x.length, 3000u);
    EXPECT_EQ(x.offset, sum);
    sum += x.length;
    EXPECT_LE((x.offset % 5000) + x.length, 5000u);  // never crosses a burst boundary
  }
  EXPECT_EQ(sum, 10000u);
}

TEST(R2t, HonoursBurstAndOutstandingLimits) {
  R2tPlanner p(1000, 1000 + 5 * 4096 + 100, 4096, 2);
  R2tRequest r;
  ASSERT_TRUE(p.Next(&r));
  EXPECT_EQ(r.offset, 1000u);
  EXPECT_EQ(r.length, 4096u);
  EXPECT_EQ(r.r2tsn, 0u);
  ASSERT_TRUE(p.Next(&r));
  EXPECT_EQ(r.r2tsn, 1u);
  EXPECT_FALSE(p.Next(&r));  // two outstanding
  p.SequenceDone();
  ASSERT_TRUE(p.Next(&r));
  EXPECT_EQ(r.offset, 1000u + 2 * 4096);
  p.SequenceDone();
  p.SequenceDone();
  ASSERT_TRUE(p.Next(&r));
  ASSERT_TRUE(p.Next(&r));
  ASSERT_TRUE(p.Next(&r) || (p.SequenceDone(), p.Next(&r)));
  EXPECT_EQ(r.offset, 1000u + 5 * 4096);
  EXPECT_EQ(r.length, 100u);
  EXPECT_TRUE(p.all_solicited());
  EXPECT_FALSE(p.Next(&r));
}

}  // namespace
}  // namespace ferry::iscsi
