// shared/utf8.hpp: what counts as valid UTF-8, and what a terminal would act on.
#include <catch2/catch.hpp>

#include <string>

#include "shared/utf8.hpp"

using namespace zbroker;

TEST_CASE("first_utf8_char decodes one character of each length") {
    REQUIRE(first_utf8_char("a").size == 1);
    const Utf8Char e_acute = first_utf8_char("\xc3\xa9!");
    REQUIRE(e_acute.size == 2);
    REQUIRE(e_acute.point == 0xE9);
    REQUIRE(first_utf8_char("\xe2\x9c\x93").point == 0x2713);
    REQUIRE(first_utf8_char("\xf0\x9f\x98\x80").point == 0x1F600);
}

TEST_CASE("first_utf8_char refuses what is not UTF-8") {
    for (const std::string bad : {"\xff", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80",
                                  "\xf4\x90\x80\x80", "\xc3", "\xe2\x9c", "\x80"}) {
        INFO(bad.size());
        REQUIRE(first_utf8_char(bad).size == 0);
    }
}

TEST_CASE("printable_utf8: text, yes; controls, escapes, bidi controls and bad bytes, no") {
    REQUIRE(printable_utf8("echo"));
    REQUIRE(printable_utf8("caf\xc3\xa9 \xe2\x9c\x93"));
    REQUIRE(printable_utf8(""));
    REQUIRE_FALSE(printable_utf8("a\nerror: forged"));
    REQUIRE_FALSE(printable_utf8("\x1b]0;owned\x07"));
    REQUIRE_FALSE(printable_utf8("x\x7f"));
    REQUIRE_FALSE(printable_utf8("x\xc2\x85"));  // C1: NEL
    REQUIRE_FALSE(
        printable_utf8("abc\xe2\x80\xae"
                       "fed"));  // RIGHT-TO-LEFT OVERRIDE
    REQUIRE_FALSE(printable_utf8("bad\xff"));
}
