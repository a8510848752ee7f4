#include "target/gateway/volume_exports.h"

namespace ferry::gateway {

Result<nbd::ExportName> VolumeExports::Parse(const std::string& name) const {
  nbd::ExportName e;
  std::string why;
  if (!nbd::ParseExportName(name, &e, &why)) return Status::InvalidArgument(why);
  FERRY_RETURN_IF_ERROR(store::ValidateName(e.volume));
  if (!e.snapshot.empty()) FERRY_RETURN_IF_ERROR(store::ValidateName(e.snapshot));
  return e;
}

Result<nbd::ExportInfo> VolumeExports::Describe(const std::string& name) {
  auto e = Parse(name);
  if (!e.ok()) return e.status();
  auto v = store_->GetVolume(e->volume);
  if (!v.ok()) return v.status();
  nbd::ExportInfo info;
  if (!e->snapshot.empty()) {
    for (const auto& s : v->snapshots) {
      if (s.name == e->snapshot) {
        info.size = s.size;
        info.read_only = true;
        info.description = "snapshot " + s.name + " of " + v->name;
        return info;
      }
    }
    return Status::NotFound("no snapshot " + e->snapshot + " of volume " + e->volume);
  }
  info.size = v->size;
  // A raise (VOL@+E) would open above the current epoch: never read-only.
  info.read_only = !e->raise && e->epoch < v->epoch;
  info.description = "volume " + v->name + " epoch " + std::to_string(std::max(e->epoch, v->epoch));
  return info;
}

Result<nbd::ExportInfo> VolumeExports::Open(const std::string& name) {
  auto e = Parse(name);
  if (!e.ok()) return e.status();
  nbd::ExportInfo info;
  if (!e->snapshot.empty()) {
    auto h = store_->OpenSnapshot(e->volume, e->snapshot);
    if (!h.ok()) return h.status();
    handle_ = h.value();
    info.read_only = true;
    info.description = "snapshot " + e->snapshot + " of " + e->volume;
  } else if (e->raise) {
    // VOL@+E: a new epoch above the store's (at least E), fencing every older
    // handle; the client learns it from NBD_INFO_NAME ("VOL@GRANTED").
    auto granted = store_->RaiseEpochAbove(e->volume, e->epoch);
    if (!granted.ok()) return granted.status();
    auto h = store_->OpenVolume(e->volume, *granted, false);
    if (!h.ok()) return h.status();
    handle_ = h.value();
    info.read_only = handle_->read_only();
    info.description = "volume " + e->volume + " epoch " + std::to_string(*granted);
    info.canonical_name = nbd::FormatExportName(nbd::ExportName{e->volume, "", *granted});
  } else {
    auto h = store_->OpenVolume(e->volume, e->epoch, false);
    if (!h.ok()) return h.status();
    handle_ = h.value();
    auto v = store_->GetVolume(e->volume);
    if (!v.ok()) return v.status();
    info.read_only = handle_->read_only() || handle_->epoch() < v->epoch;
    info.description = "volume " + e->volume + " epoch " + std::to_string(handle_->epoch());
  }
  info.size = handle_->size();
  return info;
}

Result<std::vector<std::string>> VolumeExports::List() {
  auto vols = store_->ListVolumes();
  if (!vols.ok()) return vols.status();
  std::vector<std::string> names;
  for (const auto& v : vols.value()) names.push_back(v.name);
  return names;
}

}  // namespace ferry::gateway
