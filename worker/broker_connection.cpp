// The worker side of ZB/1 on one DEALER: READY, HEARTBEAT, REPLY, CREDIT, DISCONNECT, liveness.
#include "worker/broker_connection.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>

#include <spdlog/spdlog.h>

namespace zbroker::detail {

BrokerConnection::BrokerConnection(std::string service, std::uint32_t credit,
                                   ConnectionTiming timing)
    : service_(std::move(service)), credit_(credit), timing_(timing) {}

void BrokerConnection::connect(zmq::context_t& context, const std::string& endpoint,
                               std::uint64_t id, TimePoint now,
                               const std::optional<CurveClientKeys>& curve) {
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    if (curve) apply_curve_client(socket, *curve);
    socket.connect(endpoint);
    socket_ = std::move(socket);
    id_ = id;
    heartbeat_at_ = now + timing_.heartbeat_interval;
    stop_acknowledged_ = false;
    pending_.clear();
    heard_from_broker(now);
    pending_.ready(service_, credit_);
    send_now();  // a fresh socket queues it until the TCP connection is up
}

void BrokerConnection::drop(TimePoint now) {
    socket_.reset();
    pending_.clear();
    reconnect_at_ = now + timing_.reconnect_delay;
}

void BrokerConnection::disconnect(Millis linger) {
    if (!socket_) return;
    pending_.command(wire::Command::disconnect);
    if (!send_now())
        spdlog::warn("could not send DISCONNECT for '{}': the queue to the broker is full",
                     service_);
    socket_->set(zmq::sockopt::linger, static_cast<int>(linger.count()));
    socket_.reset();
}

void BrokerConnection::heard_from_broker(TimePoint now) noexcept {
    expires_at_ = now + timing_.heartbeat_interval * timing_.liveness;
}

void BrokerConnection::send_heartbeat_if_due(TimePoint now) {
    if (!connected() || now < heartbeat_at_) return;
    pending_.command(wire::Command::heartbeat);
    if (!send_now())
        spdlog::debug("HEARTBEAT for '{}' not queued: the queue to the broker is full", service_);
    // From now, not from the missed due time: after a stall, one heartbeat is enough.
    heartbeat_at_ = now + timing_.heartbeat_interval;
}

TimePoint BrokerConnection::next_timer() const noexcept {
    if (!connected()) return reconnect_at_;
    return std::min(heartbeat_at_, expires_at_);
}

void BrokerConnection::change_credit(std::uint32_t credit) {
    credit_ = credit;
    if (connected()) pending_.credit(credit);
}

void BrokerConnection::stop_taking_work() {
    if (!connected()) return;
    stop_acknowledged_ = false;  // only an echo of this CREDIT 0 counts
    pending_.credit(0);
    if (!send_now())
        spdlog::warn("could not tell the broker to stop sending work on '{}': its queue is full",
                     service_);
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
