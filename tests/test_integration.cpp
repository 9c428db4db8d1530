// End to end on loopback: real zbroker and zworker processes, the client library, faults.
#include <catch2/catch.hpp>

#include <signal.h>

#include <atomic>
#include <map>
#include <memory>
#include <thread>

#include "client/async_client.hpp"
#include "client/client.hpp"
#include "process_helpers.hpp"
#include "shared/child_process.hpp"
#include "shared/clock.hpp"
#include "shared/codec.hpp"
#include "worker/worker.hpp"

using namespace zbroker;
using namespace std::chrono_literals;
using protocol::Status;

namespace {

using testing::bin_dir;
using testing::eventually;
using testing::in_time;
using testing::kPatience;
using testing::kTooSlow;

// Said when an event that should come did not come within kPatience.
// For tests where nothing depends on how fast a death is noticed: a sanitizer build on a
// loaded 2-core machine can stall a process for hundreds of milliseconds, which a 100 ms
// heartbeat would take for a dead peer. Tests of liveness pass their own, shorter, interval.
constexpr int kCalmHeartbeatMs = 1000;

ChildProcess start_zworker(const std::string& endpoint, const std::string& service,
                           int heartbeat_ms = kCalmHeartbeatMs,
                           std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{
        bin_dir() + "/zworker",      "--broker", endpoint, "--service", service, "--heartbeat-ms",
        std::to_string(heartbeat_ms)};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return ChildProcess(std::move(argv));
}

// Broker and workers must agree on the heartbeat interval, or each takes the other for dead.
std::pair<ChildProcess, std::string> start_test_broker(int heartbeat_ms = kCalmHeartbeatMs,
                                                       std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--heartbeat-ms", std::to_string(heartbeat_ms)};
    args.insert(args.end(), extra.begin(), extra.end());
    return start_broker(bin_dir(), std::move(args));
}

std::string sleep_body(int ms) {
    return pack(std::map<std::string, int>{{"ms", ms}});
}

struct ServiceFigures {
    int workers = 0;
    int queued = 0;
    int in_flight = 0;
    MSGPACK_DEFINE_MAP(workers, queued, in_flight)
};

ServiceFigures figures(const std::string& endpoint, const std::string& service) {
    Client client(endpoint);
    const Response r = client.call(protocol::kMmiServices, "", {.timeout = 1000ms, .retries = 0});
    if (!r.ok()) return {};
    const msgpack::object_handle handle =
        unpack_object(r.body_view());  // owns what `all` points to
    const auto all = handle.get().as<std::map<std::string, msgpack::object>>();
    const auto it = all.find(service);
    return it == all.end() ? ServiceFigures{} : it->second.as<ServiceFigures>();
}

// Library workers on threads of the test; stopped and joined however the test ends, so that a
// failed REQUIRE never leaves a joinable thread (std::terminate) behind.
class WorkerThreads {
  public:
    WorkerThreads() = default;
    WorkerThreads(const WorkerThreads&) = delete;
    WorkerThreads& operator=(const WorkerThreads&) = delete;
    ~WorkerThreads() {
        for (auto& worker : workers_)
            worker->stop();
        for (auto& thread : threads_)
            thread.join();
    }

    // A worker for `endpoint` whose handlers are added by `setup`, then run on its own thread.
    template <typename Setup>
    void start(const std::string& endpoint, std::chrono::milliseconds heartbeat, Setup setup) {
        WorkerOptions options;
        options.endpoints = {endpoint};
        options.heartbeat_interval = heartbeat;
        Worker* worker = workers_.emplace_back(std::make_unique<Worker>(options)).get();
        setup(*worker);
        threads_.emplace_back([worker] { worker->run(); });
    }

  private:
    std::vector<std::unique_ptr<Worker>> workers_;
    std::vector<std::thread> threads_;
};

}  // namespace

TEST_CASE("load spreads over every worker") {
    auto [broker, endpoint] = start_test_broker();
    constexpr int kWorkers = 3;
    constexpr int kRequests = 30;
    std::array<std::atomic<int>, kWorkers> served{};
    WorkerThreads workers;
    for (int i = 0; i < kWorkers; ++i) {
        workers.start(endpoint, std::chrono::milliseconds(kCalmHeartbeatMs),
                      [&served, i](Worker& worker) {
                          worker.handle("work", [&served, i](Request& request) {
                              // Long next to a worker's own overhead, so that a worker briefly
                              // starved of CPU on a loaded machine loses a turn or two, not its
                              // share.
                              std::this_thread::sleep_for(50ms);
                              ++served[i];
                              return Reply::raw(request.body());
                          });
                      });
    }
    REQUIRE(in_time([&] { return figures(endpoint, "work").workers == kWorkers; }));

    AsyncClient client(endpoint, kRequests);
    for (int i = 0; i < kRequests; ++i)
        REQUIRE(client.send("work", std::to_string(i)));
    int ok = 0;
    while (client.in_flight() > 0) {
        auto done = client.receive(kPatience);
        INFO(kTooSlow);
        REQUIRE(done);
        ok += done->status == Status::ok ? 1 : 0;
    }
    REQUIRE(ok == kRequests);
    for (int i = 0; i < kWorkers; ++i) {
        INFO("worker " << i << " served " << served[i]);
        REQUIRE(served[i] >= kRequests / kWorkers / 2);  // least recently used first: turns
    }
}

