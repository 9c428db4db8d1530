// Client and AsyncClient against a fake broker: a ROUTER in the test that reads ZB/1 requests
// one record at a time and answers with wire::Writer, or with raw frames for malformed answers.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "client/async_client.hpp"
#include "client/broker_links.hpp"
#include "client/client.hpp"
#include "process_helpers.hpp"
#include "shared/wire.hpp"
#include "wire_bytes.hpp"

using namespace zbroker;
using namespace std::chrono_literals;
using protocol::Status;
using testing::kPatience;
using namespace testing;  // wire_bytes.hpp
using wire::Command;

namespace {

const std::string kSignature(wire::kSignature);

// An ANSWER record, bytes after the signature.
std::string answer_record(std::string_view id, std::uint32_t status, std::string_view body) {
    return u8(static_cast<std::uint8_t>(Command::answer)) + short_bytes(id) + u16(status) +
           inline_body(body);
}

std::string id_bytes(std::uint64_t id) {
    std::string bytes(sizeof id, '\0');
    std::memcpy(bytes.data(), &id, sizeof id);
    return bytes;
}

std::uint64_t id_value(std::string_view request_id) {
    REQUIRE(request_id.size() == sizeof(std::uint64_t));
    std::uint64_t id = 0;
    std::memcpy(&id, request_id.data(), sizeof id);
    return id;
}

Frames frames_of(const std::vector<std::string>& parts) {
    Frames frames;
    for (const std::string& part : parts)
        frames.push_back(frame(part));
    return frames;
}

// One REQUEST record as the fake broker saw it, and what it knows of its message.
struct Received {
    std::string identity;
    std::string problem;  // not empty: the message did not parse, or held another record
    std::string id;
    std::string service;
    std::optional<std::uint32_t> deadline_ms;
    std::vector<std::string> body;  // the body frames; an empty inline body is none
    bool body_in_frames = false;
    std::size_t message = 0;  // the fake broker's count of messages read so far, this one's
    std::size_t records_in_message = 0;
    std::size_t frames_in_message = 0;  // envelope and body frames, without the routing id
    std::string envelope;               // the message's envelope frame, whole

    std::string_view request_id() const { return id; }
};

// What the fake broker answers: one ANSWER record.
struct Answer {
    std::string id;
    Status status = Status::ok;
    std::vector<std::string> body;
};

// A ROUTER on an ephemeral port, driven from the test thread or from one helper thread.
class FakeBroker {
  public:
    // On `endpoint`: an ephemeral port, or the port of a broker that went away.
    explicit FakeBroker(const std::string& endpoint = "tcp://127.0.0.1:*")
        : socket_(context_, zmq::socket_type::router) {
        socket_.set(zmq::sockopt::linger, 0);
        socket_.bind(endpoint);
        endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    }

    const std::string& endpoint() const { return endpoint_; }

    // The next request record, or nullopt after `timeout`: a request that should come has
    // kPatience. The records of one message come one after the other.
    std::optional<Received> receive(std::chrono::milliseconds timeout = kPatience) {
        if (queue_.empty() && !read_message(timeout)) return std::nullopt;
        Received received = std::move(queue_.front());
        queue_.pop_front();
        return received;
    }

    // Every record of the next message, or none after `timeout`.
    std::vector<Received> receive_message(std::chrono::milliseconds timeout = kPatience) {
        std::vector<Received> records;
        auto first = receive(timeout);
        if (!first) return records;
        records.push_back(std::move(*first));
        while (!queue_.empty() && queue_.front().message == records.front().message) {
            records.push_back(std::move(queue_.front()));
            queue_.pop_front();
        }
        return records;
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
        Frames frames = frames_of(parts);
        send(to.identity, frames);
    }

    // Sends without waiting, as a broker must (ROUTER_MANDATORY on: a full queue to the
    // client says so instead of dropping); false when the client's queue is full.
    bool offer_raw(const Received& to, const std::vector<std::string>& parts) {
        socket_.set(zmq::sockopt::router_mandatory, 1);
        Frames frames = frames_of(parts);
        frames.insert(frames.begin(), frame(to.identity));
        return send_frames(socket_, frames, zmq::send_flags::dontwait) == SendResult::sent;
    }

    // One message with an ANSWER record for each of `answers`, in order.
    void answer_all(const std::string& identity, const std::vector<Answer>& answers) {
        wire::Writer writer;
        for (const Answer& answer : answers) {
            Frames body = frames_of(answer.body);
            writer.answer(answer.id, answer.status, {body, 0, body.size()});
        }
        Frames frames;
        writer.take(frames);
        send(identity, frames);
    }

