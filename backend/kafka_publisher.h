// KafkaPublisher: drains the SQLite event outbox into one Kafka topic.
//
// Promise: events are produced in sequence order by an idempotent producer
// (enable.idempotence); an event is marked sent only after the broker
// confirmed its delivery; undelivered events stay in the outbox and are
// retried (with back-off) until delivered, across broker outages and
// restarts. Duplicates on the topic are possible only after a restart or a
// delivery timeout; consumers drop them by `seq`. Message key = seq, value =
// {"seq","type","payload","created"}.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "db/database.h"
#include "target/common/logger.h"
#include "target/common/status.h"

namespace ferry::backend {

class KafkaPublisher {
 public:
  struct Options {
    std::string brokers;
    std::string topic = "ferry-events";
    int batch = 500;
    int delivery_timeout_ms = 10000;
  };
  KafkaPublisher(db::Database* db, Options o, Logger log);
  ~KafkaPublisher();
  Status Start();
  void Stop();
  void Wake();  // an event was committed
  uint64_t delivered() const { return delivered_.load(); }

 private:
  void Loop();
  int PublishBatch();  // number delivered; <0 on failure
  db::Database* db_;
  Options opts_;
  Logger log_;
  void* rk_ = nullptr;  // rd_kafka_t*
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, dirty_ = true;
  std::atomic<uint64_t> delivered_{0};
};

}  // namespace ferry::backend
