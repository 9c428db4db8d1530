// AdaptiveCredit: credit counted in time, so short jobs get many and long jobs one per handler.
#include <catch2/catch.hpp>

#include "worker/adaptive_credit.hpp"

using zbroker::detail::AdaptiveCredit;
using namespace std::chrono_literals;

namespace {

// Feeds `jobs` jobs of `duration` and returns the last credit change asked for (0: none).
std::uint32_t run(AdaptiveCredit& credit, std::chrono::nanoseconds duration, int jobs = 100) {
    std::uint32_t asked = 0;
    for (int i = 0; i < jobs; ++i) {
        credit.ran(duration);
        if (const auto change = credit.change()) asked = change;
    }
    return asked;
}

}  // namespace

TEST_CASE("credit starts at 4 per handler and changes only once a job's time is known") {
    AdaptiveCredit credit(2);
    REQUIRE(credit.credit() == 8);
    REQUIRE(credit.change() == 0);
}

TEST_CASE("microsecond jobs get credit for a millisecond of work, capped") {
    AdaptiveCredit one(1);
    REQUIRE(run(one, 10us) == 101);  // 1 + 1000 us / 10 us
    AdaptiveCredit tiny(1);
    REQUIRE(run(tiny, 100ns) == AdaptiveCredit::kMaxCredit);
}

TEST_CASE("jobs of a millisecond or more get about one per handler, so others can take them") {
    AdaptiveCredit credit(4);
    REQUIRE(run(credit, 1ms) == 8);  // each handler: the job it runs and one queued
    AdaptiveCredit slow(4);
    REQUIRE(run(slow, 2s) == 5);  // never below one per handler
    REQUIRE(slow.credit() == 5);
}

TEST_CASE("credit follows a change in job times, and ignores small noise") {
    AdaptiveCredit credit(1);
    REQUIRE(run(credit, 10us) == 101);
    REQUIRE(run(credit, 11us) == 0);  // within a quarter: no message to the broker
    REQUIRE(run(credit, 100ms) == 2);
    REQUIRE(credit.credit() == 2);
}
