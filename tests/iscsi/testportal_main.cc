// ferry-iscsi-testportal: TEST HARNESS ONLY. Serves one RAM LUN through the
// real iSCSI transport (target/iscsi) so libiscsi's tools can be pointed at
// it. Not a product binary: no persistence, no real SCSI device server.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "target/common/config.h"
#include "target/common/logger.h"
#include "target/iscsi/portal.h"
#include "tests/iscsi/ram_lun.h"
#include "tests/iscsi/test_directory.h"

namespace {
const char kHelp[] =
    "ferry-iscsi-testportal: TEST HARNESS for Ferry's iSCSI transport (one RAM LUN, toy SCSI).\n"
    "  --listen HOST:PORT     (repeatable; default 127.0.0.1:0)\n"
    "  --iqn IQN              target name (default iqn.2026-11.org.ferry:test)\n"
    "  --size-mb N            LUN size (default 64)\n"
    "  --chap-user U --chap-secret S        require one-way CHAP\n"
    "  --mutual-user U --mutual-secret S    answer mutual CHAP\n"
    "  --discovery-chap 1     discovery sessions need the same CHAP\n"
    "  --allow NAME           admit only this initiator name (repeatable)\n"
    "  --nop-interval-ms N --nop-timeout-ms N --login-timeout-ms N\n"
    "  --log-level debug|info|warn|error\n"
    "Prints 'READY host:port ...' when listening; stops on SIGTERM/SIGINT.\n";
}

int main(int argc, char** argv) {
  ferry::Config cfg;
  ferry::Status st = cfg.ParseArgs(argc, argv, "testportal",
                                   {"listen", "iqn", "size-mb", "chap-user", "chap-secret", "mutual-user",
                                    "mutual-secret", "discovery-chap", "allow", "nop-interval-ms",
                                    "nop-timeout-ms", "login-timeout-ms", "log-level", "help"});
  if (!st.ok()) {
    std::cerr << st.ToString() << "\n" << kHelp;
    return 2;
  }
  if (cfg.Has("testportal", "help")) {
    std::cout << kHelp;
    return 0;
  }
  auto get = [&](const char* k, const char* d) { return cfg.Get("testportal", k, d); };
  auto num = [&](const char* k, int64_t d) {
    auto r = cfg.GetInt("testportal", k, d);
    return r.ok() ? *r : d;
  };
  ferry::Logger log("testportal", ferry::ParseLogLevel(get("log_level", "info")));

  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto lun = std::make_shared<ferry::iscsi::testing::RamLun>(uint64_t(num("size_mb", 64)) << 20);
  auto dir = std::make_shared<ferry::iscsi::testing::FixedDirectory>();
  ferry::iscsi::TargetEntry e;
  e.iqn = get("iqn", "iqn.2026-11.org.ferry:test");
  e.sink = lun;
  e.auth.chap_user = get("chap_user", "");
  e.auth.chap_secret = get("chap_secret", "");
  e.auth.mutual_user = get("mutual_user", "");
  e.auth.mutual_secret = get("mutual_secret", "");
  if (cfg.Has("testportal", "discovery_chap")) dir->SetDiscoveryAuth(e.auth);
  dir->Add(e, cfg.GetAll("testportal", "allow"));

  ferry::iscsi::IscsiServerOptions opts;
  opts.listen = cfg.GetAll("testportal", "listen");
  if (opts.listen.empty()) opts.listen = {"127.0.0.1:0"};
  opts.nop_interval_ms = int(num("nop_interval_ms", opts.nop_interval_ms));
  opts.nop_timeout_ms = int(num("nop_timeout_ms", opts.nop_timeout_ms));
  opts.login_timeout_ms = int(num("login_timeout_ms", opts.login_timeout_ms));
  ferry::iscsi::IscsiServer server(opts, dir, log);
  st = server.Start();
  if (!st.ok()) {
    std::cerr << st.ToString() << "\n";
    return 1;
  }
  std::string line = "READY";
  for (const auto& hp : server.BoundAddresses()) line += " " + hp.ToString();
  std::cout << line << std::endl;
  int sig = 0;
  sigwait(&set, &sig);
  server.Stop();
  return 0;
}
