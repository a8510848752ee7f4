// ferry-backend: wires configuration to objects. All logic lives in Backend,
// the API handlers, KafkaPublisher and the db layer.
#include <signal.h>

#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <thread>

#include "backend/api.h"
#include "backend/backend.h"
#include "backend/events.h"
#include "backend/kafka_publisher.h"
#include "backend/peers.h"
#include "db/database.h"
#include "target/common/config.h"
#include "target/common/http_server.h"
#include "target/common/logger.h"

namespace {

const char* kUsage = R"(usage: ferry-backend [--config FILE] [flags]
  --db FILE               SQLite map ([db] file; default ferry-backend.db)
  --listen HOST:PORT      HTTP(S) address (default 127.0.0.1:8888)
  --token T               shared token ([auth] token)
  --tls-cert PEM --tls-key PEM   serve HTTPS ([tls] cert/key)
  --kafka-brokers LIST --kafka-topic T   publish events ([kafka] brokers/topic)
  --http-threads N --http-queue N        HTTP worker pool and queue (16 / 256)
  --iqn-prefix P          default iqn.2026-11.io.ferry
  --heartbeat-miss N      missed 5 s beats before offline (default 3)
  --heartbeat-period-ms N expected beat period (default 5000)
  --reconcile-interval S  seconds between reconciler runs (default 30; 0 = only at start)
  --peer-timeout-ms N     timeout of calls to targets/gateways (default 10000)
  --capacity-gb N         capacity reported to Cinder (0 = infinite)
  --chap on|off           attachments get generated CHAP credentials (default on)
  --discovery-chap-user U --discovery-chap-secret S   discovery CHAP the targets use (reported to os-brick)
  --target-hosts H=IP,... connector host name -> target IP, for targets that do not report their host
  --status-max-age-ms N   volume/status may reuse an answer this old (default 500; 0 = only coalesce)
  --events-keep N         keep the newest N events (default 1000000; 0 = keep all); with Kafka only
                          delivered ones are dropped
  --log-level L           debug|info|warn|error
)";

