// One 7/MDP worker session for one service: its DEALER to the broker, heartbeats and liveness.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "shared/clock.hpp"
#include "shared/curve_keys.hpp"
#include "shared/frames.hpp"
#include "shared/protocol.hpp"

namespace zbroker::detail {

// Frame positions of a broker-to-worker REQUEST: "" MDPW01 0x02 token "" body...
inline constexpr std::size_t kRequestToken = 3;
inline constexpr std::size_t kRequestDelimiter = 4;
inline constexpr std::size_t kRequestBody = 5;

// A message from the broker: the command it carries, or why it cannot be acted on.
struct BrokerMessage {
    std::optional<protocol::WorkerCommand> command;
    std::string_view problem;  // a static string; empty when `command` is set
};

// Checks the envelope of a broker message; never throws, whatever the frames hold.
BrokerMessage parse_broker_message(const Frames& frames) noexcept;

struct ConnectionTiming {
    Millis heartbeat_interval;
    int liveness;
    Millis reconnect_delay;
};

// The socket is replaced on every reconnect, and each socket gets a new id, so that a result
// computed for an old socket is recognised and never sent on its successor.
class BrokerConnection {
  public:
    BrokerConnection(std::string service, int credit, ConnectionTiming timing);

    // Opens a new DEALER to `endpoint` (CURVE when `curve` is set) and sends READY with our
    // credit.
    void connect(zmq::context_t& context, const std::string& endpoint, std::uint64_t id,
                 TimePoint now, const std::optional<CurveClientKeys>& curve = std::nullopt);
    // Closes at once (linger 0: whatever is queued belongs to a dead session) and schedules
    // the next connect after the reconnect delay.
    void drop(TimePoint now);
    // Sends DISCONNECT and closes, lingering up to `linger` so the DISCONNECT gets out.
    void disconnect(Millis linger);

    bool connected() const noexcept { return socket_.has_value(); }
    std::uint64_t id() const noexcept { return id_; }
    const std::string& service() const noexcept { return service_; }
    zmq::socket_t& socket() { return *socket_; }

    // Any message at all, even a malformed one, shows that the broker is alive.
    void heard_from_broker(TimePoint now) noexcept;
    bool broker_expired(TimePoint now) const noexcept { return connected() && now >= expires_at_; }
    bool reconnect_due(TimePoint now) const noexcept {
        return !connected() && now >= reconnect_at_;
    }
    void send_heartbeat_if_due(TimePoint now);
    // The earliest moment a timer of this connection needs attention.
    TimePoint next_timer() const noexcept;

    // Sends REPLY; false when the socket would block (its queue to the broker is full).
    bool send_reply(zmq::message_t& token, Frames& body);

  private:
    bool send_command(protocol::WorkerCommand command);
    bool send(Frames& frames);

    std::string service_;
    std::string credit_;
    ConnectionTiming timing_;
    std::optional<zmq::socket_t> socket_;
    std::uint64_t id_ = 0;
    TimePoint heartbeat_at_{};
    TimePoint expires_at_{};
    TimePoint reconnect_at_{};
    Frames outgoing_;  // reused for every send
};

}  // namespace zbroker::detail
