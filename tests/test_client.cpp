// Client and AsyncClient against a fake broker: a ROUTER in the test answering raw ZBC01 frames.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "client/async_client.hpp"
#include "client/client.hpp"
#include "process_helpers.hpp"
#include "shared/request_headers.hpp"

using namespace zbroker;
using namespace std::chrono_literals;
using protocol::Status;
using testing::kPatience;

namespace {

// One request as the fake broker saw it.
struct Received {
    std::string identity;
    Frames frames;  // without the identity: "" ZBC01 service request-id headers body...

    std::string_view service() const { return view(frames.at(2)); }
    std::string_view request_id() const { return view(frames.at(3)); }
    std::string_view headers() const { return view(frames.at(4)); }
};

std::uint64_t id_value(std::string_view request_id) {
    REQUIRE(request_id.size() == sizeof(std::uint64_t));
    std::uint64_t id = 0;
    std::memcpy(&id, request_id.data(), sizeof id);
    return id;
}

// A ROUTER on an ephemeral port, driven from the test thread or from one helper thread.
class FakeBroker {
  public:
    FakeBroker() : socket_(context_, zmq::socket_type::router) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.bind("tcp://127.0.0.1:*");
        endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    }

    const std::string& endpoint() const { return endpoint_; }

    // The next request, or nullopt after `timeout`: a request that should come has kPatience.
    std::optional<Received> receive(std::chrono::milliseconds timeout = kPatience) {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, timeout) == 0) return std::nullopt;
        Frames frames;
        recv_frames(socket_, frames);
        Received received{std::string(view(frames.at(0))), {}};
        std::move(frames.begin() + 1, frames.end(), std::back_inserter(received.frames));
        return received;
    }

    // The first `count` requests, or fewer if kPatience passes first. A test thread collects
    // them while the client under test makes its attempts; it stops on the count it expects,
    // never on a silence that a loaded machine can stretch.
    std::vector<Received> receive_many(std::size_t count) {
        std::vector<Received> received;
        const auto give_up = std::chrono::steady_clock::now() + kPatience;
        while (received.size() < count) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(
                give_up - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            auto request = receive(left);
            if (!request) break;
            received.push_back(std::move(*request));
        }
        return received;
    }

    // True when no request comes within a short while: for checks that a client sent no more
    // than it should, made after its call returned. A loaded machine can only make this pass
    // wrongly (a late extra request missed), never fail wrongly.
    bool stays_silent() { return !receive(200ms); }

    // Sends raw frames (after the identity) to the client that sent `to`.
    void send_raw(const Received& to, const std::vector<std::string>& parts) {
        Frames frames;
        frames.push_back(frame(to.identity));
        for (const std::string& part : parts)
            frames.push_back(frame(part));
        send_frames(socket_, frames);
    }

    void reply(const Received& to, std::string_view request_id, Status status,
               const std::vector<std::string>& body = {}) {
        std::vector<std::string> parts{"", std::string(protocol::kZbcClient),
                                       std::string(to.service()), std::string(request_id),
                                       std::string(protocol::status_text(status))};
        parts.insert(parts.end(), body.begin(), body.end());
        send_raw(to, parts);
    }

    void reply(const Received& to, Status status, const std::vector<std::string>& body = {}) {
        reply(to, to.request_id(), status, body);
    }

  private:
    zmq::context_t context_;
    zmq::socket_t socket_;
    std::string endpoint_;
};

// Runs the fake broker's side on a thread that is always joined, even when a REQUIRE throws.
class BrokerThread {
  public:
    explicit BrokerThread(std::function<void()> body) : thread_(std::move(body)) {}
    ~BrokerThread() { join(); }
    void join() {
        if (thread_.joinable()) thread_.join();
    }

  private:
    std::thread thread_;
};

template <typename F>
std::chrono::milliseconds time_of(F&& run) {
    const auto start = std::chrono::steady_clock::now();
    run();
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
}

// For calls that are meant to go unanswered: every attempt times out, so short is fast.
const CallOptions kQuick{.timeout = 150ms, .retries = 2, .backoff = 10ms};
// For calls the fake broker answers: the answer comes in milliseconds, the timeout only bounds a
// failure, so a slow machine cannot turn a late answer into a retry.
const CallOptions kPatient{.timeout = 10'000ms, .retries = 0};

}  // namespace

