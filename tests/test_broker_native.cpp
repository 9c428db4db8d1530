// BrokerCore with ZB/1 peers (shared/wire.hpp): requests become JOB records and replies ANSWER
// records, what one read batch has for a peer goes as one message, native and 7/MDP peers mix,
// and the policies (deadlines, credit, pause, removal, roles, heartbeats, MMI, refusals) hold
// as for MDP. No sockets: a fake clock and a recording outbox (tests/core_harness.hpp).
#include <catch2/catch.hpp>

#include <algorithm>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "core_harness.hpp"
#include "shared/wire.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using broker::BrokerConfig;
using broker::Drop;
using broker::Malformed;
using broker::PeerRole;
using protocol::Status;
using wire::Command;
using namespace std::chrono_literals;

namespace {

// One record of a recorded ZB/1 message, with its own copies of what it names.
struct Rec {
    Command command{};
    std::string id;
    std::string service;
    std::string token;
    std::optional<std::uint32_t> deadline_ms;
    std::string idempotency_key;
    Status status{};
    std::uint32_t credit = 0;
    std::string body;
    std::size_t body_frames = 0;  // 0: inline
};

// A recorded message sent to a ZB/1 peer, parsed.
struct Sent {
    std::string peer;
    std::vector<Rec> records;

    std::vector<Rec> of(Command command) const {
        std::vector<Rec> out;
        std::copy_if(records.begin(), records.end(), std::back_inserter(out),
                     [command](const Rec& r) { return r.command == command; });
        return out;
    }
    std::size_t count(Command command) const { return of(command).size(); }
};

bool is_native(const Message& m) {
    return m.size() >= 2 && m[1].starts_with(wire::kSignature);
}

// RecordingOutbox keeps frames as strings: rebuild the frames and parse them as a peer would.
Sent parse_sent(const Message& m) {
    INFO("message to " << m.at(0));
    REQUIRE(is_native(m));
    const Frames frames = to_frames(m);
    std::vector<wire::Record> records;
    const char* error = nullptr;
    const bool ok = wire::parse(frames, 1, records, error);
    INFO((error != nullptr ? error : ""));
    REQUIRE(ok);
    Sent sent{m[0], {}};
    for (const wire::Record& r : records) {
        Rec& rec = sent.records.emplace_back();
        rec.command = r.command;
        rec.id = r.id;
        rec.service = r.service;
        rec.token = r.token;
        rec.deadline_ms = r.deadline_ms;
        rec.idempotency_key = r.idempotency_key;
        rec.status = r.status;
        rec.credit = r.credit;
        if (r.body.in_frames) {
            rec.body_frames = r.body.count;
            for (std::size_t i = r.body.first; i < r.body.first + r.body.count; ++i)
                rec.body += view(frames[i]);
        } else {
            rec.body = r.body.bytes;
        }
    }
    return sent;
}

// A message from `peer` holding what `write` puts in a wire::Writer.
Message zb(const std::string& peer, const std::function<void(wire::Writer&)>& write) {
    wire::Writer writer;
    write(writer);
    Frames frames;
    frames.push_back(frame(peer));
    writer.take(frames);
    Message m;
    for (const auto& f : frames)
        m.emplace_back(view(f));
    return m;
}

// The harness with ZB/1 peers.
struct Native : CoreHarness {
    using CoreHarness::CoreHarness;

    void zready(const std::string& worker, const std::string& service, std::uint32_t credit = 1,
                PeerRole role = PeerRole::anyone) {
        receive(zb(worker, [&](wire::Writer& w) { w.ready(service, credit); }), role);
    }
    void zrequest(const std::string& client, const std::string& service, const std::string& id,
                  const std::string& body, std::optional<std::uint32_t> deadline_ms = {},
                  PeerRole role = PeerRole::anyone) {
        receive(zb(client, [&](wire::Writer& w) { w.request(id, service, deadline_ms, body); }),
                role);
    }
    void zreply(const std::string& worker, const std::string& token, const std::string& body,
                PeerRole role = PeerRole::anyone) {
        receive(zb(worker, [&](wire::Writer& w) { w.reply(token, body); }), role);
    }
    void zcommand(const std::string& worker, Command command) {
        receive(zb(worker, [&](wire::Writer& w) { w.command(command); }));
    }
    void zcredit(const std::string& worker, std::uint32_t credit) {
        receive(zb(worker, [&](wire::Writer& w) { w.credit(credit); }));
    }
    // Everything sent since the last take, each a ZB/1 message, parsed.
    std::vector<Sent> take_native() {
        std::vector<Sent> all;
        for (const Message& m : take())
            all.push_back(parse_sent(m));
        return all;
    }
    // Exactly one message, to `peer`, in ZB/1.
    Sent take_native_one(const std::string& peer) {
        const auto all = take();
        REQUIRE(all.size() == 1);
        REQUIRE(all[0].at(0) == peer);
        return parse_sent(all[0]);
    }
};

// The broker echoes a worker's CREDIT, so the worker knows no JOB sent under the old credit is
// still on its way: the echo comes first in the worker's next message.
void require_credit_echo(const Rec& record, std::uint32_t credit) {
    REQUIRE(record.command == Command::credit);
    REQUIRE(record.credit == credit);
}

const Rec& only(const Sent& sent) {
    REQUIRE(sent.records.size() == 1);
    return sent.records[0];
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Requests, jobs, replies, answers

TEST_CASE("a ZB/1 request reaches a ZB/1 worker as a JOB and its REPLY comes back as an ANSWER") {
    Native h;
    h.zready("W", "echo");
    REQUIRE(h.take().empty());
    REQUIRE(h.core.worker_count() == 1);
    h.zrequest("C", "echo", "id-1", "ping");
    const Rec job = only(h.take_native_one("W"));
    REQUIRE(job.command == Command::job);
    REQUIRE(job.token.size() == broker::kTokenSize);
    REQUIRE(job.body == "ping");
    REQUIRE(job.deadline_ms == 60'000u);  // --default-deadline-ms: the request named none
    h.zreply("W", job.token, "pong");
    const Rec answer = only(h.take_native_one("C"));
    REQUIRE(answer.command == Command::answer);
    REQUIRE(answer.id == "id-1");
    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.body == "pong");
    REQUIRE(h.core.live_requests() == 0);
    REQUIRE(h.core.counters().answered(Status::ok) == 1);
    REQUIRE(h.core.counters().malformed_total() == 0);
}

TEST_CASE("a large body travels in a frame of its own, both ways") {
    Native h;
    h.zready("W", "echo");
    const std::string big(wire::kInlineBodyLimit + 100, 'q');
    h.zrequest("C", "echo", "big", big);
    const Rec job = only(h.take_native_one("W"));
    REQUIRE(job.body == big);
    REQUIRE(job.body_frames == 1);
    h.zreply("W", job.token, big + "!");
    const Rec answer = only(h.take_native_one("C"));
    REQUIRE(answer.body == big + "!");
    REQUIRE(answer.body_frames == 1);
}

TEST_CASE("requests that come in one message go to a worker in one message, and back") {
    Native h;
    h.zready("W", "echo", 10);
    h.receive(zb("C", [](wire::Writer& w) {
        for (int i = 0; i < 5; ++i)
            w.request("id-" + std::to_string(i), "echo", std::nullopt, "b" + std::to_string(i));
    }));
    const auto to_worker = h.take();
    REQUIRE(to_worker.size() == 1);  // one batch, not five messages
    const Sent jobs = parse_sent(to_worker[0]);
    REQUIRE(jobs.peer == "W");
    REQUIRE(jobs.records.size() == 5);
    for (std::size_t i = 0; i < 5; ++i) {
        REQUIRE(jobs.records[i].command == Command::job);
        REQUIRE(jobs.records[i].body == "b" + std::to_string(i));  // in the order asked
    }
    REQUIRE(h.core.counters().dispatches == 5);

    h.receive(zb("W", [&](wire::Writer& w) {
        for (std::size_t i = 5; i-- > 0;)  // replies in any order
            w.reply(jobs.records[i].token, "r" + std::to_string(i));
    }));
    const auto to_client = h.take();
    REQUIRE(to_client.size() == 1);
    const Sent answers = parse_sent(to_client[0]);
    REQUIRE(answers.peer == "C");
    REQUIRE(answers.records.size() == 5);
    for (std::size_t k = 0; k < 5; ++k) {
        const std::size_t i = 4 - k;
        REQUIRE(answers.records[k].command == Command::answer);
        REQUIRE(answers.records[k].id == "id-" + std::to_string(i));
        REQUIRE(answers.records[k].status == Status::ok);
        REQUIRE(answers.records[k].body == "r" + std::to_string(i));
    }
    REQUIRE(h.core.live_requests() == 0);
}

TEST_CASE("a batch fills the credit of one worker, then the next, each in one message") {
    Native h;
    h.zready("W1", "echo", 2);
    h.zready("W2", "echo", 2);
    h.receive(zb("C", [](wire::Writer& w) {
        for (int i = 0; i < 5; ++i)
            w.request(std::to_string(i), "echo", std::nullopt, std::to_string(i));
    }));
    const auto sent = h.take();
    REQUIRE(sent.size() == 2);
    const Sent first = parse_sent(sent[0]);
    const Sent second = parse_sent(sent[1]);
    REQUIRE(first.peer == "W1");
    REQUIRE(first.count(Command::job) == 2);
    REQUIRE(second.peer == "W2");
    REQUIRE(second.count(Command::job) == 2);
    REQUIRE(h.core.service_info("echo")->waiting == 1);
}

TEST_CASE("a batch past kBatchBytes goes as several messages, every job exactly once") {
    Native h;
    h.zready("W", "echo", 100);
    const std::string body(wire::kInlineBodyLimit, 'x');  // inline: the envelope grows
    h.receive(zb("C", [&](wire::Writer& w) {
        for (int i = 0; i < 40; ++i)
            w.request(std::to_string(i), "echo", std::nullopt, body);
    }));
    const auto sent = h.take();
    REQUIRE(sent.size() >= 2);
    std::set<std::string> tokens;
    for (const Message& m : sent) {
        const Sent s = parse_sent(m);
        REQUIRE(s.peer == "W");
        REQUIRE(m[1].size() < wire::kBatchBytes + wire::kInlineBodyLimit + 64);
        for (const Rec& r : s.records) {
            REQUIRE(r.command == Command::job);
            REQUIRE(tokens.insert(r.token).second);
        }
    }
    REQUIRE(tokens.size() == 40);
}

TEST_CASE("one message may register a worker and reply; the reply's credit comes back") {
    Native h;
    h.zrequest("C", "echo", "1", "a");
    h.zrequest("C", "echo", "2", "b");
    h.zready("W", "echo", 1);
    const Rec job = only(h.take_native_one("W"));
    REQUIRE(job.body == "a");
    h.receive(zb("W", [&](wire::Writer& w) {
        w.command(Command::heartbeat);
        w.reply(job.token, "A");
    }));
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);  // the answer to C, and the next job to W
    REQUIRE(sent[0].peer == "C");
    REQUIRE(only(sent[0]).body == "A");
    REQUIRE(sent[1].peer == "W");
    REQUIRE(only(sent[1]).body == "b");
}

// ---------------------------------------------------------------------------------------------
// Mixing with 7/MDP and ZBC01

TEST_CASE("a ZB/1 client is served by an MDP worker") {
    Native h;
    h.ready("MW", "echo");
    h.zrequest("C", "echo", "id-1", "ping", 5000u);
    const Message request = h.take_one();
    REQUIRE(request == Message{"MW", "", "MDPW01", kRequest, request.at(4), "", "ping"});
    h.reply(request, "pong");
    const Rec answer = only(h.take_native_one("C"));
    REQUIRE(answer.id == "id-1");
    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.body == "pong");
}

