// Multipart send/receive over cppzmq, and a log-friendly rendering of frames.
#include "frames.hpp"

#include <algorithm>
#include <cctype>

namespace zbroker {

bool recv_frames(zmq::socket_ref socket, Frames& out, zmq::recv_flags flags) {
    // Into the frames already there: libzmq closes what each one held as it receives into it,
    // so a reused vector costs no init and close per frame (a ROUTER reads millions a second).
    // The room a message of very many frames grew is given back at the next read.
    if (out.capacity() > kKeptFrames) Frames().swap(out);
    std::size_t count = 0;
    do {
        if (count == out.size()) out.emplace_back();
        if (!socket.recv(out[count], flags)) {
            out.clear();
            return false;  // only the first part can would-block: the rest arrive atomically
        }
        flags = zmq::recv_flags::none;
    } while (out[count++].more());
    out.erase(out.begin() + static_cast<std::ptrdiff_t>(count), out.end());
    return true;
}

SendResult send_frames(zmq::socket_ref socket, FrameSpan frames, zmq::send_flags flags) {
    for (std::size_t i = 0; i < frames.size(); ++i) {
        const bool last = i + 1 == frames.size();
        const auto part_flags = last ? flags : flags | zmq::send_flags::sndmore;
        try {
            if (!socket.send(frames[i], part_flags)) return SendResult::would_block;
        } catch (const zmq::error_t& e) {
            if (e.num() == EHOSTUNREACH) return SendResult::unroutable;
            throw;
        }
    }
    return SendResult::sent;
}

std::string printable(std::string_view bytes) {
    constexpr std::size_t kMaxShown = 32;
    std::string text;
    const bool is_text = std::all_of(bytes.begin(), bytes.end(), [](char c) {
        return std::isprint(static_cast<unsigned char>(c)) != 0;
    });
    const std::string_view shown = bytes.substr(0, kMaxShown);
    if (is_text) {
        text += '"';
        text += shown;
        text += '"';
    } else {
        static constexpr char kHex[] = "0123456789abcdef";
        text += "0x";
        for (unsigned char c : shown) {
            text += kHex[c >> 4];
            text += kHex[c & 0xF];
        }
    }
    if (bytes.size() > kMaxShown) text += "...(" + std::to_string(bytes.size()) + "B)";
    return text;
}

std::string describe(const Frames& frames) {
    std::string text = "[";
    for (std::size_t i = 0; i < frames.size(); ++i) {
        if (i > 0) text += ' ';
        text += printable(view(frames[i]));
    }
    return text + "]";
}

}  // namespace zbroker
