// libFuzzer: the iSCSI PDU framer and the full-feature dispatcher.
// Part 1 feeds the input to PduFramer (digests chosen by the first byte).
// Part 2 runs a real Connection over a socketpair: a valid login generated
// here, then the input as the initiator's full-feature byte stream, against
// the test RAM LUN. Nothing may crash, hang or leak.
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <thread>

#include "target/iscsi/connection.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/text_keys.h"
#include "tests/iscsi/ram_lun.h"
#include "tests/iscsi/test_directory.h"

using namespace ferry::iscsi;

namespace {

void FuzzFramer(const uint8_t* data, size_t size) {
  if (size < 1) return;
  PduFramer f(64);
  f.set_limits({size_t(1) << (data[0] & 15), bool(data[0] & 0x10), bool(data[0] & 0x20)});
  size_t off = 1;
  while (off < size) {
    size_t n = std::min<size_t>(size - off, 1 + (data[off] % 97));
    f.Feed(data + off, n);
    off += n;
    PduView v;
    while (f.Next(&v) == PduFramer::Result::kPdu) {
      (void)DecodeLun(v.h().lun_field());
      (void)ParseTextKeys(v.data, v.data_len);
    }
  }
}

std::vector<uint8_t> LoginPdu(bool digests) {
  KeyValues kv = {{"InitiatorName", "iqn.fuzz:i"}, {"TargetName", "iqn.fuzz:t"},
                  {"MaxRecvDataSegmentLength", "4096"}, {"FirstBurstLength", "4096"},
                  {"MaxBurstLength", "8192"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"},
                  {"MaxOutstandingR2T", "2"}};
  if (digests) {
    kv.emplace_back("HeaderDigest", "CRC32C");
    kv.emplace_back("DataDigest", "CRC32C");
  }
  std::string text = SerializeTextKeys(kv);
  OutPdu p;
  p.set_opcode(kOpLoginReq | 0x40);
  p.set_flags(0x80 | 1 << 2 | 3);
  Put16(p.bhs + 8, 0x8000);
  p.set_data(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  return Encode(p, false, false);
}

void FuzzConnection(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  auto lun = std::make_shared<ferry::iscsi::testing::RamLun>(1 << 20);
  testing::FixedDirectory dir;
  TargetEntry e;
  e.iqn = "iqn.fuzz:t";
  e.sink = lun;
  dir.Add(e);
  ConnectionEnv env;
  env.opts.nop_interval_ms = 0;
  env.opts.login_timeout_ms = 2000;
  env.opts.send_timeout_ms = 2000;
  env.opts.negotiation.max_recv_data_segment_length = 8192;
  env.directory = &dir;
  env.log = ferry::Logger("fuzz", ferry::LogLevel::kError);
  env.peer_addr = "fuzz:1";
  env.peer_ip = "fuzz";
  auto conn = std::make_shared<Connection>(sv[0], env);
  bool digests = size > 0 && (data[0] & 1);
  std::thread writer([&] {
    auto login = LoginPdu(digests);
    ::send(sv[1], login.data(), login.size(), MSG_NOSIGNAL);
    if (size > 1) ::send(sv[1], data + 1, size - 1, MSG_NOSIGNAL);
    ::shutdown(sv[1], SHUT_WR);
  });
  std::thread drainer([&] {
    char buf[65536];
    while (::recv(sv[1], buf, sizeof buf, 0) > 0) {
    }
  });
  conn->Run();
  writer.join();
  ::shutdown(sv[1], SHUT_RDWR);
  drainer.join();
  ::close(sv[1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 65536) return 0;
  FuzzFramer(data, size);
  FuzzConnection(data, size);
  return 0;
}
