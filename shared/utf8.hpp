// UTF-8 as names chosen by peers need it: one character at a time, checked, and told apart
// from what a terminal would act on rather than show. Thirty lines, hand-written: the broker,
// the metrics page and zclient need only this, not a Unicode library.
#pragma once

#include <cstddef>
#include <string_view>

namespace zbroker {

// The first character of `text` (not empty): its length in bytes and its code point. Length 0
// when it is not valid UTF-8: cut short, overlong, a surrogate or past U+10FFFF.
struct Utf8Char {
    std::size_t size = 0;
    char32_t point = 0;
};
Utf8Char first_utf8_char(std::string_view text) noexcept;

// C0 and C1 controls and DEL.
constexpr bool is_control(char32_t point) noexcept {
    return point < 0x20 || (point >= 0x7F && point <= 0x9F);
}

// What a terminal acts on rather than shows: controls (escape sequences clear the screen, move
// the cursor, set the title) and the bidirectional controls that reorder what follows them.
constexpr bool acts_on_terminal(char32_t point) noexcept {
    return is_control(point) || point == 0x200E || point == 0x200F ||
           (point >= 0x202A && point <= 0x202E) || (point >= 0x2066 && point <= 0x2069);
}

// Valid UTF-8 with nothing a terminal acts on: safe to show as it is, in a log, a table, a
// metrics label.
bool printable_utf8(std::string_view text) noexcept;

}  // namespace zbroker
