#include "db/database.h"

#include <sqlite3.h>

#include <chrono>

namespace ferry::db {
namespace {

// Each entry upgrades version i to i+1. Never edit a shipped entry: add one.
const char* const kMigrations[] = {
    // 1: the map.
    R"sql(
CREATE TABLE volumes(
  name TEXT PRIMARY KEY,
  size INTEGER NOT NULL CHECK(size >= 0),
  state TEXT NOT NULL,
  preferred_gw TEXT NOT NULL DEFAULT '',
  epoch INTEGER NOT NULL DEFAULT 0,
  created INTEGER NOT NULL DEFAULT 0);
CREATE TABLE snapshots(
  volume TEXT NOT NULL REFERENCES volumes(name) ON DELETE CASCADE,
  name TEXT NOT NULL,
  size INTEGER NOT NULL,
  created INTEGER NOT NULL,
  PRIMARY KEY(volume, name));
CREATE TABLE targets(
  ip TEXT PRIMARY KEY,
  port INTEGER NOT NULL,
  admin TEXT NOT NULL,
  online INTEGER NOT NULL,
  last_seen INTEGER NOT NULL);
CREATE TABLE gateways(
  addr TEXT PRIMARY KEY,
  admin TEXT NOT NULL,
  online INTEGER NOT NULL,
  last_seen INTEGER NOT NULL);
CREATE TABLE luns(
  volume TEXT NOT NULL REFERENCES volumes(name),
  target TEXT NOT NULL REFERENCES targets(ip),
  iqn TEXT NOT NULL,
  tid INTEGER NOT NULL,
  lun INTEGER NOT NULL,
  switchable INTEGER NOT NULL,
  gateway TEXT NOT NULL,
  state TEXT NOT NULL,
  PRIMARY KEY(volume, target));
CREATE INDEX luns_target ON luns(target);
CREATE INDEX luns_iqn ON luns(iqn);
)sql",
    // 2: attachments (Cinder connectors) and per-target settings.
    R"sql(
CREATE TABLE attachments(
  volume TEXT NOT NULL REFERENCES volumes(name),
  host TEXT NOT NULL,
  target TEXT NOT NULL,
  initiator TEXT NOT NULL,
  connector TEXT NOT NULL,
  PRIMARY KEY(volume, host));
CREATE TABLE settings(
  target TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY(target, key));
)sql",
    // 3: clone source, the epoch each LUN was given, and the event outbox.
    R"sql(
ALTER TABLE volumes ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE luns ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
CREATE TABLE events(
  seq INTEGER PRIMARY KEY,
  type TEXT NOT NULL,
  payload TEXT NOT NULL,
  created INTEGER NOT NULL,
  sent INTEGER NOT NULL DEFAULT 0);
CREATE INDEX events_unsent ON events(seq) WHERE sent = 0;
)sql",
    // 4: the host name a target runs on (attachment placement by connector
    // host), CHAP credentials per volume, attachments looked up by target.
    R"sql(
ALTER TABLE targets ADD COLUMN host TEXT NOT NULL DEFAULT '';
CREATE TABLE chap(
  volume TEXT PRIMARY KEY REFERENCES volumes(name) ON DELETE CASCADE,
  user TEXT NOT NULL,
  secret TEXT NOT NULL,
  created INTEGER NOT NULL);
CREATE INDEX attachments_target ON attachments(target);
)sql",
    // 5: indexes for the per-call queries at 10,000 volumes: placement counts
    // volumes per gateway, the gateway maps count LUNs per gateway.
    R"sql(
CREATE INDEX volumes_gateway ON volumes(preferred_gw);
CREATE INDEX luns_gateway ON luns(gateway, volume);
)sql",
};
static_assert(sizeof(kMigrations) / sizeof(kMigrations[0]) == kSchemaVersion);

std::string Col(sqlite3_stmt* s, int i) {
  const unsigned char* t = sqlite3_column_text(s, i);
  return t ? reinterpret_cast<const char*>(t) : "";
}
int64_t ColI(sqlite3_stmt* s, int i) { return sqlite3_column_int64(s, i); }

// Resets a cached statement when it goes out of scope.
struct Resetter {
  sqlite3_stmt* s;
  ~Resetter() {
    if (s) {
      sqlite3_reset(s);
      sqlite3_clear_bindings(s);
    }
  }
};

