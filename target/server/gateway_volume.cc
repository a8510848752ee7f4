#include "target/server/gateway_volume.h"

namespace ferry::server {
namespace {

class GatewayVolume : public Volume {
 public:
  explicit GatewayVolume(std::shared_ptr<blockdev::GatewayBlockDevice> dev) : dev_(std::move(dev)) {}
  ~GatewayVolume() override { dev_->Stop(); }

  std::shared_ptr<blockdev::BlockDevice> device() override { return dev_; }
  void Stop() override { dev_->Stop(); }
  Result<uint64_t> RefreshSize() override { return dev_->RefreshSize(); }
  void SetSwitchable(bool on) override { dev_->SetSwitchable(on); }
  std::string current() const override { return dev_->current_gateway(); }
  uint64_t epoch() const override { return dev_->epoch(); }
  uint64_t size() const override { return dev_->size_bytes(); }
  VolumeStats Stats() const override {
    blockdev::VolumeStats s = dev_->Stats();
    VolumeStats v;
    v.volume_name = s.volumeName;
    v.prefer_gw = s.perferGw;
    v.current_gw = s.currentGw;
    v.status = s.status;
    v.read_error = s.readError;
    v.write_error = s.writeError;
    v.io_cnt = s.ioCnt;
    v.io_total = s.ioTotal;
    v.read_iops = s.readIops;
    v.read_kbps = s.readKBps;
    v.read_delay_avg = s.readDelayAvg;
    v.write_iops = s.writeIops;
    v.write_kbps = s.writeKBps;
    v.write_delay_avg = s.writeDelayAvg;
    v.switchable = s.switchable;
    v.epoch = s.epoch;
    return v;
  }

 private:
  std::shared_ptr<blockdev::GatewayBlockDevice> dev_;
};

}  // namespace

GatewayVolumeFactory::GatewayVolumeFactory(Logger log)
    : log_(std::move(log)),
      timeouts_(std::make_shared<blockdev::Timeouts>()),
      fixed_(std::make_shared<blockdev::FixedMode>()),
      scheduler_(std::make_shared<blockdev::DeviceScheduler>()),
      pipes_(std::make_shared<PipePool>()) {}

Result<std::shared_ptr<Volume>> GatewayVolumeFactory::Open(const LunSpec& spec, OpenMode mode,
                                                           ChangeHook on_change) {
  const bool require_gateway = mode != OpenMode::kRestore;
  blockdev::GatewayBlockDeviceConfig c;
  c.volume = spec.volume;
  c.gateways = spec.gateways;
  c.preferred = spec.preferred;
  c.current = spec.current;
  c.epoch = spec.epoch;
  c.raise_epoch = mode == OpenMode::kRaise;
  c.size_hint = spec.size;
  c.switchable = spec.switchable;
  c.timeouts = timeouts_;
  c.fixed_mode = fixed_;
  c.scheduler = scheduler_;
  c.pipes = pipes_;
  c.logger = log_.Child(spec.volume);
  if (on_change)
    c.on_change = [on_change](const std::string& gw, uint64_t epoch) { on_change(VolumeChange{gw, epoch}); };
  auto dev = std::make_shared<blockdev::GatewayBlockDevice>(std::move(c));
  Status st = dev->Start();
  if (!st.ok()) return st;
  if (require_gateway && (dev->status() == blockdev::VolumeStatus::kFault || dev->size_bytes() == 0)) {
    std::string why = dev->start_error();
    dev->Stop();
    return Status::Unavailable("volume " + spec.volume + ": no gateway of " + spec.current +
                               (spec.gateways.size() > 1 ? " and the others" : "") +
                               " serves it (is it created? is the gateway up?)" +
                               (why.empty() ? "" : "; first attempt: " + why));
  }
  return std::shared_ptr<Volume>(std::make_shared<GatewayVolume>(std::move(dev)));
}

void GatewayVolumeFactory::SetTimeouts(const TimeoutValues& t) {
  for (const auto& name : TimeoutValues::Names()) {
    Status st = timeouts_->Set(name, *t.Get(name));
    if (!st.ok()) log_.Error("timeout " + name + ": " + st.ToString());
  }
}

void GatewayVolumeFactory::SetFixedGateway(const std::string& gateway) {
  if (gateway.empty())
    fixed_->Clear();
  else
    fixed_->Set(gateway);
}

}  // namespace ferry::server
