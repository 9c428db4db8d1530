// The worker side of 7/MDP on one DEALER: READY, HEARTBEAT, REPLY, DISCONNECT and liveness.
#include "worker/broker_connection.hpp"

#include <algorithm>
#include <cerrno>

#include <spdlog/spdlog.h>

namespace zbroker::detail {

using protocol::WorkerCommand;

namespace {

// Frame positions shared by every MDP worker command: "" MDPW01 command ...
constexpr std::size_t kDelimiter = 0;
constexpr std::size_t kProtocol = 1;
constexpr std::size_t kCommand = 2;

}  // namespace

BrokerMessage parse_broker_message(const Frames& frames) noexcept {
    if (frames.size() < kCommand + 1) return {{}, "fewer than 3 frames"};
    if (frames[kDelimiter].size() != 0) return {{}, "first frame is not the empty delimiter"};
    if (view(frames[kProtocol]) != protocol::kMdpWorker) return {{}, "protocol is not MDPW01"};
    if (frames[kCommand].size() != 1) return {{}, "command frame is not one byte"};
    const auto command = static_cast<WorkerCommand>(view(frames[kCommand])[0]);
    switch (command) {
        case WorkerCommand::request:
            if (frames.size() < kRequestBody || frames[kRequestDelimiter].size() != 0)
                return {{}, "REQUEST lacks the client token and empty frame"};
            return {command, {}};
        case WorkerCommand::heartbeat:
        case WorkerCommand::disconnect:
            return {command, {}};
        case WorkerCommand::ready:
        case WorkerCommand::reply:
            return {{}, "READY and REPLY only go from worker to broker"};
    }
    return {{}, "unknown command"};
}

BrokerConnection::BrokerConnection(std::string service, int credit, ConnectionTiming timing)
    : service_(std::move(service)), credit_(std::to_string(credit)), timing_(timing) {}

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
    heard_from_broker(now);

    outgoing_.clear();
    outgoing_.push_back(empty_frame());
    outgoing_.push_back(frame(protocol::kMdpWorker));
    outgoing_.push_back(frame(WorkerCommand::ready));
    outgoing_.push_back(frame(service_));
    outgoing_.push_back(frame(credit_));
    send(outgoing_);  // a fresh socket queues it until the TCP connection is up
}

void BrokerConnection::drop(TimePoint now) {
    socket_.reset();
    reconnect_at_ = now + timing_.reconnect_delay;
}

void BrokerConnection::disconnect(Millis linger) {
    if (!socket_) return;
    if (!send_command(WorkerCommand::disconnect))
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
    if (!send_command(WorkerCommand::heartbeat))
        spdlog::debug("HEARTBEAT for '{}' not queued: the queue to the broker is full", service_);
    // From now, not from the missed due time: after a stall, one heartbeat is enough.
    heartbeat_at_ = now + timing_.heartbeat_interval;
}

TimePoint BrokerConnection::next_timer() const noexcept {
    if (!connected()) return reconnect_at_;
    return std::min(heartbeat_at_, expires_at_);
}

bool BrokerConnection::send_reply(zmq::message_t& token, Frames& body) {
    outgoing_.clear();
    outgoing_.push_back(empty_frame());
    outgoing_.push_back(frame(protocol::kMdpWorker));
    outgoing_.push_back(frame(WorkerCommand::reply));
    outgoing_.push_back(std::move(token));
    outgoing_.push_back(empty_frame());
    // MDP clients expect at least one body frame, so an empty reply is one empty frame.
    if (body.empty()) outgoing_.push_back(empty_frame());
    for (zmq::message_t& part : body)
        outgoing_.push_back(std::move(part));
    return send(outgoing_);
}

bool BrokerConnection::send_command(WorkerCommand command) {
    outgoing_.clear();
    outgoing_.push_back(empty_frame());
    outgoing_.push_back(frame(protocol::kMdpWorker));
    outgoing_.push_back(frame(command));
    return send(outgoing_);
}

bool BrokerConnection::send(Frames& frames) {
    // Never block the I/O thread: heartbeats of the other services depend on it.
    for (int attempt = 0; attempt < 3; ++attempt) {
        try {
            return send_frames(*socket_, frames, zmq::send_flags::dontwait) == SendResult::sent;
        } catch (const zmq::error_t& e) {
            if (e.num() != EINTR) throw;  // a signal (SIGINT for stop()) is not a failure
        }
    }
    return false;
}

}  // namespace zbroker::detail