TEST_CASE("call sends the exact ZBC01 frames with a deadline and returns the reply body") {
    FakeBroker broker;
    std::optional<Received> seen;
    BrokerThread answer([&] {
        seen = broker.receive();
        if (seen) broker.reply(*seen, Status::ok, {"pong"});
    });
    Client client(broker.endpoint());
    const Response response = client.call("echo", "ping", kPatient);
    answer.join();

    REQUIRE(seen);
    REQUIRE(seen->frames.size() == 6);
    CHECK(view(seen->frames[0]).empty());
    CHECK(view(seen->frames[1]) == protocol::kZbcClient);
    CHECK(seen->service() == "echo");
    CHECK(seen->request_id().size() == sizeof(std::uint64_t));
    CHECK(seen->headers() == encode_request_headers({.deadline = kPatient.timeout}));
    CHECK(view(seen->frames[5]) == "ping");
    REQUIRE(response.status == Status::ok);
    REQUIRE(response.ok());
    REQUIRE(response.body.size() == 1);
    REQUIRE(response.body_view() == "pong");
}

TEST_CASE("call sends every body frame and returns every reply frame") {
    FakeBroker broker;
    std::optional<Received> seen;
    BrokerThread answer([&] {
        seen = broker.receive();
        if (seen) broker.reply(*seen, Status::ok, {"one", "", "three"});
    });
    Client client(broker.endpoint());
    Frames body;
    body.push_back(frame("a"));
    body.push_back(frame("b"));
    const Response response = client.call("multi", std::move(body), kPatient);
    answer.join();

    REQUIRE(seen);
    REQUIRE(seen->frames.size() == 7);
    CHECK(view(seen->frames[5]) == "a");
    CHECK(view(seen->frames[6]) == "b");
    REQUIRE(response.body.size() == 3);
    CHECK(view(response.body[0]) == "one");
    CHECK(view(response.body[1]).empty());
    CHECK(view(response.body[2]) == "three");
}

