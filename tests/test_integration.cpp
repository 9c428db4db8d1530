// End to end on loopback: real zbroker and zworker processes, the client library, faults.
#include <catch2/catch.hpp>

#include <signal.h>

#include <atomic>
#include <map>
#include <thread>

#include "client/async_client.hpp"
#include "client/client.hpp"
#include "process_helpers.hpp"
#include "shared/child_process.hpp"
#include "shared/codec.hpp"
#include "worker/worker.hpp"

using namespace zbroker;
using namespace std::chrono_literals;
using protocol::Status;

namespace {

using testing::bin_dir;
using testing::eventually;

ChildProcess start_zworker(const std::string& endpoint, const std::string& service,
                           const std::string& heartbeat_ms = "100") {
    return ChildProcess({bin_dir() + "/zworker", "--broker", endpoint, "--service", service,
                         "--heartbeat-ms", heartbeat_ms});
}

// Broker and workers must agree on the heartbeat interval, or each takes the other for dead.
std::pair<ChildProcess, std::string> start_test_broker(const std::string& heartbeat_ms = "100") {
    return start_broker(bin_dir(), {"--heartbeat-ms", heartbeat_ms});
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

std::optional<Completion> receive_one(AsyncClient& client, std::chrono::milliseconds timeout) {
    return client.receive(timeout);
}

}  // namespace

TEST_CASE("load spreads over every worker") {
    auto [broker, endpoint] = start_test_broker();
    constexpr int kWorkers = 3;
    std::array<std::atomic<int>, kWorkers> served{};
    std::vector<std::unique_ptr<Worker>> workers;
    std::vector<std::thread> threads;
    for (int i = 0; i < kWorkers; ++i) {
        WorkerOptions options;
        options.endpoint = endpoint;
        options.heartbeat_interval = 100ms;
        Worker* worker = workers.emplace_back(std::make_unique<Worker>(options)).get();
        worker->handle("work", [&served, i](Request& request) {
            std::this_thread::sleep_for(10ms);
            ++served[i];
            return Reply::raw(request.body());
        });
        threads.emplace_back([worker] { worker->run(); });
    }
    REQUIRE(eventually([&] { return figures(endpoint, "work").workers == kWorkers; }));

    AsyncClient client(endpoint, 30);
    for (int i = 0; i < 30; ++i)
        REQUIRE(client.send("work", std::to_string(i)));
    int ok = 0;
    while (client.in_flight() > 0) {
        auto done = receive_one(client, 10'000ms);
        REQUIRE(done);
        ok += done->status == Status::ok ? 1 : 0;
    }
    for (auto& worker : workers)
        worker->stop();
    for (auto& t : threads)
        t.join();
    REQUIRE(ok == 30);
    for (int i = 0; i < kWorkers; ++i) {
        INFO("worker " << i);
        REQUIRE(served[i] >= 5);  // least recently used first: each takes its turn
    }
}

TEST_CASE("a request whose worker is killed mid-job is answered by another worker") {
    auto [broker, endpoint] = start_test_broker();
    ChildProcess doomed = start_zworker(endpoint, "sleep");
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").workers == 1; }));

    AsyncClient client(endpoint, 1);
    REQUIRE(client.send("sleep", sleep_body(1000)));
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").in_flight == 1; }));
    ChildProcess rescuer = start_zworker(endpoint, "sleep");
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").workers == 2; }));
    doomed.signal(SIGKILL);

    const auto done = client.receive(15'000ms);
    REQUIRE(done);
    REQUIRE(done->status == Status::ok);
    REQUIRE(unpack<std::map<std::string, int>>(view(done->body.at(0))).at("slept_ms") == 1000);
    REQUIRE(broker.output().find("missed its heartbeats") != std::string::npos);
}

TEST_CASE("a job longer than many heartbeat intervals is not taken for a dead worker") {
    auto [broker, endpoint] = start_test_broker("50");
    ChildProcess worker = start_zworker(endpoint, "sleep", "50");
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").workers == 1; }));
    Client client(endpoint);
    const Response r = client.call("sleep", sleep_body(1500), {.timeout = 10'000ms, .retries = 0});
    REQUIRE(r.status == Status::ok);
    REQUIRE(broker.output().find("missed its heartbeats") == std::string::npos);
}

TEST_CASE("SIGTERM drains the broker: every accepted request is answered, exit code 0") {
    auto [broker, endpoint] = start_test_broker();
    ChildProcess w1 = start_zworker(endpoint, "sleep");
    ChildProcess w2 = start_zworker(endpoint, "sleep");
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").workers == 2; }));

    constexpr int kRequests = 20;
    AsyncClient client(endpoint, kRequests);
    for (int i = 0; i < kRequests; ++i)
        REQUIRE(client.send("sleep", sleep_body(50)));
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").in_flight == 2; }));
    broker.signal(SIGTERM);
    std::map<Status, int> outcomes;
    while (client.in_flight() > 0) {
        const auto done = client.receive(10'000ms);
        REQUIRE(done);
        ++outcomes[done->status];
    }
    REQUIRE(outcomes[Status::ok] == kRequests);
    REQUIRE(broker.wait(10'000ms) == 0);
    REQUIRE(broker.output().find("told DISCONNECT") != std::string::npos);
}

TEST_CASE("SIGTERM to a worker lets its current job finish before it leaves") {
    auto [broker, endpoint] = start_test_broker();
    ChildProcess worker = start_zworker(endpoint, "sleep");
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").workers == 1; }));
    AsyncClient client(endpoint, 1);
    REQUIRE(client.send("sleep", sleep_body(500)));
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").in_flight == 1; }));
    worker.signal(SIGTERM);
    const auto done = client.receive(10'000ms);
    REQUIRE(done);
    REQUIRE(done->status == Status::ok);
    REQUIRE(worker.wait(10'000ms) == 0);
    REQUIRE(eventually([&] { return figures(endpoint, "sleep").workers == 0; }));
}

TEST_CASE("workers register again by themselves after the broker restarts") {
    auto [first, endpoint] = start_test_broker();
    ChildProcess worker = start_zworker(endpoint, "echo");
    REQUIRE(eventually([&] { return figures(endpoint, "echo").workers == 1; }));
    first.signal(SIGKILL);
    first.wait(5000ms);

    // The same port again: the worker only knows this endpoint.
    ChildProcess second({bin_dir() + "/zbroker", "--bind", endpoint, "--heartbeat-ms", "100"});
    REQUIRE(second.wait_for("listening on ", 10'000ms));
    REQUIRE(eventually([&] { return figures(endpoint, "echo").workers == 1; }, 15'000ms));
    Client client(endpoint);
    const Response r = client.call("echo", "after restart", {.timeout = 2000ms, .retries = 2});
    REQUIRE(r.status == Status::ok);
    REQUIRE(r.body_view() == "after restart");
}

TEST_CASE("a client that asks for a service nobody serves gets 503 at its deadline") {
    auto [broker, endpoint] = start_test_broker();
    Client client(endpoint);
    const Response r = client.call("nobody", "x", {.timeout = 300ms, .retries = 0});
    REQUIRE(r.status == Status::unavailable);
}
