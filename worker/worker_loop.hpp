// The worker's I/O thread: polls every session's DEALER and link events and the handler results,
// runs the timers.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "shared/clock.hpp"
#include "shared/log_limiter.hpp"
#include "worker/adaptive_credit.hpp"
#include "worker/broker_connection.hpp"
#include "worker/handler_pool.hpp"
#include "worker/recent_replies.hpp"
#include "worker/worker.hpp"

namespace zbroker::detail {

// Lives for one Worker::run(): sockets are made, used and closed on the thread that runs it.
class WorkerLoop {
  public:
    WorkerLoop(zmq::context_t& context, const WorkerOptions& options,
               const std::vector<Registration>& handlers, const std::atomic<bool>& stop_requested,
               WorkerCounters& counters);

    // Serves until stop is requested and every accepted job is replied, then DISCONNECTs.
    void run();

  private:
    // Each reads at most a batch of what is waiting, so that no socket starves the others.
    void read_broker(std::uint32_t slot);
    void read_results();
    // Replaces a session at once when its broker closed the link (it stopped or restarted).
    void watch_link(std::uint32_t slot);
    void on_broker_message(std::uint32_t slot, Frames& frames);
    void on_job(std::uint32_t slot, Frames& frames, const wire::Record& record);
    // A JOB beyond the credit in force: not run; a broker that keeps sending them is left.
    void refuse_job(std::uint32_t slot, TimePoint now);
    // Tells, per slot, how many lines its log limiter left out in a window that has ended.
    void tell_lines_left_out(TimePoint now);
    void on_result(Frames& frames);
    void flush_replies();
    // Asks each session for its share of the credit its service's job times call for (unless
    // --credit).
    void adapt_credit();
    // A job was received (`count` of them): counted until it is finished, for most_held.
    void hold(std::size_t count);
    void finished_holding(std::size_t count = 1) noexcept { held_ -= count; }
    // Tells the handler threads which connection of each slot is current.
    void publish_connections();
    // Tells every broker connection to send nothing more; the loop ends once they echoed it
    // and every job in hand is replied.
    void begin_stopping(TimePoint now);
    bool stop_settled(TimePoint now) const;
    void run_timers(TimePoint now);
    void connect(BrokerConnection& connection, TimePoint now);
    Millis poll_timeout(TimePoint now) const;

    // Sessions are numbered service by service: slot = service * brokers + broker, the broker
    // being its index in options_.endpoints.
    std::size_t service_of(std::uint32_t slot) const noexcept { return slot / brokers_; }
    std::size_t slot_of(std::size_t service, std::uint32_t broker) const noexcept {
        return service * brokers_ + broker;
    }
    // A service's credit over all its brokers: --credit, or what its job times call for.
    std::uint32_t total_credit(std::size_t service) const noexcept;

    zmq::context_t& context_;
    const WorkerOptions& options_;
    const std::vector<Registration>& handlers_;
    const std::atomic<bool>& stop_requested_;
    WorkerCounters& counters_;
    std::size_t brokers_;    // options_.endpoints.size()
    zmq::socket_t results_;  // bound before the pool starts, closed after it is joined
    // Per slot, the id of its current connection (0: none), read by the handler threads when a
    // job starts: declared before pool_, so it outlives the threads the pool joins.
    std::unique_ptr<std::atomic<std::uint64_t>[]> current_connection_;
    HandlerPool pool_;
    std::vector<BrokerConnection> connections_;  // one per service per broker: see service_of()
    // Per service, shared by its sessions at every broker:
    std::vector<AdaptiveCredit> credits_;  // used unless options_.credit > 0
    std::vector<RecentReplies> recent_replies_;
    std::size_t jobs_in_flight_ = 0;  // submitted to the pool, result not yet read
    std::size_t held_ = 0;            // received and not yet finished, from every broker
    std::uint64_t next_connection_id_ = 1;
    bool draining_ = false;
    TimePoint stop_began_{};
    std::size_t io_thread_jobs_ = 0;  // run by the message being read, timed together
    // Jobs of the message being read that were finished while it was read: released after it,
    // since the broker sent them all at once and counts them all until it reads our replies.
    std::size_t finished_in_message_ = 0;
    // Per slot: what a broker makes us log is limited per broker, so that one flooding broker
    // does not hide what another one does.
    std::vector<LogLimiter> log_limits_;
    Frames incoming_;                    // reused for every read
    std::vector<wire::Record> records_;  // of the message being read
    Frames inline_body_;                 // the body handed to an io_thread handler, reused
    Frames kept_reply_;                  // a reply from recent_replies_, reused
};

}  // namespace zbroker::detail
