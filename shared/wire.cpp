// ZB/1 envelopes: a bounds-checked reader that never throws, and a writer that reuses its buffer.
#include "wire.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace zbroker::wire {

namespace {

constexpr std::uint8_t kInline = 0x00;
constexpr std::uint8_t kInFrames = 0x01;

// Reads fields from an envelope; every read checks what is left, so no input can overrun.
class Cursor {
  public:
    explicit Cursor(std::string_view bytes) : bytes_(bytes) {}

    bool done() const noexcept { return at_ == bytes_.size(); }

    bool u8(std::uint8_t& value) noexcept {
        if (bytes_.size() - at_ < 1) return false;
        value = static_cast<std::uint8_t>(bytes_[at_++]);
        return true;
    }
    bool u16(std::uint16_t& value) noexcept {
        std::uint8_t b0 = 0, b1 = 0;
        if (!u8(b0) || !u8(b1)) return false;
        value = static_cast<std::uint16_t>(b0 | (b1 << 8));
        return true;
    }
    bool u32(std::uint32_t& value) noexcept {
        if (bytes_.size() - at_ < 4) return false;
        value = 0;
        for (int i = 0; i < 4; ++i)
            value |= std::uint32_t{static_cast<std::uint8_t>(bytes_[at_++])} << (8 * i);
        return true;
    }
    bool bytes(std::size_t size, std::string_view& value) noexcept {
        if (bytes_.size() - at_ < size) return false;
        value = bytes_.substr(at_, size);
        at_ += size;
        return true;
    }
    bool short_bytes(std::string_view& value) noexcept {
        std::uint8_t size = 0;
        return u8(size) && bytes(size, value);
    }

  private:
    std::string_view bytes_;
    std::size_t at_ = 0;
};

bool known_status(protocol::Status status) noexcept {
    using protocol::Status;
    switch (status) {
        case Status::ok:
        case Status::bad_request:
        case Status::too_large:
        case Status::queue_full:
        case Status::retries_exhausted:
        case Status::unavailable:
        case Status::deadline_exceeded:
            return true;
        case Status::no_reply:
            break;
    }
    return false;
}

}  // namespace

std::string_view command_name(Command command) noexcept {
    switch (command) {
        case Command::request:
            return "REQUEST";
        case Command::answer:
            return "ANSWER";
        case Command::ready:
            return "READY";
        case Command::job:
            return "JOB";
        case Command::reply:
            return "REPLY";
        case Command::heartbeat:
            return "HEARTBEAT";
        case Command::disconnect:
            return "DISCONNECT";
        case Command::credit:
            return "CREDIT";
    }
    return "unknown";
}

bool is_envelope(const zmq::message_t& frame) noexcept {
    return view(frame).starts_with(kSignature);
}

