// CPU time (user + system) that processes have used, from /proc/<pid>/stat.
#pragma once

#include <sys/types.h>

#include <vector>

namespace zbroker::bench {

// Seconds of CPU used by these processes so far, all their threads together; a process that
// has gone counts as 0. Resolution: one clock tick (usually 10 ms).
double cpu_seconds(const std::vector<pid_t>& pids);

}  // namespace zbroker::bench
