// ferry-target: the iSCSI target of Ferry (see docs/target.md).
// Only wiring: flags/INI -> TargetProcess, then wait for SIGTERM/SIGINT.
#include <malloc.h>
#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "target/common/config.h"
#include "target/server/process.h"

int main(int argc, char** argv) {
  // Read buffers (up to the 8 MiB transfer limit, one per command in flight)
  // come from the heap and stay there: glibc would otherwise mmap each large
  // one and trim freed memory at 2x the last size, so every large read paid
  // for fresh page faults and zeroing. In-flight buffers are bounded by the
  // queue depth, so the retained memory is bounded too.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  // --demo-open is a switch: give it a value so the common flag parser accepts it bare.
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i)
    if (args[i] == "--demo-open" && (i + 1 == args.size() || args[i + 1].rfind("--", 0) == 0))
      args[i] = "--demo-open=1";
  std::vector<char*> av;
  for (auto& a : args) av.push_back(a.data());

  ferry::Config cfg;
  ferry::Status st = cfg.ParseArgs(static_cast<int>(av.size()), av.data(), "target",
                                   ferry::server::TargetProcessOptions::Flags());
  if (cfg.Has("target", "help")) {
    std::fputs(ferry::server::TargetProcessOptions::Usage().c_str(), stdout);
    return 0;
  }
  if (!st.ok()) {
    std::fprintf(stderr, "ferry-target: %s\n%s", st.message().c_str(),
                 ferry::server::TargetProcessOptions::Usage().c_str());
    return 2;
  }
  auto opts = ferry::server::TargetProcessOptions::FromConfig(cfg);
  if (!opts.ok()) {
    std::fprintf(stderr, "ferry-target: %s\n", opts.status().message().c_str());
    return 2;
  }

  // Block the stop signals before any thread starts, then wait for one.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);

  ferry::server::TargetProcess process(opts.value());
  st = process.Start();
  if (!st.ok()) {
    std::fprintf(stderr, "ferry-target: %s\n", st.ToString().c_str());
    return 1;
  }
  int sig = 0;
  sigwait(&set, &sig);
  process.Stop();
  return 0;
}
