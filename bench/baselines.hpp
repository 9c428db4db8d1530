// What zbroker is measured against in the same run: the same load with no broker (a direct
// echo server), and through a featureless ROUTER-to-ROUTER relay with no protocol logic.
// Both answer in the ZBC01 format, so one client drives all three targets.
//
// Every baseline runs as separate processes, zbench re-executing itself with a hidden
// subcommand (baseline_servers.hpp), because that is how zbroker is measured: the broker is a
// process of its own and each zworker another, each with its own ZeroMQ context and I/O thread.
// Run as threads of zbench, the baselines shared the client's process, and the relay's echo
// workers shared the relay's one I/O thread: fewer processes and threads to schedule on the same
// cores than zbroker gets, which flattered them on small messages.
#pragma once

#include <string>
#include <vector>

#include "shared/child_process.hpp"

namespace zbroker::bench {

// The direct echo server's process; returns once it listens.
class DirectEchoServer {
  public:
    // `zbench` is the path of this very program.
    explicit DirectEchoServer(const std::string& zbench);
    const std::string& endpoint() const noexcept { return endpoint_; }

  private:
    ChildProcess server_;
    std::string endpoint_;
};

// The relay's process and one process per echo worker, as many as zbroker gets; returns once
// every echo worker has said hello to the relay.
class FeaturelessRelay {
  public:
    FeaturelessRelay(const std::string& zbench, std::size_t workers);
    const std::string& endpoint() const noexcept { return endpoint_; }

  private:
    ChildProcess relay_;
    std::string endpoint_;
    std::vector<ChildProcess> workers_;
};

}  // namespace zbroker::bench
