// ItemTemplate, ResponseParser and LoadReport of ferry-httpload, without sockets.
#include <gtest/gtest.h>

#include <string>

#include "bench/httpload/item_template.h"
#include "bench/httpload/load_runner.h"
#include "bench/httpload/response_parser.h"

namespace ferry::httpload {
namespace {

using State = ResponseParser::State;

std::string Expand(const std::string& text, int64_t i) {
  auto t = ItemTemplate::Parse(text);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? t->Expand(i) : "";
}

TEST(ItemTemplate, SubstitutesPlainAndPaddedItems) {
  EXPECT_EQ(Expand("/v1/volumes/vol{i:05}", 7), "/v1/volumes/vol00007");
  EXPECT_EQ(Expand("/x/{i}/{i:03}", 1234), "/x/1234/1234");
  EXPECT_EQ(Expand("/healthz", 3), "/healthz");
  EXPECT_FALSE(ItemTemplate::Parse("/healthz")->HasPlaceholder());
  EXPECT_TRUE(ItemTemplate::Parse("/{i}")->HasPlaceholder());
}

TEST(ItemTemplate, KeepsJsonBracesAroundPlaceholders) {
  EXPECT_EQ(Expand(R"({"connector": {"host": "h{i}", "iqn": "iqn.x:{i:04}"}, "e": {}})", 42),
            R"({"connector": {"host": "h42", "iqn": "iqn.x:0042"}, "e": {}})");
  EXPECT_EQ(Expand("{}{{i}}{x}", 5), "{}{5}{x}");
}

TEST(ItemTemplate, RejectsMalformedPlaceholders) {
  for (const char* bad : {"/x{i:5}", "/x{i:0}", "/x{i", "/x{i:05", "/x{ix}", "/x{i:0a}", "/x{i:021}", "/x{id}"}) {
    auto t = ItemTemplate::Parse(bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_NE(t.status().message().find("bad placeholder"), std::string::npos) << t.status().message();
  }
}

// Feeds `wire` to a parser in pieces of `step` bytes; returns the parser.
ResponseParser FeedInSteps(const std::string& wire, size_t step, bool head = false, size_t* used = nullptr) {
  ResponseParser p(head);
  size_t total = 0;
  for (size_t k = 0; k < wire.size() && p.state() == State::kNeedMore; k += step) {
    size_t n = std::min(step, wire.size() - k);
    total += p.Feed(wire.data() + k, n);
  }
  if (used) *used = total;
  return p;
}

TEST(ResponseParser, ContentLengthAtEverySplit) {
  const std::string wire = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\ncontent-length: 11\r\n\r\n{\"a\": true}";
  for (size_t step = 1; step <= wire.size(); ++step) {
    size_t used = 0;
    ResponseParser p = FeedInSteps(wire + "HTTP/1.1 200 OK\r\n", step, false, &used);
    ASSERT_EQ(p.state(), State::kDone) << step;
    EXPECT_EQ(used, wire.size()) << "took bytes of the next response, step " << step;
    EXPECT_EQ(p.status(), 201);
    EXPECT_EQ(p.body(), "{\"a\": true}");
    EXPECT_TRUE(p.keep_alive());
  }
}

TEST(ResponseParser, ChunkedWithExtensionsAndTrailersAtEverySplit) {
  const std::string wire =
      "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nX-Trailer: 1\r\n\r\n";
  for (size_t step = 1; step <= wire.size(); ++step) {
    size_t used = 0;
    ResponseParser p = FeedInSteps(wire + "junk", step, false, &used);
    ASSERT_EQ(p.state(), State::kDone) << step << ": " << p.error();
    EXPECT_EQ(used, wire.size());
    EXPECT_EQ(p.status(), 500);
    EXPECT_EQ(p.body(), "hello abcdefghijklmnopqrstuvwxy");
  }
}

TEST(ResponseParser, NoBodyForHeadAnd204And304) {
  EXPECT_EQ(FeedInSteps("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 7, true).state(), State::kDone);
  EXPECT_EQ(FeedInSteps("HTTP/1.1 204 No Content\r\n\r\n", 3).state(), State::kDone);
  EXPECT_EQ(FeedInSteps("HTTP/1.1 304 Not Modified\r\n\r\n", 3).state(), State::kDone);
}

TEST(ResponseParser, SkipsInterimResponses) {
  ResponseParser p = FeedInSteps("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 5);
  ASSERT_EQ(p.state(), State::kDone);
  EXPECT_EQ(p.status(), 200);
  EXPECT_EQ(p.body(), "ok");
}

TEST(ResponseParser, CloseDelimitedBodyAndConnectionClose) {
  ResponseParser p = FeedInSteps("HTTP/1.0 200 OK\r\n\r\nuntil the end", 4);
  EXPECT_EQ(p.state(), State::kNeedMore);
  p.FeedEof();
  ASSERT_EQ(p.state(), State::kDone);
  EXPECT_EQ(p.body(), "until the end");
  EXPECT_FALSE(p.keep_alive());
  EXPECT_FALSE(FeedInSteps("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 9).keep_alive());
  EXPECT_TRUE(FeedInSteps("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", 9).keep_alive());
}

TEST(ResponseParser, EarlyCloseIsAnErrorAndSaysWhetherAnythingCame) {
  ResponseParser none;
  none.FeedEof();
  EXPECT_EQ(none.state(), State::kError);
  EXPECT_FALSE(none.started());
  ResponseParser half = FeedInSteps("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 4);
  half.FeedEof();
  EXPECT_EQ(half.state(), State::kError);
  EXPECT_TRUE(half.started());
  EXPECT_NE(half.error().find("closed in the middle"), std::string::npos);
}

TEST(ResponseParser, MalformedResponsesFailWithAReason) {
  struct Case {
    const char* wire;
    const char* reason;
  } cases[] = {
      {"HTTX/1.1 200 OK\r\n\r\n", "bad status line"},
      {"HTTP/1.1 2x0 OK\r\n\r\n", "bad status line"},
      {"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"},
      {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting Content-Length"},
      {"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", "larger than"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"},
      {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n", "longer than its declared size"},
      {"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"},
  };
  for (const Case& c : cases) {
    ResponseParser p = FeedInSteps(c.wire, 3);
    ASSERT_EQ(p.state(), State::kError) << c.wire;
    EXPECT_NE(p.error().find(c.reason), std::string::npos) << c.wire << " -> " << p.error();
  }
  ResponseParser big;
  std::string head = "HTTP/1.1 200 OK\r\nX: " + std::string(ResponseParser::kMaxHead, 'a');
  big.Feed(head.data(), head.size());
  EXPECT_EQ(big.state(), State::kError);
  EXPECT_NE(big.error().find("head larger than"), std::string::npos);
}

TEST(LoadReport, PercentilesAsBenchControlComputesThem) {
  LoadReport r;
  for (int k = 1; k <= 200; ++k) r.latencies_ms.push_back(k);
  EXPECT_EQ(r.Percentile(50), 101);  // sorted[200 * 50 / 100]
  EXPECT_EQ(r.Percentile(99), 199);
  EXPECT_EQ(r.Percentile(100), 200);
  r.latencies_ms = {4.0};
  EXPECT_EQ(r.Percentile(99), 4.0);
  EXPECT_EQ(LoadReport().Percentile(50), 0);
}

TEST(LoadReport, JsonEscapesBodiesAndReplacesInvalidUtf8) {
  LoadReport r;
  r.latencies_ms = {1.5};
  r.errors = 1;
  r.seconds = 0.5;
  r.first_errors.push_back({3, 404, "", "{\"error\": \"a\\b\"}\n\x01\xff caf\xc3\xa9"});
  EXPECT_EQ(r.ToJson(),
            "{\"n\": 1, \"errors\": 1, \"p50_ms\": 1.500, \"p90_ms\": 1.500, \"p99_ms\": 1.500, \"max_ms\": 1.500, "
            "\"seconds\": 0.500, \"rps\": 2.0, \"first_errors\": [{\"item\": 3, \"status\": 404, \"error\": \"\", "
            "\"body\": \"{\\\"error\\\": \\\"a\\\\b\\\"}\\u000a\\u0001? caf\xc3\xa9\"}]}");
}

TEST(LoadRunner, BuildsTheRequestFromTheTemplates) {
  LoadSpec spec;
  spec.endpoint.host_header = "127.0.0.1:8888";
  spec.method = "POST";
  spec.path = *ItemTemplate::Parse("/v1/volumes/vol{i:05}/attachments");
  spec.body = *ItemTemplate::Parse(R"({"host": "h{i}"})");
  spec.token = "t";
  EXPECT_EQ(LoadRunner(spec).BuildRequest(12),
            "POST /v1/volumes/vol00012/attachments HTTP/1.1\r\nHost: 127.0.0.1:8888\r\nX-Ferry-Token: t\r\n"
            "Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"host\": \"h12\"}");
  spec.body.reset();
  spec.token.clear();
  spec.method = "PUT";
  spec.path = *ItemTemplate::Parse("/tgtmaster/tgtmap");
  EXPECT_EQ(LoadRunner(spec).BuildRequest(0),
            "PUT /tgtmaster/tgtmap HTTP/1.1\r\nHost: 127.0.0.1:8888\r\nContent-Length: 0\r\n\r\n");
}

}  // namespace
}  // namespace ferry::httpload
