// The worker's poll loop, after the zguide's mdwrkapi: input first, then heartbeats and liveness.
#include "worker/worker_loop.hpp"

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

namespace zbroker::detail {

using protocol::WorkerCommand;

namespace {

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
    const int credit = options.credit > 0 ? options.credit : options.threads;
    const ConnectionTiming timing{options.heartbeat_interval, options.liveness,
                                  options.reconnect_delay};
    connections_.reserve(handlers.size());
    for (const Registration& registration : handlers)
        connections_.emplace_back(registration.service, credit, timing);
}

void WorkerLoop::run() {
    const TimePoint start = now();
    for (BrokerConnection& connection : connections_)
        connect(connection, start);

    std::vector<zmq::pollitem_t> items;
    std::vector<std::uint32_t> item_slots;  // the slot of items[i + 1]
    while (true) {
        if (!draining_ && stop_requested_.load()) {
            draining_ = true;
            spdlog::info("stopping: finishing {} job(s) in hand, accepting no new ones",
                         jobs_in_flight_);
        }
        if (draining_ && jobs_in_flight_ == 0) break;

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
        run_timers(now());
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
    connection.heard_from_broker(now());
    const BrokerMessage message = parse_broker_message(frames);
    if (!message.command) {
        ++counters_.malformed;
        spdlog::warn("ignoring a malformed message from the broker on '{}' ({}): {}",
                     connection.service(), message.problem, describe(frames));
        return;
    }
    switch (*message.command) {
        case WorkerCommand::request:
            on_request(slot, frames);
            return;
        case WorkerCommand::heartbeat:
            return;
        case WorkerCommand::disconnect:
            connection.drop(now());
            if (draining_) {
                spdlog::info("broker sent DISCONNECT on '{}' while stopping", connection.service());
            } else {
                spdlog::warn("broker sent DISCONNECT on '{}': reconnecting in {} ms",
                             connection.service(), options_.reconnect_delay.count());
            }
            return;
        case WorkerCommand::ready:
        case WorkerCommand::reply:
            return;  // parse_broker_message() reports these as malformed
    }
}

void WorkerLoop::on_request(std::uint32_t slot, Frames& frames) {
    BrokerConnection& connection = connections_[slot];
    // The flag, not draining_: a request read in the same round as stop() must not start.
    if (stop_requested_.load()) {
        // The broker gets it back for another worker when our DISCONNECT arrives.
        spdlog::info("not starting a request for '{}': the worker is stopping",
                     connection.service());
        return;
    }
    const Registration& registration = handlers_[slot];
    if (registration.execution == Execution::io_thread) {
        inline_body_.clear();
        for (std::size_t i = kRequestBody; i < frames.size(); ++i)
            inline_body_.push_back(std::move(frames[i]));
        Request request{registration.service, inline_body_};
        Reply reply = run_handler(registration.handler, request, counters_);
        if (!connection.send_reply(frames[kRequestToken], reply.body)) {
            ++counters_.dropped_replies;
            spdlog::warn("dropping a reply for '{}': the queue to the broker is full",
                         connection.service());
        }
        return;
    }
    Job job;
    job.origin = {slot, connection.id()};
    job.handler = &registration.handler;
    job.service = registration.service;  // outlives the pool, unlike the connection
    job.token = std::move(frames[kRequestToken]);
    job.body.reserve(frames.size() - kRequestBody);
    for (std::size_t i = kRequestBody; i < frames.size(); ++i)
        job.body.push_back(std::move(frames[i]));
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
    if (result->origin.slot >= connections_.size()) return;
    BrokerConnection& connection = connections_[result->origin.slot];
    if (!connection.connected() || connection.id() != result->origin.connection_id) {
        // The broker has already given this request to another worker, or will.
        ++counters_.dropped_replies;
        spdlog::info("dropping a reply for '{}': its connection to the broker was replaced",
                     connection.service());
        return;
    }
    if (!connection.send_reply(result->token, result->body)) {
        ++counters_.dropped_replies;
        spdlog::warn("dropping a reply for '{}': the queue to the broker is full",
                     connection.service());
    }
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