bool parse(std::span<const zmq::message_t> frames, std::size_t at, std::vector<Record>& out,
           const char*& error) {
    if (out.capacity() > kKeptRecords) {
        std::vector<Record>().swap(out);
    } else {
        out.clear();
    }
    if (at >= frames.size() || !is_envelope(frames[at])) {
        error = "no ZB/1 envelope";
        return false;
    }
    Cursor cursor(view(frames[at]).substr(kSignature.size()));
    std::size_t next_frame = at + 1;

    const auto read_body = [&](Body& body) {
        std::uint8_t form = 0;
        if (!cursor.u8(form)) return false;
        if (form == kInline) {
            std::uint32_t size = 0;
            return cursor.u32(size) && cursor.bytes(size, body.bytes);
        }
        std::uint16_t count = 0;
        if (form != kInFrames || !cursor.u16(count)) return false;
        if (frames.size() - next_frame < count) return false;
        body.in_frames = true;
        body.first = next_frame;
        body.count = count;
        next_frame += count;
        return true;
    };
    // Flags, then the optional fields they name; `allowed` are the flags this command knows.
    const auto read_options = [&](Record& record, std::uint8_t allowed) {
        std::uint8_t flags = 0;
        if (!cursor.u8(flags)) return false;
        if ((flags & ~allowed) != 0) return false;  // unknown flags: a newer peer
        if ((flags & kHasDeadline) != 0) {
            std::uint32_t value = 0;
            if (!cursor.u32(value)) return false;
            record.deadline_ms = value;
        }
        if ((flags & kHasPriority) != 0) {
            std::uint8_t value = 0;
            if (!cursor.u8(value)) return false;
            record.priority = value;
        }
        // Empty keys are never sent (absent is how a record says none). In a JOB, from the
        // broker, that makes it malformed; in a REQUEST the rest can still be read, and the
        // broker answers it 400.
        const auto read_key = [&](std::string_view& key) {
            if (!cursor.short_bytes(key)) return false;
            if (!key.empty()) return true;
            record.problem = "an empty fairness or idempotency key";
            return record.command == Command::request;
        };
        if ((flags & kHasFairnessKey) != 0 && !read_key(record.fairness_key)) return false;
        if ((flags & kHasIdempotencyKey) != 0 && !read_key(record.idempotency_key)) return false;
        return true;
    };

    do {
        if (out.size() == kMaxRecords) {
            error = "more records than one message may hold";
            return false;
        }
        std::uint8_t command = 0;
        cursor.u8(command);
        Record& record = out.emplace_back();
        record.command = static_cast<Command>(command);
        bool ok = false;
        switch (record.command) {
            case Command::request:
                ok = read_options(record, kHasDeadline | kHasPriority | kHasFairnessKey |
                                              kHasIdempotencyKey) &&
                     cursor.short_bytes(record.id) && cursor.short_bytes(record.service) &&
                     read_body(record.body);
                break;
            case Command::answer: {
                std::uint16_t status = 0;
                ok = cursor.short_bytes(record.id) && cursor.u16(status) && read_body(record.body);
                record.status = static_cast<protocol::Status>(status);
                ok = ok && known_status(record.status);
                break;
            }
            case Command::ready:
                ok = cursor.u32(record.credit) && cursor.short_bytes(record.service);
                break;
            case Command::job:
                ok = cursor.short_bytes(record.token) &&
                     read_options(record, kHasDeadline | kHasIdempotencyKey) &&
                     read_body(record.body);
                break;
            case Command::reply:
                ok = cursor.short_bytes(record.token) && read_body(record.body);
                break;
            case Command::credit:
                ok = cursor.u32(record.credit);
                break;
            case Command::heartbeat:
            case Command::disconnect:
                ok = true;
                break;
        }
        if (!ok) {
            error = "a record is cut short or has an unknown command, flag or body form";
            return false;
        }
    } while (!cursor.done());
    if (next_frame != frames.size()) {
        error = "frames after the envelope that no record claims";
        return false;
    }
    return true;
}

void move_body(Frames& message, const Body& body, Frames& out) {
    if (!body.in_frames) {
        out.push_back(frame(body.bytes));
        return;
    }
    for (std::size_t i = body.first; i < body.first + body.count; ++i)
        out.push_back(std::move(message[i]));
}

std::size_t body_size(const Frames& message, const Body& body) noexcept {
    if (!body.in_frames) return body.bytes.size();
    std::size_t size = 0;
    for (std::size_t i = body.first; i < body.first + body.count; ++i)
        size += message[i].size();
    return size;
}

std::string_view first_body_bytes(const Frames& message, const Body& body) noexcept {
    if (!body.in_frames) return body.bytes;
    return body.count > 0 ? view(message[body.first]) : std::string_view{};
}

// ---------------------------------------------------------------------------------------------

Writer::Writer() {
    envelope_.assign(kSignature);
}

void Writer::request(std::string_view id, std::string_view service, const RequestOptions& options,
                     std::string_view body) {
    begin(Command::request);
    put_options(options);
    put_short(id);
    put_short(service);
    put_body(body);
}

void Writer::request(std::string_view id, std::string_view service, const RequestOptions& options,
                     FramesBody body) {
    begin(Command::request);
    put_options(options);
    put_short(id);
    put_short(service);
    put_body(body);
}

void Writer::answer(std::string_view id, protocol::Status status, FramesBody body) {
    begin(Command::answer);
    put_short(id);
    put_u16(static_cast<std::uint16_t>(status));
    put_body(body);
}

void Writer::answer(std::string_view id, protocol::Status status, std::string_view body) {
    begin(Command::answer);
    put_short(id);
    put_u16(static_cast<std::uint16_t>(status));
    put_body(body);
}

