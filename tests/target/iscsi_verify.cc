// ferry-iscsi-verify: TEST HARNESS, not part of the product. A continuous
// verifying writer/reader over iSCSI (libiscsi): every acknowledged write is
// remembered and checked by later reads and by a final full read-back.
//
// Each of --threads threads has its own session and owns the blocks b with
// b % threads == its index, so at most one write per block is ever in flight
// and the expected content of every block is exact. A block's content encodes
// (block, sequence number): a stale write that lands late is reported as
// "stale" (older sequence than the last acknowledged one).
//
// Prints one JSON line: ops, reads, writes, errors, mismatches, stale,
// max_latency_ms (longest single I/O, issue to completion), verified blocks.
// Exit status 0 only when errors == 0 and mismatches == 0.
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string url;
  std::string initiator = "iqn.2026-11.io.ferry:verify";
  int threads = 4;
  double seconds = 5;
  uint64_t blocks = 1024;     // region size in io-size units
  uint64_t first_block = 0;   // region start, in io-size units
  uint32_t io_size = 4096;
  int write_pct = 50;
  int timeout_s = 120;        // per sync command (libiscsi)
  bool prefill = true;
  std::string ready_file, stop_file, verify_file;
};

struct Shared {
  std::atomic<uint64_t> ops{0}, reads{0}, writes{0}, errors{0}, mismatches{0}, stale{0}, unit_attentions{0};
  std::atomic<uint64_t> max_latency_us{0};
  std::atomic<bool> stop{false};
  std::mutex print_mu;
};

constexpr uint64_t kMagic = 0x46455252595645ULL;  // "FERRYVE"

void Fill(std::vector<unsigned char>& buf, uint64_t block, uint64_t seq) {
  auto* w = reinterpret_cast<uint64_t*>(buf.data());
  size_t n = buf.size() / 8;
  w[0] = kMagic;
  w[1] = block;
  w[2] = seq;
  uint64_t x = block * 0x9E3779B97F4A7C15ULL ^ (seq + 1) * 0xC2B2AE3D27D4EB4FULL;
  for (size_t i = 3; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w[i] = x;
  }
}

bool Exists(const std::string& p) {
  struct stat st;
  return !p.empty() && ::stat(p.c_str(), &st) == 0;
}

void Touch(const std::string& p) {
  if (p.empty()) return;
  FILE* f = std::fopen(p.c_str(), "w");
  if (f) std::fclose(f);
}

struct Session {
  iscsi_context* ctx = nullptr;
  int lun = 0;
  ~Session() {
    if (ctx) {
      iscsi_logout_sync(ctx);
      iscsi_destroy_context(ctx);
    }
  }
};

bool Connect(const Args& a, const std::string& initiator, Session* s) {
  s->ctx = iscsi_create_context(initiator.c_str());
  if (!s->ctx) return false;
  iscsi_url* u = iscsi_parse_full_url(s->ctx, a.url.c_str());
  if (!u) {
    std::fprintf(stderr, "bad url: %s\n", iscsi_get_error(s->ctx));
    return false;
  }
  iscsi_set_targetname(s->ctx, u->target);
  iscsi_set_session_type(s->ctx, ISCSI_SESSION_NORMAL);
  iscsi_set_header_digest(s->ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C);
  if (u->user[0]) iscsi_set_initiator_username_pwd(s->ctx, u->user, u->passwd);
  if (u->target_user[0]) iscsi_set_target_username_pwd(s->ctx, u->target_user, u->target_passwd);
  iscsi_set_timeout(s->ctx, a.timeout_s);
  s->lun = u->lun;
  std::string portal = u->portal;
  iscsi_destroy_url(u);
  if (iscsi_full_connect_sync(s->ctx, portal.c_str(), s->lun) != 0) {
    std::fprintf(stderr, "login failed: %s\n", iscsi_get_error(s->ctx));
    return false;
  }
  return true;
}

