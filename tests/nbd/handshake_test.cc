// Units for ServerHandshake against a fake ExportProvider (bytes in, bytes out).
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "target/nbd/handshake.h"

namespace ferry::nbd {
namespace {

class FakeProvider : public ExportProvider {
 public:
  std::map<std::string, ExportInfo> exports;
  int opens = 0;
  Result<ExportInfo> Describe(const std::string& name) override {
    auto it = exports.find(name);
    if (it == exports.end()) return Status::NotFound("no export " + name);
    return it->second;
  }
  Result<ExportInfo> Open(const std::string& name) override {
    auto r = Describe(name);
    if (r.ok()) ++opens;
    return r;
  }
  Result<std::vector<std::string>> List() override {
    std::vector<std::string> v;
    for (auto& [k, _] : exports) v.push_back(k);
    return v;
  }
};

std::string B16(uint16_t v) { uint8_t b[2]; Put16(b, v); return std::string(reinterpret_cast<char*>(b), 2); }
std::string B32(uint32_t v) { uint8_t b[4]; Put32(b, v); return std::string(reinterpret_cast<char*>(b), 4); }
std::string B64(uint64_t v) { uint8_t b[8]; Put64(b, v); return std::string(reinterpret_cast<char*>(b), 8); }
std::string Opt(uint32_t opt, const std::string& data) { return B64(kIHaveOpt) + B32(opt) + B32(data.size()) + data; }
std::string GoData(const std::string& name, std::vector<uint16_t> infos = {}) {
  std::string d = B32(name.size()) + name + B16(infos.size());
  for (auto i : infos) d += B16(i);
  return d;
}
std::string MetaData(const std::string& name, std::vector<std::string> qs) {
  std::string d = B32(name.size()) + name + B32(qs.size());
  for (auto& q : qs) d += B32(q.size()) + q;
  return d;
}

struct OptReply {
  uint32_t opt, type;
  std::string data;
};
// Parses option replies; fails the test on bad framing.
std::vector<OptReply> ParseReplies(const std::string& s) {
  std::vector<OptReply> v;
  size_t pos = 0;
  auto u = [&](size_t at) { return reinterpret_cast<const uint8_t*>(s.data()) + at; };
  while (pos + 20 <= s.size()) {
    EXPECT_EQ(Get64(u(pos)), kOptReplyMagic);
    OptReply r{Get32(u(pos + 8)), Get32(u(pos + 12)), ""};
    uint32_t len = Get32(u(pos + 16));
    r.data = s.substr(pos + 20, len);
    pos += 20 + len;
    v.push_back(r);
  }
  EXPECT_EQ(pos, s.size());
  return v;
}

class HandshakeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake.exports["vol"] = ExportInfo{1 << 20, false, "a volume", ""};
    fake.exports["vol:snap"] = ExportInfo{1 << 20, true, "", ""};
  }
  // Feeds the whole string (byte by byte when `slow`), returns the server output.
  std::string Feed(ServerHandshake& h, const std::string& in, bool slow = false) {
    std::string out;
    size_t pos = 0;
    while (pos < in.size() && !h.done()) {
      size_t n = slow ? 1 : in.size() - pos;
      pos += h.Consume(reinterpret_cast<const uint8_t*>(in.data()) + pos, n, &out);
    }
    leftover = in.substr(pos);
    return out;
  }
  FakeProvider fake;
  ServerHandshake::Options opts;
  std::string leftover;
};

TEST_F(HandshakeTest, Greeting) {
  ServerHandshake h(&fake, opts);
  std::string g;
  h.Greeting(&g);
  ASSERT_EQ(g.size(), 18u);
  EXPECT_EQ(g.substr(0, 8), "NBDMAGIC");
  EXPECT_EQ(g.substr(8, 8), "IHAVEOPT");
  EXPECT_EQ(Get16(reinterpret_cast<const uint8_t*>(g.data()) + 16), kFlagFixedNewstyle | kFlagNoZeroes);
}

