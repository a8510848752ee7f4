// Loopback tests: the real IscsiServer over real sockets, driven by a minimal
// initiator written here, against a RAM LUN (tests/iscsi/ram_lun.h). They check
// what libiscsi's tools cannot reach: digests both ways, R2T sequences,
// Data-In splitting, Reject reasons, CmdSN ordering, NOP timeouts, login
// timeouts, reinstatement, and clean Stop().
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "target/iscsi/pdu.h"
#include "target/iscsi/portal.h"
#include "target/iscsi/text_keys.h"
#include "tests/iscsi/ram_lun.h"
#include "tests/iscsi/test_directory.h"

namespace ferry::iscsi {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kIqn[] = "iqn.2026-11.org.ferry:loop";

struct Pdu {
  uint8_t bhs[48] = {};
  std::vector<uint8_t> data;
  uint8_t op() const { return bhs[0] & 0x3f; }
  uint32_t u32(size_t o) const { return Get32(bhs + o); }
  std::string text() const { return std::string(data.begin(), data.end()); }
};

class MiniInitiator {
 public:
  ~MiniInitiator() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool Connect(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  void SendRaw(const std::vector<uint8_t>& w) {
    size_t off = 0;
    while (off < w.size()) {
      ssize_t n = ::send(fd_, w.data() + off, w.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return;
      off += size_t(n);
    }
  }
  void Send(const OutPdu& p) { SendRaw(Encode(p, hd_, dd_)); }
  // Next PDU, or nullopt on timeout / EOF (eof() tells which).
  std::optional<Pdu> Recv(int timeout_ms = 5000) {
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      PduView v;
      auto r = framer_.Next(&v);
      if (r == PduFramer::Result::kPdu) {
        Pdu p;
        std::memcpy(p.bhs, v.bhs, 48);
        p.data.assign(v.data, v.data + v.data_len);
        EXPECT_FALSE(v.data_digest_error);
        return p;
      }
      if (r == PduFramer::Result::kError) {
        ADD_FAILURE() << "initiator framer: " << framer_.error();
        return std::nullopt;
      }
      int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
      if (left <= 0) return std::nullopt;
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, left) <= 0) return std::nullopt;
      size_t avail;
      uint8_t* b = framer_.Buffer(65536, &avail);
      ssize_t n = ::recv(fd_, b, avail, 0);
      if (n <= 0) {
        eof_ = true;
        return std::nullopt;
      }
      framer_.Commit(size_t(n));
    }
  }
  // True when the target closes the connection within the timeout (any PDUs before are skipped).
  bool WaitEof(int timeout_ms) {
    auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Clock::now() < end) {
      int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count());
      Recv(std::max(1, left));
      if (eof_) return true;
    }
    return false;
  }

  // One-PDU login straight to the full-feature phase (no CHAP).
  uint16_t Login(const std::string& target, KeyValues extra, KeyValues* reply = nullptr, uint64_t isid = 0x800000000001ull,
                 bool discovery = false) {
    KeyValues kv = {{"InitiatorName", "iqn.2026-11.test:mini"}};
    if (discovery) kv.emplace_back("SessionType", "Discovery");
    else kv.emplace_back("TargetName", target);
    kv.insert(kv.end(), extra.begin(), extra.end());
    std::string text = SerializeTextKeys(kv);
    OutPdu p;
    p.set_opcode(kOpLoginReq | 0x40);
    p.set_flags(0x80 | 1 << 2 | 3);  // T, CSG=operational, NSG=full feature
    Put16(p.bhs + 8, uint16_t(isid >> 32));
    Put32(p.bhs + 10, uint32_t(isid));
    p.set_itt(0);
    p.set_u32(24, cmdsn_);
    p.set_u32(28, 0);
    p.set_data(reinterpret_cast<const uint8_t*>(text.data()), text.size());
    Send(p);
    auto r = Recv();
    if (!r) return 0xffff;
    EXPECT_EQ(r->op(), kOpLoginResp);
    uint16_t status = Get16(r->bhs + 36);
    auto keys = ParseTextKeys(r->data.data(), r->data.size());
    EXPECT_TRUE(keys.ok()) << keys.status().ToString() << " in '" << r->text() << "'";
    if (reply) *reply = *keys;
    if (status == 0) {
      expstatsn_ = r->u32(24) + 1;
      tsih_ = Get16(r->bhs + 14);
      for (const auto& [k, v] : *keys) {
        if (k == "HeaderDigest") hd_ = v == "CRC32C";
        if (k == "DataDigest") dd_ = v == "CRC32C";
      }
      framer_.set_limits({16777215, hd_, dd_});
    }
    return status;
  }

  OutPdu Command(const uint8_t* cdb, size_t cdb_len, bool read, bool write, uint32_t edtl, uint32_t itt) {
    OutPdu p;
    p.set_opcode(kOpScsiCmd);
    p.set_flags(uint8_t(0x80 | (read ? 0x40 : 0) | (write ? 0x20 : 0) | 1));
    p.set_lun(0);
    p.set_itt(itt);
    p.set_u32(20, edtl);
    p.set_u32(24, cmdsn_++);
    p.set_u32(28, expstatsn_);
    std::memcpy(p.bhs + 32, cdb, cdb_len);
    return p;
  }

  uint32_t cmdsn_ = 1;
  uint32_t expstatsn_ = 0;
  uint16_t tsih_ = 0;
  bool hd_ = false, dd_ = false;
  bool eof_ = false;
  int fd_ = -1;
  PduFramer framer_{65536};
};

