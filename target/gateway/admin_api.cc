#include "target/gateway/admin_api.h"

#include <Poco/Dynamic/Var.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>

#include <optional>

namespace ferry::gateway {
namespace {

// A parsed JSON object body, or the 400 to answer with.
Result<Poco::JSON::Object::Ptr> ParseBody(const HttpRequest& r) {
  if (r.body.empty()) return Status::InvalidArgument("a JSON object body is required");
  try {
    Poco::JSON::Parser parser;
    Poco::Dynamic::Var v = parser.parse(r.body);
    if (v.type() != typeid(Poco::JSON::Object::Ptr)) return Status::InvalidArgument("body must be a JSON object");
    return v.extract<Poco::JSON::Object::Ptr>();
  } catch (const std::exception& e) {
    return Status::InvalidArgument(std::string("body is not valid JSON: ") + e.what());
  }
}

Result<std::string> GetString(const Poco::JSON::Object::Ptr& o, const std::string& key, bool required = true) {
  if (!o->has(key) || o->isNull(key)) {
    if (required) return Status::InvalidArgument("\"" + key + "\" is required");
    return std::string();
  }
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isString()) return Status::InvalidArgument("\"" + key + "\" must be a string");
  return v.extract<std::string>();
}

// A non-negative JSON integer; absent -> nullopt.
Result<std::optional<uint64_t>> GetUint(const Poco::JSON::Object::Ptr& o, const std::string& key) {
  if (!o->has(key) || o->isNull(key)) return std::optional<uint64_t>();
  Poco::Dynamic::Var v = o->get(key);
  if (!v.isInteger()) return Status::InvalidArgument("\"" + key + "\" must be an integer");
  try {
    if (v.isSigned()) {
      Poco::Int64 i = v.convert<Poco::Int64>();
      if (i < 0) return Status::InvalidArgument("\"" + key + "\" must not be negative");
      return std::optional<uint64_t>(static_cast<uint64_t>(i));
    }
    return std::optional<uint64_t>(v.convert<Poco::UInt64>());
  } catch (const std::exception& e) {
    return Status::InvalidArgument("\"" + key + "\": " + e.what());
  }
}

Status CheckSize(uint64_t size) {
  if (size == 0 || size % 512 != 0) return Status::InvalidArgument("size must be a positive multiple of 512 bytes");
  if (size > (1ull << 60)) return Status::InvalidArgument("size is too large");
  return Status::Ok();
}

}  // namespace

std::string AdminApi::SnapshotJson(const store::SnapshotInfo& s) {
  return "{\"name\":" + JsonEscape(s.name) + ",\"size\":" + std::to_string(s.size) +
         ",\"created\":" + std::to_string(s.created_unix) + "}";
}

std::string AdminApi::VolumeJson(const store::VolumeInfo& v) {
  std::string s = "{\"name\":" + JsonEscape(v.name) + ",\"size\":" + std::to_string(v.size) +
                  ",\"allocated\":" + std::to_string(v.allocated) + ",\"epoch\":" + std::to_string(v.epoch) +
                  ",\"chunk_size\":" + std::to_string(v.chunk_size) + ",\"snapshots\":[";
  for (size_t i = 0; i < v.snapshots.size(); ++i) {
    if (i) s += ",";
    s += SnapshotJson(v.snapshots[i]);
  }
  return s + "]}";
}

void AdminApi::Register(HttpServer* s) {
  auto bind = [this](HttpResponse (AdminApi::*m)(const HttpRequest&)) {
    return [this, m](const HttpRequest& r) { return (this->*m)(r); };
  };
  s->Route("GET", "/healthz", bind(&AdminApi::Health));
  s->Route("GET", "/v1/volumes", bind(&AdminApi::ListVolumes));
  s->Route("POST", "/v1/volumes", bind(&AdminApi::CreateVolume));
  s->Route("GET", "/v1/volumes/{name}", bind(&AdminApi::GetVolume));
  s->Route("DELETE", "/v1/volumes/{name}", bind(&AdminApi::DeleteVolume));
  s->Route("POST", "/v1/volumes/{name}/extend", bind(&AdminApi::ExtendVolume));
  s->Route("GET", "/v1/volumes/{name}/snapshots", bind(&AdminApi::ListSnapshots));
  s->Route("POST", "/v1/volumes/{name}/snapshots", bind(&AdminApi::CreateSnapshot));
  s->Route("DELETE", "/v1/volumes/{name}/snapshots/{snap}", bind(&AdminApi::DeleteSnapshot));
  s->Route("POST", "/v1/volumes/{name}/revert", bind(&AdminApi::Revert));
  s->Route("POST", "/v1/volumes/{name}/fence", bind(&AdminApi::Fence));
  s->Route("POST", "/region/pool/vol/snapshot", bind(&AdminApi::LegacyRevert));
}

HttpResponse AdminApi::VolumeReply(int status, const std::string& name) {
  auto v = store_->GetVolume(name);
  if (!v.ok()) return HttpResponse::Error(v.status());
  return HttpResponse::Json(status, VolumeJson(v.value()));
}

