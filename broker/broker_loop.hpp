// The socket shell around BrokerCore: one ROUTER, a poll loop, signals turned into a drain.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "broker/broker_core.hpp"
#include "broker/connection_table.hpp"
#include "shared/connection_monitor.hpp"

namespace zbroker::broker {

struct SocketOptions {
    int hwm = 10'000;  // messages queued per peer before the broker counts drops
    // The broker's CURVE secret key (Z85); empty: CURVE off. When set, a ZapAuthenticator must
    // already serve the context, and every message is handed to the core with its peer's role.
    std::string curve_secret_key;
};

class BrokerLoop {
  public:
    // Binds at once, so a bad endpoint fails here with zmq::error_t.
    BrokerLoop(zmq::context_t& context, BrokerConfig config, const std::string& bind,
               SocketOptions options = {});

    // The endpoint actually bound (resolves tcp://127.0.0.1:* to a port).
    std::string endpoint() const;

    // Serves until `stop` turns true, then drains and tells workers DISCONNECT.
    void run(const std::atomic<bool>& stop);

    // Calls `observe` on the broker thread about every `period` (at most ~100 ms late) while
    // run() serves, and once more at its end: how metrics see the core without locking it.
    using Observer = std::function<void(const BrokerCore&, TimePoint)>;
    void observe_every(Millis period, Observer observe);

    const BrokerCore& core() const noexcept { return core_; }

  private:
    class SocketOutbox : public Outbox {
      public:
        explicit SocketOutbox(zmq::socket_ref socket) : socket_(socket) {}
        SendResult send(FrameSpan frames) override;

      private:
        zmq::socket_ref socket_;
    };

    // Reads what is waiting, up to a batch, so timers still run under a flood.
    void read_batch();
    // With CURVE: reads the monitor's events; tells the core of every connection that closed,
    // before it acts on anything that came after the close (see ConnectionTable) and before
    // it sends.
    void read_closes();
    // With CURVE: if the message in in_ came on a connection not known to carry its routing
    // id, or known closed, reads the monitor's events first. Returns the routing id when the
    // connection that sent it has closed since: its peer is gone once the message is acted on.
    std::optional<std::string> check_connection();

    // The role and key ZAP gave the sender of in_, or nullopt when it has none (then it is
    // dropped).
    struct Peer {
        PeerRole role;
        std::string_view key;  // Z85 CURVE public key
    };
    std::optional<Peer> peer_of_message() const;

    zmq::socket_t socket_;
    bool curve_ = false;
    std::unique_ptr<ConnectionMonitor> closes_;  // with CURVE only
    ConnectionTable connections_;
    bool warned_no_role_ = false;
    SocketOutbox outbox_;
    BrokerCore core_;
    Frames in_;
    Millis observe_period_{0};
    Observer observe_;
};

}  // namespace zbroker::broker
