// The worker library against a fake broker: a ROUTER speaking raw 7/MDP frames on an ephemeral
// port.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "process_helpers.hpp"
#include "shared/clock.hpp"
#include "shared/codec.hpp"
#include "worker/builtin_services.hpp"
#include "worker/payload.hpp"
#include "worker/worker.hpp"

using namespace zbroker;
using namespace std::chrono_literals;
using protocol::WorkerCommand;
using testing::eventually;
using testing::in_time;
using testing::kPatience;
using testing::kTooSlow;

namespace {

// Said when an event that should come did not come within kPatience: under TSan on a loaded
// 2-core machine everything runs 10-20x slower, so a timeout may mean that, not a bug.
// Reply frames after the routing id: "" MDPW01 0x03 token "" body...
constexpr std::size_t kToken = 3;
constexpr std::size_t kBody = 5;

std::string command_byte(WorkerCommand command) {
    return std::string(1, static_cast<char>(command));
}

// One message the fake broker received: the worker's routing id and the frames after it.
struct Received {
    std::string identity;
    Frames frames;

    std::optional<WorkerCommand> command() const {
        if (frames.size() < 3 || frames[2].size() != 1) return std::nullopt;
        return static_cast<WorkerCommand>(view(frames[2])[0]);
    }
    std::string at(std::size_t index) const { return std::string(view(frames.at(index))); }
    std::vector<std::string> body() const {
        std::vector<std::string> parts;
        for (std::size_t i = kBody; i < frames.size(); ++i)
            parts.push_back(at(i));
        return parts;
    }
};

// A broker stand-in: a ROUTER bound on 127.0.0.1 that sends and reads raw MDP worker frames.
class FakeBroker {
  public:
    FakeBroker() : router_(context_, zmq::socket_type::router) {
        router_.set(zmq::sockopt::linger, 0);
        router_.bind("tcp://127.0.0.1:*");
        endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    }

    const std::string& endpoint() const { return endpoint_; }

    // The next message within `timeout`, whatever it is.
    std::optional<Received> receive(Millis timeout) {
        zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
        zmq::poll(items, 1, std::max(timeout, Millis{0}));
        if ((items[0].revents & ZMQ_POLLIN) == 0) return std::nullopt;
        Frames frames;
        recv_frames(router_, frames);
        Received received;
        received.identity = std::string(view(frames.front()));
        frames.erase(frames.begin());
        received.frames = std::move(frames);
        return received;
    }

    // The next message carrying `command` within `timeout`; others (heartbeats) are skipped.
    // For what should not come: a short window, as a slow machine can only make it pass.
    std::optional<Received> next(WorkerCommand command, Millis timeout) {
        const auto deadline = now() + timeout;
        while (now() < deadline) {
            auto received = receive(std::chrono::ceil<Millis>(deadline - now()));
            if (received && received->command() == command) return received;
        }
        return std::nullopt;
    }

    // The next message carrying `command`, which should come: waits up to kPatience.
    std::optional<Received> expect(WorkerCommand command) {
        auto received = next(command, kPatience);
        if (!received)
            UNSCOPED_INFO("no command " << static_cast<int>(command) << ": " << kTooSlow);
        return received;
    }

    void send(const std::string& identity, const std::vector<std::string>& parts) {
        Frames frames;
        frames.push_back(frame(identity));
        for (const std::string& part : parts)
            frames.push_back(frame(part));
        REQUIRE(send_frames(router_, frames) == SendResult::sent);
    }

    void send_command(const std::string& identity, WorkerCommand command) {
        send(identity, {"", std::string(protocol::kMdpWorker), command_byte(command)});
    }

    void send_request(const std::string& identity, const std::string& token,
                      const std::vector<std::string>& body) {
        std::vector<std::string> parts{"", std::string(protocol::kMdpWorker),
                                       command_byte(WorkerCommand::request), token, ""};
        parts.insert(parts.end(), body.begin(), body.end());
        send(identity, parts);
    }

  private:
    zmq::context_t context_{1};
    zmq::socket_t router_;
    std::string endpoint_;
};

// Runs a worker on its own thread; the destructor always stops and joins it, even when a
// REQUIRE fails, so that no test leaves a thread behind.
class RunningWorker {
  public:
    explicit RunningWorker(Worker& worker)
        : worker_(worker), thread_([this] {
              try {
                  worker_.run();
              } catch (const std::exception& e) {
                  error_ = e.what();
              }
          }) {}
    ~RunningWorker() { stop_and_join(); }
    RunningWorker(const RunningWorker&) = delete;
    RunningWorker& operator=(const RunningWorker&) = delete;

