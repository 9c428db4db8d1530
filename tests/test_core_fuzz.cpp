// Random traffic into BrokerCore, valid and hostile mixed, in 7/MDP, ZBC01 and ZB/1: it never
// crashes, every ZBC01 and ZB/1 request is answered exactly once by the end, whatever workers
// and clients do meanwhile, and a request in a message the core must not act on (a malformed
// ZB/1 envelope, a worker key's request) is never answered at all.
#include <catch2/catch.hpp>

#include <functional>
#include <map>
#include <optional>
#include <random>

#include <spdlog/spdlog.h>

#include "core_harness.hpp"
#include "shared/wire.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using namespace std::chrono_literals;

namespace {

// Sees every message the core sends: answers by request id, and tokens given to workers, in
// MDP/ZBC01 and in ZB/1 records alike. Now and then a send would block (a full queue) or finds
// its peer gone, as on a real socket.
class AuditingOutbox : public broker::Outbox {
  public:
    SendResult send(FrameSpan frames) override {
        const SendResult result = fate();
        if (frames.size() >= 2 && wire::is_envelope(frames[1])) {
            audit_native(frames, result);
        } else if (frames.size() >= 6 && view(frames[2]) == "ZBC01" &&
                   view(frames[4]).starts_with("id")) {
            // Garbage may reuse ids; ours are "id<n>". An answer that cannot be delivered
            // still counts: the broker gave it, once.
            answered(view(frames[4]));
        } else if (frames.size() >= 6 && view(frames[2]) == "MDPW01" &&
                   view(frames[3]) == kRequest && result == SendResult::sent) {
            tokens[std::string(view(frames[0]))].emplace_back(view(frames[4]));
        }
        return result;
    }
    std::map<std::string, int> answers;  // by request id
    std::string duplicate;               // the first id answered twice
    std::string problem;  // the first ZB/1 message from the core that is not a valid one
    std::map<std::string, std::vector<std::string>> tokens;  // by worker
    std::uint64_t native_ok = 0;                             // ZB/1 answers 200

  private:
    void answered(std::string_view id) {
        if (++answers[std::string(id)] > 1 && duplicate.empty()) duplicate = id;
    }
    void audit_native(FrameSpan frames, SendResult result) {
        const char* error = nullptr;
        if (!wire::parse(frames, 1, records_, error)) {
            if (problem.empty()) problem = std::string("unparsable: ") + error;
            return;
        }
        for (const wire::Record& record : records_) {
            switch (record.command) {
                case wire::Command::answer:
                    // Ours are "nid<n>" (must be answered once) and "x<n>" (never).
                    if (record.id.starts_with("nid") || record.id.starts_with("x"))
                        answered(record.id);
                    if (record.status == protocol::Status::ok) ++native_ok;
                    break;
                case wire::Command::job:
                    if (result == SendResult::sent)
                        tokens[std::string(view(frames[0]))].emplace_back(record.token);
                    break;
                case wire::Command::heartbeat:
                case wire::Command::disconnect:
                case wire::Command::credit:
                    break;
                case wire::Command::request:
                case wire::Command::ready:
                case wire::Command::reply:
                    if (problem.empty())
                        problem = std::string("the broker sent ") +
                                  std::string(wire::command_name(record.command));
                    break;
            }
        }
    }
    std::vector<wire::Record> records_;

  private:
    SendResult fate() {
        const auto roll = random_() % 100;
        if (roll == 0) return SendResult::unroutable;
        return roll < 3 ? SendResult::would_block : SendResult::sent;
    }
    std::minstd_rand random_{7};
};

// A ZB/1 message from `peer`: what `write` puts in a wire::Writer, as a ROUTER delivers it.
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

// READYs of both protocols come from any worker's routing id: a ZB/1 READY from a worker
// registered over MDP once corrupted the registry.
constexpr bool kReadyFromEitherProtocol = true;

class TrafficGenerator {
  public:
    explicit TrafficGenerator(std::uint32_t seed) : random_(seed) {}

    // The next message; role() says what the sender may do (CURVE).
    Message next(AuditingOutbox& outbox) {
        role_ = broker::PeerRole::anyone;
        return pick(2) == 0 ? next_mdp(outbox) : next_native(outbox);
    }
    broker::PeerRole role() const { return role_; }
    const std::set<std::string>& zbc_ids() const { return zbc_ids_; }
    const std::set<std::string>& native_ids() const { return native_ids_; }
    const std::set<std::string>& ignored_ids() const { return ignored_ids_; }

  private:
    Message next_mdp(AuditingOutbox& outbox) {
        switch (pick(10)) {
            case 0:
            case 1:
            case 2:
                return client_request();
            case 3:
                return ready();
            case 4:
            case 5:
                return reply(outbox);
            case 6:
                return worker_command(kHeartbeat);
            case 7:
                return pick(4) == 0 ? worker_command(kDisconnect) : reply(outbox);
            case 8:
                return {client(), kEmpty, "MDPC01", "mmi.service", service()};
            default:
                return garbage();
        }
    }

