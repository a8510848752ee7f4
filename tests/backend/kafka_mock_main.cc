// ferry-kafka-mock: runs librdkafka's in-process mock Kafka cluster for tests.
// Prints "BOOTSTRAP host:port[,...]" on stdout, then obeys lines on stdin:
//   down  -> every broker stops answering;  up -> they answer again.
// Exits on EOF of stdin or SIGTERM. Usage: ferry-kafka-mock TOPIC [BROKERS]
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: ferry-kafka-mock TOPIC [BROKERS]\n";
    return 2;
  }
  int brokers = argc > 2 ? std::atoi(argv[2]) : 1;
  char err[256];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  if (!rk) {
    std::cerr << "rd_kafka_new: " << err << "\n";
    return 1;
  }
  rd_kafka_mock_cluster_t* mc = rd_kafka_mock_cluster_new(rk, brokers);
  if (!mc) {
    std::cerr << "cannot create mock cluster\n";
    return 1;
  }
  if (rd_kafka_mock_topic_create(mc, argv[1], 1, brokers) != RD_KAFKA_RESP_ERR_NO_ERROR) {
    std::cerr << "cannot create topic\n";
    return 1;
  }
  std::cout << "BOOTSTRAP " << rd_kafka_mock_cluster_bootstraps(mc) << std::endl;
  std::string line;
  while (std::getline(std::cin, line)) {
    for (int b = 1; b <= brokers; ++b) {
      if (line == "down") rd_kafka_mock_broker_set_down(mc, b);
      if (line == "up") rd_kafka_mock_broker_set_up(mc, b);
    }
    std::cout << "OK " << line << std::endl;
  }
  rd_kafka_mock_cluster_destroy(mc);
  rd_kafka_destroy(rk);
  return 0;
}
