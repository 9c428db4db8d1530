// ZBC01 envelope shared by Client and AsyncClient: request frames out, reply envelopes checked.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "shared/frames.hpp"
#include "shared/protocol.hpp"

namespace zbroker::detail {

// Request: "" ZBC01 service request-id headers body...
// Reply:   "" ZBC01 service request-id status body...
inline constexpr std::size_t kReplyRequestId = 3;
inline constexpr std::size_t kReplyStatus = 4;
inline constexpr std::size_t kReplyBody = 5;

// A request id is the 8 raw bytes of a per-client counter: fixed size, so no allocation.
using RequestIdBytes = std::array<char, sizeof(std::uint64_t)>;

inline RequestIdBytes encode_request_id(std::uint64_t id) noexcept {
    RequestIdBytes bytes;
    std::memcpy(bytes.data(), &id, bytes.size());
    return bytes;
}

inline std::optional<std::uint64_t> decode_request_id(std::string_view bytes) noexcept {
    if (bytes.size() != sizeof(std::uint64_t)) return std::nullopt;
    std::uint64_t id = 0;
    std::memcpy(&id, bytes.data(), sizeof id);
    return id;
}

// Refills `frames` with the envelope of a request, reusing its messages: frames this small
// live inside zmq::message_t itself, so building an envelope allocates nothing.
inline void build_request_envelope(Frames& frames, std::string_view service, std::uint64_t id,
                                   std::string_view headers) {
    constexpr std::size_t kEnvelope = 5;
    frames.resize(kEnvelope);
    const RequestIdBytes id_bytes = encode_request_id(id);
    frames[0].rebuild();
    frames[1].rebuild(protocol::kZbcClient.data(), protocol::kZbcClient.size());
    frames[2].rebuild(service.data(), service.size());
    frames[3].rebuild(id_bytes.data(), id_bytes.size());
    frames[4].rebuild(headers.data(), headers.size());
}

struct ReplyEnvelope {
    std::uint64_t id = 0;
    protocol::Status status = protocol::Status::no_reply;
};

// Checks the envelope of a reply; nullopt, with the reason in `why`, when it is malformed.
inline std::optional<ReplyEnvelope> parse_reply_envelope(const Frames& frames, const char*& why) {
    if (frames.size() < kReplyBody) {
        why = "fewer than 5 frames";
        return std::nullopt;
    }
    if (frames[0].size() != 0) {
        why = "no empty delimiter frame";
        return std::nullopt;
    }
    if (view(frames[1]) != protocol::kZbcClient) {
        why = "protocol frame is not ZBC01";
        return std::nullopt;
    }
    const auto id = decode_request_id(view(frames[kReplyRequestId]));
    if (!id) {
        why = "request id is not one this client sends (8 bytes)";
        return std::nullopt;
    }
    const auto status = protocol::parse_status(view(frames[kReplyStatus]));
    if (!status || *status == protocol::Status::no_reply) {
        why = "status is not a known 3-digit code";
        return std::nullopt;
    }
    return ReplyEnvelope{*id, *status};
}

// The broker answers 503/504 exactly at the deadline a client sends, which is the client's own
// timeout: a client listens this much longer, so that answer arrives instead of racing it.
inline std::chrono::milliseconds reply_grace(std::chrono::milliseconds timeout) {
    using std::chrono::milliseconds;
    return std::clamp(timeout / 4, milliseconds{50}, milliseconds{500});
}

}  // namespace zbroker::detail
