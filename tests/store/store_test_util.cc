#include "tests/store/store_test_util.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "target/store/fs_util.h"

namespace ferry::store::testing {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/ferry-store-test.XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) ADD_FAILURE() << "mkdtemp failed";
  path_ = buf.data();
}

TempDir::~TempDir() { RemoveTree(path_); }

std::vector<char> Pattern(uint64_t len, uint64_t seed) {
  std::vector<char> v(len);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t i = 0; i < len; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<char>(x | 1);  // never zero, so holes are distinguishable
  }
  return v;
}

int CountChunkFiles(const std::string& data_dir) {
  int n = 0;
  std::string cd = data_dir + "/chunks";
  DIR* d = opendir(cd.c_str());
  if (!d) return -1;
  while (struct dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    DIR* s = opendir((cd + "/" + e->d_name).c_str());
    if (!s) continue;
    while (struct dirent* f = readdir(s))
      if (f->d_name[0] >= '0' && f->d_name[0] <= '9') ++n;
    closedir(s);
  }
  closedir(d);
  return n;
}

Store::Options SmallChunks() {
  Store::Options o;
  o.chunk_size = 64 << 10;
  o.fence_drain_timeout = std::chrono::milliseconds(500);
  return o;
}

std::unique_ptr<Store> MustOpen(const std::string& dir, Store::Options o) {
  auto s = Store::Open(dir, o, Logger("store-test", LogLevel::kError));
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  if (!s.ok()) return nullptr;
  return std::move(s).value();
}

std::vector<char> ReadAll(VolumeHandle& h, uint64_t off, uint64_t len) {
  std::vector<char> v(len);
  Status st = h.Read(off, len, v.data());
  EXPECT_TRUE(st.ok()) << st.ToString();
  return v;
}

pid_t ForkChild(const std::function<int()>& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    int rc = 99;
    rc = fn();
    _exit(rc);
  }
  EXPECT_GT(pid, 0) << "fork failed";
  return pid;
}

int WaitChild(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0) return -1;
    if (std::chrono::steady_clock::now() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      ADD_FAILURE() << "child " << pid << " did not finish in time";
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

bool WaitStopped(pid_t pid, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG | WUNTRACED);
    if (r == pid) return WIFSTOPPED(st);
    if (r < 0) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

}  // namespace ferry::store::testing
