#include "target/gateway/registrar.h"

namespace ferry::gateway {

namespace {
HttpClient::Options ClientOptions(const Registrar::Options& o) {
  HttpClient::Options c;
  c.token = o.token;
  c.timeout = o.timeout;
  return c;
}
}  // namespace

Registrar::Registrar(Options opts, Logger log)
    : opts_(std::move(opts)), log_(std::move(log)), client_(ClientOptions(opts_)) {
  while (!opts_.backend_url.empty() && opts_.backend_url.back() == '/') opts_.backend_url.pop_back();
}

Registrar::~Registrar() { Stop(); }

Status Registrar::RegisterOnce() {
  std::string url = opts_.backend_url + "/tgtmaster/register/gateway?gateway=" + UrlEncode(opts_.gateway);
  auto r = client_.Put(url);
  if (!r.ok()) return r.status();
  if (r->status < 200 || r->status >= 300) {
    return Status::Unavailable("backend answered " + std::to_string(r->status) + ": " + r->body.substr(0, 200));
  }
  ok_.fetch_add(1);
  return Status::Ok();
}

void Registrar::Start() {
  if (thread_.joinable()) return;
  thread_ = std::thread([this] { Loop(); });
}

void Registrar::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Registrar::Loop() {
  for (;;) {
    Status st = RegisterOnce();
    if (!st.ok()) {
      if (!failing_) log_.Warn("registration with " + opts_.backend_url + " failed (will retry): " + st.ToString());
      failing_ = true;
    } else if (failing_ || ok_.load() == 1) {
      log_.Info("registered as gateway " + opts_.gateway + " with " + opts_.backend_url);
      failing_ = false;
    }
    std::unique_lock<std::mutex> l(mu_);
    if (cv_.wait_for(l, opts_.interval, [this] { return stop_; })) return;
  }
}

}  // namespace ferry::gateway
