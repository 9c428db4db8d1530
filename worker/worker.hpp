// The worker library: register handlers per service, then run() serves them for one or more
// brokers (ZB/1).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// Relative: installed under include/zbroker/, these headers find each other by path alone.
#include "../shared/curve_keys.hpp"
#include "../shared/frames.hpp"
#include "../shared/protocol.hpp"

namespace zbroker {

// One request as a handler sees it. `frames` are the body frames; a handler may move them out
// (echo does), since nothing reads them after the handler returns.
struct Request {
    std::string_view service;
    Frames& frames;
    // The key the client gave the request so that a resend (through any broker) is known for
    // the same request; empty when none. A worker answers a key it has just replied to from
    // memory (WorkerOptions::recent_replies), without calling the handler.
    std::string_view idempotency_key{};

    // The first body frame, or empty when the request has no body.
    std::string_view body() const noexcept;

    // The first body frame decoded from msgpack; throws CodecError. Defined in
    // worker/payload.hpp, which keeps msgpack out of this header.
    template <class T>
    T as() const;
};

// What a handler answers: the body frames of the REPLY.
class Reply {
  public:
    static Reply raw(std::string_view bytes);
    static Reply frames(Frames&& parts);
    // `value` as msgpack; defined in worker/payload.hpp.
    template <class T>
    static Reply of(const T& value);
    // A msgpack map {"error": message}: what a client sees when a handler throws.
    static Reply error(std::string_view message);

    Frames body;
};

using Handler = std::function<Reply(Request&)>;

// Where a handler runs. `pool`: on the handler threads, so that however long it takes, the
// socket thread keeps heartbeating. `io_thread`: on the socket thread itself, for handlers that
// take microseconds (echo, small computations): no hand-off between threads per request, at
// the price of delaying heartbeats and other services while it runs.
enum class Execution { pool, io_thread };

struct Registration {
    std::string service;
    Handler handler;
    Execution execution = Execution::pool;
};

struct WorkerOptions {
    // The brokers to serve: one session per service per broker, all sharing the handlers.
    // Worker's constructor throws std::invalid_argument for an empty list, an empty endpoint or
    // one given twice.
    std::vector<std::string> endpoints{std::string(protocol::kDefaultBrokerConnect)};
    int threads = 1;  // handler threads shared by all services
    // Requests one service may hold at once, over all brokers. 0: adaptive, from how long jobs
    // take (one per handler plus about 1 ms of work; see worker/adaptive_credit.hpp). With N
    // brokers each gets a fixed share, credit / N, the remainder to the first ones, and at
    // least 1 (worker/credit_share.hpp): so a worker holds at most max(credit, N) requests.
    int credit = 0;
    std::chrono::milliseconds heartbeat_interval{protocol::kHeartbeatInterval};
    int liveness = protocol::kHeartbeatLiveness;  // intervals of broker silence before reconnect
    std::chrono::milliseconds reconnect_delay{1000};
    // CURVE to a broker run with --curve-secret; nullopt: plain TCP. run() throws
    // std::invalid_argument when a key is not 40-character Z85.
    std::optional<CurveClientKeys> curve;
    // Per service, the replies of this many of the latest jobs that carried an idempotency key
    // (replies over 64 KiB are not kept): a job whose key is among them is answered with the
    // kept reply instead of being run again. 0: off.
    int recent_replies = 10'000;
};

// A service's credit (over all its brokers) before its job times are known: WorkerOptions.credit,
// or when that is 0 (adaptive), this many per handler thread.
inline constexpr int kDefaultCreditPerThread = 4;
inline int default_credit(const WorkerOptions& options) {
    return options.credit > 0 ? options.credit : kDefaultCreditPerThread * options.threads;
}

// A snapshot of what a worker has done so far.
struct WorkerStats {
    std::uint64_t served = 0;  // handler returned a reply
    std::uint64_t failed = 0;  // handler threw; the client got Reply::error
    std::uint64_t reconnects =
        0;  // new broker sessions after a DISCONNECT, silence or a closed link
    std::uint64_t malformed = 0;  // broker messages ignored as malformed
    // JOBs beyond the credit the broker was given: not run, not answered (docs/protocol.md).
    std::uint64_t refused_jobs = 0;
    std::uint64_t dropped_replies = 0;     // results of a previous connection, never sent
    std::uint64_t skipped_jobs = 0;        // queued from a connection replaced before they started
    std::uint64_t duplicates_skipped = 0;  // answered from the recent replies, not run again
    // The most jobs held at once: received from any broker, not yet replied or finished.
    std::uint64_t most_held = 0;
};

namespace detail {
// Counters written by the I/O thread and the handler threads, read by stats() from anywhere.
struct WorkerCounters {
    std::atomic<std::uint64_t> served{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> malformed{0};
    std::atomic<std::uint64_t> refused_jobs{0};
    std::atomic<std::uint64_t> dropped_replies{0};
    std::atomic<std::uint64_t> skipped_jobs{0};
    std::atomic<std::uint64_t> duplicates_skipped{0};
    std::atomic<std::uint64_t> most_held{0};  // written by the I/O thread only
};
}  // namespace detail

// A zbroker worker: one DEALER per registered service per broker (each one ZB/1 worker session
// with its share of the service's credit), heartbeats on the I/O thread in run(), handlers on a
// pool of `threads` threads shared by every session.
// A Worker runs once: handle() every service, then run() until stop().
class Worker {
  public:
    // Throws std::invalid_argument when an option is out of range.
    explicit Worker(WorkerOptions options);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Registers `handler` for `service`. Throws std::invalid_argument for an empty, duplicate or
    // mmi.* name, std::logic_error once run() has started.
    void handle(std::string service, Handler handler, Execution execution = Execution::pool);

    // Serves until stop(): then finishes the jobs already accepted, replies, sends DISCONNECT on
    // every socket and returns. Throws zmq::error_t if an endpoint is unusable, and
    // std::logic_error with no service registered or when called a second time.
    void run();

    // Thread-safe and async-signal-safe: it only stores a lock-free atomic flag.
    void stop() noexcept;

    WorkerStats stats() const;

    const WorkerOptions& options() const noexcept { return options_; }

  private:
    static_assert(std::atomic<bool>::is_always_lock_free, "stop() must be async-signal-safe");

    WorkerOptions options_;
    std::vector<Registration> handlers_;
    std::atomic<bool> stop_requested_{false};
    std::atomic<bool> started_{false};
    detail::WorkerCounters counters_;
    zmq::context_t context_;
};

}  // namespace zbroker