TEST_F(HandshakeTest, GoWithBlockSizeAndName) {
  for (bool slow : {false, true}) {
    ServerHandshake h(&fake, opts);
    std::string in = B32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) +
                     Opt(kOptGo, GoData("vol", {kInfoBlockSize, kInfoName, kInfoDescription})) + "REST";
    auto replies = ParseReplies(Feed(h, in, slow));
    ASSERT_EQ(h.state(), ServerHandshake::State::kTransmission);
    EXPECT_EQ(leftover, "REST");  // bytes after GO belong to the transmission phase
    ASSERT_EQ(replies.size(), 5u);
    EXPECT_EQ(replies[0].type, kRepInfo);
    auto d0 = reinterpret_cast<const uint8_t*>(replies[0].data.data());
    ASSERT_EQ(replies[0].data.size(), 12u);
    EXPECT_EQ(Get16(d0), kInfoExport);
    EXPECT_EQ(Get64(d0 + 2), 1u << 20);
    uint16_t tf = Get16(d0 + 10);
    EXPECT_TRUE(tf & kTFlagSendFlush);
    EXPECT_TRUE(tf & kTFlagSendTrim);
    EXPECT_FALSE(tf & kTFlagReadOnly);
    auto d1 = reinterpret_cast<const uint8_t*>(replies[1].data.data());
    ASSERT_EQ(replies[1].data.size(), 14u);
    EXPECT_EQ(Get16(d1), kInfoBlockSize);
    EXPECT_EQ(Get32(d1 + 2), 512u);
    EXPECT_EQ(Get32(d1 + 6), 4096u);
    EXPECT_EQ(Get32(d1 + 10), kMaxPayload);
    EXPECT_EQ(replies[2].data.substr(2), "vol");
    EXPECT_EQ(replies[3].data.substr(2), "a volume");
    EXPECT_EQ(replies[4].type, kRepAck);
    EXPECT_EQ(h.session().export_name, "vol");
    EXPECT_FALSE(h.session().structured);
  }
}

TEST_F(HandshakeTest, InfoNameIsTheServersCanonicalNameWhenItHasOne) {
  fake.exports["vol@+3"] = ExportInfo{4096, false, "", "vol@7"};
  ServerHandshake h(&fake, opts);
  std::string in = B32(kClientFlagFixedNewstyle) + Opt(kOptGo, GoData("vol@+3", {kInfoName}));
  auto replies = ParseReplies(Feed(h, in));
  ASSERT_EQ(h.state(), ServerHandshake::State::kTransmission);
  ASSERT_EQ(replies.size(), 4u);  // export, block size, name, ack
  auto d2 = reinterpret_cast<const uint8_t*>(replies[2].data.data());
  EXPECT_EQ(Get16(d2), kInfoName);
  EXPECT_EQ(replies[2].data.substr(2), "vol@7");
  EXPECT_EQ(h.session().export_name, "vol@+3");  // what the client asked for
}

TEST_F(HandshakeTest, InfoDoesNotOpenAndUnknownIsAnError) {
  ServerHandshake h(&fake, opts);
  std::string in = B32(kClientFlagFixedNewstyle) + Opt(kOptInfo, GoData("vol")) +
                   Opt(kOptInfo, GoData("nope")) + Opt(kOptGo, GoData("nope"));
  auto replies = ParseReplies(Feed(h, in));
  EXPECT_EQ(fake.opens, 0);
  EXPECT_EQ(h.state(), ServerHandshake::State::kOptionHeader);
  ASSERT_EQ(replies.size(), 5u);
  EXPECT_EQ(replies[2].type, kRepAck);
  EXPECT_EQ(replies[3].type, kRepErrUnknown);
  EXPECT_EQ(replies[4].type, kRepErrUnknown);
  EXPECT_EQ(replies[4].opt, kOptGo);
}

