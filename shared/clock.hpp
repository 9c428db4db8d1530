// The one clock every timer in zbroker reads: monotonic, in milliseconds.
#pragma once

#include <chrono>

namespace zbroker {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Millis = std::chrono::milliseconds;

inline TimePoint now() noexcept {
    return Clock::now();
}

}  // namespace zbroker