Status Bind(sqlite3* db, sqlite3_stmt* s, const std::vector<Arg>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    int rc;
    int idx = static_cast<int>(i) + 1;
    if (const auto* v = std::get_if<int64_t>(&args[i]))
      rc = sqlite3_bind_int64(s, idx, *v);
    else {
      const std::string& t = std::get<std::string>(args[i]);
      rc = sqlite3_bind_text(s, idx, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
    }
    if (rc != SQLITE_OK) return Status::Internal(std::string("sqlite bind: ") + sqlite3_errmsg(db));
  }
  return Status::Ok();
}

Status StepError(sqlite3* db, int rc, const char* sql) {
  int ext = sqlite3_extended_errcode(db);
  std::string msg = std::string("sqlite: ") + sqlite3_errmsg(db);
  if (rc == SQLITE_CONSTRAINT) {
    if (ext == SQLITE_CONSTRAINT_FOREIGNKEY) return Status::Conflict(msg + " (still referenced)");
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY || ext == SQLITE_CONSTRAINT_UNIQUE)
      return Status::AlreadyExists(msg);
    return Status::InvalidArgument(msg);
  }
  if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return Status::Unavailable(msg);
  if (rc == SQLITE_FULL) return Status::NoSpace(msg);
  (void)sql;
  return Status::IoError(msg);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

// Runs one cached statement with bound args, calling row() for every row.
#define FERRY_QUERY(SQL, ARGS, ROWFN)                                        \
  std::lock_guard<std::recursive_mutex> lk(mu_);                             \
  auto prep = Prepare(SQL);                                                  \
  if (!prep.ok()) return prep.status();                                      \
  sqlite3_stmt* st = *prep;                                                  \
  Resetter rs{st};                                                           \
  if (Status b = Bind(db_, st, ARGS); !b.ok()) return b;                     \
  for (;;) {                                                                 \
    int rc = sqlite3_step(st);                                               \
    if (rc == SQLITE_DONE) break;                                            \
    if (rc != SQLITE_ROW) return StepError(db_, rc, SQL);                    \
    ROWFN;                                                                   \
  }

Result<std::unique_ptr<Database>> Database::Open(const std::string& path, Options o) {
  std::unique_ptr<Database> d(new Database());
  int rc = sqlite3_open_v2(path.c_str(), &d->db_,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = d->db_ ? sqlite3_errmsg(d->db_) : "out of memory";
    return Status::IoError("cannot open database " + path + ": " + m);
  }
  sqlite3_busy_timeout(d->db_, o.busy_timeout_ms);
  FERRY_RETURN_IF_ERROR(d->ExecScript("PRAGMA foreign_keys=ON;"));
  // WAL: readers never block the writer; NORMAL sync is durable across process
  // crashes (kill -9), which is the failure the reconciler handles.
  {
    std::lock_guard<std::recursive_mutex> lk(d->mu_);
    auto jm = d->Prepare("PRAGMA journal_mode=WAL");
    if (!jm.ok()) return jm.status();
    Resetter r{*jm};
    int s = sqlite3_step(*jm);
    if (s != SQLITE_ROW || Col(*jm, 0) != "wal")
      return Status::IoError("cannot switch " + path + " to WAL mode");
  }
  FERRY_RETURN_IF_ERROR(d->ExecScript("PRAGMA synchronous=NORMAL;"));
  FERRY_RETURN_IF_ERROR(d->Migrate(o.migrate_to > 0 ? o.migrate_to : kSchemaVersion));
  return d;
}

Database::~Database() {
  for (auto& [k, s] : cache_) sqlite3_finalize(s);
  if (db_) sqlite3_close(db_);
}

Status Database::Err(const std::string& what) {
  return Status::IoError(what + ": " + sqlite3_errmsg(db_));
}

Status Database::ExecScript(const std::string& sql) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string m = err ? err : "unknown";
    sqlite3_free(err);
    if (rc == SQLITE_BUSY) return Status::Unavailable("sqlite busy: " + m);
    return Status::IoError("sqlite: " + m);
  }
  return Status::Ok();
}

Status Database::ExecCached(const char* sql) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  auto prep = Prepare(sql);
  if (!prep.ok()) return prep.status();
  int rc = sqlite3_step(*prep);
  sqlite3_reset(*prep);
  if (rc == SQLITE_DONE || rc == SQLITE_ROW) return Status::Ok();
  if (rc == SQLITE_BUSY) return Status::Unavailable(std::string("sqlite busy: ") + sqlite3_errmsg(db_));
  return Status::IoError(std::string("sqlite: ") + sqlite3_errmsg(db_) + " in: " + sql);
}

