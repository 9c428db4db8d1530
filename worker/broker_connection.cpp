// The worker side of ZB/1 on one DEALER: READY, HEARTBEAT, REPLY, CREDIT, DISCONNECT, liveness.
#include "worker/broker_connection.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>

#include <spdlog/spdlog.h>

namespace zbroker::detail {

BrokerConnection::BrokerConnection(std::string service, std::string endpoint, std::uint32_t credit,
                                   ConnectionTiming timing)
    : service_(std::move(service)),
      endpoint_(std::move(endpoint)),
      credit_(credit),
      timing_(timing) {}

void BrokerConnection::connect(zmq::context_t& context, std::uint64_t id, TimePoint now,
                               const std::optional<CurveClientKeys>& curve) {
    close_socket();
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    if (curve) apply_curve_client(socket, *curve);
    // Watched before it connects, so that no event of its link is missed.
    auto monitor = std::make_unique<ConnectionMonitor>(context, socket);
    socket.connect(endpoint_);
    socket_ = std::move(socket);  // the handle the monitor watches moves with it
    monitor_ = std::move(monitor);
    link_up_ = false;
    id_ = id;
    heartbeat_at_ = now + timing_.heartbeat_interval;
    stop_acknowledged_ = false;
    credit_in_force_ = CreditInForce(credit_);
    held_jobs_ = 0;
    refusals_in_window_ = 0;
    pending_.clear();
    heard_from_broker(now);
    pending_.ready(service_, credit_);
    send_now();  // a fresh socket queues it until the TCP connection is up
}

void BrokerConnection::close_socket() noexcept {
    monitor_.reset();
    socket_.reset();
}

bool BrokerConnection::link_lost() {
    if (!monitor_) return false;
    try {
        while (const std::optional<ConnectionMonitor::Event> event = monitor_->next()) {
            if (*event == ConnectionMonitor::Event::up) {
                link_up_ = true;
            } else if (link_up_) {
                return true;
            }
        }
    } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;  // a signal (SIGINT for stop()): read the rest next round
    }
    return false;
}

void BrokerConnection::drop(TimePoint now) {
    close_socket();
    pending_.clear();
    reconnect_at_ = now + timing_.reconnect_delay;
}

void BrokerConnection::disconnect(Millis linger) {
    if (!socket_) return;
    pending_.command(wire::Command::disconnect);
    if (!send_now())
        spdlog::warn("could not send DISCONNECT for '{}' to {}: the queue to it is full", service_,
                     endpoint_);
    socket_->set(zmq::sockopt::linger, static_cast<int>(linger.count()));
    close_socket();
}

void BrokerConnection::quit(Millis linger, TimePoint now) {
    disconnect(linger);
    reconnect_at_ = now + timing_.reconnect_delay;
}

bool BrokerConnection::refused_job(TimePoint now) noexcept {
    // A fixed window, not a sliding one: enough to tell a broker that keeps at it from the few
    // a correct one may send (after releasing an orphan, see docs/protocol.md).
    if (now >= refusal_window_start_ + kRefusalWindow) {
        refusal_window_start_ = now;
        refusals_in_window_ = 0;
    }
    return ++refusals_in_window_ > kRefusalsTolerated;
}

void BrokerConnection::heard_from_broker(TimePoint now) noexcept {
    expires_at_ = now + timing_.heartbeat_interval * timing_.liveness;
}

void BrokerConnection::send_heartbeat_if_due(TimePoint now) {
    if (!connected() || now < heartbeat_at_) return;
    pending_.command(wire::Command::heartbeat);
    if (!send_now())
        spdlog::debug("HEARTBEAT for '{}' not queued: the queue to {} is full", service_,
                      endpoint_);
    // From now, not from the missed due time: after a stall, one heartbeat is enough.
    heartbeat_at_ = now + timing_.heartbeat_interval;
}

TimePoint BrokerConnection::next_timer() const noexcept {
    if (!connected()) return reconnect_at_;
    return std::min(heartbeat_at_, expires_at_);
}

void BrokerConnection::change_credit(std::uint32_t credit) {
    // Several brokers split a service's credit: a change of the whole may leave this share as
    // it was.
    if (credit == credit_) return;
    credit_ = credit;
    if (!connected()) return;
    pending_.credit(credit);
    credit_in_force_.asked(credit);
}

void BrokerConnection::stop_taking_work() {
    if (!connected()) return;
    stop_acknowledged_ = false;  // only an echo of this CREDIT 0 counts
    pending_.credit(0);
    credit_in_force_.asked(0);
    if (!send_now())
        spdlog::warn("could not tell {} to stop sending work on '{}': the queue to it is full",
                     endpoint_, service_);
}

void BrokerConnection::reply(std::string_view token, Frames& body) {
    pending_.reply(token, {body, 0, body.size()});
    if (pending_.size() < wire::kBatchBytes || !connected()) return;
    const std::size_t records = pending_.records();
    if (!send_now()) dropped_early_ += records;
}

bool BrokerConnection::flush(std::size_t& dropped) {
    dropped = std::exchange(dropped_early_, 0);
    if (pending_.empty() || !connected()) return dropped == 0;
    const std::size_t records = pending_.records();
    if (send_now()) return dropped == 0;
    dropped += records;
    return false;
}

bool BrokerConnection::send_now() {
    outgoing_.clear();
    pending_.take(outgoing_);
    // Never block the I/O thread: heartbeats of the other services depend on it.
    for (int attempt = 0; attempt < 3; ++attempt) {
        try {
            return send_frames(*socket_, outgoing_, zmq::send_flags::dontwait) == SendResult::sent;
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;  // a signal (SIGINT for stop()) is not a failure
        }
    }
    return false;
}

}  // namespace zbroker::detail
