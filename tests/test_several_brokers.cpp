// Several brokers, no single point of failure: clients with a broker list spread their requests
// and move them off a broker that dies or drains; workers attach to every broker. At least
// once: nothing is lost, and what ran twice is counted and reported.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <catch2/catch.hpp>

#include "client/async_client.hpp"
#include "client/client.hpp"
#include "fault_helpers.hpp"
#include "worker/worker.hpp"

namespace {

using namespace zbroker;
using namespace zbroker::faults;
using testing::in_time;

// Brokers on ephemeral ports; one that is killed comes back on the endpoint it had.
class Brokers {
  public:
    explicit Brokers(int count) {
        for (int i = 0; i < count; ++i) {
            auto [process, endpoint] = start_test_broker();
            processes_.push_back(std::move(process));
            endpoints_.push_back(endpoint);
        }
    }
    const std::vector<std::string>& endpoints() const { return endpoints_; }
    const std::string& endpoint(std::size_t i) const { return endpoints_[i]; }

    void kill(std::size_t i) {
        processes_[i].signal(SIGKILL);
        REQUIRE(processes_[i].wait(kAnswerPatience));
    }
    void restart(std::size_t i) { processes_[i] = restart_broker(endpoints_[i]); }
    // SIGTERM: the broker drains and exits on its own; its exit code.
    std::optional<int> drain(std::size_t i) {
        processes_[i].signal(SIGTERM);
        return processes_[i].wait(testing::kPatience);
    }

  private:
    std::vector<ChildProcess> processes_;
    std::vector<std::string> endpoints_;
};

// How often each request body ran, over every worker: what ran twice.
class Executions {
  public:
    void ran(std::string_view body) {
        const std::lock_guard lock(mutex_);
        ++counts_[std::string(body)];
    }
    std::size_t distinct() const {
        const std::lock_guard lock(mutex_);
        return counts_.size();
    }
    std::size_t ran_twice() const {
        const std::lock_guard lock(mutex_);
        std::size_t twice = 0;
        for (const auto& [body, count] : counts_)
            twice += count > 1 ? 1 : 0;
        return twice;
    }

  private:
    mutable std::mutex mutex_;
    std::unordered_map<std::string, int> counts_;
};

// Workers on threads of this process, each attached to every broker, serving "work".
class Workers {
  public:
    Workers(int count, const std::vector<std::string>& brokers, Executions& executions,
            int credit = 0, std::chrono::milliseconds job_time = {}) {
        for (int i = 0; i < count; ++i) {
            WorkerOptions options;
            options.endpoints = brokers;
            options.heartbeat_interval = std::chrono::milliseconds(kHeartbeatMs);
            options.liveness = kLiveness;
            options.credit = credit;
            Worker& worker = *workers_.emplace_back(std::make_unique<Worker>(options));
            worker.handle("work", [&executions, job_time](Request& request) {
                executions.ran(request.body());
                if (job_time.count() > 0) std::this_thread::sleep_for(job_time);
                return Reply::raw(request.body());
            });
            threads_.emplace_back([&worker] { worker.run(); });
        }
    }
    ~Workers() {
        for (auto& worker : workers_)
            worker->stop();
        for (auto& thread : threads_)
            thread.join();
    }
    Worker& operator[](std::size_t i) { return *workers_[i]; }

  private:
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::thread> threads_;
};

// One client thread keeping `window` requests in flight over every broker until stopped, then
// waiting for all of them. Every body is unique, so Executions can tell what ran twice.
class Load {
  public:
    Load(int id, const std::vector<std::string>& brokers, std::size_t window)
        : thread_([this, id, brokers, window] { run(id, brokers, window); }) {}
    ~Load() { finish(); }

    void finish() {
        stop_ = true;
        if (thread_.joinable()) thread_.join();
    }
    std::uint64_t answered() const { return answered_.load(); }
    std::uint64_t sent() const { return sent_; }
    std::uint64_t resent() const { return resent_; }
    std::uint64_t still_in_flight() const { return still_in_flight_; }
    const std::map<protocol::Status, std::uint64_t>& statuses() const { return statuses_; }

