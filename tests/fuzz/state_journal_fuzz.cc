// libFuzzer target: the target's state journal (STATE_DIR/state.journal).
// Any bytes must parse or be refused with a Status, never crash; what parses
// is a prefix of whole committed batches; every parsed record is applied to a
// state (a refused record changes nothing). Lines of the input, framed as one
// batch, must parse back to exactly those records.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "target/server/state_journal.h"

namespace fj = ferry::server::journal;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  auto parsed = fj::Parse(bytes);
  if (parsed.ok()) {
    if (parsed->valid_bytes > size || parsed->valid_bytes + parsed->dropped_bytes != size) std::abort();
    ferry::server::ServerState s;
    for (const auto& r : parsed->records) {
      ferry::server::ServerState before = s;
      if (!fj::Apply(r, &s).ok() && !(s == before)) std::abort();
    }
  }
  // Round trip: the input's lines as the records of one batch.
  std::vector<std::string> records;
  size_t pos = 0;
  while (pos <= bytes.size()) {
    size_t nl = bytes.find('\n', pos);
    std::string line = bytes.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    // Real records are JSON objects whose first member is "op" with a change
    // kind: never empty, never spelled like a commit line.
    if (!line.empty() && line.rfind("{\"op\":\"commit\"", 0) != 0) records.push_back(line);
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  std::string framed = fj::FrameBatch(records);
  auto back = fj::Parse(framed);
  if (!back.ok() || back->records != records || back->valid_bytes != framed.size()) std::abort();
  return 0;
}
