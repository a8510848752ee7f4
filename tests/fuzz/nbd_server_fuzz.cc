// libFuzzer target: bytes from a hostile client into the NBD server's parsers
// (ServerHandshake, then RequestParser + CheckRequest), as the gateway feeds
// them, with a fake export table. Links: ferry_nbd (which pulls ferry_common).
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>

#include "target/nbd/handshake.h"
#include "target/nbd/request_parser.h"

namespace {

class FuzzProvider : public ferry::nbd::ExportProvider {
 public:
  ferry::Result<ferry::nbd::ExportInfo> Describe(const std::string& name) override {
    ferry::nbd::ExportName e;
    if (!ferry::nbd::ParseExportName(name, &e)) return ferry::Status::InvalidArgument("bad name");
    if (e.volume != "vol") return ferry::Status::NotFound("no such export");
    return ferry::nbd::ExportInfo{1 << 20, !e.snapshot.empty(), "fuzz", ""};
  }
  ferry::Result<ferry::nbd::ExportInfo> Open(const std::string& name) override { return Describe(name); }
  ferry::Result<std::vector<std::string>> List() override { return std::vector<std::string>{"vol", "vol:s"}; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks how the stream is split into reads (1..32 bytes, or all at once).
  size_t step = data[0] % 33;
  ++data;
  --size;
  if (step == 0) step = size ? size : 1;
  FuzzProvider provider;
  ferry::nbd::ServerHandshake hs(&provider, ferry::nbd::ServerHandshake::Options{});
  std::string out;
  hs.Greeting(&out);
  size_t pos = 0;
  while (pos < size && !hs.done()) {
    size_t n = std::min(step, size - pos);
    pos += hs.Consume(data + pos, n, &out);
    if (out.size() > (1 << 20)) out.clear();
  }
  if (hs.state() != ferry::nbd::ServerHandshake::State::kTransmission) return 0;
  ferry::nbd::RequestParser parser;
  const ferry::nbd::Session& s = hs.session();
  while (pos < size) {
    size_t n = std::min(step, size - pos);
    size_t used = parser.Consume(data + pos, n);
    pos += used;
    if (parser.state() == ferry::nbd::RequestParser::State::kBroken) break;
    if (parser.state() == ferry::nbd::RequestParser::State::kReady) {
      (void)ferry::nbd::CheckRequest(parser.request(), s.info.size, s);
      parser.Next();
    }
  }
  return 0;
}
