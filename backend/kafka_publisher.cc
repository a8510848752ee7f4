#include "backend/kafka_publisher.h"

#include <librdkafka/rdkafka.h>

#include <map>
#include <vector>

#include "backend/json.h"

namespace ferry::backend {
namespace {

struct Pending {
  int64_t seq = 0;
  std::atomic<int> state{0};  // 0 waiting, 1 delivered, 2 failed
};

// Delivery report: runs inside rd_kafka_poll on the publisher thread.
void OnDelivery(rd_kafka_t*, const rd_kafka_message_t* m, void*) {
  auto* p = static_cast<Pending*>(m->_private);
  if (p) p->state.store(m->err ? 2 : 1);
}

}  // namespace

KafkaPublisher::KafkaPublisher(db::Database* db, Options o, Logger log)
    : db_(db), opts_(std::move(o)), log_(std::move(log)) {}

KafkaPublisher::~KafkaPublisher() { Stop(); }

Status KafkaPublisher::Start() {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  auto set = [&](const char* k, const std::string& v) -> Status {
    if (rd_kafka_conf_set(conf, k, v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
      return Status::InvalidArgument(std::string("kafka config ") + k + ": " + err);
    return Status::Ok();
  };
  Status s = set("bootstrap.servers", opts_.brokers);
  if (s.ok()) s = set("enable.idempotence", "true");
  if (s.ok()) s = set("acks", "all");
  if (s.ok()) s = set("message.timeout.ms", std::to_string(opts_.delivery_timeout_ms));
  if (s.ok()) s = set("linger.ms", "5");
  if (s.ok()) s = set("client.id", "ferry-backend");
  if (!s.ok()) {
    rd_kafka_conf_destroy(conf);
    return s;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, OnDelivery);
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    return Status::InvalidArgument(std::string("kafka producer: ") + err);
  }
  rk_ = rk;
  thread_ = std::thread([this] { Loop(); });
  log_.Info("publishing events to Kafka " + opts_.brokers + " topic " + opts_.topic);
  return Status::Ok();
}

void KafkaPublisher::Stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (rk_) {
    rd_kafka_flush(static_cast<rd_kafka_t*>(rk_), 2000);
    rd_kafka_destroy(static_cast<rd_kafka_t*>(rk_));
    rk_ = nullptr;
  }
}

void KafkaPublisher::Wake() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    dirty_ = true;
  }
  cv_.notify_all();
}

void KafkaPublisher::Loop() {
  int backoff_ms = 200;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait_for(lk, std::chrono::seconds(1), [&] { return stop_ || dirty_; });
      if (stop_) return;
      dirty_ = false;
    }
    for (;;) {
      int n = PublishBatch();
      if (n == 0) break;
      if (n < 0) {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait_for(lk, std::chrono::milliseconds(backoff_ms), [&] { return stop_; });
        if (stop_) return;
        backoff_ms = std::min(backoff_ms * 2, 5000);
        dirty_ = true;
        break;
      }
      backoff_ms = 200;
    }
  }
}

int KafkaPublisher::PublishBatch() {
  auto events = db_->UnsentEvents(opts_.batch);
  if (!events.ok()) {
    log_.Warn("outbox read failed: " + events.status().ToString());
    return -1;
  }
  if (events->empty()) return 0;
  rd_kafka_t* rk = static_cast<rd_kafka_t*>(rk_);
  std::vector<std::unique_ptr<Pending>> pend;
  for (auto& e : *events) {
    JObj v = NewObj();
    v->set("seq", e.seq);
    v->set("type", e.type);
    auto p = ParseObject(e.payload);
    if (p.ok()) v->set("payload", *p);
    v->set("created", e.created);
    std::string value = Render(v);
    std::string key = std::to_string(e.seq);
    auto pd = std::make_unique<Pending>();
    pd->seq = e.seq;
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(opts_.topic.c_str()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_VALUE(value.data(), value.size()),
        RD_KAFKA_V_OPAQUE(pd.get()), RD_KAFKA_V_END);
    if (err) {
      log_.Warn(std::string("kafka produce: ") + rd_kafka_err2str(err));
      break;
    }
    pend.push_back(std::move(pd));
  }
  // Wait for every delivery report (each message times out on its own).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(opts_.delivery_timeout_ms + 2000);
  auto all_done = [&] {
    for (auto& p : pend)
      if (p->state.load() == 0) return false;
    return true;
  };
  while (!all_done() && std::chrono::steady_clock::now() < deadline) rd_kafka_poll(rk, 100);
  if (!all_done()) {
    // Never leave a report pending on memory we free: purge, then collect them.
    rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    while (!all_done()) rd_kafka_poll(rk, 100);
  }
  int ok = 0;
  bool failed = pend.empty();
  for (auto& p : pend) {
    if (p->state.load() == 1) {
      if (failed) continue;  // keep order: stop marking at the first failure
      if (db_->MarkEventSent(p->seq).ok()) {
        ++ok;
        delivered_.fetch_add(1);
      }
    } else {
      failed = true;
    }
  }
  if (failed) {
    log_.Warn("kafka: " + std::to_string(pend.size() - ok) + " event(s) not confirmed; will retry");
    return -1;
  }
  return ok;
}

}  // namespace ferry::backend
