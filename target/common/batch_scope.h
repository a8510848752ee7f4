// BatchScope: lets the sending side of a data path hold its system calls back
// while the current thread works through a batch (the PDUs of one recv(), the
// NBD replies of one recv()), so what the batch produced leaves in one
// sendmsg()/writev() per socket instead of one per request. The same idea as
// the Linux block layer's per-task plug.
//
// Promise:
//  - While a BatchScope object lives on a thread, Current() on that thread
//    returns the innermost one; on every other thread it is unaffected.
//    Nothing is shared between threads: the only state outside the objects is
//    one thread_local pointer to the innermost live scope (like errno).
//  - Defer(key, fn) registers fn once per key (a second call with the same
//    key returns false and drops its fn). Flush() and the destructor run every
//    registered fn once, in registration order, on the scope's thread; work a
//    fn defers meanwhile runs in the same Flush().
//  - A scope never delays work past its own end: code that is about to block
//    calls Flush() first.
#pragma once

#include <functional>
#include <utility>
#include <vector>

namespace ferry {

class BatchScope {
 public:
  BatchScope();
  ~BatchScope();
  BatchScope(const BatchScope&) = delete;
  BatchScope& operator=(const BatchScope&) = delete;

  // The innermost scope alive on the calling thread, or nullptr.
  static BatchScope* Current();

  bool Defer(const void* key, std::function<void()> fn);
  void Flush();

 private:
  BatchScope* outer_;
  std::vector<std::pair<const void*, std::function<void()>>> work_;
};

}  // namespace ferry
