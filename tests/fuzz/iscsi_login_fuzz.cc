// libFuzzer: login and text negotiation (LoginMachine, KeyNegotiator, CHAP).
// The input is cut into Login Request PDUs: each chunk gives the BHS flags
// and version bytes and its text; the machine must answer every one with a
// Login Response and never crash, whatever the order of stages and keys.
#include <cstdint>
#include <cstring>

#include "target/iscsi/chap.h"
#include "target/iscsi/login.h"
#include "target/iscsi/pdu.h"
#include "target/iscsi/text_keys.h"
#include "tests/iscsi/ram_lun.h"
#include "tests/iscsi/test_directory.h"

using namespace ferry::iscsi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2 || size > 16384) return 0;
  auto lun = std::make_shared<ferry::iscsi::testing::RamLun>(4096);
  testing::FixedDirectory dir;
  TargetEntry open;
  open.iqn = "iqn.t:open";
  open.sink = lun;
  dir.Add(open);
  TargetEntry chap = open;
  chap.iqn = "iqn.t:chap";
  chap.auth = {"alice", "secret", "tgt", "tgtsecret"};
  dir.Add(chap);
  if (data[0] & 1) dir.SetDiscoveryAuth(chap.auth);

  LoginContext ctx;
  ctx.directory = &dir;
  ctx.initiator_addr = "127.0.0.1";
  ctx.allocate_tsih = [] { return uint16_t(1); };
  ctx.tsih_exists = [](uint16_t t) { return t == 5; };
  LoginMachine m(ctx);

  // Also the plain parsers on the whole input.
  if (auto kv = ParseTextKeys(data, size); kv.ok()) {
    KeyNegotiator n(NegotiationLimits{});
    KeyValues out;
    for (const auto& [k, v] : *kv) n.Offer(k, v, &out);
    (void)n.Finish();
    for (const auto& [k, v] : *kv) (void)DecodeChapBinary(v);
  }

  size_t off = 1;
  while (off + 4 <= size) {
    uint8_t flags = data[off], vmin = data[off + 1] & 1 ? data[off + 1] : 0;
    size_t len = std::min<size_t>(size - off - 4, Get16(data + off + 2) % 2048);
    OutPdu p;
    p.set_opcode(kOpLoginReq | 0x40);
    p.set_flags(flags);
    p.bhs[3] = vmin;
    Put16(p.bhs + 14, data[off + 1] & 2 ? 5 : 0);
    p.set_data(data + off + 4, len);
    auto wire = Encode(p, false, false);
    PduFramer f;
    f.Feed(wire.data(), wire.size());
    PduView v;
    if (f.Next(&v) != PduFramer::Result::kPdu) break;
    OutPdu reply;
    std::string text;
    auto step = m.Handle(v, &reply, &text);
    if (reply.bhs[0] != kOpLoginResp) __builtin_trap();
    if (step != LoginMachine::Step::kContinue) break;
    off += 4 + len;
  }
  return 0;
}
