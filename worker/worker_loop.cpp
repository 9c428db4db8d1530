// The worker's poll loop, after the zguide's mdwrkapi: input first, then heartbeats and liveness.
#include "worker/worker_loop.hpp"

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

namespace zbroker::detail {

namespace {

static_assert(kDefaultCreditPerThread == AdaptiveCredit::kStartPerHandler,
              "the documented starting credit is the one AdaptiveCredit starts from");

// Bounds every poll so that stop() is noticed promptly even when nothing else happens.
constexpr Millis kMaxPollWait{100};
// Lets the DISCONNECT reach the broker when closing, without ever hanging the close.
constexpr Millis kDisconnectLinger{1000};
// Each Worker has its own context, so this name never collides between workers.
constexpr const char* kResultsEndpoint = "inproc://zbroker-worker-results";
constexpr int kReadBatch = 64;

zmq::socket_t bind_results(zmq::context_t& context) {
    zmq::socket_t results(context, zmq::socket_type::pull);
    results.set(zmq::sockopt::linger, 0);
    results.bind(kResultsEndpoint);
    return results;
}

// A read interrupted by a signal (SIGINT asking us to stop) counts as nothing waiting.
bool receive(zmq::socket_t& socket, Frames& frames) {
    try {
        return recv_frames(socket, frames, zmq::recv_flags::dontwait);
    } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) return false;
        throw;
    }
}

}  // namespace

WorkerLoop::WorkerLoop(zmq::context_t& context, const WorkerOptions& options,
                       const std::vector<Registration>& handlers,
                       const std::atomic<bool>& stop_requested, WorkerCounters& counters)
    : context_(context),
      options_(options),
      handlers_(handlers),
      stop_requested_(stop_requested),
      counters_(counters),
      results_(bind_results(context)),
      pool_(context, kResultsEndpoint, options.threads, counters) {
    const ConnectionTiming timing{options.heartbeat_interval, options.liveness,
                                  options.reconnect_delay};
    connections_.reserve(handlers.size());
    credits_.reserve(handlers.size());
    current_connection_ = std::make_unique<std::atomic<std::uint64_t>[]>(handlers.size());
    for (const Registration& registration : handlers) {
        // An io_thread handler runs one job at a time; pool handlers as many as there are threads.
        const auto handlers_per_job =
            registration.execution == Execution::io_thread ? 1 : options.threads;
        const AdaptiveCredit& credit =
            credits_.emplace_back(static_cast<std::uint32_t>(handlers_per_job));
        const auto announced =
            options.credit > 0 ? static_cast<std::uint32_t>(options.credit) : credit.credit();
        connections_.emplace_back(registration.service, announced, timing);
    }
}

void WorkerLoop::run() {
    const TimePoint start = now();
    for (BrokerConnection& connection : connections_)
        connect(connection, start);

    std::vector<zmq::pollitem_t> items;
    std::vector<std::uint32_t> item_slots;  // the slot of items[i + 1]
    while (true) {
        if (!draining_ && stop_requested_.load()) begin_stopping(now());
        if (draining_ && jobs_in_flight_ == 0 && stop_settled(now())) break;

        items.clear();
        item_slots.clear();
        items.push_back({results_.handle(), 0, ZMQ_POLLIN, 0});
        for (std::uint32_t slot = 0; slot < connections_.size(); ++slot) {
            if (!connections_[slot].connected()) continue;
            items.push_back({connections_[slot].socket().handle(), 0, ZMQ_POLLIN, 0});
            item_slots.push_back(slot);
        }
        try {
            zmq::poll(items, poll_timeout(now()));
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
            continue;  // a signal: go round and look at the stop flag
        }
        if ((items[0].revents & ZMQ_POLLIN) != 0) read_results();
        for (std::size_t i = 0; i < item_slots.size(); ++i) {
            if ((items[i + 1].revents & ZMQ_POLLIN) != 0) read_broker(item_slots[i]);
        }
        if (options_.credit == 0 && !draining_) adapt_credit();
        flush_replies();  // what this round produced, one message per service socket
        run_timers(now());
        publish_connections();
    }

    std::size_t disconnected = 0;
    for (BrokerConnection& connection : connections_) {
        if (!connection.connected()) continue;
        connection.disconnect(kDisconnectLinger);
        ++disconnected;
    }
    spdlog::info("stopped: sent DISCONNECT on {} of {} service socket(s)", disconnected,
                 connections_.size());
}

