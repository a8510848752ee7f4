// ferryctl: operator CLI. Wires argv and the environment to ctl::Run.
#include <cstdlib>
#include <iostream>

#include "backend/ctl/ctl.h"

int main(int argc, char** argv) {
  ferry::ctl::CtlEnv env;
  if (const char* u = std::getenv("FERRY_URL")) env.url = u;
  if (const char* t = std::getenv("FERRY_TOKEN")) env.token = t;
  return ferry::ctl::Run(std::vector<std::string>(argv + 1, argv + argc), env, std::cout, std::cerr);
}
