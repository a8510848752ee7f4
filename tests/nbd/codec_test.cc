// Units for the fixed-size codecs, export-name parsing, the request parser and CheckRequest.
#include <gtest/gtest.h>

#include <random>

#include "target/nbd/protocol.h"
#include "target/nbd/request_parser.h"

namespace ferry::nbd {
namespace {

TEST(Codec, RequestRoundTrip) {
  Request r;
  r.flags = kCmdFlagFua;
  r.type = kCmdWrite;
  r.cookie = 0x0102030405060708ULL;
  r.offset = 0xfffffffffffff000ULL;
  r.length = 4096;
  uint8_t b[kRequestSize];
  EncodeRequest(r, b);
  EXPECT_EQ(b[0], 0x25);
  EXPECT_EQ(b[3], 0x13);
  EXPECT_EQ(b[8], 0x01);
  EXPECT_EQ(b[15], 0x08);
  Request d;
  ASSERT_TRUE(DecodeRequest(b, &d));
  EXPECT_EQ(d.flags, r.flags);
  EXPECT_EQ(d.type, r.type);
  EXPECT_EQ(d.cookie, r.cookie);
  EXPECT_EQ(d.offset, r.offset);
  EXPECT_EQ(d.length, r.length);
  b[0] ^= 1;
  EXPECT_FALSE(DecodeRequest(b, &d));
}

TEST(Codec, SimpleAndStructuredReplies) {
  uint8_t b[kStructuredReplyHeaderSize];
  EncodeSimpleReply({kEPERM, 77}, b);
  SimpleReply s;
  ASSERT_TRUE(DecodeSimpleReply(b, &s));
  EXPECT_EQ(s.error, kEPERM);
  EXPECT_EQ(s.cookie, 77u);
  StructuredReplyHeader h{kReplyFlagDone, kReplyTypeOffsetData, 9, 4104};
  EncodeStructuredHeader(h, b);
  StructuredReplyHeader g;
  ASSERT_TRUE(DecodeStructuredHeader(b, &g));
  EXPECT_EQ(g.flags, h.flags);
  EXPECT_EQ(g.type, h.type);
  EXPECT_EQ(g.cookie, 9u);
  EXPECT_EQ(g.length, 4104u);
  EXPECT_FALSE(DecodeSimpleReply(b, &s));
}

TEST(ExportNameTest, Parses) {
  ExportName e;
  ASSERT_TRUE(ParseExportName("vol1", &e));
  EXPECT_EQ(e.volume, "vol1");
  EXPECT_EQ(e.epoch, 0u);
  EXPECT_EQ(e.snapshot, "");
  ASSERT_TRUE(ParseExportName("vol1@42", &e));
  EXPECT_EQ(e.volume, "vol1");
  EXPECT_EQ(e.epoch, 42u);
  ASSERT_TRUE(ParseExportName("v@18446744073709551615", &e));
  EXPECT_EQ(e.epoch, UINT64_MAX);
  ASSERT_TRUE(ParseExportName("vol.a-b_c:snap-1", &e));
  EXPECT_EQ(e.volume, "vol.a-b_c");
  EXPECT_EQ(e.snapshot, "snap-1");
  EXPECT_EQ(FormatExportName(e), "vol.a-b_c:snap-1");
  ExportName f{"x", "", 7};
  EXPECT_EQ(FormatExportName(f), "x@7");
  ASSERT_TRUE(ParseExportName("vol1@+5", &e));
  EXPECT_EQ(e.volume, "vol1");
  EXPECT_EQ(e.epoch, 5u);
  EXPECT_TRUE(e.raise);
  EXPECT_EQ(FormatExportName(e), "vol1@+5");
  ASSERT_TRUE(ParseExportName("vol1@5", &e));
  EXPECT_FALSE(e.raise);
}

TEST(ExportNameTest, RejectsGarbage) {
  ExportName e;
  std::string why;
  for (const char* bad : {"", "@1", ":s", "v@", "v:", "v@1:s", "v:s@1", "v@-1", "v@+", "v@+0", "v@++1", "v@+-1", "v@1+", "v@1x", "v@ 1",
                          "v@18446744073709551616", "v@123456789012345678901", "v:a:b"}) {
    EXPECT_FALSE(ParseExportName(bad, &e, &why)) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

std::string Req(uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0, uint64_t cookie = 1) {
  uint8_t b[kRequestSize];
  EncodeRequest({flags, type, cookie, off, len}, b);
  return std::string(reinterpret_cast<char*>(b), kRequestSize);
}

TEST(Parser, SplitsRequestsInAnySplit) {
  std::string stream = Req(kCmdRead, 0, 512, 0, 1) + Req(kCmdWrite, 4096, 5, kCmdFlagFua, 2) + "hello" +
                       Req(kCmdFlush, 0, 0, 0, 3) + Req(kCmdDisc, 0, 0, 0, 4);
  for (size_t step : {1u, 2u, 3u, 7u, 28u, 33u, 1000u}) {
    RequestParser p;
    std::vector<Request> got;
    std::vector<std::string> payloads;
    size_t pos = 0;
    while (pos < stream.size()) {
      size_t n = std::min(step, stream.size() - pos);
      size_t used = p.Consume(reinterpret_cast<const uint8_t*>(stream.data()) + pos, n);
      pos += used;
      if (p.state() == RequestParser::State::kReady) {
        got.push_back(p.request());
        payloads.emplace_back(p.payload().data() ? std::string(p.payload().data(), p.payload().size()) : "");
        p.Next();
      }
      ASSERT_NE(p.state(), RequestParser::State::kBroken);
    }
    ASSERT_EQ(got.size(), 4u) << step;
    EXPECT_EQ(got[0].type, kCmdRead);
    EXPECT_EQ(got[1].type, kCmdWrite);
    EXPECT_EQ(got[1].flags, kCmdFlagFua);
    EXPECT_EQ(payloads[1], "hello");
    EXPECT_EQ(got[2].type, kCmdFlush);
    EXPECT_EQ(got[3].cookie, 4u);
  }
}

TEST(Parser, PayloadTailAllowsDirectFill) {
  RequestParser p;
  std::string h = Req(kCmdWrite, 0, 10);
  p.Consume(reinterpret_cast<const uint8_t*>(h.data()), h.size());
  ASSERT_EQ(p.state(), RequestParser::State::kPayload);
  size_t missing = 0;
  char* dst = p.payload_tail(&missing);
  ASSERT_EQ(missing, 10u);
  std::memcpy(dst, "0123", 4);
  p.PayloadFilled(4);
  dst = p.payload_tail(&missing);
  ASSERT_EQ(missing, 6u);
  std::memcpy(dst, "456789", 6);
  p.PayloadFilled(6);
  ASSERT_EQ(p.state(), RequestParser::State::kReady);
  EXPECT_EQ(std::string(p.payload().data(), 10), "0123456789");
}

TEST(Parser, BadMagicAndHugeWriteBreakTheStream) {
  RequestParser p;
  std::string h = Req(kCmdRead, 0, 1);
  h[0] = 'X';
  p.Consume(reinterpret_cast<const uint8_t*>(h.data()), h.size());
  EXPECT_EQ(p.state(), RequestParser::State::kBroken);
  RequestParser q;
  std::string w = Req(kCmdWrite, 0, kMaxPayload + 1);
  q.Consume(reinterpret_cast<const uint8_t*>(w.data()), w.size());
  EXPECT_EQ(q.state(), RequestParser::State::kBroken);
  EXPECT_FALSE(q.error().empty());
}

TEST(Parser, RandomGarbageNeverCrashes) {
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 2000; ++iter) {
    std::string s(rng() % 200, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    if (iter % 2) s.replace(0, std::min<size_t>(4, s.size()), "\x25\x60\x95\x13", std::min<size_t>(4, s.size()));
    RequestParser p;
    size_t pos = 0;
    int guard = 0;
    while (pos < s.size() && p.state() != RequestParser::State::kBroken && guard++ < 1000) {
      pos += p.Consume(reinterpret_cast<const uint8_t*>(s.data()) + pos, s.size() - pos);
      if (p.state() == RequestParser::State::kReady) {
        Session ses;
        ses.tflags = kTFlagHasFlags;
        (void)CheckRequest(p.request(), 1 << 20, ses);
        p.Next();
      }
    }
    EXPECT_LT(guard, 1000);
  }
}

TEST(Check, Rules) {
  Session rw;
  rw.tflags = kTFlagHasFlags | kTFlagSendFua;
  Session ro = rw;
  ro.tflags |= kTFlagReadOnly;
  const uint64_t size = 1 << 20;
  auto R = [](uint16_t type, uint64_t off, uint32_t len, uint16_t flags = 0) {
    return Request{flags, type, 1, off, len};
  };
  EXPECT_EQ(CheckRequest(R(kCmdRead, 0, 4096), size, rw), 0u);
  EXPECT_EQ(CheckRequest(R(kCmdRead, size - 1, 1), size, rw), 0u);
  EXPECT_EQ(CheckRequest(R(kCmdRead, size - 1, 2), size, rw), kEINVAL);
  EXPECT_EQ(CheckRequest(R(kCmdRead, UINT64_MAX, 2), size, rw), kEINVAL);
  EXPECT_EQ(CheckRequest(R(kCmdRead, 0, kMaxPayload + 1), UINT64_MAX, rw), kEOVERFLOW);
  EXPECT_EQ(CheckRequest(R(kCmdRead, 0, 0), size, rw), kEINVAL);
  EXPECT_EQ(CheckRequest(R(kCmdRead, 0, 512, kCmdFlagDf), size, rw), kEINVAL);  // DF needs structured
  EXPECT_EQ(CheckRequest(R(kCmdWrite, 0, 512, kCmdFlagFua), size, rw), 0u);
  EXPECT_EQ(CheckRequest(R(kCmdWrite, size, 512), size, rw), kENOSPC);
  EXPECT_EQ(CheckRequest(R(kCmdWrite, 0, 512), size, ro), kEPERM);
  EXPECT_EQ(CheckRequest(R(kCmdTrim, 0, 512), size, ro), kEPERM);
  EXPECT_EQ(CheckRequest(R(kCmdWriteZeroes, 0, 512, kCmdFlagNoHole), size, rw), 0u);
  EXPECT_EQ(CheckRequest(R(kCmdWriteZeroes, 0, 512, kCmdFlagFastZero), size, rw), kEINVAL);
  EXPECT_EQ(CheckRequest(R(kCmdWrite, 0, 512, kCmdFlagNoHole), size, rw), kEINVAL);
  EXPECT_EQ(CheckRequest(R(kCmdFlush, 0, 0), size, ro), 0u);
  EXPECT_EQ(CheckRequest(R(kCmdBlockStatus, 0, 512), size, rw), kEINVAL);  // no meta context
  Session meta = rw;
  meta.structured = true;
  meta.base_allocation = true;
  EXPECT_EQ(CheckRequest(R(kCmdBlockStatus, 0, 512, kCmdFlagReqOne), size, meta), 0u);
  EXPECT_EQ(CheckRequest(R(99, 0, 512), size, rw), kEINVAL);
}

}  // namespace
}  // namespace ferry::nbd
