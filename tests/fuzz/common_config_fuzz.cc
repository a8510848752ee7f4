// Fuzzes the INI parser and host:port parser with arbitrary bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "target/common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  ferry::Config c;
  (void)c.ParseIni(text, "fuzz");
  (void)c.GetInt("a", "b", 0);
  (void)ferry::ParseHostPort(text);
  return 0;
}
