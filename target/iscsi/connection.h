// Connection: one iSCSI connection (and, with MaxConnections=1, its session):
// login, then the full-feature phase, on the thread that calls Run().
//
// Promise: Run() returns once the connection is closed (by the peer, by a
// protocol error, a timeout, logout, or Close() from any thread); on return
// the socket is closed and the SCSI sink has been told the nexus is lost.
// Completions from the sink may arrive on any thread, also after Run()
// returned (they are then dropped). Close(), Info() and SendAsync() are
// thread-safe. Sending never blocks: PDUs go out with a non-blocking writev
// and whatever the socket does not take waits in an output queue that the
// connection's own thread flushes; a peer that stops reading for
// send_timeout_ms is dropped. So a stuck initiator never blocks the thread
// that completes its commands. Lock order: send_mu_ before state_mu_.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "target/common/logger.h"
#include "target/iscsi/datapath.h"
#include "target/iscsi/login.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/portal.h"
#include "target/iscsi/target_directory.h"

struct iovec;

namespace ferry::iscsi {

class Connection;

// What a connection needs from the server that owns it (called only from
// the connection's own thread).
class ConnectionOwner {
 public:
  virtual ~ConnectionOwner() = default;
  virtual uint16_t AllocateTsih() = 0;
  virtual bool TsihExists(uint16_t tsih) = 0;
  // The connection reached the full-feature phase: reinstate (close) older
  // sessions with the same initiator, ISID and target before returning.
  virtual void EnteredFullFeature(const std::shared_ptr<Connection>& c) = 0;
  // Portals to advertise in SendTargets ("ip:port"), wildcard ones replaced
  // by `local_ip`.
  virtual std::vector<std::string> Portals(const std::string& local_ip) = 0;
};

struct ConnectionEnv {
  IscsiServerOptions opts;
  TargetDirectory* directory = nullptr;
  ConnectionOwner* owner = nullptr;
  Logger log;
  std::string peer_addr;   // "ip:port"
  std::string peer_ip;
  std::string local_addr;  // "ip:port"
  std::string local_ip;
  uint64_t nexus_id = 0;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(int fd, ConnectionEnv env);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void Run();
  void Close();

  bool full_feature() const { return ffp_.load(); }
  bool finished() const { return finished_.load(); }
  SessionInfo Info() const;
  // Identity (valid once full_feature()).
  const std::string& target_iqn() const { return target_iqn_; }
  const std::string& initiator_name() const { return initiator_name_; }
  uint64_t isid() const { return isid_; }
  uint16_t tsih() const { return tsih_; }
  bool discovery() const { return discovery_; }

  void SendAsync(AsyncEvent event, uint64_t lun, const std::vector<uint8_t>& sense,
                 uint16_t p1, uint16_t p2, uint16_t p3);

 private:
  struct R2tSlot {
    uint32_t ttt;
    uint32_t offset;
    uint32_t length;
    uint32_t received;
    uint32_t next_datasn;
  };
  struct Task {
    uint64_t serial = 0;
    uint32_t itt = 0;
    uint32_t cmdsn = 0;
    bool immediate = false;
    bool holds_slot = false;        // counted in the CmdSN window
    bool accepted = false;          // its turn in CmdSN order has come
    bool submitted = false;
    bool aborted = false;           // aborted by this session's TMF: no response
    uint64_t lun = 0;
    bool read = false;
    uint32_t read_len = 0;          // expected Data-In length
    uint32_t write_len = 0;         // expected Data-Out length (EDTL)
    uint32_t received = 0;          // Data-Out bytes received so far
    uint32_t unsolicited_limit = 0;  // unsolicited bytes allowed
    bool unsolicited_open = false;  // more unsolicited Data-Out to come
    uint32_t unsolicited_datasn = 0;
    R2tPlanner r2t;
    std::vector<R2tSlot> r2ts;
    std::unique_ptr<scsi::ScsiCommand> cmd;
  };

  // Low-level I/O. `keep` keeps PDU data alive while queued; without it the
  // data is copied. `raw` PDUs (login responses) keep their sequence fields.
  bool SendPdus(OutPdu* pdus, size_t n, std::shared_ptr<const void> keep, bool raw = false);
  void FillSeq(OutPdu* p, bool advance_statsn);  // under send_mu_
  bool FlushLocked();                             // under send_mu_; false = connection broken
  void FlushDeferred();                           // a BatchScope's end: send what was queued
  void Wake();
  bool SendSimple(OutPdu& p, bool advances_statsn);
  void SendReject(const uint8_t* bhs, RejectReason reason);

