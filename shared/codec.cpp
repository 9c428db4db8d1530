// Out-of-line parts of the msgpack helpers.
#include "codec.hpp"

namespace zbroker {

msgpack::object_handle unpack_object(std::string_view bytes) {
    try {
        std::size_t offset = 0;
        msgpack::object_handle handle = msgpack::unpack(bytes.data(), bytes.size(), offset);
        if (offset != bytes.size()) {
            throw CodecError("payload has " + std::to_string(bytes.size() - offset) +
                             " bytes after its msgpack value");
        }
        return handle;
    } catch (const msgpack::insufficient_bytes&) {
        throw CodecError("payload is not valid msgpack: it ends in the middle of a value");
    } catch (const msgpack::unpack_error& e) {
        throw CodecError(std::string("payload is not valid msgpack: ") + e.what());
    }
}

const char* type_name(msgpack::type::object_type type) noexcept {
    switch (type) {
        case msgpack::type::NIL:
            return "nil";
        case msgpack::type::BOOLEAN:
            return "boolean";
        case msgpack::type::POSITIVE_INTEGER:
            return "positive integer";
        case msgpack::type::NEGATIVE_INTEGER:
            return "negative integer";
        case msgpack::type::FLOAT32:
            return "float32";
        case msgpack::type::FLOAT64:
            return "float64";
        case msgpack::type::STR:
            return "string";
        case msgpack::type::BIN:
            return "binary";
        case msgpack::type::ARRAY:
            return "array";
        case msgpack::type::MAP:
            return "map";
        case msgpack::type::EXT:
            return "ext";
    }
    return "unknown";
}

}  // namespace zbroker
