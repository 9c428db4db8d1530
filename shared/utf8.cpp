#include "utf8.hpp"

namespace zbroker {

Utf8Char first_utf8_char(std::string_view text) noexcept {
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    const unsigned char lead = byte(0);
    if (lead < 0x80) return {1, lead};
    Utf8Char c;
    if (lead >= 0xC2 && lead <= 0xDF) {
        c = {2, lead & 0x1Fu};
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        c = {3, lead & 0x0Fu};
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        c = {4, lead & 0x07u};
    } else {
        return {};
    }
    if (text.size() < c.size) return {};
    for (std::size_t i = 1; i < c.size; ++i) {
        if ((byte(i) & 0xC0) != 0x80) return {};
        c.point = (c.point << 6) | (byte(i) & 0x3Fu);
    }
    constexpr char32_t kLeast[] = {0, 0, 0x80, 0x800, 0x10000};
    if (c.point < kLeast[c.size] || c.point > 0x10FFFF || (c.point >= 0xD800 && c.point <= 0xDFFF))
        return {};
    return c;
}

bool printable_utf8(std::string_view text) noexcept {
    while (!text.empty()) {
        const Utf8Char c = first_utf8_char(text);
        if (c.size == 0 || acts_on_terminal(c.point)) return false;
        text.remove_prefix(c.size);
    }
    return true;
}

}  // namespace zbroker
