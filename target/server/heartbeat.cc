#include "target/server/heartbeat.h"

namespace ferry::server {

Heartbeat::Heartbeat(Options o)
    : opts_(std::move(o)), client_(HttpClient::Options{opts_.token, opts_.timeout, false, ""}) {}

Heartbeat::~Heartbeat() { Stop(); }

std::string Heartbeat::url() const {
  std::string base = opts_.backend_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  return base + "/tgtmaster/register/tgt?tgt=" + UrlEncode(opts_.tgt_ip) +
         "&port=" + std::to_string(opts_.port) + "&admin=" + UrlEncode(opts_.admin) +
         (opts_.host.empty() ? "" : "&host=" + UrlEncode(opts_.host));
}

void Heartbeat::Start() {
  if (opts_.backend_url.empty() || thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = false;
  }
  thread_ = std::thread([this] { Loop(); });
}

void Heartbeat::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Heartbeat::Beat() {
  auto r = client_.Put(url());
  if (!r.ok()) {
    if (failed_++ == 0)
      opts_.log.Warn("registration with " + opts_.backend_url + " failed: " + r.status().ToString());
    return false;
  }
  if (r->status / 100 != 2) {
    failed_++;
    opts_.log.Warn("registration with " + opts_.backend_url + " refused: HTTP " + std::to_string(r->status) +
                   " " + r->body.substr(0, 200));
    return false;
  }
  ok_++;
  return true;
}

void Heartbeat::Loop() {
  bool was_ok = false;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    l.unlock();
    bool ok = Beat();
    if (ok && !was_ok) opts_.log.Info("registered with " + opts_.backend_url + " as " + opts_.tgt_ip);
    if (ok) failed_ = 0;
    was_ok = ok;
    l.lock();
    cv_.wait_for(l, opts_.interval, [this] { return stop_; });
  }
}

}  // namespace ferry::server
