// BrokerLinks: the sockets of a client's brokers, and which of them are up.
#include "client/broker_links.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <set>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "client/answer_reader.hpp"
#include "shared/protocol.hpp"

namespace zbroker::detail {
namespace {

// ZMTP heartbeats find a broker that is gone without closing its connection (its host died,
// the network parted), with the timing of our own worker heartbeats.
constexpr Millis kPingInterval = protocol::kHeartbeatInterval;
constexpr Millis kPingTimeout = protocol::kHeartbeatInterval * protocol::kHeartbeatLiveness;

// libzmq's default high-water mark, in messages.
constexpr std::size_t kDefaultReceiveQueue = 1000;

}  // namespace

std::vector<std::string> split_endpoints(std::string_view list) {
    std::vector<std::string> endpoints;
    while (true) {
        const std::size_t comma = list.find(',');
        endpoints.emplace_back(list.substr(0, comma));
        if (comma == std::string_view::npos) return endpoints;
        list.remove_prefix(comma + 1);
    }
}

BrokerLinks::BrokerLinks(zmq::context_t& context, std::vector<std::string> endpoints,
                         std::optional<CurveClientKeys> curve, std::size_t window)
    : context_(context), curve_(std::move(curve)), window_(window), watched_(endpoints.size() > 1) {
    if (endpoints.empty()) throw std::invalid_argument("no broker endpoint given");
    std::set<std::string_view> seen;
    for (const std::string& endpoint : endpoints) {
        if (endpoint.empty()) throw std::invalid_argument("an empty broker endpoint");
        if (!seen.insert(endpoint).second)
            throw std::invalid_argument("broker endpoint " + endpoint + " is listed twice");
    }
    links_.reserve(endpoints.size());
    for (std::string& endpoint : endpoints) {
        Link& link = links_.emplace_back();
        link.endpoint = std::move(endpoint);
        open(link);
    }
}

BrokerLinks::~BrokerLinks() = default;

void BrokerLinks::open(Link& link) {
    link.monitor.reset();  // before the socket it watches
    link.socket = zmq::socket_t(context_, zmq::socket_type::dealer);
    // Unsent or unanswered requests die with the socket: a closed client never blocks exit.
    link.socket.set(zmq::sockopt::linger, 0);
    if (window_ > 0) {
        // The window bounds what we send, so a high-water mark could only turn a send inside
        // it into a spurious would-block. What we receive the broker decides: an honest one
        // sends one answer per request in flight, so a window's worth (and libzmq's default
        // above it) is never reached; a hostile one that floods then waits, at its end, instead
        // of filling our memory.
        link.socket.set(zmq::sockopt::sndhwm, 0);
        link.socket.set(zmq::sockopt::rcvhwm, static_cast<int>(std::min<std::size_t>(
                                                  window_ + kDefaultReceiveQueue, INT_MAX)));
    }
    if (curve_) apply_curve_client(link.socket, *curve_);
    link.up = !watched();
    if (watched()) {
        enable_heartbeats(link.socket, kPingInterval, kPingTimeout);
        link.monitor = std::make_unique<ConnectionMonitor>(context_, link.socket);
    }
    link.socket.connect(link.endpoint);
}

std::string BrokerLinks::describe() const {
    std::string text;
    for (const Link& link : links_) {
        if (!text.empty()) text += ',';
        text += link.endpoint;
    }
    return text;
}

std::optional<std::size_t> BrokerLinks::pick() {
    for (std::size_t tried = 0; tried < links_.size(); ++tried) {
        const std::size_t index = next_pick_;
        next_pick_ = (next_pick_ + 1) % links_.size();
        if (links_[index].up) return index;
    }
    return std::nullopt;
}

std::size_t BrokerLinks::up_count() const noexcept {
    return static_cast<std::size_t>(
        std::count_if(links_.begin(), links_.end(), [](const Link& link) { return link.up; }));
}

void BrokerLinks::flush() {
    for (Link& link : links_) {
        if (link.pending.empty()) continue;
        outgoing_.clear();
        link.pending.take(outgoing_);
        // An unbounded DEALER queues whatever it is given while it connects, so this cannot
        // would-block; were it ever to, the requests complete as no_reply at their deadline.
        if (send_frames(link.socket, outgoing_, zmq::send_flags::dontwait) != SendResult::sent)
            spdlog::warn("could not queue requests to {}: they get no answer", link.endpoint);
    }
}

std::optional<std::size_t> BrokerLinks::receive(Frames& message) {
    if (!leftovers_.empty()) {
        auto [index, kept] = std::move(leftovers_.front());
        leftovers_.pop_front();
        message = std::move(kept);
        return index;
    }
    for (std::size_t tried = 0; tried < links_.size(); ++tried) {
        const std::size_t index = next_read_;
        next_read_ = (next_read_ + 1) % links_.size();
        try {
            if (recv_frames(links_[index].socket, message, zmq::recv_flags::dontwait)) return index;
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;
        }
    }
    return std::nullopt;
}

void BrokerLinks::wait(Millis timeout) {
    items_.clear();
    for (Link& link : links_) {
        items_.push_back({link.socket.handle(), 0, ZMQ_POLLIN, 0});
        if (link.monitor) items_.push_back({link.monitor->socket().handle(), 0, ZMQ_POLLIN, 0});
    }
    try {
        zmq::poll(items_, timeout);
    } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;  // a signal handler ran: the caller looks again
    }
}

