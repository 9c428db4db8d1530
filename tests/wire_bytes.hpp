// ZB/1 fields written by hand, little-endian as docs/protocol.md says: for tests that check
// exact layouts or build malformed messages the wire::Writer would never write.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "shared/wire.hpp"

namespace zbroker::testing {

inline std::string u8(std::uint32_t value) {
    return std::string(1, static_cast<char>(value & 0xFF));
}
inline std::string u16(std::uint32_t value) {
    return u8(value) + u8(value >> 8);
}
inline std::string u32(std::uint32_t value) {
    return u16(value) + u16(value >> 16);
}
inline std::string short_bytes(std::string_view bytes) {
    return u8(static_cast<std::uint32_t>(bytes.size())) + std::string(bytes);
}
inline std::string inline_body(std::string_view bytes) {
    return u8(0x00) + u32(static_cast<std::uint32_t>(bytes.size())) + std::string(bytes);
}
inline std::string command_byte(wire::Command command) {
    return u8(static_cast<std::uint8_t>(command));
}

}  // namespace zbroker::testing
