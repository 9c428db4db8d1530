// Synchronous ZB/1 client: one request at a time, Lazy Pirate retries on silence.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

// Relative: installed under include/zbroker/, these headers find each other by path alone.
#include "../shared/curve_keys.hpp"
#include "../shared/frames.hpp"
#include "../shared/protocol.hpp"
#include "answer_reader.hpp"

namespace zbroker {

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
};

// Lazy Pirate (zguide ch. 4): when an attempt gets no reply in time, the socket is closed
// with linger 0 and a new one connected, so nothing of the dead attempt lingers, and the
// request is sent again under a new id. Broker statuses (503, 504, 429, 500, ...) are
// answers, not silence: they are returned as they are, never retried and never thrown.
// Not thread-safe: one Client per thread.
class Client {
  public:
    // Throws zmq::error_t when `endpoint` is not a valid ZeroMQ endpoint, std::invalid_argument
    // when a `curve` key is not 40-character Z85. With `curve`, talks CURVE to the broker.
    explicit Client(std::string endpoint, std::optional<CurveClientKeys> curve = std::nullopt);
    ~Client();
    Client(Client&&) noexcept;
    Client& operator=(Client&&) noexcept;

    Response call(std::string_view service, std::string_view body, const CallOptions& = {});
    Response call(std::string_view service, Frames body, const CallOptions& = {});

    const std::string& endpoint() const { return endpoint_; }

  private:
    void reconnect();
    // Sends one attempt and waits for its answer; no_reply when none came in time.
    Response attempt(std::string_view service, Frames& body, const CallOptions& options);

    std::string endpoint_;
    std::optional<CurveClientKeys> curve_;     // applied to every socket reconnect() opens
    std::unique_ptr<zmq::context_t> context_;  // one per client: nothing shared across threads
    zmq::socket_t socket_;
    std::uint64_t next_request_id_ = 1;
    wire::Writer request_writer_;
    Frames request_;  // reused between attempts
    detail::AnswerReader answers_;
};

}  // namespace zbroker