TEST_CASE("an MDP client and a ZBC01 client are served by a ZB/1 worker") {
    Native h;
    h.zready("W", "echo", 2);
    h.mdp_request("M", "echo", "from-mdp");
    const Rec mdp_job = only(h.take_native_one("W"));
    REQUIRE(mdp_job.body == "from-mdp");
    h.zbc_request("Z", "echo", "z-1", "from-zbc", deadline_header(1000));
    const Rec zbc_job = only(h.take_native_one("W"));
    REQUIRE(zbc_job.body == "from-zbc");
    REQUIRE(zbc_job.deadline_ms == std::optional<std::uint32_t>(1000u));

    h.receive(zb("W", [&](wire::Writer& w) {
        w.reply(zbc_job.token, "zbc-answer");
        w.reply(mdp_job.token, "mdp-answer");
    }));
    const auto sent = h.take();
    REQUIRE(sent.size() == 2);
    REQUIRE(sent[0] == Message{"Z", "", "ZBC01", "echo", "z-1", "200", "zbc-answer"});
    REQUIRE(sent[1] == Message{"M", "", "MDPC01", "echo", "mdp-answer"});
}

TEST_CASE("an MDP request of several body frames keeps them through a ZB/1 worker") {
    Native h;
    h.zready("W", "echo");
    h.receive({"M", kEmpty, "MDPC01", "echo", "part-1", "part-2", "part-3"});
    const Rec job = only(h.take_native_one("W"));
    REQUIRE(job.body_frames == 3);
    REQUIRE(job.body == "part-1part-2part-3");
    // The reply as several frames too: the MDP client gets them as frames.
    Frames reply;
    reply.push_back(frame("x"));
    reply.push_back(frame("y"));
    h.receive(zb("W", [&](wire::Writer& w) { w.reply(job.token, {reply, 0, 2}); }));
    REQUIRE(h.take_one() == Message{"M", "", "MDPC01", "echo", "x", "y"});
}

TEST_CASE("ZB/1 and MDP workers of one service share its queue") {
    Native h;
    h.ready("MW", "echo");
    h.zready("ZW", "echo");
    h.zrequest("C", "echo", "1", "a");
    h.zrequest("C", "echo", "2", "b");
    const auto sent = h.take();
    REQUIRE(sent.size() == 2);
    REQUIRE(sent[0][0] == "MW");
    REQUIRE(sent[1][0] == "ZW");
    REQUIRE(only(parse_sent(sent[1])).body == "b");
}

// ---------------------------------------------------------------------------------------------
// Deadlines

TEST_CASE("a ZB/1 request past its deadline is answered 504 with workers, 503 without") {
    Native h;
    SECTION("no worker: 503") {
        h.zrequest("C", "nobody", "n", "x", 100u);
        h.advance(99ms);
        REQUIRE(h.take().empty());
        h.advance(1ms);
        const Rec answer = only(h.take_native_one("C"));
        REQUIRE(answer.id == "n");
        REQUIRE(answer.status == Status::unavailable);
        REQUIRE(answer.body.empty());
    }
    SECTION("a busy worker: 504 for the queued one") {
        h.zready("W", "slow");
        h.zrequest("C", "slow", "busy", "x");
        h.take();
        h.zrequest("C", "slow", "waits", "y", 50u);
        h.advance(50ms);
        const Rec answer = only(h.take_native_one("C"));
        REQUIRE(answer.id == "waits");
        REQUIRE(answer.status == Status::deadline_exceeded);
        REQUIRE(h.core.service_info("slow")->waiting == 0);
    }
    SECTION("dispatched: 504, and the late reply is dropped") {
        h.zready("W", "slow");
        h.zrequest("C", "slow", "late", "x", 100u);
        const Rec job = only(h.take_native_one("W"));
        h.advance(100ms);
        REQUIRE(only(h.take_native_one("C")).status == Status::deadline_exceeded);
        h.zreply("W", job.token, "too late");
        REQUIRE(h.take().empty());
        REQUIRE(h.core.counters()[Drop::late_reply] == 1);
        REQUIRE(h.core.live_requests() == 0);
    }
}

TEST_CASE("a JOB carries the time left to its request's deadline") {
    Native h;
    h.zready("W", "svc");
    h.zrequest("C", "svc", "first", "x");  // none: --default-deadline-ms
    const Rec first = only(h.take_native_one("W"));
    REQUIRE(first.deadline_ms == 60'000u);
    h.zrequest("C", "svc", "second", "y", 1000u);
    h.advance(300ms);
    REQUIRE(h.take_native().size() <= 1);  // maybe a heartbeat, no job: W is busy
    h.zreply("W", first.token, "done");
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);
    const Rec job = only(sent[1]);
    REQUIRE(job.command == Command::job);
    REQUIRE(job.body == "y");
    REQUIRE(job.deadline_ms == std::optional<std::uint32_t>(700u));
}

TEST_CASE("a ZBC01 or default deadline reaches a ZB/1 worker as time left") {
    BrokerConfig config;
    config.default_deadline = 250ms;
    Native h(config);
    h.zready("W", "svc", 3);
    h.mdp_request("M", "svc", "m");
    REQUIRE(only(h.take_native_one("W")).deadline_ms == std::optional<std::uint32_t>(250u));
    h.zrequest("C", "svc", "c", "x", 40u);
    REQUIRE(only(h.take_native_one("W")).deadline_ms == std::optional<std::uint32_t>(40u));
}

// ---------------------------------------------------------------------------------------------
// Malformed envelopes

