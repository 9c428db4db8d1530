// libFuzzer target: bytes become a run of messages from clients and workers, clock ticks and a
// drain, fed to BrokerCore with no sockets. It must never crash, leak or trip a sanitizer; every
// message it sends must be routable (routing id, empty delimiter); and once drained it must hold
// no request: everything was answered or counted.
//
// Frames are assembled from protocol tokens (headers, commands, services, the tokens workers
// were really given) as well as raw bytes, so the fuzzer reaches the deep states quickly.
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "broker/broker_core.hpp"

namespace {

using namespace zbroker;
using namespace zbroker::broker;

// Reads the input front to back; past its end every read gives zeros.
class InputReader {
  public:
    InputReader(const std::uint8_t* data, std::size_t size) : data_(data), left_(size) {}
    bool empty() const noexcept { return left_ == 0; }
    std::uint8_t byte() noexcept {
        if (left_ == 0) return 0;
        --left_;
        return *data_++;
    }
    std::string bytes(std::size_t count) {
        count = std::min(count, left_);
        std::string out(reinterpret_cast<const char*>(data_), count);
        data_ += count;
        left_ -= count;
        return out;
    }

  private:
    const std::uint8_t* data_;
    std::size_t left_;
};

// Checks what the core sends and keeps the tokens it hands to workers.
class CheckingOutbox : public Outbox {
  public:
    SendResult send(Frames& frames) override {
        if (frames.size() < 3 || frames[0].size() == 0 || frames[1].size() != 0) std::abort();
        const SendResult result = fate_of(view(frames[0]));
        if (result == SendResult::sent && frames.size() >= 5 &&
            view(frames[2]) == protocol::kMdpWorker && view(frames[3]).size() == 1 &&
            view(frames[3])[0] == static_cast<char>(protocol::WorkerCommand::request)) {
            tokens.emplace_back(view(frames[4]));
            if (tokens.size() > 64) tokens.erase(tokens.begin());
        }
        return result;
    }
    // What a send to each peer does; the input sets it, so back-pressure (would-block) and
    // vanished peers (unroutable) are explored as well as delivery.
    SendResult fate_of(std::string_view peer) const {
        const auto it = fate.find(peer);
        return it == fate.end() ? SendResult::sent : it->second;
    }
    std::vector<std::string> tokens;
    std::map<std::string, SendResult, std::less<>> fate;
};

const std::string kPeers[] = {"client-a", "client-b", "worker-a",
                              "worker-b", "worker-c", std::string(5, '\0')};
const PeerRole kRoles[] = {PeerRole::anyone, PeerRole::client, PeerRole::worker, PeerRole::admin};
const std::string kTokens[] = {"",
                               "MDPC01",
                               "ZBC01",
                               "MDPW01",
                               "\x01",
                               "\x02",
                               "\x03",
                               "\x04",
                               "\x05",
                               "echo",
                               "sleep",
                               "mmi.service",
                               "mmi.services",
                               "mmi.stats",
                               "mmi.drain",
                               "mmi.other",
                               "\x80",
                               "\x81\xab"
                               "deadline_ms\x05",
                               "\x81\xab"
                               "deadline_ms\xcd\x01\x00",
                               "3",
                               "99999999999",
                               "id-1"};
constexpr std::size_t kTokenCount = sizeof kTokens / sizeof kTokens[0];

std::string next_frame(InputReader& in, const CheckingOutbox& outbox) {
    const std::uint8_t choice = in.byte();
    if (choice < 128) return kTokens[choice % kTokenCount];
    if (choice < 192 && !outbox.tokens.empty())
        return outbox.tokens[in.byte() % outbox.tokens.size()];
    return in.bytes(in.byte() % 40);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    spdlog::set_level(spdlog::level::off);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    InputReader in(data, size);
    BrokerConfig config;
    config.heartbeat_interval = Millis(100);
    config.max_attempts = 2;
    config.queue_limit = 8;
    config.max_requests = 16;
    config.max_msg_size = 64;
    config.max_credit = 4;
    config.drain_timeout = Millis(500);
    TimePoint now{std::chrono::hours(1)};
    CheckingOutbox outbox;
    BrokerCore core(config, outbox, now);

    while (!in.empty()) {
        const std::uint8_t op = in.byte();
        if (op < 24) {  // time passes
            now += Millis(op * 20);
            core.on_timer(now);
        } else if (op == 24) {
            if (!core.draining()) core.begin_drain(now);
        } else if (op == 25) {  // a peer's queue fills, it vanishes, or it reads again
            const std::string& peer = kPeers[in.byte() % std::size(kPeers)];
            outbox.fate[peer] = static_cast<SendResult>(in.byte() % 3);
        } else {  // a message: routing id, then 1 to 8 frames
            Frames frames;
            frames.push_back(frame(kPeers[in.byte() % std::size(kPeers)]));
            const PeerRole role = kRoles[in.byte() % std::size(kRoles)];
            const int count = 1 + op % 8;
            for (int i = 0; i < count; ++i)
                frames.push_back(frame(next_frame(in, outbox)));
            core.on_message(frames, now, role);
        }
    }
    if (!core.draining()) core.begin_drain(now);
    while (!core.drain_complete(now)) {
        now += Millis(100);
        core.on_timer(now);
    }
    core.finish_drain();
    if (core.live_requests() != 0) std::abort();  // something held and never answered
    return 0;
}
