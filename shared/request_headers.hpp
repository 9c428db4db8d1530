// The ZBC01 headers frame: a msgpack map of request options, read without decoding the body.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace zbroker {

struct RequestHeaders {
    // Relative deadline: the broker answers 504 (or 503) once it has passed.
    std::optional<std::chrono::milliseconds> deadline;
    std::optional<std::uint8_t> priority;  // 0 to protocol::kMaxPriority; higher goes first
    std::string fairness_key;              // empty: the connection is the key
    std::string idempotency_key;           // empty: none; passed on to the worker
};

// Headers larger than this are refused as malformed: they are envelope, not payload.
inline constexpr std::size_t kMaxHeadersSize = 4096;

// Parses a headers frame. An empty frame means no headers. Unknown keys are ignored.
// Returns nullopt, with the reason in `error`, when the frame is not a msgpack map or a known
// key has a wrong value: `deadline_ms` not a non-negative integer, `priority` not 0 to 9,
// `fairness_key` or `idempotency_key` not a string of 1 to 255 bytes.
std::optional<RequestHeaders> parse_request_headers(std::string_view bytes, std::string* error);

std::string encode_request_headers(const RequestHeaders& headers);

}  // namespace zbroker