TEST_CASE("a ZB/1 message with one malformed record is counted and none of it is acted on") {
    Native h;
    h.zready("W", "echo");
    SECTION("a valid REQUEST followed by garbage") {
        Message m = zb("C", [](wire::Writer& w) { w.request("1", "echo", std::nullopt, "x"); });
        m[1] += "\x7F garbage";
        h.receive(m);
    }
    SECTION("a valid REQUEST, then a frame nobody claims") {
        Message m = zb("C", [](wire::Writer& w) { w.request("1", "echo", std::nullopt, "x"); });
        m.push_back("stray");
        h.receive(m);
    }
    SECTION("a valid REQUEST, then one cut short") {
        Message m = zb("C", [](wire::Writer& w) {
            w.request("1", "echo", std::nullopt, "x");
            w.request("2", "echo", std::nullopt, "y");
        });
        m[1].pop_back();
        h.receive(m);
    }
    SECTION("a valid REQUEST, then an ANSWER with status 0") {
        Message m = zb("C", [](wire::Writer& w) {
            w.request("1", "echo", std::nullopt, "x");
            w.answer("2", Status::no_reply);
        });
        h.receive(m);
    }
    SECTION("signature only") {
        h.receive({"C", std::string(wire::kSignature)});
    }
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Malformed::bad_envelope] == 1);
    REQUIRE(h.core.counters().requests == 0);
    REQUIRE(h.core.live_requests() == 0);
    REQUIRE(h.core.counters().dispatches == 0);
}

TEST_CASE("a worker's malformed message does not register it or reply for it") {
    Native h;
    Message m = zb("W", [](wire::Writer& w) { w.ready("echo", 1); });
    m[1] += std::string("\x26\x01", 2);  // CREDIT cut short
    h.receive(m);
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Malformed::bad_envelope] == 1);

    h.zready("W", "echo");
    h.zrequest("C", "echo", "1", "x");
    const Rec job = only(h.take_native_one("W"));
    Message reply = zb("W", [&](wire::Writer& w) { w.reply(job.token, "r"); });
    reply.push_back("stray");
    h.receive(reply);
    REQUIRE(h.take().empty());
    REQUIRE(h.core.live_requests() == 1);  // still held by W
    REQUIRE(h.core.counters()[Malformed::bad_envelope] == 2);
    h.zreply("W", job.token, "r");
    REQUIRE(only(h.take_native_one("C")).body == "r");
}

TEST_CASE("an envelope of another version is not taken for ZB/1") {
    Native h;
    h.receive({"C", std::string("ZB\x02\x24", 4)});
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Malformed::bad_envelope] == 0);
    REQUIRE(h.core.counters().malformed_total() == 1);
}

// ---------------------------------------------------------------------------------------------
// Sends that fail at flush

TEST_CASE("a ZB/1 worker whose queue is full at flush is paused and its jobs go back unspent") {
    BrokerConfig config;
    config.max_attempts = 2;
    Native h(config);
    h.zready("BUSY", "echo", 5);
    h.outbox.full.insert("BUSY");
    h.receive(zb("C", [](wire::Writer& w) {
        w.request("1", "echo", std::nullopt, "a");
        w.request("2", "echo", std::nullopt, "b");
    }));
    REQUIRE(h.take().empty());
    REQUIRE(h.core.worker_count() == 1);                 // paused, not removed
    REQUIRE(h.core.counters().dispatches == 0);          // the undone dispatches are not counted
    REQUIRE(h.core.service_info("echo")->waiting == 2);  // back in the queue, in order
    REQUIRE(h.core.service_info("echo")->in_flight == 0);
    REQUIRE(h.core.counters().requeued == 0);
    REQUIRE(h.core.counters()[Drop::client_backpressure] == 0);

    // A paused worker is not tried again for each request.
    h.zrequest("C", "echo", "3", "c");
    REQUIRE(h.take().empty());

    SECTION("another worker gets them all, at once: they are not suspects") {
        h.zready("W", "echo", 5);
        const Sent jobs = parse_sent(h.take_one());
        REQUIRE(jobs.peer == "W");
        REQUIRE(jobs.records.size() == 3);
        REQUIRE(jobs.records[0].body == "a");
        REQUIRE(jobs.records[1].body == "b");
        REQUIRE(jobs.records[2].body == "c");
        REQUIRE(h.core.counters().dispatches == 3);
        // W dies: each has used one attempt of two, so each is tried again, not answered 500.
        h.zcommand("W", Command::disconnect);
        REQUIRE(h.core.counters().requeued == 3);
        REQUIRE(h.core.counters().answered(Status::retries_exhausted) == 0);
        h.outbox.full.clear();
        h.zcommand("BUSY", Command::heartbeat);  // heard from: resumed
        const auto retries = h.take_native();
        REQUIRE_FALSE(retries.empty());
        REQUIRE(retries[0].peer == "BUSY");
        REQUIRE(retries[0].records[0].body == "a");  // suspects now: one at a time
        REQUIRE(retries[0].records.size() == 1);
    }
    SECTION("it is sent work again once heard from") {
        h.outbox.full.clear();
        h.zcommand("BUSY", Command::heartbeat);
        const Sent jobs = parse_sent(h.take_one());
        REQUIRE(jobs.peer == "BUSY");
        REQUIRE(jobs.records.size() == 3);
        REQUIRE(jobs.records[0].body == "a");
        REQUIRE(jobs.records[2].body == "c");
        for (const Rec& job : jobs.records)
            h.zreply("BUSY", job.token, "ok");
        REQUIRE(h.core.counters().answered(Status::ok) == 3);
        REQUIRE(h.core.live_requests() == 0);
    }
}

TEST_CASE("a ZB/1 worker found gone at flush is removed and its jobs go to another, unspent") {
    BrokerConfig config;
    config.max_attempts = 2;
    Native h(config);
    h.zready("GONE", "echo", 5);
    h.zready("W", "echo", 5);
    h.outbox.unroutable.insert("GONE");
    h.receive(zb("C", [](wire::Writer& w) {
        w.request("1", "echo", std::nullopt, "a");
        w.request("2", "echo", std::nullopt, "b");
    }));
    REQUIRE(h.core.worker_count() == 1);
    REQUIRE(h.core.counters().workers_removed == 1);
    REQUIRE(h.core.counters().requeued == 0);
    const Sent jobs = parse_sent(h.take_one());  // together: not suspects
    REQUIRE(jobs.peer == "W");
    REQUIRE(jobs.records.size() == 2);
    REQUIRE(jobs.records[0].body == "a");
    REQUIRE(jobs.records[1].body == "b");
    REQUIRE(h.core.counters().dispatches == 2);
    // W dies too: had the undone dispatch used an attempt, both would now be answered 500.
    h.zcommand("W", Command::disconnect);
    REQUIRE(h.core.counters().requeued == 2);
    REQUIRE(h.core.counters().answered(Status::retries_exhausted) == 0);
    REQUIRE(h.take().empty());
    h.zready("W2", "echo", 5);
    const Rec retry = only(h.take_native_one("W2"));  // a suspect now: alone
    REQUIRE(retry.body == "a");
    h.zreply("W2", retry.token, "ok");
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);
    REQUIRE(only(sent[0]).status == Status::ok);
    REQUIRE(only(sent[1]).body == "b");
}

TEST_CASE("answers to a ZB/1 client that cannot take them are counted, each") {
    Native h;
    h.zready("W", "echo", 4);
    h.receive(zb("SLOW", [](wire::Writer& w) {
        w.request("1", "echo", std::nullopt, "a");
        w.request("2", "echo", std::nullopt, "b");
    }));
    h.zrequest("GONE", "echo", "3", "c");
    std::vector<std::string> tokens;
    for (const Sent& s : h.take_native())
        for (const Rec& r : s.records)
            tokens.push_back(r.token);
    REQUIRE(tokens.size() == 3);
    h.outbox.full.insert("SLOW");
    h.outbox.unroutable.insert("GONE");
    h.receive(zb("W", [&](wire::Writer& w) {
        for (const std::string& token : tokens)
            w.reply(token, "r");
    }));
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Drop::client_backpressure] == 2);
    REQUIRE(h.core.counters()[Drop::client_unreachable] == 1);
    REQUIRE(h.core.live_requests() == 0);
    REQUIRE(h.core.worker_count() == 1);
}

// ---------------------------------------------------------------------------------------------
// Credit

