// Ctl: ferryctl's commands over the backend's v1 and compatibility APIs.
//
// Promise: Run() parses argv, makes the HTTP calls and prints either a human
// table or (with --json) the backend's JSON; it returns 0 on success and
// non-zero with a one-line reason on the error stream otherwise. No globals;
// all I/O goes to the given streams.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace ferry::ctl {

struct CtlEnv {
  std::string url = "http://127.0.0.1:8888";
  std::string token;
};

int Run(const std::vector<std::string>& args, const CtlEnv& env, std::ostream& out, std::ostream& err);

}  // namespace ferry::ctl
