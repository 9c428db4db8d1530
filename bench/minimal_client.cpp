// Minimal clients: send, receive, refill; the send time travels in the body.
#include "minimal_client.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>

#include <zmq.hpp>

#include "shared/frames.hpp"

namespace zbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kProgressInterval{200};

// Send time in nanoseconds, its lowest bit replaced by whether the request counts (sent after
// the warm-up): 8 bytes say all a reply needs.
std::uint64_t stamp(SteadyClock::time_point at, bool measured) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch());
    return (static_cast<std::uint64_t>(ns.count()) & ~std::uint64_t{1}) | (measured ? 1 : 0);
}
SteadyClock::time_point sent_at(std::uint64_t stamp) {
    return SteadyClock::time_point(std::chrono::duration_cast<SteadyClock::duration>(
        std::chrono::nanoseconds(static_cast<std::int64_t>(stamp & ~std::uint64_t{1}))));
}

// What the threads share: the run's phase, and requests left when it is sized by count.
struct Run {
    explicit Run(std::uint64_t requests)
        : left(static_cast<std::int64_t>(requests)), unlimited(requests == 0) {}
    bool take() { return unlimited || left.fetch_sub(1, std::memory_order_relaxed) > 0; }
    std::atomic<std::int64_t> left;
    const bool unlimited;
    std::atomic<bool> measuring{false};
    std::atomic<bool> stop_sending{false};
    std::mutex mutex;
    std::condition_variable finished;
    std::size_t running = 0;
};

struct Tally {
    std::uint64_t sent = 0;
    std::uint64_t ok = 0;
    std::map<protocol::Status, std::uint64_t> errors;
    LatencyRecorder latency;
    alignas(64) std::atomic<std::uint64_t> answered{0};  // warm-up included, for progress
};

struct Connection {
    zmq::socket_t socket;
    std::size_t in_flight = 0;
};

// The sockets' ZMQ_FDs in one epoll set, as zbench's own client has them: with many
// connections a wake-up then costs what is ready, not a look at every socket.
class Epoll {
  public:
    Epoll() : fd_(::epoll_create1(EPOLL_CLOEXEC)) {
        if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    }
    ~Epoll() { ::close(fd_); }
    Epoll(const Epoll&) = delete;
    Epoll& operator=(const Epoll&) = delete;
    void add(zmq::socket_ref socket, std::size_t index) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = index;
        if (::epoll_ctl(fd_, EPOLL_CTL_ADD, socket.get(zmq::sockopt::fd), &event) != 0)
            throw std::system_error(errno, std::generic_category(), "epoll_ctl");
    }
    bool wait(std::vector<std::size_t>& ready, std::chrono::milliseconds timeout) {
        epoll_event events[256];
        int n;
        do {
            n = ::epoll_wait(fd_, events, 256, static_cast<int>(timeout.count()));
        } while (n < 0 && errno == EINTR);
        for (int i = 0; i < n; ++i)
            ready.push_back(events[i].data.u64);
        return n > 0;
    }

  private:
    int fd_;
};

bool is_reply(const Frames& reply, const Prefix& prefix) {
    if (reply.size() != prefix.size() + 1 || reply.back().size() < kMinimalBodySize) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (view(reply[i]) != prefix[i]) return false;
    }
    return true;
}

// `count` connections from one thread: fill every window, then for each connection that may
// have replies, take them and send one new request per reply.
void drive(const LoadSpec& spec, const Prefix& prefix, std::size_t count, Run& run, Tally& tally) {
    zmq::context_t context(1);  // one I/O thread, as zbench's client has; outlives its sockets
    std::vector<Connection> connections(count);
    Epoll epoll;
    std::vector<std::size_t> ready;
    for (std::size_t i = 0; i < count; ++i) {
        zmq::socket_t& socket = connections[i].socket;
        socket = zmq::socket_t(context, zmq::socket_type::dealer);
        socket.set(zmq::sockopt::linger, 0);
        socket.set(zmq::sockopt::sndhwm, 0);  // the window bounds both queues
        socket.set(zmq::sockopt::rcvhwm, 0);
        socket.connect(spec.endpoint);
        epoll.add(socket, i);
        ready.push_back(i);
    }
    const std::string body(std::max(spec.size, kMinimalBodySize), 'x');
    tally.latency.reserve(spec.requests > 0 ? spec.requests / spec.clients * count + 16 : 1 << 20);
    Frames reply;
    bool sending = true;
    std::size_t in_flight = 0;  // over all connections
    std::uint64_t answered = 0;
    std::vector<std::size_t> again;
    while (true) {
        again.clear();
        for (const std::size_t i : ready) {
            Connection& c = connections[i];
            while (recv_frames(c.socket, reply, zmq::recv_flags::dontwait)) {
                if (c.in_flight == 0) continue;  // not an answer to anything sent
                --c.in_flight;
                --in_flight;
                ++answered;
                std::uint64_t sent = 1;  // a reply too short to say so counts
                if (!reply.empty() && reply.back().size() >= sizeof sent)
                    std::memcpy(&sent, reply.back().data(), sizeof sent);
                if ((sent & 1) == 0) continue;  // warm-up
                if (!is_reply(reply, prefix)) {
                    ++tally.errors[protocol::Status::bad_request];
                    continue;
                }
                ++tally.ok;
                tally.latency.add(SteadyClock::now() - sent_at(sent));
            }
            while (sending && c.in_flight < spec.inflight) {
                if (run.stop_sending.load(std::memory_order_relaxed) || !run.take()) {
                    sending = false;
                    break;
                }
                const bool measured = run.measuring.load(std::memory_order_relaxed);
                for (const std::string& part : prefix)
                    c.socket.send(zmq::buffer(part), zmq::send_flags::sndmore);
                zmq::message_t request(body.data(), body.size());
                const std::uint64_t at = stamp(SteadyClock::now(), measured);
                std::memcpy(request.data(), &at, sizeof at);
                c.socket.send(request, zmq::send_flags::none);  // no high-water mark: never waits
                ++c.in_flight;
                ++in_flight;
                if (measured) ++tally.sent;
            }
            // Sending may have processed the commands that said a reply came: ask again.
            if ((c.socket.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0) again.push_back(i);
        }
        tally.answered.store(answered, std::memory_order_relaxed);
        ready.swap(again);
        if (in_flight == 0 && !sending) return;
        if (!ready.empty()) continue;
        if (!epoll.wait(ready, spec.reply_timeout)) {  // nothing in reply_timeout: lost
            tally.errors[protocol::Status::no_reply] += in_flight;
            return;
        }
    }
}

}  // namespace

