// What tests on real processes share: where the programs are, and waiting for a condition.
#pragma once

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

namespace zbroker::testing {

// ctest sets ZBROKER_BIN_DIR to the build's bin/; by hand, the debug build is assumed.
inline std::string bin_dir() {
    const char* dir = std::getenv("ZBROKER_BIN_DIR");
    return dir != nullptr ? dir : "build/debug/bin";
}

// How long a test waits for an event that normally comes within milliseconds. Generous on
// purpose: a passing test never waits it out, and a sanitizer build on a 2-core machine whose
// cores are both busy runs 20x slower than a release build on an idle one. A test that gives up
// after kPatience says that the machine was too slow or the product is wrong, never only "wrong".
inline constexpr std::chrono::seconds kPatience{30};

// Polls until `condition` holds; false after `timeout`.
template <typename F>
bool eventually(F condition, std::chrono::milliseconds timeout = kPatience) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

// Said when an awaited event did not come within kPatience.
inline constexpr const char* kTooSlow =
    "not within the patience budget: the product is wrong, or the machine is too slow "
    "(sanitizers, load)";

// eventually(), and when the event never came, a failure message that says why it may not have.
template <typename Condition>
bool in_time(Condition condition) {
    if (eventually(condition)) return true;
    UNSCOPED_INFO("waited " << kPatience.count() << " s in vain: " << kTooSlow);
    return false;
}

}  // namespace zbroker::testing