    Message next_native(AuditingOutbox& outbox) {
        switch (pick(10)) {
            case 0:
            case 1:
            case 2:
                return native_requests();
            case 3:
                return native_ready();
            case 4:
            case 5:
                return native_replies(outbox);
            case 6:
                return zb(any_worker(), [&](wire::Writer& w) {
                    if (pick(3) == 0) {
                        w.credit(static_cast<std::uint32_t>(pick(6)));
                    } else {
                        w.command(wire::Command::heartbeat);
                    }
                });
            case 7:
                if (pick(4) != 0) return native_replies(outbox);
                return zb(any_worker(),
                          [](wire::Writer& w) { w.command(wire::Command::disconnect); });
            case 8:
                return native_wrong_way();
            default:
                return native_ignored();
        }
    }

    std::size_t pick(std::size_t n) { return random_() % n; }
    std::string client() { return "C" + std::to_string(pick(4)); }
    std::string worker() { return "W" + std::to_string(pick(6)); }
    std::string native_worker() { return "Z" + std::to_string(pick(6)); }
    // A worker's routing id for anything but READY: mostly ZB/1 ones, now and then an MDP one.
    std::string any_worker() { return pick(6) == 0 ? worker() : native_worker(); }
    std::string service() { return std::vector<std::string>{"a", "b", "c", "mmi.x"}[pick(4)]; }

    std::string body() {
        if (pick(40) == 0) return std::string(wire::kInlineBodyLimit + 1, 'L');  // a frame
        return std::string(pick(40), 'x');
    }
    // A token this worker (or, sometimes, another) was given; some are replayed.
    std::string take_token(AuditingOutbox& outbox, const std::string& w) {
        auto& held = outbox.tokens[pick(5) == 0 ? any_worker() : w];
        std::string token = "forged!!";
        if (!held.empty()) {
            const std::size_t i = pick(held.size());
            token = held[i];
            if (pick(3) != 0)
                held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));  // some replay
        }
        return token;
    }

    // One to four REQUEST records in one message: the batch a ZB/1 client sends.
    Message native_requests() {
        const std::size_t count = 1 + pick(4);
        return zb(client(), [&](wire::Writer& w) {
            for (std::size_t i = 0; i < count; ++i) {
                const std::string id = "nid" + std::to_string(next_id_++);
                native_ids_.insert(id);
                std::optional<std::uint32_t> deadline;
                if (pick(3) == 0) deadline = static_cast<std::uint32_t>(pick(200));
                std::string name = service();
                if (pick(10) == 0) name = pick(2) == 0 ? "mmi.service" : "";  // MMI, or 400
                if (pick(8) == 0) {
                    Frames parts;  // a body of several frames
                    parts.push_back(frame("part"));
                    parts.push_back(frame(body()));
                    w.request(id, name, deadline, wire::Writer::FramesBody{parts, 0, 2});
                } else {
                    w.request(id, name, deadline, body());
                }
            }
        });
    }
    Message native_ready() {
        const std::string w = kReadyFromEitherProtocol ? any_worker() : native_worker();
        return zb(w, [&](wire::Writer& writer) {
            writer.ready(service(), static_cast<std::uint32_t>(pick(6)));  // 0 is refused
        });
    }
    Message native_replies(AuditingOutbox& outbox) {
        const std::string w = any_worker();
        const std::size_t count = 1 + pick(3);
        return zb(w, [&](wire::Writer& writer) {
            for (std::size_t i = 0; i < count; ++i) {
                writer.reply(take_token(outbox, w), pick(4) == 0 ? body() : "result");
                if (pick(4) == 0) writer.command(wire::Command::heartbeat);
            }
        });
    }
    // Records only the broker may send: their sender is removed.
    Message native_wrong_way() {
        return zb(any_worker(), [&](wire::Writer& w) {
            if (pick(2) == 0) {
                Frames none;
                w.job("123456789012", std::nullopt, {}, {none, 0, 0});
            } else {
                w.answer("nid0", protocol::Status::ok, "forged");
            }
        });
    }
    // Requests the core must not act on: never answered. And raw bytes after the signature.
    Message native_ignored() {
        const std::string id = "x" + std::to_string(next_id_++);
        Message m = zb(client(), [&](wire::Writer& w) { w.request(id, service(), 10u, "b"); });
        switch (pick(5)) {
            case 0:
                m[1] += static_cast<char>(0x7F);  // then an unknown command
                break;
            case 1:
                m.push_back("stray");  // a frame no record claims
                break;
            case 2:
                m[1].pop_back();  // cut short
                break;
            case 3:
                role_ = broker::PeerRole::worker;  // a worker key may not ask
                break;
            default: {
                std::string raw(wire::kSignature);
                for (std::size_t i = pick(30); i > 0; --i)
                    raw += static_cast<char>(pick(256));
                Message r{pick(2) == 0 ? client() : any_worker(), raw};
                for (std::size_t i = pick(3); i > 0; --i)
                    r.push_back(std::string(pick(5), 'f'));
                return r;
            }
        }
        ignored_ids_.insert(id);
        return m;
    }

    Message client_request() {
        if (pick(3) == 0) return {client(), kEmpty, "MDPC01", service(), "body"};
        const std::string id = "id" + std::to_string(next_id_++);
        std::string headers = "\x80";
        switch (pick(4)) {
            case 0:
                headers = deadline_header(static_cast<std::uint16_t>(pick(200)));
                break;
            case 1:
                headers = pick(5) == 0 ? std::string("\x91\x01") : std::string();
                break;
            default:
                break;
        }
        zbc_ids_.insert(id);
        return {client(), kEmpty, "ZBC01", service(), id, headers, std::string(pick(40), 'x')};
    }
    Message ready() {
        Message m{worker(), kEmpty, "MDPW01", kReady, service()};
        if (pick(2) == 0) m.push_back(std::to_string(pick(4)));  // credit 0 is refused
        return m;
    }
    Message reply(AuditingOutbox& outbox) {
        const std::string w = pick(6) == 0 ? native_worker() : worker();
        return {w, kEmpty, "MDPW01", kReply, take_token(outbox, w), kEmpty, "result"};
    }
    Message worker_command(const std::string& command) {
        return {pick(6) == 0 ? native_worker() : worker(), kEmpty, "MDPW01", command};
    }
    Message garbage() {
        Message m{pick(2) == 0 ? client() : worker()};
        const std::size_t parts = pick(6);
        for (std::size_t i = 0; i < parts; ++i) {
            const std::vector<std::string> choices{
                "",
                "MDPC01",
                "MDPW01",
                "ZBC01",
                kReady,
                kReply,
                std::string(pick(20), static_cast<char>(pick(256)))};
            m.push_back(choices[pick(choices.size())]);
        }
        return m;
    }

    std::mt19937 random_;
    std::uint64_t next_id_ = 0;
    broker::PeerRole role_ = broker::PeerRole::anyone;
    std::set<std::string> zbc_ids_;
    std::set<std::string> native_ids_;
    std::set<std::string> ignored_ids_;
};

}  // namespace

