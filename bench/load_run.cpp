// Client threads driving AsyncClient: fill the window, take one reply, refill; time each one.
#include "load_run.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "bench/send_times.hpp"
#include "client/async_client.hpp"

namespace zbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kProgressInterval{200};

struct ClientTally {
    std::uint64_t sent = 0;
    std::uint64_t ok = 0;
    std::map<protocol::Status, std::uint64_t> errors;
    LatencyRecorder latency;
    // Answers so far, warm-up included, for progress reports: stored once per poll wake-up,
    // not per request, on a cache line of its own since another thread reads it.
    alignas(64) std::atomic<std::uint64_t> answered{0};
};

// The driving threads still running, so that the waiting thread wakes the moment they end.
class RunningThreads {
  public:
    explicit RunningThreads(std::size_t count) : running_(count) {}
    void one_finished() {
        const std::lock_guard lock(mutex_);
        --running_;
        done_.notify_all();
    }
    // True once every thread has finished; false at `deadline`.
    bool wait_until(SteadyClock::time_point deadline) {
        std::unique_lock lock(mutex_);
        return done_.wait_until(lock, deadline, [this] { return running_ == 0; });
    }

  private:
    std::mutex mutex_;
    std::condition_variable done_;
    std::size_t running_;
};

// Counts down requests left to send across all clients when the run is sized by count.
class Budget {
  public:
    explicit Budget(std::uint64_t requests) : left_(requests), unlimited_(requests == 0) {}
    bool take() {
        if (unlimited_) return true;
        return left_.fetch_sub(1, std::memory_order_relaxed) > 0;
    }

  private:
    std::atomic<std::int64_t> left_;
    bool unlimited_;
};

// One client connection: its window, and when each of its requests went out.
struct Connection {
    Connection(zmq::context_t& context, const LoadSpec& spec)
        : client(context, spec.endpoint, spec.inflight),
          send_times(spec.inflight),
          several_brokers(spec.endpoint.find(',') != std::string::npos) {}
    AsyncClient client;
    SendTimes send_times;
    // With several brokers the client replaces a lost broker's sockets by fresh ones, whose
    // ZMQ_FDs the ReadySet must be told of. With one, its socket never changes.
    bool several_brokers;
    std::vector<int> registered_fds;  // of client.sockets(), as last registered
};

// The connections that may have replies waiting: the ZMQ_FD of each socket in one epoll set,
// so a wake-up costs what is ready rather than a look at every socket. zmq::poll over 200
// sockets made zbench, not the broker, the busiest process at 200 connections. ZMQ_FD only
// says "look at ZMQ_EVENTS"; it stays readable until the socket's commands are processed.
class ReadySet {
  public:
    ReadySet() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {
        if (epoll_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    }
    ~ReadySet() { ::close(epoll_); }
    ReadySet(const ReadySet&) = delete;
    ReadySet& operator=(const ReadySet&) = delete;

    // Registers every socket of `c` under `index`.
    void add(Connection& c, std::size_t index) {
        c.registered_fds.clear();
        for (const zmq::socket_ref socket : c.client.sockets()) {
            const int fd = socket.get(zmq::sockopt::fd);
            add(fd, index);
            c.registered_fds.push_back(fd);
        }
    }
    // Several brokers: registers the sockets of `c` again when they are no longer those it
    // registered; true when they changed. A replaced socket's ZMQ_FD leaves the set by itself
    // when libzmq closes it (epoll forgets a closed file), and the new DEALER is made before
    // the old one is closed, so its ZMQ_FD differs from the old one's: a changed link always
    // shows as a changed descriptor.
    bool follow(Connection& c, std::size_t index) {
        const auto sockets = c.client.sockets();
        bool same = sockets.size() == c.registered_fds.size();
        for (std::size_t k = 0; same && k < sockets.size(); ++k)
            same = sockets[k].get(zmq::sockopt::fd) == c.registered_fds[k];
        if (same) return false;
        add(c, index);
        return true;
    }
    // Appends the indices signalled within `timeout`; false when none was.
    bool wait(std::vector<std::size_t>& ready, std::chrono::milliseconds timeout) {
        epoll_event events[256];
        int n;
        do {
            n = ::epoll_wait(epoll_, events, 256, static_cast<int>(timeout.count()));
        } while (n < 0 && errno == EINTR);
        for (int i = 0; i < n; ++i)
            ready.push_back(events[i].data.u64);
        return n > 0;
    }

  private:
    void add(int fd, std::size_t index) {
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = index;
        // EEXIST: this very file is registered already (a socket of the client kept its place).
        if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0 && errno != EEXIST)
            throw std::system_error(errno, std::generic_category(), "epoll_ctl");
    }

