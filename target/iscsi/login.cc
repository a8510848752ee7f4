#include "target/iscsi/login.h"

namespace ferry::iscsi {

namespace {
constexpr uint8_t kT = 0x80, kC = 0x40;
const std::string* FindKey(const KeyValues& kv, const char* key) {
  for (const auto& p : kv)
    if (p.first == key) return &p.second;
  return nullptr;
}
}  // namespace

LoginMachine::LoginMachine(LoginContext ctx) : ctx_(std::move(ctx)), neg_(ctx_.limits) {}

LoginMachine::Step LoginMachine::Fail(uint16_t status, std::string why, OutPdu* reply, std::string* data) {
  failure_ = std::move(why);
  failure_status_ = status;
  data->clear();
  reply->set_flags(uint8_t(current_stage_ << 2));
  Put16(reply->bhs + 36, status);
  reply->set_data(nullptr, 0);
  return Step::kFailed;
}

LoginMachine::Step LoginMachine::FirstRequest(const KeyValues& kv, OutPdu* reply, std::string* data) {
  const std::string* iname = FindKey(kv, "InitiatorName");
  if (!iname || iname->empty()) return Fail(kLoginMissingParameter, "InitiatorName missing", reply, data);
  initiator_name_ = *iname;
  if (const std::string* a = FindKey(kv, "InitiatorAlias")) initiator_alias_ = *a;
  const std::string* st = FindKey(kv, "SessionType");
  if (st && *st != "Normal" && *st != "Discovery")
    return Fail(kLoginSessionTypeUnsupported, "SessionType " + *st + " not supported", reply, data);
  discovery_ = st && *st == "Discovery";
  if (tsih_ != 0) {
    bool exists = ctx_.tsih_exists && ctx_.tsih_exists(tsih_);
    return Fail(exists ? kLoginTooManyConnections : kLoginSessionDoesNotExist,
                exists ? "MaxConnections=1: no connection can be added" : "TSIH does not exist", reply, data);
  }
  if (discovery_) {
    auth_ = ctx_.directory->DiscoveryAuth();
  } else {
    const std::string* tname = FindKey(kv, "TargetName");
    if (!tname || tname->empty()) return Fail(kLoginMissingParameter, "TargetName missing", reply, data);
    target_ = ctx_.directory->Find(*tname);
    if (!target_ || !target_->sink) return Fail(kLoginNotFound, "no target " + *tname, reply, data);
    if (!ctx_.directory->Admits(*tname, initiator_name_, ctx_.initiator_addr))
      return Fail(kLoginForbidden, "ACL refuses " + initiator_name_ + " from " + ctx_.initiator_addr + " to " + *tname,
                  reply, data);
    auth_ = target_->auth;
  }
  auth_required_ = auth_.chap_required();
  return Step::kContinue;
}

LoginMachine::Step LoginMachine::Handle(const PduView& req, OutPdu* reply, std::string* data) {
  BhsView h = req.h();
  *reply = OutPdu();
  data->clear();
  reply->set_opcode(kOpLoginResp);
  const uint8_t* b = req.bhs;
  uint8_t flags = h.flags();
  bool transit = flags & kT, cont = flags & kC;
  int csg = (flags >> 2) & 3, nsg = flags & 3;

  if (!started_) {
    isid_ = uint64_t(Get16(b + 8)) << 32 | Get32(b + 10);
    tsih_ = Get16(b + 14);
    cid_ = Get16(b + 20);
    cmdsn_ = Get32(b + 24);
    statsn_ = Get32(b + 28);
    current_stage_ = csg == 1 ? 1 : 0;
  }
  itt_ = h.itt();
  // Echo what identifies the request.
  std::memcpy(reply->bhs + 8, b + 8, 6);
  Put16(reply->bhs + 14, tsih_);
  reply->set_itt(itt_);
  Put32(reply->bhs + 24, statsn_++);
  Put32(reply->bhs + 28, cmdsn_);
  Put32(reply->bhs + 32, cmdsn_ + (ctx_.queue_depth ? ctx_.queue_depth : 1) - 1);

  if (h.opcode() != kOpLoginReq) return Fail(kLoginInvalidDuringLogin, "non-login PDU during login", reply, data);
  if (b[3] > 0) return Fail(kLoginUnsupportedVersion, "Version-min > 0", reply, data);
  if (started_ && ((uint64_t(Get16(b + 8)) << 32 | Get32(b + 10)) != isid_ || Get16(b + 20) != cid_))
    return Fail(kLoginInvalidDuringLogin, "ISID/CID changed during login", reply, data);
  if (transit && cont) return Fail(kLoginInvalidDuringLogin, "T and C both set", reply, data);
  if (csg == 2 || (transit && (nsg == 2 || nsg <= csg)))
    return Fail(kLoginInvalidDuringLogin, "invalid stage transition", reply, data);
  if (csg < current_stage_) return Fail(kLoginInvalidDuringLogin, "login stage went backwards", reply, data);
  if (csg == 3) return Fail(kLoginInvalidDuringLogin, "CSG=3 in a login request", reply, data);
  current_stage_ = csg;

  pending_text_.append(reinterpret_cast<const char*>(req.data), req.data_len);
  if (pending_text_.size() > 65536) return Fail(kLoginOutOfResources, "login text too long", reply, data);
  if (cont) {
    // More text follows: acknowledge with an empty response and wait.
    reply->set_flags(uint8_t(csg << 2));
    return Step::kContinue;
  }
  auto kv = ParseTextKeys(reinterpret_cast<const uint8_t*>(pending_text_.data()), pending_text_.size());
  pending_text_.clear();
  if (!kv.ok()) return Fail(kLoginInitiatorError, kv.status().message(), reply, data);

  KeyValues out;
  if (!started_) {
    started_ = true;
    Step s = FirstRequest(*kv, reply, data);
    if (s == Step::kFailed) return s;
    if (!discovery_) {
      out.emplace_back("TargetPortalGroupTag", std::to_string(target_->tpgt));
      if (!target_->alias.empty()) out.emplace_back("TargetAlias", target_->alias);
    }
  }

  std::string chap_n, chap_r, chap_i, chap_c;
  const std::string* chap_a = nullptr;
  const std::string* auth_method = nullptr;
  for (const auto& [k, v] : *kv) {
    if (k == "AuthMethod") auth_method = &v;
    else if (k == "CHAP_A") chap_a = &v;
    else if (k == "CHAP_N") chap_n = v;
    else if (k == "CHAP_R") chap_r = v;
    else if (k == "CHAP_I") chap_i = v;
    else if (k == "CHAP_C") chap_c = v;
    else if (KeyNegotiator::IsLoginKey(k)) continue;  // names: handled in the first request
    else neg_.Offer(k, v, &out);
  }

  if (csg == 0) {
    if (!security_done_) {
      if (auth_method) {
        std::vector<std::string> sup = auth_required_ ? std::vector<std::string>{"CHAP"}
                                                      : std::vector<std::string>{"None"};
        auto c = NegChoose(*auth_method, sup);
        if (!c) return Fail(kLoginAuthFailed, "no acceptable AuthMethod in '" + *auth_method + "'", reply, data);
        out.emplace_back("AuthMethod", *c);
        if (*c == "None") {
          security_done_ = true;
        } else {
          chap_chosen_ = true;
          chap_.emplace(auth_);
        }
      } else if (chap_a) {
        if (!chap_chosen_) return Fail(kLoginInvalidDuringLogin, "CHAP_A before AuthMethod=CHAP", reply, data);
        Status st = chap_->OnAlgorithms(*chap_a, &out);
        if (!st.ok()) return Fail(kLoginAuthFailed, st.message(), reply, data);
      } else if (!chap_r.empty() || !chap_n.empty()) {
        if (!chap_chosen_) return Fail(kLoginInvalidDuringLogin, "CHAP_R before AuthMethod=CHAP", reply, data);
        Status st = chap_->OnResponse(chap_n, chap_r, chap_i, chap_c, &out);
        if (!st.ok()) return Fail(kLoginAuthFailed, st.message(), reply, data);
        security_done_ = true;
      } else if (!auth_required_ && transit) {
        security_done_ = true;  // AuthMethod never offered, none required
      }
    } else if (auth_method || chap_a || !chap_r.empty()) {
      return Fail(kLoginInvalidDuringLogin, "authentication keys after authentication", reply, data);
    }
  } else {
    if (!security_done_) {
      if (auth_required_) return Fail(kLoginAuthFailed, "authentication required but security stage skipped", reply, data);
      security_done_ = true;
    }
    if (auth_method || chap_a || !chap_r.empty())
      return Fail(kLoginInvalidDuringLogin, "authentication keys in the operational stage", reply, data);
    neg_.AppendDeclarations(&out);
  }

  bool go = transit && security_done_;
  if (go) {
    reply->set_flags(uint8_t(kT | csg << 2 | nsg));
    current_stage_ = nsg;
  } else {
    reply->set_flags(uint8_t(csg << 2));
  }
  *data = SerializeTextKeys(out);
  reply->set_data(reinterpret_cast<const uint8_t*>(data->data()), data->size());
  if (go && nsg == 3) {
    params_ = neg_.Finish();
    tsih_ = ctx_.allocate_tsih ? ctx_.allocate_tsih() : 1;
    if (tsih_ == 0) return Fail(kLoginOutOfResources, "too many sessions", reply, data);
    Put16(reply->bhs + 14, tsih_);
    return Step::kFullFeature;
  }
  return Step::kContinue;
}

}  // namespace ferry::iscsi