    void stop_and_join() {
        worker_.stop();
        if (thread_.joinable()) thread_.join();
    }
    const std::string& error() const { return error_; }

  private:
    Worker& worker_;
    std::string error_;
    std::thread thread_;
};

// Options for a worker of the fake broker, which never sends heartbeats: quick heartbeats,
// but a liveness window (twice the patience of any wait) so long that only the tests about
// liveness ever see the broker declared dead, however slow the machine.
WorkerOptions options_for(const FakeBroker& broker) {
    WorkerOptions options;
    options.endpoint = broker.endpoint();
    options.heartbeat_interval = 50ms;
    options.liveness = static_cast<int>(2 * kPatience / options.heartbeat_interval);
    options.reconnect_delay = 50ms;
    return options;
}

Reply echo_handler(Request& request) {
    return Reply::frames(std::move(request.frames));
}

// A handler that must still be running when the test does something waits here until the
// test opens it; for kPatience at most, so that a failed test never leaves a thread blocked.
// (A handler runs on a pool thread, where Catch2 must not be used: the test checks outcomes.)
class Gate {
  public:
    void open() { open_ = true; }
    void wait() const {
        eventually([this] { return open_.load(); });
    }

  private:
    std::atomic<bool> open_{false};
};

// Captures what the worker library logs while it lives, to wait on a log line as an event.
// Installed before the worker's threads start and removed after they stop: spdlog's default
// logger must not be swapped while another thread logs.
class LogCapture {
  public:
    LogCapture()
        : previous_(spdlog::default_logger()),
          sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1000)) {
        auto logger = std::make_shared<spdlog::logger>("capture", sink_);
        logger->set_level(spdlog::level::debug);
        spdlog::set_default_logger(std::move(logger));
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    bool contains(const std::string& marker) const {
        for (const std::string& line : sink_->last_formatted())
            if (line.find(marker) != std::string::npos) return true;
        return false;
    }
    // Waits up to kPatience for a line containing `marker`.
    bool wait_for(const std::string& marker) const {
        if (eventually([&] { return contains(marker); })) return true;
        UNSCOPED_INFO("the worker never logged '" << marker << "': " << kTooSlow);
        return false;
    }

  private:
    std::shared_ptr<spdlog::logger> previous_;
    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

std::string error_of(const std::string& body) {
    return unpack<std::map<std::string, std::string>>(body).at("error");
}

}  // namespace

// ---- Registration and options ------------------------------------------------------------

TEST_CASE("a worker rejects options out of range with the value in the message") {
    WorkerOptions options;
    options.threads = 0;
    REQUIRE_THROWS_WITH(Worker(options), Catch::Contains("threads is 0"));
    options.threads = 1;
    options.liveness = 0;
    REQUIRE_THROWS_AS(Worker(options), std::invalid_argument);
}

TEST_CASE("a worker refuses mmi. services, empty names and duplicates") {
    Worker worker(WorkerOptions{});
    REQUIRE_THROWS_AS(worker.handle("mmi.service", echo_handler), std::invalid_argument);
    REQUIRE_THROWS_AS(worker.handle("", echo_handler), std::invalid_argument);
    worker.handle("echo", echo_handler);
    REQUIRE_THROWS_WITH(worker.handle("echo", echo_handler), Catch::Contains("twice"));
}

TEST_CASE("Reply::error is a msgpack map with the message under \"error\"") {
    const Reply reply = Reply::error("it broke");
    REQUIRE(reply.body.size() == 1);
    REQUIRE(error_of(std::string(view(reply.body[0]))) == "it broke");
}

// ---- The MDP conversation ----------------------------------------------------------------

TEST_CASE("READY carries the service name and the configured credit") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 7;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker);

    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);
    REQUIRE(ready->frames.size() == 5);
    REQUIRE(ready->at(0).empty());
    REQUIRE(ready->at(1) == protocol::kMdpWorker);
    REQUIRE(ready->at(3) == "svc");
    REQUIRE(ready->at(4) == "7");
}

TEST_CASE("credit defaults to the number of handler threads") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = 3;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker);

    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);
    REQUIRE(ready->at(4) == "3");
}

