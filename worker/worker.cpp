// Worker: validates options and handlers, then hands them to a WorkerLoop for one run().
#include "worker/worker.hpp"

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

#include "worker/worker_loop.hpp"

namespace zbroker {

namespace {

void require(bool condition, const std::string& message) {
    if (!condition) throw std::invalid_argument(message);
}

}  // namespace

Worker::Worker(WorkerOptions options) : options_(std::move(options)) {
    require(!options_.endpoints.empty(),
            "WorkerOptions.endpoints is empty: give at least one broker address");
    for (std::size_t i = 0; i < options_.endpoints.size(); ++i) {
        const std::string& endpoint = options_.endpoints[i];
        require(!endpoint.empty(), "WorkerOptions.endpoints[" + std::to_string(i) +
                                       "] is empty: give a broker address (e.g. tcp://host:5555)");
        // Twice the same broker would make two sessions there, each with a share of the credit.
        const auto first =
            std::find(options_.endpoints.begin(), options_.endpoints.end(), endpoint);
        require(first == options_.endpoints.begin() + static_cast<std::ptrdiff_t>(i),
                "WorkerOptions.endpoints lists '" + endpoint + "' twice: give each broker once");
    }
    require(options_.threads >= 1, "WorkerOptions.threads is " + std::to_string(options_.threads) +
                                       ": a worker needs at least one handler thread");
    require(options_.credit >= 0, "WorkerOptions.credit is " + std::to_string(options_.credit) +
                                      ": use 0 (as many as threads) or a positive number");
    require(options_.heartbeat_interval.count() > 0,
            "WorkerOptions.heartbeat_interval must be positive, got " +
                std::to_string(options_.heartbeat_interval.count()) + " ms");
    require(options_.liveness >= 1,
            "WorkerOptions.liveness is " + std::to_string(options_.liveness) +
                ": the broker may be silent for at least one heartbeat interval");
    require(options_.reconnect_delay.count() >= 0,
            "WorkerOptions.reconnect_delay must not be negative, got " +
                std::to_string(options_.reconnect_delay.count()) + " ms");
    require(options_.recent_replies >= 0,
            "WorkerOptions.recent_replies is " + std::to_string(options_.recent_replies) +
                ": use 0 (off) or how many replies to keep per service");
}

Worker::~Worker() = default;

void Worker::handle(std::string service, Handler handler, Execution execution) {
    if (started_) throw std::logic_error("Worker::handle('" + service + "') after run() started");
    require(!service.empty(), "a service name must not be empty");
    require(service.size() <= protocol::kMaxServiceNameSize,
            "service name of " + std::to_string(service.size()) +
                " bytes: the broker takes names of at most 255");
    require(!protocol::is_mmi(service),
            "service '" + service + "' is reserved: names starting with mmi. belong to the broker");
    require(static_cast<bool>(handler), "the handler for service '" + service + "' is empty");
    for (const auto& registered : handlers_) {
        require(registered.service != service, "service '" + service + "' is registered twice");
    }
    handlers_.push_back({std::move(service), std::move(handler), execution});
}

void Worker::run() {
    if (handlers_.empty()) throw std::logic_error("Worker::run() with no service: call handle()");
    if (started_.exchange(true)) throw std::logic_error("Worker::run() called a second time");
    detail::WorkerLoop loop(context_, options_, handlers_, stop_requested_, counters_);
    loop.run();
}

void Worker::stop() noexcept {
    stop_requested_.store(true);
}

WorkerStats Worker::stats() const {
    WorkerStats stats;
    stats.served = counters_.served.load();
    stats.failed = counters_.failed.load();
    stats.reconnects = counters_.reconnects.load();
    stats.malformed = counters_.malformed.load();
    stats.refused_jobs = counters_.refused_jobs.load();
    stats.dropped_replies = counters_.dropped_replies.load();
    stats.skipped_jobs = counters_.skipped_jobs.load();
    stats.duplicates_skipped = counters_.duplicates_skipped.load();
    stats.most_held = counters_.most_held.load();
    return stats;
}

}  // namespace zbroker
