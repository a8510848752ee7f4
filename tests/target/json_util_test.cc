// JsonWriter: escaping and structure, checked by parsing the output back.
#include "target/server/json_util.h"

#include <gtest/gtest.h>

#include <string>

namespace ferry::server {
namespace {

TEST(JsonWriterTest, EscapesOnlyWhatJsonRequiresAndParsesBack) {
  const std::string nasty = std::string("a\"b\\c\n\r\t\x01\x1f/\x7f", 12) + "\xc3\xa9 end";
  JsonWriter w;
  w.Reserve(16);
  w.BeginObject().Field("plain", "vol-1").Field("nasty", nasty).Field("n", int64_t{-7});
  w.Key("list").StringArray({"x", "", "y\"z"}).Field("ok", true).EndObject();
  const std::string out = w.Take();
  EXPECT_EQ(out.find('\n'), std::string::npos);
  EXPECT_NE(out.find("\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001f/\x7f\xc3\xa9 end\""), std::string::npos) << out;
  auto o = ParseJsonObject(out);
  ASSERT_TRUE(o.ok()) << o.status().ToString() << " in " << out;
  EXPECT_EQ((*o)->getValue<std::string>("plain"), "vol-1");
  EXPECT_EQ((*o)->getValue<std::string>("nasty"), nasty);
  EXPECT_EQ((*o)->getValue<int64_t>("n"), -7);
  EXPECT_EQ((*o)->getArray("list")->getElement<std::string>(2), "y\"z");
}

TEST(JsonWriterTest, EmptyContainersAndCommas) {
  JsonWriter w;
  w.BeginObject().Key("a").BeginArray().EndArray().Key("b").BeginObject().EndObject().Field("c", "").EndObject();
  EXPECT_EQ(w.str(), "{\"a\":[],\"b\":{},\"c\":\"\"}");
}

}  // namespace
}  // namespace ferry::server