TEST_F(HandshakeTest, ListAndReadOnly) {
  ServerHandshake h(&fake, opts);
  std::string in = B32(kClientFlagFixedNewstyle) + Opt(kOptList, "") + Opt(kOptList, "x") +
                   Opt(kOptGo, GoData("vol:snap"));
  auto replies = ParseReplies(Feed(h, in));
  ASSERT_EQ(replies.size(), 7u);
  EXPECT_EQ(replies[0].type, kRepServer);
  EXPECT_EQ(replies[0].data.substr(4), "vol");
  EXPECT_EQ(replies[1].data.substr(4), "vol:snap");
  EXPECT_EQ(replies[2].type, kRepAck);
  EXPECT_EQ(replies[3].type, kRepErrInvalid);
  EXPECT_TRUE(h.session().tflags & kTFlagReadOnly);
  EXPECT_FALSE(h.session().tflags & kTFlagSendTrim);
}

TEST_F(HandshakeTest, StructuredAndMetaContext) {
  ServerHandshake h(&fake, opts);
  std::string in = B32(kClientFlagFixedNewstyle) +
                   Opt(kOptSetMetaContext, MetaData("vol", {"base:allocation"})) +  // before structured: error
                   Opt(kOptStructuredReply, "") +
                   Opt(kOptListMetaContext, MetaData("vol", {})) +
                   Opt(kOptSetMetaContext, MetaData("vol", {"qemu:dirty-bitmap:x", "base:allocation"})) +
                   Opt(kOptGo, GoData("vol"));
  auto replies = ParseReplies(Feed(h, in));
  ASSERT_EQ(h.state(), ServerHandshake::State::kTransmission);
  EXPECT_EQ(replies[0].type, kRepErrInvalid);
  EXPECT_EQ(replies[1].type, kRepAck);
  EXPECT_EQ(replies[2].type, kRepMetaContext);
  EXPECT_EQ(replies[2].data.substr(4), "base:allocation");
  EXPECT_EQ(replies[3].type, kRepAck);
  EXPECT_EQ(replies[4].type, kRepMetaContext);
  EXPECT_EQ(Get32(reinterpret_cast<const uint8_t*>(replies[4].data.data())), kMetaContextBaseAllocation);
  EXPECT_TRUE(h.session().structured);
  EXPECT_TRUE(h.session().base_allocation);
  EXPECT_TRUE(h.session().tflags & kTFlagSendDf);
}

TEST_F(HandshakeTest, MetaContextForOtherExportIsDropped) {
  ServerHandshake h(&fake, opts);
  fake.exports["other"] = ExportInfo{4096, false, "", ""};
  std::string in = B32(kClientFlagFixedNewstyle) + Opt(kOptStructuredReply, "") +
                   Opt(kOptSetMetaContext, MetaData("other", {"base:allocation"})) + Opt(kOptGo, GoData("vol"));
  Feed(h, in);
  ASSERT_EQ(h.state(), ServerHandshake::State::kTransmission);
  EXPECT_FALSE(h.session().base_allocation);
}

TEST_F(HandshakeTest, ExportNameOldStyle) {
  ServerHandshake h(&fake, opts);
  std::string out = Feed(h, B32(kClientFlagFixedNewstyle) + Opt(kOptExportName, "vol"));
  ASSERT_EQ(h.state(), ServerHandshake::State::kTransmission);
  ASSERT_EQ(out.size(), 8u + 2 + 124);
  EXPECT_EQ(Get64(reinterpret_cast<const uint8_t*>(out.data())), 1u << 20);
  ServerHandshake h2(&fake, opts);
  out = Feed(h2, B32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) + Opt(kOptExportName, "vol"));
  EXPECT_EQ(out.size(), 10u);
  ServerHandshake h4(&fake, opts);
  Feed(h4, B32(kClientFlagFixedNewstyle | kClientFlagNoZeroes) + Opt(kOptStructuredReply, "") +
               Opt(kOptExportName, "vol"));
  ASSERT_EQ(h4.state(), ServerHandshake::State::kTransmission);
  EXPECT_TRUE(h4.session().structured);  // negotiated before EXPORT_NAME: stays in force
  ServerHandshake h3(&fake, opts);
  out = Feed(h3, B32(kClientFlagFixedNewstyle) + Opt(kOptExportName, "missing"));
  EXPECT_EQ(h3.state(), ServerHandshake::State::kClosed);
  EXPECT_TRUE(out.empty());
}