HttpResponse AdminApi::Health(const HttpRequest&) {
  Identity id;
  {
    std::lock_guard<std::mutex> l(id_mu_);
    id = id_;
  }
  return HttpResponse::Json(200, "{\"status\":\"ok\",\"pid\":" + std::to_string(id.pid) +
                                     ",\"nbd\":" + JsonEscape(id.nbd) + ",\"admin\":" + JsonEscape(id.admin) +
                                     ",\"data_dir\":" + JsonEscape(id.data_dir) + "}");
}

HttpResponse AdminApi::ListVolumes(const HttpRequest&) {
  auto vols = store_->ListVolumes();
  if (!vols.ok()) return HttpResponse::Error(vols.status());
  std::string s = "{\"volumes\":[";
  for (size_t i = 0; i < vols->size(); ++i) {
    if (i) s += ",";
    s += VolumeJson(vols.value()[i]);
  }
  return HttpResponse::Json(200, s + "]}");
}

HttpResponse AdminApi::CreateVolume(const HttpRequest& r) {
  auto body = ParseBody(r);
  if (!body.ok()) return HttpResponse::Error(body.status());
  auto name = GetString(*body, "name");
  if (!name.ok()) return HttpResponse::Error(name.status());
  Status st = store::ValidateName(*name);
  if (!st.ok()) return HttpResponse::Error(st);
  auto size = GetUint(*body, "size");
  if (!size.ok()) return HttpResponse::Error(size.status());
  if (size->has_value()) {
    st = CheckSize(**size);
    if (!st.ok()) return HttpResponse::Error(st);
  }

  std::string src_vol, src_snap;
  bool clone = false;
  if ((*body)->has("source") && !(*body)->isNull("source")) {
    auto src = (*body)->getObject("source");
    if (!src) return HttpResponse::Error(400, "\"source\" must be an object {\"volume\":..., \"snapshot\":...}");
    auto sv = GetString(src, "volume");
    if (!sv.ok()) return HttpResponse::Error(400, "source: " + sv.status().message());
    auto ss = GetString(src, "snapshot", false);
    if (!ss.ok()) return HttpResponse::Error(400, "source: " + ss.status().message());
    src_vol = *sv;
    src_snap = *ss;
    if (Status s = store::ValidateName(src_vol); !s.ok()) return HttpResponse::Error(s);
    if (!src_snap.empty()) {
      if (Status s = store::ValidateName(src_snap); !s.ok()) return HttpResponse::Error(s);
    }
    clone = true;
  } else if (!size->has_value()) {
    return HttpResponse::Error(400, "\"size\" is required");
  }

  // Safe retry: the same request again answers with the existing volume.
  auto existing = store_->GetVolume(*name);
  if (existing.ok()) {
    if (size->has_value() && existing->size != **size) {
      return HttpResponse::Error(409, "volume " + *name + " exists with size " + std::to_string(existing->size));
    }
    return HttpResponse::Json(200, VolumeJson(existing.value()));
  }

  if (clone) {
    uint64_t src_size = 0;
    auto sv = store_->GetVolume(src_vol);
    if (!sv.ok()) return HttpResponse::Error(sv.status());
    if (src_snap.empty()) {
      src_size = sv->size;
    } else {
      bool found = false;
      for (const auto& s : sv->snapshots) {
        if (s.name == src_snap) {
          src_size = s.size;
          found = true;
        }
      }
      if (!found) return HttpResponse::Error(404, "no snapshot " + src_snap + " of volume " + src_vol);
    }
    if (size->has_value() && **size < src_size) {
      return HttpResponse::Error(400, "size " + std::to_string(**size) + " is smaller than the source (" +
                                          std::to_string(src_size) + ")");
    }
    std::optional<std::string> snap;
    if (!src_snap.empty()) snap = src_snap;
    st = store_->CloneVolume(src_vol, snap, *name);
    if (st.code() == Status::Code::kAlreadyExists) return VolumeReply(200, *name);  // a concurrent retry won
    if (!st.ok()) return HttpResponse::Error(st);
    if (size->has_value() && **size > src_size) {
      st = store_->ExtendVolume(*name, **size);
      if (!st.ok()) return HttpResponse::Error(st);
    }
    log_.Info("cloned volume " + *name + " from " + src_vol + (src_snap.empty() ? "" : ":" + src_snap));
    return VolumeReply(201, *name);
  }

  st = store_->CreateVolume(*name, **size);
  if (st.code() == Status::Code::kAlreadyExists) {
    auto v = store_->GetVolume(*name);
    if (v.ok() && v->size == **size) return HttpResponse::Json(200, VolumeJson(v.value()));
    return HttpResponse::Error(409, "volume " + *name + " already exists");
  }
  if (!st.ok()) return HttpResponse::Error(st);
  log_.Info("created volume " + *name + " size " + std::to_string(**size));
  return VolumeReply(201, *name);
}

HttpResponse AdminApi::GetVolume(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  return VolumeReply(200, name);
}

HttpResponse AdminApi::DeleteVolume(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  Status st = store_->DeleteVolume(name);
  if (!st.ok()) return HttpResponse::Error(st);
  log_.Info("deleted volume " + name);
  return HttpResponse::Json(200, "{\"deleted\":" + JsonEscape(name) + "}");
}

