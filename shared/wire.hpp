// ZB/1, zbroker's native protocol: one binary envelope frame holding one or more records, then
// the body frames those records point to. The one place its layout lives; broker, worker,
// client, zbench and the fuzzer all read and write it through this file.
//
// libzmq's cost is per frame, not per byte: a 7/MDP request crosses the broker as about 24
// frames, a plain relay's as 8-10. ZB/1 puts the envelope and a small body in one frame (as
// few frames as the relay), and lets one frame carry many records, so a peer that has several
// messages for the same peer at hand sends them as one (docs/protocol.md, "Native protocol").
//
//   envelope := 'Z' 'B' version(0x01) record+          integers little-endian
//   record   := command(u8) fields... [body]
//   body     := 0x00 size(u32) bytes                   inline
//             | 0x01 count(u16)                        the next `count` body frames, in order
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "frames.hpp"
#include "protocol.hpp"

namespace zbroker::wire {

inline constexpr std::string_view kSignature{"ZB\x01", 3};
inline constexpr std::uint8_t kVersion = 1;

enum class Command : std::uint8_t {
    request = 0x11,     // client to broker: flags [deadline_ms] [priority] [keys] id service body
    answer = 0x12,      // broker to client: id status body
    ready = 0x21,       // worker to broker: credit service
    job = 0x22,         // broker to worker: token flags [deadline_ms] [idempotency key] body
    reply = 0x23,       // worker to broker: token body
    heartbeat = 0x24,   // both ways between worker and broker
    disconnect = 0x25,  // both ways between worker and broker
    credit = 0x26,      // worker to broker: credit (0: send me nothing more); echoed back
};
std::string_view command_name(Command command) noexcept;

// Flags of REQUEST and JOB: which optional fields follow, in this order.
inline constexpr std::uint8_t kHasDeadline = 0x01;     // u32 milliseconds
inline constexpr std::uint8_t kHasPriority = 0x02;     // u8, REQUEST only
inline constexpr std::uint8_t kHasFairnessKey = 0x04;  // short string, REQUEST only
// Short string: the broker passes it on in the JOB, so that a worker can tell a request it has
// just run from a new one when a client sends it again through another broker.
inline constexpr std::uint8_t kHasIdempotencyKey = 0x08;

// What a REQUEST may carry besides its id, service and body.
struct RequestOptions {
    RequestOptions() = default;
    RequestOptions(std::nullopt_t) {}
    RequestOptions(std::optional<std::uint32_t> deadline) : deadline_ms(deadline) {}
    RequestOptions(std::uint32_t deadline) : deadline_ms(deadline) {}