TEST_CASE("under random traffic every ZBC01 and ZB/1 request is answered exactly once") {
    const std::uint32_t seed = GENERATE(1u, 2u, 3u, 4u);
    CAPTURE(seed);
    spdlog::set_level(spdlog::level::err);  // thousands of worker removals are expected here
    broker::BrokerConfig config;
    config.heartbeat_interval = 20ms;
    config.queue_limit = 50;
    config.max_attempts = 2;
    config.drain_timeout = 100ms;
    config.orphan_after = 1ms;  // far shorter than a worker's expiry, so releases happen too
    AuditingOutbox outbox;
    TimePoint clock = TimePoint{} + 1h;
    broker::BrokerCore core(config, outbox, clock);
    TrafficGenerator traffic(seed);

    constexpr int kSteps = 50'000;
    for (int step = 0; step < kSteps; ++step) {
        Frames frames = to_frames(traffic.next(outbox));
        core.on_message(frames, clock, traffic.role());
        if (step % 4 == 0) core.flush();  // a read batch of a few messages, then its sends
        if (step % 16 == 0) {
            clock += 1ms;
            if (clock >= core.next_timer()) {
                core.on_timer(clock);
                core.flush();
            }
        }
        if (!outbox.duplicate.empty()) FAIL("request " << outbox.duplicate << " answered twice");
        if (!outbox.problem.empty()) FAIL("step " << step << ": " << outbox.problem);
    }
    core.flush();
    core.begin_drain(clock);
    clock += config.drain_timeout;
    core.on_timer(clock);
    core.flush();
    REQUIRE(core.drain_complete(clock));
    CHECK(core.counters().orphans_released > 0);
    core.finish_drain();

    REQUIRE(core.live_requests() == 0);
    std::size_t unanswered = 0;
    for (const std::string& id : traffic.zbc_ids()) {
        const auto it = outbox.answers.find(id);
        if (it == outbox.answers.end())
            ++unanswered;
        else
            REQUIRE(it->second == 1);
    }
    REQUIRE(unanswered == 0);
    for (const std::string& id : traffic.native_ids()) {
        const auto it = outbox.answers.find(id);
        if (it == outbox.answers.end())
            ++unanswered;
        else
            REQUIRE(it->second == 1);
    }
    CHECK(unanswered == 0);
    for (const std::string& id : traffic.ignored_ids()) {
        INFO("request " << id << " was in a message the core must not act on");
        REQUIRE(outbox.answers.count(id) == 0);
    }
    REQUIRE(outbox.duplicate.empty());
    REQUIRE(outbox.problem.empty());
    REQUIRE(outbox.native_ok > 0);  // ZB/1 requests were served, not only refused
    REQUIRE(core.counters().malformed_total() > 0);
    REQUIRE(core.counters()[broker::Malformed::bad_envelope] > 0);
}
