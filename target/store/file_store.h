// FileStore: the Store implementation over a local, shared or cluster POSIX
// file system (layout in store_context.h, format in docs/store.md).
//
// Promises (beyond store.h): every metadata change runs under the store-wide
// `store.lock` (fcntl, so across processes) and the volume's exclusive lock;
// it bumps the volume's generation in `hdr` first, commits with one atomic
// rename, and only then frees space, so a crash leaves the old or the new
// state (at worst some unreferenced chunk files, reclaimed when a Store is
// next opened on the directory). One FileStore per data directory per process: POSIX locks are
// per process.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "target/store/meta.h"
#include "target/store/store.h"
#include "target/store/store_context.h"
#include "target/store/volume_state.h"

namespace ferry::store {

class FileStore : public Store {
 public:
  static Result<std::unique_ptr<Store>> Create(const std::string& dir, Options opts, Logger log);
  ~FileStore() override;

  Status CreateVolume(const std::string& name, uint64_t size) override;
  Status DeleteVolume(const std::string& name) override;
  Status ExtendVolume(const std::string& name, uint64_t new_size) override;
  Status CreateSnapshot(const std::string& volume, const std::string& snap) override;
  Status DeleteSnapshot(const std::string& volume, const std::string& snap) override;
  Status RevertVolume(const std::string& volume, const std::string& snap) override;
  Status CloneVolume(const std::string& src, const std::optional<std::string>& snap,
                     const std::string& name) override;
  Result<VolumeInfo> GetVolume(const std::string& name) override;
  Result<std::vector<VolumeInfo>> ListVolumes() override;
  Result<uint64_t> RaiseEpoch(const std::string& name, uint64_t at_least) override;
  Result<uint64_t> RaiseEpochAbove(const std::string& name, uint64_t floor) override;
  Result<std::shared_ptr<VolumeHandle>> OpenVolume(const std::string& name, uint64_t epoch,
                                                   bool read_only) override;
  Result<std::shared_ptr<VolumeHandle>> OpenSnapshot(const std::string& volume,
                                                     const std::string& snap) override;

 private:
  // RaiseEpoch (epoch := max(epoch, floor)) and, with `above`,
  // RaiseEpochAbove (epoch := max(epoch + 1, floor)) under the volume's
  // exclusive lock, which drains other processes' writes first.
  Result<uint64_t> Raise(const std::string& name, bool above, uint64_t floor);
  using ChunkRef = std::pair<uint64_t, uint64_t>;  // (owner, index)
  class MetaLock;
  class ExclusiveVolume;

  FileStore(std::shared_ptr<StoreContext> ctx, int lock_fd);
  Status LoadMeta(const std::string& name, VolumeMeta* m) const;
  Status SaveMeta(const VolumeMeta& m) const;
  Result<std::shared_ptr<VolumeState>> State(const std::string& name);
  Result<uint64_t> NewChunkDir() const;
  // Chunk map of the head as readers see it: base overlaid with the head's own
  // non-empty files. Also durably syncs the head directory when `sync`.
  Status EffectiveMap(const VolumeMeta& m, bool sync, ChunkMap* out) const;
  // Bumps the generation so other processes reload the metadata.
  Status BumpGen(VolumeState& st) const;
  // Moves the head onto a new chunk dir (its old files become immutable).
  Status Rebase(VolumeMeta* m, const char* crash_prefix);
  Status CommitNewVolume(const VolumeMeta& m, const char* crash_prefix);
  Status ReferencedChunks(const std::string& except_trash, std::set<ChunkRef>* refs) const;
  void FreeChunks(const std::set<ChunkRef>& candidates, const std::set<ChunkRef>& refs) const;
  void RemoveHeadDirLeftovers(uint64_t head) const;
  Status FinishTrash();
  // Under the store lock: removes every chunk file no map references and
  // every chunk dir that is no volume's head (what a crash after a commit
  // point can leave behind). Does nothing if any volume's metadata is unreadable.
  Status CollectGarbage();

  std::shared_ptr<StoreContext> ctx_;
  std::shared_ptr<LockLinger> linger_;
  const int lock_fd_;
  // In-process half of the metadata lock (fcntl locks do not exclude threads
  // of one process). A plain mutex + flag so that waits can time out.
  std::mutex meta_mu_;
  std::condition_variable meta_cv_;
  bool meta_busy_ = false;
  std::mutex states_mu_;
  std::map<std::string, std::shared_ptr<VolumeState>> states_;
};

}  // namespace ferry::store
