// MessagePack helpers for payloads: typed values in, bytes out, and errors that say what was wrong.
// Included only where payloads are read or written (worker handlers, clients), never by the broker.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include <msgpack.hpp>

namespace zbroker {

// A payload that is not valid msgpack, or not of the type asked for.
class CodecError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

template <typename T>
std::string pack(const T& value) {
    msgpack::sbuffer buffer;
    msgpack::pack(buffer, value);
    return {buffer.data(), buffer.size()};
}

const char* type_name(msgpack::type::object_type type) noexcept;

// Decodes one msgpack value; the handle keeps the zone that its object points into.
msgpack::object_handle unpack_object(std::string_view bytes);

// T must own its data: a msgpack::object inside T would point into a zone freed on return.
// For such views keep the handle of unpack_object() alive instead.
template <typename T>
T unpack(std::string_view bytes) {
    const msgpack::object_handle handle = unpack_object(bytes);
    try {
        return handle.get().as<T>();
    } catch (const msgpack::type_error&) {
        throw CodecError("payload has the wrong shape for the handler: got a msgpack " +
                         std::string(type_name(handle.get().type)));
    }
}

}  // namespace zbroker
