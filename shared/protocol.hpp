// Wire constants of 7/MDP v0.1, 8/MMI and our ZBC01 client extension: the one place they live.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace zbroker::protocol {

// Protocol header frames (the frame after the empty delimiter).
inline constexpr std::string_view kMdpClient = "MDPC01";  // 7/MDP client
inline constexpr std::string_view kMdpWorker = "MDPW01";  // 7/MDP worker
inline constexpr std::string_view kZbcClient = "ZBC01";   // our client extension

// 7/MDP worker commands: one byte frame after the MDPW01 header.
enum class WorkerCommand : std::uint8_t {
    ready = 0x01,
    request = 0x02,
    reply = 0x03,
    heartbeat = 0x04,
    disconnect = 0x05,
};
std::string_view command_name(WorkerCommand command) noexcept;

// 8/MMI: services under this prefix are answered by the broker itself.
inline constexpr std::string_view kMmiPrefix = "mmi.";
inline constexpr std::string_view kMmiService = "mmi.service";
inline constexpr std::string_view kMmiServices = "mmi.services";  // extension: list them
inline constexpr std::string_view kMmiStats = "mmi.stats";        // extension: counters
inline constexpr std::string_view kMmiDrain = "mmi.drain";        // extension: start draining
// mmi.services and mmi.stats list at most this many services per answer, in name order; a
// request whose body names a service gets those after it (a page shorter than this is the last).
inline constexpr std::size_t kMmiPageServices = 256;
inline constexpr std::string_view kMmiFound = "200";
inline constexpr std::string_view kMmiNotFound = "404";
inline constexpr std::string_view kMmiNotImplemented = "501";
// Extension: with CURVE on, mmi.stats and mmi.drain answer this to a peer without the admin role.
inline constexpr std::string_view kMmiForbidden = "403";

inline bool is_mmi(std::string_view service) noexcept {
    return service.starts_with(kMmiPrefix);
}

// ZBC01 status codes, sent as three ASCII digits. `no_reply` never crosses the wire: it is
// what a client library reports when nothing came back before its own timeout.
enum class Status : std::uint16_t {
    no_reply = 0,
    ok = 200,
    bad_request = 400,
    too_large = 413,
    queue_full = 429,
    retries_exhausted = 500,
    unavailable = 503,
    deadline_exceeded = 504,
};
std::string_view status_text(Status status) noexcept;    // "200"
std::string_view status_reason(Status status) noexcept;  // "ok"
std::optional<Status> parse_status(std::string_view text) noexcept;

// ZBC01 request headers (a msgpack map); unknown keys are ignored.
inline constexpr std::string_view kHeaderDeadlineMs = "deadline_ms";
inline constexpr std::string_view kHeaderPriority = "priority";
inline constexpr std::string_view kHeaderFairnessKey = "fairness_key";
inline constexpr std::string_view kHeaderIdempotencyKey = "idempotency_key";
// Request priorities run 0 (the default, lowest) to kMaxPriority; higher goes first. Another
// value is refused (400).
inline constexpr std::uint8_t kMaxPriority = 9;
// A fairness key groups requests that share a service fairly (default: the connection); at
// most this many bytes, and never empty.
inline constexpr std::size_t kMaxFairnessKeySize = 255;
// An idempotency key names a request across its resends (through any broker), so that a worker
// can skip one it has just run. The broker passes it on and never reads it.
inline constexpr std::size_t kMaxIdempotencyKeySize = 255;
inline constexpr std::size_t kMaxRequestIdSize = 255;
// A longer service name is refused (400; a worker's READY: DISCONNECT): every name costs the
// broker a record and, with --metrics, a label.
inline constexpr std::size_t kMaxServiceNameSize = 255;

// The body of a 503 a draining broker answers a new request with: a client that knows other
// brokers sends the request to one of them instead.
inline constexpr std::string_view kDrainingBody = "draining";

// Defaults shared by broker, worker and client.
inline constexpr std::chrono::milliseconds kHeartbeatInterval{2500};
// The deadline of a request that names none: the broker's --default-deadline-ms, and what the
// client libraries send unless told otherwise. Bounded, so that a request for a service no
// worker ever serves is answered (503), not held for ever.
inline constexpr std::chrono::milliseconds kDefaultDeadline{60'000};
inline constexpr int kHeartbeatLiveness = 3;
inline constexpr std::string_view kDefaultBrokerBind = "tcp://*:5555";
inline constexpr std::string_view kDefaultBrokerConnect = "tcp://localhost:5555";

}  // namespace zbroker::protocol