    int epoll_;
};

// Drives a group of connections from one thread: fill every window, then, for each connection
// that may have replies, take them and refill its window. A thread per connection would put
// hundreds of threads on a 2-core machine, and the harness, not the broker, would be measured.
void drive_connections(const LoadSpec& spec, std::size_t count, Budget& budget,
                       const std::atomic<bool>& measuring, const std::atomic<bool>& stop_sending,
                       ClientTally& tally) {
    zmq::context_t context(1);  // one I/O thread for the group; outlives its sockets
    std::vector<Connection> connections;
    connections.reserve(count);
    ReadySet ready_set;
    std::vector<std::size_t> ready;  // connections to look at now: at first, all of them
    for (std::size_t i = 0; i < count; ++i) {
        connections.emplace_back(context, spec);
        ready_set.add(connections.back(), i);
        ready.push_back(i);
    }
    const std::string body(spec.size, 'x');
    tally.latency.reserve(spec.requests > 0 ? spec.requests / spec.clients * count + 16 : 1 << 20);
    bool sending = true;
    std::uint64_t answered = 0;
    std::size_t in_flight = 0;  // over all connections
    std::vector<std::size_t> again;
    while (true) {
        again.clear();
        for (const std::size_t i : ready) {
            Connection& c = connections[i];
            in_flight -= c.client.in_flight();
            while (auto done = c.client.receive(std::chrono::milliseconds(0))) {
                ++answered;
                const auto sent = c.send_times.take(done->id);
                if (!sent || !sent->measured) continue;  // warm-up
                if (done->status == protocol::Status::ok) {
                    ++tally.ok;
                    tally.latency.add(SteadyClock::now() - sent->at);
                } else {
                    ++tally.errors[done->status];
                }
            }
            while (sending && c.client.in_flight() < c.client.window()) {
                if (stop_sending.load(std::memory_order_relaxed) || !budget.take()) {
                    sending = false;
                    break;
                }
                // With a deadline, as every client should send: the broker answers by then what
                // it could not serve (a service nobody serves, say), and zbench waits no longer.
                const auto id = c.client.queue(spec.service, body, spec.reply_timeout);
                if (!id) break;
                const bool measured = measuring.load(std::memory_order_relaxed);
                c.send_times.put(*id, SteadyClock::now(), measured);
                if (measured) ++tally.sent;
            }
            c.client.flush();  // what the replies freed goes as one message
            in_flight += c.client.in_flight();
            // Sending may have processed the commands that said a reply came: ask again. A
            // link replaced in this round has fresh sockets: look at them at once too.
            if ((c.several_brokers && ready_set.follow(c, i)) || c.client.readable())
                again.push_back(i);
        }
        tally.answered.store(answered, std::memory_order_relaxed);
        ready.swap(again);
        if (in_flight == 0 && !sending) return;
        if (!ready.empty()) continue;
        if (!ready_set.wait(ready, spec.reply_timeout)) {  // nothing in reply_timeout: lost
            tally.errors[protocol::Status::no_reply] += in_flight;
            return;
        }
    }
}

// Waits for a phase of the run and reports progress every kProgressInterval meanwhile.
class PhaseWaiter {
  public:
    PhaseWaiter(const std::vector<ClientTally>& tallies, RunningThreads& running,
                const ProgressCallback& on_progress)
        : tallies_(tallies), running_(running), on_progress_(on_progress) {}

