// Synchronous ZB/1 client: one request at a time, Lazy Pirate retries on silence.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// Relative: installed under include/zbroker/, these headers find each other by path alone.
#include "../shared/curve_keys.hpp"
#include "../shared/frames.hpp"
#include "../shared/protocol.hpp"
#include "answer_reader.hpp"

namespace zbroker {
namespace detail {
class BrokerLinks;
}

// What came back for one request: a broker status and, for 200, the worker's reply frames.
struct Response {
    protocol::Status status = protocol::Status::no_reply;
    Frames body;

    std::string_view body_view() const;  // the first body frame, or empty
    bool ok() const { return status == protocol::Status::ok; }
};

// The broker answers 503/504 exactly at the deadline_ms it was sent, which is `timeout`; so
// an attempt listens a little past it (a quarter of it, 50 to 500 ms) for that answer.
struct CallOptions {
    std::chrono::milliseconds timeout{2500};  // per attempt; also sent as deadline_ms
    int retries = 2;                          // extra attempts after an attempt got no reply
    std::chrono::milliseconds backoff{100};   // before the first retry; doubles, capped at 5 s
    // 0 (lowest) to 9: higher goes first in the broker's queue (--queue-policy priority).
    std::optional<std::uint8_t> priority{};
    // The tenant this request shares its service with others as; empty: this connection.
    std::string fairness_key{};
    // Names the request across its attempts (through any broker), so that a worker that has
    // just run it can answer from its recent replies instead of running it again.
    std::string idempotency_key{};
};

// Lazy Pirate (zguide ch. 4): when an attempt gets no reply in time, the socket is closed
// with linger 0 and a new one connected, so nothing of the dead attempt lingers, and the
// request is sent again under a new id. Broker statuses (503, 504, 429, 500, ...) are
// answers, not silence: they are returned as they are, never retried and never thrown.
//
// With several brokers (Freelance, zguide ch. 4) each call goes to the next one that is up,
// and a retry to the one after. When the broker holding the request drops its connection or
// answers 503 "draining", the request goes at once to another under the same id, without
// waiting for the timeout and without using up a retry: at least once, as after a worker's
// death.
// Not thread-safe: one Client per thread.
class Client {
  public:
    // Throws zmq::error_t when an endpoint is not a valid ZeroMQ endpoint, std::invalid_argument
    // when the list is empty or repeats one, or a `curve` key is not 40-character Z85.
    // `endpoint` may list several brokers, separated by commas. With `curve`, talks CURVE.
    explicit Client(std::string endpoint, std::optional<CurveClientKeys> curve = std::nullopt);
    explicit Client(std::vector<std::string> endpoints,
                    std::optional<CurveClientKeys> curve = std::nullopt);
    ~Client();
    Client(Client&&) noexcept;
    Client& operator=(Client&&) noexcept;

    // Throws std::invalid_argument, before sending anything, for a service name over 255 bytes
    // or a priority, fairness key or idempotency key out of bounds.
    Response call(std::string_view service, std::string_view body, const CallOptions& = {});
    Response call(std::string_view service, Frames body, const CallOptions& = {});

    // The brokers, separated by commas.
    std::string endpoint() const;

  private:
    // Sends one attempt and waits for its answer; no_reply when none came in time.
    Response attempt(std::uint64_t id, std::string_view service, Frames& body,
                     const CallOptions& options);
    // Reads the message just received from link `from`: the answer to request `id` if it is
    // there and came from `link`, the broker that holds the request. Sets `redirected` when
    // that broker answered "draining".
    std::optional<Response> answer_in_message(std::size_t from, std::size_t link, std::uint64_t id,
                                              bool& redirected);
    // Writes the request to a broker that is up, waiting for one until `give_up`; the link, or
    // nullopt when none came up in time.
    std::optional<std::size_t> send_to_one(std::uint64_t id, std::string_view service, Frames& body,
                                           const CallOptions& options,
                                           std::chrono::steady_clock::time_point give_up);

    std::unique_ptr<zmq::context_t> context_;  // one per client: nothing shared across threads
    std::unique_ptr<detail::BrokerLinks> links_;
    std::vector<std::size_t> went_down_;  // reused
    detail::RequestIds request_ids_;
    detail::AnswerReader answers_;
};

}  // namespace zbroker
