// ZBC01 headers with msgpack-cxx's SAX-style parser: no allocation, and the first
// malformed byte stops it, so a hostile client costs the broker next to nothing.
#include "request_headers.hpp"

#include <msgpack.hpp>

#include "protocol.hpp"

namespace zbroker {
namespace {

// Walks the top-level map; remembers the values of the keys it knows and the first problem.
class HeadersVisitor : public msgpack::null_visitor {
  public:
    // A container where a known key's value should be is as wrong as a wrong scalar there;
    // checked before going deeper, where the scalars inside would pass for the value itself.
    bool start_map(std::uint32_t) {
        if (depth_ == 0) top_is_map_ = true;
        if (!value(Kind::other)) return false;
        ++depth_;
        return true;
    }
    bool end_map() { return --depth_, true; }
    bool start_array(std::uint32_t) {
        if (!value(Kind::other)) return false;
        return ++depth_, true;
    }
    bool end_array() { return --depth_, true; }
    bool start_map_key() { return in_key_ = depth_ == 1, true; }
    bool end_map_key() { return in_key_ = false, true; }
    bool start_map_value() { return in_value_ = depth_ == 1, true; }
    bool end_map_value() {
        in_value_ = false;
        key_ = Key::unknown;
        return true;
    }
    bool visit_str(const char* data, std::uint32_t size) {
        const std::string_view text(data, size);
        if (in_key_) {
            key_ = text == protocol::kHeaderDeadlineMs       ? Key::deadline_ms
                   : text == protocol::kHeaderPriority       ? Key::priority
                   : text == protocol::kHeaderFairnessKey    ? Key::fairness_key
                   : text == protocol::kHeaderIdempotencyKey ? Key::idempotency_key
                                                             : Key::unknown;
            return true;
        }
        return value(Kind::string, 0, text);
    }
    bool visit_positive_integer(std::uint64_t number) {
        return value(Kind::unsigned_integer, number);
    }
    bool visit_negative_integer(std::int64_t) { return value(Kind::other); }
    bool visit_nil() { return value(Kind::other); }
    bool visit_boolean(bool) { return value(Kind::other); }
    bool visit_float32(float) { return value(Kind::other); }
    bool visit_float64(double) { return value(Kind::other); }
    bool visit_bin(const char*, std::uint32_t) { return value(Kind::other); }
    bool visit_ext(const char*, std::uint32_t) { return value(Kind::other); }

    bool top_is_map_ = false;
    std::optional<std::uint64_t> deadline_ms;
    std::optional<std::uint8_t> priority;
    std::string_view fairness_key;     // into the parsed bytes
    std::string_view idempotency_key;  // into the parsed bytes
    const char* error = nullptr;

  private:
    enum class Key { unknown, deadline_ms, priority, fairness_key, idempotency_key };
    enum class Kind { unsigned_integer, string, other };

    // Called for every value; only those of known top-level keys matter.
    bool value(Kind kind, std::uint64_t number = 0, std::string_view text = {}) {
        if (!in_value_) return true;
        switch (key_) {
            case Key::unknown:
                return true;
            case Key::deadline_ms:
                if (kind != Kind::unsigned_integer)
                    return fail("deadline_ms must be a non-negative integer (milliseconds)");
                deadline_ms = number;
                return true;
            case Key::priority:
                if (kind != Kind::unsigned_integer || number > protocol::kMaxPriority)
                    return fail("priority must be an integer from 0 to 9");
                priority = static_cast<std::uint8_t>(number);
                return true;
            case Key::fairness_key:
                if (kind != Kind::string || text.empty() ||
                    text.size() > protocol::kMaxFairnessKeySize)
                    return fail("fairness_key must be a string of 1 to 255 bytes");
                fairness_key = text;
                return true;
            case Key::idempotency_key:
                if (kind != Kind::string || text.empty() ||
                    text.size() > protocol::kMaxIdempotencyKeySize)
                    return fail("idempotency_key must be a string of 1 to 255 bytes");
                idempotency_key = text;
                return true;
        }
        return true;
    }
    bool fail(const char* why) {
        error = why;
        return false;
    }

    int depth_ = 0;
    bool in_key_ = false;
    bool in_value_ = false;
    Key key_ = Key::unknown;
};

}  // namespace

std::optional<RequestHeaders> parse_request_headers(std::string_view bytes, std::string* error) {
    auto fail = [error](const char* why) -> std::optional<RequestHeaders> {
        if (error != nullptr) *error = why;
        return std::nullopt;
    };
    if (bytes.empty()) return RequestHeaders{};
    if (bytes.size() > kMaxHeadersSize) return fail("headers frame larger than 4096 bytes");
    HeadersVisitor visitor;
    std::size_t offset = 0;
    bool parsed = false;
    try {
        parsed = msgpack::parse(bytes.data(), bytes.size(), offset, visitor);
    } catch (const std::exception&) {
        parsed = false;  // msgpack-cxx throws on some limits (depth, sizes): malformed all the same
    }
    if (visitor.error != nullptr) return fail(visitor.error);
    if (!parsed || offset != bytes.size()) return fail("headers frame is not one msgpack value");
    if (!visitor.top_is_map_) return fail("headers frame must be a msgpack map");
    RequestHeaders headers;
    if (visitor.deadline_ms) {
        constexpr std::uint64_t kMaxDeadlineMs = 1000ULL * 60 * 60 * 24 * 365;  // a year
        headers.deadline =
            std::chrono::milliseconds(std::min(*visitor.deadline_ms, kMaxDeadlineMs));
    }
    headers.priority = visitor.priority;
    headers.fairness_key = visitor.fairness_key;
    headers.idempotency_key = visitor.idempotency_key;
    return headers;
}

std::string encode_request_headers(const RequestHeaders& headers) {
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_map((headers.deadline ? 1 : 0) + (headers.priority ? 1 : 0) +
                    (headers.fairness_key.empty() ? 0 : 1) +
                    (headers.idempotency_key.empty() ? 0 : 1));
    if (headers.deadline) {
        packer.pack(protocol::kHeaderDeadlineMs);
        packer.pack_uint64(static_cast<std::uint64_t>(headers.deadline->count()));
    }
    if (headers.priority) {
        packer.pack(protocol::kHeaderPriority);
        packer.pack_uint8(*headers.priority);
    }
    if (!headers.fairness_key.empty()) {
        packer.pack(protocol::kHeaderFairnessKey);
        packer.pack(headers.fairness_key);
    }
    if (!headers.idempotency_key.empty()) {
        packer.pack(protocol::kHeaderIdempotencyKey);
        packer.pack(headers.idempotency_key);
    }
    return {buffer.data(), buffer.size()};
}

}  // namespace zbroker
