// Handler threads: take a job, run its handler, push [origin, token, key, reply...] to the I/O
// thread.
#include "worker/handler_pool.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>

#include <spdlog/spdlog.h>

namespace zbroker::detail {

namespace {

// How long one PUSH send waits before checking whether the pool is closing.
constexpr std::chrono::milliseconds kSendPatience{100};

}  // namespace

Frames encode_result(const ResultHead& head, zmq::message_t token, zmq::message_t idempotency_key,
                     Frames body) {
    Frames frames;
    frames.reserve(body.size() + 3);
    frames.emplace_back(&head, sizeof head);
    frames.push_back(std::move(token));
    frames.push_back(std::move(idempotency_key));
    for (zmq::message_t& part : body)
        frames.push_back(std::move(part));
    return frames;
}

std::optional<JobResult> decode_result(Frames& frames) {
    if (frames.size() < 3 || frames[0].size() != sizeof(ResultHead)) return std::nullopt;
    JobResult result;
    std::memcpy(&result.head, frames[0].data(), sizeof(ResultHead));
    result.token = std::move(frames[1]);
    result.idempotency_key = std::move(frames[2]);
    for (std::size_t i = 3; i < frames.size(); ++i)
        result.body.push_back(std::move(frames[i]));
    return result;
}

Reply run_handler(const Handler& handler, Request& request, WorkerCounters& counters) {
    try {
        Reply reply = handler(request);
        ++counters.served;
        return reply;
    } catch (const std::exception& e) {
        ++counters.failed;
        spdlog::warn("handler for '{}' failed: {}", request.service, e.what());
        return Reply::error(e.what());
    } catch (...) {
        ++counters.failed;
        spdlog::warn("handler for '{}' threw something that is not a std::exception",
                     request.service);
        return Reply::error("the handler threw something that is not a std::exception");
    }
}

HandlerPool::HandlerPool(zmq::context_t& context, std::string results_endpoint, int threads,
                         WorkerCounters& counters)
    : context_(context), results_endpoint_(std::move(results_endpoint)), counters_(counters) {
    threads_.reserve(static_cast<std::size_t>(threads));
    try {
        for (int i = 0; i < threads; ++i)
            threads_.emplace_back([this] { serve(); });
    } catch (...) {
        close();  // a destructor does not run for a half-built object: join what was started
        throw;
    }
}

HandlerPool::~HandlerPool() {
    close();
}

void HandlerPool::close() noexcept {
    {
        std::lock_guard lock(mutex_);
        closing_ = true;
    }
    wake_.notify_all();
    for (std::thread& thread : threads_) {
        if (thread.joinable()) thread.join();
    }
}

void HandlerPool::submit(Job job) {
    {
        std::lock_guard lock(mutex_);
        queue_.push_back(std::move(job));
    }
    wake_.notify_one();
}

void HandlerPool::serve() {
    zmq::socket_t results(context_, zmq::socket_type::push);
    results.set(zmq::sockopt::linger, 0);  // by the time a thread ends, its results are read
    results.set(zmq::sockopt::sndtimeo, static_cast<int>(kSendPatience.count()));
    results.connect(results_endpoint_);
    while (true) {
        Job job;
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return closing_ || !queue_.empty(); });
            if (closing_) return;
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        ResultHead head{job.origin};
        Reply reply;
        if (job.current_connection != nullptr &&
            job.current_connection->load(std::memory_order_relaxed) != job.origin.connection_id) {
            head.skipped = true;
        } else {
            Request request{job.service, job.body, view(job.idempotency_key)};
            const auto start = std::chrono::steady_clock::now();
            reply = run_handler(*job.handler, request, counters_);
            head.ran_for_ns = (std::chrono::steady_clock::now() - start).count();
        }
        Frames frames = encode_result(head, std::move(job.token), std::move(job.idempotency_key),
                                      std::move(reply.body));
        send_result(results, frames);
    }
}

void HandlerPool::send_result(zmq::socket_t& results, Frames& frames) {
    // Waits while the pipe is full, but gives up once the pool closes (the reader is gone).
    while (!closing_) {
        try {
            if (send_frames(results, frames) == SendResult::sent) return;
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) {
                spdlog::error("cannot return a result to the I/O thread: {}", e.what());
                return;
            }
        }
    }
    spdlog::warn("a result was discarded: the worker stopped before reading it");
}

}  // namespace zbroker::detail
