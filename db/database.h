// Database: the control plane's map in one SQLite file. The only code in Ferry
// that speaks SQL.
//
// Promise: Open() applies the versioned schema migrations (PRAGMA user_version)
// in order, each in its own transaction, and turns on WAL, foreign keys and a
// busy timeout. Every statement is prepared (and cached); values are always
// bound, never spliced into SQL text. Reads are plain methods; every change
// goes through Write(), which runs the caller's function inside one
// transaction on a Txn and commits only when it returns ok (else rolls back:
// nothing half-made survives). generation() counts the changes: it grows after
// every committed Write() and every other change (MarkEventSent) before that
// call returns, and never on reads or rolled-back transactions, so an answer
// computed after reading generation g is current while generation() == g (this
// object is the file's only writer). The object is thread-safe (one connection
// behind a mutex; generation() takes no lock). Nothing throws.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "target/common/status.h"

struct sqlite3;
struct sqlite3_stmt;

namespace ferry::db {

// Latest schema version this code writes. Migrations 1..kSchemaVersion.
inline constexpr int kSchemaVersion = 5;

struct VolumeRow {
  std::string name;
  int64_t size = 0;            // bytes
  std::string state;           // "creating" | "available" | "deleting" | "extending" ...
  std::string preferred_gw;    // "ip:nbdport" (placement)
  int64_t epoch = 0;           // fencing epoch the backend last gave out
  int64_t created = 0;         // unix seconds
  std::string source;          // "vol" or "vol@snap" it was cloned from ("" = blank)
};

struct SnapshotRow {
  std::string volume;
  std::string name;
  int64_t size = 0;
  int64_t created = 0;
};

struct TargetRow {
  std::string ip;       // iSCSI portal IP: the target's identity
  int port = 3260;      // iSCSI port
  std::string admin;    // "host:port" of its admin API
  bool online = false;
  int64_t last_seen = 0;  // unix ms of the last heartbeat
  std::string host;       // host name it runs on ("" = not reported): attachment placement
};

struct GatewayRow {
  std::string addr;     // "ip:nbdport": the gateway's identity
  std::string admin;    // "ip:adminport"
  bool online = false;
  int64_t last_seen = 0;
};

struct LunRow {
  std::string volume;
  std::string target;   // target ip
  std::string iqn;
  int64_t tid = 0;
  int64_t lun = 1;
  bool switchable = true;
  std::string gateway;  // the gateway the target was told to use first ("ip:nbdport")
  std::string state;    // "adding" | "ready" | "removing"
  int64_t epoch = 0;    // fencing epoch this LUN writes with
};

struct AttachmentRow {
  std::string volume;
  std::string host;        // connector host name (identity of an attachment)
  std::string target;      // target ip serving it
  std::string initiator;   // initiator IQN
  std::string connector;   // the connector JSON as given
};

// CHAP credentials the backend generated for one volume's exports (one-way
// CHAP, os-brick's auth_username/auth_password).
struct ChapRow {
  std::string volume;
  std::string user;
  std::string secret;
  int64_t created = 0;  // unix seconds
};

struct EventRow {
  int64_t seq = 0;
  std::string type;
  std::string payload;  // JSON object text
  int64_t created = 0;  // unix ms
  bool sent = false;
};

// A bound value: SQL integer or text.
using Arg = std::variant<int64_t, std::string>;

// The write side: only valid inside Database::Write. Each method is one
// prepared statement.
class Txn {
 public:
  // Events (outbox). AppendEvent assigns the next sequence number when seq==0;
  // with a given seq it fails with kAlreadyExists if that seq was applied.
  Result<int64_t> AppendEvent(int64_t seq, const std::string& type, const std::string& payload,
                              int64_t created_ms);

  Status PutVolume(const VolumeRow& v);  // insert or replace
  Status DeleteVolume(const std::string& name);
  Status SetVolumeState(const std::string& name, const std::string& state);
  Status SetVolumeSize(const std::string& name, int64_t size);
  Status SetVolumeEpoch(const std::string& name, int64_t epoch);
  Status SetVolumeGateway(const std::string& name, const std::string& gw);

  Status PutSnapshot(const SnapshotRow& s);
  Status DeleteSnapshot(const std::string& volume, const std::string& name);

  Status PutTarget(const TargetRow& t);
  Status SetTargetOnline(const std::string& ip, bool online, int64_t last_seen);
  Status PutGateway(const GatewayRow& g);
  Status DeleteGateway(const std::string& addr);
  Status SetGatewayOnline(const std::string& addr, bool online, int64_t last_seen);

  Status PutLun(const LunRow& l);
  Status DeleteLun(const std::string& volume, const std::string& target);
  Status SetLunSwitchable(const std::string& volume, const std::string& target, bool on);
  Status SetLunState(const std::string& volume, const std::string& target, const std::string& st);

  Status PutAttachment(const AttachmentRow& a);
  Status DeleteAttachment(const std::string& volume, const std::string& host);
  // Points the volume's attachments on target `from` at target `to` (mov_lun).
  Status MoveAttachments(const std::string& volume, const std::string& from, const std::string& to);

  Status PutChap(const ChapRow& c);  // insert or replace

  // target "" = applies to every target.
  Status PutSetting(const std::string& target, const std::string& key, const std::string& value);
  Status DeleteSetting(const std::string& target, const std::string& key);