void Read10Cdb(uint8_t* cdb, uint32_t lba, uint16_t blocks, bool write = false) {
  std::memset(cdb, 0, 16);
  cdb[0] = write ? 0x2a : 0x28;
  Put32(cdb + 2, lba);
  Put16(cdb + 7, blocks);
}

// A sink that completes every command on one shared worker thread, as a
// block device layer would: a blocked completion would stall every session.
class OneThreadSink : public scsi::CommandSink {
 public:
  explicit OneThreadSink(std::shared_ptr<testing::RamLun> lun) : lun_(std::move(lun)), worker_([this] { Loop(); }) {}
  ~OneThreadSink() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  void Submit(std::unique_ptr<scsi::ScsiCommand> c, scsi::Completion done) override {
    {
      std::lock_guard<std::mutex> g(mu_);
      q_.emplace_back(std::move(c), std::move(done));
    }
    cv_.notify_all();
  }
  scsi::TmfResult AbortTask(const scsi::Nexus& n, uint32_t t) override { return lun_->AbortTask(n, t); }
  scsi::TmfResult AbortTaskSet(const scsi::Nexus& n, uint64_t l) override { return lun_->AbortTaskSet(n, l); }
  scsi::TmfResult ClearTaskSet(const scsi::Nexus& n, uint64_t l) override { return lun_->ClearTaskSet(n, l); }
  scsi::TmfResult LunReset(const scsi::Nexus& n, uint64_t l) override { return lun_->LunReset(n, l); }
  scsi::TmfResult TargetReset(const scsi::Nexus& n, bool c) override { return lun_->TargetReset(n, c); }
  void NexusLost(const scsi::Nexus& n) override { lun_->NexusLost(n); }
  void NexusAdded(const scsi::Nexus& n) override { lun_->NexusAdded(n); }

 private:
  void Loop() {
    std::unique_lock<std::mutex> g(mu_);
    for (;;) {
      cv_.wait(g, [this] { return stop_ || !q_.empty(); });
      if (q_.empty()) return;
      auto item = std::move(q_.front());
      q_.pop_front();
      g.unlock();
      lun_->Submit(std::move(item.first), std::move(item.second));
      g.lock();
    }
  }
  std::shared_ptr<testing::RamLun> lun_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::unique_ptr<scsi::ScsiCommand>, scsi::Completion>> q_;
  bool stop_ = false;
  std::thread worker_;
};

