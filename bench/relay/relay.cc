// ferry-relay-ceiling: the best a two-hop read path can do on this machine
// with no storage protocol at all (bench/relay-ceiling drives it).
//
// Three roles, one process each, over loopback TCP:
//   serve  --file F --listen H:P
//       answers each 12-byte request (big-endian u64 offset, u32 length, at
//       most 64 MiB) with that range of F, sent with sendfile() (as
//       ferry-gateway sends reads).
//   relay  --listen H:P --to H:P --mode splice|copy [--piece N] [--lowat N]
//       forwards the byte streams both ways, no framing: data from the server
//       moves socket -> pipe -> socket with splice() in `splice` mode (as
//       ferry-target does), and is recv()d into a buffer and send()t from it
//       in `copy` mode; at most --piece bytes (default 1 MiB, the pipe's
//       size) at a time. --lowat sets SO_RCVLOWAT on the server socket (wake
//       the relay only once that many bytes wait, or after 1 ms).
//   read   --connect H:P --size BYTES [--block N] [--depth D] [--seconds S]
//          [--verify F]
//       one thread, D requests in flight over sequential offsets that wrap at
//       BYTES; each answer is recv()d into one N-byte buffer (iscsi-perf's
//       shape). Prints one JSON line: ios, bytes, seconds, MB/s, its own CPU.
//       --verify compares every answer with F (costs CPU; for tests).
// Promise: every argument is checked before anything starts (exit 2 with a
// message); a request outside the file, a short sendfile or a lost peer ends
// that connection with a message, never a crash or a silent short answer.
// serve and relay take one client at a time, until killed.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "target/nbd/protocol.h"

namespace {

constexpr size_t kRequestSize = 12;     // u64 offset, u32 length, big-endian
constexpr uint64_t kMaxBlock = 64ull << 20;

[[noreturn]] void Usage(const std::string& why) {
  std::fprintf(stderr,
               "ferry-relay-ceiling: %s\n"
               "usage: ferry-relay-ceiling serve --file F --listen H:P\n"
               "       ferry-relay-ceiling relay --listen H:P --to H:P --mode splice|copy [--piece N] [--lowat N]\n"
               "       ferry-relay-ceiling read --connect H:P --size BYTES [--block N] [--depth D]"
               " [--seconds S] [--verify F]\n",
               why.c_str());
  std::exit(2);
}

struct Args {
  std::string role;
  std::map<std::string, std::string> kv;
  std::string Get(const std::string& k, const std::string& def = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
};

Args Parse(int argc, char** argv, const std::vector<std::string>& allowed) {
  Args a;
  a.role = argv[1];
  for (int i = 2; i < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0) Usage("unexpected argument '" + k + "'");
    k = k.substr(2);
    bool known = false;
    for (const auto& x : allowed) known = known || x == k;
    if (!known) Usage("unknown option --" + k + " for " + a.role);
    if (i + 1 >= argc) Usage("--" + k + " needs a value");
    a.kv[k] = argv[i + 1];
  }
  return a;
}

uint64_t Number(const Args& a, const std::string& k, uint64_t def, uint64_t min, uint64_t max) {
  std::string s = a.Get(k);
  if (s.empty()) return def;
  uint64_t mult = 1;
  char last = s.back();
  if (last == 'K' || last == 'k') mult = 1ull << 10;
  if (last == 'M' || last == 'm') mult = 1ull << 20;
  if (last == 'G' || last == 'g') mult = 1ull << 30;
  if (mult != 1) s.pop_back();
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos || s.size() > 15)
    Usage("--" + k + " must be a number, got '" + a.Get(k) + "'");
  uint64_t v = std::stoull(s) * mult;
  if (v < min || v > max)
    Usage("--" + k + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  return v;
}

sockaddr_in Addr(const Args& a, const std::string& k) {
  std::string s = a.Get(k);
  if (s.empty()) Usage("--" + k + " is required");
  auto colon = s.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (colon == std::string::npos || inet_pton(AF_INET, s.substr(0, colon).c_str(), &sa.sin_addr) != 1)
    Usage("--" + k + " must be IPv4:port, got '" + s + "'");
  std::string p = s.substr(colon + 1);
  if (p.empty() || p.find_first_not_of("0123456789") != std::string::npos || p.size() > 5 || std::stoi(p) > 65535)
    Usage("--" + k + " has a bad port: '" + s + "'");
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(p)));
  return sa;
}

void NoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int Listen(const sockaddr_in& sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0 || listen(fd, 4) != 0) {
    std::fprintf(stderr, "ferry-relay-ceiling: listen: %s\n", std::strerror(errno));
    std::exit(1);
  }
  return fd;
}

