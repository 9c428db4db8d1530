// The worker library against a fake broker: a ROUTER on an ephemeral port that reads and writes
// ZB/1 (shared/wire.hpp) and hands the test one record at a time.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
// The sanitizers' own allocator, which malloc statistics do not see. Declared here, as in
// <sanitizer/allocator_interface.h>, which GCC does not ship.
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#else
#include <malloc.h>
#endif

#include "process_helpers.hpp"
#include "shared/clock.hpp"
#include "shared/codec.hpp"
#include "shared/wire.hpp"
#include "wire_bytes.hpp"
#include "worker/broker_connection.hpp"
#include "worker/builtin_services.hpp"
#include "worker/credit_in_force.hpp"
#include "worker/credit_share.hpp"
#include "worker/payload.hpp"
#include "worker/recent_replies.hpp"
#include "worker/worker.hpp"

using namespace zbroker;
using namespace std::chrono_literals;
using testing::eventually;
using testing::in_time;
using testing::kPatience;
using testing::kTooSlow;
using namespace testing;  // wire_bytes.hpp
using wire::Command;

namespace {

const std::string kSignature(wire::kSignature);

Frames frames_of(const std::vector<std::string>& parts) {
    Frames frames;
    for (const std::string& part : parts)
        frames.push_back(frame(part));
    return frames;
}

// One record the fake broker received, and what it knows of the message it came in.
struct Received {
    std::string identity;
    std::optional<Command> command;  // nullopt: the message did not parse, see `problem`
    std::string problem;
    std::string token;    // REPLY
    std::string service;  // READY
    std::uint32_t credit = 0;
    std::vector<std::string> body;  // the body frames; an empty inline body is none
    bool body_in_frames = false;
    std::size_t message = 0;  // the fake broker's count of messages read so far, this one's
    std::size_t records_in_message = 0;
    std::size_t frames_in_message = 0;  // envelope and body frames, without the routing id
    std::string envelope;               // the message's envelope frame, whole
};

std::string name_of(const Received& received) {
    if (!received.command) return "malformed (" + received.problem + ")";
    return std::string(wire::command_name(*received.command));
}

// What the tests about a conversation look past: heartbeats, and a worker adapting its credit.
bool is_noise(const Received& received) {
    return received.command == Command::heartbeat ||
           (received.command == Command::credit && received.credit != 0);
}

std::vector<std::string> names(const std::vector<Received>& records) {
    std::vector<std::string> out;
    for (const Received& received : records)
        out.push_back(name_of(received));
    return out;
}

// A broker stand-in: a ROUTER bound on 127.0.0.1 that reads the worker's ZB/1 messages and
// splits each into records, so that a test waits on records whatever the batching; and writes
// ZB/1 with wire::Writer, or raw frames for the malformed ones. Used from one thread at a time.
class FakeBroker {
  public:
    FakeBroker() : router_(context_, zmq::socket_type::router) {
        router_.set(zmq::sockopt::linger, 0);
        router_.bind("tcp://127.0.0.1:*");
        endpoint_ = router_.get(zmq::sockopt::last_endpoint);
    }

    const std::string& endpoint() const { return endpoint_; }

    // What a broker that stops and starts again does to its workers: its ROUTER closes (and
    // with it every TCP connection to it), and a new one binds the same endpoint. Records not
    // yet handed out are forgotten.
    void restart() {
        router_.close();
        queue_.clear();
        unechoed_.clear();
        router_ = zmq::socket_t(context_, zmq::socket_type::router);
        router_.set(zmq::sockopt::linger, 0);
        // libzmq closes the old listener on its own thread, a moment after close(): until then
        // the port is taken.
        const bool bound = eventually([this] {
            try {
                router_.bind(endpoint_);
                return true;
            } catch (const zmq::error_t&) {
                return false;
            }
        });
        INFO("could not bind " << endpoint_ << " again");
        REQUIRE(bound);
    }

    // On (the default), every CREDIT read is echoed at once, as the broker does. Off, the echoes
    // are held back until echo_credit(true), which sends them.
    void echo_credit(bool on) {
        echo_credit_ = on;
        if (!on) return;
        for (const auto& [identity, credit] : unechoed_)
            send_credit(identity, credit);
        unechoed_.clear();
    }

    // The next record within `timeout`, whatever it is.
    std::optional<Received> receive(Millis timeout) {
        if (queue_.empty() && !read_message(timeout)) return std::nullopt;
        Received received = std::move(queue_.front());
        queue_.pop_front();
        return received;
    }

    // Reads (and echoes) what the worker sends, without handing it out: while a test waits for
    // the worker's thread to end.
    void pump(Millis timeout) { read_message(timeout); }

    // The next record carrying `command` within `timeout`; others (heartbeats) are skipped.
    // For what should not come: a short window, as a slow machine can only make it pass.
    std::optional<Received> next(Command command, Millis timeout) {
        const auto deadline = now() + timeout;
        while (now() < deadline) {
            auto received = receive(std::chrono::ceil<Millis>(deadline - now()));
            if (!received) continue;
            if (received->command == command) return received;
            if (!received->command) FAIL_CHECK("the worker sent " << name_of(*received));
        }
        return std::nullopt;
    }

    // The next record carrying `command`, which should come: waits up to kPatience.
    std::optional<Received> expect(Command command) {
        auto received = next(command, kPatience);
        if (!received) UNSCOPED_INFO("no " << wire::command_name(command) << ": " << kTooSlow);
        return received;
    }

    // Every record but heartbeats and credit updates (a non-zero CREDIT: the worker adapting
    // its credit), in order, up to the `count`th carrying `command`; fewer when `patience`
    // runs out first (a short one for what should not come).
    std::vector<Received> until(Command command, std::size_t count = 1,
                                Millis patience = kPatience) {
        std::vector<Received> seen;
        std::size_t matching = 0;
        const auto deadline = now() + patience;
        while (matching < count && now() < deadline) {
            auto received = receive(std::chrono::ceil<Millis>(deadline - now()));
            if (!received || is_noise(*received)) continue;
            if (received->command == command) ++matching;
            seen.push_back(std::move(*received));
        }
        if (matching < count && patience == kPatience) UNSCOPED_INFO(kTooSlow);
        return seen;
    }

    // Sends `parts` as they are, one frame each, to the worker at `identity`.
    void send_raw(const std::string& identity, const std::vector<std::string>& parts) {
        Frames frames = frames_of(parts);
        REQUIRE(send(identity, frames));
    }

    struct Job {
        std::string token;
        std::vector<std::string> body;
        std::string idempotency_key{};  // empty: none
    };

    // One message holding a JOB record for each of `jobs`, in order.
    void send_jobs(const std::string& identity, const std::vector<Job>& jobs) {
        wire::Writer writer;
        for (const Job& job : jobs) {
            Frames body = frames_of(job.body);
            writer.job(job.token, std::nullopt, job.idempotency_key, {body, 0, body.size()});
        }
        Frames frames;
        writer.take(frames);
        REQUIRE(send(identity, frames));
    }