class Loopback : public ::testing::Test {
 protected:
  void Start(IscsiServerOptions o = {}, bool one_thread_sink = false) {
    lun_ = std::make_shared<testing::RamLun>(8 << 20);
    dir_ = std::make_shared<testing::FixedDirectory>();
    TargetEntry e;
    e.iqn = kIqn;
    e.sink = lun_;
    if (one_thread_sink) e.sink = std::make_shared<OneThreadSink>(lun_);
    dir_->Add(e);
    o.listen = {"127.0.0.1:0"};
    if (o.nop_interval_ms == IscsiServerOptions{}.nop_interval_ms) o.nop_interval_ms = 0;
    server_ = std::make_unique<IscsiServer>(o, dir_, Logger("loopback", LogLevel::kWarn));
    ASSERT_TRUE(server_->Start().ok());
    auto b = server_->BoundAddresses();
    ASSERT_EQ(b.size(), 1u);
    port_ = b[0].port;
    ASSERT_NE(port_, 0);
  }
  void TearDown() override {
    if (server_) server_->Stop();
  }
  bool WaitFor(const std::function<bool()>& f, int ms = 3000) {
    auto end = Clock::now() + std::chrono::milliseconds(ms);
    while (Clock::now() < end) {
      if (f()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return f();
  }
  std::shared_ptr<testing::RamLun> lun_;
  std::shared_ptr<testing::FixedDirectory> dir_;
  std::unique_ptr<IscsiServer> server_;
  uint16_t port_ = 0;
};

TEST_F(Loopback, DigestsR2tSequencesAndDataInSplitting) {
  Start();
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  KeyValues reply;
  ASSERT_EQ(c.Login(kIqn,
                    {{"HeaderDigest", "CRC32C,None"}, {"DataDigest", "CRC32C,None"},
                     {"MaxRecvDataSegmentLength", "4096"}, {"FirstBurstLength", "8192"},
                     {"MaxBurstLength", "16384"}, {"ImmediateData", "Yes"}, {"InitialR2T", "No"},
                     {"MaxOutstandingR2T", "1"}},
                    &reply),
            0);
  ASSERT_TRUE(c.hd_ && c.dd_);
  ASSERT_EQ(server_->Sessions().size(), 1u);
  EXPECT_EQ(server_->Sessions()[0].target_iqn, kIqn);
  EXPECT_EQ(server_->Sessions()[0].isid, "800000000001");

  // WRITE 64 KiB: 4 KiB immediate, 4 KiB unsolicited Data-Out, the rest by R2T.
  std::vector<uint8_t> buf(65536);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i * 7 + 3);
  uint8_t cdb[16];
  Read10Cdb(cdb, 16, 128, true);
  OutPdu w = c.Command(cdb, 10, false, true, 65536, 0x100);
  w.set_flags(0x20 | 1);  // F=0: unsolicited Data-Out follows
  w.set_data(buf.data(), 4096);
  c.Send(w);
  OutPdu d;
  d.set_opcode(kOpDataOut);
  d.set_flags(0x80);
  d.set_itt(0x100);
  d.set_u32(20, kReservedTag);
  d.set_u32(36, 0);
  d.set_u32(40, 4096);
  d.set_data(buf.data() + 4096, 4096);
  c.Send(d);
  uint32_t got = 8192;
  int r2ts = 0;
  for (;;) {
    auto p = c.Recv();
    ASSERT_TRUE(p.has_value());
    if (p->op() == kOpScsiResp) {
      EXPECT_EQ(p->bhs[3], 0);  // GOOD
      break;
    }
    ASSERT_EQ(p->op(), kOpR2t);
    ++r2ts;
    uint32_t off = p->u32(40), len = p->u32(44), ttt = p->u32(20);
    EXPECT_EQ(p->u32(36), uint32_t(r2ts - 1));  // R2TSN
    EXPECT_EQ(off, got);
    EXPECT_LE(len, 16384u);
    for (uint32_t o = 0, sn = 0; o < len; o += 4096, ++sn) {
      OutPdu x;
      x.set_opcode(kOpDataOut);
      x.set_flags(o + 4096 >= len ? 0x80 : 0);
      x.set_itt(0x100);
      x.set_u32(20, ttt);
      x.set_u32(36, sn);
      x.set_u32(40, off + o);
      x.set_data(buf.data() + off + o, std::min<uint32_t>(4096, len - o));
      c.Send(x);
    }
    got += len;
  }
  EXPECT_EQ(r2ts, 4);  // 56 KiB in 16 KiB bursts
  EXPECT_EQ(lun_->Read(16 * 512, 65536), buf);

  // READ 64 KiB: Data-In in 4 KiB PDUs, F at each 16 KiB burst, status in the last.
  Read10Cdb(cdb, 16, 128);
  c.Send(c.Command(cdb, 10, true, false, 65536, 0x101));
  std::vector<uint8_t> back;
  for (uint32_t sn = 0;; ++sn) {
    auto p = c.Recv();
    ASSERT_TRUE(p.has_value());
    ASSERT_EQ(p->op(), kOpDataIn);
    EXPECT_EQ(p->u32(36), sn);
    EXPECT_EQ(p->u32(40), back.size());
    EXPECT_LE(p->data.size(), 4096u);
    back.insert(back.end(), p->data.begin(), p->data.end());
    bool f = p->bhs[1] & 0x80, s = p->bhs[1] & 0x01;
    EXPECT_EQ(f, back.size() % 16384 == 0);
    if (s) {
      EXPECT_EQ(p->bhs[3], 0);
      EXPECT_EQ(back.size(), 65536u);
      break;
    }
  }
  EXPECT_EQ(back, buf);
}

TEST_F(Loopback, ResidualsSenseNopRejectTmfTextLogout) {
  Start();
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login(kIqn, {{"MaxRecvDataSegmentLength", "65536"}}), 0);

