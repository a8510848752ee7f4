#include "target/blockdev/device_scheduler.h"

#include <algorithm>
#include <system_error>

namespace ferry::blockdev {

namespace {
int64_t Ns(DeviceScheduler::Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace

DeviceScheduler::DeviceScheduler() { timer_ = std::thread([this] { TimerLoop(); }); }

DeviceScheduler::~DeviceScheduler() {
  std::vector<std::thread> all;
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  timer_cv_.notify_all();
  work_cv_.notify_all();
  timer_.join();
  {
    std::unique_lock<std::mutex> l(mu_);
    all.swap(workers_);
  }
  for (auto& t : all) t.join();
}

std::shared_ptr<DeviceScheduler::Task> DeviceScheduler::NewTask(std::function<void()> fn) {
  auto t = std::make_shared<Task>();
  t->s_ = this;
  t->fn_ = std::move(fn);
  return t;
}

size_t DeviceScheduler::workers() const {
  std::lock_guard<std::mutex> l(mu_);
  return workers_.size() - finished_.size();
}

void DeviceScheduler::Task::WakeAt(Clock::time_point t) {
  // Fast path (every request issues one): a run at or before t is already set.
  if (due_mirror_.load(std::memory_order_acquire) <= Ns(t)) return;
  DeviceScheduler* s = s_;
  bool earliest;
  {
    std::lock_guard<std::mutex> l(s->mu_);
    if (cancelled_ || t >= due_) return;
    due_ = t;
    due_mirror_.store(Ns(t), std::memory_order_release);
    earliest = s->heap_.empty() || t < s->heap_.top().t;
    s->heap_.push(Entry{t, ++s->seq_, shared_from_this()});
  }
  if (earliest) s->timer_cv_.notify_one();
}

void DeviceScheduler::Task::Cancel() {
  DeviceScheduler* s = s_;
  std::unique_lock<std::mutex> l(s->mu_);
  cancelled_ = true;
  due_ = Clock::time_point::max();
  due_mirror_.store(INT64_MIN);  // every WakeAt takes the fast path: nothing more is scheduled
  if (queued_) {
    auto& q = s->runq_;
    q.erase(std::remove_if(q.begin(), q.end(), [this](const std::shared_ptr<Task>& p) { return p.get() == this; }),
            q.end());
    queued_ = false;
  }
  if (runner_ == std::this_thread::get_id()) return;
  s->done_cv_.wait(l, [this] { return !running_; });
}

void DeviceScheduler::TimerLoop() {
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    if (heap_.empty()) {
      timer_cv_.wait(l);
      continue;
    }
    auto t = heap_.top().t;
    if (Clock::now() < t) {
      timer_cv_.wait_until(l, t);
      continue;
    }
    Entry e = heap_.top();
    heap_.pop();
    auto task = e.task;
    if (!task || task->cancelled_ || task->due_ != e.t) continue;  // superseded
    task->due_ = Clock::time_point::max();
    task->due_mirror_.store(INT64_MAX, std::memory_order_release);
    DispatchLocked(task);
  }
}

// Called with mu_ held: queue the task for a worker, or mark it to run again
// when it is running now.
void DeviceScheduler::DispatchLocked(const std::shared_ptr<Task>& t) {
  if (t->running_) {
    t->rerun_ = true;
    return;
  }
  if (t->queued_) return;
  t->queued_ = true;
  runq_.push_back(t);
  if (waiting_ >= runq_.size()) {
    work_cv_.notify_one();
    return;
  }
  std::vector<std::thread> dead;
  ReapLocked(&dead);
  bool started = false;
  if (workers_.size() < kMaxWorkers) {
    try {
      workers_.emplace_back([this] { WorkerLoop(); });
      started = true;
    } catch (const std::system_error&) {
      // Out of threads: the task waits in the queue for a running worker
      // (or the next dispatch that can start one) instead of killing the process.
    }
  }
  if (!started) work_cv_.notify_one();  // all busy: it waits in the queue
  // Joining exited workers cannot block: they have left WorkerLoop.
  for (auto& d : dead) d.join();
}

// Moves the threads of workers that have exited out of workers_ (mu_ held).
void DeviceScheduler::ReapLocked(std::vector<std::thread>* out) {
  for (auto id : finished_) {
    auto it = std::find_if(workers_.begin(), workers_.end(), [id](const std::thread& t) { return t.get_id() == id; });
    if (it != workers_.end()) {
      out->push_back(std::move(*it));
      workers_.erase(it);
    }
  }
  finished_.clear();
}

void DeviceScheduler::WorkerLoop() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    if (!runq_.empty()) {
      auto t = std::move(runq_.front());
      runq_.pop_front();
      t->queued_ = false;
      t->running_ = true;
      t->runner_ = std::this_thread::get_id();
      l.unlock();
      t->fn_();
      l.lock();
      t->running_ = false;
      t->runner_ = std::thread::id();
      if (t->rerun_ && !t->cancelled_) {
        t->rerun_ = false;
        t->queued_ = true;
        runq_.push_back(t);
      }
      t->rerun_ = false;
      done_cv_.notify_all();
      continue;
    }
    if (stop_) return;
    ++waiting_;
    bool work = work_cv_.wait_for(l, kWorkerIdle, [this] { return stop_ || !runq_.empty(); });
    --waiting_;
    if (!work) {
      if (stop_ || !runq_.empty()) continue;
      finished_.push_back(std::this_thread::get_id());
      return;
    }
  }
}

}  // namespace ferry::blockdev
