// ConnectionMonitor: zmq_socket_monitor's PAIR socket, read one event (two frames) at a time.
#include "shared/connection_monitor.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

namespace zbroker {
namespace {

constexpr int kWatchedEvents =
    ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_MONITOR_STOPPED;

// inproc names are per context; a counter keeps them apart within one.
std::string next_address() {
    static std::atomic<std::uint64_t> counter{0};
    return "inproc://zbroker-monitor-" + std::to_string(counter.fetch_add(1));
}

}  // namespace

void enable_heartbeats(zmq::socket_t& socket, std::chrono::milliseconds interval,
                       std::chrono::milliseconds timeout) {
    socket.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(interval.count()));
    socket.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(timeout.count()));
}

ConnectionMonitor::ConnectionMonitor(zmq::context_t& context, zmq::socket_t& watched)
    : watched_(watched.handle()), events_(context, zmq::socket_type::pair) {
    const std::string address = next_address();
    if (zmq_socket_monitor(watched_, address.c_str(), kWatchedEvents) != 0) throw zmq::error_t();
    events_.set(zmq::sockopt::linger, 0);
    events_.connect(address);
}

ConnectionMonitor::~ConnectionMonitor() {
    zmq_socket_monitor(watched_, nullptr, 0);
}

std::optional<ConnectionMonitor::Event> ConnectionMonitor::next() {
    while (true) {
        zmq::message_t event;
        zmq::message_t address;
        if (!events_.recv(event, zmq::recv_flags::dontwait)) return std::nullopt;
        // Two frames: u16 event and u32 value in host order, then the peer's address.
        if (event.more()) (void)events_.recv(address);
        if (event.size() < sizeof(std::uint16_t)) continue;
        std::uint16_t id = 0;
        std::memcpy(&id, event.data(), sizeof id);
        if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) return Event::up;
        if (id == ZMQ_EVENT_DISCONNECTED) return Event::down;
    }
}

}  // namespace zbroker
