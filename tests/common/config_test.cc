#include "target/common/config.h"

#include <gtest/gtest.h>

namespace ferry {
namespace {

TEST(Config, ParsesSectionsAndComments) {
  Config c;
  ASSERT_TRUE(c.ParseIni("# comment\n[gateway]\ndata-dir = /srv/ferry\n nbd_listen=127.0.0.1:9000 \n"
                         "[target]\niscsi_listen = a:1\niscsi_listen = b:2\n", "t.ini")
                  .ok());
  EXPECT_EQ(c.Get("gateway", "data_dir"), "/srv/ferry");
  EXPECT_EQ(c.Get("gateway", "nbd_listen"), "127.0.0.1:9000");
  EXPECT_EQ(c.GetAll("target", "iscsi_listen").size(), 2u);
  EXPECT_EQ(c.Get("gateway", "missing", "dflt"), "dflt");
}

TEST(Config, ReportsBadLinesWithPosition) {
  Config c;
  Status s = c.ParseIni("[a]\nnot a pair\n", "x.ini");
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(s.message().find("x.ini:2"), std::string::npos);
  EXPECT_FALSE(Config().ParseIni("k=v\n", "y").ok());    // outside a section
  EXPECT_FALSE(Config().ParseIni("[broken\n", "y").ok());
}

TEST(Config, FlagsOverrideFileAndRepeat) {
  Config c;
  const char* argv[] = {"prog", "--token", "T1", "--iscsi-listen=127.0.0.1:1", "--iscsi-listen",
                        "127.0.0.2:2"};
  ASSERT_TRUE(c.ParseArgs(6, const_cast<char**>(argv), "target", {"token", "iscsi-listen"}).ok());
  ASSERT_TRUE(c.ParseIni("[target]\ntoken = fromfile\nstate_dir = /s\n", "f").ok());
  EXPECT_EQ(c.Get("target", "token"), "T1");
  EXPECT_EQ(c.Get("target", "state_dir"), "/s");
  EXPECT_EQ(c.GetAll("target", "iscsi_listen"),
            (std::vector<std::string>{"127.0.0.1:1", "127.0.0.2:2"}));
}

TEST(Config, RejectsUnknownFlagsAndMissingValues) {
  Config c;
  const char* a1[] = {"prog", "--bogus", "1"};
  EXPECT_FALSE(c.ParseArgs(3, const_cast<char**>(a1), "x", {"token"}).ok());
  const char* a2[] = {"prog", "--token"};
  EXPECT_FALSE(c.ParseArgs(2, const_cast<char**>(a2), "x", {"token"}).ok());
}

TEST(Config, IntegersAreChecked) {
  Config c;
  ASSERT_TRUE(c.ParseIni("[a]\nn = 42\nbad = 4x\n", "f").ok());
  EXPECT_EQ(*c.GetInt("a", "n", 0), 42);
  EXPECT_EQ(*c.GetInt("a", "absent", 7), 7);
  EXPECT_FALSE(c.GetInt("a", "bad", 0).ok());
}

TEST(HostPort, ParsesAndValidates) {
  auto hp = ParseHostPort("127.0.0.2:3260");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->host, "127.0.0.2");
  EXPECT_EQ(hp->port, 3260);
  auto v6 = ParseHostPort("[::1]:8585");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->ToString(), "[::1]:8585");
  EXPECT_FALSE(ParseHostPort("nohost").ok());
  EXPECT_FALSE(ParseHostPort("h:0").ok());
  EXPECT_FALSE(ParseHostPort("h:65536").ok());
  EXPECT_FALSE(ParseHostPort("h:12a").ok());
  EXPECT_FALSE(ParseHostPort(":80").ok());
}

}  // namespace
}  // namespace ferry