Result<sqlite3_stmt*> Database::Prepare(const char* sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return it->second;
  sqlite3_stmt* s = nullptr;
  if (sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK)
    return Status::Internal(std::string("sqlite prepare: ") + sqlite3_errmsg(db_) + " in: " + sql);
  cache_[sql] = s;
  return s;
}

int Database::version() {
  int v = -1;
  auto f = [&]() -> Status {
    FERRY_QUERY("PRAGMA user_version", std::vector<Arg>{}, v = static_cast<int>(ColI(st, 0)));
    return Status::Ok();
  };
  (void)f();
  return v;
}

std::string Database::journal_mode() {
  std::string m;
  auto f = [&]() -> Status {
    FERRY_QUERY("PRAGMA journal_mode", std::vector<Arg>{}, m = Col(st, 0));
    return Status::Ok();
  };
  (void)f();
  return m;
}

bool Database::foreign_keys() {
  bool on = false;
  auto f = [&]() -> Status {
    FERRY_QUERY("PRAGMA foreign_keys", std::vector<Arg>{}, on = ColI(st, 0) == 1);
    return Status::Ok();
  };
  (void)f();
  return on;
}

Status Database::Migrate(int to) {
  int cur = version();
  if (cur < 0) return Err("cannot read schema version");
  if (cur > kSchemaVersion)
    return Status::InvalidArgument("database schema version " + std::to_string(cur) +
                                   " is newer than this program's " + std::to_string(kSchemaVersion));
  for (int v = cur; v < to; ++v) {
    std::string script = std::string("BEGIN IMMEDIATE;") + kMigrations[v] +
                         "PRAGMA user_version=" + std::to_string(v + 1) + ";COMMIT;";
    Status s = ExecScript(script);
    if (!s.ok()) {
      (void)ExecScript("ROLLBACK;");
      return Status(s.code(), "migration to schema version " + std::to_string(v + 1) + " failed: " +
                                  s.message());
    }
  }
  return Status::Ok();
}

Status Database::Write(const std::function<Status(Txn&)>& fn) {
  if (writer_.load(std::memory_order_acquire) == std::this_thread::get_id())
    return Status::Internal("nested Database::Write");
  PendingWrite me{&fn, Status::Ok(), false};
  std::unique_lock<std::mutex> q(wq_mu_);
  wq_.push_back(&me);
  wq_cv_.wait(q, [&] { return me.done || !leading_; });
  if (me.done) return me.status;  // a leader ran it
  // Lead: run everything queued so far (this call included) in one transaction.
  leading_ = true;
  std::vector<PendingWrite*> batch;
  batch.swap(wq_);
  q.unlock();
  RunWrites(batch);
  q.lock();
  leading_ = false;
  for (auto* p : batch) p->done = true;
  q.unlock();
  wq_cv_.notify_all();
  return me.status;
}

void Database::RunWrites(const std::vector<PendingWrite*>& batch) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  writer_.store(std::this_thread::get_id(), std::memory_order_release);
  struct ClearWriter {
    std::atomic<std::thread::id>* w;
    ~ClearWriter() { w->store(std::thread::id(), std::memory_order_release); }
  } clear{&writer_};
  auto fail_all = [&](const Status& s) {
    for (auto* p : batch)
      if (p->status.ok()) p->status = s;
  };
  Status b = ExecCached("BEGIN IMMEDIATE");
  if (!b.ok()) return fail_all(b);
  const bool grouped = batch.size() > 1;
  bool any_ok = false;
  for (auto* p : batch) {
    if (grouped) {
      Status sp = ExecCached("SAVEPOINT w");
      if (!sp.ok()) {
        p->status = sp;
        continue;
      }
    }
    Txn t(this);
    Status s;
    try {
      s = (*p->fn)(t);
    } catch (const std::exception& e) {
      s = Status::Internal(std::string("exception in transaction: ") + e.what());
    }
    if (sqlite3_get_autocommit(db_)) {
      // SQLite ended the whole transaction itself (I/O error, disk full):
      // every change of this batch is gone, including the ones that succeeded.
      if (s.ok()) s = Status::IoError("sqlite rolled the transaction back");
      p->status = s;
      return fail_all(Status(s.code(), "transaction rolled back with a concurrent write: " + s.message()));
    }
    if (grouped) {
      if (!s.ok()) (void)ExecCached("ROLLBACK TO w");
      Status rel = ExecCached("RELEASE w");
      if (s.ok() && !rel.ok()) {
        (void)ExecCached("ROLLBACK TO w");
        (void)ExecCached("RELEASE w");
        s = rel;
      }
    }
    p->status = s;
    any_ok = any_ok || s.ok();
  }
  if (!any_ok) {
    (void)ExecCached("ROLLBACK");
    return;
  }
  Status c = ExecCached("COMMIT");
  if (!c.ok()) {
    (void)ExecCached("ROLLBACK");
    return fail_all(c);
  }
  // Still before any of these Writes returns: the bump is visible to them.
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

