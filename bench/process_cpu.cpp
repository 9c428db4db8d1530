// Reads utime and stime, fields 14 and 15 of /proc/<pid>/stat, counted after the command name.
#include "process_cpu.hpp"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace zbroker::bench {
namespace {

double cpu_seconds(pid_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return 0;
    const auto name_end = line.rfind(')');  // the name may hold spaces and parentheses
    if (name_end == std::string::npos) return 0;
    std::istringstream fields(line.substr(name_end + 2));
    std::string skipped;
    for (int field = 3; field < 14; ++field)  // state (3) to cmajflt (13)
        fields >> skipped;
    unsigned long long user = 0, system = 0;
    if (!(fields >> user >> system)) return 0;
    return static_cast<double>(user + system) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

}  // namespace

double cpu_seconds(const std::vector<pid_t>& pids) {
    double total = 0;
    for (const pid_t pid : pids)
        total += cpu_seconds(pid);
    return total;
}

std::vector<pid_t> pids_of(const std::vector<ChildProcess>& processes) {
    std::vector<pid_t> pids;
    for (const ChildProcess& process : processes)
        pids.push_back(process.pid());
    return pids;
}

}  // namespace zbroker::bench
