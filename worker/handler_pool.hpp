// The handler threads: a fixed pool fed by a job queue, each returning results over inproc PUSH.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "shared/frames.hpp"
#include "worker/worker.hpp"

namespace zbroker::detail {

// Where a job came from, so that its result goes back to that same socket or nowhere.
struct JobOrigin {
    std::uint32_t slot = 0;           // which service connection
    std::uint64_t connection_id = 0;  // which socket of it: every reconnect makes a new one
};

struct Job {
    JobOrigin origin;
    // The id of the connection now current for origin.slot (0: none), kept by the I/O thread.
    // A job whose connection was replaced before it started is skipped: the broker has given
    // the request to another worker, or will.
    const std::atomic<std::uint64_t>* current_connection = nullptr;
    const Handler* handler = nullptr;
    std::string_view service;  // the Worker's registered name: outlives the pool
    zmq::message_t token;
    zmq::message_t idempotency_key;  // empty: none; comes back with the result, to be kept
    Frames body;
};

// What a result says besides its reply.
struct ResultHead {
    JobOrigin origin;
    std::int64_t ran_for_ns = 0;  // how long the handler took
    bool skipped = false;         // not run: its connection was replaced first
};

// A finished job; on the inproc pipe it is [head, token, idempotency key, reply body...].
struct JobResult {
    ResultHead head;
    zmq::message_t token;
    zmq::message_t idempotency_key;
    Frames body;
};
Frames encode_result(const ResultHead& head, zmq::message_t token, zmq::message_t idempotency_key,
                     Frames body);
// Empty when the frames are not an encoded result (cannot happen unless the pipe is misused).
std::optional<JobResult> decode_result(Frames& frames);

// Runs the handler; any exception becomes Reply::error(what()) so the worker keeps serving.
Reply run_handler(const Handler& handler, Request& request, WorkerCounters& counters);

class HandlerPool {
  public:
    // Starts `threads` threads; each connects its own PUSH to `results_endpoint`, because zmq
    // sockets must stay on the thread that uses them.
    HandlerPool(zmq::context_t& context, std::string results_endpoint, int threads,
                WorkerCounters& counters);
    // Stops and joins the threads; queued jobs not yet started are discarded.
    ~HandlerPool();
    HandlerPool(const HandlerPool&) = delete;
    HandlerPool& operator=(const HandlerPool&) = delete;

    void submit(Job job);

  private:
    void close() noexcept;
    void serve();
    void send_result(zmq::socket_t& results, Frames& frames);

    zmq::context_t& context_;
    std::string results_endpoint_;
    WorkerCounters& counters_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<Job> queue_;
    std::atomic<bool> closing_{false};  // written under mutex_, read without it while sending
    std::vector<std::thread> threads_;
};

}  // namespace zbroker::detail