  // INQUIRY wants 36 bytes, EDTL allows 8: overflow residual 28.
  uint8_t inq[16] = {0x12, 0, 0, 0, 36, 0};
  c.Send(c.Command(inq, 6, true, false, 8, 1));
  auto p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpDataIn);
  EXPECT_EQ(p->data.size(), 8u);
  EXPECT_EQ(p->bhs[1] & 0x07, 0x05);  // O and S
  EXPECT_EQ(p->u32(44), 28u);
  uint32_t statsn = p->u32(24);

  // READ past the end: CHECK CONDITION with sense (2-byte length prefix).
  uint8_t cdb[16];
  Read10Cdb(cdb, 0x7fffffff, 1);
  c.Send(c.Command(cdb, 10, true, false, 512, 2));
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpScsiResp);
  EXPECT_EQ(p->bhs[3], 2);
  EXPECT_EQ(p->u32(24), statsn + 1);
  ASSERT_GE(p->data.size(), 2u + 18);
  EXPECT_EQ(Get16(p->data.data()), 18);
  EXPECT_EQ(p->data[2 + 2] & 0x0f, 0x05);  // ILLEGAL REQUEST
  EXPECT_EQ(p->bhs[1] & 0x06, 0x02);       // underflow: nothing of 512 sent
  EXPECT_EQ(p->u32(44), 512u);

  // NOP-Out ping with data: echoed.
  OutPdu nop;
  nop.set_opcode(kOpNopOut | 0x40);
  nop.set_flags(0x80);
  nop.set_itt(3);
  nop.set_u32(20, kReservedTag);
  nop.set_u32(24, c.cmdsn_);
  std::string ping = "ping-data";
  nop.set_data(reinterpret_cast<const uint8_t*>(ping.data()), ping.size());
  c.Send(nop);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpNopIn);
  EXPECT_EQ(p->u32(16), 3u);
  EXPECT_EQ(p->text(), ping);

  // Unknown opcode and SNACK: Reject with the header echoed.
  OutPdu bad;
  bad.set_opcode(0x1c);
  bad.set_flags(0x80);
  bad.set_itt(4);
  c.Send(bad);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpReject);
  EXPECT_EQ(p->bhs[2], kRejectCmdNotSupported);
  ASSERT_EQ(p->data.size(), 48u);
  EXPECT_EQ(Get32(p->data.data() + 16), 4u);
  OutPdu snack;
  snack.set_opcode(kOpSnack);
  snack.set_flags(0x80);
  c.Send(snack);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpReject);
  EXPECT_EQ(p->bhs[2], kRejectSnack);

  // Immediate data while the command has no W bit: protocol error Reject.
  OutPdu weird = c.Command(inq, 6, true, false, 36, 5);
  weird.set_data(reinterpret_cast<const uint8_t*>(ping.data()), ping.size());
  c.Send(weird);
  --c.cmdsn_;  // rejected: the CmdSN was not consumed
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpReject);
  EXPECT_EQ(p->bhs[2], kRejectProtocolError);

  // LUN RESET reaches the sink.
  OutPdu tmf;
  tmf.set_opcode(kOpTmfReq | 0x40);
  tmf.set_flags(0x80 | 5);
  tmf.set_itt(6);
  tmf.set_u32(20, kReservedTag);
  tmf.set_u32(24, c.cmdsn_);
  c.Send(tmf);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpTmfResp);
  EXPECT_EQ(p->bhs[2], 0);
  EXPECT_EQ(lun_->resets.load(), 1);

  // ABORT TASK for a task that never existed (outside the window).
  tmf.set_flags(0x80 | 1);
  tmf.set_itt(7);
  tmf.set_u32(20, 0xabcdef);
  tmf.set_u32(32, c.cmdsn_ - 1);
  c.Send(tmf);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpTmfResp);
  EXPECT_EQ(p->bhs[2], 1);  // task does not exist

  // Text SendTargets in a normal session: only its own target.
  OutPdu text;
  text.set_opcode(kOpTextReq);
  text.set_flags(0x80);
  text.set_itt(8);
  text.set_u32(20, kReservedTag);
  text.set_u32(24, c.cmdsn_++);
  std::string st = std::string("SendTargets=") + '\0' + "MaxBurstLength=4096" + '\0' + "X-ferry.Foo=1" + '\0';
  text.set_data(reinterpret_cast<const uint8_t*>(st.data()), st.size());
  c.Send(text);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpTextResp);
  EXPECT_NE(p->text().find(std::string("MaxBurstLength=Reject") + '\0'), std::string::npos);
  EXPECT_NE(p->text().find(std::string("X-ferry.Foo=NotUnderstood") + '\0'), std::string::npos);
  EXPECT_NE(p->text().find(std::string("TargetName=") + kIqn), std::string::npos);
  EXPECT_NE(p->text().find("TargetAddress=127.0.0.1:" + std::to_string(port_) + ",1"), std::string::npos);

  // Logout closes the session; the sink hears the nexus is gone.
  OutPdu lo;
  lo.set_opcode(kOpLogoutReq | 0x40);
  lo.set_flags(0x80);
  lo.set_itt(9);
  lo.set_u32(24, c.cmdsn_);
  c.Send(lo);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpLogoutResp);
  EXPECT_EQ(p->bhs[2], 0);
  EXPECT_TRUE(c.WaitEof(3000));
  EXPECT_TRUE(WaitFor([&] { return lun_->nexus_lost.load() == 1; }));
  EXPECT_TRUE(WaitFor([&] { return server_->Sessions().empty(); }));
}