bool BrokerLinks::handle_events(std::vector<std::size_t>& went_down) {
    bool came_up = false;
    for (std::size_t index = 0; index < links_.size(); ++index) {
        Link& link = links_[index];
        if (!link.monitor) continue;
        while (const auto event = link.monitor->next()) {
            if (*event == ConnectionMonitor::Event::up) {
                spdlog::info("broker {} is up", link.endpoint);
                link.up = true;
                came_up = true;
                continue;
            }
            spdlog::warn("lost the connection to broker {}: its requests go to another",
                         link.endpoint);
            // What the broker sent before it closed (a drained broker's last answers) may still
            // wait in the old socket: kept, or their requests would be sent again and run twice.
            Frames message;
            while (recv_frames(link.socket, message, zmq::recv_flags::dontwait))
                leftovers_.emplace_back(index, std::move(message));
            // Requests still queued in the old socket, or written for it and not yet flushed,
            // would reach the broker's successor as well as the broker they are sent to now
            // (the ResendBook has them all).
            link.pending.clear();
            open(link);
            went_down.push_back(index);
            break;  // the old monitor is gone with its events
        }
    }
    return came_up;
}

void BrokerLinks::draining(std::size_t index) {
    Link& link = links_[index];
    if (!watched() || !link.up) return;
    spdlog::info("broker {} is draining: sending nothing more there until it is back",
                 link.endpoint);
    link.up = false;
}

void BrokerLinks::reopen(std::size_t index) {
    open(links_[index]);
}

ResendBook::Entry* ResendBook::find(std::uint64_t id) {
    const auto it = entries_.find(id);
    return it == entries_.end() ? nullptr : &it->second;
}

std::vector<std::uint64_t> ResendBook::on_link(std::size_t link) const {
    std::vector<std::uint64_t> ids;
    for (const auto& [id, entry] : entries_) {
        if (entry.link == link) ids.push_back(id);
    }
    std::sort(ids.begin(), ids.end(), [this](std::uint64_t a, std::uint64_t b) {
        return entries_.at(a).order < entries_.at(b).order;  // the oldest request first
    });
    return ids;
}

bool ResendBook::write(BrokerLinks::Link& link, std::uint64_t id, const Entry& entry,
                       TimePoint now) {
    Millis left{};  // none
    if (entry.deadline_at != TimePoint::max()) {
        left = std::chrono::ceil<Millis>(entry.deadline_at - now);
        if (left.count() <= 0) return false;
    }
    const RequestIdBytes id_bytes = encode_request_id(id);
    link.pending.request(
        {id_bytes.data(), id_bytes.size()}, entry.service,
        request_options(left, entry.priority, entry.fairness_key, entry.idempotency_key),
        entry.body);
    return true;
}

}  // namespace zbroker::detail