// ---- Txn ----

Status Txn::Exec(const char* sql, const std::vector<Arg>& args, bool must_change) {
  Database* d = db_;
  std::lock_guard<std::recursive_mutex> lk(d->mu_);
  auto prep = d->Prepare(sql);
  if (!prep.ok()) return prep.status();
  Resetter rs{*prep};
  FERRY_RETURN_IF_ERROR(Bind(d->db_, *prep, args));
  int rc = sqlite3_step(*prep);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return StepError(d->db_, rc, sql);
  if (must_change && sqlite3_changes(d->db_) == 0) return Status::NotFound("no such row");
  return Status::Ok();
}

Result<int64_t> Txn::AppendEvent(int64_t seq, const std::string& type, const std::string& payload,
                                 int64_t created_ms) {
  if (created_ms == 0) created_ms = NowMs();
  if (seq == 0) {
    FERRY_RETURN_IF_ERROR(Exec("INSERT INTO events(seq,type,payload,created) VALUES("
                               "(SELECT IFNULL(MAX(seq),0)+1 FROM events),?,?,?)",
                               {type, payload, created_ms}));
    return static_cast<int64_t>(sqlite3_last_insert_rowid(db_->db_));
  }
  // Events arrive in order; one at or below the newest here was applied
  // already, even if retention has since dropped its row.
  auto last = db_->LastEventSeq();  // same connection, its mutex is recursive
  if (!last.ok()) return last.status();
  if (seq <= *last)
    return Status::AlreadyExists("event " + std::to_string(seq) + " was applied (newest here: " +
                                 std::to_string(*last) + ")");
  FERRY_RETURN_IF_ERROR(Exec("INSERT INTO events(seq,type,payload,created) VALUES(?,?,?,?)",
                             {seq, type, payload, created_ms}));
  return seq;
}

