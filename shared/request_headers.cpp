// ZBC01 headers with msgpack-cxx's SAX-style parser: no allocation, and the first
// malformed byte stops it, so a hostile client costs the broker next to nothing.
#include "request_headers.hpp"

#include <msgpack.hpp>

#include "protocol.hpp"

namespace zbroker {
namespace {

// Walks the top-level map; remembers the value of `deadline_ms` and the first problem.
class HeadersVisitor : public msgpack::null_visitor {
  public:
    // A container where deadline_ms's value should be is as wrong as a string there; checked
    // before going deeper, where the scalars inside would pass for the value itself.
    bool start_map(std::uint32_t) {
        if (depth_ == 0) top_is_map_ = true;
        if (!deadline_value(false, 0)) return false;
        ++depth_;
        return true;
    }
    bool end_map() { return --depth_, true; }
    bool start_array(std::uint32_t) {
        if (!deadline_value(false, 0)) return false;
        return ++depth_, true;
    }
    bool end_array() { return --depth_, true; }
    bool start_map_key() { return in_key_ = depth_ == 1, true; }
    bool end_map_key() { return in_key_ = false, true; }
    bool start_map_value() { return in_value_ = depth_ == 1, true; }
    bool end_map_value() {
        in_value_ = false;
        key_is_deadline_ = false;
        return true;
    }
    bool visit_str(const char* data, std::uint32_t size) {
        if (in_key_) key_is_deadline_ = std::string_view(data, size) == protocol::kHeaderDeadlineMs;
        return deadline_value(false, 0);
    }
    bool visit_positive_integer(std::uint64_t value) { return deadline_value(true, value); }
    bool visit_negative_integer(std::int64_t) { return deadline_value(false, 0); }
    bool visit_nil() { return deadline_value(false, 0); }
    bool visit_boolean(bool) { return deadline_value(false, 0); }
    bool visit_float32(float) { return deadline_value(false, 0); }
    bool visit_float64(double) { return deadline_value(false, 0); }
    bool visit_bin(const char*, std::uint32_t) { return deadline_value(false, 0); }
    bool visit_ext(const char*, std::uint32_t) { return deadline_value(false, 0); }

    bool top_is_map_ = false;
    std::optional<std::uint64_t> deadline_ms;
    const char* error = nullptr;

  private:
    // Called for every scalar; only the value of a top-level `deadline_ms` key matters.
    bool deadline_value(bool is_unsigned, std::uint64_t value) {
        if (!in_value_ || !key_is_deadline_) return true;
        if (!is_unsigned) {
            error = "deadline_ms must be a non-negative integer (milliseconds)";
            return false;
        }
        deadline_ms = value;
        return true;
    }

    int depth_ = 0;
    bool in_key_ = false;
    bool in_value_ = false;
    bool key_is_deadline_ = false;
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
    return headers;
}

std::string encode_request_headers(const RequestHeaders& headers) {
    msgpack::sbuffer buffer;
    msgpack::packer<msgpack::sbuffer> packer(buffer);
    packer.pack_map(headers.deadline ? 1 : 0);
    if (headers.deadline) {
        packer.pack(protocol::kHeaderDeadlineMs);
        packer.pack_uint64(static_cast<std::uint64_t>(headers.deadline->count()));
    }
    return {buffer.data(), buffer.size()};
}

}  // namespace zbroker
