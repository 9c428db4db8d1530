// Poll, read a batch, run due timers; repeat. All policy lives in BrokerCore.
#include "broker_loop.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>

#include <spdlog/spdlog.h>

#include "broker/zap_authenticator.hpp"
#include "shared/curve_keys.hpp"

namespace zbroker::broker {
namespace {

// How long the loop may sleep while a stop request goes unnoticed.
constexpr Millis kStopCheckInterval{100};
constexpr int kBatchSize = 1024;

}  // namespace

SendResult BrokerLoop::SocketOutbox::send(FrameSpan frames) {
    return send_frames(socket_, frames, zmq::send_flags::dontwait);
}

BrokerLoop::BrokerLoop(zmq::context_t& context, BrokerConfig config, const std::string& bind,
                       SocketOptions options)
    : socket_(context, zmq::socket_type::router), outbox_(socket_), core_(config, outbox_, now()) {
    // A reply to a vanished client must fail loudly (EHOSTUNREACH), not vanish silently.
    socket_.set(zmq::sockopt::router_mandatory, 1);
    socket_.set(zmq::sockopt::sndhwm, options.hwm);
    socket_.set(zmq::sockopt::rcvhwm, options.hwm);
    socket_.set(zmq::sockopt::linger, 1000);
    // Bodies up to max_msg_size are read and answered 413 above it; a single frame past twice
    // that is cut by libzmq, which closes the connection rather than buffer it.
    const auto limit = config.max_msg_size > std::numeric_limits<std::int64_t>::max() / 2
                           ? std::int64_t{-1}
                           : static_cast<std::int64_t>(2 * config.max_msg_size + 4096);
    socket_.set(zmq::sockopt::maxmsgsize, limit);
    if (!options.curve_secret_key.empty()) {
        apply_curve_server(socket_, options.curve_secret_key, std::string(kZapDomain));
        curve_ = true;
        // With keys, who is behind a routing id matters: the core must hear of a connection's
        // close before another connection can take its routing id.
        closes_ =
            std::make_unique<ConnectionMonitor>(context, socket_, ConnectionMonitor::kBoundEvents);
    }
    socket_.bind(bind);
}

std::string BrokerLoop::endpoint() const {
    return socket_.get(zmq::sockopt::last_endpoint);
}

void BrokerLoop::read_batch() {
    // One clock read per batch: a batch takes well under a millisecond, the unit of deadlines,
    // and reading the clock per message cost the broker 1% of its time under load.
    const TimePoint arrival = now();
    for (int i = 0; i < kBatchSize; ++i) {
        try {
            if (!recv_frames(socket_, in_, zmq::recv_flags::dontwait)) return;
        } catch (const zmq::error_t& e) {
            if (e.num() == EINTR) return;  // a signal: the loop looks at `stop` next
            throw;
        }
        if (!curve_) {
            core_.on_message(in_, arrival);
            continue;
        }
        const std::optional<std::string> left = check_connection();
        if (const auto peer = peer_of_message()) {
            core_.on_message(in_, arrival, peer->role, peer->key);
        } else if (!warned_no_role_) {
            // Only if libzmq admitted a peer without asking ZAP: fail closed, say so once.
            warned_no_role_ = true;
            spdlog::error("dropping messages from a CURVE peer without a role (no ZAP answer?)");
        }
        // Its connection closed after it sent this: acted on, then that peer is gone.
        if (left) core_.on_peer_gone(*left);
    }
}

void BrokerLoop::read_closes() {
    int fd = -1;
    while (const auto event = closes_->next(&fd)) {
        if (*event == ConnectionMonitor::Event::accepted) {
            connections_.accepted(fd);
        } else if (*event == ConnectionMonitor::Event::down) {
            if (const auto identity = connections_.closed(fd)) core_.on_peer_gone(*identity);
        }
    }
}

std::optional<std::string> BrokerLoop::check_connection() {
    if (in_.size() < 2) return std::nullopt;
    // libzmq attaches the connection's descriptor to each frame the peer sent (the property
    // behind the deprecated ZMQ_SRCFD), not to the routing id frame the ROUTER made.
    const char* fd_text = zmq_msg_gets(in_[1].handle(), "__fd");
    if (fd_text == nullptr) return std::nullopt;  // not a stream transport (inproc)
    const int fd = std::atoi(fd_text);
    const std::string_view identity = view(in_[0]);
    if (!connections_.needs_events(fd, identity)) return std::nullopt;
    read_closes();
    const ConnectionTable::Binding binding = connections_.bind(fd, identity);
    for (const std::string& gone : binding.gone)
        core_.on_peer_gone(gone);
    if (binding.from_closed) return std::string(identity);
    return std::nullopt;
}

std::optional<BrokerLoop::Peer> BrokerLoop::peer_of_message() const {
    // The routing id frame is made by the ROUTER and carries no metadata (libzmq 4.3.4), so ask
    // the first frame the peer sent: libzmq attaches the connection's User-Id to each of those.
    // The ZAP authenticator makes it "ROLE KEY".
    if (in_.size() < 2) return std::nullopt;
    const char* user_id = zmq_msg_gets(in_[1].handle(), "User-Id");
    if (user_id == nullptr) return std::nullopt;
    const std::string_view text(user_id);
    const auto space = text.find(' ');
    const auto role = parse_role(text.substr(0, space));
    if (!role) return std::nullopt;
    return Peer{*role,
                space == std::string_view::npos ? std::string_view{} : text.substr(space + 1)};
}

void BrokerLoop::observe_every(Millis period, Observer observe) {
    observe_period_ = period;
    observe_ = std::move(observe);
}

void BrokerLoop::run(const std::atomic<bool>& stop) {
    // With CURVE the monitor's socket too: a close is acted on when it happens, not at the next
    // message.
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                               {closes_ ? closes_->socket().handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    const int polled = closes_ ? 2 : 1;
    TimePoint next_observation = now();
    while (true) {
        const TimePoint before = now();
        if (observe_ && before >= next_observation) {
            observe_(core_, before);
            next_observation = before + observe_period_;
        }
        if (stop.load(std::memory_order_relaxed) && !core_.draining()) core_.begin_drain(before);
        if (core_.drain_complete(before)) break;

        const auto wait =
            std::clamp(std::chrono::duration_cast<Millis>(core_.next_timer() - before), Millis{0},
                       kStopCheckInterval);
        try {
            zmq::poll(items, polled, wait);
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;  // a signal: loop round to look at `stop`
        }
        if ((items[0].revents & ZMQ_POLLIN) != 0) read_batch();
        const TimePoint after = now();
        if (after >= core_.next_timer()) core_.on_timer(after);
        if (closes_) read_closes();  // nothing goes to a routing id whose connection closed
        core_.flush();               // what the batch and the timers left, a peer at a time
    }
    core_.finish_drain();
    if (observe_) observe_(core_, now());
}

}  // namespace zbroker::broker
