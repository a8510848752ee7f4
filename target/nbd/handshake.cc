#include "target/nbd/handshake.h"

#include <algorithm>

namespace ferry::nbd {
namespace {

void Append16(std::string* s, uint16_t v) {
  uint8_t b[2];
  Put16(b, v);
  s->append(reinterpret_cast<char*>(b), 2);
}
void Append32(std::string* s, uint32_t v) {
  uint8_t b[4];
  Put32(b, v);
  s->append(reinterpret_cast<char*>(b), 4);
}
void Append64(std::string* s, uint64_t v) {
  uint8_t b[8];
  Put64(b, v);
  s->append(reinterpret_cast<char*>(b), 8);
}
const uint8_t* U8(const std::string& s) { return reinterpret_cast<const uint8_t*>(s.data()); }

uint32_t ErrorFor(const Status& s) {
  switch (s.code()) {
    case Status::Code::kNotFound:
      return kRepErrUnknown;
    case Status::Code::kInvalidArgument:
      return kRepErrInvalid;
    case Status::Code::kPermissionDenied:
    case Status::Code::kFenced:
      return kRepErrPolicy;
    case Status::Code::kUnavailable:
    case Status::Code::kTimeout:
      return kRepErrShutdown;
    default:
      return kRepErrInvalid;
  }
}

}  // namespace

ServerHandshake::ServerHandshake(ExportProvider* provider, Options opts)
    : provider_(provider), opts_(opts) {}

void ServerHandshake::Greeting(std::string* out) const {
  Append64(out, kNbdMagic);
  Append64(out, kIHaveOpt);
  Append16(out, kFlagFixedNewstyle | kFlagNoZeroes);
}

uint16_t ServerHandshake::TransmissionFlags(const ExportInfo& info, bool structured) {
  uint16_t f = kTFlagHasFlags | kTFlagSendFlush | kTFlagSendFua | kTFlagSendCache;
  if (info.read_only) {
    f |= kTFlagReadOnly;
  } else {
    f |= kTFlagSendTrim | kTFlagSendWriteZeroes;
  }
  if (structured) f |= kTFlagSendDf;
  return f;
}

void ServerHandshake::Close(const std::string& why) {
  state_ = State::kClosed;
  close_reason_ = why;
  buf_.clear();
}

size_t ServerHandshake::Consume(const uint8_t* p, size_t n, std::string* out) {
  size_t used = 0;
  while (used < n && !done()) {
    size_t want = 0;
    switch (state_) {
      case State::kClientFlags:
        want = 4;
        break;
      case State::kOptionHeader:
        want = 16;
        break;
      case State::kOptionData:
        want = opt_len_;
        break;
      default:
        return used;
    }
    size_t take = std::min(n - used, want - buf_.size());
    buf_.append(reinterpret_cast<const char*>(p + used), take);
    used += take;
    if (buf_.size() < want) break;

    if (state_ == State::kClientFlags) {
      uint32_t flags = Get32(U8(buf_));
      buf_.clear();
      if (!(flags & kClientFlagFixedNewstyle)) {
        Close("client does not speak fixed newstyle");
        break;
      }
      if (flags & ~(kClientFlagFixedNewstyle | kClientFlagNoZeroes)) {
        Close("unknown client flags");
        break;
      }
      no_zeroes_ = flags & kClientFlagNoZeroes;
      state_ = State::kOptionHeader;
    } else if (state_ == State::kOptionHeader) {
      uint64_t magic = Get64(U8(buf_));
      opt_ = Get32(U8(buf_) + 8);
      opt_len_ = Get32(U8(buf_) + 12);
      buf_.clear();
      if (magic != kIHaveOpt) {
        Close("bad option magic");
        break;
      }
      if (++options_seen_ > opts_.max_options) {
        Close("too many options");
        break;
      }
      if (opt_len_ > opts_.max_option_len) {
        Close("option data too long (" + std::to_string(opt_len_) + " bytes)");
        break;
      }
      state_ = State::kOptionData;
      if (opt_len_ == 0) HandleOption(out);
    } else {
      HandleOption(out);
    }
  }
  return used;
}

void ServerHandshake::Reply(uint32_t type, const std::string& data, std::string* out) const {
  Append64(out, kOptReplyMagic);
  Append32(out, opt_);
  Append32(out, type);
  Append32(out, static_cast<uint32_t>(data.size()));
  out->append(data);
}

void ServerHandshake::ErrorReply(uint32_t type, const std::string& msg, std::string* out) const {
  Reply(type, msg.substr(0, 4096), out);
}

void ServerHandshake::HandleOption(std::string* out) {
  // On entry buf_ holds exactly opt_len_ bytes of option data.
  state_ = State::kOptionHeader;
  switch (opt_) {
    case kOptExportName:
      OptExportName(out);
      break;
    case kOptAbort:
      Reply(kRepAck, "", out);
      Close("client aborted");
      break;
    case kOptList:
      OptList(out);
      break;
    case kOptInfo:
      OptInfoOrGo(false, out);
      break;
    case kOptGo:
      OptInfoOrGo(true, out);
      break;
    case kOptStructuredReply:
      if (!buf_.empty()) {
        ErrorReply(kRepErrInvalid, "STRUCTURED_REPLY takes no data", out);
      } else {
        session_.structured = true;
        Reply(kRepAck, "", out);
      }
      break;
    case kOptListMetaContext:
      OptMetaContext(false, out);
      break;
    case kOptSetMetaContext:
      OptMetaContext(true, out);
      break;
    default:
      ErrorReply(kRepErrUnsup, "option " + std::to_string(opt_) + " not supported", out);
      break;
  }
  buf_.clear();
}

void ServerHandshake::OptExportName(std::string* out) {
  std::string name = buf_;
  auto r = provider_->Open(name);
  if (!r.ok()) {
    // The protocol has no error reply for EXPORT_NAME: the server closes.
    Close("export '" + name + "': " + r.status().message());
    return;
  }
  session_.export_name = name;
  session_.info = r.value();
  // Structured replies and meta contexts negotiated earlier stay in force.
  session_.base_allocation = meta_set_ && session_.structured && meta_export_ == name;
  session_.tflags = TransmissionFlags(session_.info, session_.structured);
  Append64(out, session_.info.size);
  Append16(out, session_.tflags);
  if (!no_zeroes_) out->append(124, '\0');
  state_ = State::kTransmission;
}

void ServerHandshake::OptList(std::string* out) {
  if (!buf_.empty()) {
    ErrorReply(kRepErrInvalid, "LIST takes no data", out);
    return;
  }
  auto r = provider_->List();
  if (!r.ok()) {
    ErrorReply(ErrorFor(r.status()), r.status().message(), out);
    return;
  }
  for (const auto& name : r.value()) {
    std::string d;
    Append32(&d, static_cast<uint32_t>(name.size()));
    d += name;
    Reply(kRepServer, d, out);
  }
  Reply(kRepAck, "", out);
}

void ServerHandshake::OptInfoOrGo(bool go, std::string* out) {
  const std::string& d = buf_;
  if (d.size() < 6) {
    ErrorReply(kRepErrInvalid, "INFO/GO data too short", out);
    return;
  }
  uint32_t name_len = Get32(U8(d));
  if (name_len > d.size() - 6) {
    ErrorReply(kRepErrInvalid, "INFO/GO name length exceeds the option", out);
    return;
  }
  std::string name = d.substr(4, name_len);
  uint16_t nreq = Get16(U8(d) + 4 + name_len);
  if (d.size() != 4 + name_len + 2 + 2 * static_cast<size_t>(nreq)) {
    ErrorReply(kRepErrInvalid, "INFO/GO request count does not match the option length", out);
    return;
  }
  bool want_name = false, want_desc = false;
  for (uint16_t i = 0; i < nreq; ++i) {
    uint16_t t = Get16(U8(d) + 6 + name_len + 2 * i);
    if (t == kInfoName) want_name = true;
    if (t == kInfoDescription) want_desc = true;
  }
  auto r = go ? provider_->Open(name) : provider_->Describe(name);
  if (!r.ok()) {
    ErrorReply(ErrorFor(r.status()), "export '" + name + "': " + r.status().message(), out);
    return;
  }
  const ExportInfo& info = r.value();
  uint16_t tflags = TransmissionFlags(info, session_.structured);
  std::string e;
  Append16(&e, kInfoExport);
  Append64(&e, info.size);
  Append16(&e, tflags);
  Reply(kRepInfo, e, out);
  std::string bs;
  Append16(&bs, kInfoBlockSize);
  Append32(&bs, opts_.min_block);
  Append32(&bs, opts_.preferred_block);
  Append32(&bs, opts_.max_block);
  Reply(kRepInfo, bs, out);
  if (want_name) {
    std::string nm;
    Append16(&nm, kInfoName);
    nm += info.canonical_name.empty() ? name : info.canonical_name;
    Reply(kRepInfo, nm, out);
  }
  if (want_desc && !info.description.empty()) {
    std::string ds;
    Append16(&ds, kInfoDescription);
    ds += info.description;
    Reply(kRepInfo, ds, out);
  }
  Reply(kRepAck, "", out);
  if (go) {
    session_.export_name = name;
    session_.info = info;
    session_.tflags = tflags;
    session_.base_allocation = meta_set_ && session_.structured && meta_export_ == name;
    state_ = State::kTransmission;
  }
}

void ServerHandshake::OptMetaContext(bool set, std::string* out) {
  const std::string& d = buf_;
  if (!session_.structured) {
    ErrorReply(kRepErrInvalid, "meta contexts need structured replies", out);
    return;
  }
  if (d.size() < 8) {
    ErrorReply(kRepErrInvalid, "meta context data too short", out);
    return;
  }
  uint32_t name_len = Get32(U8(d));
  if (name_len > d.size() - 8) {
    ErrorReply(kRepErrInvalid, "meta context export name length exceeds the option", out);
    return;
  }
  std::string name = d.substr(4, name_len);
  size_t pos = 4 + name_len;
  uint32_t nq = Get32(U8(d) + pos);
  pos += 4;
  std::vector<std::string> queries;
  for (uint32_t i = 0; i < nq; ++i) {
    if (d.size() - pos < 4) {
      ErrorReply(kRepErrInvalid, "meta context query truncated", out);
      return;
    }
    uint32_t ql = Get32(U8(d) + pos);
    pos += 4;
    if (ql > d.size() - pos) {
      ErrorReply(kRepErrInvalid, "meta context query length exceeds the option", out);
      return;
    }
    queries.push_back(d.substr(pos, ql));
    pos += ql;
  }
  if (pos != d.size()) {
    ErrorReply(kRepErrInvalid, "trailing bytes after meta context queries", out);
    return;
  }
  auto r = provider_->Describe(name);
  if (!r.ok()) {
    ErrorReply(ErrorFor(r.status()), "export '" + name + "': " + r.status().message(), out);
    return;
  }
  bool match = false;
  if (queries.empty()) {
    match = !set;  // LIST with no query lists everything; SET with none selects nothing
  }
  for (const auto& q : queries) {
    if (q == kBaseAllocation || (!set && q == "base:")) match = true;
  }
  if (match) {
    std::string m;
    Append32(&m, set ? kMetaContextBaseAllocation : 0);
    m += kBaseAllocation;
    Reply(kRepMetaContext, m, out);
  }
  if (set) {
    meta_set_ = match;
    meta_export_ = name;
  }
  Reply(kRepAck, "", out);
}

}  // namespace ferry::nbd
