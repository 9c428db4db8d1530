// CPU time (user + system) that processes have used, from /proc/<pid>/stat.
#pragma once

#include <sys/types.h>

#include <vector>

#include "shared/child_process.hpp"

namespace zbroker::bench {

// Seconds of CPU used by these processes so far, all their threads together; a process that
// has gone counts as 0. Resolution: one clock tick (usually 10 ms).
double cpu_seconds(const std::vector<pid_t>& pids);

std::vector<pid_t> pids_of(const std::vector<ChildProcess>& processes);

// The processes whose CPU a point reports (--cpu): the broker, or the relay, in the middle, and
// the workers behind it.
struct CpuSubjects {
    std::vector<pid_t> middle;
    std::vector<pid_t> workers;
};

}  // namespace zbroker::bench
