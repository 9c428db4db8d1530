// Messages as the simulator moves them (a vector of strings, the routing id first), and reading
// the ZB/1 records of one: what the oracle and the simulated peers share.
#pragma once

#include <string>
#include <vector>

#include "shared/frames.hpp"
#include "shared/wire.hpp"

namespace zbroker::sim {

using Message = std::vector<std::string>;

inline Frames to_frames(const Message& message, std::size_t from = 0) {
    Frames frames;
    frames.reserve(message.size() - std::min(from, message.size()));
    for (std::size_t i = from; i < message.size(); ++i)
        frames.push_back(frame(message[i]));
    return frames;
}

inline Message to_message(FrameSpan frames) {
    Message message;
    message.reserve(frames.size());
    for (const zmq::message_t& part : frames)
        message.emplace_back(view(part));
    return message;
}

inline bool is_native(const Message& message) {
    return message.size() >= 2 && message[1].starts_with(wire::kSignature);
}

// The records of a ZB/1 message (routing id first), with the frames their views point into.
struct NativeMessage {
    Frames frames;
    std::vector<wire::Record> records;
    const char* error = "";

    // False, with `error`, when it does not parse.
    bool read(const Message& message) {
        frames = to_frames(message, 1);
        return wire::parse(frames, 0, records, error);
    }
    // A record's body, a string a frame (an inline body is one).
    std::vector<std::string> body(const wire::Record& record) const {
        std::vector<std::string> parts;
        if (!record.body.in_frames) {
            parts.emplace_back(record.body.bytes);
            return parts;
        }
        for (std::size_t i = 0; i < record.body.count; ++i)
            parts.emplace_back(view(frames[record.body.first + i]));
        return parts;
    }
};

}  // namespace zbroker::sim
