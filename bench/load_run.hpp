// One benchmark point: C client threads, each an AsyncClient keeping W requests in flight.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "bench/latency_recorder.hpp"
#include "shared/protocol.hpp"

namespace zbroker::bench {

struct LoadSpec {
    std::string endpoint;
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

    double requests_per_second() const {
        return seconds > 0 ? static_cast<double>(ok) / seconds : 0;
    }
    std::uint64_t answered() const;
};

// Runs the warm-up, then the measured phase; every request sent is answered or counted lost.
LoadResult run_load(const LoadSpec& spec);

}  // namespace zbroker::bench