    void send_job(const std::string& identity, const std::string& token,
                  const std::vector<std::string>& body) {
        send_jobs(identity, {{token, body}});
    }

    // HEARTBEAT or DISCONNECT.
    void send_command(const std::string& identity, Command command) {
        wire::Writer writer;
        writer.command(command);
        Frames frames;
        writer.take(frames);
        REQUIRE(send(identity, frames));
    }

  private:
    bool send(const std::string& identity, Frames& message) {
        message.insert(message.begin(), frame(identity));
        return send_frames(router_, message) == SendResult::sent;
    }

    void send_credit(const std::string& identity, std::uint32_t credit) {
        wire::Writer writer;
        writer.credit(credit);
        Frames frames;
        writer.take(frames);
        send(identity, frames);  // no REQUIRE: also sent while a worker is being joined
    }

    // Reads one message within `timeout` and queues its records; false when none came.
    bool read_message(Millis timeout) {
        zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0}};
        zmq::poll(items, 1, std::max(timeout, Millis{0}));
        if ((items[0].revents & ZMQ_POLLIN) == 0) return false;
        Frames frames;
        recv_frames(router_, frames);
        ++messages_;
        Received common;
        common.identity = std::string(view(frames.front()));
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
            received.command = record.command;
            received.token = std::string(record.token);
            received.service = std::string(record.service);
            received.credit = record.credit;
            received.body_in_frames = record.body.in_frames;
            if (record.body.in_frames) {
                for (std::size_t i = record.body.first; i < record.body.first + record.body.count;
                     ++i)
                    received.body.emplace_back(view(frames[i]));
            } else if (!record.body.bytes.empty()) {
                received.body.emplace_back(record.body.bytes);
            }
            if (record.command == Command::credit) {
                if (echo_credit_) {
                    send_credit(received.identity, record.credit);
                } else {
                    unechoed_.emplace_back(received.identity, record.credit);
                }
            }
            queue_.push_back(std::move(received));
        }
        return true;
    }

    zmq::context_t context_{1};
    zmq::socket_t router_;
    std::string endpoint_;
    std::deque<Received> queue_;  // records read and not yet handed out
    std::size_t messages_ = 0;
    bool echo_credit_ = true;
    std::vector<std::pair<std::string, std::uint32_t>> unechoed_;
};

// Runs a worker on its own thread; the destructor always stops and joins it, even when a
// REQUIRE fails, so that no test leaves a thread behind. A stopping worker waits for the
// brokers' echoes of its CREDIT 0, so while it waits the fake brokers read and echo.
class RunningWorker {
  public:
    RunningWorker(Worker& worker, FakeBroker& broker) : RunningWorker(worker, {&broker}) {}
    RunningWorker(Worker& worker, std::vector<FakeBroker*> brokers)
        : worker_(worker), brokers_(std::move(brokers)), thread_([this] {
              try {
                  worker_.run();
              } catch (const std::exception& e) {
                  error_ = e.what();
              }
              finished_ = true;
          }) {}
    ~RunningWorker() { stop_and_join(); }
    RunningWorker(const RunningWorker&) = delete;
    RunningWorker& operator=(const RunningWorker&) = delete;

    void stop_and_join() {
        worker_.stop();
        for (FakeBroker* broker : brokers_)
            broker->echo_credit(true);
        while (!finished_) {
            for (FakeBroker* broker : brokers_)
                broker->pump(5ms);
        }
        if (thread_.joinable()) thread_.join();
    }
    const std::string& error() const { return error_; }

  private:
    Worker& worker_;
    std::vector<FakeBroker*> brokers_;
    std::string error_;
    std::atomic<bool> finished_{false};
    std::thread thread_;  // last: starts once the rest is in place
};

// Options for a worker of the fake broker, which never sends heartbeats: quick heartbeats,
// but a liveness window (twice the patience of any wait) so long that only the tests about
// liveness ever see the broker declared dead, however slow the machine.
WorkerOptions options_for(const FakeBroker& broker) {
    WorkerOptions options;
    options.endpoints = {broker.endpoint()};
    options.heartbeat_interval = 50ms;
    options.liveness = static_cast<int>(2 * kPatience / options.heartbeat_interval);
    options.reconnect_delay = 50ms;
    return options;
}

