// The worker's poll loop, after the zguide's mdwrkapi: input first, then heartbeats and liveness.
#include "worker/worker_loop.hpp"

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

#include "worker/credit_share.hpp"

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
// Buffers reused for every message keep what the largest one grew them to. Past these sizes
// (the room a full batch of small records, or of frames, needs) a buffer is given back as soon
// as its message is read: a hostile broker may send one burst (65,536 records of about 150
// bytes) and then only heartbeats. The same as the shared readers keep between messages.
// The most of a message's bytes a log line quotes.
constexpr std::size_t kMaxQuotedBytes = 200;

template <class T>
void give_back_if_grown(std::vector<T>& buffer, std::size_t kept) {
    if (buffer.capacity() > kept) std::vector<T>().swap(buffer);
}

// The frames of a message from a peer as a log line may quote them: each escaped by
// printable(), and no more of them than fit in kMaxQuotedBytes.
std::string describe_briefly(const Frames& frames) {
    std::string text = "[";
    std::size_t shown = 0;
    for (; shown < frames.size() && text.size() < kMaxQuotedBytes; ++shown) {
        if (shown > 0) text += ' ';
        text += printable(view(frames[shown]));
    }
    if (shown < frames.size()) text += " ...and " + std::to_string(frames.size() - shown) + " more";
    return text + "]";
}

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
      brokers_(options.endpoints.size()),
      results_(bind_results(context)),
      pool_(context, kResultsEndpoint, options.threads, counters) {
    const ConnectionTiming timing{options.heartbeat_interval, options.liveness,
                                  options.reconnect_delay};
    const std::size_t sessions = handlers.size() * brokers_;
    connections_.reserve(sessions);
    credits_.reserve(handlers.size());
    recent_replies_.reserve(handlers.size());
    current_connection_ = std::make_unique<std::atomic<std::uint64_t>[]>(sessions);
    log_limits_.resize(sessions);
    for (std::size_t service = 0; service < handlers.size(); ++service) {
        const Registration& registration = handlers[service];
        // An io_thread handler runs one job at a time; pool handlers as many as there are threads.
        const auto handlers_per_job =
            registration.execution == Execution::io_thread ? 1 : options.threads;
        credits_.emplace_back(static_cast<std::uint32_t>(handlers_per_job));
        recent_replies_.emplace_back(static_cast<std::size_t>(options.recent_replies));
        const std::uint32_t credit = total_credit(service);
        for (std::uint32_t broker = 0; broker < brokers_; ++broker) {
            connections_.emplace_back(
                registration.service, options.endpoints[broker],
                split_credit(credit, static_cast<std::uint32_t>(brokers_), broker), timing);
        }
    }
}

std::uint32_t WorkerLoop::total_credit(std::size_t service) const noexcept {
    return options_.credit > 0 ? static_cast<std::uint32_t>(options_.credit)
                               : credits_[service].credit();
}