Status Txn::PutVolume(const VolumeRow& v) {
  return Exec("INSERT OR REPLACE INTO volumes(name,size,state,preferred_gw,epoch,created,source) "
              "VALUES(?,?,?,?,?,?,?)",
              {v.name, v.size, v.state, v.preferred_gw, v.epoch, v.created, v.source});
}
Status Txn::DeleteVolume(const std::string& name) {
  return Exec("DELETE FROM volumes WHERE name=?", {name}, true);
}
Status Txn::SetVolumeState(const std::string& name, const std::string& state) {
  return Exec("UPDATE volumes SET state=? WHERE name=?", {state, name}, true);
}
Status Txn::SetVolumeSize(const std::string& name, int64_t size) {
  return Exec("UPDATE volumes SET size=? WHERE name=?", {size, name}, true);
}
Status Txn::SetVolumeEpoch(const std::string& name, int64_t epoch) {
  return Exec("UPDATE volumes SET epoch=? WHERE name=?", {epoch, name}, true);
}
Status Txn::SetVolumeGateway(const std::string& name, const std::string& gw) {
  return Exec("UPDATE volumes SET preferred_gw=? WHERE name=?", {gw, name}, true);
}
Status Txn::PutSnapshot(const SnapshotRow& s) {
  return Exec("INSERT OR REPLACE INTO snapshots(volume,name,size,created) VALUES(?,?,?,?)",
              {s.volume, s.name, s.size, s.created});
}
Status Txn::DeleteSnapshot(const std::string& volume, const std::string& name) {
  return Exec("DELETE FROM snapshots WHERE volume=? AND name=?", {volume, name}, true);
}
Status Txn::PutTarget(const TargetRow& t) {
  // A registration that does not name the host keeps the one known.
  return Exec("INSERT INTO targets(ip,port,admin,online,last_seen,host) VALUES(?,?,?,?,?,?) "
              "ON CONFLICT(ip) DO UPDATE SET port=excluded.port, admin=excluded.admin, "
              "online=excluded.online, last_seen=excluded.last_seen, "
              "host=CASE WHEN excluded.host<>'' THEN excluded.host ELSE targets.host END",
              {t.ip, static_cast<int64_t>(t.port), t.admin, static_cast<int64_t>(t.online), t.last_seen,
               t.host});
}
Status Txn::SetTargetOnline(const std::string& ip, bool online, int64_t last_seen) {
  return Exec("UPDATE targets SET online=?, last_seen=? WHERE ip=?",
              {static_cast<int64_t>(online), last_seen, ip}, true);
}
Status Txn::PutGateway(const GatewayRow& g) {
  return Exec("INSERT INTO gateways(addr,admin,online,last_seen) VALUES(?,?,?,?) "
              "ON CONFLICT(addr) DO UPDATE SET admin=excluded.admin, online=excluded.online, "
              "last_seen=excluded.last_seen",
              {g.addr, g.admin, static_cast<int64_t>(g.online), g.last_seen});
}
Status Txn::DeleteGateway(const std::string& addr) {
  return Exec("DELETE FROM gateways WHERE addr=?", {addr}, true);
}
Status Txn::SetGatewayOnline(const std::string& addr, bool online, int64_t last_seen) {
  return Exec("UPDATE gateways SET online=?, last_seen=? WHERE addr=?",
              {static_cast<int64_t>(online), last_seen, addr}, true);
}
Status Txn::PutLun(const LunRow& l) {
  return Exec("INSERT OR REPLACE INTO luns(volume,target,iqn,tid,lun,switchable,gateway,state,epoch) "
              "VALUES(?,?,?,?,?,?,?,?,?)",
              {l.volume, l.target, l.iqn, l.tid, l.lun, static_cast<int64_t>(l.switchable), l.gateway,
               l.state, l.epoch});
}
Status Txn::DeleteLun(const std::string& volume, const std::string& target) {
  return Exec("DELETE FROM luns WHERE volume=? AND target=?", {volume, target}, true);
}
Status Txn::SetLunSwitchable(const std::string& volume, const std::string& target, bool on) {
  return Exec("UPDATE luns SET switchable=? WHERE volume=? AND target=?",
              {static_cast<int64_t>(on), volume, target}, true);
}
Status Txn::SetLunState(const std::string& volume, const std::string& target, const std::string& st) {
  return Exec("UPDATE luns SET state=? WHERE volume=? AND target=?", {st, volume, target}, true);
}
Status Txn::PutAttachment(const AttachmentRow& a) {
  return Exec("INSERT OR REPLACE INTO attachments(volume,host,target,initiator,connector) "
              "VALUES(?,?,?,?,?)",
              {a.volume, a.host, a.target, a.initiator, a.connector});
}
Status Txn::DeleteAttachment(const std::string& volume, const std::string& host) {
  return Exec("DELETE FROM attachments WHERE volume=? AND host=?", {volume, host}, true);
}
Status Txn::MoveAttachments(const std::string& volume, const std::string& from, const std::string& to) {
  return Exec("UPDATE attachments SET target=? WHERE volume=? AND target=?", {to, volume, from});
}
Status Txn::PutChap(const ChapRow& c) {
  return Exec("INSERT OR REPLACE INTO chap(volume,user,secret,created) VALUES(?,?,?,?)",
              {c.volume, c.user, c.secret, c.created});
}
Status Txn::PutSetting(const std::string& target, const std::string& key, const std::string& value) {
  return Exec("INSERT OR REPLACE INTO settings(target,key,value) VALUES(?,?,?)", {target, key, value});
}
Status Txn::DeleteSetting(const std::string& target, const std::string& key) {
  return Exec("DELETE FROM settings WHERE target=? AND key=?", {target, key});
}

// ---- reads ----

