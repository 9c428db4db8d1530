// BrokerLoop on real sockets (loopback, ephemeral port): raw DEALER peers, drain, bad input.
#include <catch2/catch.hpp>

#include <atomic>
#include <mutex>
#include <random>
#include <thread>

#include "broker/broker_loop.hpp"
#include "core_harness.hpp"
#include "process_helpers.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using namespace std::chrono_literals;

namespace {

// What a test may see of the core while it serves: copied on the broker thread.
struct Observed {
    broker::Counters counters;
    bool draining = false;
};

// A broker serving in a thread; stop() drains it, joins, and closes its socket. Tests wait on
// what the broker thread publishes through observe_every(), never on a sleep.
class RunningBroker {
  public:
    explicit RunningBroker(broker::BrokerConfig config = {})
        : loop_(std::in_place, context_, config, "tcp://127.0.0.1:*"),
          endpoint_(loop_->endpoint()) {
        loop_->observe_every(5ms, [this](const broker::BrokerCore& core, TimePoint) {
            const std::lock_guard lock(mutex_);
            observed_ = {core.counters(), core.draining()};
        });
        thread_ = std::thread([this] { loop_->run(stop_); });
    }
    ~RunningBroker() { stop(); }
    void stop() {
        stop_ = true;
        if (!thread_.joinable()) return;
        thread_.join();  // run() publishes once more at its end
        loop_.reset();
    }
    // Begins the drain and returns at once; stop() still joins.
    void request_stop() { stop_ = true; }
    const std::string& endpoint() const { return endpoint_; }
    Observed observed() const {
        const std::lock_guard lock(mutex_);
        return observed_;
    }
    const broker::Counters& counters() const { return observed_.counters; }  // after stop() only

  private:
    zmq::context_t context_{1};
    std::atomic<bool> stop_{false};
    std::optional<broker::BrokerLoop> loop_;
    std::string endpoint_;
    mutable std::mutex mutex_;
    Observed observed_;
    std::thread thread_;
};

class Peer {
  public:
    Peer(zmq::context_t& context, const std::string& endpoint)
        : socket_(context, zmq::socket_type::dealer) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.connect(endpoint);
    }
    void send(const Message& message) {
        Frames frames = to_frames(message);
        REQUIRE(send_frames(socket_, frames) == SendResult::sent);
    }
    std::optional<Message> receive(std::chrono::milliseconds timeout = kPatience) {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
        Frames frames;
        recv_frames(socket_, frames);
        Message message;
        for (const auto& f : frames)
            message.emplace_back(view(f));
        return message;
    }
    // The next worker command other than HEARTBEAT: on a slow machine a heartbeat may come first.
    std::optional<Message> receive_command() {
        std::optional<Message> message;
        while ((message = receive()) && message->size() > 2 && message->at(2) == kHeartbeat) {
        }
        return message;
    }
    zmq::socket_t& socket() { return socket_; }

  private:
    zmq::socket_t socket_;
};

}  // namespace

TEST_CASE("a request and its reply cross real sockets frame for frame") {
    RunningBroker broker;
    zmq::context_t context;
    Peer worker(context, broker.endpoint());
    Peer client(context, broker.endpoint());
    worker.send({"", "MDPW01", kReady, "echo"});
    client.send({"", "ZBC01", "echo", "r1", "\x80", "ping"});
    const auto request = worker.receive_command();
    REQUIRE(request);
    REQUIRE(request->at(2) == kRequest);
    worker.send({"", "MDPW01", kReply, request->at(3), "", "pong"});
    REQUIRE(client.receive() == Message{"", "ZBC01", "echo", "r1", "200", "pong"});
}

TEST_CASE("stopping the broker drains and tells workers DISCONNECT") {
    broker::BrokerConfig config;
    config.drain_timeout = kPatience;  // the drain waits for our reply, however slow we are
    RunningBroker broker(config);
    zmq::context_t context;
    Peer worker(context, broker.endpoint());
    Peer client(context, broker.endpoint());
    worker.send({"", "MDPW01", kReady, "echo"});
    client.send({"", "ZBC01", "echo", "r1", "\x80", "ping"});
    const auto request = worker.receive_command();
    REQUIRE(request);
    broker.request_stop();
    REQUIRE(eventually([&] { return broker.observed().draining; }));
    worker.send({"", "MDPW01", kReply, request->at(3), "", "pong"});
    REQUIRE(client.receive() == Message{"", "ZBC01", "echo", "r1", "200", "pong"});
    REQUIRE(worker.receive_command() == Message{"", "MDPW01", kDisconnect});
    broker.stop();
}