HttpResponse AdminApi::ExtendVolume(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  auto body = ParseBody(r);
  if (!body.ok()) return HttpResponse::Error(body.status());
  auto size = GetUint(*body, "size");
  if (!size.ok()) return HttpResponse::Error(size.status());
  if (!size->has_value()) return HttpResponse::Error(400, "\"size\" is required");
  if (Status s = CheckSize(**size); !s.ok()) return HttpResponse::Error(s);
  auto v = store_->GetVolume(name);
  if (!v.ok()) return HttpResponse::Error(v.status());
  if (**size < v->size) {
    return HttpResponse::Error(400, "cannot shrink volume " + name + " from " + std::to_string(v->size) + " to " +
                                        std::to_string(**size));
  }
  if (**size > v->size) {
    Status st = store_->ExtendVolume(name, **size);
    if (!st.ok()) return HttpResponse::Error(st);
    log_.Info("extended volume " + name + " to " + std::to_string(**size));
  }
  return VolumeReply(200, name);
}

HttpResponse AdminApi::ListSnapshots(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  auto v = store_->GetVolume(name);
  if (!v.ok()) return HttpResponse::Error(v.status());
  std::string s = "{\"snapshots\":[";
  for (size_t i = 0; i < v->snapshots.size(); ++i) {
    if (i) s += ",";
    s += SnapshotJson(v->snapshots[i]);
  }
  return HttpResponse::Json(200, s + "]}");
}

HttpResponse AdminApi::CreateSnapshot(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  auto body = ParseBody(r);
  if (!body.ok()) return HttpResponse::Error(body.status());
  auto snap = GetString(*body, "name");
  if (!snap.ok()) return HttpResponse::Error(snap.status());
  if (Status s = store::ValidateName(*snap); !s.ok()) return HttpResponse::Error(s);
  Status st = store_->CreateSnapshot(name, *snap);
  if (!st.ok()) return HttpResponse::Error(st);
  auto v = store_->GetVolume(name);
  if (!v.ok()) return HttpResponse::Error(v.status());
  for (const auto& s : v->snapshots) {
    if (s.name == *snap) {
      log_.Info("snapshot " + name + ":" + *snap + " created");
      return HttpResponse::Json(201, SnapshotJson(s));
    }
  }
  return HttpResponse::Error(500, "snapshot " + *snap + " missing right after creation");
}

HttpResponse AdminApi::DeleteSnapshot(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  const std::string& snap = r.params.at("snap");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  if (Status s = store::ValidateName(snap); !s.ok()) return HttpResponse::Error(s);
  Status st = store_->DeleteSnapshot(name, snap);
  if (!st.ok()) return HttpResponse::Error(st);
  log_.Info("snapshot " + name + ":" + snap + " deleted");
  return HttpResponse::Json(200, "{\"deleted\":" + JsonEscape(snap) + "}");
}

HttpResponse AdminApi::DoRevert(const std::string& vol, const std::string& snap) {
  if (Status s = store::ValidateName(vol); !s.ok()) return HttpResponse::Error(s);
  if (Status s = store::ValidateName(snap); !s.ok()) return HttpResponse::Error(s);
  Status st = store_->RevertVolume(vol, snap);
  if (!st.ok()) return HttpResponse::Error(st);
  log_.Info("volume " + vol + " reverted to snapshot " + snap);
  return VolumeReply(200, vol);
}

HttpResponse AdminApi::Revert(const HttpRequest& r) {
  auto body = ParseBody(r);
  if (!body.ok()) return HttpResponse::Error(body.status());
  auto snap = GetString(*body, "snapshot");
  if (!snap.ok()) return HttpResponse::Error(snap.status());
  return DoRevert(r.params.at("name"), *snap);
}

HttpResponse AdminApi::LegacyRevert(const HttpRequest& r) {
  if (!r.HasQuery("volname") || !r.HasQuery("snapname")) {
    return HttpResponse::Error(400, "query parameters volname and snapname are required");
  }
  return DoRevert(r.Query("volname"), r.Query("snapname"));
}

HttpResponse AdminApi::Fence(const HttpRequest& r) {
  const std::string& name = r.params.at("name");
  if (Status s = store::ValidateName(name); !s.ok()) return HttpResponse::Error(s);
  auto body = ParseBody(r);
  if (!body.ok()) return HttpResponse::Error(body.status());
  auto epoch = GetUint(*body, "epoch");
  if (!epoch.ok()) return HttpResponse::Error(epoch.status());
  if (!epoch->has_value()) return HttpResponse::Error(400, "\"epoch\" is required");
  auto cur = store_->RaiseEpoch(name, **epoch);
  if (!cur.ok()) return HttpResponse::Error(cur.status());
  log_.Info("volume " + name + " fenced: epoch now " + std::to_string(*cur));
  return HttpResponse::Json(200, "{\"name\":" + JsonEscape(name) + ",\"epoch\":" + std::to_string(*cur) + "}");
}

}  // namespace ferry::gateway