    std::optional<std::uint32_t> deadline_ms;
    std::optional<std::uint8_t> priority;  // protocol::kMaxPriority is the highest
    std::string_view fairness_key;         // empty: the broker's default (the connection)
    std::string_view idempotency_key;      // empty: none
};

// A body of one frame up to this size travels inside the envelope: copying a few KiB costs less
// than a frame. Larger bodies, and bodies of several frames, travel as frames of their own.
inline constexpr std::size_t kInlineBodyLimit = 4096;
// The most frames one body may have (its count is 16 bits); the broker refuses more with 413.
inline constexpr std::size_t kMaxBodyFrames = 0xFFFF;
// A sender starts a new message past this many bytes, so a batch never nears the broker's frame
// size limit, and large bodies are not held back behind each other.
inline constexpr std::size_t kBatchBytes = 64 * 1024;

// The most records one message may hold; a message with more is malformed as a whole. A
// sender starts a new message past kBatchBytes, and the smallest record it batches takes about
// ten bytes, so a real batch holds a few thousand. The bound is what one message can make a
// reader hold whatever a peer sends: a parsed record takes about 150 bytes, a HEARTBEAT on the
// wire one.
inline constexpr std::size_t kMaxRecords = 65536;
// A reader keeps room for this many records between messages (a full batch of small ones); a
// larger burst is given back at the next message.
inline constexpr std::size_t kKeptRecords = 8192;

// A parsed body: bytes inside the envelope, or frames [first, first + count) of the message.
struct Body {
    std::string_view bytes;
    std::size_t first = 0;
    std::size_t count = 0;
    bool in_frames = false;
};

// One parsed record; the views point into the envelope frame, which must stay in place.
struct Record {
    Command command{};
    std::string_view id;                       // request, answer
    std::string_view service;                  // request, ready
    std::string_view token;                    // job, reply
    std::optional<std::uint32_t> deadline_ms;  // request, job
    std::optional<std::uint8_t> priority;      // request
    std::string_view fairness_key;             // request (empty: none given)
    std::string_view idempotency_key;          // request, job (empty: none given)
    protocol::Status status{};                 // answer
    std::uint32_t credit = 0;                  // ready, credit
    Body body;                                 // request, answer, job, reply
    // A REQUEST that parses but breaks a rule the broker answers 400 for (an empty fairness or
    // idempotency key: absent is how a record says none); nullptr when it breaks none. Its id
    // can be read, so the client hears why, and the rest of the message stands.
    const char* problem = nullptr;
};

// Whether `frame` is a ZB/1 envelope (it starts with the signature). 7/MDP frames never do:
// their first frame is empty.
bool is_envelope(const zmq::message_t& frame) noexcept;

// Parses the envelope at frames[at] and checks that its bodies use exactly the frames after it.
// Clears `out` first, and gives back its room if a burst grew it past kKeptRecords. On a malformed
// message returns false with the reason in `error` (a static string), and `out` must be ignored:
// nothing of such a message may be acted on. A record whose fields cannot be read (an unknown
// command, flag or body form; cut short) makes the whole message malformed; a REQUEST that can be
// read but breaks a rule has a `problem`.
bool parse(std::span<const zmq::message_t> frames, std::size_t at, std::vector<Record>& out,
           const char*& error);

// Appends a parsed body to `out` as frames: inline bytes as one new frame, body frames moved.
void move_body(Frames& message, const Body& body, Frames& out);
std::size_t body_size(const Frames& message, const Body& body) noexcept;
// The first frame's bytes (inline: all of them); empty when there are none.
std::string_view first_body_bytes(const Frames& message, const Body& body) noexcept;

// Builds one message: the envelope, then the body frames its records point to.
class Writer {
  public:
    Writer();

    // A body to write: frames [first, first + count) of `frames`, moved, or shared (reference
    // counted, so `frames` keeps them: the broker keeps a request's body for a retry).
    struct FramesBody {
        Frames& frames;
        std::size_t first;
        std::size_t count;
        bool share = false;
    };

    // A string longer than 255 bytes (id, service, key, token) or a body of more than
    // kMaxBodyFrames frames throws std::length_error: the format cannot carry it, and a record
    // is never written cut short. Callers check what they accept before writing.
    void request(std::string_view id, std::string_view service, const RequestOptions& options,
                 std::string_view body);
    void request(std::string_view id, std::string_view service, const RequestOptions& options,
                 FramesBody body);
    void answer(std::string_view id, protocol::Status status, FramesBody body);
    void answer(std::string_view id, protocol::Status status, std::string_view body = {});
    void job(std::string_view token, std::optional<std::uint32_t> deadline_ms,
             std::string_view idempotency_key, FramesBody body);
    void reply(std::string_view token, FramesBody body);
    void reply(std::string_view token, std::string_view body);
    void ready(std::string_view service, std::uint32_t credit);
    void credit(std::uint32_t credit);
    void command(Command command);  // heartbeat, disconnect

    bool empty() const noexcept { return records_ == 0; }
    std::size_t records() const noexcept { return records_; }
    // Bytes so far, bodies in frames included: past kBatchBytes a sender should take() and
    // send, so that a batch of large bodies does not become one huge message that the next hop
    // can only start on once all of it has arrived.
    std::size_t size() const noexcept { return envelope_.size() + frame_bytes_; }

    // Appends the message (envelope, then body frames) to `out` and starts afresh.
    void take(Frames& out);
    // Forgets what was written.
    void clear();

  private:
    void begin(Command command);
    void put_u8(std::uint8_t value) { envelope_.push_back(static_cast<char>(value)); }
    void put_u16(std::uint16_t value);
    void put_u32(std::uint32_t value);
    void put_short(std::string_view bytes);           // u8 length, bytes (at most 255)
    void put_options(const RequestOptions& options);  // flags, then what they name
    void put_body(std::string_view bytes);
    void put_body(FramesBody body);

    std::string envelope_;
    Frames frames_;
    std::size_t frame_bytes_ = 0;  // of frames_
    std::size_t records_ = 0;
};

}  // namespace zbroker::wire