// The same, attached to every one of `brokers`, in that order.
WorkerOptions options_for(const std::vector<FakeBroker*>& brokers) {
    WorkerOptions options = options_for(*brokers.front());
    options.endpoints.clear();
    for (const FakeBroker* broker : brokers)
        options.endpoints.push_back(broker->endpoint());
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

// Serves "slow": counts each call in `calls`, holds it until `finish` opens, then echoes it.
void handle_held(Worker& worker, std::atomic<int>& calls, const Gate& finish) {
    worker.handle("slow", [&calls, &finish](Request& request) {
        ++calls;
        finish.wait();
        return Reply::raw(request.body());
    });
}

std::string error_of(const std::string& body) {
    return unpack<std::map<std::string, std::string>>(body).at("error");
}

// What the process logs while it lives, every line kept: the default logger is replaced, and
// put back after.
class LogCapture {
  public:
    LogCapture()
        : previous_(spdlog::default_logger()),
          sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(1'000'000)) {
        auto logger = std::make_shared<spdlog::logger>("captured", sink_);
        logger->set_level(spdlog::level::info);
        logger->set_pattern("%l: %v");
        spdlog::set_default_logger(std::move(logger));
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    std::vector<std::string> lines() const { return sink_->last_formatted(); }
    std::vector<std::string> lines_with(std::string_view text) const {
        std::vector<std::string> found;
        for (std::string& line : lines())
            if (line.find(text) != std::string::npos) found.push_back(std::move(line));
        return found;
    }

  private:
    std::shared_ptr<spdlog::logger> previous_;
    std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

// Bytes the process has allocated and not freed.
std::size_t allocated_bytes() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return __sanitizer_get_current_allocated_bytes();
#else
    const struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
#endif
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

TEST_CASE("a worker needs at least one broker endpoint, none empty and none twice") {
    WorkerOptions options;
    options.endpoints.clear();
    REQUIRE_THROWS_WITH(Worker(options), Catch::Contains("endpoints is empty"));
    options.endpoints = {"tcp://127.0.0.1:5555", ""};
    REQUIRE_THROWS_WITH(Worker(options), Catch::Contains("endpoints[1] is empty"));
    options.endpoints = {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5555"};
    REQUIRE_THROWS_WITH(Worker(options), Catch::Contains("'tcp://127.0.0.1:5555' twice"));
    options.endpoints = {"tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556"};
    REQUIRE_NOTHROW(Worker(options));
}

TEST_CASE("a worker rejects a negative number of recent replies") {
    WorkerOptions options;
    options.recent_replies = -1;
    REQUIRE_THROWS_WITH(Worker(options), Catch::Contains("recent_replies is -1"));
    options.recent_replies = 0;
    REQUIRE_NOTHROW(Worker(options));
}

TEST_CASE("a worker refuses mmi. services, empty and long names, and duplicates") {
    Worker worker(WorkerOptions{});
    REQUIRE_THROWS_AS(worker.handle("mmi.service", echo_handler), std::invalid_argument);
    REQUIRE_THROWS_AS(worker.handle("", echo_handler), std::invalid_argument);
    REQUIRE_THROWS_AS(worker.handle(std::string(256, 's'), echo_handler), std::invalid_argument);
    worker.handle("echo", echo_handler);
    REQUIRE_THROWS_WITH(worker.handle("echo", echo_handler), Catch::Contains("twice"));
}

TEST_CASE("Reply::error is a msgpack map with the message under \"error\"") {
    const Reply reply = Reply::error("it broke");
    REQUIRE(reply.body.size() == 1);
    REQUIRE(error_of(std::string(view(reply.body[0]))) == "it broke");
}

// ---- Credit split and recent replies, on their own ----------------------------------------

TEST_CASE("split_credit gives each broker credit / N, the remainder to the first ones") {
    using detail::split_credit;
    REQUIRE(split_credit(4, 3, 0) == 2);
    REQUIRE(split_credit(4, 3, 1) == 1);
    REQUIRE(split_credit(4, 3, 2) == 1);
    REQUIRE(split_credit(6, 3, 0) == 2);
    REQUIRE(split_credit(6, 3, 2) == 2);
    REQUIRE(split_credit(7, 2, 0) == 4);
    REQUIRE(split_credit(7, 2, 1) == 3);
    REQUIRE(split_credit(10, 1, 0) == 10);
}

TEST_CASE("split_credit gives every broker at least 1, even when the credit is smaller") {
    using detail::split_credit;
    REQUIRE(split_credit(1, 3, 0) == 1);
    REQUIRE(split_credit(1, 3, 1) == 1);
    REQUIRE(split_credit(1, 3, 2) == 1);
    REQUIRE(split_credit(2, 5, 4) == 1);
}

TEST_CASE("split_credit shares add up to max(credit, brokers)") {
    for (std::uint32_t brokers = 1; brokers <= 7; ++brokers) {
        for (std::uint32_t total = 1; total <= 40; ++total) {
            std::uint32_t sum = 0;
            for (std::uint32_t index = 0; index < brokers; ++index)
                sum += detail::split_credit(total, brokers, index);
            INFO(total << " over " << brokers);
            REQUIRE(sum == std::max(total, brokers));
        }
    }
}

namespace {

std::vector<std::string> kept(const detail::RecentReplies& replies, std::string_view key) {
    Frames frames;
    if (!replies.find(key, frames)) return {};
    std::vector<std::string> parts;
    for (const zmq::message_t& part : frames)
        parts.emplace_back(view(part));
    return parts;
}

}  // namespace

TEST_CASE("recent replies keep the latest keys and forget the oldest first") {
    detail::RecentReplies replies(2);
    Frames body = frames_of({"one", "frame two"});
    replies.remember("a", body);
    body = frames_of({"b"});
    replies.remember("b", body);
    REQUIRE(kept(replies, "a") == std::vector<std::string>{"one", "frame two"});
    body = frames_of({"c"});
    replies.remember("c", body);
    REQUIRE(replies.size() == 2);
    REQUIRE(kept(replies, "a").empty());
    REQUIRE(kept(replies, "b") == std::vector<std::string>{"b"});
    REQUIRE(kept(replies, "c") == std::vector<std::string>{"c"});
    // A key already kept keeps its first reply, and its place in the order.
    body = frames_of({"c again"});
    replies.remember("c", body);
    REQUIRE(kept(replies, "c") == std::vector<std::string>{"c"});
    REQUIRE(kept(replies, "b") == std::vector<std::string>{"b"});
}

TEST_CASE("recent replies keep no reply over 64 KiB, none without a key, none when off") {
    detail::RecentReplies replies(10);
    const std::string half(detail::RecentReplies::kMaxReplyBytes / 2, 'x');
    Frames at_limit = frames_of({half, half});
    replies.remember("at limit", at_limit);
    Frames over = frames_of({half, half + "!"});
    replies.remember("over", over);
    Frames body = frames_of({"b"});
    replies.remember("", body);
    REQUIRE(kept(replies, "at limit").size() == 2);
    REQUIRE(kept(replies, "over").empty());
    REQUIRE(replies.size() == 1);

    detail::RecentReplies off(0);
    off.remember("k", body);
    REQUIRE(kept(off, "k").empty());
}

// ---- The ZB/1 conversation ---------------------------------------------------------------

TEST_CASE("READY is one record with the configured credit and the service name") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 7;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);

    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);
    REQUIRE(ready->credit == 7);
    REQUIRE(ready->service == "svc");
    // The whole message: one frame, the envelope with the READY record alone.
    REQUIRE(ready->frames_in_message == 1);
    REQUIRE(ready->envelope ==
            kSignature + command_byte(Command::ready) + u32(7) + short_bytes("svc"));
}

TEST_CASE("credit defaults to a few requests per handler thread") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = 3;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);

    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);
    REQUIRE(ready->credit == static_cast<std::uint32_t>(kDefaultCreditPerThread * 3));
    REQUIRE(ready->credit == static_cast<std::uint32_t>(default_credit(options)));
}

TEST_CASE("each service registers over its own connection") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("a", echo_handler);
    worker.handle("b", echo_handler);
    RunningWorker running(worker, broker);

    const auto first = broker.expect(Command::ready);
    const auto second = broker.expect(Command::ready);
    REQUIRE(first);
    REQUIRE(second);
    REQUIRE(first->identity != second->identity);
    std::vector<std::string> services{first->service, second->service};
    std::sort(services.begin(), services.end());
    REQUIRE(services == std::vector<std::string>{"a", "b"});
}

TEST_CASE("a JOB gets a REPLY with the same token and the handler's frames") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 1;  // fixed: an adaptive credit's CREDIT may share the reply's message
    Worker worker(options);
    worker.handle("reverse", [](Request& request) {
        std::reverse(request.frames.begin(), request.frames.end());
        return Reply::frames(std::move(request.frames));
    });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    const std::string token("\x00\x01token\xff", 8);
    broker.send_job(ready->identity, token, {"abc", "def"});
    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == ready->identity);
    REQUIRE(reply->token == token);
    REQUIRE(reply->body == std::vector<std::string>{"def", "abc"});
    // The whole message: the REPLY record, its body of two frames after the envelope.
    REQUIRE(reply->body_in_frames);
    REQUIRE(reply->frames_in_message == 3);
    REQUIRE(reply->envelope ==
            kSignature + command_byte(Command::reply) + short_bytes(token) + u8(0x01) + u16(2));
    running.stop_and_join();
    REQUIRE(worker.stats().served == 1);
}

