// AdminApi: the gateway's admin HTTP API (volumes, snapshots, clone, revert,
// extend, fence, health) as plain handlers over the Store. See docs/gateway.md.
//
// Promise: handlers parse and validate the JSON body, call one Store method
// (or a short fixed sequence) and render the result; bad input is a 4xx
// {"error": "..."} and changes nothing the store did not already refuse.
// Create is idempotent: the same name and size again answers 200 with the
// volume, a different size 409. Register() adds the routes to an HttpServer;
// HttpServer enforces the token on mutating routes.
#pragma once

#include <mutex>
#include <string>

#include "target/common/http_server.h"
#include "target/common/logger.h"
#include "target/store/store.h"

namespace ferry::gateway {

class AdminApi {
 public:
  struct Identity {
    int pid = 0;
    std::string nbd;    // "host:port"
    std::string admin;  // "host:port"
    std::string data_dir;
  };

  AdminApi(store::Store* store, Identity id, Logger log)
      : store_(store), id_(std::move(id)), log_(std::move(log)) {}

  void Register(HttpServer* server);
  // The admin address is often known only after the server bound its port
  // (and Health may already be running then, hence the mutex).
  void set_identity(Identity id) {
    std::lock_guard<std::mutex> l(id_mu_);
    id_ = std::move(id);
  }

  HttpResponse Health(const HttpRequest& r);
  HttpResponse ListVolumes(const HttpRequest& r);
  HttpResponse CreateVolume(const HttpRequest& r);
  HttpResponse GetVolume(const HttpRequest& r);
  HttpResponse DeleteVolume(const HttpRequest& r);
  HttpResponse ExtendVolume(const HttpRequest& r);
  HttpResponse ListSnapshots(const HttpRequest& r);
  HttpResponse CreateSnapshot(const HttpRequest& r);
  HttpResponse DeleteSnapshot(const HttpRequest& r);
  HttpResponse Revert(const HttpRequest& r);
  HttpResponse Fence(const HttpRequest& r);
  HttpResponse LegacyRevert(const HttpRequest& r);

  static std::string VolumeJson(const store::VolumeInfo& v);
  static std::string SnapshotJson(const store::SnapshotInfo& s);

 private:
  HttpResponse VolumeReply(int status, const std::string& name);
  HttpResponse DoRevert(const std::string& vol, const std::string& snap);

  store::Store* store_;
  std::mutex id_mu_;
  Identity id_;
  Logger log_;
};

}  // namespace ferry::gateway
