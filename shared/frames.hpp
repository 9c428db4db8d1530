// A multipart message as a vector of zmq::message_t, and the few operations every peer needs.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <zmq.hpp>

#include "protocol.hpp"

namespace zbroker {

// Frames are moved between sockets, never copied: the vector is reused as a buffer.
using Frames = std::vector<zmq::message_t>;
// One message among others in a buffer of frames.
using FrameSpan = std::span<zmq::message_t>;

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

// Appends a frame holding a copy of `bytes`, made in place. Every zmq::message_t made, moved
// or destroyed is a call into libzmq, and a broker makes several frames per request: building
// them where they stay, rather than moving in temporaries, saves two such calls a frame.
inline void add_frame(Frames& out, std::string_view bytes) {
    out.emplace_back(bytes.data(), bytes.size());
}
// Appends a frame of bytes that outlive it, a protocol constant, without copying them: libzmq
// then refers to them (zmq_msg_init_data without a free function), which saves the copy and a
// call into libzmq. Such a frame must never be written to.
inline void add_constant_frame(Frames& out, std::string_view bytes) {
    out.emplace_back(const_cast<char*>(bytes.data()), bytes.size(), nullptr);
}
inline void add_frame(Frames& out, protocol::WorkerCommand command) {
    static constexpr char kCommands[] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05};  // kept for ever
    const auto index = static_cast<std::size_t>(command);
    if (index < sizeof kCommands) return add_constant_frame(out, {&kCommands[index], 1});
    const auto byte = static_cast<char>(command);
    out.emplace_back(&byte, 1);
}
inline void add_empty_frame(Frames& out) {
    out.emplace_back();
}

// A reused vector of frames keeps room for this many between messages; the room a message of
// more grew is given back.
inline constexpr std::size_t kKeptFrames = 1024;

// Receives one whole multipart message into `out`, replacing what it held.
// Returns false, with `out` empty, when nothing is waiting and `flags` asked not to block.
bool recv_frames(zmq::socket_ref socket, Frames& out,
                 zmq::recv_flags flags = zmq::recv_flags::none);

enum class SendResult { sent, would_block, unroutable };

// Sends every frame of `frames`, moving their contents into the socket.
// `would_block`: the peer's queue is full (HWM); `unroutable`: a ROUTER has no such peer.
SendResult send_frames(zmq::socket_ref socket, FrameSpan frames,
                       zmq::send_flags flags = zmq::send_flags::none);

// Bytes as text when printable, else as 0x-prefixed hex; truncated past 32 bytes.
std::string printable(std::string_view bytes);

// Printable summary of a message for logs: each frame as text or hex, truncated.
std::string describe(const Frames& frames);

}  // namespace zbroker