TEST_CASE("a request whose worker is killed mid-job is answered by another worker") {
    // Short enough that the death is noticed soon, long enough that the rescuer, a thread of
    // this sanitized test on a loaded machine, is not taken for dead too.
    constexpr int kHeartbeatMs = 500;
    auto [broker, endpoint] = start_test_broker(kHeartbeatMs);
    ChildProcess doomed = start_zworker(endpoint, "sleep", kHeartbeatMs);
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").workers == 1; }));

    // A job far longer than the test: the doomed worker never finishes it, however slowly the
    // rescuer starts. The rescuer answers at once, and says it was the one.
    AsyncClient client(endpoint, 1);
    REQUIRE(client.send("sleep", sleep_body(600'000)));
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").in_flight == 1; }));
    WorkerThreads rescuer;
    rescuer.start(endpoint, std::chrono::milliseconds(kHeartbeatMs), [](Worker& worker) {
        worker.handle("sleep", [](Request&) { return Reply::raw("rescued"); });
    });
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").workers == 2; }));
    doomed.signal(SIGKILL);

    // Found by a heartbeat that finds it unroutable, or by its silence: either way re-queued.
    REQUIRE(broker.wait_for("1 request(s) re-queued", kPatience));
    const auto done = client.receive(kPatience);
    INFO(kTooSlow);
    REQUIRE(done);
    REQUIRE(done->status == Status::ok);
    REQUIRE(view(done->body.at(0)) == "rescued");
}

TEST_CASE("a job longer than many heartbeat intervals is not taken for a dead worker") {
    // 30 intervals of 100 ms, and 3 liveness windows of 10 intervals: a window of 1 s, so that
    // a process stalled by a loaded machine is not taken for dead while the job runs.
    const std::vector<std::string> liveness{"--liveness", "10"};
    auto [broker, endpoint] = start_test_broker(100, liveness);
    ChildProcess worker = start_zworker(endpoint, "sleep", 100, liveness);
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").workers == 1; }));
    Client client(endpoint);
    const Response r = client.call("sleep", sleep_body(3000), {.timeout = kPatience, .retries = 0});
    REQUIRE(r.status == Status::ok);
    REQUIRE(broker.output().find("missed its heartbeats") == std::string::npos);
}

TEST_CASE("SIGTERM drains the broker: every accepted request is answered, exit code 0") {
    // A drain that never times out, however slowly the held requests are served.
    auto [broker, endpoint] = start_test_broker(
        kCalmHeartbeatMs, {"--drain-timeout-ms", std::to_string(Millis(2 * kPatience).count())});
    ChildProcess w1 = start_zworker(endpoint, "sleep");
    ChildProcess w2 = start_zworker(endpoint, "sleep");
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").workers == 2; }));

    constexpr int kRequests = 20;
    AsyncClient client(endpoint, kRequests);
    for (int i = 0; i < kRequests; ++i)
        REQUIRE(client.send("sleep", sleep_body(50)));
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").in_flight == 2; }));
    broker.signal(SIGTERM);
    std::map<Status, int> outcomes;
    while (client.in_flight() > 0) {
        const auto done = client.receive(kPatience);
        INFO(kTooSlow);
        REQUIRE(done);
        ++outcomes[done->status];
    }
    REQUIRE(outcomes[Status::ok] == kRequests);
    REQUIRE(broker.wait(kPatience) == 0);
    REQUIRE(broker.output().find("told DISCONNECT") != std::string::npos);
}

TEST_CASE("SIGTERM to a worker lets its current job finish before it leaves") {
    auto [broker, endpoint] = start_test_broker();
    ChildProcess worker = start_zworker(endpoint, "sleep");
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").workers == 1; }));
    AsyncClient client(endpoint, 1);
    // Long enough to be still running when the signal comes on a slow machine.
    REQUIRE(client.send("sleep", sleep_body(2000)));
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").in_flight == 1; }));
    worker.signal(SIGTERM);
    const auto done = client.receive(kPatience);
    INFO(kTooSlow);
    REQUIRE(done);
    REQUIRE(done->status == Status::ok);
    REQUIRE(worker.wait(kPatience) == 0);
    REQUIRE(in_time([&] { return figures(endpoint, "sleep").workers == 0; }));
}

TEST_CASE("workers register again by themselves after the broker restarts") {
    // The worker finds the broker gone by its silence: liveness x this, 1.5 s.
    constexpr int kHeartbeatMs = 500;
    auto [first, endpoint] = start_test_broker(kHeartbeatMs);
    ChildProcess worker = start_zworker(endpoint, "echo", kHeartbeatMs);
    REQUIRE(in_time([&] { return figures(endpoint, "echo").workers == 1; }));
    first.signal(SIGKILL);
    REQUIRE(first.wait(kPatience));

    // The same port again: the worker only knows this endpoint.
    ChildProcess second({bin_dir() + "/zbroker", "--bind", endpoint, "--heartbeat-ms",
                         std::to_string(kHeartbeatMs)});
    REQUIRE(second.wait_for("listening on ", kPatience));
    REQUIRE(in_time([&] { return figures(endpoint, "echo").workers == 1; }));
    Client client(endpoint);
    const Response r = client.call("echo", "after restart", {.timeout = kPatience, .retries = 0});
    REQUIRE(r.status == Status::ok);
    REQUIRE(r.body_view() == "after restart");
}

TEST_CASE("a client that asks for a service nobody serves gets 503 at its deadline") {
    auto [broker, endpoint] = start_test_broker();
    // Not Client: it listens only a little past the deadline, and a loaded machine may
    // deliver the 503 later than that. The time it comes at is the broker's business.
    AsyncClient client(endpoint, 1);
    constexpr auto kDeadline = 300ms;
    const auto sent = now();
    REQUIRE(client.send("nobody", "x", kDeadline));
    const auto done = client.receive(kPatience);
    INFO(kTooSlow);
    REQUIRE(done);
    REQUIRE(done->status == Status::unavailable);
    REQUIRE(now() - sent >= kDeadline);  // not before it
}