// One I/O; returns true on GOOD. Records latency.
bool DoIo(Shared& sh, Session& s, const Args& a, bool write, uint64_t block, std::vector<unsigned char>& buf) {
  uint64_t lba = (a.first_block + block) * (a.io_size / 512);
  auto t0 = Clock::now();
  scsi_task* t = nullptr;
  // A UNIT ATTENTION (LUNs added/removed, capacity changed) is retried, as
  // every real initiator does; anything else is an error.
  for (int attempt = 0; attempt < 8; ++attempt) {
    t = write ? iscsi_write16_sync(s.ctx, s.lun, lba, buf.data(), a.io_size, 512, 0, 0, 0, 0, 0)
              : iscsi_read16_sync(s.ctx, s.lun, lba, a.io_size, 512, 0, 0, 0, 0, 0);
    if (!t || t->status != SCSI_STATUS_CHECK_CONDITION || t->sense.key != SCSI_SENSE_UNIT_ATTENTION) break;
    sh.unit_attentions++;
    scsi_free_scsi_task(t);
    t = nullptr;
  }
  uint64_t us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
  uint64_t prev = sh.max_latency_us.load();
  while (us > prev && !sh.max_latency_us.compare_exchange_weak(prev, us)) {
  }
  sh.ops++;
  (write ? sh.writes : sh.reads)++;
  bool ok = t && t->status == SCSI_STATUS_GOOD;
  if (!ok) {
    sh.errors++;
    std::lock_guard<std::mutex> l(sh.print_mu);
    if (!t)
      std::fprintf(stderr, "%s block %" PRIu64 ": transport error: %s\n", write ? "write" : "read", block,
                   iscsi_get_error(s.ctx));
    else
      std::fprintf(stderr, "%s block %" PRIu64 ": status 0x%02x sense %s/%s (0x%04x)\n", write ? "write" : "read",
                   block, t->status, scsi_sense_key_str(t->sense.key), scsi_sense_ascq_str(t->sense.ascq),
                   t->sense.ascq);
  } else if (!write) {
    if (!t->datain.data || t->datain.size < static_cast<int>(a.io_size)) {
      ok = false;
      sh.errors++;
    } else {
      std::memcpy(buf.data(), t->datain.data, a.io_size);
    }
  }
  if (t) scsi_free_scsi_task(t);
  return ok;
}

// Compares buf with the expected (block, seq); counts and reports.
void Check(Shared& sh, const std::vector<unsigned char>& got, uint64_t block, uint64_t seq, const char* when) {
  std::vector<unsigned char> want(got.size());
  Fill(want, block, seq);
  if (got == want) return;
  sh.mismatches++;
  auto* w = reinterpret_cast<const uint64_t*>(got.data());
  bool ours = w[0] == kMagic && w[1] == block;
  if (ours && w[2] < seq) sh.stale++;
  std::lock_guard<std::mutex> l(sh.print_mu);
  std::fprintf(stderr, "%s: block %" PRIu64 " expected seq %" PRIu64 ", found %s %" PRIu64 "\n", when, block, seq,
               ours ? "seq" : "foreign data, word0", ours ? w[2] : w[0]);
}