std::string Pick(const ferry::Config& c, const std::string& flag, const std::string& sec,
                 const std::string& key, const std::string& def) {
  if (c.Has("backend", flag)) return c.Get("backend", flag);
  return c.Get(sec, key, def);
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ferry;
  Config cfg;
  Status st = cfg.ParseArgs(argc, argv, "backend",
                            {"db", "listen", "token", "tls-cert", "tls-key", "kafka-brokers", "kafka-topic",
                             "http-threads", "http-queue", "iqn-prefix", "heartbeat-miss", "heartbeat-period-ms",
                             "reconcile-interval", "peer-timeout-ms", "capacity-gb", "log-level", "crash-at", "chap",
                             "discovery-chap-user", "discovery-chap-secret", "target-hosts", "status-max-age-ms",
                             "events-keep"});
  if (!st.ok()) {
    std::cerr << "ferry-backend: " << st.message() << "\n" << kUsage;
    return 2;
  }
  if (cfg.Has("backend", "help")) {
    std::cout << kUsage;
    return 0;
  }
  Logger log("ferry-backend", ParseLogLevel(cfg.Get("backend", "log_level", "info")));
  auto num = [&](const std::string& key, int64_t def, int64_t lo, int64_t hi) -> int64_t {
    auto v = cfg.GetInt("backend", key, def);
    if (!v.ok() || *v < lo || *v > hi) {
      std::cerr << "ferry-backend: --" << key << " must be an integer in " << lo << ".." << hi << "\n";
      std::exit(2);
    }
    return *v;
  };
  auto listen = ParseHostPort(cfg.Get("backend", "listen", "127.0.0.1:8888"));
  if (!listen.ok()) {
    std::cerr << "ferry-backend: --listen: " << listen.status().message() << "\n";
    return 2;
  }
  std::string token = Pick(cfg, "token", "auth", "token", "");
  std::string db_path = Pick(cfg, "db", "db", "file", "ferry-backend.db");
  std::string tls_cert = Pick(cfg, "tls_cert", "tls", "cert", "");
  std::string tls_key = Pick(cfg, "tls_key", "tls", "key", "");
  if (tls_cert.empty() != tls_key.empty()) {
    std::cerr << "ferry-backend: --tls-cert and --tls-key go together\n";
    return 2;
  }
  std::string brokers = Pick(cfg, "kafka_brokers", "kafka", "brokers", "");
  std::string topic = Pick(cfg, "kafka_topic", "kafka", "topic", "ferry-events");

  // Signals are taken by sigwait below; every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto db = db::Database::Open(db_path);
  if (!db.ok()) {
    log.Error(db.status().ToString());
    return 1;
  }
  log.Info("map " + db_path + " at schema version " + std::to_string((*db)->version()));
  backend::EventLog events(db->get());
  const std::chrono::milliseconds peer_timeout(num("peer_timeout_ms", 10000, 100, 600000));
  backend::HttpPeerApi peers(token, peer_timeout);
  backend::BackendOptions bo;
  bo.iqn_prefix = cfg.Get("backend", "iqn_prefix", "iqn.2026-11.io.ferry");
  bo.heartbeat_miss = static_cast<int>(num("heartbeat_miss", 3, 1, 1000));
  bo.heartbeat_period = std::chrono::milliseconds(num("heartbeat_period_ms", 5000, 50, 3600000));
  bo.capacity_bytes = num("capacity_gb", 0, 0, 1LL << 30) << 30;
  bo.crash_at = cfg.Get("backend", "crash_at", "");
  bo.peer_timeout = peer_timeout;
  bo.status_max_age = std::chrono::milliseconds(num("status_max_age_ms", 500, 0, 60000));
  {
    std::string chap = cfg.Get("backend", "chap", "on");
    if (chap == "on" || chap == "true" || chap == "yes" || chap == "1") {
      bo.chap = true;
    } else if (chap == "off" || chap == "false" || chap == "no" || chap == "0") {
      bo.chap = false;
    } else {
      std::cerr << "ferry-backend: --chap must be on or off\n";
      return 2;
    }
  }
  bo.discovery_chap_user = cfg.Get("backend", "discovery_chap_user", "");
  bo.discovery_chap_secret = cfg.Get("backend", "discovery_chap_secret", "");
  if (bo.discovery_chap_user.empty() != bo.discovery_chap_secret.empty()) {
    std::cerr << "ferry-backend: --discovery-chap-user and --discovery-chap-secret go together\n";
    return 2;
  }
  {
    std::string spec = cfg.Get("backend", "target_hosts", "");
    size_t pos = 0;
    while (pos < spec.size()) {
      size_t comma = spec.find(',', pos);
      std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? spec.size() : comma + 1;
      while (!item.empty() && item.front() == ' ') item.erase(0, 1);
      while (!item.empty() && item.back() == ' ') item.pop_back();
      if (item.empty()) continue;
      size_t eq = item.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
        std::cerr << "ferry-backend: --target-hosts wants HOST=IP[,HOST=IP...], got '" << item << "'\n";
        return 2;
      }
      bo.target_hosts[item.substr(0, eq)] = item.substr(eq + 1);
    }
  }
  backend::Backend be(db->get(), &events, &peers, bo, log.Child("orchestration"));

  HttpServer::Options ho;
  ho.host = listen->host;
  ho.port = listen->port;
  ho.token = token;
  ho.threads = static_cast<int>(num("http_threads", 16, 1, 1024));
  ho.queue = static_cast<int>(num("http_queue", 256, 1, 100000));
  ho.tls_cert = tls_cert;
  ho.tls_key = tls_key;
  HttpServer server(ho, log.Child("http"));
  backend::ApiOptions ao{token};
  backend::RegisterV1Routes(server, be, ao);
  backend::RegisterCompatRoutes(server, be, ao);

  std::unique_ptr<backend::KafkaPublisher> kafka;
  if (!brokers.empty()) {
    kafka = std::make_unique<backend::KafkaPublisher>(db->get(), backend::KafkaPublisher::Options{brokers, topic},
                                                      log.Child("kafka"));
    if (Status k = kafka->Start(); !k.ok()) {
      log.Error(k.ToString());
      return 1;
    }
    events.OnCommit([&kafka](int64_t) { kafka->Wake(); });
  }

  if (Status s = server.Start(); !s.ok()) {
    log.Error(s.ToString());
    return 1;
  }
  std::cout << "ferry-backend listening on " << (tls_cert.empty() ? "http" : "https") << "://" << ho.host << ":"
            << server.port() << std::endl;

  // Housekeeping: heartbeat checks every second, reconciler at start and then periodically.
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  int64_t reconcile_s = num("reconcile_interval", 30, 0, 86400);
  const int64_t events_keep = num("events_keep", 1000000, 0, INT64_MAX);
  std::thread house([&] {
    auto next_reconcile = std::chrono::steady_clock::now();
    bool first = true;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu);
        if (cv.wait_for(lk, std::chrono::milliseconds(first ? 0 : 1000), [&] { return stop; })) return;
      }
      be.CheckHeartbeats();
      if (events_keep > 0) {
        auto pruned = events.Prune(events_keep, kafka != nullptr);
        if (!pruned.ok()) log.Warn("event retention: " + pruned.status().ToString());
        else if (*pruned > 0) log.Debug("event retention dropped " + std::to_string(*pruned) + " events");
      }
      if (std::chrono::steady_clock::now() >= next_reconcile && (first || reconcile_s > 0)) {
        (void)be.Reconcile();
        next_reconcile = std::chrono::steady_clock::now() + std::chrono::seconds(reconcile_s > 0 ? reconcile_s : 1);
      }
      first = false;
    }
  });

  int sig = 0;
  sigwait(&sigs, &sig);
  log.Info("signal " + std::to_string(sig) + ": shutting down");
  {
    std::lock_guard<std::mutex> lk(mu);
    stop = true;
  }
  cv.notify_all();
  house.join();
  server.Stop();
  if (kafka) kafka->Stop();
  return 0;
}