namespace {
VolumeRow ReadVolume(sqlite3_stmt* st) {
  VolumeRow v;
  v.name = Col(st, 0);
  v.size = ColI(st, 1);
  v.state = Col(st, 2);
  v.preferred_gw = Col(st, 3);
  v.epoch = ColI(st, 4);
  v.created = ColI(st, 5);
  v.source = Col(st, 6);
  return v;
}
LunRow ReadLun(sqlite3_stmt* st) {
  LunRow l;
  l.volume = Col(st, 0);
  l.target = Col(st, 1);
  l.iqn = Col(st, 2);
  l.tid = ColI(st, 3);
  l.lun = ColI(st, 4);
  l.switchable = ColI(st, 5) != 0;
  l.gateway = Col(st, 6);
  l.state = Col(st, 7);
  l.epoch = ColI(st, 8);
  return l;
}
EventRow ReadEvent(sqlite3_stmt* st) {
  EventRow e;
  e.seq = ColI(st, 0);
  e.type = Col(st, 1);
  e.payload = Col(st, 2);
  e.created = ColI(st, 3);
  e.sent = ColI(st, 4) != 0;
  return e;
}
#define VOLCOLS "name,size,state,preferred_gw,epoch,created,source"
#define LUNCOLS "volume,target,iqn,tid,lun,switchable,gateway,state,epoch"
}  // namespace