TEST_CASE("broker error statuses come back typed and are not retried") {
    const Status status =
        GENERATE(Status::unavailable, Status::deadline_exceeded, Status::queue_full,
                 Status::retries_exhausted, Status::bad_request, Status::too_large);
    FakeBroker broker;
    BrokerThread answer([&] {
        if (const auto request = broker.receive()) broker.reply(*request, status);
    });
    Client client(broker.endpoint());
    // Retries allowed, so a retry on an error status would be sent and seen.
    const Response response = client.call("svc", "x", {.timeout = 10'000ms, .retries = 2});
    answer.join();

    INFO("status " << protocol::status_text(status));
    REQUIRE(response.status == status);
    REQUIRE_FALSE(response.ok());
    REQUIRE(response.body.empty());
    REQUIRE(broker.stays_silent());
}

TEST_CASE("a call without reply is retried with fresh request ids, then reports no reply") {
    FakeBroker broker;
    std::vector<Received> seen;
    BrokerThread listen([&] { seen = broker.receive_many(3); });  // 1 + retries
    Client client(broker.endpoint());
    Response response;
    const auto elapsed = time_of([&] { response = client.call("silent", "x", kQuick); });
    listen.join();

    REQUIRE(response.status == Status::no_reply);
    REQUIRE(seen.size() == 3);
    REQUIRE(broker.stays_silent());
    std::set<std::string_view> ids;
    for (const Received& request : seen)
        ids.insert(request.request_id());
    REQUIRE(ids.size() == 3);
    // Each attempt is on a new socket: the broker sees a new client each time.
    REQUIRE(seen[0].identity != seen[1].identity);
    // 3 attempts of 150 ms (plus the grace for the broker's own deadline answer) and backoff;
    // the upper bound only says that the client gives up, however slow the machine.
    REQUIRE(elapsed >= 3 * 150ms);
    REQUIRE(elapsed < kPatience);
}

TEST_CASE("a broker answer sent right at the deadline is received, not taken for silence") {
    // The client listens a grace of timeout/4 (at most 500 ms) past its deadline. A 2 s timeout
    // makes that grace 500 ms, far more than a loaded machine delays a thread's wake-up.
    constexpr auto kTimeout = 2000ms;
    FakeBroker broker;
    BrokerThread answer([&] {
        if (const auto request = broker.receive()) {
            std::this_thread::sleep_for(kTimeout);  // the deadline_ms the client sent
            broker.reply(*request, Status::unavailable);
        }
    });
    Client client(broker.endpoint());
    const Response response = client.call("nobody", "x", {.timeout = kTimeout, .retries = 2});
    answer.join();
    REQUIRE(response.status == Status::unavailable);
    REQUIRE(broker.stays_silent());  // no retry went out
}

TEST_CASE("a call with no retries makes exactly one attempt") {
    FakeBroker broker;
    Client client(broker.endpoint());
    const Response response = client.call("silent", "x", {.timeout = 100ms, .retries = 0});
    REQUIRE(response.status == Status::no_reply);
    REQUIRE(broker.receive_many(1).size() == 1);
    REQUIRE(broker.stays_silent());
}

TEST_CASE("a call against an unreachable endpoint reports no reply in bounded time") {
    std::string endpoint;
    {
        FakeBroker gone;  // an ephemeral port that was just free, so nobody listens now
        endpoint = gone.endpoint();
    }
    Client client(endpoint);
    Response response;
    const auto elapsed = time_of([&] {
        response = client.call("any", "x", {.timeout = 100ms, .retries = 1, .backoff = 10ms});
    });
    REQUIRE(response.status == Status::no_reply);
    REQUIRE(elapsed < kPatience);  // bounded: the client does not wait for a connection
}

TEST_CASE("a late reply to an earlier attempt is ignored and the retry's reply is returned") {
    FakeBroker broker;
    std::atomic<bool> returned{false};
    BrokerThread answer([&] {
        const auto first = broker.receive();
        if (!first) return;  // let the first attempt time out
        // Every later attempt gets the stale answer first, on the connection the client now
        // listens to, then its own; so a retry that a slow machine causes still proves the point.
        while (!returned) {
            if (const auto next = broker.receive(20ms)) {
                broker.reply(*next, first->request_id(), Status::ok, {"stale"});
                broker.reply(*next, Status::ok, {"fresh"});
            }
        }
    });
    Client client(broker.endpoint());
    const Response response =
        client.call("slow", "x", {.timeout = 500ms, .retries = 5, .backoff = 10ms});
    returned = true;
    answer.join();
    REQUIRE(response.status == Status::ok);
    REQUIRE(response.body_view() == "fresh");
}

TEST_CASE("a malformed reply is ignored and the call still gets its real reply") {
    FakeBroker broker;
    BrokerThread answer([&] {
        const auto request = broker.receive();
        if (!request) return;
        const std::string id(request->request_id());
        const std::string zbc(protocol::kZbcClient);
        broker.send_raw(*request, {""});                          // delimiter only
        broker.send_raw(*request, {"", zbc});                     // too short
        broker.send_raw(*request, {"x", zbc, "svc", id, "200"});  // no delimiter
        broker.send_raw(
            *request, {"", std::string(protocol::kMdpClient), "svc", id, "200"});  // other protocol
        broker.send_raw(*request, {"", zbc, "svc", "short", "200"});               // id not ours
        broker.send_raw(*request, {"", zbc, "svc", id, "2x0", "bad"});             // bad status
        broker.send_raw(*request, {"", zbc, "svc", id, "000", "no_reply"});  // not on the wire
        broker.reply(*request, Status::ok, {"good"});
    });
    Client client(broker.endpoint());
    const Response response = client.call("svc", "x", kPatient);
    answer.join();
    REQUIRE(response.status == Status::ok);
    REQUIRE(response.body_view() == "good");
}

TEST_CASE("a reply body view is empty when there is no body") {
    const Response response{Status::unavailable, {}};
    REQUIRE(response.body_view().empty());
    REQUIRE_FALSE(response.ok());
}

TEST_CASE("async send refuses requests beyond the window") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 3);
    REQUIRE(client.window() == 3);
    for (int i = 0; i < 3; ++i)
        REQUIRE(client.send("svc", "x"));
    REQUIRE(client.in_flight() == 3);
    REQUIRE_FALSE(client.send("svc", "x"));
    REQUIRE(client.in_flight() == 3);

    // A reply frees one place in the window.
    const auto request = broker.receive();
    REQUIRE(request);
    broker.reply(*request, Status::ok);
    REQUIRE(client.receive(kPatience));
    REQUIRE(client.in_flight() == 2);
    REQUIRE(client.send("svc", "x"));
    REQUIRE_FALSE(client.send("svc", "x"));
}