    // A timed phase: warm-up, or the measured time.
    void wait_for(std::chrono::milliseconds length, LoadProgress progress) {
        const auto start = SteadyClock::now();
        const auto end = start + length;
        progress.total_s = std::chrono::duration<double>(length).count();
        for (auto next = start + kProgressInterval; next < end; next += kProgressInterval) {
            std::this_thread::sleep_until(next);
            report(start, progress);
        }
        std::this_thread::sleep_until(end);
    }

    // A run sized by count: until every driving thread has finished.
    void wait_for_threads(LoadProgress progress) {
        const auto start = SteadyClock::now();
        for (auto next = start + kProgressInterval; !running_.wait_until(next);
             next += kProgressInterval) {
            report(start, progress);
        }
    }

  private:
    void report(SteadyClock::time_point phase_start, LoadProgress& progress) {
        if (!on_progress_) return;
        const auto now = SteadyClock::now();
        std::uint64_t done = 0;
        for (const ClientTally& tally : tallies_)
            done += tally.answered.load(std::memory_order_relaxed);
        progress.elapsed_s = std::chrono::duration<double>(now - phase_start).count();
        progress.done = done;
        progress.requests_per_second = static_cast<double>(done - last_done_) /
                                       std::chrono::duration<double>(now - last_report_).count();
        last_done_ = done;
        last_report_ = now;
        on_progress_(progress);
    }

    const std::vector<ClientTally>& tallies_;
    RunningThreads& running_;
    const ProgressCallback& on_progress_;
    std::uint64_t last_done_ = 0;
    SteadyClock::time_point last_report_ = SteadyClock::now();
};

}  // namespace

std::uint64_t LoadResult::answered() const {
    std::uint64_t n = ok;
    for (const auto& [status, count] : errors) {
        if (status != protocol::Status::no_reply) n += count;
    }
    return n;
}

LoadResult run_load(const LoadSpec& spec, const ProgressCallback& on_progress) {
    // A count-sized run measures every request; a timed one warms up first.
    const bool timed = spec.requests == 0;
    Budget budget(spec.requests);
    std::atomic<bool> measuring{!timed};
    std::atomic<bool> stop_sending{false};
    // As many threads as cores at most; each drives its share of the connections.
    const std::size_t thread_count =
        std::min<std::size_t>(spec.clients, std::max(2u, std::thread::hardware_concurrency()));
    std::vector<ClientTally> tallies(thread_count);
    std::vector<std::thread> threads;
    RunningThreads running(thread_count);
    PhaseWaiter waiter(tallies, running, on_progress);
    const auto start = SteadyClock::now();
    for (std::size_t t = 0; t < thread_count; ++t) {
        const std::size_t count =
            spec.clients / thread_count + (t < spec.clients % thread_count ? 1 : 0);
        threads.emplace_back([&, t, count] {
            drive_connections(spec, count, budget, measuring, stop_sending, tallies[t]);
            running.one_finished();
        });
    }
    auto measured_from = start;
    if (timed) {
        waiter.wait_for(spec.warmup, {.warming_up = true});
        measured_from = SteadyClock::now();
        measuring = true;
        waiter.wait_for(spec.duration, {});
        stop_sending = true;
    } else {
        waiter.wait_for_threads({.total_requests = spec.requests});
    }
    for (auto& t : threads)
        t.join();
    const auto end = SteadyClock::now();

    LoadResult result;
    LatencyRecorder all;
    for (auto& tally : tallies) {
        result.sent += tally.sent;
        result.ok += tally.ok;
        result.answered_all += tally.answered.load(std::memory_order_relaxed);
        for (const auto& [status, count] : tally.errors)
            result.errors[status] += count;
        all.merge(tally.latency);
    }
    result.seconds = std::chrono::duration<double>(end - measured_from).count();
    result.latency = all.summarize();
    return result;
}

}  // namespace zbroker::bench