TEST_CASE("CREDIT 0 stops jobs to a worker but its replies go through; CREDIT n restarts it") {
    Native h;
    h.zready("W", "echo", 2);
    h.zrequest("C", "echo", "1", "a");
    const Rec job = only(h.take_native_one("W"));
    h.zcredit("W", 0);
    require_credit_echo(only(h.take_native_one("W")), 0);
    h.zrequest("C", "echo", "2", "b");
    REQUIRE(h.take().empty());  // it had credit left, but said it wants nothing more
    REQUIRE(h.core.service_info("echo")->waiting == 1);
    h.zreply("W", job.token, "A");
    const Rec answer = only(h.take_native_one("C"));  // only the answer: no new job
    REQUIRE(answer.id == "1");
    REQUIRE(answer.body == "A");
    REQUIRE(h.core.worker_count() == 1);

    h.zcredit("W", 3);
    const Sent next = h.take_native_one("W");  // the echo, then the job, in one message
    REQUIRE(next.records.size() == 2);
    require_credit_echo(next.records[0], 3);
    REQUIRE(next.records[1].command == Command::job);
    REQUIRE(next.records[1].body == "b");
    // Credit 3: two more fit.
    h.zrequest("C", "echo", "3", "c");
    h.zrequest("C", "echo", "4", "d");
    h.zrequest("C", "echo", "5", "e");
    REQUIRE(h.take().size() == 2);
    REQUIRE(h.core.service_info("echo")->waiting == 1);
}

TEST_CASE("a stopping worker finishes, says DISCONNECT, and is removed routinely") {
    Native h;
    h.zready("W", "echo", 2);
    h.zrequest("C", "echo", "1", "a");
    const Rec job = only(h.take_native_one("W"));
    h.zcredit("W", 0);
    require_credit_echo(only(h.take_native_one("W")), 0);
    h.receive(zb("W", [&](wire::Writer& w) {
        w.reply(job.token, "A");
        w.command(Command::disconnect);
    }));
    REQUIRE(only(h.take_native_one("C")).body == "A");
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters().requeued == 0);
}

TEST_CASE("a lower CREDIT keeps what the worker holds and sends no more until under it") {
    Native h;
    h.zready("W", "echo", 3);
    for (const char* id : {"1", "2", "3"})
        h.zrequest("C", "echo", id, id);
    std::vector<Rec> jobs;
    for (const Sent& s : h.take_native())
        jobs.push_back(only(s));
    REQUIRE(jobs.size() == 3);
    h.zcredit("W", 1);
    require_credit_echo(only(h.take_native_one("W")), 1);
    h.zrequest("C", "echo", "4", "4");
    REQUIRE(h.take().empty());
    h.zreply("W", jobs[0].token, "r");
    REQUIRE(h.take().size() == 1);  // the answer; W still holds 2 > 1
    h.zreply("W", jobs[1].token, "r");
    REQUIRE(h.take().size() == 1);  // holds 1 = credit
    h.zreply("W", jobs[2].token, "r");
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);
    REQUIRE(only(sent[1]).body == "4");
}

// on_credit() once lowered the credit but left the worker on its service's idle list, so the
// next request still went to it.
TEST_CASE("a CREDIT at or below what the worker holds sends it nothing more at once") {
    Native h;
    h.zready("W", "echo", 3);
    h.zrequest("C", "echo", "1", "a");
    const Rec job = only(h.take_native_one("W"));  // holds 1 of 3: it can take more
    h.zcredit("W", 1);                             // now it holds all it may
    require_credit_echo(only(h.take_native_one("W")), 1);
    h.zrequest("C", "echo", "2", "b");
    const auto sent_at_once = h.take();
    for (const Message& m : sent_at_once) {
        const Sent s = parse_sent(m);
        UNSCOPED_INFO("sent to " << s.peer << ": " << s.records.size() << " record(s), the first "
                                 << wire::command_name(s.records.at(0).command));
    }
    REQUIRE(sent_at_once.empty());
    REQUIRE(h.core.service_info("echo")->waiting == 1);
    h.zreply("W", job.token, "A");
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);
    REQUIRE(only(sent[1]).body == "b");
}

TEST_CASE("CREDIT above --max-credit removes the worker and re-queues what it held") {
    BrokerConfig config;
    config.max_credit = 4;
    Native h(config);
    h.zready("W", "echo", 1);
    h.zrequest("C", "echo", "1", "a");
    h.take();
    h.zcredit("W", 4);  // the maximum is allowed
    require_credit_echo(only(h.take_native_one("W")), 4);
    REQUIRE(h.core.worker_count() == 1);
    h.zcredit("W", 5);
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters()[Malformed::bad_command] == 1);
    REQUIRE(h.core.counters().requeued == 1);
    const Sent sent = h.take_native_one("W");
    REQUIRE(only(sent).command == Command::disconnect);
}

TEST_CASE("READY with credit 0 or above --max-credit is refused with a ZB/1 DISCONNECT") {
    BrokerConfig config;
    config.max_credit = 4;
    Native h(config);
    const std::uint32_t credit = GENERATE(0u, 5u, 0xFFFFFFFFu);
    CAPTURE(credit);
    h.zready("W", "echo", credit);
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters()[Malformed::bad_ready] == 1);
    h.zready("W", "echo", 4);
    REQUIRE(h.core.worker_count() == 1);
}

TEST_CASE("a ZB/1 READY is refused for no service, an mmi service, or twice") {
    Native h;
    h.zready("W", "");
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    h.zready("W", "mmi.echo");
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    REQUIRE(h.core.counters()[Malformed::bad_ready] == 1);
    REQUIRE(h.core.counters()[Malformed::mmi_registration] == 1);
    REQUIRE(h.core.worker_count() == 0);
    h.zready("W", "echo");
    REQUIRE(h.core.worker_count() == 1);
    h.zready("W", "echo");
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    REQUIRE(h.core.counters()[Malformed::duplicate_ready] == 1);
    REQUIRE(h.core.worker_count() == 0);
}

// ---------------------------------------------------------------------------------------------
// Worker lifecycle

TEST_CASE("a ZB/1 worker's commands before READY get a ZB/1 DISCONNECT; its DISCONNECT does not") {
    Native h;
    h.zcommand("W", Command::heartbeat);
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    h.zreply("W", "123456789012", "r");
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    REQUIRE(h.core.counters()[Malformed::not_ready] == 2);
    h.zcommand("W", Command::disconnect);
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Malformed::not_ready] == 3);  // it never was a worker: counted
}

TEST_CASE("a removed worker's DISCONNECT is a goodbye, not counted") {
    Native h;
    h.zready("W", "echo");
    h.zready("W", "echo");  // READY twice: removed
    REQUIRE(h.core.worker_count() == 0);
    h.take();
    h.zcommand("W", Command::disconnect);
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Malformed::not_ready] == 0);
}

TEST_CASE("a message of more than kMaxRecords records is one malformed message, nothing more") {
    // It was: a 1 MB envelope of DISCONNECTs cost 150 MB of records, kept afterwards.
    Native h;
    const auto many = [&](std::size_t records) {
        h.receive(zb("P", [&](wire::Writer& w) {
            for (std::size_t i = 0; i < records; ++i)
                w.command(Command::disconnect);
        }));
    };
    many(wire::kMaxRecords + 1);
    REQUIRE(h.core.counters()[Malformed::bad_envelope] == 1);
    REQUIRE(h.core.counters()[Malformed::not_ready] == 0);
    many(wire::kMaxRecords);
    REQUIRE(h.core.counters()[Malformed::not_ready] == wire::kMaxRecords);
    REQUIRE(h.take().empty());
}

TEST_CASE("a ZB/1 worker that sends JOB or ANSWER is removed with DISCONNECT") {
    Native h;
    h.zready("W", "echo");
    h.zrequest("C", "echo", "1", "a");
    h.take();
    Frames empty;
    SECTION("JOB") {
        h.receive(zb("W", [&](wire::Writer& w) { w.job("tok", std::nullopt, {}, {empty, 0, 0}); }));
    }
    SECTION("ANSWER") {
        h.receive(zb("W", [](wire::Writer& w) { w.answer("1", Status::ok, "forged"); }));
    }
    SECTION("REQUEST is taken as a request, from its client side") {
        h.receive(zb("W", [](wire::Writer& w) { w.request("x", "echo", 10u, "b"); }));
        REQUIRE(h.core.worker_count() == 1);
        REQUIRE(h.core.live_requests() == 2);
        return;
    }
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters()[Malformed::bad_command] == 1);
    REQUIRE(h.core.counters().requeued == 1);
}

TEST_CASE("a REPLY with a token the ZB/1 worker does not hold is dropped and counted") {
    Native h;
    h.zready("W1", "echo");
    h.zready("W2", "echo");
    h.zrequest("C", "echo", "1", "x");
    const Rec job = only(h.take_native_one("W1"));
    h.zreply("W2", job.token, "stolen");
    h.zreply("W1", "forged", "forged");
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Drop::unknown_token] == 2);
    h.zreply("W1", job.token, "real");
    REQUIRE(only(h.take_native_one("C")).body == "real");
    h.zreply("W1", job.token, "replayed");
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters()[Drop::unknown_token] == 3);
}