TEST_CASE("a small one-frame reply travels inside the envelope") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 1;  // fixed: an adaptive credit's CREDIT may share the reply's message
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "t", {"small"});
    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->frames_in_message == 1);
    REQUIRE(reply->envelope ==
            kSignature + command_byte(Command::reply) + short_bytes("t") + inline_body("small"));
}

TEST_CASE("Request::as decodes msgpack and Reply::of encodes it") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("double", [](Request& request) { return Reply::of(request.as<int>() * 2); });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "t", {pack(21)});
    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->body.size() == 1);
    REQUIRE(unpack<int>(reply->body[0]) == 42);
}

TEST_CASE("with credit N and N threads, N requests run at the same time") {
    constexpr int kParallel = 4;
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = kParallel;
    options.credit = kParallel;
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
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);
    REQUIRE(ready->credit == kParallel);

    for (int i = 0; i < kParallel; ++i)
        broker.send_job(ready->identity, std::to_string(i), {});
    for (int i = 0; i < kParallel; ++i) {
        const auto reply = broker.expect(Command::reply);
        REQUIRE(reply);
        INFO("\"alone\": a job waited in vain for the others to start; " << kTooSlow);
        REQUIRE(reply->body == std::vector<std::string>{"together"});
    }
    REQUIRE(most_at_once == kParallel);
}

TEST_CASE("every JOB record of one message is run and replied") {
    const Execution execution = GENERATE(Execution::pool, Execution::io_thread);
    INFO((execution == Execution::pool ? "on the pool" : "on the socket thread"));
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = 3;
    options.credit = 16;  // every job below at once, whatever the handlers
    Worker worker(options);
    std::atomic<int> calls{0};
    worker.handle(
        "svc",
        [&](Request& request) {
            ++calls;
            return Reply::frames(std::move(request.frames));
        },
        execution);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    // Bodies inline and in frames, so each record must claim its own frames in order.
    const std::vector<FakeBroker::Job> jobs{
        {"j0", {"zero"}},
        {"j1", {"one", "and more"}},
        {"j2", {std::string(wire::kInlineBodyLimit + 1, 'x')}},
        {"j3", {"three"}},
        {"j4", {"4a", "", "4c"}},
        {"j5", {"five"}},
    };
    broker.send_jobs(ready->identity, jobs);
    const auto replies = broker.until(Command::reply, jobs.size());
    REQUIRE(names(replies) == std::vector<std::string>(jobs.size(), "REPLY"));
    std::map<std::string, std::vector<std::string>> expected;
    std::map<std::string, std::vector<std::string>> got;
    std::set<std::size_t> messages;
    for (const FakeBroker::Job& job : jobs)
        expected[job.token] = job.body;
    for (const Received& reply : replies) {
        got[reply.token] = reply.body;
        messages.insert(reply.message);
    }
    REQUIRE(got == expected);
    REQUIRE(calls == static_cast<int>(jobs.size()));
    if (execution == Execution::io_thread) {
        // Run on the socket thread in the round that read them: the round's replies are sent
        // as one message. (Pool replies are batched by whatever is back in a round: not fixed.)
        REQUIRE(messages.size() == 1);
    }
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
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    // The job ends only once the worker has sent heartbeats while it ran and the job has
    // outlasted the liveness window twice: events, so a slow machine only makes it longer.
    constexpr int kHeartbeatsDuringJob = 5;
    broker.send_job(ready->identity, "t", {});
    int heartbeats = 0;
    int readies = 0;
    std::optional<TimePoint> job_seen_at;
    std::optional<Received> reply;
    const auto deadline = now() + kPatience + 2 * window;
    auto next_heartbeat = now();
    while (!reply && now() < deadline) {
        if (now() >= next_heartbeat) {
            broker.send_command(ready->identity, Command::heartbeat);
            next_heartbeat = now() + options.heartbeat_interval;
        }
        if (!job_seen_at && started) job_seen_at = now();
        if (job_seen_at && heartbeats >= kHeartbeatsDuringJob && now() - *job_seen_at >= 2 * window)
            done.open();
        auto received = broker.receive(10ms);
        if (!received) continue;
        if (received->command == Command::heartbeat && job_seen_at) ++heartbeats;
        if (received->command == Command::ready) ++readies;
        if (received->command == Command::reply) reply = std::move(received);
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
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "1", {"boom"});
    const auto failed = broker.expect(Command::reply);
    REQUIRE(failed);
    REQUIRE(failed->token == "1");
    REQUIRE(failed->body.size() == 1);
    REQUIRE(error_of(failed->body[0]) == "boom happened");

    broker.send_job(ready->identity, "2", {"fine"});
    const auto served = broker.expect(Command::reply);
    REQUIRE(served);
    REQUIRE(served->token == "2");
    REQUIRE(served->body == std::vector<std::string>{"fine"});
    running.stop_and_join();
    REQUIRE(worker.stats().failed == 1);
    REQUIRE(worker.stats().served == 1);
}

TEST_CASE("a payload of the wrong shape gets an error reply naming the problem") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("double", [](Request& request) { return Reply::of(request.as<int>() * 2); });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "t", {pack(std::string("twenty-one"))});
    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->body.size() == 1);
    REQUIRE_THAT(error_of(reply->body[0]), Catch::Contains("wrong shape"));
}

TEST_CASE("DISCONNECT from the broker makes the worker reconnect and send READY again") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);
    const auto first = broker.expect(Command::ready);
    REQUIRE(first);

    broker.send_command(first->identity, Command::disconnect);
    const auto second = broker.expect(Command::ready);
    REQUIRE(second);
    REQUIRE(second->identity != first->identity);  // a new socket, a new session
    REQUIRE(second->service == "svc");

    broker.send_job(second->identity, "t", {"after"});
    const auto reply = broker.expect(Command::reply);
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
    RunningWorker running(worker, broker);
    const auto first = broker.expect(Command::ready);
    REQUIRE(first);

    const auto second = broker.expect(Command::ready);
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
    RunningWorker running(worker, broker);
    const auto first = broker.expect(Command::ready);
    REQUIRE(first);

    broker.send_job(first->identity, "t", {});
    REQUIRE(in_time([&] { return started.load(); }));
    broker.send_command(first->identity, Command::disconnect);
    REQUIRE(broker.expect(Command::ready));
    // The job ends only now, with the new connection up: the reply has a connection to go
    // out on, and must not take it.
    finish.open();
    REQUIRE(in_time([&] { return worker.stats().dropped_replies == 1; }));
    REQUIRE_FALSE(broker.next(Command::reply, 500ms));
    running.stop_and_join();
    REQUIRE(worker.stats().dropped_replies == 1);
}