void WorkerLoop::read_broker(std::uint32_t slot) {
    for (int i = 0; i < kReadBatch; ++i) {
        // A DISCONNECT closes the socket: stop reading it.
        if (!connections_[slot].connected()) return;
        if (!receive(connections_[slot].socket(), incoming_)) return;
        on_broker_message(slot, incoming_);
    }
}

void WorkerLoop::read_results() {
    for (int i = 0; i < kReadBatch; ++i) {
        if (!receive(results_, incoming_)) return;
        on_result(incoming_);
    }
}

void WorkerLoop::on_broker_message(std::uint32_t slot, Frames& frames) {
    BrokerConnection& connection = connections_[slot];
    const TimePoint arrived = now();
    connection.heard_from_broker(arrived);
    const char* problem = nullptr;
    if (!wire::parse(frames, 0, records_, problem)) {
        ++counters_.malformed;
        spdlog::warn("ignoring a malformed message from the broker on '{}' ({}): {}",
                     connection.service(), problem, describe(frames));
        return;
    }
    io_thread_jobs_ = 0;
    for (const wire::Record& record : records_) {
        switch (record.command) {
            case wire::Command::job:
                on_job(slot, frames, record);
                break;
            case wire::Command::heartbeat:
                break;
            case wire::Command::credit:
                connection.on_credit_echo(record.credit);
                break;
            case wire::Command::disconnect:
                connection.drop(now());
                if (draining_) {
                    spdlog::info("broker sent DISCONNECT on '{}' while stopping",
                                 connection.service());
                } else {
                    spdlog::warn("broker sent DISCONNECT on '{}': reconnecting in {} ms",
                                 connection.service(), options_.reconnect_delay.count());
                }
                return;  // the rest belongs to a session that is over
            case wire::Command::request:
            case wire::Command::answer:
            case wire::Command::ready:
            case wire::Command::reply:
                ++counters_.malformed;
                spdlog::warn("ignoring a {} record from the broker on '{}': only workers send it",
                             wire::command_name(record.command), connection.service());
                break;
        }
    }
    if (io_thread_jobs_ > 0) {
        // Timed per message, not per job: two clock reads per microsecond job were an eighth
        // of the worker's time.
        credits_[slot].ran((now() - arrived) / io_thread_jobs_);
    }
}

void WorkerLoop::on_job(std::uint32_t slot, Frames& frames, const wire::Record& record) {
    BrokerConnection& connection = connections_[slot];
    // A job the broker sent before it read our CREDIT 0 is run all the same: dropping it would
    // cost the request an attempt. The broker echoes CREDIT 0, and nothing follows the echo.
    const Registration& registration = handlers_[slot];
    if (registration.execution == Execution::io_thread) {
        inline_body_.clear();
        wire::move_body(frames, record.body, inline_body_);
        Request request{registration.service, inline_body_};
        Reply reply = run_handler(registration.handler, request, counters_);
        ++io_thread_jobs_;
        connection.reply(record.token, reply.body);
        return;
    }
    Job job;
    job.origin = {slot, connection.id()};
    job.current_connection = &current_connection_[slot];
    job.handler = &registration.handler;
    job.service = registration.service;  // outlives the pool, unlike the connection
    job.token = zmq::message_t(record.token.data(), record.token.size());
    wire::move_body(frames, record.body, job.body);
    pool_.submit(std::move(job));
    ++jobs_in_flight_;
}

