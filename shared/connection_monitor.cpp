// ConnectionMonitor: zmq_socket_monitor's PAIR socket, read one event (two frames) at a time.
#include "shared/connection_monitor.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

namespace zbroker {
namespace {

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

ConnectionMonitor::ConnectionMonitor(zmq::context_t& context, zmq::socket_t& watched, int events)
    : watched_(watched.handle()), events_(context, zmq::socket_type::pair) {
    const std::string address = next_address();
    if (zmq_socket_monitor(watched_, address.c_str(), events | ZMQ_EVENT_MONITOR_STOPPED) != 0)
        throw zmq::error_t();
    events_.set(zmq::sockopt::linger, 0);
    events_.connect(address);
}

ConnectionMonitor::~ConnectionMonitor() {
    zmq_socket_monitor(watched_, nullptr, 0);
}

std::optional<ConnectionMonitor::Event> ConnectionMonitor::next(int* fd) {
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
        if (id != ZMQ_EVENT_DISCONNECTED && id != ZMQ_EVENT_ACCEPTED) continue;
        std::uint32_t value = 0;
        if (fd != nullptr && event.size() >= sizeof id + sizeof value) {
            std::memcpy(&value, static_cast<const char*>(event.data()) + sizeof id, sizeof value);
            *fd = static_cast<int>(value);
        }
        return id == ZMQ_EVENT_DISCONNECTED ? Event::down : Event::accepted;
    }
}

}  // namespace zbroker
