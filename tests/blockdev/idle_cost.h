// Idle-cost probes for this process: thread count (/proc/self/task) and CPU
// time consumed (getrusage RUSAGE_SELF, user + system). Used by the idle-cost
// tool and test.
#pragma once

#include <dirent.h>
#include <sys/resource.h>

#include <cstdint>

namespace ferry::blockdev::testing {

inline int ThreadCount() {
  DIR* d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n;
}

// CPU seconds (user + system) used by this process so far.
inline double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

}  // namespace ferry::blockdev::testing