TEST_CASE("each service registers over its own connection") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("a", echo_handler);
    worker.handle("b", echo_handler);
    RunningWorker running(worker);

    const auto first = broker.expect(WorkerCommand::ready);
    const auto second = broker.expect(WorkerCommand::ready);
    REQUIRE(first);
    REQUIRE(second);
    REQUIRE(first->identity != second->identity);
    std::vector<std::string> services{first->at(3), second->at(3)};
    std::sort(services.begin(), services.end());
    REQUIRE(services == std::vector<std::string>{"a", "b"});
}

TEST_CASE("a REQUEST gets a REPLY with the same token and the handler's frames") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("reverse", [](Request& request) {
        std::reverse(request.frames.begin(), request.frames.end());
        return Reply::frames(std::move(request.frames));
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    const std::string token("\x00\x01token\xff", 8);
    broker.send_request(ready->identity, token, {"abc", "def"});
    const auto reply = broker.expect(WorkerCommand::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == ready->identity);
    REQUIRE(reply->at(0).empty());
    REQUIRE(reply->at(1) == protocol::kMdpWorker);
    REQUIRE(reply->at(kToken) == token);
    REQUIRE(reply->at(kToken + 1).empty());
    REQUIRE(reply->body() == std::vector<std::string>{"def", "abc"});
    running.stop_and_join();
    REQUIRE(worker.stats().served == 1);
}

TEST_CASE("Request::as decodes msgpack and Reply::of encodes it") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("double", [](Request& request) { return Reply::of(request.as<int>() * 2); });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    broker.send_request(ready->identity, "t", {pack(21)});
    const auto reply = broker.expect(WorkerCommand::reply);
    REQUIRE(reply);
    REQUIRE(unpack<int>(reply->at(kBody)) == 42);
}

