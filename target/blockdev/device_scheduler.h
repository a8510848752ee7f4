// DeviceScheduler: runs the background work of many GatewayBlockDevices (one
// scheduler per target) so that an idle device costs no thread and no CPU.
//
// Promise:
//  - One timer thread with a deadline heap; it sleeps until the earliest
//    deadline (or indefinitely when none is set), never polls.
//  - A Task is a function run on a worker when it is due. WakeAt(t) makes it
//    run at t or earlier (earliest request wins); WakeNow() runs it at once.
//    A task never runs on two threads at once; a wake that arrives while it
//    runs makes it run once more afterwards.
//  - Workers are started on demand (a blocking task, e.g. a connect, never
//    delays another task while fewer than kMaxWorkers run) and exit after
//    kWorkerIdle without work.
//  - Task::Cancel(): no run starts after it returns, and it waits for a run in
//    progress (unless called from that run). Every task must be cancelled
//    before what its function uses is destroyed.
//  - The destructor joins every thread it started.
#pragma once

#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

namespace ferry::blockdev {

class DeviceScheduler {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr size_t kMaxWorkers = 256;
  static constexpr std::chrono::seconds kWorkerIdle{10};

  class Task : public std::enable_shared_from_this<Task> {
   public:
    void WakeAt(Clock::time_point t);
    void WakeNow() { WakeAt(Clock::now()); }
    void Cancel();

   private:
    friend class DeviceScheduler;
    DeviceScheduler* s_ = nullptr;
    std::function<void()> fn_;
    // Guarded by the scheduler's mutex, except the relaxed mirror of due_.
    Clock::time_point due_ = Clock::time_point::max();
    std::atomic<int64_t> due_mirror_{INT64_MAX};
    bool queued_ = false, running_ = false, rerun_ = false, cancelled_ = false;
    std::thread::id runner_;
  };

  DeviceScheduler();
  ~DeviceScheduler();
  DeviceScheduler(const DeviceScheduler&) = delete;
  DeviceScheduler& operator=(const DeviceScheduler&) = delete;

  std::shared_ptr<Task> NewTask(std::function<void()> fn);
  size_t workers() const;

 private:
  struct Entry {
    Clock::time_point t;
    uint64_t seq;
    std::shared_ptr<Task> task;
    bool operator>(const Entry& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  void TimerLoop();
  void WorkerLoop();
  void DispatchLocked(const std::shared_ptr<Task>& t);
  void ReapLocked(std::vector<std::thread>* out);

  mutable std::mutex mu_;
  std::condition_variable timer_cv_, work_cv_, done_cv_;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
  uint64_t seq_ = 0;
  std::deque<std::shared_ptr<Task>> runq_;
  size_t waiting_ = 0;
  std::vector<std::thread> workers_;
  std::vector<std::thread::id> finished_;
  bool stop_ = false;
  std::thread timer_;
};

}  // namespace ferry::blockdev