TEST_CASE("async replies that arrive out of order are matched to their requests by id") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 4);
    std::map<std::uint64_t, std::string> sent;
    for (const char* body : {"a", "b", "c", "d"}) {
        const auto id = client.send("svc", body);
        REQUIRE(id);
        sent[*id] = body;
    }
    std::vector<Received> requests;
    for (int i = 0; i < 4; ++i) {
        auto request = broker.receive();
        REQUIRE(request);
        requests.push_back(std::move(*request));
    }
    // Answer in reverse, echoing each body so the test can tell them apart.
    for (auto it = requests.rbegin(); it != requests.rend(); ++it)
        broker.reply(*it, Status::ok, {std::string(view(it->frames.at(5)))});

    std::vector<std::uint64_t> order;
    while (client.in_flight() > 0) {
        const auto done = client.receive(kPatience);
        REQUIRE(done);
        REQUIRE(done->status == Status::ok);
        REQUIRE(done->body.size() == 1);
        REQUIRE(view(done->body[0]) == sent.at(done->id));
        order.push_back(done->id);
    }
    REQUIRE(order.size() == 4);
    REQUIRE(std::is_sorted(order.rbegin(), order.rend()));
    REQUIRE(id_value(requests.back().request_id()) == order.front());
}

TEST_CASE("async send puts the deadline in the headers, or none when it is zero") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 3);
    REQUIRE(client.send("svc", "x", 250ms));
    REQUIRE(client.send("svc", "x"));
    REQUIRE(client.send("svc", "x", 250ms));
    const auto with = broker.receive();
    const auto without = broker.receive();
    const auto again = broker.receive();
    REQUIRE(with);
    REQUIRE(without);
    REQUIRE(again);
    CHECK(with->headers() == encode_request_headers({.deadline = 250ms}));
    CHECK(without->headers() == encode_request_headers({}));
    CHECK(again->headers() == encode_request_headers({.deadline = 250ms}));
    CHECK(with->frames.size() == 6);
}

TEST_CASE("async receive gives up after its timeout when nothing comes") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 1);
    REQUIRE(client.send("svc", "x"));
    std::optional<Completion> done;
    const auto elapsed = time_of([&] { done = client.receive(100ms); });
    REQUIRE_FALSE(done);
    REQUIRE(elapsed >= 100ms);
    REQUIRE(elapsed < kPatience);  // it does give up
    REQUIRE(client.in_flight() == 1);
}

TEST_CASE("async replies for ids not in flight and malformed replies are ignored") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 2);
    const auto id = client.send("svc", "x");
    REQUIRE(id);
    const auto request = broker.receive();
    REQUIRE(request);
    std::uint64_t unknown = *id + 100;
    std::string unknown_id(sizeof unknown, '\0');
    std::memcpy(unknown_id.data(), &unknown, sizeof unknown);
    broker.reply(*request, unknown_id, Status::ok, {"not ours"});
    const std::string zbc(protocol::kZbcClient);
    broker.send_raw(*request, {"", zbc, "svc"});
    broker.send_raw(*request, {"", zbc, "svc", std::string(request->request_id()), "abc"});
    broker.reply(*request, Status::deadline_exceeded);
    broker.reply(*request, Status::ok, {"a second answer"});

    const auto done = client.receive(kPatience);
    REQUIRE(done);
    REQUIRE(done->id == *id);
    REQUIRE(done->status == Status::deadline_exceeded);
    REQUIRE(client.in_flight() == 0);
    // The duplicate answer for a completed id is dropped too.
    REQUIRE_FALSE(client.receive(100ms));
}

