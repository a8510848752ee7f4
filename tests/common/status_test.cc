#include "target/common/status.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace ferry {
namespace {

TEST(Status, OkAndErrors) {
  EXPECT_TRUE(Status::Ok().ok());
  Status s = Status::NotFound("volume v1");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.http_status(), 404);
  EXPECT_EQ(s.ToString(), "not found: volume v1");
  EXPECT_EQ(Status::InvalidArgument("x").http_status(), 400);
  EXPECT_EQ(Status::Conflict("x").http_status(), 409);
  EXPECT_EQ(Status::Internal("x").http_status(), 500);
}

TEST(Status, FromErrnoMapsCommonErrors) {
  EXPECT_EQ(Status::FromErrno(ENOENT, "open").code(), Status::Code::kNotFound);
  EXPECT_EQ(Status::FromErrno(ENOSPC, "write").code(), Status::Code::kNoSpace);
  EXPECT_EQ(Status::FromErrno(ECONNREFUSED, "connect").code(), Status::Code::kUnavailable);
  EXPECT_EQ(Status::FromErrno(EIO, "read").code(), Status::Code::kIoError);
  EXPECT_NE(Status::FromErrno(EIO, "read").message().find("read: "), std::string::npos);
}

Result<int> Half(int x) {
  if (x % 2) return Status::InvalidArgument("odd");
  return x / 2;
}

Status UseHalf(int x, int* out) {
  auto r = Half(x);
  if (!r.ok()) return r.status();
  *out = *r;
  return Status::Ok();
}

TEST(Result, ValueOrStatus) {
  int v = 0;
  EXPECT_TRUE(UseHalf(8, &v).ok());
  EXPECT_EQ(v, 4);
  Status s = UseHalf(3, &v);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(Half(2).status().ok());
}

}  // namespace
}  // namespace ferry
