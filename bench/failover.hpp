// zbench failover (issue 12): several brokers, one after another killed (or drained) and
// restarted while clients keep requests in flight through all of them. What the clients saw
// (every answer, resends, latency overall and of the requests a kill caught in flight), and how
// soon each restarted broker had its workers back and took its share of the load.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "bench/latency_recorder.hpp"
#include "shared/protocol.hpp"

namespace zbroker::bench {

// The targets, stated for the products' default heartbeat (2500 ms).
inline constexpr std::chrono::milliseconds kCaughtP999Target{2'000};
inline constexpr std::chrono::milliseconds kShareTarget{5'000};  // two heartbeat intervals

struct FailoverSpec {
    std::string bin_dir;  // where zbroker and zworker are
    std::string service = "echo";
    std::size_t brokers = 3;
    std::size_t workers = 2;     // zworker processes, each attached to every broker
    std::size_t clients = 2;     // AsyncClient connections, a thread each, given every broker
    std::size_t inflight = 100;  // per client
    std::size_t size = 32;       // request body bytes
    std::chrono::milliseconds duration{20'000};
    // The next broker, round robin, as long as its restart comes before the end of the load.
    std::chrono::milliseconds kill_every{4'000};
    std::chrono::milliseconds down_for{1'000};  // from the signal to the restart
    bool drain = false;                         // SIGTERM (a drain) instead of SIGKILL
};

// One broker stopped and started again. Times after the restart are from the moment its
// process was started; nullopt when it did not happen before the run ended.
struct Restart {
    std::size_t broker = 0;
    std::string endpoint;
    double stopped_at_s = 0;     // the signal, from the start of the load
    double exited_after_ms = 0;  // signal to exit: a drain takes as long as what it held
    std::uint64_t caught = 0;    // requests sent before the signal and answered after it
    double caught_max_ms = 0;    // the slowest of them
    double restarted_at_s = 0;
    double listening_ms = 0;
    std::optional<double> first_worker_ms;  // mmi.services shows a worker of the service
    std::optional<double> all_workers_ms;   // ... every worker
    std::optional<double> first_served_ms;  // ... a request served
    // The end of the first 100 ms (at least) over which it served at least half of its share
    // (1 / brokers) of all the answers the clients got: so never much under 1st served + 100.
    std::optional<double> share_ms;
    double watched_ms = 0;  // from the restart to the end of the load: what could be seen

    // Whether it took its share within kShareTarget; nullopt when the load ended too soon to
    // tell.
    std::optional<bool> share_in_time() const;
};

struct FailoverResult {
    std::uint64_t sent = 0;
    std::map<protocol::Status, std::uint64_t> answers;  // by status, 200 included
    std::uint64_t no_reply = 0;  // still unanswered long after the load stopped
    std::uint64_t resent = 0;    // sent again through another broker, by the clients
    double seconds = 0;
    LatencySummary all;     // of the 200 answers
    LatencySummary caught;  // of the 200 answers to requests a stop caught in flight
    std::uint64_t caught_count = 0;
    std::vector<Restart> restarts;

    std::uint64_t ok() const;
    std::uint64_t failed() const;  // answers other than 200, and no reply
};

// Runs it, printing each stop and restart as it happens and then the report, to `out`.
FailoverResult run_failover(const FailoverSpec& spec, std::ostream& out);
void write_failover_json(const std::string& path, const FailoverSpec& spec,
                         const FailoverResult& result);

}  // namespace zbroker::bench