int Connect(const sockaddr_in& sa) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    close(fd);
    return -1;
  }
  NoDelay(fd);
  return fd;
}

bool ReadFull(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool WriteFull(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) {  // a non-blocking socket (relay --lowat)
      pollfd pfd{fd, POLLOUT, 0};
      poll(&pfd, 1, 1000);
      continue;
    }
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Big-endian fields: the NBD code's helpers (header-only).
using ferry::nbd::Get32;
using ferry::nbd::Get64;
using ferry::nbd::Put32;
using ferry::nbd::Put64;

// ---------------------------------------------------------------- serve
int Serve(const Args& a) {
  std::string path = a.Get("file");
  if (path.empty()) Usage("--file is required");
  sockaddr_in sa = Addr(a, "listen");
  int file = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  struct stat st{};
  if (file < 0 || fstat(file, &st) != 0) {
    std::fprintf(stderr, "ferry-relay-ceiling: %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  uint64_t size = static_cast<uint64_t>(st.st_size);
  int lfd = Listen(sa);
  for (;;) {
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    NoDelay(c);
    uint8_t req[kRequestSize];
    while (ReadFull(c, req, sizeof req)) {
      uint64_t off = Get64(req);
      uint64_t block = Get32(req + 8);
      if (block == 0 || block > kMaxBlock || off > size || size - off < block) {
        std::fprintf(stderr, "ferry-relay-ceiling: request %llu+%llu is outside the file or too long\n",
                     static_cast<unsigned long long>(off), static_cast<unsigned long long>(block));
        break;
      }
      off_t o = static_cast<off_t>(off);
      uint64_t left = block;
      while (left > 0) {
        ssize_t w = sendfile(c, file, &o, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        left -= static_cast<uint64_t>(w);
      }
      if (left > 0) break;
    }
    close(c);
  }
}

// ---------------------------------------------------------------- relay
// Data upstream -> client, moved as it arrives (at most 1 MiB at a time).
void ForwardData(int up, int client, bool use_splice, size_t piece, int lowat) {
  const size_t kPiece = piece;
  if (lowat > 0) {
    if (setsockopt(up, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) != 0)
      std::fprintf(stderr, "ferry-relay-ceiling: SO_RCVLOWAT: %s\n", std::strerror(errno));
    // tcp_splice_read() blocks on the socket's own O_NONBLOCK, not on
    // SPLICE_F_NONBLOCK, and a blocked one is woken only at `lowat` bytes.
    fcntl(up, F_SETFL, fcntl(up, F_GETFL) | O_NONBLOCK);
  }
  if (use_splice) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return;
    if (fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(std::min<size_t>(kPiece, 1 << 20))) < 0) {
      std::fprintf(stderr, "ferry-relay-ceiling: F_SETPIPE_SZ: %s\n", std::strerror(errno));
    }
    size_t in_pipe = 0;
    for (;;) {
      if (lowat > 0) {
        // Woken once `lowat` bytes wait, or after 1 ms with whatever is
        // there, so fewer bytes in flight than `lowat` never stall it.
        pollfd pfd{up, POLLIN, 0};
        if (poll(&pfd, 1, 1) < 0 && errno != EINTR) break;
      }
      ssize_t r = splice(up, nullptr, p[1], nullptr, kPiece, SPLICE_F_MOVE | (lowat > 0 ? SPLICE_F_NONBLOCK : 0));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EAGAIN && lowat > 0) continue;
      if (r <= 0) break;
      in_pipe += static_cast<size_t>(r);
      bool ok = true;
      while (in_pipe > 0) {
        ssize_t w = splice(p[0], nullptr, client, nullptr, in_pipe, SPLICE_F_MOVE);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
          ok = false;
          break;
        }
        in_pipe -= static_cast<size_t>(w);
      }
      if (!ok) break;
    }
    close(p[0]);
    close(p[1]);
  } else {
    std::vector<char> buf(kPiece);
    for (;;) {
      ssize_t r = recv(up, buf.data(), buf.size(), 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || !WriteFull(client, buf.data(), static_cast<size_t>(r))) break;
    }
  }
  shutdown(up, SHUT_RDWR);
  shutdown(client, SHUT_RDWR);
}

