// ferry-store-bench: measures the chunk store directly (no network).
//   1. fills a volume of --size-gib with 1 MiB writes, flushes;
//   2. times 4 KiB random reads and writes through VolumeHandle (one thread at
//      queue depth 1, and --threads threads) on the filled volume;
//   3. times snapshot, clone from the snapshot, clone from the volume, revert
//      and extend (metadata operations: must not depend on the data size);
//   4. times 4 KiB random writes right after the revert, when nearly every
//      first write copies a chunk, then the deletes.
// Prints one "name value unit" line per figure. main() only parses flags and
// calls the functions below.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "target/store/store.h"

namespace {

using Clock = std::chrono::steady_clock;
using ferry::Status;
using ferry::store::Store;
using ferry::store::VolumeHandle;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

bool Check(const Status& st, const char* what) {
  if (st.ok()) return true;
  std::fprintf(stderr, "%s: %s\n", what, st.ToString().c_str());
  return false;
}

template <typename F>
bool Timed(const char* name, F&& f) {
  auto t0 = Clock::now();
  Status st = f();
  double ms = Ms(Clock::now() - t0);
  if (!Check(st, name)) return false;
  std::printf("%-28s %10.2f ms\n", name, ms);
  return true;
}

bool Fill(VolumeHandle& h, uint64_t size, int threads) {
  const uint64_t kBuf = 1 << 20;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> ok{true};
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<char> buf(kBuf, static_cast<char>('a' + t));
      for (;;) {
        uint64_t off = next.fetch_add(kBuf);
        if (off >= size || !ok) return;
        uint64_t n = std::min(kBuf, size - off);
        std::memcpy(buf.data(), &off, sizeof off);
        if (!Check(h.Write(off, n, buf.data(), false), "fill write")) ok = false;
      }
    });
  }
  for (auto& t : ts) t.join();
  if (!ok || !Check(h.Flush(), "fill flush")) return false;
  double s = Ms(Clock::now() - t0) / 1000;
  std::printf("%-28s %10.1f MiB/s (%.1f GiB in %.1f s)\n", "fill 1MiB writes+flush", size / s / (1 << 20),
              size / double(1ull << 30), s);
  return true;
}

// 4 KiB random I/O for `secs` seconds on `threads` threads; returns IOPS.
double RandomIo(VolumeHandle& h, uint64_t size, bool write, int threads, double secs) {
  std::atomic<uint64_t> ops{0};
  std::atomic<bool> stop{false}, ok{true};
  std::vector<std::thread> ts;
  auto t0 = Clock::now();
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(static_cast<uint64_t>(t) + 1);
      std::vector<char> buf(4096, 'r');
      uint64_t blocks = size / 4096, n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t off = (rng() % blocks) * 4096;
        Status st = write ? h.Write(off, 4096, buf.data(), false) : h.Read(off, 4096, buf.data());
        if (!st.ok()) {
          Check(st, "random io");
          ok = false;
          break;
        }
        ++n;
      }
      ops += n;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(secs));
  stop = true;
  for (auto& t : ts) t.join();
  double el = Ms(Clock::now() - t0) / 1000;
  return ok ? ops / el : -1;
}

int Run(const std::string& dir, uint64_t size, uint32_t chunk, int threads, double io_secs, bool keep) {
  Store::Options o;
  o.chunk_size = chunk;
  auto so = Store::Open(dir, o, ferry::Logger("bench", ferry::LogLevel::kWarn));
  if (!Check(so.status(), "open store")) return 1;
  Store& s = **so;
  for (const char* v : {"bench-c1", "bench-c2", "bench"}) {
    auto vi = s.GetVolume(v);
    if (vi.ok()) {
      for (auto& sn : vi->snapshots) s.DeleteSnapshot(v, sn.name);
      s.DeleteVolume(v);
    }
  }
  std::printf("store bench: dir=%s size=%.1f GiB chunk=%u KiB threads=%d\n", dir.c_str(), size / double(1ull << 30),
              chunk >> 10, threads);
  if (!Check(s.CreateVolume("bench", size), "create")) return 1;
  auto h = s.OpenVolume("bench", 1, false);
  if (!Check(h.status(), "open")) return 1;
  if (!Fill(**h, size, threads)) return 1;
  auto vi = s.GetVolume("bench");
  std::printf("%-28s %10.1f GiB\n", "allocated", vi->allocated / double(1ull << 30));
  // Steady state: every chunk allocated and owned by the volume (no copies).
  for (bool w : {false, true}) {
    for (int t : {1, threads}) {
      double iops = RandomIo(**h, size, w, t, io_secs);
      std::printf("%-28s %10.0f IOPS (%d thread%s, QD %d)\n", w ? "4k randwrite" : "4k randread", iops, t,
                  t > 1 ? "s" : "", t);
      if (iops < 0) return 1;
    }
  }
  std::printf("%-28s %10.2f ms\n", "flush",
              [&] { auto t0 = Clock::now(); (*h)->Flush(); return Ms(Clock::now() - t0); }());
  bool ok = Timed("snapshot", [&] { return s.CreateSnapshot("bench", "s1"); }) &&
            Timed("clone from snapshot", [&] { return s.CloneVolume("bench", std::string("s1"), "bench-c1"); }) &&
            Timed("clone from volume", [&] { return s.CloneVolume("bench", std::nullopt, "bench-c2"); }) &&
            Timed("revert to snapshot", [&] { return s.RevertVolume("bench", "s1"); }) &&
            Timed("extend +1 GiB", [&] { return s.ExtendVolume("bench", size + (1ull << 30)); });
  if (!ok) return 1;
  // After revert every chunk is shared: the first write to each copies it.
  double cow = RandomIo(**h, size, true, threads, io_secs);
  std::printf("%-28s %10.0f IOPS (%d threads; nearly every write copies a chunk)\n", "4k randwrite after revert",
              cow, threads);
  if (!keep) {
    h->reset();
    Timed("delete clone (shared)", [&] { return s.DeleteVolume("bench-c1"); });
    Timed("delete snapshot", [&] { return s.DeleteSnapshot("bench", "s1"); });
    Timed("delete volume", [&] { return s.DeleteVolume("bench"); });
    Timed("delete last clone", [&] { return s.DeleteVolume("bench-c2"); });
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double gib = 10, io_secs = 3;
  uint32_t chunk_mib = 4;
  int threads = 2;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir") dir = val();
    else if (a == "--size-gib") gib = std::atof(val());
    else if (a == "--chunk-mib") chunk_mib = static_cast<uint32_t>(std::atoi(val()));
    else if (a == "--threads") threads = std::atoi(val());
    else if (a == "--io-seconds") io_secs = std::atof(val());
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr,
                   "usage: ferry-store-bench --dir DIR [--size-gib 10] [--chunk-mib 4] [--threads 2] "
                   "[--io-seconds 3] [--keep]\n");
      return 2;
    }
  }
  if (dir.empty() || gib <= 0 || threads < 1 || chunk_mib == 0) {
    std::fprintf(stderr, "ferry-store-bench: --dir is required; sizes must be positive\n");
    return 2;
  }
  return Run(dir, static_cast<uint64_t>(gib * (1ull << 30)), chunk_mib << 20, threads, io_secs, keep);
}
