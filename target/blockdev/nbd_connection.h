// NbdConnection: one TCP connection to an NBD server (a Ferry gateway), in the
// transmission phase after a fixed-newstyle NBD_OPT_GO handshake.
//
// Promise:
//  - Connect() is bounded by its connect and handshake timeouts and returns
//    either a live connection or a Status (kUnavailable: unreachable / protocol
//    refused; kNotFound: unknown export; kTimeout: the server did not answer).
//  - Many requests may be in flight; Send() writes header+payload with one
//    sendmsg under a send mutex (TCP_NODELAY, no SIGPIPE). Inside a
//    BatchScope (target/common/batch_scope.h) on a thread other than the
//    reader, and when the connection is owned by a shared_ptr, a request of at
//    most kBatchMaxPayload bytes is copied into an output buffer instead and
//    leaves with the others of the batch when the scope flushes (a send error
//    then marks the connection dead, exactly as a direct send would).
//  - Replies may come in any order; a reader thread reads them in large
//    chunks and completes each through on_reply (all the replies of one
//    recv() inside one BatchScope), copying a read's payload into the buffer
//    given to Send() (a large payload is received straight into it).
//  - Anything wrong on the wire (EOF, RST, bad magic, unknown cookie, a reply
//    to a cookie not in flight, a structured reply we did not ask for) makes the
//    connection dead at once: on_dead runs exactly once, and no further
//    on_reply is called. Requests still in flight are simply never answered;
//    the owner (GatewayBlockDevice) knows them and re-sends them elsewhere.
//  - Close() shuts the socket down (waking a blocked send or recv) and joins
//    the reader; after it returns no callback runs and no buffer is touched.
//    Callbacks run on the reader thread and must not call Close().
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "target/common/spliced_data.h"
#include "target/common/status.h"

struct iovec;

namespace ferry::blockdev {

struct NbdConnectOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  std::string export_name;
  std::chrono::milliseconds connect_timeout{3000};
  std::chrono::milliseconds handshake_timeout{10000};
};

// Size and transmission flags the server announced for the export.
struct NbdExportInfo {
  uint64_t size = 0;
  uint16_t flags = 0;  // nbd::kTFlag*
  std::string name;    // NBD_INFO_NAME: the server's name for the export (empty if it sent none)
};

class NbdConnection : public std::enable_shared_from_this<NbdConnection> {
 public:
  // Largest write payload a batched Send() copies; larger ones go out at once.
  static constexpr uint32_t kBatchMaxPayload = 64 * 1024;

  // cookie, NBD error (0 = success). For a successful read the payload is
  // already in the buffer given to Send().
  using ReplyFn = std::function<void(uint64_t cookie, uint32_t error)>;
  using DeadFn = std::function<void(const Status& why)>;

  static Result<std::unique_ptr<NbdConnection>> Connect(const NbdConnectOptions& opts,
                                                        ReplyFn on_reply, DeadFn on_dead);
  // The same handshake over an already connected stream socket (takes
  // ownership of fd). For tests and fuzzing; host/port/connect_timeout unused.
  static Result<std::unique_ptr<NbdConnection>> ConnectFd(int fd, const NbdConnectOptions& opts,
                                                          ReplyFn on_reply, DeadFn on_dead);
  // Handshake only (NBD_OPT_INFO, falling back to GO + DISC), then closes.
  // Used to probe a gateway's health and to re-read an export's size.
  static Result<NbdExportInfo> Probe(const NbdConnectOptions& opts);

  ~NbdConnection();  // Close()
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  const NbdExportInfo& info() const { return info_; }
  bool alive() const { return !dead_.load(); }
  // True on this connection's reader thread (where replies are delivered).
  bool OnReaderThread() const { return std::this_thread::get_id() == reader_.get_id(); }

  // Sends one request. `payload` (length bytes) for writes; `read_buf` (length
  // bytes) receives a read's data. Cookies must be unique among requests in
  // flight on this connection. An error means the connection is (now) dead.
  // A read may instead name `splice_dest`: its payload is then moved into
  // that pipe with splice() (never copied through user memory, except what
  // the reader had already buffered).
  Status Send(uint16_t type, uint16_t flags, uint64_t cookie, uint64_t offset, uint32_t length,
              const char* payload, char* read_buf, SplicedData* splice_dest = nullptr);

  // Asks the server to disconnect (NBD_CMD_DISC) then closes. Idempotent.
  void Close();

 private:
  // Wraps a connected, negotiated fd (owned from here on, closed on failure).
  static Result<std::unique_ptr<NbdConnection>> Adopt(int fd, const NbdExportInfo& info, ReplyFn on_reply,
                                                      DeadFn on_dead);
  struct Pending {
    uint16_t type;
    uint32_t length;
    char* read_buf;
    SplicedData* splice_dest;
  };
  NbdConnection(int fd, NbdExportInfo info, ReplyFn on_reply, DeadFn on_dead);
  void ReaderLoop();
  void MarkDead(const Status& why);
  // Writes iov (after anything batched) under send_mu_ (held by the caller).
  Status SendLocked(const struct iovec* iov, int iovcnt);
  void FlushBatched();

  int fd_;
  NbdExportInfo info_;
  ReplyFn on_reply_;
  DeadFn on_dead_;
  std::atomic<bool> dead_{false};
  std::atomic<bool> closed_{false};
  std::mutex send_mu_;
  std::vector<char> batched_;  // requests waiting for the BatchScope to flush (under send_mu_)
  std::mutex pending_mu_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::atomic<int> splice_pending_{0};  // reads in flight with a splice_dest
  std::thread reader_;
};

}  // namespace ferry::blockdev