TEST_CASE("a job queued for a connection that was replaced before it started is skipped") {
    // One thread: the second job waits in the pool's queue behind the first. Before, it ran
    // after the reconnect all the same, though the broker had given it to another worker.
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = 1;
    options.credit = 2;
    Worker worker(options);
    std::atomic<bool> started{false};
    std::atomic<int> runs{0};
    Gate finish;
    worker.handle("slow", [&](Request&) {
        ++runs;
        started = true;
        finish.wait();
        return Reply::raw("done");
    });
    RunningWorker running(worker, broker);
    const auto first = broker.expect(Command::ready);
    REQUIRE(first);

    broker.send_job(first->identity, "t1", {});
    broker.send_job(first->identity, "t2", {});
    REQUIRE(in_time([&] { return started.load(); }));
    broker.send_command(first->identity, Command::disconnect);
    REQUIRE(broker.expect(Command::ready));
    finish.open();
    REQUIRE(in_time([&] { return worker.stats().skipped_jobs == 1; }));
    REQUIRE(runs == 1);
    REQUIRE_FALSE(broker.next(Command::reply, 300ms));
    running.stop_and_join();
    REQUIRE(worker.stats().dropped_replies == 1);  // the first job's reply, as above
}

// ---- Several brokers ---------------------------------------------------------------------

TEST_CASE("a worker attached to three brokers sends each a READY with its share of the credit") {
    const auto [credit, shares] = GENERATE(table<int, std::vector<std::uint32_t>>({
        {4, {2, 1, 1}},
        {6, {2, 2, 2}},
        {1, {1, 1, 1}},  // at least 1 each: three requests may come, one more than promised
    }));
    INFO("--credit " << credit);
    FakeBroker first;
    FakeBroker second;
    FakeBroker third;
    const std::vector<FakeBroker*> brokers{&first, &second, &third};
    WorkerOptions options = options_for(brokers);
    options.credit = credit;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, brokers);

    std::vector<std::uint32_t> announced;
    for (FakeBroker* broker : brokers) {
        const auto ready = broker->expect(Command::ready);
        REQUIRE(ready);
        REQUIRE(ready->service == "svc");
        announced.push_back(ready->credit);
    }
    REQUIRE(announced == shares);
}

TEST_CASE("a job from each of three brokers is replied on the session it came from") {
    const Execution execution = GENERATE(Execution::pool, Execution::io_thread);
    INFO((execution == Execution::pool ? "on the pool" : "on the socket thread"));
    FakeBroker first;
    FakeBroker second;
    FakeBroker third;
    const std::vector<FakeBroker*> brokers{&first, &second, &third};
    WorkerOptions options = options_for(brokers);
    options.credit = 3;
    Worker worker(options);
    worker.handle("svc", echo_handler, execution);
    RunningWorker running(worker, brokers);
    std::vector<std::string> identities;
    for (FakeBroker* broker : brokers) {
        const auto ready = broker->expect(Command::ready);
        REQUIRE(ready);
        identities.push_back(ready->identity);
    }

    for (std::size_t i = 0; i < brokers.size(); ++i)
        brokers[i]->send_job(identities[i], "t" + std::to_string(i), {"from " + std::to_string(i)});
    for (std::size_t i = 0; i < brokers.size(); ++i) {
        const auto reply = brokers[i]->expect(Command::reply);
        REQUIRE(reply);
        REQUIRE(reply->identity == identities[i]);
        REQUIRE(reply->token == "t" + std::to_string(i));
        REQUIRE(reply->body == std::vector<std::string>{"from " + std::to_string(i)});
    }
    running.stop_and_join();
    REQUIRE(worker.stats().served == 3);
}

TEST_CASE("a worker attached to three brokers holds what its credit allows, and counts it") {
    FakeBroker first;
    FakeBroker second;
    FakeBroker third;
    const std::vector<FakeBroker*> brokers{&first, &second, &third};
    WorkerOptions options = options_for(brokers);
    options.threads = 4;
    options.credit = 4;
    Worker worker(options);
    std::atomic<int> started{0};
    Gate finish;
    handle_held(worker, started, finish);
    RunningWorker running(worker, brokers);

    // Each fake broker sends as many jobs as the credit it was given, as a broker does: all of
    // them together are the worker's credit, not three times it.
    std::uint32_t sent = 0;
    for (FakeBroker* broker : brokers) {
        const auto ready = broker->expect(Command::ready);
        REQUIRE(ready);
        for (std::uint32_t i = 0; i < ready->credit; ++i, ++sent)
            broker->send_job(ready->identity, "t" + std::to_string(sent), {"j"});
    }
    REQUIRE(sent == 4);
    REQUIRE(in_time([&] { return started == 4; }));
    REQUIRE(worker.stats().most_held == 4);
    finish.open();
    for (FakeBroker* broker : brokers) {
        const auto reply = broker->expect(Command::reply);
        REQUIRE(reply);
    }
    running.stop_and_join();
    REQUIRE(worker.stats().most_held == 4);
    REQUIRE(worker.stats().served == 4);
}

TEST_CASE("every JOB of one message counts as held at once") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 5;
    Worker worker(options);
    worker.handle("svc", echo_handler, Execution::io_thread);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_jobs(ready->identity,
                     {{"a", {"a"}}, {"b", {"b"}}, {"c", {"c"}}, {"d", {"d"}}, {"e", {"e"}}});
    REQUIRE(broker.until(Command::reply, 5).size() == 5);
    running.stop_and_join();
    // Run one after the other on the socket thread, yet the broker sent them all at once.
    REQUIRE(worker.stats().most_held == 5);
}

TEST_CASE("a broker that restarts gets the worker's READY again at once, not after liveness") {
    FakeBroker steady;
    FakeBroker restarting;
    WorkerOptions options = options_for({&steady, &restarting});
    // Silence alone would be noticed only after four times the longest wait below: a READY
    // within that wait comes from the closed connection being noticed.
    options.liveness = static_cast<int>(4 * kPatience / options.heartbeat_interval);
    options.credit = 2;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, {&steady, &restarting});
    REQUIRE(steady.expect(Command::ready));
    const auto before = restarting.expect(Command::ready);
    REQUIRE(before);
    REQUIRE(before->credit == 1);

    restarting.restart();
    const auto after = restarting.expect(Command::ready);
    REQUIRE(after);
    REQUIRE(after->service == "svc");
    REQUIRE(after->credit == 1);  // its share, as before
    restarting.send_job(after->identity, "t", {"after the restart"});
    const auto reply = restarting.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == after->identity);
    REQUIRE(reply->body == std::vector<std::string>{"after the restart"});
    // The other broker's session went on untouched. (A short window: a slow machine can only
    // make this pass.)
    REQUIRE_FALSE(steady.next(Command::ready, 300ms));
    running.stop_and_join();
    REQUIRE(worker.stats().reconnects == 1);
}

