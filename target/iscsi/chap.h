// CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994) with MD5 (CHAP_A=5).
//
// Promise: ChapResponse computes MD5(id || secret || challenge) with OpenSSL
// EVP. ChapAuthenticator is the target side of one login's CHAP exchange:
// it issues a fresh random challenge (OpenSSL RAND), verifies the
// initiator's answer in constant time, refuses a reflected challenge (the
// initiator sending back our own challenge for mutual CHAP), and answers the
// initiator's challenge when mutual CHAP is configured. Errors are values.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "target/common/status.h"
#include "target/iscsi/target_directory.h"
#include "target/iscsi/text_keys.h"

namespace ferry::iscsi {

constexpr uint8_t kChapMd5 = 5;
constexpr size_t kChapChallengeLen = 16;

std::array<uint8_t, 16> ChapResponse(uint8_t id, const std::string& secret,
                                     const std::vector<uint8_t>& challenge);
// CHAP binary values: "0x" hex or "0b" base64 (RFC 7143 §6.1).
Result<std::vector<uint8_t>> DecodeChapBinary(const std::string& s);
std::string EncodeChapHex(const uint8_t* p, size_t n);

class ChapAuthenticator {
 public:
  enum class State { kWaitAlgorithm, kWaitResponse, kDone, kFailed };
  explicit ChapAuthenticator(TargetAuth auth) : auth_(std::move(auth)) {}

  // Step 1: the initiator's CHAP_A list. Appends CHAP_A, CHAP_I, CHAP_C.
  Status OnAlgorithms(const std::string& chap_a, KeyValues* reply);
  // Step 2: CHAP_N and CHAP_R, plus CHAP_I/CHAP_C when the initiator asks
  // for mutual authentication (empty strings when absent).
  Status OnResponse(const std::string& name, const std::string& response,
                    const std::string& mutual_id, const std::string& mutual_challenge,
                    KeyValues* reply);
  State state() const { return state_; }

  // For tests: fix the next challenge instead of drawing a random one.
  void SetChallengeForTest(uint8_t id, std::vector<uint8_t> challenge) {
    fixed_ = true; id_ = id; challenge_ = std::move(challenge);
  }

 private:
  TargetAuth auth_;
  State state_ = State::kWaitAlgorithm;
  bool fixed_ = false;
  uint8_t id_ = 0;
  std::vector<uint8_t> challenge_;
};

}  // namespace ferry::iscsi
