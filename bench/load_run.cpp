// Client threads driving AsyncClient: fill the window, take one reply, refill; time each one.
#include "load_run.hpp"

#include <atomic>
#include <thread>
#include <vector>

#include "client/async_client.hpp"

namespace zbroker::bench {
namespace {

using SteadyClock = std::chrono::steady_clock;

struct ClientTally {
    std::uint64_t sent = 0;
    std::uint64_t ok = 0;
    std::map<protocol::Status, std::uint64_t> errors;
    LatencyRecorder latency;
};

// Send times by request id, and whether the request counts (sent after the warm-up). Ids
// grow by one per request, so a ring well above the window holds every one in flight.
class SendTimes {
  public:
    struct Sent {
        std::uint64_t id = ~std::uint64_t{0};
        SteadyClock::time_point at;
        bool measured = false;
    };
    explicit SendTimes(std::size_t window) {
        std::size_t size = 16;
        while (size < 4 * window)
            size *= 2;
        slots_.resize(size);
    }
    void put(std::uint64_t id, SteadyClock::time_point at, bool measured) {
        slots_[id & (slots_.size() - 1)] = {id, at, measured};
    }
    const Sent* find(std::uint64_t id) const {
        const Sent& slot = slots_[id & (slots_.size() - 1)];
        return slot.id == id ? &slot : nullptr;
    }

  private:
    std::vector<Sent> slots_;
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

void drive_client(const LoadSpec& spec, Budget& budget, const std::atomic<bool>& measuring,
                  const std::atomic<bool>& stop_sending, ClientTally& tally) {
    AsyncClient client(spec.endpoint, spec.inflight);
    SendTimes send_times(spec.inflight);
    const std::string body(spec.size, 'x');
    tally.latency.reserve(spec.requests > 0 ? spec.requests / spec.clients + 16 : 1 << 20);
    bool sending = true;
    while (true) {
        while (sending && client.in_flight() < client.window()) {
            if (stop_sending.load(std::memory_order_relaxed) || !budget.take()) {
                sending = false;
                break;
            }
            const auto id = client.send(spec.service, body);
            if (!id) break;
            const bool measured = measuring.load(std::memory_order_relaxed);
            send_times.put(*id, SteadyClock::now(), measured);
            if (measured) ++tally.sent;
        }
        if (client.in_flight() == 0) {
            if (!sending) return;
            continue;
        }
        auto done = client.receive(spec.reply_timeout);
        if (!done) {  // nothing in reply_timeout: whatever is in flight is lost
            tally.errors[protocol::Status::no_reply] += client.in_flight();
            return;
        }
        const SendTimes::Sent* sent = send_times.find(done->id);
        if (sent == nullptr || !sent->measured) continue;  // warm-up
        if (done->status == protocol::Status::ok) {
            ++tally.ok;
            tally.latency.add(SteadyClock::now() - sent->at);
        } else {
            ++tally.errors[done->status];
        }
    }
}

}  // namespace

std::uint64_t LoadResult::answered() const {
    std::uint64_t n = ok;
    for (const auto& [status, count] : errors) {
        if (status != protocol::Status::no_reply) n += count;
    }
    return n;
}

LoadResult run_load(const LoadSpec& spec) {
    // A count-sized run measures every request; a timed one warms up first.
    const bool timed = spec.requests == 0;
    Budget budget(spec.requests);
    std::atomic<bool> measuring{!timed};
    std::atomic<bool> stop_sending{false};
    std::vector<ClientTally> tallies(spec.clients);
    std::vector<std::thread> threads;
    const auto start = SteadyClock::now();
    for (std::size_t i = 0; i < spec.clients; ++i) {
        threads.emplace_back(
            [&, i] { drive_client(spec, budget, measuring, stop_sending, tallies[i]); });
    }
    auto measured_from = start;
    if (timed) {
        std::this_thread::sleep_for(spec.warmup);
        measured_from = SteadyClock::now();
        measuring = true;
        std::this_thread::sleep_for(spec.duration);
        stop_sending = true;
    }
    for (auto& t : threads)
        t.join();
    const auto end = SteadyClock::now();

    LoadResult result;
    LatencyRecorder all;
    for (auto& tally : tallies) {
        result.sent += tally.sent;
        result.ok += tally.ok;
        for (const auto& [status, count] : tally.errors)
            result.errors[status] += count;
        all.merge(tally.latency);
    }
    result.seconds = std::chrono::duration<double>(end - measured_from).count();
    result.latency = all.summarize();
    return result;
}

}  // namespace zbroker::bench