TEST_F(Loopback, CmdSnOrderingAndWindow) {
  Start();
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login(kIqn, {}), 0);
  std::vector<uint8_t> blk(512, 0xab);
  uint8_t wcdb[16], rcdb[16];
  Read10Cdb(wcdb, 100, 1, true);
  Read10Cdb(rcdb, 100, 1);
  OutPdu w = c.Command(wcdb, 10, false, true, 512, 0x10);  // CmdSN n
  w.set_data(blk.data(), blk.size());
  OutPdu r = c.Command(rcdb, 10, true, false, 512, 0x11);  // CmdSN n+1
  OutPdu far = c.Command(rcdb, 10, true, false, 512, 0x12);
  far.set_u32(24, c.cmdsn_ + 1000);                         // far outside the window
  c.Send(far);
  c.Send(r);  // arrives first, must wait for the write
  c.Send(w);
  std::optional<Pdu> read_data;
  int responses = 0;
  while (responses < 2) {
    auto p = c.Recv();
    ASSERT_TRUE(p.has_value());
    EXPECT_NE(p->u32(16), 0x12u);  // the out-of-window command is ignored
    if (p->op() == kOpDataIn) {
      read_data = p;
      ++responses;
    } else if (p->op() == kOpScsiResp) {
      ++responses;
    }
  }
  ASSERT_TRUE(read_data.has_value());
  EXPECT_EQ(read_data->data, blk);  // the READ saw the WRITE ordered before it
  EXPECT_FALSE(c.Recv(200).has_value());
}