TEST_CASE("a flood of random and malformed messages neither crashes nor stalls the broker") {
    broker::BrokerConfig config;
    config.drain_timeout = 200ms;  // the flood leaves requests queued for made-up services
    RunningBroker broker(config);
    zmq::context_t context;
    Peer garbage(context, broker.endpoint());
    std::mt19937 random(12345);
    const std::vector<std::string> headers{"MDPC01", "MDPW01", "ZBC01", "", "XXX"};
    const std::vector<std::string> commands{"",         kReady,      kRequest, kReply,
                                            kHeartbeat, kDisconnect, "\x07",   "\x01\x01"};
    constexpr int kMessages = 20'000;
    for (int i = 0; i < kMessages; ++i) {
        Message m;
        const int parts = static_cast<int>(random() % 7);
        for (int p = 0; p < parts; ++p) {
            switch (random() % 5) {
                case 0:
                    m.push_back("");
                    break;
                case 1:
                    m.push_back(headers[random() % headers.size()]);
                    break;
                case 2:
                    m.push_back(commands[random() % commands.size()]);
                    break;
                case 3:
                    m.push_back(std::string(random() % 300, static_cast<char>(random())));
                    break;
                default:
                    m.push_back("mmi.service");
                    break;
            }
        }
        if (m.empty()) m.push_back("x");
        garbage.send(m);
    }
    // Still serving: a fresh client and worker work, and MMI answers.
    Peer worker(context, broker.endpoint());
    Peer client(context, broker.endpoint());
    worker.send({"", "MDPW01", kReady, "echo"});
    client.send({"", "ZBC01", "mmi.service", "q", "", "echo"});
    auto answer = client.receive();
    REQUIRE(answer);
    client.send({"", "ZBC01", "echo", "r", "\x80", "still here"});
    std::optional<Message> request;
    while ((request = worker.receive()) && request->at(2) != kRequest) {
    }
    REQUIRE(request);
    worker.send({"", "MDPW01", kReply, request->at(3), "", "yes"});
    while ((answer = client.receive()) && answer->at(3) != "r") {
    }
    REQUIRE(answer == Message{"", "ZBC01", "echo", "r", "200", "yes"});
    broker.stop();
    const auto& counters = broker.counters();
    INFO("malformed " << counters.malformed_total() << ", requests " << counters.requests);
    REQUIRE(counters.malformed_total() > kMessages / 2);
}

TEST_CASE("a reply to a client that went away is counted as unreachable") {
    RunningBroker broker;
    zmq::context_t context;
    Peer worker(context, broker.endpoint());
    worker.send({"", "MDPW01", kReady, "echo"});
    // libzmq tells the broker's socket of a closed connection asynchronously; a reply sent
    // before it knows goes into the dying pipe and is lost without an error. So each round
    // waits longer before replying, until the broker had time to learn; every round's reply is
    // seen handled before the counter is read. On an idle machine, round 1.
    auto pause = 50ms;
    int rounds = 0;
    std::uint64_t unreachable = 0;
    while (unreachable == 0 && pause < kPatience) {
        ++rounds;
        std::optional<Message> request;
        {
            Peer client(context, broker.endpoint());
            client.send({"", "ZBC01", "echo", "r" + std::to_string(rounds), "\x80", "ping"});
            request = worker.receive_command();
            REQUIRE(request);
        }  // the client is gone before its reply
        std::this_thread::sleep_for(pause);
        pause *= 2;
        worker.send({"", "MDPW01", kReply, request->at(3), "", "pong"});
        // Answered counts every reply the broker handled, delivered or not.
        Observed seen;
        REQUIRE(eventually([&] {
            seen = broker.observed();
            return seen.counters.answered(protocol::Status::ok) ==
                   static_cast<std::uint64_t>(rounds);
        }));
        unreachable = seen.counters[broker::Drop::client_unreachable];
    }
    INFO(rounds << " round(s)");
    REQUIRE(unreachable == 1);
}