TEST_CASE("an async request never answered completes as no_reply after its deadline") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 1);
    const auto id = client.send("svc", "x", 100ms);
    REQUIRE(id);
    REQUIRE(broker.receive());  // it arrived; no answer will come (a lost 503/504)
    std::optional<Completion> done;
    const auto elapsed = time_of([&] { done = client.receive(kPatience); });
    REQUIRE(done);
    REQUIRE(done->id == *id);
    REQUIRE(done->status == Status::no_reply);
    REQUIRE(elapsed >= 100ms);  // the deadline, plus a grace for the broker's own answer
    REQUIRE(client.in_flight() == 0);
    REQUIRE(client.send("svc", "y", 100ms));  // its place in the window is free again
}

TEST_CASE("a cancelled async request frees its place and its late answer is ignored") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 1);
    const auto first = client.send("svc", "first");
    REQUIRE(first);
    REQUIRE_FALSE(client.send("svc", "refused: the window is full"));
    REQUIRE(client.cancel(*first));
    REQUIRE_FALSE(client.cancel(*first));
    REQUIRE(client.in_flight() == 0);
    const auto second = client.send("svc", "second");
    REQUIRE(second);
    const auto request_one = broker.receive();
    const auto request_two = broker.receive();
    REQUIRE(request_one);
    REQUIRE(request_two);
    broker.reply(*request_one, Status::ok, {"late"});
    broker.reply(*request_two, Status::ok, {"fresh"});
    const auto done = client.receive(kPatience);
    REQUIRE(done);
    REQUIRE(done->id == *second);
    REQUIRE(view(done->body.at(0)) == "fresh");
}

TEST_CASE("async client refuses a window of zero") {
    REQUIRE_THROWS_AS(AsyncClient("tcp://127.0.0.1:1", 0), std::invalid_argument);
}

TEST_CASE("async client keeps a large window of requests flowing through many reuses") {
    FakeBroker broker;
    constexpr std::size_t kWindow = 64;
    constexpr int kTotal = 2000;
    AsyncClient client(broker.endpoint(), kWindow);
    BrokerThread echo([&] {
        for (int answered = 0; answered < kTotal; ++answered) {
            const auto request = broker.receive();
            if (!request) return;
            broker.reply(*request, Status::ok, {std::string(view(request->frames.at(5)))});
        }
    });
    int sent = 0;
    int received = 0;
    std::set<std::uint64_t> seen;
    while (received < kTotal) {
        while (sent < kTotal && client.send("svc", std::to_string(sent)))
            ++sent;
        REQUIRE(client.in_flight() <= kWindow);
        const auto done = client.receive(kPatience);
        REQUIRE(done);
        REQUIRE(done->status == Status::ok);
        REQUIRE(view(done->body.at(0)) == std::to_string(done->id - 1));
        REQUIRE(seen.insert(done->id).second);
        ++received;
    }
    echo.join();
    REQUIRE(client.in_flight() == 0);
}

TEST_CASE("the in-flight id set finds, erases and refills ids across wrap-around") {
    detail::RequestIdSet ids(4);  // 16 slots
    // Ids 16 apart share a home slot: the probe runs and backward shifts get exercised.
    const std::vector<std::uint64_t> colliding{3, 19, 35, 4, 51};
    for (std::uint64_t id : colliding)
        ids.insert(id);
    REQUIRE(ids.size() == 5);
    REQUIRE(ids.erase(19));
    REQUIRE_FALSE(ids.erase(19));
    for (std::uint64_t id : {3, 35, 4, 51})
        REQUIRE(ids.contains(id));
    REQUIRE(ids.erase(3));
    REQUIRE(ids.contains(35));
    REQUIRE(ids.contains(51));
    REQUIRE(ids.contains(4));
    REQUIRE_FALSE(ids.contains(0));
    REQUIRE_FALSE(ids.erase(0));
    for (std::uint64_t id : {35, 4, 51})
        REQUIRE(ids.erase(id));
    REQUIRE(ids.size() == 0);

    // Consecutive ids through many generations stay findable.
    for (std::uint64_t id = 1; id <= 1000; ++id) {
        ids.insert(id);
        if (id > 4) REQUIRE(ids.erase(id - 4));
        REQUIRE(ids.size() <= 5);
        REQUIRE(ids.contains(id));
    }
}
