// GatewayVolumeFactory: opens LUN volumes as blockdev::GatewayBlockDevice (the
// NBD gateway client with failover), sharing one Timeouts and one FixedMode
// across every volume of the process.
//
// Promise: see Volume/VolumeFactory. With require_gateway, Open() fails with
// kUnavailable (and leaves nothing running) unless the volume is in normal
// status on some gateway after the first connection attempt.
#pragma once

#include <memory>

#include "target/blockdev/gateway_block_device.h"
#include "target/blockdev/timeouts.h"
#include "target/common/logger.h"
#include "target/server/volume.h"

namespace ferry::server {

class GatewayVolumeFactory : public VolumeFactory {
 public:
  explicit GatewayVolumeFactory(Logger log);
  Result<std::shared_ptr<Volume>> Open(const LunSpec& spec, OpenMode mode,
                                       ChangeHook on_change) override;
  void SetTimeouts(const TimeoutValues& t) override;
  void SetFixedGateway(const std::string& gateway) override;

 private:
  Logger log_;
  std::shared_ptr<blockdev::Timeouts> timeouts_;
  std::shared_ptr<blockdev::FixedMode> fixed_;
  std::shared_ptr<blockdev::DeviceScheduler> scheduler_;  // one timer thread for every LUN
  std::shared_ptr<PipePool> pipes_;  // pipes for zero-copy reads, shared by every LUN
};

}  // namespace ferry::server