    void reply(const Received& to, std::string_view request_id, Status status,
               const std::vector<std::string>& body = {}) {
        answer_all(to.identity, {{std::string(request_id), status, body}});
    }

    void reply(const Received& to, Status status, const std::vector<std::string>& body = {}) {
        reply(to, to.request_id(), status, body);
    }

  private:
    void send(const std::string& identity, Frames& message) {
        message.insert(message.begin(), frame(identity));
        send_frames(socket_, message);
    }

    // Reads one message within `timeout` and queues its records; false when none came.
    bool read_message(std::chrono::milliseconds timeout) {
        zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
        if (zmq::poll(&item, 1, std::max(timeout, 0ms)) == 0) return false;
        Frames frames;
        recv_frames(socket_, frames);
        ++messages_;
        Received common;
        common.identity = std::string(view(frames.at(0)));
        common.message = messages_;
        common.frames_in_message = frames.size() - 1;
        if (frames.size() > 1) common.envelope = std::string(view(frames[1]));

        std::vector<wire::Record> records;
        const char* problem = nullptr;
        if (!wire::parse(frames, 1, records, problem)) {
            common.problem = problem;
            queue_.push_back(std::move(common));
            return true;
        }
        common.records_in_message = records.size();
        for (const wire::Record& record : records) {
            Received received = common;
            if (record.command != Command::request)
                received.problem = "a " + std::string(wire::command_name(record.command)) +
                                   " record from a client";
            received.id = std::string(record.id);
            received.service = std::string(record.service);
            received.deadline_ms = record.deadline_ms;
            received.body_in_frames = record.body.in_frames;
            if (record.body.in_frames) {
                for (std::size_t i = record.body.first; i < record.body.first + record.body.count;
                     ++i)
                    received.body.emplace_back(view(frames[i]));
            } else if (!record.body.bytes.empty()) {
                received.body.emplace_back(record.body.bytes);
            }
            queue_.push_back(std::move(received));
        }
        return true;
    }

