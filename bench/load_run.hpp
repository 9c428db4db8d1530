// One benchmark point: C client threads, each an AsyncClient keeping W requests in flight.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "bench/latency_recorder.hpp"
#include "shared/protocol.hpp"

namespace zbroker::bench {

struct LoadSpec {
    std::string endpoint;  // several brokers: comma-separated
    std::string service = "echo";
    std::size_t clients = 1;
    std::size_t inflight = 1;    // per client; 1 is the sync mode
    std::size_t size = 32;       // request body bytes
    std::uint64_t requests = 0;  // per point, over all clients; 0 means run for `duration`
    std::chrono::milliseconds duration{2000};
    std::chrono::milliseconds warmup{300};
    std::chrono::milliseconds reply_timeout{10'000};  // a request unanswered this long is lost
};

struct LoadResult {
    std::uint64_t sent = 0;
    std::uint64_t ok = 0;
    std::map<protocol::Status, std::uint64_t> errors;  // non-200 answers, and no_reply
    double seconds = 0;
    LatencySummary latency;
    std::uint64_t answered_all = 0;  // warm-up included: what the processes did over the run

    double requests_per_second() const {
        return seconds > 0 ? static_cast<double>(ok) / seconds : 0;
    }
    std::uint64_t answered() const;
};

// Where a run stands, reported a few times a second by the thread that waits for it.
struct LoadProgress {
    bool warming_up = false;
    double elapsed_s = 0;              // in the current phase (warm-up or measured)
    double total_s = 0;                // the phase's length; 0 when the run is sized by count
    std::uint64_t done = 0;            // requests answered, warm-up included
    std::uint64_t total_requests = 0;  // the run's size; 0 when it is timed
    double requests_per_second = 0;    // answers since the last report, per second
};
using ProgressCallback = std::function<void(const LoadProgress&)>;

// Runs the warm-up, then the measured phase; every request sent is answered or counted lost.
// `on_progress` is called about every 200 ms from the calling thread, never from the threads
// that send and receive.
LoadResult run_load(const LoadSpec& spec, const ProgressCallback& on_progress = {});

}  // namespace zbroker::bench