  private:
    void run(int id, const std::vector<std::string>& brokers, std::size_t window) {
        AsyncClient client(brokers, window);
        const SendOptions options{std::chrono::milliseconds(60'000), std::nullopt, {}, {}};
        std::uint64_t next = 0;
        const auto take = [&](std::chrono::milliseconds timeout) {
            while (auto done = client.receive(timeout)) {
                ++statuses_[done->status];
                ++answered_;
                timeout = std::chrono::milliseconds(0);
            }
        };
        while (!stop_) {
            while (client.in_flight() < window) {
                const std::string body = "client" + std::to_string(id) + "-" + std::to_string(next);
                if (!client.queue("work", body, options)) break;
                ++next;
            }
            take(std::chrono::milliseconds(50));
        }
        const auto give_up = std::chrono::steady_clock::now() + testing::kPatience;
        while (client.in_flight() > 0 && std::chrono::steady_clock::now() < give_up)
            take(std::chrono::milliseconds(100));
        sent_ = next;
        resent_ = client.resent();
        still_in_flight_ = client.in_flight();
    }

    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> answered_{0};
    // Written by the thread, read after finish() joined it.
    std::uint64_t sent_ = 0;
    std::uint64_t resent_ = 0;
    std::uint64_t still_in_flight_ = 0;
    std::map<protocol::Status, std::uint64_t> statuses_;
    std::thread thread_;
};

std::uint64_t answered(const std::vector<std::unique_ptr<Load>>& loads) {
    std::uint64_t total = 0;
    for (const auto& load : loads)
        total += load->answered();
    return total;
}

// Waits until the clients have `more` answers beyond what they had: traffic flows.
bool flowing(const std::vector<std::unique_ptr<Load>>& loads, std::uint64_t more) {
    const std::uint64_t from = answered(loads);
    return in_time([&] { return answered(loads) >= from + more; });
}

// Each broker's worker count for "work", from mmi.services.
bool has_workers(const std::string& endpoint, int count) {
    Client client(endpoint);
    return worker_count(client, "work") == count;
}

// Waits until every worker is attached to every broker.
void require_attached(const Brokers& brokers, int workers) {
    for (const std::string& endpoint : brokers.endpoints())
        REQUIRE(in_time([&] { return has_workers(endpoint, workers); }));
}

// A finished load: every request it sent was answered 200 and ran at least once.
void require_all_served(const Load& load, const Executions& executions) {
    CHECK(load.still_in_flight() == 0);
    CHECK(load.statuses().size() == 1);
    CHECK(load.statuses().at(protocol::Status::ok) == load.sent());
    CHECK(executions.distinct() == load.sent());
}

}  // namespace

TEST_CASE("a client spreads requests over its brokers and moves them off one that dies") {
    Brokers brokers(2);
    Executions executions;
    Workers workers(2, brokers.endpoints(), executions);
    require_attached(brokers, 2);

    std::vector<std::unique_ptr<Load>> loads;
    loads.push_back(std::make_unique<Load>(0, brokers.endpoints(), 50));
    REQUIRE(flowing(loads, 200));
    brokers.kill(0);
    REQUIRE(flowing(loads, 200));  // the other broker carries it all
    loads[0]->finish();

    const Load& load = *loads[0];
    require_all_served(load, executions);
    std::fprintf(stderr, "one broker killed: %llu requests, %llu resent, %zu ran twice\n",
                 static_cast<unsigned long long>(load.sent()),
                 static_cast<unsigned long long>(load.resent()), executions.ran_twice());
}

TEST_CASE("brokers killed and restarted under load: every request is answered 200") {
    // At least 30 s by default, as the issue asks; ZBROKER_FAILOVER_SECONDS shortens it by hand.
    const auto duration = std::chrono::seconds(env_count("ZBROKER_FAILOVER_SECONDS", 30));
    constexpr int kBrokers = 3;
    constexpr int kWorkers = 6;
    Brokers brokers(kBrokers);
    Executions executions;
    Workers workers(kWorkers, brokers.endpoints(), executions);
    require_attached(brokers, kWorkers);

    std::vector<std::unique_ptr<Load>> loads;
    for (int id = 0; id < 2; ++id)
        loads.push_back(std::make_unique<Load>(id, brokers.endpoints(), 100));

    // Events, not a clock, pace the kills: traffic flows, a broker dies, traffic still flows
    // through the others, it comes back and every worker is attached to it again.
    const auto start = std::chrono::steady_clock::now();
    int kills = 0;
    while (kills < kBrokers || std::chrono::steady_clock::now() - start < duration) {
        const std::size_t victim = static_cast<std::size_t>(kills % kBrokers);
        REQUIRE(flowing(loads, 500));
        brokers.kill(victim);
        ++kills;
        REQUIRE(flowing(loads, 500));
        brokers.restart(victim);
        REQUIRE(in_time([&] { return has_workers(brokers.endpoint(victim), kWorkers); }));
    }
    REQUIRE(flowing(loads, 500));

    std::uint64_t sent = 0;
    std::uint64_t ok = 0;
    std::uint64_t resent = 0;
    for (const auto& load : loads) {
        load->finish();
        CHECK(load->still_in_flight() == 0);
        for (const auto& [status, count] : load->statuses()) {
            INFO("status " << protocol::status_text(status));
            CHECK(status == protocol::Status::ok);
            if (status == protocol::Status::ok) ok += count;
        }
        sent += load->sent();
        resent += load->resent();
    }
    CHECK(ok == sent);
    CHECK(executions.distinct() == sent);  // every request ran
    std::fprintf(stderr,
                 "%d kills in %.0f s: %llu requests all answered 200, %llu resent by clients, "
                 "%zu ran twice\n",
                 kills,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 static_cast<unsigned long long>(sent), static_cast<unsigned long long>(resent),
                 executions.ran_twice());
}

TEST_CASE("a broker drained under load: no errors, nothing runs twice") {
    Brokers brokers(2);
    Executions executions;
    Workers workers(2, brokers.endpoints(), executions);
    require_attached(brokers, 2);

    std::vector<std::unique_ptr<Load>> loads;
    loads.push_back(std::make_unique<Load>(0, brokers.endpoints(), 100));
    REQUIRE(flowing(loads, 300));
    REQUIRE(brokers.drain(0) == 0);
    REQUIRE(flowing(loads, 300));
    loads[0]->finish();

    const Load& load = *loads[0];
    require_all_served(load, executions);
    CHECK(executions.ran_twice() == 0);
}

TEST_CASE("a worker attached to three brokers holds no more than its credit") {
    Brokers brokers(3);
    Executions executions;
    constexpr int kCredit = 3;
    Workers workers(1, brokers.endpoints(), executions, kCredit, std::chrono::milliseconds(5));
    require_attached(brokers, 1);

    // Each broker has plenty queued for it, so each would fill whatever credit it was given.
    std::vector<std::unique_ptr<Load>> loads;
    for (int id = 0; id < 3; ++id)
        loads.push_back(std::make_unique<Load>(id, brokers.endpoints(), 30));
    REQUIRE(flowing(loads, 300));
    for (const auto& load : loads)
        load->finish();
    CHECK(workers[0].stats().most_held <= kCredit);
    CHECK(workers[0].stats().most_held >= 1);
}
