// Tells when a socket's links to its peers come up and go down: so that a client or worker
// learns at once that a broker died (its TCP connection closed, or libzmq's ZMTP heartbeats
// timed out), instead of waiting out a request's deadline; and so that the broker learns which
// of its connections closed.
//
// A thin wrapper over zmq_socket_monitor. cppzmq's monitor_t keeps its PAIR socket private and
// polls it by itself, so it cannot join a poll set; this one hands its socket out for polling.
#pragma once

#include <chrono>
#include <optional>

#include <zmq.hpp>

namespace zbroker {

// ZMTP heartbeats on a connecting socket: libzmq sends PING every `interval` and drops the
// connection (a disconnect event) when nothing came back for `timeout`. The peer answers PONG
// in its I/O thread, so a busy broker is not taken for a dead one.
void enable_heartbeats(zmq::socket_t& socket, std::chrono::milliseconds interval,
                       std::chrono::milliseconds timeout);

class ConnectionMonitor {
  public:
    // `accepted`: a bound socket took a new connection (its handshake is still to come).
    enum class Event { up, down, accepted };
    // What a bound socket's owner watches: each connection's arrival and close, by descriptor.
    static constexpr int kBoundEvents = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED;

    // Starts watching `watched`, which must outlive this monitor (declare the monitor after
    // the socket, or reset it first when replacing the socket). By default a connecting
    // socket's events: handshakes done (up) and connections lost (down).
    ConnectionMonitor(zmq::context_t& context, zmq::socket_t& watched,
                      int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED);
    ~ConnectionMonitor();
    ConnectionMonitor(const ConnectionMonitor&) = delete;
    ConnectionMonitor& operator=(const ConnectionMonitor&) = delete;

    // Readable when an event is waiting.
    zmq::socket_ref socket() noexcept { return events_; }
    // The next event, or nullopt when none is waiting. `up` is a completed ZMTP handshake (with
    // CURVE, an accepted key), not only a TCP connection. With `fd`, the connection (its file
    // descriptor) of a `down` or `accepted` event goes there: a bound socket has many.
    std::optional<Event> next(int* fd = nullptr);

  private:
    void* watched_;
    zmq::socket_t events_;
};

}  // namespace zbroker
