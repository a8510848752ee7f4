// NbdConnection: one NBD client connection of the gateway, from handshake to close.
//
// Promise: Run() performs the fixed-newstyle handshake (bounded by
// Options::handshake_timeout; a silent or malformed client is dropped) and then
// serves requests until the client disconnects, sends NBD_CMD_DISC, breaks the
// framing, or Shutdown() is called. Requests are pipelined: the reader thread
// decodes them and runs small ones and every READ inline (their replies are
// sent in batches with one sendmsg), large writes and FLUSH go to the shared
// WorkerPool, so replies may come out of order. A client that stops reading
// its replies therefore blocks only its own connection's thread, never a
// pool worker other connections need. Every reply is written whole under the
// connection's send mutex. READs of Options::zero_copy_min bytes and more are
// sent with sendfile() from the chunk files (the volume's I/O guard is not
// held while sending); an error after a reply's header went out closes the
// connection, never a second header. Errors from the store become NBD errors (a fenced
// write is EPERM and writes nothing). Run() returns only once no task of this
// connection is running; it closes the socket. No lock is shared between
// connections on the I/O path.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "target/common/logger.h"
#include "target/gateway/volume_exports.h"
#include "target/gateway/worker_pool.h"
#include "target/nbd/handshake.h"
#include "target/nbd/request_parser.h"
#include "target/store/store.h"

namespace ferry::gateway {

class FaultInjector;

class NbdConnection : public std::enable_shared_from_this<NbdConnection> {
 public:
  struct Options {
    std::chrono::milliseconds handshake_timeout{10000};
    std::chrono::milliseconds send_timeout{60000};
    uint32_t inline_max = 256 * 1024;  // larger requests (not READs) run on the worker pool
    // Writes up to this size run inline; larger ones (and FUA writes) on the pool,
    // so the file system's per-write cost is spread over several threads.
    uint32_t inline_write_max = 0;
    FaultInjector* faults = nullptr;  // test/debug fault injection (fault_injector.h); may be null
    // READs of at least this many bytes are sent without copying: header, then
    // each segment of VolumeHandle::PlanRead with sendfile() (zeros with send).
    // 0 turns it off (every READ is pread into a buffer, then sent).
    uint32_t zero_copy_min = 64 * 1024;
  };

  // Takes ownership of `fd`. `zeros` is a read-only buffer of zero bytes
  // (at least 1 MiB) shared by the server.
  NbdConnection(int fd, std::string peer, store::Store* store, WorkerPool* pool,
                const std::vector<char>* zeros, Options opts, Logger log);
  ~NbdConnection();
  NbdConnection(const NbdConnection&) = delete;
  NbdConnection& operator=(const NbdConnection&) = delete;

  void Run();
  // From any thread: makes Run() return soon (pending tasks still finish).
  void Shutdown();

 private:
  static constexpr int kBatch = 32;

  bool Handshake(std::string* leftover);
  void Serve(const std::string& leftover);
  // Handles a decoded request. Returns false when the connection must end (DISC).
  bool Dispatch(nbd::RequestParser& parser, bool more_buffered);
  // Runs a command and replies. `buf` is the write payload, or scratch space for a read.
  void Execute(const nbd::Request& req, nbd::Buffer* buf, bool batch);
  Status DoWriteZeroes(const nbd::Request& req);
  void ReplyBlockStatus(const nbd::Request& req);

  void ReplyStatus(const nbd::Request& req, const Status& st, bool batch);
  void ReplyError(const nbd::Request& req, uint32_t err, const std::string& msg);
  // Header of a success reply into hdr (32 bytes); returns its length. With
  // data: a READ's (structured OffsetData chunk header when negotiated).
  size_t EncodeSuccessHeader(const nbd::Request& req, bool with_data, size_t data_len, uint8_t* hdr) const;
  void QueueReply(const nbd::Request& req, nbd::Buffer* data, bool batch);
  void FlushBatch();
  bool SendIov(struct iovec* iov, int n, int flags = 0);  // caller holds send_mu_
  // Zero-copy READ reply (see Options::zero_copy_min). False when the range
  // cannot be planned (the caller falls back to Read); otherwise the reply,
  // an error reply, or a closed connection has happened.
  bool TrySendPlannedRead(const nbd::Request& req, bool batch);
  // Caller holds send_mu_; false when the connection is broken (and shut down).
  bool SendFileRange(int fd, uint64_t off, uint64_t len, bool more);
  bool SendZeros(uint64_t len, bool more);

  nbd::Buffer TakeBuffer();
  void GiveBuffer(nbd::Buffer b);
  void TaskDone();

  int fd_;
  std::string peer_;
  store::Store* store_;
  WorkerPool* pool_;
  const std::vector<char>* zeros_;
  Options opts_;
  Logger log_;
  nbd::Session session_;
  std::shared_ptr<store::VolumeHandle> handle_;
  std::atomic<bool> dead_{false};

  std::mutex send_mu_;

  // Reply batch (reader thread only).
  struct Slot {
    uint8_t hdr[32];
    nbd::Buffer data;
  };
  std::vector<Slot> slots_;
  std::vector<struct iovec> iov_;
  int batched_ = 0;

  std::mutex inflight_mu_;
  std::condition_variable inflight_cv_;
  int inflight_ = 0;

  std::mutex bufs_mu_;
  std::vector<nbd::Buffer> free_bufs_;
};

// NBD error number for a store Status.
uint32_t NbdErrorFor(const Status& st);

}  // namespace ferry::gateway