void WorkerLoop::on_result(Frames& frames) {
    std::optional<JobResult> result = decode_result(frames);
    if (!result) {
        spdlog::error("ignoring a malformed result from a handler thread: {}", describe(frames));
        return;
    }
    --jobs_in_flight_;
    const JobOrigin& origin = result->head.origin;
    if (origin.slot >= connections_.size()) return;
    BrokerConnection& connection = connections_[origin.slot];
    if (result->head.skipped) {
        ++counters_.skipped_jobs;
        spdlog::info(
            "skipped a job for '{}': its connection to the broker was replaced before "
            "it started",
            connection.service());
        return;
    }
    credits_[origin.slot].ran(std::chrono::nanoseconds(result->head.ran_for_ns));
    if (!connection.connected() || connection.id() != origin.connection_id) {
        // The broker has already given this request to another worker, or will.
        ++counters_.dropped_replies;
        spdlog::info("dropping a reply for '{}': its connection to the broker was replaced",
                     connection.service());
        return;
    }
    connection.reply(view(result->token), result->body);
}

void WorkerLoop::flush_replies() {
    for (BrokerConnection& connection : connections_) {
        std::size_t dropped = 0;
        if (connection.flush(dropped)) continue;
        counters_.dropped_replies += dropped;
        spdlog::warn("dropping {} reply(s) for '{}': the queue to the broker is full", dropped,
                     connection.service());
    }
}

void WorkerLoop::adapt_credit() {
    for (std::size_t slot = 0; slot < connections_.size(); ++slot) {
        if (const std::uint32_t credit = credits_[slot].change()) {
            connections_[slot].change_credit(credit);
            spdlog::debug("credit for '{}' is now {}", connections_[slot].service(), credit);
        }
    }
}

void WorkerLoop::publish_connections() {
    for (std::size_t slot = 0; slot < connections_.size(); ++slot) {
        const BrokerConnection& connection = connections_[slot];
        current_connection_[slot].store(connection.connected() ? connection.id() : 0,
                                        std::memory_order_relaxed);
    }
}

void WorkerLoop::begin_stopping(TimePoint at) {
    draining_ = true;
    stop_began_ = at;
    // At once, not after the jobs in hand: every job the broker sent meanwhile would be refused
    // and cost its request an attempt.
    for (BrokerConnection& connection : connections_)
        connection.stop_taking_work();
    spdlog::info("stopping: told the broker to send nothing more; finishing {} job(s) in hand",
                 jobs_in_flight_);
}

bool WorkerLoop::stop_settled(TimePoint at) const {
    // Until the broker has echoed CREDIT 0, a job may still be on its way. A broker that never
    // echoes (gone, or its queue to us full) is waited for one liveness period, no longer.
    if (at - stop_began_ >= options_.heartbeat_interval * options_.liveness) return true;
    return std::all_of(connections_.begin(), connections_.end(),
                       [](const BrokerConnection& connection) {
                           return !connection.connected() || connection.stop_acknowledged();
                       });
}

void WorkerLoop::run_timers(TimePoint at) {
    for (BrokerConnection& connection : connections_) {
        if (connection.broker_expired(at)) {
            const auto silence = options_.heartbeat_interval * options_.liveness;
            connection.drop(at);
            if (draining_) {
                spdlog::warn("broker silent for {} ms on '{}' while stopping", silence.count(),
                             connection.service());
            } else {
                spdlog::warn("broker silent for {} ms on '{}': reconnecting in {} ms",
                             silence.count(), connection.service(),
                             options_.reconnect_delay.count());
            }
            continue;
        }
        if (!draining_ && connection.reconnect_due(at)) {
            ++counters_.reconnects;
            connect(connection, at);
            continue;
        }
        connection.send_heartbeat_if_due(at);
    }
}

void WorkerLoop::connect(BrokerConnection& connection, TimePoint at) {
    connection.connect(context_, options_.endpoint, next_connection_id_++, at, options_.curve);
    publish_connections();
    spdlog::debug("sent READY for '{}' to {}", connection.service(), options_.endpoint);
}

Millis WorkerLoop::poll_timeout(TimePoint at) const {
    TimePoint next = at + kMaxPollWait;
    for (const BrokerConnection& connection : connections_) {
        // Once stopping, a dropped connection is never reopened: its timer does not count.
        if (draining_ && !connection.connected()) continue;
        next = std::min(next, connection.next_timer());
    }
    return std::max(Millis{0}, std::chrono::ceil<Millis>(next - at));
}

}  // namespace zbroker::detail