void Writer::job(std::string_view token, std::optional<std::uint32_t> deadline_ms,
                 std::string_view idempotency_key, FramesBody body) {
    begin(Command::job);
    put_short(token);
    RequestOptions options{deadline_ms};
    options.idempotency_key = idempotency_key;
    put_options(options);
    put_body(body);
}

void Writer::reply(std::string_view token, FramesBody body) {
    begin(Command::reply);
    put_short(token);
    put_body(body);
}

void Writer::reply(std::string_view token, std::string_view body) {
    begin(Command::reply);
    put_short(token);
    put_body(body);
}

void Writer::ready(std::string_view service, std::uint32_t credit) {
    begin(Command::ready);
    put_u32(credit);
    put_short(service);
}

void Writer::credit(std::uint32_t credit) {
    begin(Command::credit);
    put_u32(credit);
}

void Writer::command(Command command) {
    begin(command);
}

void Writer::take(Frames& out) {
    out.push_back(frame(envelope_));
    for (zmq::message_t& part : frames_)
        out.push_back(std::move(part));
    clear();
}

void Writer::clear() {
    frames_.clear();
    frame_bytes_ = 0;
    envelope_.resize(kSignature.size());
    records_ = 0;
}

void Writer::begin(Command command) {
    put_u8(static_cast<std::uint8_t>(command));
    ++records_;
}

void Writer::put_u16(std::uint16_t value) {
    put_u8(static_cast<std::uint8_t>(value));
    put_u8(static_cast<std::uint8_t>(value >> 8));
}

void Writer::put_u32(std::uint32_t value) {
    for (int i = 0; i < 4; ++i)
        put_u8(static_cast<std::uint8_t>(value >> (8 * i)));
}

void Writer::put_short(std::string_view bytes) {
    // Ids, service names and keys are checked against 255 bytes where they enter: past it is
    // a caller's mistake, never a record cut short.
    if (bytes.size() > 255)
        throw std::length_error("a ZB/1 string is at most 255 bytes; this one has " +
                                std::to_string(bytes.size()));
    put_u8(static_cast<std::uint8_t>(bytes.size()));
    envelope_.append(bytes);
}

void Writer::put_options(const RequestOptions& options) {
    std::uint8_t flags = 0;
    if (options.deadline_ms) flags |= kHasDeadline;
    if (options.priority) flags |= kHasPriority;
    if (!options.fairness_key.empty()) flags |= kHasFairnessKey;
    if (!options.idempotency_key.empty()) flags |= kHasIdempotencyKey;
    put_u8(flags);
    if (options.deadline_ms) put_u32(*options.deadline_ms);
    if (options.priority) put_u8(*options.priority);
    if (!options.fairness_key.empty()) put_short(options.fairness_key);
    if (!options.idempotency_key.empty()) put_short(options.idempotency_key);
}

void Writer::put_body(std::string_view bytes) {
    if (bytes.size() > kInlineBodyLimit) {
        put_u8(kInFrames);
        put_u16(1);
        frames_.push_back(frame(bytes));
        frame_bytes_ += bytes.size();
        return;
    }
    put_u8(kInline);
    put_u32(static_cast<std::uint32_t>(bytes.size()));
    envelope_.append(bytes);
}

void Writer::put_body(FramesBody body) {
    if (body.count == 0) return put_body(std::string_view{});
    if (body.count == 1 && body.frames[body.first].size() <= kInlineBodyLimit)
        return put_body(view(body.frames[body.first]));
    if (body.count > kMaxBodyFrames)
        throw std::length_error("a ZB/1 body is at most 65535 frames; this one has " +
                                std::to_string(body.count));
    const std::size_t count = body.count;
    put_u8(kInFrames);
    put_u16(static_cast<std::uint16_t>(count));
    for (std::size_t i = body.first; i < body.first + count; ++i) {
        frame_bytes_ += body.frames[i].size();
        if (body.share) {
            frames_.emplace_back().copy(body.frames[i]);  // reference-counted, not copied
        } else {
            frames_.push_back(std::move(body.frames[i]));
        }
    }
}

}  // namespace zbroker::wire