void WorkerLoop::run() {
    for (std::size_t service = 0; service < handlers_.size(); ++service) {
        const std::uint32_t credit = total_credit(service);
        if (credit >= brokers_) continue;
        spdlog::warn(
            "credit {} for '{}' is less than the {} brokers it is split over: each broker still "
            "gets 1, so up to {} requests may be held",
            credit, handlers_[service].service, brokers_, brokers_);
    }
    const TimePoint start = now();
    for (BrokerConnection& connection : connections_)
        connect(connection, start);

    std::vector<zmq::pollitem_t> items;
    // The slot of items[2i + 1] (its DEALER) and items[2i + 2] (its link events).
    std::vector<std::uint32_t> item_slots;
    while (true) {
        if (!draining_ && stop_requested_.load()) begin_stopping(now());
        if (draining_ && jobs_in_flight_ == 0 && stop_settled(now())) break;

        items.clear();
        item_slots.clear();
        items.push_back({results_.handle(), 0, ZMQ_POLLIN, 0});
        for (std::uint32_t slot = 0; slot < connections_.size(); ++slot) {
            BrokerConnection& connection = connections_[slot];
            if (!connection.connected()) continue;
            items.push_back({connection.socket().handle(), 0, ZMQ_POLLIN, 0});
            items.push_back({connection.link_events().handle(), 0, ZMQ_POLLIN, 0});
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
            // What the broker sent before its link went down is read first: replies to it
            // would be lost anyway, but its CREDIT echoes and DISCONNECT still count.
            if ((items[2 * i + 1].revents & ZMQ_POLLIN) != 0) read_broker(item_slots[i]);
            if ((items[2 * i + 2].revents & ZMQ_POLLIN) != 0) watch_link(item_slots[i]);
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
    spdlog::info("stopped: sent DISCONNECT on {} of {} session(s)", disconnected,
                 connections_.size());
}

void WorkerLoop::read_broker(std::uint32_t slot) {
    for (int i = 0; i < kReadBatch; ++i) {
        // A DISCONNECT closes the socket: stop reading it.
        if (!connections_[slot].connected()) return;
        if (!receive(connections_[slot].socket(), incoming_)) return;
        on_broker_message(slot, incoming_);
        give_back_if_grown(records_, wire::kKeptRecords);
        give_back_if_grown(incoming_, kKeptFrames);
    }
}

void WorkerLoop::read_results() {
    for (int i = 0; i < kReadBatch; ++i) {
        if (!receive(results_, incoming_)) return;
        on_result(incoming_);
    }
}

void WorkerLoop::watch_link(std::uint32_t slot) {
    BrokerConnection& connection = connections_[slot];
    if (!connection.connected() || !connection.link_lost()) return;
    if (draining_) {
        connection.drop(now());
        spdlog::info("the link to {} closed on '{}' while stopping", connection.endpoint(),
                     connection.service());
        return;
    }
    // At once, not after liveness runs out: a broker that restarted knows nothing of us, and
    // one that is gone gets the READY when it comes back, queued in the new DEALER while libzmq
    // retries the connect at its reconnect interval. The jobs of the old session are dropped
    // as after a DISCONNECT: their broker gave them to another worker, or is gone with them.
    spdlog::warn("the link to {} closed on '{}' (the broker stopped or restarted): reconnecting",
                 connection.endpoint(), connection.service());
    ++counters_.reconnects;
    connect(connection, now());
}

void WorkerLoop::on_broker_message(std::uint32_t slot, Frames& frames) {
    BrokerConnection& connection = connections_[slot];
    const TimePoint arrived = now();
    connection.heard_from_broker(arrived);
    const char* problem = nullptr;
    if (!wire::parse(frames, 0, records_, problem)) {
        ++counters_.malformed;
        if (const auto left_out =
                log_limits_[slot].admit(fmt::format("malformed message ({})", problem), arrived)) {
            spdlog::warn("ignoring a malformed message from {} on '{}' ({}): {}{}",
                         connection.endpoint(), connection.service(), problem,
                         describe_briefly(frames), log_limits_[slot].more_like_this(*left_out));
        }
        return;
    }
    io_thread_jobs_ = 0;
    finished_in_message_ = 0;
    for (const wire::Record& record : records_) {
        // After a DISCONNECT, or once we quit: the rest belongs to a session that is over.
        if (!connection.connected()) break;
        switch (record.command) {
            case wire::Command::job:
                if (!connection.take_job()) {
                    refuse_job(slot, arrived);
                    break;
                }
                hold(1);
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
                    spdlog::info("broker sent DISCONNECT on '{}' at {} while stopping",
                                 connection.service(), connection.endpoint());
                } else {
                    spdlog::warn("broker sent DISCONNECT on '{}' at {}: reconnecting in {} ms",
                                 connection.service(), connection.endpoint(),
                                 options_.reconnect_delay.count());
                }
                break;
            case wire::Command::request:
            case wire::Command::answer:
            case wire::Command::ready:
            case wire::Command::reply: {
                ++counters_.malformed;
                const std::string kind =
                    fmt::format("unexpected {} record", wire::command_name(record.command));
                if (const auto left_out = log_limits_[slot].admit(kind, arrived)) {
                    spdlog::warn(
                        "ignoring a {} record from {} on '{}': a broker never sends it to a "
                        "worker{}",
                        wire::command_name(record.command), connection.endpoint(),
                        connection.service(), log_limits_[slot].more_like_this(*left_out));
                }
                break;
            }
        }
    }
    // Every job of the message was held until now, as the broker counts them: it sent them
    // together, and can have read none of their replies yet.
    finished_holding(finished_in_message_);
    connection.finished_jobs(finished_in_message_);
    if (io_thread_jobs_ > 0) {
        // Timed per message, not per job: two clock reads per microsecond job were an eighth
        // of the worker's time.
        credits_[service_of(slot)].ran((now() - arrived) / io_thread_jobs_);
    }
}

void WorkerLoop::on_job(std::uint32_t slot, Frames& frames, const wire::Record& record) {
    BrokerConnection& connection = connections_[slot];
    const std::size_t service = service_of(slot);
    // A request sent again (its client went through another broker after the first died, or
    // the broker retried it) that this worker has just answered: the same reply, not a second
    // run. One that comes while the first run is still going runs again: no reply is known yet.
    if (recent_replies_[service].find(record.idempotency_key, kept_reply_)) {
        ++counters_.duplicates_skipped;
        connection.reply(record.token, kept_reply_);
        ++finished_in_message_;
        return;
    }
    // A job the broker sent before it read our CREDIT 0 is run all the same (it is within the
    // credit in force until the echo): dropping it would cost the request an attempt.
    const Registration& registration = handlers_[service];
    if (registration.execution == Execution::io_thread) {
        inline_body_.clear();
        wire::move_body(frames, record.body, inline_body_);
        Request request{registration.service, inline_body_, record.idempotency_key};
        Reply reply = run_handler(registration.handler, request, counters_);
        ++io_thread_jobs_;
        recent_replies_[service].remember(record.idempotency_key, reply.body);
        connection.reply(record.token, reply.body);
        ++finished_in_message_;
        return;
    }
    Job job;
    job.origin = {slot, connection.id()};
    job.current_connection = &current_connection_[slot];
    job.handler = &registration.handler;
    job.service = registration.service;  // outlives the pool, unlike the connection
    job.token = zmq::message_t(record.token.data(), record.token.size());
    if (!record.idempotency_key.empty()) job.idempotency_key = frame(record.idempotency_key);
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
    finished_holding();
    const JobOrigin& origin = result->head.origin;
    if (origin.slot >= connections_.size()) return;
    BrokerConnection& connection = connections_[origin.slot];
    const std::size_t service = service_of(origin.slot);
    const bool same_session = connection.connected() && connection.id() == origin.connection_id;
    if (same_session) connection.finished_jobs();
    if (result->head.skipped) {
        ++counters_.skipped_jobs;
        spdlog::info(
            "skipped a job for '{}': its connection to the broker was replaced before "
            "it started",
            connection.service());
        return;
    }
    credits_[service].ran(std::chrono::nanoseconds(result->head.ran_for_ns));
    // Kept even when its session is gone: when the client sends the request again through
    // another broker, this is the answer.
    recent_replies_[service].remember(view(result->idempotency_key), result->body);
    if (!same_session) {
        // The broker has already given this request to another worker, or will.
        ++counters_.dropped_replies;
        spdlog::info("dropping a reply for '{}': its connection to {} was replaced",
                     connection.service(), connection.endpoint());
        return;
    }
    connection.reply(view(result->token), result->body);
}

void WorkerLoop::refuse_job(std::uint32_t slot, TimePoint at) {
    BrokerConnection& connection = connections_[slot];
    ++counters_.refused_jobs;
    LogLimiter& log = log_limits_[slot];
    // Not answered: a REPLY would reach its client as a 200 and free the credit at once, so a
    // broker that over-sends would be sent failures as fast as it sends jobs. The broker
    // answers its client at its deadline, or re-queues it when we leave (docs/protocol.md).
    if (!connection.refused_job(at)) {
        if (const auto left_out = log.admit("JOB beyond credit", at)) {
            spdlog::warn(
                "refusing a JOB from {} on '{}': the session holds {}, all the credit the broker "
                "was given{}",
                connection.endpoint(), connection.service(), connection.held_jobs(),
                log.more_like_this(*left_out));
        }
        return;
    }
    if (const auto left_out = log.admit("leaving a broker that sends JOBs beyond credit", at)) {
        spdlog::warn(
            "{} sent more than {} JOBs beyond credit on '{}' within {} s: disconnecting, "
            "reconnecting in {} ms{}",
            connection.endpoint(), BrokerConnection::kRefusalsTolerated, connection.service(),
            std::chrono::duration_cast<std::chrono::seconds>(BrokerConnection::kRefusalWindow)
                .count(),
            options_.reconnect_delay.count(), log.more_like_this(*left_out));
    }
    connection.quit(kDisconnectLinger, at);
}

void WorkerLoop::flush_replies() {
    for (std::uint32_t slot = 0; slot < connections_.size(); ++slot) {
        BrokerConnection& connection = connections_[slot];
        std::size_t dropped = 0;
        if (connection.flush(dropped)) continue;
        counters_.dropped_replies += dropped;
        // Once a round while a broker reads nothing: limited like what it sends.
        LogLimiter& log = log_limits_[slot];
        if (const auto left_out = log.admit("replies dropped: the queue is full", now())) {
            spdlog::warn("dropping {} reply(s) for '{}': the queue to {} is full{}", dropped,
                         connection.service(), connection.endpoint(),
                         log.more_like_this(*left_out));
        }
    }
}

void WorkerLoop::tell_lines_left_out(TimePoint at) {
    for (std::uint32_t slot = 0; slot < connections_.size(); ++slot) {
        LogLimiter& log = log_limits_[slot];
        for (const LogLimiter::Untold& untold : log.expire(at)) {
            spdlog::warn("from {} on '{}': {}{}", connections_[slot].endpoint(),
                         connections_[slot].service(), untold.kind,
                         log.more_like_this(untold.left_out));
        }
    }
}

void WorkerLoop::adapt_credit() {
    for (std::size_t service = 0; service < credits_.size(); ++service) {
        const std::uint32_t credit = credits_[service].change();
        if (credit == 0) continue;
        // Every broker gets its new share, down or not (see worker/credit_share.hpp).
        for (std::uint32_t broker = 0; broker < brokers_; ++broker) {
            connections_[slot_of(service, broker)].change_credit(
                split_credit(credit, static_cast<std::uint32_t>(brokers_), broker));
        }
        spdlog::debug("credit for '{}' is now {}, split over {} broker(s)",
                      handlers_[service].service, credit, brokers_);
    }
}

void WorkerLoop::hold(std::size_t count) {
    held_ += count;
    if (held_ > counters_.most_held.load(std::memory_order_relaxed))
        counters_.most_held.store(held_, std::memory_order_relaxed);
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
    // echoes (gone, or its queue to us full) is waited for one liveness period, no longer. One
    // whose link is not up (down, or not back yet) cannot send a job: nothing to wait for, so
    // that one broker of several being down does not hold up every stop.
    if (at - stop_began_ >= options_.heartbeat_interval * options_.liveness) return true;
    return std::all_of(connections_.begin(), connections_.end(),
                       [](const BrokerConnection& connection) {
                           return !connection.link_up() || connection.stop_acknowledged();
                       });
}

void WorkerLoop::run_timers(TimePoint at) {
    tell_lines_left_out(at);
    for (BrokerConnection& connection : connections_) {
        if (connection.broker_expired(at)) {
            const auto silence = options_.heartbeat_interval * options_.liveness;
            connection.drop(at);
            if (draining_) {
                spdlog::warn("broker silent for {} ms on '{}' at {} while stopping",
                             silence.count(), connection.service(), connection.endpoint());
            } else {
                spdlog::warn("broker silent for {} ms on '{}' at {}: reconnecting in {} ms",
                             silence.count(), connection.service(), connection.endpoint(),
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
    connection.connect(context_, next_connection_id_++, at, options_.curve);
    publish_connections();
    spdlog::debug("sent READY for '{}' to {}", connection.service(), connection.endpoint());
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
