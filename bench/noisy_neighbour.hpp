// zbench noisy: what one client's backlog does to another client's latency, per queue policy
// (issue 13). Client B calls one request at a time, first alone, then while client A keeps a
// deep window of the same requests in flight; fair queueing should leave B's p99 near alone.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "bench/latency_recorder.hpp"
#include "shared/protocol.hpp"

namespace zbroker::bench {

struct NoisySpec {
    std::string bin_dir;  // where zbroker and zworker are
    std::vector<std::string> policies{"fifo", "fair", "priority"};
    std::size_t workers = 2;
    int threads = 2;  // per worker; one credit setting is this, the other zworker's adaptive one
    std::size_t inflight = 1000;  // client A's window
    std::chrono::milliseconds duration{3000};
    std::chrono::milliseconds warmup{300};
    int sleep_ms = 1;  // the sleep service's job length, for A and B alike
};

// One client's side of a phase: its answers and their latencies.
struct ClientFigures {
    std::uint64_t ok = 0;
    std::map<protocol::Status, std::uint64_t> errors;  // non-200 answers; no_reply if abandoned
    LatencySummary latency;                            // of B's 200 answers only
};

// One configuration: a queue policy and a worker credit, each on a fresh broker and workers.
struct NoisyRow {
    std::string policy;
    std::string credit;  // the number given to zworker, or "default" (adaptive)
    ClientFigures b_alone;
    ClientFigures b_with_a;
    ClientFigures a;
    double a_requests_per_second = 0;      // over B's measured time in the phase with A
    double total_requests_per_second = 0;  // A's and B's together, over the same time

    double ratio() const {
        return b_alone.latency.p99_us > 0 ? b_with_a.latency.p99_us / b_alone.latency.p99_us : 0;
    }
    std::uint64_t error_count() const;
};

// Runs every policy at credit = threads and at the default credit, printing each row to `out`
// as it is measured and a fair / fifo throughput line per credit at the end. Returns the rows.
std::vector<NoisyRow> run_noisy(const NoisySpec& spec, std::ostream& out);

}  // namespace zbroker::bench
