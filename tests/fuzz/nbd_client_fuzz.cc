// Fuzzes the target's NBD client (target/blockdev/nbd_connection.h): the input
// is everything a malicious or broken gateway sends — greeting, option
// replies, then transmission replies. The client must refuse or declare the
// connection dead, never crash, hang or write outside the buffers it gave.
// Links: ferry_blockdev (and ferry_common through it).
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "target/blockdev/nbd_connection.h"
#include "target/nbd/protocol.h"

using namespace ferry;
using namespace ferry::blockdev;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (1u << 16)) return 0;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  std::thread feeder([&] {
    size_t off = 0;
    while (off < size) {
      ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
      if (w <= 0) break;
      off += static_cast<size_t>(w);
    }
    shutdown(sv[1], SHUT_WR);
    char sink[4096];
    while (recv(sv[1], sink, sizeof(sink), 0) > 0) {
    }
  });
  std::mutex mu;
  std::condition_variable cv;
  bool dead = false;
  NbdConnectOptions o;
  o.export_name = "vol@1";
  o.handshake_timeout = std::chrono::milliseconds(500);
  std::vector<char> rbuf1(4096 + 64, 0x5a), rbuf2(512 + 64, 0x5a), wbuf(512, 'w');
  auto c = NbdConnection::ConnectFd(
      sv[0], o, [](uint64_t, uint32_t) {},
      [&](const Status&) {
        std::lock_guard<std::mutex> l(mu);
        dead = true;
        cv.notify_all();
      });
  if (c.ok()) {
    (*c)->Send(nbd::kCmdRead, 0, 1, 0, 4096, nullptr, rbuf1.data());
    (*c)->Send(nbd::kCmdWrite, 0, 2, 0, 512, wbuf.data(), nullptr);
    (*c)->Send(nbd::kCmdRead, 0, 3, 512, 512, nullptr, rbuf2.data());
    (*c)->Send(nbd::kCmdFlush, 0, 4, 0, 0, nullptr, nullptr);
    {
      // The feeder closed its side: the reader must reach EOF and die.
      std::unique_lock<std::mutex> l(mu);
      if (!cv.wait_for(l, std::chrono::seconds(5), [&] { return dead; })) __builtin_trap();
    }
    (*c)->Close();
    // Guard bytes past each read buffer are untouched.
    for (size_t i = 4096; i < rbuf1.size(); ++i)
      if (rbuf1[i] != 0x5a) __builtin_trap();
    for (size_t i = 512; i < rbuf2.size(); ++i)
      if (rbuf2[i] != 0x5a) __builtin_trap();
  }
  c = Status::Internal("done");  // destroys the connection (closes sv[0])
  shutdown(sv[1], SHUT_RDWR);
  feeder.join();
  close(sv[1]);
  return 0;
}
