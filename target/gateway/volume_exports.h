// VolumeExports: the NBD export namespace of one connection, over the Store.
// "VOL" and "VOL@EPOCH" are the volume (read-write at that epoch), "VOL:SNAP"
// a read-only snapshot.
//
// Promise: Describe() has no side effects (it never raises an epoch). Open()
// opens the handle the connection will use (OpenVolume raises the volume's
// epoch when EPOCH is above it) and advertises the export read-only when it is
// a snapshot or its epoch is already below the volume's (it could never write).
// Names are checked with store::ValidateName before the store sees them.
#pragma once

#include <memory>
#include <string>

#include "target/nbd/handshake.h"
#include "target/store/store.h"

namespace ferry::gateway {

class VolumeExports : public nbd::ExportProvider {
 public:
  explicit VolumeExports(store::Store* store) : store_(store) {}

  Result<nbd::ExportInfo> Describe(const std::string& name) override;
  Result<nbd::ExportInfo> Open(const std::string& name) override;
  Result<std::vector<std::string>> List() override;

  // The handle opened by the last successful Open() (null before).
  std::shared_ptr<store::VolumeHandle> handle() const { return handle_; }

 private:
  Result<nbd::ExportName> Parse(const std::string& name) const;
  store::Store* store_;
  std::shared_ptr<store::VolumeHandle> handle_;
};

}  // namespace ferry::gateway