  // Phases.
  bool DoLogin(const PduView& pdu);
  bool Dispatch(const PduView& pdu);
  bool OnScsiCommand(const PduView& pdu);
  bool OnDataOut(const PduView& pdu);
  bool OnNopOut(const PduView& pdu);
  bool OnTmf(const PduView& pdu);
  bool OnLogout(const PduView& pdu);
  bool OnText(const PduView& pdu);
  // CmdSN ordering for non-SCSI requests: true = process it now.
  bool AcceptNonTask(const BhsView& h);
  void ReleaseAhead(std::vector<std::unique_ptr<scsi::ScsiCommand>>* ready,
                    std::vector<uint64_t>* serials);          // under state_mu_
  void MaybeReady(Task* t, std::vector<std::unique_ptr<scsi::ScsiCommand>>* ready,
                  std::vector<uint64_t>* serials);            // under state_mu_
  void SubmitReady(std::vector<std::unique_ptr<scsi::ScsiCommand>>& ready,
                   std::vector<uint64_t>& serials);
  void SendR2ts(Task* t, std::vector<OutPdu>* out);           // under state_mu_
  void Complete(uint32_t itt, uint64_t serial, scsi::ScsiResult r);
  void DropTask(uint32_t itt);                                // under state_mu_
  void Teardown();
  void PingIfIdle();

  const int fd_;
  ConnectionEnv env_;
  Logger log_;
  PduFramer framer_;

  // Login results.
  std::unique_ptr<LoginMachine> login_;
  std::atomic<bool> ffp_{false};
  std::atomic<bool> finished_{false};
  bool discovery_ = false;
  std::string target_iqn_, initiator_name_;
  uint64_t isid_ = 0;
  uint16_t tsih_ = 0;
  uint16_t cid_ = 0;
  SessionParams params_;
  std::shared_ptr<scsi::CommandSink> sink_;
  std::shared_ptr<const scsi::Nexus> nexus_;
  std::vector<std::string> portals_;

  // Send side (send_mu_).
  struct OutChunk {
    uint8_t head[kBhsLen + 4];
    size_t head_len = 0;
    const uint8_t* data = nullptr;
    SplicedData* spliced = nullptr;        // data comes from this pipe instead (see OutPdu)
    size_t data_len = 0;
    uint8_t tail[8];
    size_t tail_len = 0;
    size_t sent = 0;                       // bytes of head+data+tail already written
    std::shared_ptr<const void> keep;      // owner of `data`
    size_t total() const { return head_len + data_len + tail_len; }
  };
  std::mutex send_mu_;
  uint32_t statsn_ = 0;
  bool dead_ = false;
  bool corked_ = false;                    // the connection's thread is handling a batch
  std::deque<OutChunk> outq_;
  size_t outq_bytes_ = 0;
  std::chrono::steady_clock::time_point last_progress_;
  int wake_fd_ = -1;                       // eventfd: another thread queued output
  bool header_digest_ = false, data_digest_ = false;

  // Socket closing (fd_mu_).
  std::mutex fd_mu_;
  bool fd_closed_ = false;

  // Task state (state_mu_).
  std::mutex state_mu_;
  CmdWindow window_;
  std::atomic<uint32_t> exp_cmdsn_{0}, max_cmdsn_{0};  // mirrors for the send path
  std::unordered_map<uint32_t, std::unique_ptr<Task>> tasks_;  // by ITT
  std::map<uint32_t, uint32_t> ahead_;  // CmdSN (offset from exp) -> ITT, received early
  uint64_t next_serial_ = 1;
  uint32_t next_ttt_ = 1;
  uint32_t immediate_inflight_ = 0;
  uint64_t write_buffered_ = 0;         // Data-Out bytes held by live tasks

  // Text continuation.
  std::string text_pending_;
  uint32_t text_ttt_ = kReservedTag;
  uint32_t text_itt_ = kReservedTag;

  // Liveness.
  std::chrono::steady_clock::time_point last_rx_;
  bool ping_outstanding_ = false;
  std::chrono::steady_clock::time_point ping_sent_;
  uint32_t ping_ttt_ = 0;
  bool logout_ = false;
  std::atomic<bool> closing_{false};
};

}  // namespace ferry::iscsi
