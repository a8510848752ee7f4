// libFuzzer target: the store's volume metadata decoder (the text read from
// DATA/volumes/<name>/meta). Any input must decode or be refused with a
// Status; a decoded VolumeMeta must re-encode and decode to the same text.
// Each input is tried as-is and as a body with a valid checksum line appended,
// so the fuzzer also reaches the parser behind the checksum.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "target/store/fs_util.h"
#include "target/store/meta.h"

namespace {
void Try(const std::string& text) {
  ferry::store::VolumeMeta m;
  if (!ferry::store::DecodeMeta(text, &m).ok()) return;
  std::string again = ferry::store::EncodeMeta(m);
  ferry::store::VolumeMeta m2;
  if (!ferry::store::DecodeMeta(again, &m2).ok() || ferry::store::EncodeMeta(m2) != again) std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  Try(text);
  uint64_t h = 1469598103934665603ull;  // FNV-1a, as meta.cc signs bodies
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  Try(text + "end " + ferry::store::Hex16(h) + "\n");
  return 0;
}
