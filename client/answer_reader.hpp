// What Client and AsyncClient share: request ids as bytes, and reading the ZB/1 ANSWER records
// of a message one at a time.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

// Relative: installed under include/zbroker/, these headers find each other by path alone.
#include "../shared/frames.hpp"
#include "../shared/protocol.hpp"
#include "../shared/wire.hpp"

namespace zbroker::detail {

// SipHash-2-4 (Aumasson and Bernstein) of one 8-byte message: a keyed pseudorandom function,
// so that its outputs say nothing of each other to one who does not hold the key.
struct SipHashKey {
    std::uint64_t k0 = 0;
    std::uint64_t k1 = 0;
};

constexpr std::uint64_t siphash24(SipHashKey key, std::uint64_t message) noexcept {
    std::uint64_t v0 = key.k0 ^ 0x736F6D6570736575ull;
    std::uint64_t v1 = key.k1 ^ 0x646F72616E646F6Dull;
    std::uint64_t v2 = key.k0 ^ 0x6C7967656E657261ull;
    std::uint64_t v3 = key.k1 ^ 0x7465646279746573ull;
    const auto rounds = [&](int count) {
        for (int i = 0; i < count; ++i) {
            v0 += v1;
            v1 = std::rotl(v1, 13) ^ v0;
            v0 = std::rotl(v0, 32);
            v2 += v3;
            v3 = std::rotl(v3, 16) ^ v2;
            v0 += v3;
            v3 = std::rotl(v3, 21) ^ v0;
            v2 += v1;
            v1 = std::rotl(v1, 17) ^ v2;
            v2 = std::rotl(v2, 32);
        }
    };
    v3 ^= message;
    rounds(2);
    v0 ^= message;
    const std::uint64_t length = std::uint64_t{8} << 56;  // the last block: only the length
    v3 ^= length;
    rounds(2);
    v0 ^= length;
    v2 ^= 0xFF;
    rounds(4);
    return v0 ^ v1 ^ v2 ^ v3;
}

// Request ids nobody can guess: SipHash of a counter, under a key each client draws when it
// is made. A broker sees the ids of the requests it was sent and learns nothing from them of
// the ids sent elsewhere (or to come), so it cannot forge an answer to one of those; nor can
// whatever answers on a broker's address after it restarted. A hash per id costs some 20 ns,
// where a random draw per id would cost a system call or a generator's state to protect.
// Distinct counters give the same id with odds of 2^-64 a pair: with a window of a million,
// never in practice.
class RequestIds {
  public:
    RequestIds() {
        std::random_device device;  // the kernel's generator (getrandom) on Linux
        const auto draw = [&device] {
            return (std::uint64_t{device()} << 32) | std::uint64_t{device()};
        };
        key_ = {draw(), draw()};
    }

    // Never 0: AsyncClient's id set uses it for "no id".
    std::uint64_t next() noexcept {
        std::uint64_t id = 0;
        while (id == 0)
            id = siphash24(key_, counter_++);
        return id;
    }

  private:
    SipHashKey key_;
    std::uint64_t counter_ = 0;
};

// A request id is its 8 raw bytes: fixed size, so no allocation.
using RequestIdBytes = std::array<char, sizeof(std::uint64_t)>;

inline RequestIdBytes encode_request_id(std::uint64_t id) noexcept {
    RequestIdBytes bytes;
    std::memcpy(bytes.data(), &id, bytes.size());
    return bytes;
}

inline std::optional<std::uint64_t> decode_request_id(std::string_view bytes) noexcept {
    if (bytes.size() != sizeof(std::uint64_t)) return std::nullopt;
    std::uint64_t id = 0;
    std::memcpy(&id, bytes.data(), sizeof id);
    return id;
}

inline std::optional<std::uint32_t> deadline_ms(std::chrono::milliseconds deadline) noexcept {
    if (deadline.count() <= 0) return std::nullopt;
    return static_cast<std::uint32_t>(std::min<std::chrono::milliseconds::rep>(
        deadline.count(), std::numeric_limits<std::uint32_t>::max()));
}

// A service name ZB/1 can carry: a longer one would go out cut to 255 bytes, and wait for the
// workers of another service. Checked once per call, before anything is sent.
inline void check_service_name(std::string_view service) {
    if (service.size() > protocol::kMaxServiceNameSize)
        throw std::invalid_argument("service name longer than 255 bytes (" +
                                    std::to_string(service.size()) + ")");
}

// The REQUEST options of a call, checked here: a bad value is the caller's mistake, told at
// once (std::invalid_argument), not a 400 from the broker later.
inline wire::RequestOptions request_options(std::chrono::milliseconds deadline,
                                            std::optional<std::uint8_t> priority,
                                            std::string_view fairness_key,
                                            std::string_view idempotency_key = {}) {
    if (priority && *priority > protocol::kMaxPriority)
        throw std::invalid_argument("priority must be 0 to 9, higher first");
    if (fairness_key.size() > protocol::kMaxFairnessKeySize)
        throw std::invalid_argument("fairness key longer than 255 bytes");
    if (idempotency_key.size() > protocol::kMaxIdempotencyKeySize)
        throw std::invalid_argument("idempotency key longer than 255 bytes");
    wire::RequestOptions options(deadline_ms(deadline));
    options.priority = priority;
    options.fairness_key = fairness_key;
    options.idempotency_key = idempotency_key;
    return options;
}

struct Answer {
    std::uint64_t id = 0;
    protocol::Status status = protocol::Status::no_reply;
    Frames body;
};

// A draining broker's refusal of a new request: a client with other brokers sends it there.
inline bool is_draining(const Answer& answer) {
    return answer.status == protocol::Status::unavailable && answer.body.size() == 1 &&
           view(answer.body.front()) == protocol::kDrainingBody;
}

// Holds one message from the broker and hands out its ANSWER records in order.
class AnswerReader {
  public:
    Frames& message() noexcept { return message_; }

    // Parses message(); false, with the reason in `why`, when it is not a ZB/1 message of
    // ANSWER records carrying our 8-byte ids. Then nothing of it is handed out.
    bool start(const char*& why) {
        next_ = 0;
        if (!wire::parse(message_, 0, records_, why)) {
            records_.clear();
            return false;
        }
        const bool ours = std::all_of(records_.begin(), records_.end(), [](const auto& record) {
            return record.command == wire::Command::answer && decode_request_id(record.id);
        });
        if (!ours) {
            why = "records other than ANSWER, or ids this client does not send";
            records_.clear();
            return false;
        }
        return true;
    }

    // The next answer of the message, nullopt when all were handed out.
    std::optional<Answer> next() {
        if (next_ >= records_.size()) return std::nullopt;
        const wire::Record& record = records_[next_++];
        Answer answer{*decode_request_id(record.id), record.status, {}};
        // An empty inline body is no body: a failure status carries none.
        if (record.body.in_frames || !record.body.bytes.empty())
            wire::move_body(message_, record.body, answer.body);
        return answer;
    }

    // Every answer of the message was handed out.
    bool exhausted() const noexcept { return next_ >= records_.size(); }

  private:
    Frames message_;
    std::vector<wire::Record> records_;
    std::size_t next_ = 0;
};

// The broker answers 503/504 exactly at the deadline a client sends, which is the client's own
// timeout: a client listens this much longer, so that answer arrives instead of racing it.
inline std::chrono::milliseconds reply_grace(std::chrono::milliseconds timeout) {
    using std::chrono::milliseconds;
    return std::clamp(timeout / 4, milliseconds{50}, milliseconds{500});
}

}  // namespace zbroker::detail