TEST_CASE("with credit N and N threads, N requests run at the same time") {
    constexpr int kParallel = 4;
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = kParallel;
    Worker worker(options);
    std::atomic<int> running_now{0};
    std::atomic<int> most_at_once{0};
    worker.handle("wait", [&](Request&) {
        const int mine = ++running_now;
        int seen = most_at_once.load();
        while (mine > seen && !most_at_once.compare_exchange_weak(seen, mine)) {
        }
        // Each job waits (bounded) until all of them run: only true parallelism gets there.
        const bool together = eventually([&] { return most_at_once.load() == kParallel; });
        --running_now;
        return Reply::raw(together ? "together" : "alone");
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);
    REQUIRE(ready->at(4) == std::to_string(kParallel));

    for (int i = 0; i < kParallel; ++i)
        broker.send_request(ready->identity, std::to_string(i), {});
    for (int i = 0; i < kParallel; ++i) {
        const auto reply = broker.expect(WorkerCommand::reply);
        REQUIRE(reply);
        INFO("\"alone\": a job waited in vain for the others to start; " << kTooSlow);
        REQUIRE(reply->at(kBody) == "together");
    }
    REQUIRE(most_at_once == kParallel);
}

TEST_CASE("heartbeats keep flowing while a handler runs longer than the liveness window") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    // A window of 1 s: long enough that a stalled thread on a loaded machine is not taken for
    // a dead broker, short enough that the job below outlasts it twice.
    options.heartbeat_interval = 100ms;
    options.liveness = 10;
    const Millis window = options.heartbeat_interval * options.liveness;
    Worker worker(options);
    std::atomic<bool> started{false};
    Gate done;
    worker.handle("slow", [&](Request&) {
        started = true;
        done.wait();
        return Reply::raw("done");
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    // The job ends only once the worker has sent heartbeats while it ran and the job has
    // outlasted the liveness window twice: events, so a slow machine only makes it longer.
    constexpr int kHeartbeatsDuringJob = 5;
    broker.send_request(ready->identity, "t", {});
    int heartbeats = 0;
    int readies = 0;
    std::optional<TimePoint> job_seen_at;
    std::optional<Received> reply;
    const auto deadline = now() + kPatience + 2 * window;
    auto next_heartbeat = now();
    while (!reply && now() < deadline) {
        if (now() >= next_heartbeat) {
            broker.send_command(ready->identity, WorkerCommand::heartbeat);
            next_heartbeat = now() + options.heartbeat_interval;
        }
        if (!job_seen_at && started) job_seen_at = now();
        if (job_seen_at && heartbeats >= kHeartbeatsDuringJob && now() - *job_seen_at >= 2 * window)
            done.open();
        auto received = broker.receive(10ms);
        if (!received) continue;
        if (received->command() == WorkerCommand::heartbeat && job_seen_at) ++heartbeats;
        if (received->command() == WorkerCommand::ready) ++readies;
        if (received->command() == WorkerCommand::reply) reply = std::move(received);
    }
    INFO("worker heartbeats during the job: " << heartbeats << "; " << kTooSlow);
    REQUIRE(reply);
    REQUIRE(reply->identity == ready->identity);
    REQUIRE(heartbeats >= kHeartbeatsDuringJob);
    REQUIRE(readies == 0);
    running.stop_and_join();
    REQUIRE(worker.stats().reconnects == 0);
}

TEST_CASE("a handler that throws gets an error reply and the worker keeps serving") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("picky", [](Request& request) {
        if (request.body() == "boom") throw std::runtime_error("boom happened");
        return Reply::raw(request.body());
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    broker.send_request(ready->identity, "1", {"boom"});
    const auto failed = broker.expect(WorkerCommand::reply);
    REQUIRE(failed);
    REQUIRE(failed->at(kToken) == "1");
    REQUIRE(error_of(failed->at(kBody)) == "boom happened");

    broker.send_request(ready->identity, "2", {"fine"});
    const auto served = broker.expect(WorkerCommand::reply);
    REQUIRE(served);
    REQUIRE(served->at(kToken) == "2");
    REQUIRE(served->at(kBody) == "fine");
    running.stop_and_join();
    REQUIRE(worker.stats().failed == 1);
    REQUIRE(worker.stats().served == 1);
}

TEST_CASE("a payload of the wrong shape gets an error reply naming the problem") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("double", [](Request& request) { return Reply::of(request.as<int>() * 2); });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    broker.send_request(ready->identity, "t", {pack(std::string("twenty-one"))});
    const auto reply = broker.expect(WorkerCommand::reply);
    REQUIRE(reply);
    REQUIRE_THAT(error_of(reply->at(kBody)), Catch::Contains("wrong shape"));
}

TEST_CASE("DISCONNECT from the broker makes the worker reconnect and send READY again") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("svc", echo_handler);
    RunningWorker running(worker);
    const auto first = broker.expect(WorkerCommand::ready);
    REQUIRE(first);

    broker.send_command(first->identity, WorkerCommand::disconnect);
    const auto second = broker.expect(WorkerCommand::ready);
    REQUIRE(second);
    REQUIRE(second->identity != first->identity);  // a new socket, a new session
    REQUIRE(second->at(3) == "svc");

    broker.send_request(second->identity, "t", {"after"});
    const auto reply = broker.expect(WorkerCommand::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == second->identity);
    running.stop_and_join();
    REQUIRE(worker.stats().reconnects == 1);
}

TEST_CASE("a silent broker is declared dead after liveness intervals and the worker reconnects") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.liveness = 3;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    // Taken before the worker connects, so the silence it measures is at least what the
    // worker measured, however slowly its first READY travelled.
    const auto started = now();
    RunningWorker running(worker);
    const auto first = broker.expect(WorkerCommand::ready);
    REQUIRE(first);

    const auto second = broker.expect(WorkerCommand::ready);
    REQUIRE(second);
    REQUIRE(second->identity != first->identity);
    // Not before liveness x interval of silence (plus the reconnect delay, left as slack).
    REQUIRE(now() - started >= options.heartbeat_interval * options.liveness);
    running.stop_and_join();
    REQUIRE(worker.stats().reconnects >= 1);
}

TEST_CASE("a reply to a request from before a reconnect is dropped, never sent on the new one") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    std::atomic<bool> started{false};
    Gate finish;
    worker.handle("slow", [&](Request&) {
        started = true;
        finish.wait();
        return Reply::raw("stale");
    });
    RunningWorker running(worker);
    const auto first = broker.expect(WorkerCommand::ready);
    REQUIRE(first);

    broker.send_request(first->identity, "t", {});
    REQUIRE(in_time([&] { return started.load(); }));
    broker.send_command(first->identity, WorkerCommand::disconnect);
    REQUIRE(broker.expect(WorkerCommand::ready));
    // The job ends only now, with the new connection up: the reply has a connection to go
    // out on, and must not take it.
    finish.open();
    REQUIRE(in_time([&] { return worker.stats().dropped_replies == 1; }));
    REQUIRE_FALSE(broker.next(WorkerCommand::reply, 500ms));
    running.stop_and_join();
    REQUIRE(worker.stats().dropped_replies == 1);
}

