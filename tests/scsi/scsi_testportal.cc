// ferry-scsi-testportal: TEST HARNESS ONLY. Serves RAM LUNs through the real
// SCSI device server (scsi::Target) and the real iSCSI transport, so that
// libiscsi's iscsi-test-cu can check the SCSI layer without gateways. Not a
// product binary: no persistence, no gateways, admits every initiator.
#include <signal.h>

#include <iostream>
#include <mutex>

#include "target/common/config.h"
#include "target/common/logger.h"
#include "target/iscsi/portal.h"
#include "target/scsi/target.h"
#include "tests/scsi/ram_device.h"

namespace {

const char kHelp[] =
    "ferry-scsi-testportal: TEST HARNESS for Ferry's SCSI device server (RAM LUNs, no gateways).\n"
    "  --listen HOST:PORT   (default 127.0.0.1:0)\n"
    "  --iqn IQN            (default iqn.2026-11.io.ferry:scsi-test)\n"
    "  --size-mb N          size of each LUN (default 64)\n"
    "  --luns N             number of LUNs, numbered 0..N-1 (default 1)\n"
    "  --log-level debug|info|warn|error\n"
    "Prints 'READY host:port' when listening; stops on SIGTERM/SIGINT.\n";

class OneTarget : public ferry::iscsi::TargetDirectory {
 public:
  explicit OneTarget(ferry::iscsi::TargetEntry e) : e_(std::move(e)) {}
  std::optional<ferry::iscsi::TargetEntry> Find(const std::string& iqn) override {
    if (iqn != e_.iqn) return std::nullopt;
    return e_;
  }
  bool Admits(const std::string& iqn, const std::string&, const std::string&) override { return iqn == e_.iqn; }
  std::vector<ferry::iscsi::DiscoveredTarget> Discover(const std::string&, const std::string&,
                                                       const std::string&) override {
    return {{e_.iqn, e_.tpgt, {}}};
  }
  ferry::iscsi::TargetAuth DiscoveryAuth() override { return {}; }

 private:
  const ferry::iscsi::TargetEntry e_;
};

}  // namespace

int main(int argc, char** argv) {
  ferry::Config cfg;
  ferry::Status st = cfg.ParseArgs(argc, argv, "testportal", {"listen", "iqn", "size-mb", "luns", "log-level", "help"});
  if (!st.ok()) {
    std::cerr << st.ToString() << "\n" << kHelp;
    return 2;
  }
  if (cfg.Has("testportal", "help")) {
    std::cout << kHelp;
    return 0;
  }
  auto num = [&](const char* k, int64_t d) {
    auto r = cfg.GetInt("testportal", k, d);
    return r.ok() ? *r : d;
  };
  ferry::Logger log("scsi-testportal", ferry::ParseLogLevel(cfg.Get("testportal", "log_level", "warn")));
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  std::string iqn = cfg.Get("testportal", "iqn", "iqn.2026-11.io.ferry:scsi-test");
  auto target = std::make_shared<ferry::scsi::Target>(ferry::scsi::TargetOptions{iqn, log.Child("scsi")});
  for (int64_t i = 0; i < std::max<int64_t>(1, num("luns", 1)); ++i) {
    ferry::scsi::LunIdentity id;
    id.volume_name = "ram-" + std::to_string(i);
    auto dev = std::make_shared<ferry::scsi::testing::RamDevice>(uint64_t(num("size_mb", 64)) << 20);
    st = target->AddLun(uint64_t(i), dev, id);
    if (!st.ok()) {
      std::cerr << st.ToString() << "\n";
      return 1;
    }
  }
  ferry::iscsi::TargetEntry e;
  e.iqn = iqn;
  e.sink = target;
  auto dir = std::make_shared<OneTarget>(e);
  ferry::iscsi::IscsiServerOptions opts;
  opts.listen = cfg.GetAll("testportal", "listen");
  if (opts.listen.empty()) opts.listen = {"127.0.0.1:0"};
  ferry::iscsi::IscsiServer server(opts, dir, log.Child("iscsi"));
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