void Worker(int idx, const Args& a, Shared& sh, std::atomic<int>& ready, std::atomic<bool>& failed,
            std::vector<uint64_t>& seqs, std::vector<char>& known) {
  Session s;
  std::string name = a.initiator;
  if (!Connect(a, name, &s)) {
    failed = true;
    ready++;
    return;
  }
  std::vector<unsigned char> buf(a.io_size);
  std::vector<uint64_t> mine;
  for (uint64_t b = idx; b < a.blocks; b += a.threads) mine.push_back(b);
  if (a.prefill)
    for (uint64_t b : mine) {
      Fill(buf, b, 1);
      if (DoIo(sh, s, a, true, b, buf)) {
        seqs[b] = 1;
        known[b] = 1;
      }
    }
  ready++;
  std::mt19937_64 rng(0x5eed + idx);
  while (!sh.stop.load() && !mine.empty()) {
    uint64_t b = mine[rng() % mine.size()];
    if (static_cast<int>(rng() % 100) < a.write_pct) {
      uint64_t seq = seqs[b] + 1;
      Fill(buf, b, seq);
      seqs[b] = seq;  // the block's content is now unknown until acknowledged
      known[b] = DoIo(sh, s, a, true, b, buf) ? 1 : 0;
    } else if (DoIo(sh, s, a, false, b, buf) && known[b]) {
      Check(sh, buf, b, seqs[b], "read");
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--url") a.url = val();
    else if (k == "--initiator") a.initiator = val();
    else if (k == "--threads") a.threads = std::atoi(val().c_str());
    else if (k == "--seconds") a.seconds = std::atof(val().c_str());
    else if (k == "--blocks") a.blocks = std::strtoull(val().c_str(), nullptr, 10);
    else if (k == "--first-block") a.first_block = std::strtoull(val().c_str(), nullptr, 10);
    else if (k == "--io-size") a.io_size = static_cast<uint32_t>(std::atoi(val().c_str()));
    else if (k == "--write-pct") a.write_pct = std::atoi(val().c_str());
    else if (k == "--timeout") a.timeout_s = std::atoi(val().c_str());
    else if (k == "--no-prefill") a.prefill = false;
    else if (k == "--ready-file") a.ready_file = val();
    else if (k == "--stop-file") a.stop_file = val();
    else if (k == "--verify-file") a.verify_file = val();
    else {
      std::fprintf(stderr,
                   "usage: ferry-iscsi-verify --url iscsi://host:port/iqn/lun [--threads N] [--seconds S]\n"
                   "  [--blocks N] [--first-block N] [--io-size B] [--write-pct P] [--timeout S] [--no-prefill]\n"
                   "  [--ready-file F] [--stop-file F] [--verify-file F]   (test harness)\n");
      return 2;
    }
  }
  if (a.url.empty() || a.threads < 1 || a.io_size % 512 || a.io_size < 32 || a.blocks < 1) {
    std::fprintf(stderr, "bad arguments (see --help)\n");
    return 2;
  }
  Shared sh;
  std::vector<uint64_t> seqs(a.blocks, 0);
  std::vector<char> known(a.blocks, 0);
  std::atomic<int> ready{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> ts;
  for (int i = 0; i < a.threads; ++i)
    ts.emplace_back(Worker, i, std::cref(a), std::ref(sh), std::ref(ready), std::ref(failed), std::ref(seqs),
                    std::ref(known));
  while (ready.load() < a.threads) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  if (failed) {
    sh.stop = true;
    for (auto& t : ts) t.join();
    std::printf("{\"error\":\"login failed\"}\n");
    return 1;
  }
  Touch(a.ready_file);
  auto end = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.seconds * 1000));
  while (Clock::now() < end && !Exists(a.stop_file)) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  sh.stop = true;
  for (auto& t : ts) t.join();
  uint64_t run_ops = sh.ops.load(), run_errors = sh.errors.load();

  // Final read-back of every block whose content is known.
  if (!a.verify_file.empty()) {
    auto vend = Clock::now() + std::chrono::seconds(120);
    while (!Exists(a.verify_file) && Clock::now() < vend) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Session s;
  uint64_t verified = 0;
  if (!Connect(a, a.initiator, &s)) {
    sh.errors++;
  } else {
    std::vector<unsigned char> buf(a.io_size);
    for (uint64_t b = 0; b < a.blocks; ++b) {
      if (!known[b]) continue;
      if (DoIo(sh, s, a, false, b, buf)) {
        Check(sh, buf, b, seqs[b], "final");
        ++verified;
      }
    }
  }
  std::printf("{\"ops\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"writes\":%" PRIu64 ",\"errors\":%" PRIu64
              ",\"run_errors\":%" PRIu64 ",\"mismatches\":%" PRIu64 ",\"stale\":%" PRIu64
              ",\"max_latency_ms\":%.1f,\"verified\":%" PRIu64 ",\"run_ops\":%" PRIu64 ",\"unit_attentions\":%" PRIu64 "}\n",
              sh.ops.load(), sh.reads.load(), sh.writes.load(), sh.errors.load(), run_errors, sh.mismatches.load(),
              sh.stale.load(), sh.max_latency_us.load() / 1000.0, verified, run_ops, sh.unit_attentions.load());
  std::fflush(stdout);
  return sh.errors.load() == 0 && sh.mismatches.load() == 0 ? 0 : 1;
}