    zmq::context_t context_;
    zmq::socket_t socket_;
    std::string endpoint_;
    std::deque<Received> queue_;  // records read and not yet handed out
    std::size_t messages_ = 0;
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

TEST_CASE("call sends one ZB/1 REQUEST record with a deadline and returns the reply body") {
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
    CHECK(seen->problem.empty());
    CHECK(seen->service == "echo");
    CHECK(seen->request_id().size() == sizeof(std::uint64_t));
    CHECK(seen->deadline_ms == std::optional<std::uint32_t>{10'000});
    CHECK(seen->body == std::vector<std::string>{"ping"});
    // The whole message: one frame, the envelope with the request and its small body inside.
    CHECK(seen->frames_in_message == 1);
    CHECK(seen->records_in_message == 1);
    CHECK(seen->envelope == kSignature + u8(static_cast<std::uint8_t>(Command::request)) +
                                u8(wire::kHasDeadline) + u32(10'000) + short_bytes(seen->id) +
                                short_bytes("echo") + inline_body("ping"));
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
    CHECK(seen->problem.empty());
    CHECK(seen->body_in_frames);
    CHECK(seen->frames_in_message == 3);
    CHECK(seen->body == std::vector<std::string>{"a", "b"});
    REQUIRE(response.body.size() == 3);
    CHECK(view(response.body[0]) == "one");
    CHECK(view(response.body[1]).empty());
    CHECK(view(response.body[2]) == "three");
}

TEST_CASE("a service name over 255 bytes is refused at once, and 255 bytes go whole") {
    FakeBroker broker;
    Client client(broker.endpoint());
    // ZB/1 carries at most 255 bytes of name: a longer one would go out cut short.
    REQUIRE_THROWS_AS(client.call(std::string(256, 's'), "x", kPatient), std::invalid_argument);
    REQUIRE(broker.stays_silent());

    const std::string longest(255, 's');
    std::optional<Received> seen;
    BrokerThread answer([&] {
        seen = broker.receive();
        if (seen) broker.reply(*seen, Status::ok, {"ok"});
    });
    REQUIRE(client.call(longest, "x", kPatient).ok());
    answer.join();
    REQUIRE(seen);
    CHECK(seen->service == longest);
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

TEST_CASE("the Client ignores answers for ids it no longer awaits, within one message too") {
    FakeBroker broker;
    std::atomic<bool> returned{false};
    std::string first_id;
    BrokerThread answer([&] {
        const auto first = broker.receive();
        if (!first) return;  // let the first attempt time out
        first_id = first->id;
        // Each later attempt gets one message: the timed-out attempt's answer, one for an id
        // never sent, then its own. A reader that stopped at the first record it ignores, or
        // took the first, would not return "fresh".
        while (!returned) {
            if (const auto next = broker.receive(20ms)) {
                broker.answer_all(next->identity,
                                  {{first->id, Status::ok, {"stale"}},
                                   {id_bytes(id_value(next->id) + 100), Status::ok, {"unsent"}},
                                   {next->id, Status::ok, {"fresh"}}});
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

    // The next call, on the same socket: answers for the finished call come first, again.
    BrokerThread again([&] {
        const auto next = broker.receive();
        if (!next) return;
        broker.answer_all(next->identity, {{first_id, Status::ok, {"stale"}},
                                           {id_bytes(id_value(next->id) - 1), Status::ok, {"old"}},
                                           {next->id, Status::ok, {"second"}}});
    });
    const Response second = client.call("slow", "y", kPatient);
    again.join();
    REQUIRE(second.status == Status::ok);
    REQUIRE(second.body_view() == "second");
}

TEST_CASE("a malformed reply is ignored and the call still gets its real reply") {
    FakeBroker broker;
    BrokerThread answer([&] {
        const auto request = broker.receive();
        if (!request) return;
        const std::string id(request->request_id());
        const std::string ours = answer_record(id, 200, "not taken");
        const std::string job = u8(static_cast<std::uint8_t>(Command::job)) + short_bytes("t") +
                                u8(0) + inline_body("b");
        const std::vector<std::vector<std::string>> malformed{
            {""},                                                              // no envelope
            {"", std::string(protocol::kZbcClient), "svc", id, "200", "zbc"},  // ZBC01
            {"ZB"},                                                            // cut signature
            {"ZB\x02" + ours},                                                 // version 2
            {kSignature},                                                      // no record
            {kSignature + ours.substr(0, ours.size() - 1)},                    // cut short
            {kSignature + answer_record(id, 299, "bad status")},               // unknown status
            {kSignature + answer_record(id, 0, "no_reply")},                   // not on the wire
            {kSignature + answer_record("short", 200, "id not ours")},         // not 8 bytes
            {kSignature + ours + job},                       // a record no client reads
            {kSignature + ours, "a frame no record claims"}  // frames after the bodies
        };
        for (const auto& message : malformed)
            broker.send_raw(*request, message);
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

TEST_CASE("async send and queue refuse a service name over 255 bytes, and 255 bytes go whole") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 4);
    REQUIRE_THROWS_AS(client.send(std::string(256, 's'), "x"), std::invalid_argument);
    REQUIRE_THROWS_AS(client.queue(std::string(300, 's'), "x"), std::invalid_argument);
    REQUIRE(client.in_flight() == 0);
    REQUIRE(client.send(std::string(255, 's'), "x"));
    const auto seen = broker.receive();
    REQUIRE(seen);
    CHECK(seen->service == std::string(255, 's'));
    REQUIRE(broker.stays_silent());  // nothing of the refused ones
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
    client.flush();
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
    client.flush();
    std::vector<Received> requests;
    for (int i = 0; i < 4; ++i) {
        auto request = broker.receive();
        REQUIRE(request);
        requests.push_back(std::move(*request));
    }
    // Answer in reverse, each in a message of its own, echoing each body to tell them apart.
    for (auto it = requests.rbegin(); it != requests.rend(); ++it)
        broker.reply(*it, Status::ok, it->body);

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
    for (std::size_t i = 0; i < order.size(); ++i)
        REQUIRE(order[i] == id_value(requests[requests.size() - 1 - i].request_id()));
}

TEST_CASE("async send puts the deadline in deadline_ms: a minute unless told, none when zero") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 4);
    REQUIRE(client.send("svc", "x", 250ms));
    REQUIRE(client.send("svc", "x", 0ms));
    REQUIRE(client.send("svc", "x", 250ms));
    REQUIRE(client.send("svc", "x"));
    client.flush();
    const auto with = broker.receive();
    const auto without = broker.receive();
    const auto again = broker.receive();
    const auto by_default = broker.receive();
    REQUIRE(with);
    REQUIRE(without);
    REQUIRE(again);
    REQUIRE(by_default);
    CHECK(with->deadline_ms == std::optional<std::uint32_t>{250});
    CHECK_FALSE(without->deadline_ms);
    CHECK(again->deadline_ms == std::optional<std::uint32_t>{250});
    CHECK(by_default->deadline_ms == std::optional<std::uint32_t>{60'000});
    CHECK(with->body == std::vector<std::string>{"x"});
    CHECK_FALSE(with->body_in_frames);
}

TEST_CASE("async requests queued by several queue() calls go out as one message") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 8);
    const std::string large(wire::kInlineBodyLimit + 1, 'L');  // travels as a frame of its own
    const auto first = client.queue("a", "one", 250ms);
    const auto second = client.queue("b", large);
    const auto third = client.queue("c", "three");
    REQUIRE(first);
    REQUIRE(second);
    REQUIRE(third);
    // Held, not sent: nothing goes out before flush() or receive(). (A short window: a slow
    // machine can only make this pass.)
    REQUIRE(broker.stays_silent());

    SECTION("flush() sends them") {
        client.flush();
    }
    SECTION("receive() sends them first thing") {
        REQUIRE_FALSE(client.receive(0ms));
    }
    const auto records = broker.receive_message();
    REQUIRE(records.size() == 3);
    CHECK(records[0].records_in_message == 3);
    CHECK(records[0].frames_in_message == 2);  // the envelope and the large body
    CHECK(records[0].problem.empty());
    CHECK(id_value(records[0].id) == *first);
    CHECK(id_value(records[1].id) == *second);
    CHECK(id_value(records[2].id) == *third);
    CHECK(records[0].service == "a");
    CHECK(records[1].service == "b");
    CHECK(records[2].service == "c");
    CHECK(records[0].deadline_ms == std::optional<std::uint32_t>{250});
    CHECK(records[1].deadline_ms == std::optional<std::uint32_t>{60'000});  // the default
    CHECK(records[0].body == std::vector<std::string>{"one"});
    CHECK(records[1].body == std::vector<std::string>{large});
    CHECK(records[1].body_in_frames);
    CHECK(records[2].body == std::vector<std::string>{"three"});
    // Sent once: a second flush has nothing to send.
    client.flush();
    REQUIRE(broker.stays_silent());
}

TEST_CASE("async send() sends at once, with whatever was queued before it") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 4);
    const auto alone = client.send("svc", "alone");
    REQUIRE(alone);
    const auto first = broker.receive_message();  // no flush(), no receive()
    REQUIRE(first.size() == 1);
    CHECK(id_value(first[0].id) == *alone);

    const auto queued = client.queue("svc", "queued");
    const auto sent = client.send("svc", "sent");
    REQUIRE(queued);
    REQUIRE(sent);
    const auto both = broker.receive_message();
    REQUIRE(both.size() == 2);
    CHECK(id_value(both[0].id) == *queued);
    CHECK(id_value(both[1].id) == *sent);
}

TEST_CASE("an AsyncClient reading a message of several ANSWER records returns them one by one") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 4);
    const auto first = client.send("svc", "1");
    const auto second = client.send("svc", "2");
    const auto third = client.send("svc", "3");
    REQUIRE(first);
    REQUIRE(second);
    REQUIRE(third);
    client.flush();
    const auto requests = broker.receive_many(3);
    REQUIRE(requests.size() == 3);

    // One message: bodies inline and in frames, a failure status, an id not in flight.
    const std::string large(wire::kInlineBodyLimit + 1, 'L');
    broker.answer_all(requests[0].identity, {{id_bytes(*second), Status::ok, {"two", "2b"}},
                                             {id_bytes(*third + 100), Status::ok, {"unsent"}},
                                             {id_bytes(*first), Status::ok, {large}},
                                             {id_bytes(*third), Status::deadline_exceeded, {}}});
    const auto one = client.receive(kPatience);
    REQUIRE(one);
    CHECK(one->id == *second);
    CHECK(one->status == Status::ok);
    REQUIRE(one->body.size() == 2);
    CHECK(view(one->body[0]) == "two");
    CHECK(view(one->body[1]) == "2b");
    CHECK(client.in_flight() == 2);
    // The rest of the message is already read: it comes without waiting, one record a call.
    const auto two = client.receive(0ms);
    REQUIRE(two);
    CHECK(two->id == *first);
    CHECK(two->status == Status::ok);
    REQUIRE(two->body.size() == 1);
    CHECK(view(two->body[0]) == large);
    CHECK(client.in_flight() == 1);
    const auto three = client.receive(0ms);
    REQUIRE(three);
    CHECK(three->id == *third);
    CHECK(three->status == Status::deadline_exceeded);
    CHECK(three->body.empty());
    CHECK(client.in_flight() == 0);
    REQUIRE_FALSE(client.receive(100ms));
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
    client.flush();
    const auto request = broker.receive();
    REQUIRE(request);
    broker.reply(*request, id_bytes(*id + 100), Status::ok, {"not ours"});
    const std::string ours(request->request_id());
    broker.send_raw(*request, {"", std::string(protocol::kZbcClient), "svc", ours, "200"});
    broker.send_raw(*request, {kSignature + answer_record(ours, 299, "bad status")});
    broker.send_raw(*request, {kSignature + answer_record(ours, 200, "not taken") +
                               answer_record("short", 200, "id not ours")});
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
    client.flush();
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
    client.flush();
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
    constexpr std::size_t kTotal = 2000;
    AsyncClient client(broker.endpoint(), kWindow);
    // Requests queued up to the window go out as one message at receive(); the fake answers
    // each message of requests with one message of answers, as the broker batches.
    BrokerThread echo([&] {
        for (std::size_t answered = 0; answered < kTotal;) {
            const auto requests = broker.receive_message();
            if (requests.empty()) return;
            std::vector<Answer> answers;
            for (const Received& request : requests)
                answers.push_back({request.id, Status::ok, request.body});
            broker.answer_all(requests.front().identity, answers);
            answered += requests.size();
        }
    });
    std::size_t sent = 0;
    std::size_t received = 0;
    std::map<std::uint64_t, std::string> bodies;  // of the requests in flight
    std::set<std::uint64_t> seen;
    while (received < kTotal) {
        while (sent < kTotal) {
            const auto id = client.queue("svc", std::to_string(sent));
            if (!id) break;
            REQUIRE(bodies.emplace(*id, std::to_string(sent)).second);
            ++sent;
        }
        REQUIRE(client.in_flight() <= kWindow);
        const auto done = client.receive(kPatience);
        REQUIRE(done);
        REQUIRE(done->status == Status::ok);
        REQUIRE(bodies.count(done->id) == 1);
        REQUIRE(view(done->body.at(0)) == bodies[done->id]);
        bodies.erase(done->id);
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

// ---------------------------------------------------------------------------------------------
// Several brokers

namespace {

// Drives `client` (receive with a short timeout, so its broker events are handled) until one
// of `brokers` has a request; which one, and the request. Completions meanwhile go to `done`.
std::pair<std::size_t, Received> next_request(AsyncClient& client,
                                              std::vector<std::unique_ptr<FakeBroker>>& brokers,
                                              std::vector<Completion>* done = nullptr) {
    const auto give_up = std::chrono::steady_clock::now() + kPatience;
    while (std::chrono::steady_clock::now() < give_up) {
        if (auto completion = client.receive(5ms); completion && done != nullptr)
            done->push_back(std::move(*completion));
        for (std::size_t i = 0; i < brokers.size(); ++i) {
            if (brokers[i] == nullptr) continue;
            if (auto request = brokers[i]->receive(5ms)) return {i, std::move(*request)};
        }
    }
    FAIL("no request reached a broker " << kTooSlow);
    return {};
}

std::vector<std::string> endpoints_of(const std::vector<std::unique_ptr<FakeBroker>>& brokers) {
    std::vector<std::string> endpoints;
    for (const auto& broker : brokers)
        endpoints.push_back(broker->endpoint());
    return endpoints;
}

// Receives until the client has seen every broker come up.
void until_all_up(AsyncClient& client, std::size_t count) {
    REQUIRE(in_time([&] {
        (void)client.receive(5ms);
        return client.brokers_up() == count;
    }));
}

std::vector<std::unique_ptr<FakeBroker>> fake_brokers(int count) {
    std::vector<std::unique_ptr<FakeBroker>> brokers;
    for (int i = 0; i < count; ++i)
        brokers.push_back(std::make_unique<FakeBroker>());
    return brokers;
}

}  // namespace

TEST_CASE("an endpoint list splits on commas and refuses an empty or repeated endpoint") {
    REQUIRE(detail::split_endpoints("tcp://a:1") == std::vector<std::string>{"tcp://a:1"});
    REQUIRE(detail::split_endpoints("tcp://a:1,tcp://b:2") ==
            std::vector<std::string>{"tcp://a:1", "tcp://b:2"});
    REQUIRE_THROWS_AS(AsyncClient("tcp://127.0.0.1:1,", 1), std::invalid_argument);
    REQUIRE_THROWS_AS(AsyncClient("tcp://127.0.0.1:1,tcp://127.0.0.1:1", 1), std::invalid_argument);
    REQUIRE_THROWS_AS(Client(std::vector<std::string>{}), std::invalid_argument);
}

TEST_CASE("an AsyncClient with several brokers sends round robin to those that are up") {
    auto brokers = fake_brokers(2);
    AsyncClient client(endpoints_of(brokers), 10);
    // Sent before any broker is known to be up: it waits in the client until one is.
    REQUIRE(client.send("echo", "early"));
    REQUIRE(next_request(client, brokers).second.body == std::vector<std::string>{"early"});

    until_all_up(client, 2);
    std::map<std::size_t, int> per_broker;
    for (int i = 0; i < 4; ++i)
        REQUIRE(client.send("echo", "x"));
    for (int i = 0; i < 4; ++i)
        ++per_broker[next_request(client, brokers).first];
    REQUIRE(per_broker[0] == 2);
    REQUIRE(per_broker[1] == 2);
}

TEST_CASE("requests held by a broker that goes away are sent to another under the same ids") {
    auto brokers = fake_brokers(2);
    AsyncClient client(endpoints_of(brokers), 10);
    until_all_up(client, 2);  // so that each gets one
    REQUIRE(client.send("echo", "a"));
    REQUIRE(client.send("echo", "b"));
    auto [first, request] = next_request(client, brokers);
    auto [second, other] = next_request(client, brokers);
    REQUIRE(first != second);

    brokers[first].reset();  // closes its connection, as a killed broker's kernel does
    auto [to, resent] = next_request(client, brokers);
    REQUIRE(to == second);
    REQUIRE(resent.request_id() == request.request_id());
    REQUIRE(resent.body == request.body);
    REQUIRE(client.resent() == 1);
    brokers[second]->reply(resent, Status::ok, {"A"});
    brokers[second]->reply(other, Status::ok, {"B"});
    std::set<std::string> answers;
    for (int i = 0; i < 2; ++i) {
        const auto done = client.receive(kPatience);
        REQUIRE(done);
        REQUIRE(done->status == Status::ok);
        answers.insert(std::string(view(done->body.at(0))));
    }
    REQUIRE(answers == std::set<std::string>{"A", "B"});
}

TEST_CASE("a broker that answers 503 draining gets nothing more; the request goes elsewhere") {
    auto brokers = fake_brokers(2);
    AsyncClient client(endpoints_of(brokers), 10);
    until_all_up(client, 2);
    REQUIRE(client.send("echo", "a"));
    REQUIRE(client.send("echo", "b"));
    auto [draining, request] = next_request(client, brokers);
    auto [other, request_b] = next_request(client, brokers);
    REQUIRE(draining != other);
    brokers[draining]->reply(request, Status::unavailable, {std::string(protocol::kDrainingBody)});
    auto [to, again] = next_request(client, brokers);
    REQUIRE(to == other);
    REQUIRE(again.request_id() == request.request_id());
    brokers[other]->reply(again, Status::ok, {"done"});
    brokers[other]->reply(request_b, Status::ok, {"done"});
    for (int i = 0; i < 2; ++i) {
        const auto done = client.receive(kPatience);
        REQUIRE(done);
        REQUIRE(done->status == Status::ok);  // the draining 503 is never handed out
    }
    // New requests avoid the draining broker.
    for (int i = 0; i < 3; ++i) {
        REQUIRE(client.send("echo", "c"));
        REQUIRE(next_request(client, brokers).first == other);
    }
}

TEST_CASE("with one broker, a 503 draining is an answer like any other") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 10);
    REQUIRE(client.send("echo", "a"));
    const auto request = broker.receive();
    REQUIRE(request);
    broker.reply(*request, Status::unavailable, {std::string(protocol::kDrainingBody)});
    const auto done = client.receive(kPatience);
    REQUIRE(done);
    REQUIRE(done->status == Status::unavailable);
}

TEST_CASE("a Client call moves to another broker when its broker goes away, without a retry") {
    auto brokers = fake_brokers(2);
    const std::vector<std::string> endpoints = endpoints_of(brokers);
    std::atomic<std::size_t> served_by{99};
    BrokerThread serve([&] {
        // The first broker to get the request goes away; the other answers the same id.
        const auto give_up = std::chrono::steady_clock::now() + kPatience;
        std::optional<std::string> id;
        while (std::chrono::steady_clock::now() < give_up) {
            for (std::size_t i = 0; i < brokers.size(); ++i) {
                if (brokers[i] == nullptr) continue;
                const auto request = brokers[i]->receive(5ms);
                if (!request) continue;
                if (!id) {
                    id = request->id;
                    brokers[i].reset();
                    continue;
                }
                if (request->id == *id) {
                    brokers[i]->reply(*request, Status::ok, {"moved"});
                    served_by = i;
                    return;
                }
            }
        }
    });
    Client client(endpoints);
    // No retries: only the move can get the answer.
    const Response response = client.call("echo", "x", {.timeout = kPatience, .retries = 0});
    serve.join();
    REQUIRE(response.status == Status::ok);
    REQUIRE(response.body_view() == "moved");
    REQUIRE(served_by != 99);
}

TEST_CASE("requests written for a broker that died before they left go to another broker only") {
    // It was: they stayed in the dead link's pending message, were sent to another broker, and
    // were then also sent on the dead broker's new socket, which delivered them once it was back.
    auto brokers = fake_brokers(2);
    AsyncClient client(endpoints_of(brokers), 10);
    until_all_up(client, 2);
    const std::string revived = brokers[0]->endpoint();
    brokers[0].reset();  // dies; the client does not know yet
    const auto first = client.queue("echo", "1");
    const auto second = client.queue("echo", "2");
    REQUIRE((first && second));
    std::set<std::string> at_other;
    for (int i = 0; i < 2; ++i) {
        auto [to, request] = next_request(client, brokers);
        REQUIRE(to == 1);
        at_other.insert(request.body.at(0));
    }
    REQUIRE(at_other == std::set<std::string>{"1", "2"});
    brokers[0] = std::make_unique<FakeBroker>(revived);  // back, on its old address
    until_all_up(client, 2);
    REQUIRE(brokers[0]->stays_silent());  // nothing of the requests that went elsewhere
}

TEST_CASE("while no broker is up, requests given up on or cancelled are not kept") {
    // It was: their ids stayed in the client for as long as every broker was down.
    std::vector<std::string> nowhere;
    for (int i = 0; i < 2; ++i)
        nowhere.push_back(FakeBroker().endpoint());  // ports that were just free: nobody listens
    AsyncClient client(nowhere, 10);
    for (int round = 0; round < 40; ++round) {
        for (int i = 0; i < 10; ++i) {
            const auto id = client.queue("echo", "x", 1ms);
            REQUIRE(id);
            if (i % 2 == 0) REQUIRE(client.cancel(*id));
        }
        REQUIRE(client.waiting_for_a_broker() == 5);
        while (client.in_flight() > 0)
            REQUIRE(client.receive(kPatience));
        REQUIRE(client.waiting_for_a_broker() == 0);
    }
}

// ---------------------------------------------------------------------------------------------
// A hostile broker

namespace {

// One message of 1000 ANSWER records for ids no client sent: reading it costs the client far
// more than sending it costs the flooder, so the client's queue never empties.
const std::string kJunkAnswers = [] {
    std::string envelope = kSignature;
    for (std::uint64_t i = 0; i < 1000; ++i)
        envelope += answer_record(id_bytes(0xF1000D0000000000ull + i), 200, "");
    return envelope;
}();

// Floods `to` with kJunkAnswers until `stop`, or kPatience (so the test ends either way).
void flood(FakeBroker& broker, const Received& to, const std::atomic<bool>& stop) {
    const auto give_up = std::chrono::steady_clock::now() + kPatience;
    while (!stop && std::chrono::steady_clock::now() < give_up)
        broker.send_raw(to, {kJunkAnswers});
}

// Bounds a call that should end at its timeout: far above it, far below a flood's kPatience.
constexpr auto kFloodedCallBound = 5s;

}  // namespace

TEST_CASE("a Client call flooded with answers nobody awaits still returns by its timeout") {
    FakeBroker broker;
    std::atomic<bool> returned{false};
    BrokerThread flooder([&] {
        if (const auto request = broker.receive()) flood(broker, *request, returned);
    });
    Client client(broker.endpoint());
    Response response;
    const auto elapsed =
        time_of([&] { response = client.call("svc", "x", {.timeout = 200ms, .retries = 0}); });
    returned = true;
    flooder.join();
    REQUIRE(response.status == Status::no_reply);
    REQUIRE(elapsed < kFloodedCallBound);
}

TEST_CASE("an AsyncClient receive flooded with answers nobody awaits returns by its timeout") {
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 10);
    REQUIRE(client.send("svc", "x", 60s));
    std::atomic<bool> returned{false};
    BrokerThread flooder([&] {
        if (const auto request = broker.receive()) flood(broker, *request, returned);
    });
    std::optional<Completion> done;
    const auto elapsed = time_of([&] { done = client.receive(200ms); });
    returned = true;
    flooder.join();
    REQUIRE_FALSE(done);
    REQUIRE(elapsed < kFloodedCallBound);
    REQUIRE(client.in_flight() == 1);
}

TEST_CASE("an AsyncClient that does not read stops taking a broker's flood: its queue is bounded") {
    // It was: no receive high-water mark, so a broker could fill the client's memory with
    // answers faster than it read them. With one, the flooder's own queue fills and says so.
    FakeBroker broker;
    AsyncClient client(broker.endpoint(), 10);
    REQUIRE(client.send("svc", "x", 60s));
    const auto request = broker.receive();
    REQUIRE(request);
    const std::string junk = kSignature + answer_record(id_bytes(1), 200, std::string(4096, 'j'));
    // Past the window, the high-water marks and what the kernel buffers, far below this.
    constexpr int kUnbounded = 20'000;
    int sent = 0;
    const auto give_up = std::chrono::steady_clock::now() + kPatience;
    while (sent < kUnbounded && std::chrono::steady_clock::now() < give_up) {
        if (broker.offer_raw(*request, {junk})) {
            ++sent;
            continue;
        }
        // Full now; still full after a while, since nobody reads (a moment of TCP catching up
        // is not a bound).
        std::this_thread::sleep_for(50ms);
        if (!broker.offer_raw(*request, {junk})) break;
        ++sent;
    }
    INFO("the client took " << sent << " messages of 4 kB without reading any");
    REQUIRE(sent < kUnbounded);
}

TEST_CASE("a Client takes an answer only from the broker it sent the request to") {
    // It was: with brokers A and B, A answered the request that went to B, and the call took
    // A's body. Here A learns B's id from the test, as it could have guessed a sequential one.
    auto brokers = fake_brokers(2);
    std::atomic<bool> returned{false};
    std::atomic<int> forged{0};
    BrokerThread serve([&] {
        std::map<std::size_t, Received> seen;  // a request each broker got: how to reach us
        const auto give_up = std::chrono::steady_clock::now() + kPatience;
        while (!returned && std::chrono::steady_clock::now() < give_up) {
            for (std::size_t i = 0; i < brokers.size(); ++i) {
                const auto request = brokers[i]->receive(5ms);
                if (!request) continue;
                const std::size_t other = 1 - i;
                if (const auto there = seen.find(other); there != seen.end()) {
                    // The other broker answers this one's request; this one stays silent.
                    brokers[other]->reply(there->second, request->id, Status::ok, {"forged"});
                    ++forged;
                    continue;
                }
                seen.emplace(i, *request);
                brokers[i]->reply(*request, Status::ok, {"real"});
            }
        }
    });
    Client client(endpoints_of(brokers));
    // Calls until one goes to the broker that did not answer the first (both must be up).
    std::vector<Response> responses;
    for (int call = 0; call < 50 && forged == 0; ++call)
        responses.push_back(client.call("echo", "x", {.timeout = 500ms, .retries = 0}));
    returned = true;
    serve.join();
    REQUIRE(forged > 0);
    for (const Response& response : responses)
        REQUIRE(response.body_view() != "forged");
    REQUIRE(responses.back().status == Status::no_reply);
}

TEST_CASE("an AsyncClient takes an answer only from the broker it sent the request to") {
    auto brokers = fake_brokers(2);
    AsyncClient client(endpoints_of(brokers), 10);
    until_all_up(client, 2);
    REQUIRE(client.send("echo", "a"));
    REQUIRE(client.send("echo", "b"));
    auto [first, request] = next_request(client, brokers);
    auto [second, other] = next_request(client, brokers);
    REQUIRE(first != second);
    // The first broker answers the second's request before its own, and forges a draining 503
    // for it, which would move it away: both ignored.
    brokers[first]->answer_all(
        request.identity, {{other.id, Status::unavailable, {std::string(protocol::kDrainingBody)}},
                           {other.id, Status::ok, {"forged"}},
                           {request.id, Status::ok, {"real a"}}});
    auto done = client.receive(kPatience);
    REQUIRE(done);
    REQUIRE(view(done->body.at(0)) == "real a");
    REQUIRE(client.resent() == 0);
    brokers[second]->reply(other, Status::ok, {"real b"});
    done = client.receive(kPatience);
    REQUIRE(done);
    REQUIRE(view(done->body.at(0)) == "real b");
}

TEST_CASE("request ids cannot be guessed from the ids a broker saw") {
    // It was: ids counted 1, 2, 3..., so a broker that saw one knew the next.
    AsyncClient first_client("tcp://127.0.0.1:1", 100);
    AsyncClient second_client("tcp://127.0.0.1:1", 100);
    std::set<std::uint64_t> ids;
    std::optional<std::uint64_t> previous;
    for (int i = 0; i < 100; ++i) {
        const auto id = first_client.queue("echo", "x", 0ms);
        REQUIRE(id);
        REQUIRE(*id != 0);
        REQUIRE(ids.insert(*id).second);
        if (previous) REQUIRE(*id - *previous > 1000);  // neither next nor near
        previous = id;
    }
    const auto other = second_client.queue("echo", "x", 0ms);
    REQUIRE(other);
    REQUIRE_FALSE(ids.count(*other));
}

TEST_CASE("SipHash-2-4, which makes the request ids, gives the reference vector") {
    // Aumasson and Bernstein, "SipHash: a fast short-input PRF", appendix A: key 00..0f,
    // message 00..07.
    const detail::SipHashKey key{0x0706050403020100ull, 0x0F0E0D0C0B0A0908ull};
    REQUIRE(detail::siphash24(key, 0x0706050403020100ull) == 0x93F5F5799A932462ull);
}