TEST_F(Loopback, DiscoverySession) {
  Start();
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login("", {}, nullptr, 0x800000000002ull, true), 0);
  OutPdu text;
  text.set_opcode(kOpTextReq);
  text.set_flags(0x80);
  text.set_itt(1);
  text.set_u32(20, kReservedTag);
  text.set_u32(24, c.cmdsn_++);
  std::string st = std::string("SendTargets=All") + '\0';
  text.set_data(reinterpret_cast<const uint8_t*>(st.data()), st.size());
  c.Send(text);
  auto p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpTextResp);
  EXPECT_EQ(p->text(), std::string("TargetName=") + kIqn + '\0' + "TargetAddress=127.0.0.1:" +
                           std::to_string(port_) + ",1" + '\0');
  uint8_t inq[16] = {0x12, 0, 0, 0, 36, 0};
  c.Send(c.Command(inq, 6, true, false, 36, 2));
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpReject);  // no SCSI in a discovery session
  EXPECT_EQ(lun_->commands.load(), 0u);
}

TEST_F(Loopback, UnansweredNopInDropsTheInitiator) {
  IscsiServerOptions o;
  o.nop_interval_ms = 100;
  o.nop_timeout_ms = 400;
  Start(o);
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login(kIqn, {}), 0);
  auto p = c.Recv(2000);
  ASSERT_TRUE(p && p->op() == kOpNopIn);
  EXPECT_EQ(p->u32(16), kReservedTag);  // a target ping
  EXPECT_NE(p->u32(20), kReservedTag);
  EXPECT_TRUE(c.WaitEof(3000));
  EXPECT_TRUE(WaitFor([&] { return lun_->nexus_lost.load() == 1; }));
}

TEST_F(Loopback, AnsweredNopInKeepsTheSession) {
  IscsiServerOptions o;
  o.nop_interval_ms = 100;
  o.nop_timeout_ms = 400;
  Start(o);
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login(kIqn, {}), 0);
  int pings = 0;
  auto end = Clock::now() + std::chrono::milliseconds(1200);
  while (Clock::now() < end) {
    auto p = c.Recv(200);
    ASSERT_FALSE(c.eof_);
    if (!p) continue;
    ASSERT_EQ(p->op(), kOpNopIn);
    ++pings;
    OutPdu a;
    a.set_opcode(kOpNopOut | 0x40);
    a.set_flags(0x80);
    a.set_itt(kReservedTag);
    a.set_u32(20, p->u32(20));
    a.set_u32(24, c.cmdsn_);
    c.Send(a);
  }
  EXPECT_GE(pings, 3);
  EXPECT_EQ(server_->Sessions().size(), 1u);
}