 private:
  friend class Database;
  explicit Txn(class Database* db) : db_(db) {}
  Status Exec(const char* sql, const std::vector<Arg>& args, bool must_change = false);
  Database* db_;
};

class Database {
 public:
  struct Options {
    int busy_timeout_ms = 5000;
    // For tests of migrations: stop after this version (0 = latest).
    int migrate_to = 0;
  };
  static Result<std::unique_ptr<Database>> Open(const std::string& path, Options o);
  static Result<std::unique_ptr<Database>> Open(const std::string& path) { return Open(path, Options{}); }
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  int version();
  std::string journal_mode();
  // The write generation (see the promise above). Read it before the queries
  // of an answer that is to be reused while it is unchanged.
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  bool foreign_keys();

  // One transaction (BEGIN IMMEDIATE). fn's non-ok Status rolls everything back
  // and is returned. Group commit: Writes that arrive while another one
  // commits are run together in the next transaction, each in a SAVEPOINT of
  // its own (one fn's failure undoes only its changes), and all return after
  // the one COMMIT (if that fails, none of them changed anything). Calling
  // Write from inside fn is an error (kInternal), as before.
  Status Write(const std::function<Status(Txn&)>& fn);

  Result<std::optional<VolumeRow>> GetVolume(const std::string& name);
  Result<std::vector<VolumeRow>> ListVolumes();
  Result<int64_t> CountVolumes();
  Result<int64_t> SumVolumeSizes();
  Result<std::vector<SnapshotRow>> ListSnapshots(const std::string& volume);
  Result<std::optional<TargetRow>> GetTarget(const std::string& ip);
  Result<std::vector<TargetRow>> ListTargets();
  Result<std::optional<GatewayRow>> GetGateway(const std::string& addr);
  Result<std::vector<GatewayRow>> ListGateways();
  Result<std::vector<LunRow>> ListLuns();
  Result<std::vector<LunRow>> LunsOfVolume(const std::string& volume);
  Result<std::vector<LunRow>> LunsOfTarget(const std::string& ip);
  Result<std::vector<LunRow>> LunsOfGateway(const std::string& gw);
  Result<std::vector<LunRow>> LunsWithIqn(const std::string& iqn);
  // target ip -> number of LUNs
  Result<std::map<std::string, int64_t>> LunCountByTarget();
  // gateway -> number of volumes whose preferred gateway it is (placement)
  Result<std::map<std::string, int64_t>> VolumeCountByGateway();
  // gateway -> number of distinct exported volumes the targets were told to use it for
  Result<std::map<std::string, int64_t>> ExportedVolumeCountByGateway();
  Result<std::vector<AttachmentRow>> AttachmentsOf(const std::string& volume);
  Result<std::vector<AttachmentRow>> AttachmentsOnTarget(const std::string& volume, const std::string& target);
  // Distinct non-empty initiator names of the attachments served on `target`
  // through the iSCSI target `iqn` (the ACL that target should have).
  // exclude_volume/exclude_host leave one attachment out (the one leaving).
  Result<std::vector<std::string>> InitiatorsOn(const std::string& target, const std::string& iqn,
                                                const std::string& exclude_volume = "",
                                                const std::string& exclude_host = "");
  Result<std::optional<ChapRow>> GetChap(const std::string& volume);
  Result<std::optional<std::string>> GetSetting(const std::string& target, const std::string& key);
  Result<std::map<std::string, std::string>> SettingsOf(const std::string& target);
  Result<std::vector<EventRow>> EventsAfter(int64_t seq, int limit);
  Result<std::vector<EventRow>> UnsentEvents(int limit);
  Result<int64_t> LastEventSeq();
  // Lowest sequence number still in the table (0 when it is empty).
  Result<int64_t> FirstEventSeq();
  // Retention: deletes at most `max_rows` of the oldest events that are more
  // than `keep` (>= 1) behind the newest one, and, when `only_sent`, only
  // those Kafka confirmed (an unsent event is never dropped while a publisher
  // may still need it). The newest `keep` always stay, so sequence numbers
  // never restart. Returns how many went.
  Result<int64_t> PruneEvents(int64_t keep, bool only_sent, int64_t max_rows);
  Status MarkEventSent(int64_t seq);

 private:
  friend class Txn;
  struct Stmt;
  Database() = default;
  Status Migrate(int to);
  Status ExecScript(const std::string& sql);
  // One statement through the prepared-statement cache (BEGIN/COMMIT of every
  // Write: sqlite3_exec would parse them anew each time).
  Status ExecCached(const char* sql);
  // Prepared-statement cache; caller must hold mu_.
  Result<sqlite3_stmt*> Prepare(const char* sql);
  Status Err(const std::string& what);

  sqlite3* db_ = nullptr;
  std::recursive_mutex mu_;
  std::map<const char*, sqlite3_stmt*> cache_;
  std::atomic<uint64_t> generation_{0};

  // Group commit (Write): callers queue; one leader at a time runs the queue.
  struct PendingWrite {
    const std::function<Status(Txn&)>* fn;
    Status status;
    bool done = false;
  };
  void RunWrites(const std::vector<PendingWrite*>& batch);
  std::mutex wq_mu_;
  std::condition_variable wq_cv_;
  std::vector<PendingWrite*> wq_;
  bool leading_ = false;
  std::atomic<std::thread::id> writer_{};  // the leader's thread while it runs a batch
};

}  // namespace ferry::db
