// What zbroker is measured against in the same run:
// - the direct echo server (no broker, no hop), driven by the minimal client: the floor, the
//   most a client on this machine gets; and driven by zbench's own client: the client check,
//   which must reach 0.9x the floor, or zbench, not the target, limits the run;
// - the plain relay: ROUTER to ROUTER, round robin over echo workers, frames passed through
//   untouched, as a user writes it from the zguide's lbbroker: a broker's two hops without any
//   of its work, driven by the minimal client with one body frame per request (`relay`), or
//   with the frames of a 7/MDP client (`relay-mdp`);
// - the bare 7/MDP broker: the same client and workers as `mdp` through the least a Majordomo
//   broker can do, translation without state (`mdp-bare`): what 7/MDP itself costs;
// - zbroker over 7/MDP: the minimal client with 7/MDP frames, through zbroker, to bare 7/MDP
//   echo workers (`mdp`), beside `relay-mdp` and `mdp-bare`.
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

#include "bench/process_cpu.hpp"
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
    CpuSubjects cpu_subjects() const { return {{relay_.pid()}, pids_of(workers_)}; }

  private:
    ChildProcess relay_;
    std::string endpoint_;
    std::vector<ChildProcess> workers_;
};

// The bare 7/MDP broker's process and `workers` bare 7/MDP echo workers for `service`, each
// announcing `credit`; returns once every worker has said READY.
class BareMdpBroker {
  public:
    BareMdpBroker(const std::string& zbench, std::size_t workers, int credit,
                  const std::string& service);
    const std::string& endpoint() const noexcept { return endpoint_; }
    CpuSubjects cpu_subjects() const { return {{broker_.pid()}, pids_of(workers_)}; }

  private:
    ChildProcess broker_;
    std::string endpoint_;
    std::vector<ChildProcess> workers_;
};

// A zbroker of its own (from `bin_dir`) with `workers` bare 7/MDP echo workers for `service`,
// each announcing `credit`; returns once the broker lists them all.
class MdpEchoTopology {
  public:
    MdpEchoTopology(const std::string& zbench, const std::string& bin_dir, std::size_t workers,
                    int credit, const std::string& service);
    const std::string& endpoint() const noexcept { return broker_.second; }
    CpuSubjects cpu_subjects() const { return {{broker_.first.pid()}, pids_of(workers_)}; }

  private:
    std::pair<ChildProcess, std::string> broker_;  // and its endpoint
    std::vector<ChildProcess> workers_;
};

}  // namespace zbroker::bench