TEST_CASE("stop() lets the running job finish and reply, then sends DISCONNECT") {
    FakeBroker broker;
    const LogCapture log;  // before the worker: outlives its threads
    Worker worker(options_for(broker));
    std::atomic<bool> started{false};
    Gate finish;
    worker.handle("slow", [&](Request&) {
        started = true;
        finish.wait();
        return Reply::raw("finished");
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    broker.send_request(ready->identity, "t", {});
    REQUIRE(in_time([&] { return started.load(); }));
    worker.stop();
    // The job is still running when the worker starts stopping; only then may it finish.
    REQUIRE(log.wait_for("stopping: finishing 1 job(s) in hand"));
    finish.open();
    std::vector<WorkerCommand> seen;
    const auto deadline = now() + kPatience;
    while (now() < deadline && (seen.empty() || seen.back() != WorkerCommand::disconnect)) {
        auto received = broker.receive(50ms);
        if (!received || received->command() == WorkerCommand::heartbeat) continue;
        REQUIRE(received->command());
        seen.push_back(*received->command());
        if (received->command() == WorkerCommand::reply) REQUIRE(received->at(kBody) == "finished");
    }
    INFO(kTooSlow);
    REQUIRE(seen == std::vector<WorkerCommand>{WorkerCommand::reply, WorkerCommand::disconnect});
    running.stop_and_join();
    REQUIRE(running.error().empty());
}

TEST_CASE("a request that arrives after stop() is not started") {
    FakeBroker broker;
    const LogCapture log;  // before the worker: outlives its threads
    Worker worker(options_for(broker));
    std::atomic<int> calls{0};
    Gate finish;
    worker.handle("slow", [&](Request&) {
        ++calls;
        finish.wait();
        return Reply::raw("finished");
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    broker.send_request(ready->identity, "first", {});
    REQUIRE(in_time([&] { return calls.load() == 1; }));
    worker.stop();
    broker.send_request(ready->identity, "late", {});
    // The first job holds the worker open until the late request has been read and refused.
    REQUIRE(log.wait_for("not starting a request for 'slow'"));
    finish.open();
    int replies = 0;
    REQUIRE(in_time([&] {
        auto received = broker.receive(50ms);
        if (received && received->command() == WorkerCommand::reply) ++replies;
        return received && received->command() == WorkerCommand::disconnect;
    }));
    running.stop_and_join();
    REQUIRE(replies == 1);
    REQUIRE(calls == 1);
}

TEST_CASE("a worker stopped before it runs returns at once") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("svc", echo_handler);
    worker.stop();
    RunningWorker running(worker);
    running.stop_and_join();
    REQUIRE(running.error().empty());
}

TEST_CASE("run() with an unusable endpoint throws and leaves no thread behind") {
    WorkerOptions options;
    options.endpoint = "nonsense://nowhere";
    options.threads = 2;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    REQUIRE_THROWS_AS(worker.run(), zmq::error_t);
}

TEST_CASE("malformed broker messages are ignored and the worker keeps serving") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    std::atomic<int> calls{0};
    worker.handle("svc", [&](Request& request) {
        ++calls;
        return Reply::raw(request.body());
    });
    RunningWorker running(worker);
    const auto ready = broker.expect(WorkerCommand::ready);
    REQUIRE(ready);

    const std::string mdpw(protocol::kMdpWorker);
    const std::string request = command_byte(WorkerCommand::request);
    const std::vector<std::vector<std::string>> malformed{
        {""},
        {"", mdpw},
        {"x", mdpw, request, "tok", "", "body"},
        {"", std::string(protocol::kMdpClient), request, "tok", "", "body"},
        {"", mdpw, request + request},
        {"", mdpw, ""},
        {"", mdpw, std::string(1, '\x09')},
        {"", mdpw, request},
        {"", mdpw, request, "tok"},
        {"", mdpw, request, "tok", "not empty", "body"},
        {"", mdpw, command_byte(WorkerCommand::ready), "svc"},
        {"", mdpw, command_byte(WorkerCommand::reply), "tok", "", "body"},
    };
    for (const auto& message : malformed)
        broker.send(ready->identity, message);
    broker.send_request(ready->identity, "good", {"still here"});

    const auto reply = broker.expect(WorkerCommand::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == ready->identity);
    REQUIRE(reply->at(kToken) == "good");
    REQUIRE(reply->at(kBody) == "still here");
    running.stop_and_join();
    REQUIRE(calls == 1);
    REQUIRE(worker.stats().malformed == malformed.size());
    REQUIRE(worker.stats().reconnects == 0);
}

// ---- Built-in services -------------------------------------------------------------------

namespace {

// A worker offering every built-in service to a fake broker, and a call() that goes through it.
class BuiltinServices {
  public:
    BuiltinServices() : worker_(options_for(broker_)) {
        for (const std::string& name : builtin_service_names())
            add_builtin_service(worker_, name);
        running_.emplace(worker_);
        for (std::size_t i = 0; i < builtin_service_names().size(); ++i) {
            const auto ready = broker_.expect(WorkerCommand::ready);
            REQUIRE(ready);
            identities_[ready->at(3)] = ready->identity;
        }
    }

    std::vector<std::string> call(const std::string& service,
                                  const std::vector<std::string>& body) {
        broker_.send_request(identities_.at(service), "token", body);
        const auto reply = broker_.expect(WorkerCommand::reply);
        REQUIRE(reply);
        REQUIRE(reply->at(kToken) == "token");
        return reply->body();
    }

    std::string call_one(const std::string& service, const std::string& body) {
        const auto parts = call(service, {body});
        REQUIRE(parts.size() == 1);
        return parts[0];
    }

  private:
    FakeBroker broker_;
    Worker worker_;
    std::map<std::string, std::string> identities_;
    std::optional<RunningWorker> running_;  // last: stopped and joined before the rest goes
};

}  // namespace

TEST_CASE("echo returns every body frame unchanged") {
    BuiltinServices services;
    const std::vector<std::string> body{"a", "", std::string("\x00\xff", 2)};
    REQUIRE(services.call("echo", body) == body);
}

TEST_CASE("hello answers Hello, Client! to Hello, Server!") {
    BuiltinServices services;
    const auto reply = services.call_one("hello", pack(std::string("Hello, Server!")));
    REQUIRE(unpack<std::string>(reply) == "Hello, Client!");
}

TEST_CASE("hello greets a name") {
    BuiltinServices services;
    REQUIRE(unpack<std::string>(services.call_one("hello", pack(std::string("Ada")))) ==
            "Hello, Ada!");
}

TEST_CASE("hello greets a stranger when the body is empty or msgpack but not a string") {
    BuiltinServices services;
    const auto empty = services.call("hello", {});
    REQUIRE(empty.size() == 1);
    REQUIRE(unpack<std::string>(empty[0]) == "Hello, stranger!");
    REQUIRE(unpack<std::string>(services.call_one("hello", pack(42))) == "Hello, stranger!");
}

// The seed's own exchange: a plain socket example sends these 14 bytes, not msgpack.
TEST_CASE("hello answers the raw bytes Hello, Client! to the raw bytes Hello, Server!") {
    BuiltinServices services;
    REQUIRE(services.call_one("hello", "Hello, Server!") == "Hello, Client!");
}

TEST_CASE("hello greets a raw name in raw bytes, whatever the bytes") {
    BuiltinServices services;
    REQUIRE(services.call_one("hello", "Ada") == "Hello, Ada!");
    // Not msgpack at all (0xc1 is never used), or msgpack with bytes after it: raw.
    REQUIRE(services.call_one("hello", "\xc1") == "Hello, \xc1!");
    REQUIRE(services.call_one("hello", pack(std::string("Ada")) + "x") ==
            "Hello, " + pack(std::string("Ada")) + "x!");
}

TEST_CASE("stats summarises an array of numbers") {
    BuiltinServices services;
    const auto reply = services.call_one("stats", pack(std::vector<double>{1, 2, 3, 4}));
    const auto summary = unpack<std::map<std::string, double>>(reply);
    REQUIRE(summary.at("count") == 4);
    REQUIRE(summary.at("mean") == Approx(2.5));
    REQUIRE(summary.at("min") == 1);
    REQUIRE(summary.at("max") == 4);
    REQUIRE(summary.at("stddev") == Approx(std::sqrt(1.25)));
}

TEST_CASE("stats accepts integers and floats mixed") {
    BuiltinServices services;
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_array(3);
    packer.pack(-2);
    packer.pack(0.5);
    packer.pack(7u);
    const auto reply = services.call_one("stats", std::string(buffer.data(), buffer.size()));
    const auto summary = unpack<std::map<std::string, double>>(reply);
    REQUIRE(summary.at("min") == -2);
    REQUIRE(summary.at("max") == 7);
}

TEST_CASE("stats answers an error for an empty array") {
    BuiltinServices services;
    const auto reply = services.call_one("stats", pack(std::vector<int>{}));
    REQUIRE(error_of(reply) == "stats needs at least one number");
}

TEST_CASE("stats answers an error naming the item that is not a number") {
    BuiltinServices services;
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_array(2);
    packer.pack(1);
    packer.pack(std::string("x"));
    const auto reply = services.call_one("stats", std::string(buffer.data(), buffer.size()));
    REQUIRE_THAT(error_of(reply), Catch::Contains("item 1 is a string"));
}

TEST_CASE("stats summarises raw text numbers as JSON text") {
    BuiltinServices services;
    const std::string expected =
        R"({"count":4,"mean":2.5,"min":1,"max":4,"stddev":1.118033988749895})";
    REQUIRE(services.call_one("stats", "1 2 3 4") == expected);
    REQUIRE(services.call_one("stats", "[1, 2.0, 3e0,\n4]\n") == expected);
    REQUIRE(services.call_one("stats", "-0.5,7") ==
            R"({"count":2,"mean":3.25,"min":-0.5,"max":7,"stddev":3.75})");
}

TEST_CASE("stats answers an error naming raw text that is not a number") {
    BuiltinServices services;
    REQUIRE_THAT(error_of(services.call_one("stats", "1 two 3")),
                 Catch::Contains("item 1 (\"two\") is not a finite number"));
    REQUIRE_THAT(error_of(services.call_one("stats", "1 nan")),
                 Catch::Contains("item 1 (\"nan\") is not a finite number"));
    REQUIRE_THAT(error_of(services.call_one("stats", "\xc1")),
                 Catch::Contains("item 0 (0xc1) is not a finite number"));
    REQUIRE(error_of(services.call_one("stats", " [ ]\n")) == "stats needs at least one number");
}

TEST_CASE("sleep sleeps the requested time and reports it") {
    BuiltinServices services;
    const auto started = now();
    const auto reply = services.call_one("sleep", pack(std::map<std::string, int>{{"ms", 100}}));
    REQUIRE(now() - started >= 100ms);
    REQUIRE(unpack<std::map<std::string, int>>(reply).at("slept_ms") == 100);
}

TEST_CASE("sleep takes raw decimal milliseconds and answers them in raw text") {
    BuiltinServices services;
    const auto started = now();
    REQUIRE(services.call_one("sleep", "100\n") == "100");
    REQUIRE(now() - started >= 100ms);
    REQUIRE_THAT(error_of(services.call_one("sleep", "600001")), Catch::Contains("0..600000"));
    REQUIRE_THAT(error_of(services.call_one("sleep", "-1 ")), Catch::Contains("0..600000"));
    REQUIRE_THAT(error_of(services.call_one("sleep", "1.5s")),
                 Catch::Contains("decimal milliseconds"));
}

TEST_CASE("sleep rejects a duration out of range or missing") {
    BuiltinServices services;
    const auto too_long =
        services.call_one("sleep", pack(std::map<std::string, int>{{"ms", 600'001}}));
    REQUIRE_THAT(error_of(too_long), Catch::Contains("0..600000"));
    const auto negative = services.call_one("sleep", pack(std::map<std::string, int>{{"ms", -1}}));
    REQUIRE_THAT(error_of(negative), Catch::Contains("0..600000"));
    const auto missing = services.call_one("sleep", pack(std::map<std::string, int>{{"s", 1}}));
    REQUIRE_THAT(error_of(missing), Catch::Contains("missing"));
}

TEST_CASE("fail always answers an error") {
    BuiltinServices services;
    REQUIRE(error_of(services.call_one("fail", "")) ==
            "fail: this service always fails (for testing)");
    REQUIRE(error_of(services.call_one("fail", "again")) ==
            "fail: this service always fails (for testing)");
}

TEST_CASE("an unknown built-in service is refused with the list of known ones") {
    Worker worker(WorkerOptions{});
    REQUIRE_THROWS_WITH(
        add_builtin_service(worker, "nope"),
        Catch::Contains("'nope'") && Catch::Contains("echo, hello, sleep, stats, fail"));
}