TEST_CASE("jobs batched for a worker removed in the same read never leave and cost nothing") {
    BrokerConfig config;
    config.max_attempts = 2;
    Native h(config);
    h.zready("W1", "echo", 1);
    h.zrequest("C", "echo", "a", "A");
    const Rec job = only(h.take_native_one("W1"));
    h.zrequest("C", "echo", "b", "B");  // waits: W1 is full
    REQUIRE(h.take().empty());
    // The reply frees W1's credit, so "b" goes into W1's batch; the READY that follows in the
    // same message removes W1 before that batch is sent.
    h.receive(zb("W1", [&](wire::Writer& w) {
        w.reply(job.token, "done");
        w.ready("echo", 1);
    }));
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);
    REQUIRE(sent[0].peer == "C");
    REQUIRE(only(sent[0]).id == "a");
    REQUIRE(sent[1].peer == "W1");
    REQUIRE(only(sent[1]).command == Command::disconnect);  // no JOB with it
    REQUIRE(h.core.counters().requeued == 0);
    REQUIRE(h.core.service_info("echo")->waiting == 1);
    h.zready("W2", "echo", 1);
    REQUIRE(only(h.take_native_one("W2")).body == "B");
    // Had the undone dispatch used an attempt, W2's death would now cost "b" its last one.
    h.zcommand("W2", Command::disconnect);
    REQUIRE(h.core.counters().answered(Status::retries_exhausted) == 0);
    REQUIRE(h.core.counters().requeued == 1);
}

TEST_CASE("an MDP READY from a ZB/1 worker's routing id is a second READY") {
    Native h;
    h.zready("W", "echo");
    h.ready("W", "echo");
    REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
    REQUIRE(h.core.counters()[Malformed::duplicate_ready] == 1);
    REQUIRE(h.core.worker_count() == 0);
}

TEST_CASE("a ZB/1 worker's DISCONNECT re-queues what it held for another worker") {
    Native h;
    h.zready("W1", "echo", 2);
    h.zrequest("C", "echo", "1", "a");
    h.take();
    h.zcommand("W1", Command::disconnect);
    REQUIRE(h.take().empty());  // no DISCONNECT back to a worker that said it
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters().requeued == 1);
    h.zready("W2", "echo");
    const Rec job = only(h.take_native_one("W2"));
    REQUIRE(job.body == "a");
    h.zreply("W2", job.token, "A");
    REQUIRE(only(h.take_native_one("C")).id == "1");
}

TEST_CASE("ZB/1 workers are sent ZB/1 HEARTBEAT records, MDP workers MDP heartbeats") {
    BrokerConfig config;
    config.heartbeat_interval = 100ms;
    Native h(config);
    h.zready("ZW", "echo");
    h.ready("MW", "echo");
    h.advance(100ms);
    const auto sent = h.take();
    REQUIRE(sent.size() == 2);
    for (const Message& m : sent) {
        if (m[0] == "ZW") {
            REQUIRE(only(parse_sent(m)).command == Command::heartbeat);
        } else {
            REQUIRE(m == Message{"MW", "", "MDPW01", kHeartbeat});
        }
    }
}

TEST_CASE("a heartbeat goes in the same message as the jobs of that moment") {
    BrokerConfig config;
    config.heartbeat_interval = 100ms;
    Native h(config);
    h.zready("W", "echo");
    h.zrequest("C", "nobody", "1", "x", 100u);  // answered 503 at the same tick
    h.clock += 100ms;
    h.core.on_timer(h.clock);
    h.zrequest("C2", "echo", "2", "y");  // on_message, then one flush for all of it
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);  // C's 503, and one message to W
    REQUIRE(sent[0].peer == "C");
    REQUIRE(only(sent[0]).status == Status::unavailable);
    REQUIRE(sent[1].peer == "W");
    REQUIRE(sent[1].records.size() == 2);
    REQUIRE(sent[1].records[0].command == Command::heartbeat);
    REQUIRE(sent[1].records[1].command == Command::job);
}

TEST_CASE("a ZB/1 worker that misses its heartbeats expires and is told DISCONNECT in ZB/1") {
    BrokerConfig config;
    config.heartbeat_interval = 100ms;
    config.heartbeat_liveness = 3;
    Native h(config);
    h.zready("W", "echo");
    h.zready("ALIVE", "echo");
    h.zrequest("C", "echo", "1", "a");
    REQUIRE(only(h.take_native_one("W")).body == "a");
    for (int i = 0; i < 3; ++i) {
        h.advance(100ms);
        h.zcommand("ALIVE", Command::heartbeat);
    }
    REQUIRE(h.core.worker_count() == 1);
    REQUIRE(h.core.counters().workers_expired == 1);
    bool told = false, retried = false;
    for (const Sent& s : h.take_native()) {
        if (s.peer == "W" && s.count(Command::disconnect) == 1) told = true;
        if (s.peer == "ALIVE" && s.count(Command::job) == 1) retried = true;
    }
    REQUIRE(told);
    REQUIRE(retried);
}

TEST_CASE("a ZB/1 worker found unroutable by a heartbeat is removed at once") {
    BrokerConfig config;
    config.heartbeat_interval = 100ms;
    Native h(config);
    h.zready("GONE", "echo");
    h.zrequest("C", "echo", "1", "x");
    h.take();
    h.outbox.unroutable.insert("GONE");
    h.advance(100ms);
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters().requeued == 1);
    REQUIRE(h.core.counters().workers_expired == 0);
}

TEST_CASE("drain answers ZB/1 clients 503 and tells ZB/1 workers DISCONNECT") {
    BrokerConfig config;
    config.drain_timeout = 100ms;
    Native h(config);
    h.zready("W", "echo");
    h.zrequest("C", "echo", "held", "x");
    h.zrequest("C", "echo", "queued", "y");
    h.take();
    h.core.begin_drain(h.clock);
    h.zrequest("C", "echo", "new", "z");
    const Rec refused = only(h.take_native_one("C"));
    REQUIRE(refused.id == "new");
    REQUIRE(refused.status == Status::unavailable);
    // Says why, so that a client with other brokers sends the request to one of them.
    REQUIRE(refused.body == protocol::kDrainingBody);
    h.advance(100ms);
    REQUIRE(h.core.drain_complete(h.clock));
    h.core.finish_drain();
    std::size_t unavailable = 0, disconnects = 0;
    for (const Sent& s : h.take_native()) {
        for (const Rec& r : s.records) {
            if (r.command == Command::answer && r.status == Status::unavailable) {
                ++unavailable;
                REQUIRE(r.body == protocol::kDrainingBody);
            }
            if (r.command == Command::disconnect && s.peer == "W") ++disconnects;
        }
    }
    REQUIRE(unavailable == 2);
    REQUIRE(disconnects == 1);
    REQUIRE(h.core.live_requests() == 0);
}

// ---------------------------------------------------------------------------------------------
// Roles (CURVE)

TEST_CASE("a peer with a client or admin key cannot register over ZB/1 either") {
    for (const PeerRole role : {PeerRole::client, PeerRole::admin}) {
        INFO("role " << broker::role_name(role));
        Native h;
        h.zready("W", "echo", 1, role);
        REQUIRE(only(h.take_native_one("W")).command == Command::disconnect);
        REQUIRE(h.core.worker_count() == 0);
        REQUIRE(h.core.counters()[Malformed::not_authorized] == 1);
        // Nor reply, heartbeat or give credit.
        h.receive(zb("W",
                     [](wire::Writer& w) {
                         w.reply("123456789012", "x");
                         w.command(Command::heartbeat);
                         w.credit(3);
                     }),
                  role);
        REQUIRE(h.core.counters()[Malformed::not_authorized] == 4);
        REQUIRE(h.core.counters()[Drop::unknown_token] == 0);
        REQUIRE(h.core.worker_count() == 0);
        h.take();
    }
}

TEST_CASE("a ZB/1 worker with a worker key serves a ZB/1 client with a client key") {
    Native h;
    h.zready("W", "echo", 1, PeerRole::worker);
    REQUIRE(h.core.worker_count() == 1);
    h.zrequest("C", "echo", "1", "hi", std::nullopt, PeerRole::client);
    const Rec job = only(h.take_native_one("W"));
    h.zreply("W", job.token, "hi", PeerRole::worker);
    const Rec answer = only(h.take_native_one("C"));
    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.body == "hi");
    REQUIRE(h.core.counters()[Malformed::not_authorized] == 0);
}

TEST_CASE("ZB/1 requests from a peer with a worker key are dropped unanswered and counted") {
    Native h;
    h.zready("W", "echo", 1, PeerRole::worker);
    h.receive(zb("X",
                 [](wire::Writer& w) {
                     w.request("1", "echo", std::nullopt, "hi");
                     w.request("2", "mmi.service", std::nullopt, "echo");
                 }),
              PeerRole::worker);
    REQUIRE(h.take().empty());
    REQUIRE(h.core.counters().requests == 0);
    REQUIRE(h.core.counters()[Malformed::not_authorized] == 2);
}