TEST_F(HandshakeTest, AbortAndUnsupported) {
  ServerHandshake h(&fake, opts);
  auto replies = ParseReplies(Feed(h, B32(kClientFlagFixedNewstyle) + Opt(kOptStartTls, "") + Opt(99, "abc") +
                                          Opt(kOptAbort, "") + Opt(kOptGo, GoData("vol"))));
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(replies[0].type, kRepErrUnsup);
  EXPECT_EQ(replies[1].type, kRepErrUnsup);
  EXPECT_EQ(replies[2].type, kRepAck);
  EXPECT_EQ(h.state(), ServerHandshake::State::kClosed);
  EXPECT_EQ(fake.opens, 0);
}

TEST_F(HandshakeTest, ProtocolViolationsClose) {
  {
    ServerHandshake h(&fake, opts);
    Feed(h, B32(0));  // not fixed newstyle
    EXPECT_EQ(h.state(), ServerHandshake::State::kClosed);
  }
  {
    ServerHandshake h(&fake, opts);
    Feed(h, B32(kClientFlagFixedNewstyle | 0x80));
    EXPECT_EQ(h.state(), ServerHandshake::State::kClosed);
  }
  {
    ServerHandshake h(&fake, opts);
    Feed(h, B32(kClientFlagFixedNewstyle) + std::string(16, 'x'));
    EXPECT_EQ(h.state(), ServerHandshake::State::kClosed);
  }
  {
    ServerHandshake h(&fake, opts);
    Feed(h, B32(kClientFlagFixedNewstyle) + B64(kIHaveOpt) + B32(kOptGo) + B32(0xffffffff));
    EXPECT_EQ(h.state(), ServerHandshake::State::kClosed);
    EXPECT_NE(h.close_reason().find("too long"), std::string::npos);
  }
}

TEST_F(HandshakeTest, MalformedGoDataGetsInvalid) {
  ServerHandshake h(&fake, opts);
  std::string bad_len = B32(100) + "vol" + B16(0);
  std::string bad_count = B32(3) + "vol" + B16(5) + B16(kInfoName);
  auto replies = ParseReplies(Feed(h, B32(kClientFlagFixedNewstyle) + Opt(kOptGo, "ab") + Opt(kOptGo, bad_len) +
                                          Opt(kOptInfo, bad_count) +
                                          Opt(kOptStructuredReply, "") + Opt(kOptListMetaContext, B32(3) + "vol" + B32(2))));
  ASSERT_EQ(replies.size(), 5u);
  EXPECT_EQ(replies[0].type, kRepErrInvalid);
  EXPECT_EQ(replies[1].type, kRepErrInvalid);
  EXPECT_EQ(replies[2].type, kRepErrInvalid);
  EXPECT_EQ(replies[3].type, kRepAck);
  EXPECT_EQ(replies[4].type, kRepErrInvalid);
  EXPECT_EQ(h.state(), ServerHandshake::State::kOptionHeader);
}

TEST_F(HandshakeTest, RandomGarbageTerminates) {
  std::mt19937 rng(99);
  for (int iter = 0; iter < 3000; ++iter) {
    std::string s = B32(kClientFlagFixedNewstyle);
    int nopt = rng() % 5;
    for (int i = 0; i < nopt; ++i) {
      std::string d(rng() % 40, '\0');
      for (auto& c : d) c = static_cast<char>(rng() % 8 == 0 ? rng() : rng() % 4);
      s += Opt(rng() % 12, d);
    }
    // corrupt a few bytes
    for (int k = rng() % 3; k > 0 && !s.empty(); --k) s[rng() % s.size()] = static_cast<char>(rng());
    ServerHandshake h(&fake, opts);
    std::string out = Feed(h, s, iter % 3 == 0);
    SUCCEED();
  }
}

}  // namespace
}  // namespace ferry::nbd
