// Random traffic into BrokerCore, valid and hostile mixed: it never crashes, and every ZBC01
// request is answered exactly once by the end, whatever workers and clients do meanwhile.
#include <catch2/catch.hpp>

#include <map>
#include <random>

#include <spdlog/spdlog.h>

#include "core_harness.hpp"

using namespace zbroker;
using namespace zbroker::testing;
using namespace std::chrono_literals;

namespace {

// Sees every message the core sends: answers by request id, and tokens given to workers. Now
// and then a send would block (a full queue) or finds its peer gone, as on a real socket.
class AuditingOutbox : public broker::Outbox {
  public:
    SendResult send(Frames& frames) override {
        const SendResult result = fate();
        if (frames.size() >= 6 && view(frames[2]) == "ZBC01" && view(frames[4]).starts_with("id")) {
            // Garbage may reuse ids; ours are "id<n>". An answer that cannot be delivered
            // still counts: the broker gave it, once.
            if (++answers[std::string(view(frames[4]))] > 1)
                duplicate = std::string(view(frames[4]));
        } else if (frames.size() >= 6 && view(frames[2]) == "MDPW01" &&
                   view(frames[3]) == kRequest && result == SendResult::sent) {
            tokens[std::string(view(frames[0]))].emplace_back(view(frames[4]));
        }
        return result;
    }
    std::map<std::string, int> answers;                      // by request id
    std::string duplicate;                                   // the first id answered twice
    std::map<std::string, std::vector<std::string>> tokens;  // by worker

  private:
    SendResult fate() {
        const auto roll = random_() % 100;
        if (roll == 0) return SendResult::unroutable;
        return roll < 3 ? SendResult::would_block : SendResult::sent;
    }
    std::minstd_rand random_{7};
};

class TrafficGenerator {
  public:
    explicit TrafficGenerator(std::uint32_t seed) : random_(seed) {}

    Message next(AuditingOutbox& outbox) {
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
    const std::set<std::string>& zbc_ids() const { return zbc_ids_; }

  private:
    std::size_t pick(std::size_t n) { return random_() % n; }
    std::string client() { return "C" + std::to_string(pick(4)); }
    std::string worker() { return "W" + std::to_string(pick(6)); }
    std::string service() { return std::vector<std::string>{"a", "b", "c", "mmi.x"}[pick(4)]; }

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
        const std::string w = worker();
        auto& held = outbox.tokens[pick(5) == 0 ? worker() : w];  // sometimes another's token
        std::string token = "forged!!";
        if (!held.empty()) {
            const std::size_t i = pick(held.size());
            token = held[i];
            if (pick(3) != 0)
                held.erase(held.begin() + static_cast<std::ptrdiff_t>(i));  // some replay
        }
        return {w, kEmpty, "MDPW01", kReply, token, kEmpty, "result"};
    }
    Message worker_command(const std::string& command) {
        return {worker(), kEmpty, "MDPW01", command};
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
    std::set<std::string> zbc_ids_;
};

}  // namespace

TEST_CASE("under random traffic every ZBC01 request is answered exactly once") {
    const std::uint32_t seed = GENERATE(1u, 2u, 3u, 4u);
    CAPTURE(seed);
    spdlog::set_level(spdlog::level::err);  // thousands of worker removals are expected here
    broker::BrokerConfig config;
    config.heartbeat_interval = 20ms;
    config.queue_limit = 50;
    config.max_attempts = 2;
    config.drain_timeout = 100ms;
    AuditingOutbox outbox;
    TimePoint clock = TimePoint{} + 1h;
    broker::BrokerCore core(config, outbox, clock);
    TrafficGenerator traffic(seed);

    constexpr int kSteps = 50'000;
    for (int step = 0; step < kSteps; ++step) {
        Frames frames = to_frames(traffic.next(outbox));
        core.on_message(frames, clock);
        if (step % 16 == 0) {
            clock += 1ms;
            if (clock >= core.next_timer()) core.on_timer(clock);
        }
        if (!outbox.duplicate.empty()) FAIL("request " << outbox.duplicate << " answered twice");
    }
    core.begin_drain(clock);
    clock += config.drain_timeout;
    core.on_timer(clock);
    REQUIRE(core.drain_complete(clock));
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
    REQUIRE(core.counters().malformed_total() > 0);
}