// ---- Idempotency keys --------------------------------------------------------------------

TEST_CASE("a request sent again with the same idempotency key runs once and gets the same reply") {
    const Execution execution = GENERATE(Execution::pool, Execution::io_thread);
    INFO((execution == Execution::pool ? "on the pool" : "on the socket thread"));
    FakeBroker first;
    FakeBroker second;
    WorkerOptions options = options_for({&first, &second});
    options.credit = 4;
    Worker worker(options);
    std::atomic<int> calls{0};
    std::mutex keys_mutex;
    std::vector<std::string> keys;  // as each call saw Request::idempotency_key
    worker.handle(
        "svc",
        [&](Request& request) {
            const int call = ++calls;
            {
                std::lock_guard lock(keys_mutex);
                keys.emplace_back(request.idempotency_key);
            }
            return Reply::raw("run " + std::to_string(call));
        },
        execution);
    RunningWorker running(worker, {&first, &second});
    const auto ready_first = first.expect(Command::ready);
    const auto ready_second = second.expect(Command::ready);
    REQUIRE(ready_first);
    REQUIRE(ready_second);

    first.send_jobs(ready_first->identity, {{"t1", {"order"}, "order-17"}});
    const auto reply = first.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->body == std::vector<std::string>{"run 1"});

    // The client's first broker went away before it answered: the client sends the request
    // again through the second, which hands it to the same worker.
    second.send_jobs(ready_second->identity, {{"t2", {"order"}, "order-17"}});
    const auto again = second.expect(Command::reply);
    REQUIRE(again);
    REQUIRE(again->identity == ready_second->identity);
    REQUIRE(again->token == "t2");
    REQUIRE(again->body == std::vector<std::string>{"run 1"});
    REQUIRE(worker.stats().duplicates_skipped == 1);

    // Another key, and no key at all, run.
    second.send_jobs(ready_second->identity, {{"t3", {"order"}, "order-18"}, {"t4", {"order"}}});
    REQUIRE(second.until(Command::reply, 2).size() == 2);
    running.stop_and_join();
    REQUIRE(calls == 3);
    REQUIRE(worker.stats().duplicates_skipped == 1);
    REQUIRE(worker.stats().served == 3);
    REQUIRE(keys == std::vector<std::string>{"order-17", "order-18", ""});
}

TEST_CASE("with recent replies off, a request sent again with its key runs again") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.recent_replies = 0;
    Worker worker(options);
    std::atomic<int> calls{0};
    worker.handle("svc", [&](Request&) { return Reply::raw("run " + std::to_string(++calls)); });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    for (const char* token : {"t1", "t2"}) {
        broker.send_jobs(ready->identity, {{token, {}, "k"}});
        REQUIRE(broker.expect(Command::reply));
    }
    running.stop_and_join();
    REQUIRE(calls == 2);
    REQUIRE(worker.stats().duplicates_skipped == 0);
}

TEST_CASE("a request sent again while its first run is still going runs again") {
    // Its reply is not known yet: the window only answers what has been answered.
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.threads = 2;
    options.credit = 2;
    Worker worker(options);
    std::atomic<int> started{0};
    Gate finish;
    worker.handle("slow", [&](Request&) {
        ++started;
        finish.wait();
        return Reply::raw("done");
    });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_jobs(ready->identity, {{"t1", {}, "k"}});
    REQUIRE(in_time([&] { return started == 1; }));
    broker.send_jobs(ready->identity, {{"t2", {}, "k"}});
    REQUIRE(in_time([&] { return started == 2; }));
    finish.open();
    REQUIRE(broker.until(Command::reply, 2).size() == 2);
    running.stop_and_join();
    REQUIRE(worker.stats().duplicates_skipped == 0);
}

// ---- Stopping ----------------------------------------------------------------------------

TEST_CASE("stop() lets the running job finish and reply, then sends DISCONNECT") {
    FakeBroker broker;  // echoes CREDIT 0 at once
    Worker worker(options_for(broker));
    std::atomic<bool> started{false};
    Gate finish;
    worker.handle("slow", [&](Request&) {
        started = true;
        finish.wait();
        return Reply::raw("finished");
    });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "t", {});
    REQUIRE(in_time([&] { return started.load(); }));
    worker.stop();
    // CREDIT 0 says the worker is stopping; the job is still running, and only now may finish.
    // The echo has gone out already: what holds the worker now is the job alone.
    const auto credit = broker.until(Command::credit);
    REQUIRE(names(credit) == std::vector<std::string>{"CREDIT"});
    REQUIRE(credit.back().credit == 0);
    finish.open();
    const auto rest = broker.until(Command::disconnect);
    REQUIRE(names(rest) == std::vector<std::string>{"REPLY", "DISCONNECT"});
    REQUIRE(rest.front().body == std::vector<std::string>{"finished"});
    running.stop_and_join();
    REQUIRE(running.error().empty());
}

TEST_CASE("a stopping worker sends CREDIT 0 at once, finishes its jobs, then DISCONNECT") {
    FakeBroker broker;
    broker.echo_credit(false);  // the test says when the broker has read the CREDIT 0
    Worker worker(options_for(broker));
    std::atomic<int> calls{0};
    std::atomic<bool> first_started{false};
    Gate finish;
    worker.handle("slow", [&](Request& request) {
        ++calls;
        if (request.body() == "first") {
            first_started = true;
            finish.wait();
        }
        return Reply::raw(request.body());
    });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "first", {"first"});
    REQUIRE(in_time([&] { return first_started.load(); }));
    worker.stop();
    // At once: while the job still runs, so before its REPLY.
    const auto credit = broker.until(Command::credit);
    REQUIRE(names(credit) == std::vector<std::string>{"CREDIT"});
    REQUIRE(credit.back().credit == 0);

    // A JOB the broker sent before it read the CREDIT 0: run and replied, not refused, which
    // would cost its request an attempt.
    broker.send_job(ready->identity, "late", {"late"});
    finish.open();
    const auto replies = broker.until(Command::reply, 2);
    REQUIRE(names(replies) == std::vector<std::string>{"REPLY", "REPLY"});
    std::map<std::string, std::vector<std::string>> bodies;
    for (const Received& reply : replies)
        bodies[reply.token] = reply.body;
    REQUIRE(bodies == std::map<std::string, std::vector<std::string>>{{"first", {"first"}},
                                                                      {"late", {"late"}}});

    // Until the echo a JOB may still be on its way, so the worker stays. (A short window: a
    // slow machine can only make this pass.)
    REQUIRE(names(broker.until(Command::disconnect, 1, 300ms)) == std::vector<std::string>{});
    broker.echo_credit(true);
    REQUIRE(names(broker.until(Command::disconnect)) == std::vector<std::string>{"DISCONNECT"});
    running.stop_and_join();
    REQUIRE(running.error().empty());
    // DISCONNECT came last: the worker closed its socket after it.
    REQUIRE_FALSE(broker.receive(100ms));
    REQUIRE(calls == 2);
    REQUIRE(worker.stats().served == 2);
    REQUIRE(worker.stats().dropped_replies == 0);
}