TEST_F(Loopback, LoginTimeoutAndGarbageDropOnlyThatConnection) {
  IscsiServerOptions o;
  o.login_timeout_ms = 300;
  Start(o);
  MiniInitiator idle, garbage, good;
  ASSERT_TRUE(idle.Connect(port_));
  ASSERT_TRUE(garbage.Connect(port_));
  std::vector<uint8_t> junk(48, 0xff);  // data length 16M-1: refused at once
  garbage.SendRaw(junk);
  EXPECT_TRUE(garbage.WaitEof(2000));
  ASSERT_TRUE(good.Connect(port_));
  ASSERT_EQ(good.Login(kIqn, {}), 0);
  EXPECT_TRUE(idle.WaitEof(3000));
  uint8_t tur[16] = {};
  good.Send(good.Command(tur, 6, false, false, 0, 1));
  auto p = good.Recv();
  ASSERT_TRUE(p && p->op() == kOpScsiResp);
}

TEST_F(Loopback, SameIsidReinstatesAndOtherIsidCoexists) {
  Start();
  MiniInitiator a, b, mp;
  ASSERT_TRUE(a.Connect(port_));
  ASSERT_EQ(a.Login(kIqn, {}, nullptr, 0x80000000aaaaull), 0);
  ASSERT_TRUE(mp.Connect(port_));
  ASSERT_EQ(mp.Login(kIqn, {}, nullptr, 0x80000000bbbbull), 0);  // a second path (MPIO)
  ASSERT_TRUE(b.Connect(port_));
  ASSERT_EQ(b.Login(kIqn, {}, nullptr, 0x80000000aaaaull), 0);
  EXPECT_TRUE(a.WaitEof(3000));
  EXPECT_NE(a.tsih_, b.tsih_);
  EXPECT_TRUE(WaitFor([&] { return server_->Sessions().size() == 2; }));
  uint8_t tur[16] = {};
  b.Send(b.Command(tur, 6, false, false, 0, 1));
  auto p = b.Recv();
  ASSERT_TRUE(p && p->op() == kOpScsiResp);
  EXPECT_EQ(server_->DropTarget(kIqn), 2u);
  EXPECT_TRUE(b.WaitEof(3000));
  EXPECT_TRUE(mp.WaitEof(3000));
}

TEST_F(Loopback, AsyncLogoutRequest) {
  Start();
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login(kIqn, {}), 0);
  EXPECT_EQ(server_->RequestLogout(kIqn, 5), 1u);
  auto p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpAsync);
  EXPECT_EQ(p->bhs[36], 1);              // logout requested
  EXPECT_EQ(Get16(p->bhs + 42), 5);      // Parameter3: time to logout
}

TEST_F(Loopback, InitiatorThatStopsReadingBlocksNobodyAndIsDropped) {
  IscsiServerOptions o;
  o.send_timeout_ms = 3000;
  Start(o, /*one_thread_sink=*/true);
  MiniInitiator stuck, other;
  ASSERT_TRUE(stuck.Connect(port_));
  int small = 4096;
  ::setsockopt(stuck.fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  ASSERT_EQ(stuck.Login(kIqn, {{"MaxRecvDataSegmentLength", "262144"}}), 0);
  // 48 MiB of reads that the initiator never reads back.
  uint8_t cdb[16];
  for (uint32_t i = 0; i < 48; ++i) {
    Read10Cdb(cdb, (i % 8) * 2048, 2048);
    stuck.Send(stuck.Command(cdb, 10, true, false, 1 << 20, 0x1000 + i));
  }
  ASSERT_TRUE(other.Connect(port_));
  ASSERT_EQ(other.Login(kIqn, {}, nullptr, 0x800000000777ull), 0);
  auto t0 = Clock::now();
  for (uint32_t i = 0; i < 20; ++i) {
    Read10Cdb(cdb, i, 8);
    other.Send(other.Command(cdb, 10, true, false, 4096, i + 1));
    auto p = other.Recv(2000);
    ASSERT_TRUE(p && p->op() == kOpDataIn) << i;
  }
  // The shared completion thread never waited for the stuck socket.
  EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1500));
  EXPECT_TRUE(WaitFor([&] { return server_->Sessions().size() == 1; }, 8000));
  EXPECT_TRUE(WaitFor([&] { return lun_->nexus_lost.load() == 1; }));
}

