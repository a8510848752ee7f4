// Events: every change of the backend's map is an Event, and applying an
// Event to the database is the only code path that changes the map.
//
// Promise: EventLog::Commit(e) appends e to the `events` outbox with the next
// sequence number AND applies it to the tables in one SQLite transaction, so
// the map and the log never disagree; an event that cannot be applied changes
// nothing. Replay(seq, e) applies an event numbered elsewhere (another backend
// via Kafka) exactly once. Listeners are told after each commit (the Kafka
// publisher wakes on that). Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "db/database.h"
#include "target/common/status.h"

namespace ferry::backend {

// type names a change ("volume.created"); fields are its flat payload.
struct Event {
  std::string type;
  std::map<std::string, std::string> fields;

  Event& Set(const std::string& k, const std::string& v) { fields[k] = v; return *this; }
  Event& Set(const std::string& k, int64_t v) { fields[k] = std::to_string(v); return *this; }
  Event& Set(const std::string& k, const char* v) { fields[k] = v; return *this; }
  Event& Set(const std::string& k, bool v) { fields[k] = v ? "1" : "0"; return *this; }
  Event& Set(const std::string& k, int v) { return Set(k, static_cast<int64_t>(v)); }
  std::string Get(const std::string& k) const {
    auto it = fields.find(k);
    return it == fields.end() ? "" : it->second;
  }
  int64_t GetInt(const std::string& k) const;

  std::string PayloadJson() const;
  static Result<Event> FromJson(const std::string& type, const std::string& payload);
};

// The one function that turns an event into table changes (inside a Txn).
Status ApplyEvent(db::Txn& t, const Event& e);

class EventLog {
 public:
  explicit EventLog(db::Database* db) : db_(db) {}
  // Appends and applies in one transaction; returns the sequence number.
  Result<int64_t> Commit(const Event& e);
  // Several events atomically (all or none).
  Result<int64_t> CommitAll(const std::vector<Event>& es);
  // Applies an event numbered elsewhere; kAlreadyExists when seq was applied.
  Status Replay(int64_t seq, const Event& e);
  void OnCommit(std::function<void(int64_t)> fn);
  // Retention: drops the oldest events beyond the newest `keep`, in passes of
  // at most kPrunePass rows (a short write lock each), until none is left to
  // drop; with `only_sent` (Kafka configured) only delivered ones. The map
  // tables are the state; the events table is the outbox and recent history,
  // so without this it grows with every change for ever. Returns how many went.
  static constexpr int64_t kPrunePass = 2000;
  Result<int64_t> Prune(int64_t keep, bool only_sent);

 private:
  void Notify(int64_t seq);
  db::Database* db_;
  std::mutex mu_;
  std::vector<std::function<void(int64_t)>> listeners_;
};

}  // namespace ferry::backend
