#include "target/iscsi/chap.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

namespace ferry::iscsi {

std::array<uint8_t, 16> ChapResponse(uint8_t id, const std::string& secret,
                                     const std::vector<uint8_t>& challenge) {
  std::array<uint8_t, 16> out{};
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned int n = 0;
  if (ctx && EVP_DigestInit_ex(ctx, EVP_md5(), nullptr) == 1 &&
      EVP_DigestUpdate(ctx, &id, 1) == 1 &&
      EVP_DigestUpdate(ctx, secret.data(), secret.size()) == 1 &&
      EVP_DigestUpdate(ctx, challenge.data(), challenge.size()) == 1) {
    EVP_DigestFinal_ex(ctx, out.data(), &n);
  }
  EVP_MD_CTX_free(ctx);
  return out;
}

namespace {
int HexVal(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
int B64Val(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

Result<std::vector<uint8_t>> DecodeChapBinary(const std::string& s) {
  if (s.size() < 3 || s[0] != '0') return Status::InvalidArgument("CHAP value is not 0x/0b encoded");
  std::vector<uint8_t> out;
  if (s[1] == 'x' || s[1] == 'X') {
    std::string h = s.substr(2);
    if (h.size() % 2) h = "0" + h;
    for (size_t i = 0; i < h.size(); i += 2) {
      int a = HexVal(h[i]), b = HexVal(h[i + 1]);
      if (a < 0 || b < 0) return Status::InvalidArgument("bad hex digit in CHAP value");
      out.push_back(uint8_t(a << 4 | b));
    }
    return out;
  }
  if (s[1] == 'b' || s[1] == 'B') {
    uint32_t acc = 0;
    int bits = 0;
    size_t i = 2;
    for (; i < s.size() && s[i] != '='; ++i) {
      int v = B64Val(s[i]);
      if (v < 0) return Status::InvalidArgument("bad base64 digit in CHAP value");
      acc = (acc << 6) | uint32_t(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out.push_back(uint8_t(acc >> bits));
      }
    }
    for (; i < s.size(); ++i)
      if (s[i] != '=') return Status::InvalidArgument("bad base64 padding in CHAP value");
    return out;
  }
  return Status::InvalidArgument("CHAP value is not 0x/0b encoded");
}

std::string EncodeChapHex(const uint8_t* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s = "0x";
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kHex[p[i] >> 4]);
    s.push_back(kHex[p[i] & 15]);
  }
  return s;
}

Status ChapAuthenticator::OnAlgorithms(const std::string& chap_a, KeyValues* reply) {
  if (state_ != State::kWaitAlgorithm) {
    state_ = State::kFailed;
    return Status::InvalidArgument("CHAP_A out of sequence");
  }
  if (!NegChoose(chap_a, {"5"})) {
    state_ = State::kFailed;
    reply->emplace_back("CHAP_A", "Reject");
    return Status::PermissionDenied("no supported CHAP algorithm offered (only MD5 = 5)");
  }
  if (!fixed_) {
    challenge_.resize(kChapChallengeLen);
    if (RAND_bytes(challenge_.data(), int(challenge_.size())) != 1 || RAND_bytes(&id_, 1) != 1) {
      state_ = State::kFailed;
      return Status::Internal("RAND_bytes failed");
    }
  }
  reply->emplace_back("CHAP_A", "5");
  reply->emplace_back("CHAP_I", std::to_string(id_));
  reply->emplace_back("CHAP_C", EncodeChapHex(challenge_.data(), challenge_.size()));
  state_ = State::kWaitResponse;
  return Status::Ok();
}

Status ChapAuthenticator::OnResponse(const std::string& name, const std::string& response,
                                     const std::string& mutual_id, const std::string& mutual_challenge,
                                     KeyValues* reply) {
  auto fail = [this](std::string why) {
    state_ = State::kFailed;
    return Status::PermissionDenied(std::move(why));
  };
  if (state_ != State::kWaitResponse) return fail("CHAP_R out of sequence");
  if (name.empty() || response.empty()) return fail("CHAP_N/CHAP_R missing");
  auto r = DecodeChapBinary(response);
  if (!r.ok()) return fail(r.status().message());
  auto want = ChapResponse(id_, auth_.chap_secret, challenge_);
  bool name_ok = name == auth_.chap_user;
  bool resp_ok = r->size() == want.size() && CRYPTO_memcmp(r->data(), want.data(), want.size()) == 0;
  if (!name_ok || !resp_ok) return fail("CHAP authentication failed for user '" + name + "'");
  if (!mutual_id.empty() || !mutual_challenge.empty()) {
    if (mutual_id.empty() || mutual_challenge.empty()) return fail("mutual CHAP needs CHAP_I and CHAP_C");
    if (auth_.mutual_user.empty()) return fail("mutual CHAP asked but not configured for this target");
    auto id = ParseNumber(mutual_id);
    if (!id || *id > 255) return fail("bad CHAP_I");
    auto c = DecodeChapBinary(mutual_challenge);
    if (!c.ok()) return fail(c.status().message());
    if (c->empty() || c->size() > 1024) return fail("bad CHAP_C length");
    if (*c == challenge_) return fail("reflected CHAP challenge refused");
    auto answer = ChapResponse(uint8_t(*id), auth_.mutual_secret, *c);
    reply->emplace_back("CHAP_N", auth_.mutual_user);
    reply->emplace_back("CHAP_R", EncodeChapHex(answer.data(), answer.size()));
  }
  state_ = State::kDone;
  return Status::Ok();
}

}  // namespace ferry::iscsi