int Relay(const Args& a) {
  sockaddr_in me = Addr(a, "listen");
  sockaddr_in to = Addr(a, "to");
  std::string mode = a.Get("mode");
  if (mode != "splice" && mode != "copy") Usage("--mode must be splice or copy");
  size_t piece = Number(a, "piece", 1 << 20, 4096, 1 << 20);
  int lowat = static_cast<int>(Number(a, "lowat", 0, 0, 16 << 20));
  int lfd = Listen(me);
  for (;;) {
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    NoDelay(c);
    int up = Connect(to);
    if (up < 0) {
      std::fprintf(stderr, "ferry-relay-ceiling: relay cannot reach the server: %s\n", std::strerror(errno));
      close(c);
      continue;
    }
    std::thread data(ForwardData, up, c, mode == "splice", piece, lowat);
    char req[4096];
    for (;;) {  // requests client -> upstream
      ssize_t r = recv(c, req, sizeof req, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || !WriteFull(up, req, static_cast<size_t>(r))) break;
    }
    shutdown(up, SHUT_RDWR);
    shutdown(c, SHUT_RDWR);
    data.join();
    close(up);
    close(c);
  }
}

// ---------------------------------------------------------------- read
double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

int Read(const Args& a) {
  sockaddr_in to = Addr(a, "connect");
  uint64_t block = Number(a, "block", 1 << 20, 512, kMaxBlock);
  uint64_t depth = Number(a, "depth", 8, 1, 1024);
  uint64_t seconds = Number(a, "seconds", 5, 1, 3600);
  if (a.Get("size").empty()) Usage("--size is required");
  uint64_t size = Number(a, "size", 0, block, 1ull << 50);
  size -= size % block;
  int verify = -1;
  if (!a.Get("verify").empty()) {
    verify = open(a.Get("verify").c_str(), O_RDONLY | O_CLOEXEC);
    if (verify < 0) {
      std::fprintf(stderr, "ferry-relay-ceiling: %s: %s\n", a.Get("verify").c_str(), std::strerror(errno));
      return 1;
    }
  }
  int fd = Connect(to);
  if (fd < 0) {
    std::fprintf(stderr, "ferry-relay-ceiling: connect: %s\n", std::strerror(errno));
    return 1;
  }
  std::vector<char> buf(block), want(verify >= 0 ? block : 0);
  uint64_t next = 0;
  std::vector<uint64_t> inflight;  // offsets in request order (answers come in order)
  auto request = [&]() -> bool {
    uint8_t r[kRequestSize];
    Put64(r, next);
    Put32(r + 8, static_cast<uint32_t>(block));
    inflight.push_back(next);
    next = (next + block) % size;
    return WriteFull(fd, r, sizeof r);
  };
  using Clock = std::chrono::steady_clock;
  double cpu0 = CpuSeconds();
  auto t0 = Clock::now();
  auto end = t0 + std::chrono::seconds(seconds);
  uint64_t ios = 0, mismatches = 0;
  auto lost = [&](const char* how) {
    std::fprintf(stderr, "ferry-relay-ceiling: connection lost (%s) after %llu answers\n", how,
                 static_cast<unsigned long long>(ios));
    return 1;
  };
  for (uint64_t i = 0; i < depth; ++i)
    if (!request()) return lost("send");
  size_t head = 0;
  for (;;) {
    if (!ReadFull(fd, buf.data(), block)) return lost("recv");
    uint64_t off = inflight[head++];
    ++ios;
    if (verify >= 0) {
      if (pread(verify, want.data(), block, static_cast<off_t>(off)) != static_cast<ssize_t>(block) ||
          std::memcmp(want.data(), buf.data(), block) != 0)
        ++mismatches;
    }
    if (Clock::now() < end) {
      if (!request()) return lost("send");
    } else if (head == inflight.size()) {
      break;
    }
    if (head > 4096) {
      inflight.erase(inflight.begin(), inflight.begin() + static_cast<long>(head));
      head = 0;
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  double cpu = CpuSeconds() - cpu0;
  close(fd);
  std::printf(
      "{\"ios\": %llu, \"bytes\": %llu, \"seconds\": %.3f, \"mb_per_s\": %.1f, \"iops\": %.1f, "
      "\"cpu_seconds\": %.3f, \"cpu_us_per_io\": %.1f, \"verified\": %s, \"mismatches\": %llu}\n",
      static_cast<unsigned long long>(ios), static_cast<unsigned long long>(ios * block), secs,
      ios * block / secs / 1e6, ios / secs, cpu, ios ? cpu / ios * 1e6 : 0.0, verify >= 0 ? "true" : "false",
      static_cast<unsigned long long>(mismatches));
  return mismatches ? 3 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) Usage("a role is required");
  std::string role = argv[1];
  signal(SIGPIPE, SIG_IGN);  // a reader that leaves ends its connection, not the process
  if (role == "serve") return Serve(Parse(argc, argv, {"file", "listen"}));
  if (role == "relay") return Relay(Parse(argc, argv, {"listen", "to", "mode", "piece", "lowat"}));
  if (role == "read")
    return Read(Parse(argc, argv, {"connect", "size", "block", "depth", "seconds", "verify"}));
  Usage("unknown role '" + role + "'");
}