Prefix mdp_client_prefix(const std::string& service) {
    return {"", std::string(protocol::kMdpClient), service};
}

LoadResult run_minimal_load(const LoadSpec& spec, const Prefix& prefix,
                            const ProgressCallback& on_progress) {
    const bool timed = spec.requests == 0;
    Run run(spec.requests);
    run.measuring = !timed;
    const std::size_t thread_count =
        std::min<std::size_t>(spec.clients, std::max(2u, std::thread::hardware_concurrency()));
    std::vector<Tally> tallies(thread_count);
    std::vector<std::thread> threads;
    run.running = thread_count;
    const auto start = SteadyClock::now();
    for (std::size_t t = 0; t < thread_count; ++t) {
        const std::size_t count =
            spec.clients / thread_count + (t < spec.clients % thread_count ? 1 : 0);
        threads.emplace_back([&, t, count] {
            drive(spec, prefix, count, run, tallies[t]);
            const std::lock_guard lock(run.mutex);
            --run.running;
            run.finished.notify_all();
        });
    }

    // Waits for a phase: until `end`, or until every thread has finished when there is none;
    // reports progress every kProgressInterval meanwhile.
    std::uint64_t last_done = 0;
    auto last_report = start;
    const auto wait_phase = [&](std::optional<SteadyClock::time_point> end, LoadProgress progress) {
        const auto phase_start = SteadyClock::now();
        if (end) progress.total_s = std::chrono::duration<double>(*end - phase_start).count();
        for (auto next = phase_start + kProgressInterval;; next += kProgressInterval) {
            if (end && next >= *end) {
                std::this_thread::sleep_until(*end);
                return;
            }
            if (!end) {
                std::unique_lock lock(run.mutex);
                if (run.finished.wait_until(lock, next, [&] { return run.running == 0; })) return;
            } else {
                std::this_thread::sleep_until(next);
            }
            if (!on_progress) continue;
            const auto now = SteadyClock::now();
            std::uint64_t done = 0;
            for (const Tally& tally : tallies)
                done += tally.answered.load(std::memory_order_relaxed);
            progress.elapsed_s = std::chrono::duration<double>(now - phase_start).count();
            progress.done = done;
            progress.requests_per_second = static_cast<double>(done - last_done) /
                                           std::chrono::duration<double>(now - last_report).count();
            last_done = done;
            last_report = now;
            on_progress(progress);
        }
    };
    auto measured_from = start;
    if (timed) {
        wait_phase(SteadyClock::now() + spec.warmup, {.warming_up = true});
        measured_from = SteadyClock::now();
        run.measuring = true;
        wait_phase(measured_from + spec.duration, {});
        run.stop_sending = true;
    } else {
        wait_phase(std::nullopt, {.total_requests = spec.requests});
    }
    for (auto& thread : threads)
        thread.join();
    const auto end = SteadyClock::now();

    LoadResult result;
    LatencyRecorder all;
    for (auto& tally : tallies) {
        result.sent += tally.sent;
        result.ok += tally.ok;
        result.answered_all += tally.answered.load(std::memory_order_relaxed);
        for (const auto& [status, n] : tally.errors)
            result.errors[status] += n;
        all.merge(tally.latency);
    }
    result.seconds = std::chrono::duration<double>(end - measured_from).count();
    result.latency = all.summarize();
    return result;
}

}  // namespace zbroker::bench
