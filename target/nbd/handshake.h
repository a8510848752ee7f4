// ServerHandshake: the server side of the NBD fixed-newstyle handshake as a
// pure state machine over bytes (no sockets), so it can be unit-tested and fuzzed.
//
// Promise: Consume() accepts any bytes in any split and never crashes, loops or
// allocates without bound (option data is capped by Options::max_option_len;
// a longer option closes the session). Replies are appended to `out` for the
// caller to send. The session ends in kTransmission (an export was opened with
// NBD_OPT_GO or NBD_OPT_EXPORT_NAME; session() describes it) or in kClosed
// (NBD_OPT_ABORT, a protocol violation or a failed EXPORT_NAME; close_reason()
// says why). Supported options: EXPORT_NAME, ABORT, LIST, INFO, GO,
// STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT ("base:allocation");
// others (STARTTLS included) get NBD_REP_ERR_UNSUP.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "target/common/status.h"
#include "target/nbd/protocol.h"

namespace ferry::nbd {

constexpr uint32_t kMetaContextBaseAllocation = 1;  // our id for "base:allocation"
constexpr const char* kBaseAllocation = "base:allocation";

struct ExportInfo {
  uint64_t size = 0;
  bool read_only = false;
  std::string description;
  // The server's name for what was opened, sent as NBD_INFO_NAME when the
  // client asks for it; empty: the name the client gave.
  std::string canonical_name;
};

// What the handshake asks of the server that embeds it.
class ExportProvider {
 public:
  virtual ~ExportProvider() = default;
  // NBD_OPT_INFO: describes an export without side effects.
  virtual Result<ExportInfo> Describe(const std::string& name) = 0;
  // NBD_OPT_GO / NBD_OPT_EXPORT_NAME: opens the export for this connection.
  virtual Result<ExportInfo> Open(const std::string& name) = 0;
  // NBD_OPT_LIST.
  virtual Result<std::vector<std::string>> List() = 0;
};

// The outcome of a successful handshake.
struct Session {
  std::string export_name;
  ExportInfo info;
  uint16_t tflags = 0;          // transmission flags as advertised
  bool structured = false;      // NBD_OPT_STRUCTURED_REPLY acknowledged
  bool base_allocation = false; // "base:allocation" meta context selected
};

class ServerHandshake {
 public:
  struct Options {
    uint32_t min_block = 512;  // advertised only; unaligned requests are still served
    uint32_t preferred_block = 4096;
    uint32_t max_block = kMaxPayload;
    uint32_t max_option_len = 64 * 1024;
    uint32_t max_options = 1024;  // options per session before we give up on the client
  };
  enum class State { kClientFlags, kOptionHeader, kOptionData, kTransmission, kClosed };

  ServerHandshake(ExportProvider* provider, Options opts);
  ServerHandshake(const ServerHandshake&) = delete;
  ServerHandshake& operator=(const ServerHandshake&) = delete;

  // Appends the server's opening bytes (NBDMAGIC IHAVEOPT flags).
  void Greeting(std::string* out) const;
  // Consumes up to n bytes; returns how many were used (fewer than n only once
  // the state is kTransmission or kClosed — the rest belongs to the caller).
  size_t Consume(const uint8_t* p, size_t n, std::string* out);

  State state() const { return state_; }
  bool done() const { return state_ == State::kTransmission || state_ == State::kClosed; }
  const Session& session() const { return session_; }
  const std::string& close_reason() const { return close_reason_; }

  // Transmission flags we advertise for an export.
  static uint16_t TransmissionFlags(const ExportInfo& info, bool structured);

 private:
  void HandleOption(std::string* out);
  void OptInfoOrGo(bool go, std::string* out);
  void OptExportName(std::string* out);
  void OptList(std::string* out);
  void OptMetaContext(bool set, std::string* out);
  void Reply(uint32_t type, const std::string& data, std::string* out) const;
  void ErrorReply(uint32_t type, const std::string& msg, std::string* out) const;
  void Close(const std::string& why);

  ExportProvider* provider_;
  Options opts_;
  State state_ = State::kClientFlags;
  std::string buf_;        // bytes of the current fixed-size field or option data
  uint32_t opt_ = 0;       // current option
  uint32_t opt_len_ = 0;   // its data length
  uint32_t options_seen_ = 0;
  bool no_zeroes_ = false;
  std::string meta_export_;  // export the meta context was set for
  bool meta_set_ = false;
  Session session_;
  std::string close_reason_;
};

}  // namespace ferry::nbd
