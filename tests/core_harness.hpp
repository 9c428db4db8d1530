// Drives a BrokerCore with a fake clock and records what it sends, as lists of strings.
#pragma once

#include <chrono>
#include <deque>
#include <set>
#include <string>
#include <vector>

#include "broker/broker_core.hpp"

namespace zbroker::testing {

using Message = std::vector<std::string>;

class RecordingOutbox : public broker::Outbox {
  public:
    SendResult send(FrameSpan frames) override {
        Message message;
        for (const auto& f : frames)
            message.emplace_back(view(f));
        if (unroutable.count(message.at(0)) != 0) return SendResult::unroutable;
        if (full.count(message.at(0)) != 0) return SendResult::would_block;
        sent.push_back(std::move(message));
        return SendResult::sent;
    }
    std::deque<Message> sent;
    std::set<std::string> unroutable;  // peers that are gone
    std::set<std::string> full;        // peers whose queue is full
};

inline Frames to_frames(const Message& message) {
    Frames frames;
    for (const auto& part : message)
        frames.push_back(frame(part));
    return frames;
}

inline const std::string kEmpty;
inline const std::string kReady(1, '\x01');
inline const std::string kRequest(1, '\x02');
inline const std::string kReply(1, '\x03');
inline const std::string kHeartbeat(1, '\x04');
inline const std::string kDisconnect(1, '\x05');

struct CoreHarness {
    explicit CoreHarness(broker::BrokerConfig config = {})
        : clock(std::chrono::steady_clock::time_point{} + std::chrono::hours(1)),
          core(config, outbox, clock) {}

    void receive(const Message& message, broker::PeerRole role = broker::PeerRole::anyone,
                 std::string_view peer_key = {}) {
        Frames frames = to_frames(message);
        core.on_message(frames, clock, role, peer_key);
        core.flush();
    }
    void advance(std::chrono::milliseconds by) {
        clock += by;
        core.on_timer(clock);
        core.flush();
    }
    // Everything sent since the last call, oldest first.
    std::vector<Message> take() {
        std::vector<Message> all(outbox.sent.begin(), outbox.sent.end());
        outbox.sent.clear();
        return all;
    }
    Message take_one() {
        auto all = take();
        REQUIRE(all.size() == 1);
        return all.front();
    }

    // Peer helpers, frames exactly as a ROUTER delivers them (routing id first).
    void ready(const std::string& worker, const std::string& service,
               const std::string& credit = {}) {
        Message m{worker, kEmpty, "MDPW01", kReady, service};
        if (!credit.empty()) m.push_back(credit);
        receive(m);
    }
    void mdp_request(const std::string& client, const std::string& service,
                     const std::string& body) {
        receive({client, kEmpty, "MDPC01", service, body});
    }
    void zbc_request(const std::string& client, const std::string& service, const std::string& id,
                     const std::string& body, const std::string& headers = "\x80") {
        receive({client, kEmpty, "ZBC01", service, id, headers, body});
    }
    // Replies to a REQUEST message the worker got, echoing its token.
    void reply(const Message& request, const std::string& body) {
        receive({request.at(0), kEmpty, "MDPW01", kReply, request.at(4), kEmpty, body});
    }

    RecordingOutbox outbox;
    TimePoint clock;
    broker::BrokerCore core;
};

// {"deadline_ms": ms} as msgpack.
inline std::string deadline_header(std::uint16_t ms) {
    std::string h =
        "\x81\xab"
        "deadline_ms\xcd";
    h += static_cast<char>(ms >> 8);
    h += static_cast<char>(ms & 0xFF);
    return h;
}

}  // namespace zbroker::testing