TEST_F(Loopback, AbortTaskWaitingForDataAndDataDigestError) {
  Start();
  MiniInitiator c;
  ASSERT_TRUE(c.Connect(port_));
  ASSERT_EQ(c.Login(kIqn, {{"DataDigest", "CRC32C"}, {"InitialR2T", "Yes"}, {"ImmediateData", "No"}}), 0);
  ASSERT_TRUE(c.dd_);
  uint8_t cdb[16];
  Read10Cdb(cdb, 0, 8, true);
  uint32_t write_cmdsn = c.cmdsn_;
  c.Send(c.Command(cdb, 10, false, true, 4096, 0x50));
  auto p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpR2t);
  uint32_t ttt = p->u32(20);
  uint32_t max_before = p->u32(32);
  OutPdu tmf;
  tmf.set_opcode(kOpTmfReq | 0x40);
  tmf.set_flags(0x80 | 1);  // ABORT TASK
  tmf.set_itt(0x51);
  tmf.set_u32(20, 0x50);
  tmf.set_u32(24, c.cmdsn_);
  tmf.set_u32(32, write_cmdsn);
  c.Send(tmf);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpTmfResp);
  EXPECT_EQ(p->bhs[2], 0);                         // function complete
  EXPECT_EQ(p->u32(32), max_before + 1);           // its window slot is free again
  // Late Data-Out for the aborted task is discarded silently.
  std::vector<uint8_t> blk(4096, 0x77);
  OutPdu d;
  d.set_opcode(kOpDataOut);
  d.set_flags(0x80);
  d.set_itt(0x50);
  d.set_u32(20, ttt);
  d.set_data(blk.data(), blk.size());
  c.Send(d);
  EXPECT_FALSE(c.Recv(200).has_value());
  EXPECT_EQ(lun_->commands.load(), 0u);
  // A NOP-Out whose data digest is wrong: Reject (data digest error), then the connection closes (ERL 0).
  OutPdu nop;
  nop.set_opcode(kOpNopOut | 0x40);
  nop.set_flags(0x80);
  nop.set_itt(0x52);
  nop.set_u32(20, kReservedTag);
  nop.set_u32(24, c.cmdsn_);
  std::string ping = "12345678";
  nop.set_data(reinterpret_cast<const uint8_t*>(ping.data()), ping.size());
  auto wire = Encode(nop, c.hd_, c.dd_);
  wire.back() ^= 0x5a;
  c.SendRaw(wire);
  p = c.Recv();
  ASSERT_TRUE(p && p->op() == kOpReject);
  EXPECT_EQ(p->bhs[2], kRejectDataDigest);
  EXPECT_TRUE(c.WaitEof(3000));
}

TEST_F(Loopback, StopWithOpenConnectionsJoinsEverything) {
  Start();
  MiniInitiator a, b;
  ASSERT_TRUE(a.Connect(port_));
  ASSERT_TRUE(b.Connect(port_));
  ASSERT_EQ(b.Login(kIqn, {}), 0);
  auto t0 = Clock::now();
  server_->Stop();
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
  EXPECT_TRUE(a.WaitEof(1000));
  EXPECT_TRUE(b.WaitEof(1000));
  EXPECT_EQ(lun_->nexus_lost.load(), 1);
}

}  // namespace
}  // namespace ferry::iscsi
