// Pipelined ZB/1 client: a window of requests in flight, replies matched by request id.
#pragma once

#include <chrono>
#include <cstddef>
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
#include "../shared/wire.hpp"
#include "answer_reader.hpp"

namespace zbroker {

// What a request may carry besides its service and body.
struct SendOptions {
    // Sent as deadline_ms; 0 means none, and then only cancel() frees its place in the window
    // if no answer ever comes.
    std::chrono::milliseconds deadline{};
    // 0 (lowest) to 9: higher goes first in the broker's queue (--queue-policy priority).
    std::optional<std::uint8_t> priority{};
    // The tenant this request shares its service with others as; empty: this connection.
    std::string_view fairness_key{};
};

// One answered request: the id send() returned, the broker's status, the reply frames.
struct Completion {
    std::uint64_t id = 0;
    protocol::Status status = protocol::Status::no_reply;
    Frames body;
};

namespace detail {

// The ids in flight, as an open-addressing set at most half full, so lookups are a probe or
// two.
class RequestIdSet {
  public:
    explicit RequestIdSet(std::size_t max_size);
    void insert(std::uint64_t id);
    bool erase(std::uint64_t id);  // false when `id` was not in the set
    bool contains(std::uint64_t id) const;
    std::size_t size() const { return size_; }

  private:
    static constexpr std::uint64_t kEmpty = 0;  // never an id: ids start at 1
    std::size_t home_of(std::uint64_t id) const;
    std::size_t slot_of(std::uint64_t id) const;

    std::vector<std::uint64_t> slots_;
    std::size_t mask_ = 0;
    unsigned shift_ = 0;  // 64 - log2(slots)
    std::size_t size_ = 0;
};

}  // namespace detail

// Keeps up to `window` requests in flight on one DEALER socket and hands back replies in
// the order they arrive, which need not be the order sent. Nothing is retried: a request
// that should not wait forever carries a deadline, and the broker answers 504 or 503 at it.
// If that answer is lost too (the broker restarted, or dropped it), the request completes
// as no_reply a grace after its deadline, and its place in the window is free again.
// Not thread-safe: one AsyncClient per thread.
class AsyncClient {
  public:
    // Throws std::invalid_argument when window is 0 or a `curve` key is not 40-character Z85,
    // zmq::error_t on a bad endpoint. With `curve`, talks CURVE to the broker.
    AsyncClient(std::string endpoint, std::size_t window,
                std::optional<CurveClientKeys> curve = std::nullopt);
    // The same on a context of the caller's, which must outlive the client: many clients in
    // one process then share its I/O thread instead of starting one each.
    AsyncClient(zmq::context_t& context, std::string endpoint, std::size_t window,
                std::optional<CurveClientKeys> curve = std::nullopt);
    ~AsyncClient();
    AsyncClient(AsyncClient&&) noexcept;
    AsyncClient& operator=(AsyncClient&&) noexcept;

    // Sends a request at once; its id, or nullopt when the window is full (receive() first).
    // `deadline` is sent as deadline_ms; 0 means none, and then only cancel() frees its place
    // if no answer ever comes.
    std::optional<std::uint64_t> send(std::string_view service, std::string_view body,
                                      std::chrono::milliseconds deadline = {}) {
        return send(service, body, SendOptions{deadline, std::nullopt, {}});
    }
    std::optional<std::uint64_t> send(std::string_view service, std::string_view body,
                                      const SendOptions& options);

    // As send(), but holds the request until the next flush() or receive(): the requests
    // queued in between travel as one message, which costs the broker and this client one
    // message instead of one each. The way to pipeline: queue what the window allows, then
    // receive().
    std::optional<std::uint64_t> queue(std::string_view service, std::string_view body,
                                       std::chrono::milliseconds deadline = {}) {
        return queue(service, body, SendOptions{deadline, std::nullopt, {}});
    }
    std::optional<std::uint64_t> queue(std::string_view service, std::string_view body,
                                       const SendOptions& options);

    // Sends the queued requests now. receive() does it first thing.
    void flush();

    // The next reply to a request in flight, or a no_reply completion for one whose deadline
    // and grace passed without an answer; nullopt when neither came within `timeout`.
    std::optional<Completion> receive(std::chrono::milliseconds timeout);

    // Stops waiting for a request: its place in the window is free, a later answer is ignored.
    // False when `id` is not in flight.
    bool cancel(std::uint64_t id) { return in_flight_.erase(id); }

    std::size_t in_flight() const { return in_flight_.size(); }
    std::size_t window() const { return window_; }

    // To poll many clients from one thread: when it is readable, receive(0ms) has a reply.
    zmq::socket_ref socket() noexcept { return socket_; }

  private:
    void open(zmq::context_t& context, const std::optional<CurveClientKeys>& curve);
    // The next answer read that is awaited, or nullopt when none is left in the message.
    std::optional<Completion> next_awaited();
    // A no_reply completion for the first request in flight whose give-up time is past.
    std::optional<Completion> give_up_due(std::chrono::steady_clock::time_point at);

    std::string endpoint_;
    std::size_t window_;
    std::unique_ptr<zmq::context_t> context_;  // its own, unless it was given one
    zmq::socket_t socket_;
    std::uint64_t next_request_id_ = 1;
    detail::RequestIdSet in_flight_;
    // Reused for every message, so the hot path allocates nothing for small bodies.
    wire::Writer pending_;  // requests queued since the last flush
    Frames request_;
    detail::AnswerReader answers_;
    // When to stop waiting for requests sent with a deadline, earliest first. Entries of
    // answered requests stay until due, or until there are many (see give_up_due()).
    std::vector<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> give_up_;
};

}  // namespace zbroker