TEST_CASE("over ZB/1 mmi.stats and mmi.drain answer 403 to a client key, work for an admin") {
    Native h;
    for (const char* service : {"mmi.stats", "mmi.drain"}) {
        h.zrequest("C", service, "1", "", std::nullopt, PeerRole::client);
        const Rec answer = only(h.take_native_one("C"));
        REQUIRE(answer.status == Status::ok);
        REQUIRE(answer.body == "403");
    }
    REQUIRE_FALSE(h.core.draining());
    h.zrequest("A", "mmi.stats", "2", "", std::nullopt, PeerRole::admin);
    const Rec stats = only(h.take_native_one("A"));
    REQUIRE(stats.id == "2");
    REQUIRE_FALSE(stats.body.empty());
    const auto first = static_cast<unsigned char>(stats.body[0]);
    REQUIRE(((first & 0xF0) == 0x80 || first == 0xDE || first == 0xDF));  // a msgpack map
    h.zrequest("A", "mmi.drain", "3", "", std::nullopt, PeerRole::admin);
    REQUIRE(only(h.take_native_one("A")).body == "200");
    REQUIRE(h.core.draining());
}

// ---------------------------------------------------------------------------------------------
// MMI and refusals

TEST_CASE("mmi.service over ZB/1 answers in an ANSWER record") {
    Native h;
    h.zready("W", "echo");
    h.receive(zb("C", [](wire::Writer& w) {
        w.request("a", "mmi.service", std::nullopt, "echo");
        w.request("b", "mmi.service", std::nullopt, "nobody");
        w.request("c", "mmi.service", std::nullopt, "");
        w.request("d", "mmi.other", std::nullopt, "");
    }));
    const Sent sent = h.take_native_one("C");
    REQUIRE(sent.records.size() == 4);
    const std::vector<std::pair<std::string, std::string>> expected{
        {"a", "200"}, {"b", "404"}, {"c", "404"}, {"d", "501"}};
    for (std::size_t i = 0; i < expected.size(); ++i) {
        REQUIRE(sent.records[i].command == Command::answer);
        REQUIRE(sent.records[i].id == expected[i].first);
        REQUIRE(sent.records[i].status == Status::ok);
        REQUIRE(sent.records[i].body == expected[i].second);
    }
}

TEST_CASE("mmi.services over ZB/1 lists the services") {
    Native h;
    h.zready("W", "echo");
    h.zrequest("C", "mmi.services", "s", "");
    const Rec answer = only(h.take_native_one("C"));
    REQUIRE(answer.status == Status::ok);
    REQUIRE(answer.body.find("echo") != std::string::npos);
}

TEST_CASE("ZB/1 requests are refused 400, 413 and 429 as ZBC01 ones are") {
    BrokerConfig config;
    config.max_msg_size = 8;
    config.queue_limit = 1;
    Native h(config);
    h.receive(zb("C", [](wire::Writer& w) {
        w.request("empty", "", std::nullopt, "x");
        w.request("large", "svc", std::nullopt, "123456789");
        w.request("fits", "svc", std::nullopt, "12345678");
        w.request("full", "svc", std::nullopt, "1");
    }));
    const Sent sent = h.take_native_one("C");
    REQUIRE(sent.records.size() == 3);
    REQUIRE(sent.records[0].id == "empty");
    REQUIRE(sent.records[0].status == Status::bad_request);
    REQUIRE(sent.records[1].id == "large");
    REQUIRE(sent.records[1].status == Status::too_large);
    REQUIRE(sent.records[2].id == "full");
    REQUIRE(sent.records[2].status == Status::queue_full);
    for (const Rec& r : sent.records)
        REQUIRE(r.body.empty());
    REQUIRE(h.core.counters()[Malformed::empty_service] == 1);
    REQUIRE(h.core.service_info("svc")->waiting == 1);
}

TEST_CASE("a ZB/1 body over max_msg_size in frames is refused 413 and kept nowhere") {
    BrokerConfig config;
    config.max_msg_size = wire::kInlineBodyLimit;
    Native h(config);
    h.zrequest("C", "svc", "big", std::string(wire::kInlineBodyLimit + 1, 'b'));
    REQUIRE(only(h.take_native_one("C")).status == Status::too_large);
    REQUIRE(h.core.live_requests() == 0);
}

// ---------------------------------------------------------------------------------------------
// One routing id, two protocols

// on_native_worker_record() once took the routing id of a worker registered over MDP for "no
// worker" and registered it again: WorkerRegistry::add() found the id taken, and the expiry
// list linked freed memory (heap-use-after-free under ASan; fuzz_broker_core found it).
TEST_CASE(
    "a ZB/1 READY from the routing id of a registered MDP worker does not corrupt the "
    "registry") {
    // A ROUTER routing id is one connection; a hostile or confused peer may speak both. The
    // second READY must be refused or replace the first, never leave two workers of one id.
    Native h;
    h.ready("W", "echo");
    h.zready("W", "echo");
    h.take();
    REQUIRE(h.core.worker_count() <= 1);
    h.zrequest("C", "echo", "1", "x");
    h.advance(std::chrono::hours(1));  // every worker expires: the registry must be whole
    REQUIRE(h.core.worker_count() == 0);
}

// ---------------------------------------------------------------------------------------------
// Queue policies in the core: fairness by connection or key, priority, per-key limits

namespace {

// A ZB/1 request with options, from `client`.
Message zrequest_with(const std::string& client, const std::string& id,
                      wire::RequestOptions options, const std::string& body = "x") {
    return zb(client, [&](wire::Writer& w) { w.request(id, "echo", options, body); });
}

}  // namespace

TEST_CASE("7/MDP clients share a service by connection: one request waits one turn, not a flood") {
    CoreHarness h;         // the default policy
    h.ready("W", "echo");  // credit 1
    for (int i = 0; i < 5; ++i)
        h.mdp_request("FLOOD", "echo", "f" + std::to_string(i));
    h.mdp_request("B", "echo", "b");
    std::vector<std::string> order;
    for (int i = 0; i < 3; ++i) {
        const Message job = h.take().back();  // after the first: the answer to FLOOD, the job
        order.push_back(job.back());
        h.reply(job, job.back());
    }
    // f0 went at once; f1 had its turn queued before B came; then B's.
    REQUIRE(order == std::vector<std::string>{"f0", "f1", "b"});
}

TEST_CASE("with --queue-policy fifo the same request waits behind the flood") {
    BrokerConfig config;
    config.queue.kind = broker::QueuePolicyKind::fifo;
    CoreHarness h(config);
    h.ready("W", "echo");
    for (int i = 0; i < 3; ++i)
        h.mdp_request("FLOOD", "echo", "f" + std::to_string(i));
    h.mdp_request("B", "echo", "b");
    std::vector<std::string> order;
    for (int i = 0; i < 4; ++i) {
        const Message job = h.take().back();
        order.push_back(job.back());
        h.reply(job, job.back());
    }
    REQUIRE(order == std::vector<std::string>{"f0", "f1", "f2", "b"});
}

TEST_CASE("a ZB/1 fairness key groups connections, and a priority goes before the backlog") {
    Native h;
    h.ready("W", "echo");
    wire::RequestOptions tenant;
    tenant.fairness_key = "tenant";
    h.receive(zrequest_with("C1", "1", tenant, "t1"));  // dispatched at once
    h.receive(zrequest_with("C1", "2", tenant, "t2"));
    h.receive(zrequest_with("C2", "3", tenant, "t3"));  // the same tenant, another connection
    h.receive(zrequest_with("D", "4", {}, "d"));
    wire::RequestOptions urgent;
    urgent.priority = 9;
    h.receive(zrequest_with("E", "5", urgent, "e"));
    std::vector<std::string> order;
    for (int i = 0; i < 5; ++i) {
        const auto sent = h.take();
        const Message job = sent.back();
        order.push_back(job.back());
        h.reply(job, job.back());
    }
    REQUIRE(order == std::vector<std::string>{"t1", "e", "t2", "d", "t3"});
}

TEST_CASE("ZBC01 headers carry priority and fairness_key; a bad one is a 400") {
    CoreHarness h;
    h.ready("W", "echo");
    h.zbc_request("C", "echo", "first", "1");  // dispatched at once
    h.zbc_request("C", "echo", "low", "2");
    // {"priority": 7, "fairness_key": "t"}
    h.zbc_request("C", "echo", "high", "3",
                  "\x82\xa8priority\x07\xac"
                  "fairness_key\xa1t");
    Message job = h.take_one();
    h.reply(job, "1");
    auto sent = h.take();
    REQUIRE(sent.back().back() == "3");

    h.zbc_request("C", "echo", "bad", "4", "\x81\xa8priority\x0a");  // 10
    const Message answer = h.take_one();
    REQUIRE(answer[4] == "bad");
    REQUIRE(answer[5] == "400");
    h.zbc_request("C", "echo", "bad-key", "5",
                  "\x81\xac"
                  "fairness_key\xa0");  // ""
    REQUIRE(h.take_one()[5] == "400");
}

