// What the broker counts: answers by status, malformed input by kind, drops by reason.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "shared/protocol.hpp"

namespace zbroker::broker {

// Input refused because it breaks the protocol. Every kind is counted, none is fatal.
enum class Malformed : std::uint8_t {
    too_short,            // fewer frames than the header needs
    no_delimiter,         // frame after the routing id is not empty
    unknown_protocol,     // neither a ZB/1 envelope nor MDPC01, ZBC01 or MDPW01
    empty_service,        // client named no service
    bad_request_id,       // ZBC01 request id longer than 255 bytes (missing: too_short)
    bad_headers,          // ZBC01 headers frame is not a valid msgpack map; a priority above 9
    bad_command,          // worker command frame is not one known byte
    bad_ready,            // READY without a service, or with a bad credit frame
    bad_reply,            // REPLY without token and empty delimiter
    not_ready,            // worker command before READY
    duplicate_ready,      // READY from a worker already registered
    mmi_registration,     // worker tried to register an mmi.* service
    not_authorized,       // CURVE role forbids it: READY from a non-worker, a request from a worker
    long_service,         // service name longer than 255 bytes
    service_limit,        // a new service name past --max-services
    bad_envelope,         // a ZB/1 envelope that does not parse
    other_key,            // a routing id spoken by another CURVE key than the one that had it
    unprintable_service,  // a new service name that is not printable UTF-8
    kCount
};

// Messages the broker could not deliver, or chose not to.
enum class Drop : std::uint8_t {
    unknown_token,        // REPLY with a token that worker does not hold
    late_reply,           // REPLY after the client was told 504
    client_unreachable,   // client disconnected before its answer
    client_backpressure,  // client's queue full (it reads too slowly)
    mdp_unanswerable,     // a plain MDP request that failed: MDP has no way to say so
    kCount
};

// The statuses the broker answers with, in the order of Counters::answers.
inline constexpr protocol::Status kAnsweredStatuses[] = {protocol::Status::ok,
                                                         protocol::Status::bad_request,
                                                         protocol::Status::too_large,
                                                         protocol::Status::queue_full,
                                                         protocol::Status::retries_exhausted,
                                                         protocol::Status::unavailable,
                                                         protocol::Status::deadline_exceeded};

std::string_view name(Malformed kind) noexcept;
std::string_view name(Drop reason) noexcept;

struct Counters {
    std::uint64_t requests = 0;  // well-formed, from clients, MMI included; refused ones too
    std::uint64_t dispatches = 0;
    std::uint64_t requeued = 0;  // handed back to a queue after their worker died
    // Queued requests answered 429 to make room, in a full queue, for a key under its share.
    std::uint64_t pushed_out = 0;
    std::uint64_t workers_registered = 0;
    std::uint64_t workers_expired = 0;
    std::uint64_t workers_removed = 0;   // for any reason: expiry, DISCONNECT, protocol error
    std::uint64_t orphans_released = 0;  // held past deadline + --orphan-after-ms, then let go
    std::array<std::uint64_t, static_cast<std::size_t>(Malformed::kCount)> malformed{};
    std::array<std::uint64_t, static_cast<std::size_t>(Drop::kCount)> drops{};
    std::array<std::uint64_t, 8> answers{};  // by status, see answer_index()

    std::uint64_t& operator[](Malformed kind) noexcept {
        return malformed[static_cast<std::size_t>(kind)];
    }
    std::uint64_t& operator[](Drop reason) noexcept {
        return drops[static_cast<std::size_t>(reason)];
    }
    std::uint64_t operator[](Malformed kind) const noexcept {
        return malformed[static_cast<std::size_t>(kind)];
    }
    std::uint64_t operator[](Drop reason) const noexcept {
        return drops[static_cast<std::size_t>(reason)];
    }
    std::uint64_t& answered(protocol::Status status) noexcept {
        return answers[answer_index(status)];
    }
    std::uint64_t answered(protocol::Status status) const noexcept {
        return answers[answer_index(status)];
    }
    std::uint64_t malformed_total() const noexcept;
    std::uint64_t drops_total() const noexcept;

    static std::size_t answer_index(protocol::Status status) noexcept;
};

}  // namespace zbroker::broker