Result<std::optional<VolumeRow>> Database::GetVolume(const std::string& name) {
  std::optional<VolumeRow> out;
  FERRY_QUERY("SELECT " VOLCOLS " FROM volumes WHERE name=?", std::vector<Arg>{name},
              out = ReadVolume(st));
  return out;
}
Result<std::vector<VolumeRow>> Database::ListVolumes() {
  std::vector<VolumeRow> out;
  FERRY_QUERY("SELECT " VOLCOLS " FROM volumes ORDER BY name", std::vector<Arg>{},
              out.push_back(ReadVolume(st)));
  return out;
}
Result<int64_t> Database::CountVolumes() {
  int64_t n = 0;
  FERRY_QUERY("SELECT COUNT(*) FROM volumes", std::vector<Arg>{}, n = ColI(st, 0));
  return n;
}
Result<int64_t> Database::SumVolumeSizes() {
  int64_t n = 0;
  FERRY_QUERY("SELECT IFNULL(SUM(size),0) FROM volumes", std::vector<Arg>{}, n = ColI(st, 0));
  return n;
}
Result<std::vector<SnapshotRow>> Database::ListSnapshots(const std::string& volume) {
  std::vector<SnapshotRow> out;
  FERRY_QUERY("SELECT volume,name,size,created FROM snapshots WHERE volume=? ORDER BY created,name",
              std::vector<Arg>{volume},
              out.push_back({Col(st, 0), Col(st, 1), ColI(st, 2), ColI(st, 3)}));
  return out;
}
Result<std::optional<TargetRow>> Database::GetTarget(const std::string& ip) {
  std::optional<TargetRow> out;
  FERRY_QUERY("SELECT ip,port,admin,online,last_seen,host FROM targets WHERE ip=?", std::vector<Arg>{ip},
              (out = TargetRow{Col(st, 0), static_cast<int>(ColI(st, 1)), Col(st, 2), ColI(st, 3) != 0,
                               ColI(st, 4), Col(st, 5)}));
  return out;
}
Result<std::vector<TargetRow>> Database::ListTargets() {
  std::vector<TargetRow> out;
  FERRY_QUERY("SELECT ip,port,admin,online,last_seen,host FROM targets ORDER BY ip", std::vector<Arg>{},
              out.push_back(TargetRow{Col(st, 0), static_cast<int>(ColI(st, 1)), Col(st, 2),
                                      ColI(st, 3) != 0, ColI(st, 4), Col(st, 5)}));
  return out;
}
Result<std::optional<GatewayRow>> Database::GetGateway(const std::string& addr) {
  std::optional<GatewayRow> out;
  FERRY_QUERY("SELECT addr,admin,online,last_seen FROM gateways WHERE addr=?", std::vector<Arg>{addr},
              (out = GatewayRow{Col(st, 0), Col(st, 1), ColI(st, 2) != 0, ColI(st, 3)}));
  return out;
}
Result<std::vector<GatewayRow>> Database::ListGateways() {
  std::vector<GatewayRow> out;
  FERRY_QUERY("SELECT addr,admin,online,last_seen FROM gateways ORDER BY addr", std::vector<Arg>{},
              out.push_back(GatewayRow{Col(st, 0), Col(st, 1), ColI(st, 2) != 0, ColI(st, 3)}));
  return out;
}
Result<std::vector<LunRow>> Database::ListLuns() {
  std::vector<LunRow> out;
  FERRY_QUERY("SELECT " LUNCOLS " FROM luns ORDER BY target,volume", std::vector<Arg>{},
              out.push_back(ReadLun(st)));
  return out;
}
Result<std::vector<LunRow>> Database::LunsOfVolume(const std::string& volume) {
  std::vector<LunRow> out;
  FERRY_QUERY("SELECT " LUNCOLS " FROM luns WHERE volume=? ORDER BY target", std::vector<Arg>{volume},
              out.push_back(ReadLun(st)));
  return out;
}
Result<std::vector<LunRow>> Database::LunsOfTarget(const std::string& ip) {
  std::vector<LunRow> out;
  FERRY_QUERY("SELECT " LUNCOLS " FROM luns WHERE target=? ORDER BY volume", std::vector<Arg>{ip},
              out.push_back(ReadLun(st)));
  return out;
}
Result<std::vector<LunRow>> Database::LunsOfGateway(const std::string& gw) {
  std::vector<LunRow> out;
  FERRY_QUERY("SELECT " LUNCOLS " FROM luns WHERE gateway=? ORDER BY volume,target",
              std::vector<Arg>{gw}, out.push_back(ReadLun(st)));
  return out;
}
Result<std::vector<LunRow>> Database::LunsWithIqn(const std::string& iqn) {
  std::vector<LunRow> out;
  FERRY_QUERY("SELECT " LUNCOLS " FROM luns WHERE iqn=? ORDER BY target,lun", std::vector<Arg>{iqn},
              out.push_back(ReadLun(st)));
  return out;
}
Result<std::map<std::string, int64_t>> Database::LunCountByTarget() {
  std::map<std::string, int64_t> out;
  FERRY_QUERY("SELECT target, COUNT(*) FROM luns GROUP BY target", std::vector<Arg>{},
              out[Col(st, 0)] = ColI(st, 1));
  return out;
}
Result<std::map<std::string, int64_t>> Database::VolumeCountByGateway() {
  std::map<std::string, int64_t> out;
  FERRY_QUERY("SELECT preferred_gw, COUNT(*) FROM volumes WHERE preferred_gw<>'' GROUP BY preferred_gw",
              std::vector<Arg>{}, out[Col(st, 0)] = ColI(st, 1));
  return out;
}
Result<std::map<std::string, int64_t>> Database::ExportedVolumeCountByGateway() {
  std::map<std::string, int64_t> out;
  FERRY_QUERY("SELECT gateway, COUNT(DISTINCT volume) FROM luns GROUP BY gateway", std::vector<Arg>{},
              out[Col(st, 0)] = ColI(st, 1));
  return out;
}
Result<std::vector<AttachmentRow>> Database::AttachmentsOf(const std::string& volume) {
  std::vector<AttachmentRow> out;
  FERRY_QUERY("SELECT volume,host,target,initiator,connector FROM attachments WHERE volume=? "
              "ORDER BY host",
              std::vector<Arg>{volume},
              out.push_back({Col(st, 0), Col(st, 1), Col(st, 2), Col(st, 3), Col(st, 4)}));
  return out;
}
Result<std::vector<std::string>> Database::InitiatorsOn(const std::string& target, const std::string& iqn,
                                                      const std::string& exclude_volume,
                                                      const std::string& exclude_host) {
  std::vector<std::string> out;
  FERRY_QUERY("SELECT DISTINCT a.initiator FROM attachments a JOIN luns l "
              "ON l.volume=a.volume AND l.target=a.target "
              "WHERE a.target=? AND l.iqn=? AND a.initiator<>'' AND NOT (a.volume=? AND a.host=?) "
              "ORDER BY a.initiator",
              (std::vector<Arg>{target, iqn, exclude_volume, exclude_host}), out.push_back(Col(st, 0)));
  return out;
}
Result<std::optional<ChapRow>> Database::GetChap(const std::string& volume) {
  std::optional<ChapRow> out;
  FERRY_QUERY("SELECT volume,user,secret,created FROM chap WHERE volume=?", std::vector<Arg>{volume},
              (out = ChapRow{Col(st, 0), Col(st, 1), Col(st, 2), ColI(st, 3)}));
  return out;
}
Result<std::optional<std::string>> Database::GetSetting(const std::string& target, const std::string& key) {
  std::optional<std::string> out;
  FERRY_QUERY("SELECT value FROM settings WHERE target=? AND key=?", (std::vector<Arg>{target, key}),
              out = Col(st, 0));
  return out;
}
Result<std::map<std::string, std::string>> Database::SettingsOf(const std::string& target) {
  std::map<std::string, std::string> out;
  FERRY_QUERY("SELECT key,value FROM settings WHERE target=?", std::vector<Arg>{target},
              out[Col(st, 0)] = Col(st, 1));
  return out;
}
Result<std::vector<AttachmentRow>> Database::AttachmentsOnTarget(const std::string& volume,
                                                                 const std::string& target) {
  std::vector<AttachmentRow> out;
  FERRY_QUERY("SELECT volume,host,target,initiator,connector FROM attachments WHERE volume=? AND target=? "
              "ORDER BY host",
              (std::vector<Arg>{volume, target}),
              out.push_back({Col(st, 0), Col(st, 1), Col(st, 2), Col(st, 3), Col(st, 4)}));
  return out;
}
Result<std::vector<EventRow>> Database::EventsAfter(int64_t seq, int limit) {
  std::vector<EventRow> out;
  FERRY_QUERY("SELECT seq,type,payload,created,sent FROM events WHERE seq>? ORDER BY seq LIMIT ?",
              (std::vector<Arg>{seq, static_cast<int64_t>(limit)}), out.push_back(ReadEvent(st)));
  return out;
}
Result<std::vector<EventRow>> Database::UnsentEvents(int limit) {
  std::vector<EventRow> out;
  FERRY_QUERY("SELECT seq,type,payload,created,sent FROM events WHERE sent=0 ORDER BY seq LIMIT ?",
              std::vector<Arg>{static_cast<int64_t>(limit)}, out.push_back(ReadEvent(st)));
  return out;
}
Result<int64_t> Database::LastEventSeq() {
  int64_t n = 0;
  FERRY_QUERY("SELECT IFNULL(MAX(seq),0) FROM events", std::vector<Arg>{}, n = ColI(st, 0));
  return n;
}
Result<int64_t> Database::FirstEventSeq() {
  int64_t n = 0;
  FERRY_QUERY("SELECT IFNULL(MIN(seq),0) FROM events", std::vector<Arg>{}, n = ColI(st, 0));
  return n;
}
Result<int64_t> Database::PruneEvents(int64_t keep, bool only_sent, int64_t max_rows) {
  if (keep < 1 || max_rows < 1) return Status::InvalidArgument("events to keep and rows per pass must be >= 1");
  // Look first, so that a pass with nothing to drop writes nothing (a write
  // would move generation() and with it every cached map answer).
  // `sent >= 1` keeps undelivered events; `sent >= 0` is every event.
  const int64_t min_sent = only_sent ? 1 : 0;
  int64_t oldest = 0;
  // The read's lock is released before Write: a Write may wait for another
  // thread's group commit, which needs the connection.
  Status q = [&]() -> Status {
    FERRY_QUERY("SELECT seq FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ? AND sent >= ? "
                "ORDER BY seq LIMIT 1",
                (std::vector<Arg>{keep, min_sent}), oldest = ColI(st, 0));
    return Status::Ok();
  }();
  if (!q.ok()) return q;
  if (oldest == 0) return int64_t{0};
  int64_t gone = 0;
  Status s = Write([&](Txn& t) -> Status {
    FERRY_RETURN_IF_ERROR(t.Exec("DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE "
                                 "seq <= (SELECT MAX(seq) FROM events) - ? AND sent >= ? ORDER BY seq LIMIT ?)",
                                 {keep, min_sent, max_rows}));
    gone = sqlite3_changes(db_);
    return Status::Ok();
  });
  if (!s.ok()) return s;
  return gone;
}
Status Database::MarkEventSent(int64_t seq) {
  std::lock_guard<std::recursive_mutex> lk(mu_);
  Txn t(this);
  // Marking delivery is bookkeeping of the outbox, not a state change of the
  // map; it still counts as a change (nothing cached can be older than it).
  Status s = t.Exec("UPDATE events SET sent=1 WHERE seq=?", {seq}, true);
  if (s.ok()) generation_.fetch_add(1, std::memory_order_acq_rel);
  return s;
}

}  // namespace ferry::db