TEST_CASE("a ZB/1 priority above 9 is a 400, and the rest of the message is served") {
    Native h;
    h.zready("W", "echo", 10);
    h.receive(zb("C", [](wire::Writer& w) {
        wire::RequestOptions bad;
        bad.priority = 10;
        w.request("bad", "echo", bad, "x");
        w.request("good", "echo", std::nullopt, "y");
    }));
    const auto sent = h.take_native();
    REQUIRE(sent.size() == 2);
    std::size_t answers = 0;
    std::size_t jobs = 0;
    for (const Sent& s : sent) {
        for (const Rec& r : s.records) {
            if (r.command == Command::answer) {
                ++answers;
                REQUIRE(r.id == "bad");
                REQUIRE(r.status == Status::bad_request);
            }
            if (r.command == Command::job) ++jobs;
        }
    }
    REQUIRE((answers == 1 && jobs == 1));
}

TEST_CASE("a full queue makes room for a newcomer: the flood's newest request gets 429") {
    BrokerConfig config;
    config.queue_limit = 4;
    CoreHarness h(config);
    for (int i = 0; i < 4; ++i)
        h.zbc_request("FLOOD", "echo", "f" + std::to_string(i), "x");
    h.zbc_request("FLOOD", "echo", "f4", "x");  // past its share: refused
    Message refused = h.take_one();
    REQUIRE((refused[4] == "f4" && refused[5] == "429"));

    h.zbc_request("B", "echo", "b", "x");  // under its share: admitted, f3 pushed out
    Message pushed_out = h.take_one();
    REQUIRE(pushed_out[0] == "FLOOD");
    REQUIRE((pushed_out[4] == "f3" && pushed_out[5] == "429"));
    REQUIRE(h.core.counters().pushed_out == 1);
    REQUIRE(h.core.service_info("echo")->waiting == 4);

    h.ready("W", "echo", "10");
    std::set<std::string> served;
    for (const Message& job : h.take())
        served.insert(job.back());
    REQUIRE(served.size() == 1);  // every body is "x": count the jobs instead
    REQUIRE(h.core.service_info("echo")->in_flight == 4);
}

TEST_CASE("stats name the fairness keys with most waiting, at most five") {
    CoreHarness h;
    for (int k = 0; k < 8; ++k) {
        for (int i = 0; i <= k; ++i)
            h.mdp_request("K" + std::to_string(k), "echo", "x");
    }
    const auto info = h.core.service_info("echo");
    REQUIRE(info->top_keys.size() == broker::kTopKeys);
    REQUIRE(info->top_keys[0].key == "K7");
    REQUIRE(info->top_keys[0].waiting == 8);
    REQUIRE(info->top_keys[4].key == "K3");
}

TEST_CASE("with CURVE a client's key is its fairness key, over all its connections") {
    CoreHarness h;
    h.ready("W", "echo");
    const auto from = [&h](const std::string& connection, const std::string& key,
                           const std::string& body) {
        h.receive({connection, kEmpty, "MDPC01", "echo", body}, PeerRole::client, key);
    };
    from("C1", "KEY-A", "a1");  // dispatched at once
    from("C1", "KEY-A", "a2");
    from("C2", "KEY-A", "a3");  // the same client key on another connection: the same tenant
    from("D", "KEY-D", "d");
    std::vector<std::string> order;
    for (int i = 0; i < 4; ++i) {
        const Message job = h.take().back();
        order.push_back(job.back());
        h.reply(job, job.back());
    }
    REQUIRE(order == std::vector<std::string>{"a1", "a2", "d", "a3"});
    h.receive({"C3", kEmpty, "MDPC01", "echo", "x"}, PeerRole::client, "KEY-B");
    REQUIRE(h.core.service_info("echo")->top_keys.empty());  // dispatched at once: no queue
}

TEST_CASE("an idempotency key goes to the worker with the job, and again with a retry") {
    BrokerConfig config;
    config.max_attempts = 2;
    Native h(config);
    h.zready("W1", "echo");
    wire::RequestOptions keyed;
    keyed.idempotency_key = "order-42";
    keyed.fairness_key = "tenant";
    h.receive(zrequest_with("C", "1", keyed, "x"));
    h.receive(zrequest_with("C", "2", {}, "y"));
    const Rec job = only(h.take_native_one("W1"));
    REQUIRE(job.command == Command::job);
    REQUIRE(job.idempotency_key == "order-42");
    REQUIRE(job.body == "x");

    // The worker dies holding it: the next worker gets the key too.
    h.zcommand("W1", Command::disconnect);
    h.zready("W2", "echo");
    const Rec retry = only(h.take_native_one("W2"));
    REQUIRE(retry.idempotency_key == "order-42");
    h.receive(zb("W2", [&](wire::Writer& w) { w.reply(retry.token, "x"); }));
    const auto sent = h.take_native();
    bool unkeyed_job = false;
    for (const Sent& s : sent) {
        for (const Rec& r : s.of(Command::job))
            unkeyed_job = unkeyed_job || (r.body == "y" && r.idempotency_key.empty());
    }
    REQUIRE(unkeyed_job);
}

TEST_CASE("ZBC01 carries idempotency_key; an empty one is a 400") {
    CoreHarness h;
    h.zbc_request("C", "echo", "bad", "1",
                  "\x81\xaf"
                  "idempotency_key\xa0");  // ""
    REQUIRE(h.take_one()[5] == "400");
}

// ---------------------------------------------------------------------------------------------
// Hardening: what a hostile peer, a routing id taken by another, or a peer that is gone can do

TEST_CASE("a peer that is worker and client, gone holding 400 of its own jobs, is let go once") {
    // It was: the heartbeat found it unroutable, its removal answered 400 requests 500 into its
    // own batch, the batch filled and was sent at once, found it unroutable again, and removed
    // the worker a second time under the first removal (heap-use-after-free).
    BrokerConfig config;
    config.max_attempts = 1;
    Native h(config);
    h.zready("P", "s", 400);
    const std::string long_id(252, 'i');
    for (int batch = 0; batch < 4; ++batch) {
        h.receive(zb("P", [&](wire::Writer& w) {
            for (int i = 0; i < 100; ++i)
                w.request(long_id + std::to_string(batch * 100 + i), "s", std::nullopt, "x");
        }));
    }
    std::size_t jobs = 0;
    for (const Sent& sent : h.take_native())
        jobs += sent.count(Command::job);
    REQUIRE(jobs == 400);
    h.outbox.unroutable.insert("P");  // it closed its socket without a word
    h.advance(protocol::kHeartbeatInterval);
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.live_requests() == 0);
    REQUIRE(h.core.counters().answered(Status::retries_exhausted) == 400);
    REQUIRE(h.core.counters()[Drop::client_unreachable] == 400);
    h.advance(protocol::kHeartbeatInterval);
    REQUIRE(h.core.peer_count() + h.core.departed_peer_count() == 0);  // nothing kept of it
}

TEST_CASE("with CURVE, another key speaking under a worker's routing id gets none of its jobs") {
    Native h;
    h.receive(zb("W", [](wire::Writer& w) { w.ready("s", 1); }), PeerRole::worker, "KEY-W");
    REQUIRE(h.core.worker_count() == 1);
    // W left; a client key took its routing id and says anything at all.
    h.receive(zb("W", [](wire::Writer& w) { w.command(Command::heartbeat); }), PeerRole::client,
              "KEY-A");
    REQUIRE(h.take().empty());  // refused, not acted on
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.counters()[Malformed::other_key] == 1);
    h.receive(zb("C", [](wire::Writer& w) { w.request("c1", "s", std::nullopt, "secret"); }),
              PeerRole::client, "KEY-C");
    REQUIRE(h.take().empty());  // no JOB to "W": the request waits for a worker
    REQUIRE(h.core.service_info("s")->waiting == 1);
}

TEST_CASE("a worker whose connection closed gets no more jobs, whoever takes its routing id") {
    Native h;
    h.receive(zb("W", [](wire::Writer& w) { w.ready("s", 2); }), PeerRole::worker, "KEY-W");
    h.receive(zb("C", [](wire::Writer& w) { w.request("c1", "s", std::nullopt, "one"); }),
              PeerRole::client, "KEY-C");
    REQUIRE(only(h.take_native_one("W")).command == Command::job);
    h.core.on_peer_gone("W");  // the loop saw its connection close
    h.core.flush();
    REQUIRE(h.core.worker_count() == 0);
    REQUIRE(h.core.service_info("s")->waiting == 1);  // back in the queue, not lost
    // An impostor now holds "W" and says nothing: no JOB is addressed to it.
    h.receive(zb("C", [](wire::Writer& w) { w.request("c2", "s", std::nullopt, "two"); }),
              PeerRole::client, "KEY-C");
    REQUIRE(h.take().empty());
}

