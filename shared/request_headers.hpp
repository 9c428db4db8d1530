// The ZBC01 headers frame: a msgpack map of request options, read without decoding the body.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace zbroker {

struct RequestHeaders {
    // Relative deadline: the broker answers 504 (or 503) once it has passed.
    std::optional<std::chrono::milliseconds> deadline;
};

// Headers larger than this are refused as malformed: they are envelope, not payload.
inline constexpr std::size_t kMaxHeadersSize = 4096;

// Parses a headers frame. An empty frame means no headers. Unknown keys are ignored.
// Returns nullopt, with the reason in `error`, when the frame is not a msgpack map or
// `deadline_ms` is not a non-negative integer.
std::optional<RequestHeaders> parse_request_headers(std::string_view bytes, std::string* error);

std::string encode_request_headers(const RequestHeaders& headers);

}  // namespace zbroker