TEST_CASE("a worker whose broker never echoes CREDIT 0 still stops within its liveness period") {
    FakeBroker broker;
    broker.echo_credit(false);
    WorkerOptions options = options_for(broker);
    // 2 s: the fake's heartbeats below keep the broker alive in the worker's eyes even when a
    // loaded machine stalls the test thread, so only the wait for the echo can end.
    options.heartbeat_interval = 100ms;
    options.liveness = 20;
    const Millis period = options.heartbeat_interval * options.liveness;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    const auto asked = now();
    worker.stop();
    std::vector<std::string> seen;
    std::optional<TimePoint> disconnected_at;
    const auto deadline = now() + kPatience;
    auto next_heartbeat = now();
    while (!disconnected_at && now() < deadline) {
        if (now() >= next_heartbeat) {
            broker.send_command(ready->identity, Command::heartbeat);
            next_heartbeat = now() + options.heartbeat_interval;
        }
        auto received = broker.receive(10ms);
        if (!received || is_noise(*received)) continue;
        seen.push_back(name_of(*received));
        if (received->command == Command::disconnect) disconnected_at = now();
    }
    INFO(kTooSlow);
    // DISCONNECT, not silence: the connection was up, and the worker gave up on the echo.
    REQUIRE(seen == std::vector<std::string>{"CREDIT", "DISCONNECT"});
    REQUIRE(*disconnected_at - asked >= period);  // it did wait for the echo that long
    running.stop_and_join();
    REQUIRE(running.error().empty());
    REQUIRE(worker.stats().reconnects == 0);
}

TEST_CASE("a worker stopped before it runs returns at once") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("svc", echo_handler);
    worker.stop();
    RunningWorker running(worker, broker);
    running.stop_and_join();
    REQUIRE(running.error().empty());
}

TEST_CASE("run() with an unusable endpoint throws and leaves no thread behind") {
    WorkerOptions options;
    options.endpoints = {"nonsense://nowhere"};
    options.threads = 2;
    Worker worker(options);
    worker.handle("svc", echo_handler);
    REQUIRE_THROWS_AS(worker.run(), zmq::error_t);
}

// ---- Malformed input ---------------------------------------------------------------------

TEST_CASE("malformed broker messages are ignored and counted, and the worker keeps serving") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    std::atomic<int> calls{0};
    worker.handle("svc", [&](Request& request) {
        ++calls;
        return Reply::raw(request.body());
    });
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    const std::string job = command_byte(Command::job) + short_bytes("tok");
    const std::string good_job = kSignature + job + u8(0) + inline_body("not run");
    const std::vector<std::vector<std::string>> malformed{
        {""},                                                                // no envelope
        {"", std::string(protocol::kMdpWorker), "\x02", "tok", "", "body"},  // MDPW01
        {"ZB"},                                                              // cut signature
        {"ZB\x02" + good_job.substr(kSignature.size())},                     // version 2
        {kSignature},                                                        // no record
        {kSignature + u8(0x99)},                                             // no such command
        {good_job.substr(0, good_job.size() - 1)},                           // cut short
        {kSignature + job + u8(0x02) + inline_body("b")},                    // unknown flag
        {kSignature + job + u8(0) + u8(0x02) + u32(1) + "b"},                // unknown form
        {kSignature + job + u8(0) + u8(0x00) + u32(1000) + "b"},             // size too big
        {kSignature + job + u8(0) + u8(0x01) + u16(2), "only one frame"},    // frames missing
        {good_job, "a frame no record claims"},                              // frame extra
        {good_job + command_byte(Command::credit) + u16(0)},  // a good JOB, then a cut record
        // Records only workers and clients send: each well-formed, but not for a worker.
        {kSignature + command_byte(Command::ready) + u32(1) + short_bytes("svc")},
        {kSignature + command_byte(Command::reply) + short_bytes("tok") + inline_body("b")},
        {kSignature + command_byte(Command::request) + u8(0) + short_bytes("id") +
         short_bytes("svc") + inline_body("b")},
        {kSignature + command_byte(Command::answer) + short_bytes("id") + u16(200) +
         inline_body("b")},
    };
    for (const auto& message : malformed)
        broker.send_raw(ready->identity, message);
    broker.send_job(ready->identity, "good", {"still here"});

    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == ready->identity);
    REQUIRE(reply->token == "good");
    REQUIRE(reply->body == std::vector<std::string>{"still here"});
    running.stop_and_join();
    // Nothing of a message that does not parse is acted on: not even its good JOB.
    REQUIRE(calls == 1);
    REQUIRE(worker.stats().malformed == malformed.size());
    REQUIRE(worker.stats().reconnects == 0);
}

// ---- A broker that breaks the rules -------------------------------------------------------

TEST_CASE("a higher credit is in force at once, a lower one only from its echo") {
    detail::CreditInForce credit(4);  // READY's
    REQUIRE(credit.most() == 4);
    credit.asked(10);
    REQUIRE(credit.most() == 10);
    credit.asked(2);
    credit.asked(0);
    REQUIRE(credit.most() == 10);  // JOBs sent under 10 may still be on their way
    credit.echoed();
    credit.echoed();
    REQUIRE(credit.most() == 10);  // the echo of 0 is still to come
    credit.echoed();
    REQUIRE(credit.most() == 0);
}

TEST_CASE("an echo of nothing changes no credit, and without echoes the largest asked holds") {
    detail::CreditInForce credit(3);
    credit.echoed();
    REQUIRE(credit.most() == 3);
    for (std::uint32_t asked : {7u, 1u, 5u, 2u})
        credit.asked(asked);
    REQUIRE(credit.most() == 7);
}

TEST_CASE("a JOB beyond the credit is refused: counted, never run and never answered") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 1;
    Worker worker(options);
    std::atomic<int> calls{0};
    Gate finish;
    handle_held(worker, calls, finish);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);
    REQUIRE(ready->credit == 1);

    broker.send_job(ready->identity, "held", {"held"});
    REQUIRE(in_time([&] { return calls == 1; }));
    broker.send_job(ready->identity, "beyond", {"beyond"});
    REQUIRE(in_time([&] { return worker.stats().refused_jobs == 1; }));
    finish.open();
    const auto replies = broker.until(Command::reply, 2, 500ms);
    REQUIRE(names(replies) == std::vector<std::string>{"REPLY"});
    REQUIRE(replies.front().token == "held");

    // The credit is free again: the next job is run.
    broker.send_job(ready->identity, "next", {"next"});
    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->token == "next");
    running.stop_and_join();
    REQUIRE(calls == 2);
    REQUIRE(worker.stats().refused_jobs == 1);
    REQUIRE(worker.stats().most_held == 1);
    REQUIRE(worker.stats().reconnects == 0);
}

