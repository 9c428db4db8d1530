// A broker and workers that zbench starts itself, as processes on an ephemeral loopback port.
#pragma once

#include <string>
#include <vector>

#include "shared/child_process.hpp"

namespace zbroker::bench {

struct TopologySpec {
    std::string bin_dir;  // where zbroker and zworker are
    std::size_t workers = 2;
    int credit = 0;  // per worker; 0 lets zworker choose
    std::string service = "echo";
    int threads = 0;                       // handler threads per worker; 0 lets zworker choose
    std::vector<std::string> broker_args;  // e.g. --queue-policy fair
};

class Topology {
  public:
    // Starts everything and returns once every worker has registered with the broker.
    explicit Topology(const TopologySpec& spec);
    const std::string& endpoint() const noexcept { return broker_.second; }

  private:
    std::pair<ChildProcess, std::string> broker_;  // and its endpoint
    std::vector<ChildProcess> workers_;
};

// Workers the broker reports for `service` through mmi.services, or -1 if it does not answer.
int registered_workers(const std::string& endpoint, const std::string& service);

}  // namespace zbroker::bench
