// A client's brokers: one DEALER each. With several, each is watched (a ConnectionMonitor and
// ZMTP heartbeats), requests go round robin to those that are up, and the client sends again,
// through another, what one that went down or began draining held (zguide ch. 4, Freelance).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "shared/clock.hpp"
#include "shared/connection_monitor.hpp"
#include "shared/curve_keys.hpp"
#include "shared/frames.hpp"
#include "shared/wire.hpp"

namespace zbroker::detail {

// Splits "tcp://a:5555,tcp://b:5555" into endpoints; one without a comma is a list of one.
std::vector<std::string> split_endpoints(std::string_view list);

class BrokerLinks {
  public:
    struct Link {
        std::string endpoint;
        zmq::socket_t socket;
        std::unique_ptr<ConnectionMonitor> monitor;  // with several brokers only
        // Connected (handshake done), and neither disconnected nor draining since. With one
        // broker always true: there is nowhere else to send.
        bool up = false;
        wire::Writer pending;  // requests written since the last flush
    };

    // `window`: how many requests the client keeps in flight (AsyncClient), which sizes the
    // queues; 0 (Client, one at a time) keeps libzmq's. Throws std::invalid_argument for an
    // empty list, an empty or repeated endpoint, zmq::error_t for a malformed one.
    BrokerLinks(zmq::context_t& context, std::vector<std::string> endpoints,
                std::optional<CurveClientKeys> curve, std::size_t window);
    ~BrokerLinks();

    std::size_t size() const noexcept { return links_.size(); }
    // Several brokers: links are watched and requests may move between them.
    bool watched() const noexcept { return watched_; }
    Link& operator[](std::size_t index) noexcept { return links_[index]; }
    std::string describe() const;  // the endpoints, for logs

    // The link for the next request: round robin over those up; nullopt when none is.
    std::optional<std::size_t> pick();
    bool any_up() const noexcept { return up_count() > 0; }
    std::size_t up_count() const noexcept;

    // Sends what each link has pending. A link that cannot take it (would block) drops it and
    // returns false for it; the requests then complete at their deadline.
    void flush();

    // Reads one message, from the link after the last one read (so none starves), into
    // `message`; the link's index, or nullopt when nothing waits anywhere. What a lost link's
    // old socket still held comes first.
    std::optional<std::size_t> receive(Frames& message);
    // Messages of lost links not read yet: their requests may not be sent elsewhere before.
    bool has_leftovers() const noexcept { return !leftovers_.empty(); }
    // Waits until a link has a message or an event, or `timeout` passes.
    void wait(Millis timeout);

    // Handles the monitors' events. A link that went down gets a fresh socket (nothing queued
    // for the dead broker is sent to its successor) and its index is appended to `went_down`;
    // true when some link came up.
    bool handle_events(std::vector<std::size_t>& went_down);
    // The broker answered "draining": no new requests go there until it has gone and come back.
    void draining(std::size_t index);
    // A fresh socket to the same broker (Lazy Pirate): nothing of the old one lingers.
    void reopen(std::size_t index);

  private:
    void open(Link& link);

    zmq::context_t& context_;
    std::optional<CurveClientKeys> curve_;
    std::size_t window_;
    bool watched_;  // known before the links are opened
    std::vector<Link> links_;
    // Messages read from a link's socket as it was replaced, handed out by receive() first.
    std::deque<std::pair<std::size_t, Frames>> leftovers_;
    std::size_t next_pick_ = 0;
    std::size_t next_read_ = 0;
    Frames outgoing_;
    std::vector<zmq::pollitem_t> items_;
};

// What AsyncClient keeps of each request in flight when it has several brokers, to send it
// again through another: a copy of the request and the link it went to.
class ResendBook {
  public:
    struct Entry {
        std::size_t link = 0;
        std::string service;
        std::string body;
        std::optional<std::uint8_t> priority;
        std::string fairness_key;
        std::string idempotency_key;
        TimePoint deadline_at = TimePoint::max();  // none
        std::uint64_t order = 0;                   // set by remember(): older is smaller
    };
    static constexpr std::size_t kParked = static_cast<std::size_t>(-1);  // link: none was up

    Entry& remember(std::uint64_t id, Entry entry) {
        entry.order = next_order_++;
        return entries_[id] = std::move(entry);
    }
    void forget(std::uint64_t id) { entries_.erase(id); }
    Entry* find(std::uint64_t id);
    // The ids on `link`, oldest first.
    std::vector<std::uint64_t> on_link(std::size_t link) const;

    // Writes the REQUEST of `id` to `link`'s pending message, with what is left of its
    // deadline; false (and nothing written) when its deadline has passed.
    static bool write(BrokerLinks::Link& link, std::uint64_t id, const Entry& entry, TimePoint now);

  private:
    std::unordered_map<std::uint64_t, Entry> entries_;
    std::uint64_t next_order_ = 0;  // ids say nothing of order (RequestIds)
};

}  // namespace zbroker::detail
