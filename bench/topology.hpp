// Brokers and workers that zbench starts itself, as processes on ephemeral loopback ports.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench/process_cpu.hpp"
#include "client/client.hpp"
#include "shared/child_process.hpp"

namespace zbroker::bench {

struct TopologySpec {
    std::string bin_dir;  // where zbroker and zworker are
    std::size_t workers = 2;
    int credit = 0;  // per worker; 0 lets zworker choose
    std::string service = "echo";
    int threads = 0;                       // handler threads per worker; 0 lets zworker choose
    std::vector<std::string> broker_args;  // e.g. --queue-policy fair
    std::size_t brokers = 1;               // every worker attaches to all of them
};

class Topology {
  public:
    // Starts everything and returns once every worker has registered with every broker.
    explicit Topology(const TopologySpec& spec);

    // The brokers' endpoints, comma-separated: what a client is given.
    const std::string& endpoint() const noexcept { return endpoint_list_; }
    const std::vector<std::string>& endpoints() const noexcept { return endpoints_; }
    std::size_t broker_count() const noexcept { return brokers_.size(); }
    CpuSubjects cpu_subjects() const;

    // Sends `signo` to broker `index` and reaps it: its exit status (128 + signal when killed),
    // or nullopt when it is still running after `patience` (it is then left running).
    std::optional<int> stop_broker(std::size_t index, int signo,
                                   std::chrono::milliseconds patience);
    // Starts broker `index` again, on the endpoint it had, and returns once it listens. The
    // port may be taken for a moment (a connection in TIME_WAIT, or an ephemeral port of
    // another connection): it tries again for up to kStartPatience.
    void restart_broker(std::size_t index);
    // The output of broker `index` so far, for error messages.
    std::string broker_output(std::size_t index) const { return brokers_[index].output(); }

  private:
    std::string bin_dir_;
    std::vector<std::string> broker_args_;
    std::vector<ChildProcess> brokers_;
    std::vector<std::string> endpoints_;
    std::string endpoint_list_;
    std::vector<ChildProcess> workers_;
};

// What a broker's mmi.services says of one service.
struct ServiceFigures {
    int workers = 0;           // registered now
    std::uint64_t served = 0;  // requests answered by its workers since the broker started
};

// Asks mmi.services through `client`; nullopt when no answer came within `timeout`. A service
// the broker does not know (yet) has zero figures.
std::optional<ServiceFigures> service_figures(Client& client, const std::string& service,
                                              std::chrono::milliseconds timeout);

// Workers the broker reports for `service` through mmi.services, or -1 if it does not answer.
int registered_workers(const std::string& endpoint, const std::string& service);

}  // namespace zbroker::bench