TEST_CASE("a client's answers go nowhere once it is gone, even to a new peer of its routing id") {
    Native h;
    h.zready("W", "s");
    h.receive(zb("C", [](wire::Writer& w) { w.request("c1", "s", std::nullopt, "mine"); }),
              PeerRole::client, "KEY-C");
    const Rec job = only(h.take_native_one("W"));
    h.core.on_peer_gone("C");
    // Another key takes "C" and asks something of its own.
    h.receive(zb("C", [](wire::Writer& w) { w.request("i1", "mmi.service", std::nullopt, "s"); }),
              PeerRole::client, "KEY-I");
    const Sent own = h.take_native_one("C");
    REQUIRE(only(own).id == "i1");
    h.zreply("W", job.token, "for C only");
    REQUIRE(h.take().empty());  // C's answer reaches nobody
    REQUIRE(h.core.counters()[Drop::client_unreachable] == 1);
    REQUIRE(h.core.live_requests() == 0);
}

TEST_CASE("a reply of more frames than ZB/1 counts reaches a ZB/1 client as 413, never cut") {
    Native h;
    h.ready("W", "big");  // a 7/MDP worker: its replies may have any number of frames
    h.zrequest("C", "big", "id-1", "x");
    const Message job = h.take_one();
    Message reply{"W", kEmpty, "MDPW01", kReply, job.at(4), kEmpty};
    reply.resize(reply.size() + wire::kMaxBodyFrames + 1, "f");
    h.receive(reply);
    const Rec answer = only(h.take_native_one("C"));
    REQUIRE(answer.status == Status::too_large);
    REQUIRE(answer.body == "the reply has more frames than ZB/1 carries");
    REQUIRE(h.core.live_requests() == 0);
    // A ZBC01 client gets the same reply whole.
    h.zbc_request("Z", "big", "id-2", "x");
    const Message again = h.take_one();
    Message whole{"W", kEmpty, "MDPW01", kReply, again.at(4), kEmpty};
    whole.resize(whole.size() + wire::kMaxBodyFrames + 1, "f");
    h.receive(whole);
    const Message answered = h.take_one();
    REQUIRE(answered.at(5) == "200");
    REQUIRE(answered.size() == 6 + wire::kMaxBodyFrames + 1);
}

TEST_CASE("with CURVE a named fairness key divides its client's share, never another's") {
    BrokerConfig config;
    config.queue_limit = 10;
    Native h(config);
    const auto ask = [&h](const std::string& id, const std::string& key, const std::string& named,
                          PeerRole role = PeerRole::client) {
        wire::RequestOptions options;
        options.fairness_key = named;
        h.receive(zrequest_with("C-" + key, id, options), role, key);
    };
    // No worker: everything waits. The attacker names the victim's key as its fairness key.
    for (int i = 0; i < 10; ++i)
        ask("a" + std::to_string(i), "ATTACKER", "VICTIM");
    h.take();
    for (int i = 0; i < 3; ++i)
        ask("v" + std::to_string(i), "VICTIM", "");
    // The victim's requests are admitted: the attacker filled its own share, not the victim's.
    for (const Sent& sent : h.take_native()) {
        for (const Rec& answer : sent.of(Command::answer))
            REQUIRE(answer.id.starts_with("a"));  // only the attacker's pushed out
    }
    const auto top = h.core.service_info("echo")->top_keys;
    REQUIRE(top.size() == 2);
    REQUIRE(top[0].key == "ATTACKER");
    // An admin may queue on behalf of any tenant.
    ask("x", "ADMIN", "SOMEONE", PeerRole::admin);
    bool found = false;
    const auto info = h.core.service_info("echo");
    for (const auto& load : info->top_keys)
        found = found || load.key == "SOMEONE";
    REQUIRE(found);
}

TEST_CASE("requests back from a lost worker are answered while other keys keep every worker busy") {
    // It was: a request back from a dead worker may only go to a worker holding nothing, each
    // failed try used its key's turn, and B's steady load kept both workers from ever emptying.
    BrokerConfig config;
    config.queue.kind = broker::QueuePolicyKind::fair;
    Native h(config);
    h.zready("W1", "s", 2);
    h.zrequest("A", "s", "a1", "a1");
    h.zrequest("A", "s", "a2", "a2");
    std::size_t jobs = 0;
    for (const Sent& sent : h.take_native())
        jobs += sent.peer == "W1" ? sent.count(Command::job) : 0;
    REQUIRE(jobs == 2);
    h.zready("W2", "s", 2);
    h.zready("W3", "s", 2);
    int b_sent = 0;
    const auto b_sends = [&] {
        const std::string id = "b" + std::to_string(b_sent++);
        h.zrequest("B", "s", id, id);
    };
    for (int i = 0; i < 4; ++i)
        b_sends();
    h.zcommand("W1", Command::disconnect);  // holding A's two
    std::map<std::string, std::deque<Rec>> held;
    std::map<std::string, Status> answered;
    const auto collect = [&] {
        for (const Sent& sent : h.take_native()) {
            for (const Rec& job : sent.of(Command::job))
                held[sent.peer].push_back(job);
            for (const Rec& answer : sent.of(Command::answer))
                answered[answer.id] = answer.status;
        }
    };
    collect();
    for (int reply = 0; reply < 20'000 && answered.count("a2") + answered.count("a1") < 2;
         ++reply) {
        const std::string worker = reply % 2 == 0 ? "W2" : "W3";
        const std::string other = reply % 2 == 0 ? "W3" : "W2";
        const std::string& who = held[worker].empty() ? other : worker;
        REQUIRE_FALSE(held[who].empty());
        const Rec job = held[who].front();
        held[who].pop_front();
        h.zreply(who, job.token, job.body);
        if (job.body.starts_with("b")) b_sends();  // B sends one per answer
        collect();
    }
    REQUIRE(answered["a1"] == Status::ok);
    REQUIRE(answered["a2"] == Status::ok);
    REQUIRE(b_sent > 4);  // B was served all along
}

TEST_CASE("10,000 clients that come and go leave no peers, keys or records behind") {
    Native h;
    h.zready("W", "echo", 100);
    const auto peers_before = h.core.peer_count();
    for (int c = 0; c < 10'000; ++c) {
        const std::string client = "C" + std::to_string(c);
        h.receive(zb(client, [&](wire::Writer& w) {
            for (int i = 0; i < 5; ++i)
                w.request(std::to_string(i), "echo", std::nullopt, "x");
        }));
        for (const Sent& sent : h.take_native()) {
            if (sent.peer != "W") continue;
            h.receive(zb("W", [&](wire::Writer& w) {
                for (const Rec& job : sent.of(Command::job))
                    w.reply(job.token, job.body);
            }));
        }
        h.take();
        if (c % 2 == 0) h.core.on_peer_gone(client);  // some say so, others just go quiet
    }
    REQUIRE(h.core.live_requests() == 0);
    // Two heartbeat intervals: what was idle for a whole one is let go.
    h.advance(protocol::kHeartbeatInterval);
    h.zcommand("W", Command::heartbeat);
    h.advance(protocol::kHeartbeatInterval);
    REQUIRE(h.core.peer_count() == peers_before);
    REQUIRE(h.core.departed_peer_count() == 0);
    REQUIRE(h.core.snapshot(h.clock).keys == 0);
    REQUIRE(h.core.worker_count() == 1);
}

TEST_CASE("a ZB/1 request with an empty key is answered 400, and the rest of the message served") {
    // It was: the whole message was dropped unanswered; the request's id can be read, so the
    // client hears why.
    Native h;
    h.zready("W", "echo");
    h.take();
    const std::string empty_key = std::string("\x11\x04", 2) + std::string(1, '\0') + "\x03" +
                                  "bad" + "\x04" + "echo" + std::string(1, '\0') +
                                  std::string(4, '\0');
    wire::Writer writer;
    writer.request("good", "echo", std::nullopt, "x");
    Frames frames;
    frames.push_back(frame("C"));
    writer.take(frames);
    std::string envelope(view(frames[1]));
    envelope.insert(wire::kSignature.size(), empty_key);
    h.receive({"C", envelope});
    bool refused = false;
    bool served = false;
    for (const Sent& sent : h.take_native()) {
        for (const Rec& answer : sent.of(Command::answer))
            refused = refused || (answer.id == "bad" && answer.status == Status::bad_request);
        served = served || sent.count(Command::job) == 1;
    }
    REQUIRE(refused);
    REQUIRE(served);
    REQUIRE(h.core.counters()[Malformed::bad_headers] == 1);
}
