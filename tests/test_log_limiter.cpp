// LogLimiter on a clock the tests move by hand: which lines are written, and what is told of
// the rest.
#include <catch2/catch.hpp>

#include <string>

#include "shared/log_limiter.hpp"

using namespace zbroker;
using namespace std::chrono_literals;

namespace {

const TimePoint kStart = TimePoint{} + 1h;

}  // namespace

TEST_CASE("the first line of a kind is written and the rest of its window are counted") {
    LogLimiter limiter;
    REQUIRE(limiter.admit("malformed", kStart) == 0u);
    for (int i = 0; i < 1000; ++i)
        REQUIRE_FALSE(limiter.admit("malformed", kStart + 9s));
}

TEST_CASE("the first line of the next window tells how many were left out") {
    LogLimiter limiter;
    REQUIRE(limiter.admit("malformed", kStart));
    for (int i = 0; i < 41; ++i)
        limiter.admit("malformed", kStart + 1s);
    REQUIRE(limiter.admit("malformed", kStart + 10s) == 41u);
    REQUIRE(limiter.admit("malformed", kStart + 20s) == 0u);  // told once only
}

TEST_CASE("each kind has its own window") {
    LogLimiter limiter;
    REQUIRE(limiter.admit("malformed", kStart));
    REQUIRE_FALSE(limiter.admit("malformed", kStart + 1s));
    REQUIRE(limiter.admit("refused job", kStart + 1s));
    REQUIRE_FALSE(limiter.admit("refused job", kStart + 2s));
}

TEST_CASE("a window may let several lines of a kind through") {
    LogLimiter limiter({.window = 1s, .lines_per_window = 3});
    REQUIRE(limiter.admit("k", kStart));
    REQUIRE(limiter.admit("k", kStart));
    REQUIRE(limiter.admit("k", kStart));
    REQUIRE_FALSE(limiter.admit("k", kStart));
    REQUIRE_FALSE(limiter.admit("k", kStart + 999ms));
    REQUIRE(limiter.admit("k", kStart + 1s) == 2u);
}

TEST_CASE("expire tells what a window left out when no later line does, once") {
    LogLimiter limiter;
    limiter.admit("malformed", kStart);
    limiter.admit("malformed", kStart + 1s);
    limiter.admit("malformed", kStart + 2s);
    limiter.admit("quiet", kStart + 5s);
    REQUIRE(limiter.expire(kStart + 9s).empty());

    const auto untold = limiter.expire(kStart + 10s);
    REQUIRE(untold.size() == 1);
    REQUIRE(untold[0].kind == "malformed");
    REQUIRE(untold[0].left_out == 2);
    REQUIRE(limiter.expire(kStart + 16s).empty());  // "quiet" ends, having left nothing out
    REQUIRE(limiter.kinds_tracked() == 0);
    REQUIRE(limiter.admit("malformed", kStart + 17s) == 0u);  // already told
}

TEST_CASE("the kinds tracked at once are bounded, the rest sharing one entry") {
    LogLimiter limiter({.window = 10s, .lines_per_window = 1, .kinds = 4});
    for (int i = 0; i < 1000; ++i)
        limiter.admit("peer " + std::to_string(i), kStart);
    REQUIRE(limiter.kinds_tracked() == 4);
    const auto untold = limiter.expire(kStart + 10s);
    REQUIRE(untold.size() == 1);
    REQUIRE(untold[0].kind == LogLimiter::kOtherKinds);
    REQUIRE(untold[0].left_out == 1000 - 3 - 1);  // three kinds of their own, one other line
}

TEST_CASE("more_like_this says how many and over which window, and nothing for none") {
    REQUIRE(LogLimiter().more_like_this(0).empty());
    REQUIRE(LogLimiter().more_like_this(7) == " (7 more like this in the last 10 s)");
    REQUIRE(LogLimiter({.window = 250ms}).more_like_this(1) ==
            " (1 more like this in the last 250 ms)");
}
