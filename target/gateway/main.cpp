// ferry-gateway: wires configuration to a Gateway and waits for SIGINT/SIGTERM.
#include <signal.h>
#include <unistd.h>

#include <cstdio>

#include "target/common/config.h"
#include "target/common/logger.h"
#include "target/gateway/gateway.h"

int main(int argc, char** argv) {
  using ferry::gateway::GatewayOptions;
  ferry::Config config;
  ferry::Status st = config.ParseArgs(argc, argv, "gateway", GatewayOptions::Flags());
  if (!st.ok()) {
    std::fprintf(stderr, "ferry-gateway: %s\n%s", st.message().c_str(), GatewayOptions::Usage().c_str());
    return 2;
  }
  if (config.Has("gateway", "help")) {
    std::fputs(GatewayOptions::Usage().c_str(), stdout);
    return 0;
  }
  auto opts = GatewayOptions::FromConfig(config);
  if (!opts.ok()) {
    std::fprintf(stderr, "ferry-gateway: %s\n", opts.status().message().c_str());
    return 2;
  }
  // Block the stop signals in every thread; main waits for them below.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ferry::Logger log("gateway", opts->log_level);
  ferry::gateway::Gateway gw(opts.value(), log);
  st = gw.Start();
  if (!st.ok()) {
    log.Error("cannot start: " + st.ToString());
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  log.Info(std::string("signal ") + std::to_string(sig) + ": stopping");
  gw.Stop();
  return 0;
}
