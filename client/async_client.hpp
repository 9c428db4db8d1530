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
    // Sent as deadline_ms: by then the broker answers, 504 or 503 if nothing else, and a
    // grace later the request completes as no_reply if no answer came. 0 sends none: then
    // only the broker's --default-deadline-ms bounds it, and only cancel() frees its place in
    // the window if no answer ever comes.
    std::chrono::milliseconds deadline = protocol::kDefaultDeadline;
    // 0 (lowest) to 9: higher goes first in the broker's queue (--queue-policy priority).
    std::optional<std::uint8_t> priority{};
    // The tenant this request shares its service with others as; empty: this connection.
    std::string_view fairness_key{};
    // Names the request across resends (through any broker), so that a worker that has just
    // run it can answer from its recent replies instead of running it again. Empty: none.
    std::string_view idempotency_key{};
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
    static constexpr std::uint64_t kEmpty = 0;  // never an id (RequestIds skips it)
    std::size_t home_of(std::uint64_t id) const;
    std::size_t slot_of(std::uint64_t id) const;

    std::vector<std::uint64_t> slots_;
    std::size_t mask_ = 0;
    unsigned shift_ = 0;  // 64 - log2(slots)
    std::size_t size_ = 0;
};

class BrokerLinks;
class ResendBook;

}  // namespace detail

// Keeps up to `window` requests in flight and hands back replies in the order they arrive,
// which need not be the order sent. A request that should not wait forever carries a deadline,
// and the broker answers 504 or 503 at it. If that answer is lost too (the broker restarted,
// or dropped it), the request completes as no_reply a grace after its deadline, and its place
// in the window is free again.
//
// With several brokers ("tcp://a:5555,tcp://b:5555", or a list), requests go round robin to
// those that are up. One whose connection drops (it died; ZMTP heartbeats find a silent one)
// or that answers 503 "draining" gets nothing more until it is back, and the requests it held
// are sent at once, under the same ids, to another: at least once, since a request its worker
// had already run runs again. Until some broker is up, requests wait in the client.
// Not thread-safe: one AsyncClient per thread.
class AsyncClient {
  public:
    // Throws std::invalid_argument when window is 0, the endpoint list is empty or repeats one,
    // or a `curve` key is not 40-character Z85; zmq::error_t on a bad endpoint. `endpoint` may
    // list several brokers, separated by commas. With `curve`, talks CURVE to the brokers.
    AsyncClient(std::string endpoint, std::size_t window,
                std::optional<CurveClientKeys> curve = std::nullopt);
    AsyncClient(std::vector<std::string> endpoints, std::size_t window,
                std::optional<CurveClientKeys> curve = std::nullopt);
    // The same on a context of the caller's, which must outlive the client: many clients in
    // one process then share its I/O thread instead of starting one each.
    AsyncClient(zmq::context_t& context, std::string endpoint, std::size_t window,
                std::optional<CurveClientKeys> curve = std::nullopt);
    AsyncClient(zmq::context_t& context, std::vector<std::string> endpoints, std::size_t window,
                std::optional<CurveClientKeys> curve = std::nullopt);
    ~AsyncClient();
    AsyncClient(AsyncClient&&) noexcept;
    AsyncClient& operator=(AsyncClient&&) noexcept;

    // Sends a request at once; its id, or nullopt when the window is full (receive() first).
    // `deadline` is sent as deadline_ms (see SendOptions).
    std::optional<std::uint64_t> send(
        std::string_view service, std::string_view body,
        std::chrono::milliseconds deadline = protocol::kDefaultDeadline) {
        return send(service, body, SendOptions{deadline, std::nullopt, {}, {}});
    }
    std::optional<std::uint64_t> send(std::string_view service, std::string_view body,
                                      const SendOptions& options);

    // send() and queue() throw std::invalid_argument, before anything is sent, for a service
    // name over 255 bytes or a priority, fairness key or idempotency key out of bounds.
    // As send(), but holds the request until the next flush() or receive(): the requests
    // queued in between travel as one message, which costs the broker and this client one
    // message instead of one each. The way to pipeline: queue what the window allows, then
    // receive().
    std::optional<std::uint64_t> queue(
        std::string_view service, std::string_view body,
        std::chrono::milliseconds deadline = protocol::kDefaultDeadline) {
        return queue(service, body, SendOptions{deadline, std::nullopt, {}, {}});
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
    bool cancel(std::uint64_t id);

    std::size_t in_flight() const { return in_flight_.size(); }
    std::size_t window() const { return window_; }
    // How many requests were sent again through another broker (several brokers only).
    std::uint64_t resent() const { return resent_; }
    // Brokers connected and not draining, as of the last receive() (one broker: always 1).
    std::size_t brokers_up() const;
    // Requests in flight that wait in this client because no broker is up (several brokers).
    std::size_t waiting_for_a_broker() const;

    // To poll many clients from one thread: when one of these is readable, receive(0ms) has
    // a reply or news of a broker. One socket per broker, and with several a monitor each.
    std::vector<zmq::socket_ref> sockets();
    // Whether one of sockets() has something to read now (ZMQ_EVENTS): an edge-triggered
    // poller that was told to look asks this after sending, which may have read the news.
    bool readable();

  private:
    void open(zmq::context_t& context, std::vector<std::string> endpoints,
              std::optional<CurveClientKeys> curve);
    // The next answer read that is awaited, or nullopt when none is left in the message.
    std::optional<Completion> next_awaited();
    // Whether `id` is in flight at the broker whose message is being read: only that one may
    // answer it.
    bool held_by_sender(std::uint64_t id);
    // A no_reply completion for the first request in flight whose give-up time is past.
    std::optional<Completion> give_up_due(std::chrono::steady_clock::time_point at);
    // Several brokers: sends `id` (remembered) through a broker that is up, or parks it.
    void route(std::uint64_t id, std::chrono::steady_clock::time_point at);
    // Several brokers: notes brokers gone, sends the parked requests to one that came up.
    void handle_broker_events();
    // Sends the requests of brokers gone to others, once every answer those brokers sent
    // before they went has been read: else those requests would run twice.
    void move_requests_of_lost_brokers();
    // Several brokers: `id` is answered, given up on or cancelled.
    void forget_resend(std::uint64_t id);

    std::size_t window_;
    std::unique_ptr<zmq::context_t> context_;  // its own, unless it was given one
    std::unique_ptr<detail::BrokerLinks> links_;
    std::unique_ptr<detail::ResendBook> resends_;  // with several brokers only
    std::vector<std::uint64_t>
        parked_;  // in flight, waiting for a broker to be up: the window at most
    std::vector<std::size_t> went_down_;  // reused
    std::vector<std::size_t> lost_;       // links whose requests must move
    std::uint64_t resent_ = 0;
    std::chrono::steady_clock::time_point next_event_check_{};
    std::size_t answers_from_ = 0;  // the link the message in answers_ came from
    detail::RequestIds request_ids_;
    detail::RequestIdSet in_flight_;
    detail::AnswerReader answers_;
    // When to stop waiting for requests sent with a deadline, earliest first. Entries of
    // answered requests stay until due, or until there are many (see give_up_due()).
    std::vector<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> give_up_;
};

}  // namespace zbroker
