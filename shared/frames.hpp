// A multipart message as a vector of zmq::message_t, and the few operations every peer needs.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "protocol.hpp"

namespace zbroker {

// Frames are moved between sockets, never copied: the vector is reused as a buffer.
using Frames = std::vector<zmq::message_t>;

inline std::string_view view(const zmq::message_t& frame) noexcept {
    return {static_cast<const char*>(frame.data()), frame.size()};
}
inline zmq::message_t frame(std::string_view bytes) {
    return {bytes.data(), bytes.size()};
}
inline zmq::message_t frame(protocol::WorkerCommand command) {
    const auto byte = static_cast<char>(command);
    return {&byte, 1};
}
inline zmq::message_t empty_frame() {
    return zmq::message_t{};
}

// Receives one whole multipart message into `out` (cleared first).
// Returns false when nothing is waiting and `flags` asked not to block.
bool recv_frames(zmq::socket_ref socket, Frames& out,
                 zmq::recv_flags flags = zmq::recv_flags::none);

enum class SendResult { sent, would_block, unroutable };

// Sends every frame of `frames`, moving their contents into the socket.
// `would_block`: the peer's queue is full (HWM); `unroutable`: a ROUTER has no such peer.
SendResult send_frames(zmq::socket_ref socket, Frames& frames,
                       zmq::send_flags flags = zmq::send_flags::none);

// Bytes as text when printable, else as 0x-prefixed hex; truncated past 32 bytes.
std::string printable(std::string_view bytes);

// Printable summary of a message for logs: each frame as text or hex, truncated.
std::string describe(const Frames& frames);

}  // namespace zbroker