TEST_CASE("after CREDIT 0 the old credit holds until the broker's echo, and nothing after it") {
    FakeBroker broker;
    broker.echo_credit(false);  // the test says when the broker has read the CREDIT 0
    WorkerOptions options = options_for(broker);
    options.credit = 2;
    Worker worker(options);
    std::atomic<int> calls{0};
    Gate finish;
    handle_held(worker, calls, finish);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    broker.send_job(ready->identity, "first", {"first"});
    REQUIRE(in_time([&] { return calls == 1; }));
    worker.stop();
    REQUIRE(names(broker.until(Command::credit)) == std::vector<std::string>{"CREDIT"});
    // Sent before the broker read the CREDIT 0: within the credit of 2 it knew, so taken; one
    // more would be past even that.
    broker.send_jobs(ready->identity, {{"late", {"late"}}, {"too many", {"too many"}}});
    REQUIRE(in_time([&] { return worker.stats().refused_jobs == 1; }));
    // After the echo the credit is 0: whatever comes is beyond it.
    broker.echo_credit(true);
    broker.send_job(ready->identity, "after the echo", {"after the echo"});
    REQUIRE(in_time([&] { return worker.stats().refused_jobs == 2; }));
    finish.open();
    const auto rest = broker.until(Command::disconnect);
    std::set<std::string> replied;
    for (const Received& received : rest)
        if (received.command == Command::reply) replied.insert(received.token);
    REQUIRE(replied == std::set<std::string>{"first", "late"});
    running.stop_and_join();
    REQUIRE(calls == 2);
}

TEST_CASE("a broker that keeps sending JOBs beyond credit is left, and registered with again") {
    FakeBroker broker;
    WorkerOptions options = options_for(broker);
    options.credit = 1;
    Worker worker(options);
    std::atomic<int> calls{0};
    Gate finish;
    handle_held(worker, calls, finish);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    // One job in hand, then a flood of jobs of 600 s each (here: until the gate opens), as a
    // hostile broker sent 300,000: the worker takes none of them, and leaves at the limit.
    broker.send_job(ready->identity, "held", {"held"});
    REQUIRE(in_time([&] { return calls == 1; }));
    std::vector<FakeBroker::Job> flood;
    for (int i = 0; i < 1000; ++i)
        flood.push_back({"flood " + std::to_string(i), {"x"}});
    broker.send_jobs(ready->identity, flood);
    REQUIRE(names(broker.until(Command::disconnect)) == std::vector<std::string>{"DISCONNECT"});
    const auto again = broker.expect(Command::ready);
    REQUIRE(again);
    REQUIRE(again->identity != ready->identity);
    REQUIRE(worker.stats().refused_jobs == detail::BrokerConnection::kRefusalsTolerated + 1);
    REQUIRE(worker.stats().reconnects == 1);
    REQUIRE(calls == 1);
    finish.open();

    // The new session starts with nothing held, whatever the old one still runs.
    broker.send_job(again->identity, "new", {"new"});
    const auto reply = broker.expect(Command::reply);
    REQUIRE(reply);
    REQUIRE(reply->identity == again->identity);
    REQUIRE(reply->token == "new");
}

TEST_CASE("unexpected records are logged once per kind and window, in lines of bounded length") {
    LogCapture log;
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);

    const std::string request = command_byte(Command::request) + u8(0) + short_bytes("id") +
                                short_bytes("svc") + inline_body("b");
    std::size_t bytes_sent = 0;
    // Fewer messages than the queues hold (1000 each way), so that none is dropped on the way.
    constexpr int kMessages = 200;
    constexpr int kRecordsEach = 20;
    for (int i = 0; i < kMessages; ++i) {
        std::string records = kSignature;
        for (int r = 0; r < kRecordsEach; ++r)
            records += request;
        broker.send_raw(ready->identity, {records});                // unexpected records
        broker.send_raw(ready->identity, {kSignature + u8(0x99)});  // an unknown command
        bytes_sent += records.size() + kSignature.size() + 1;
    }
    // A message of many empty frames, which a line describing every frame made 180 kB long.
    std::vector<std::string> frames(60'000);
    frames.front() = kSignature;
    broker.send_raw(ready->identity, frames);
    broker.send_job(ready->identity, "good", {"still here"});
    REQUIRE(broker.expect(Command::reply));
    running.stop_and_join();

    REQUIRE(worker.stats().malformed == kMessages * (kRecordsEach + 1) + 1);
    // One line per kind and window (and a summary per window past), however many came.
    REQUIRE(log.lines_with("REQUEST record").size() <= 3);
    REQUIRE(log.lines_with("malformed").size() <= 6);
    std::size_t bytes_logged = 0;
    for (const std::string& line : log.lines()) {
        INFO(line.substr(0, 300));
        CHECK(line.size() <= 400);
        bytes_logged += line.size();
    }
    REQUIRE(bytes_logged < bytes_sent / 10);
}

TEST_CASE("a burst of records leaves no memory behind once it is read") {
    FakeBroker broker;
    Worker worker(options_for(broker));
    worker.handle("svc", echo_handler);
    RunningWorker running(worker, broker);
    const auto ready = broker.expect(Command::ready);
    REQUIRE(ready);
    broker.send_job(ready->identity, "warm", {"up"});
    REQUIRE(broker.expect(Command::reply));
    const std::size_t before = allocated_bytes();

    // 60,000 records in a 60 kB message: 9 MB as parsed records, kept by a reused vector.
    const std::string heartbeats =
        kSignature + std::string(60'000, static_cast<char>(Command::heartbeat));
    broker.send_raw(ready->identity, {heartbeats});
    broker.send_job(ready->identity, "after", {"the burst"});  // read after it
    REQUIRE(broker.expect(Command::reply));
    const std::size_t after = allocated_bytes();
    INFO("allocated before the burst " << before << " B, after it " << after << " B");
    REQUIRE(after < before + 2'000'000);
}

// ---- Built-in services -------------------------------------------------------------------

namespace {

// A worker offering every built-in service to a fake broker, and a call() that goes through it.
class BuiltinServices {
  public:
    BuiltinServices() : worker_(options_for(broker_)) {
        for (const std::string& name : builtin_service_names())
            add_builtin_service(worker_, name);
        running_.emplace(worker_, broker_);
        for (std::size_t i = 0; i < builtin_service_names().size(); ++i) {
            const auto ready = broker_.expect(Command::ready);
            REQUIRE(ready);
            identities_[ready->service] = ready->identity;
        }
    }

    std::vector<std::string> call(const std::string& service,
                                  const std::vector<std::string>& body) {
        broker_.send_job(identities_.at(service), "token", body);
        const auto reply = broker_.expect(Command::reply);
        REQUIRE(reply);
        REQUIRE(reply->token == "token");
        return reply->body;
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
