// How many requests one service socket asks the broker for, from how long its jobs take.
//
// Credit is jobs the broker may hand a worker ahead of its handlers. Too little and handlers
// sit idle while replies and new jobs cross the network: echo at credit 4 ran at a twentieth of
// its speed at credit 500 (zbench, 1000 in flight). Too much and jobs wait here while a worker
// elsewhere is idle. So credit is counted in time, not in jobs: one job per handler, plus as
// many as the handlers run in kQueuedWork. Short jobs get credit in the hundreds, jobs of a
// millisecond or more about one per handler, and no job waits here much longer than kQueuedWork
// for a handler.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>

namespace zbroker::detail {

class AdaptiveCredit {
  public:
    static constexpr std::chrono::microseconds kQueuedWork{1000};
    static constexpr std::uint32_t kMaxCredit = 1000;
    static constexpr std::uint32_t kStartPerHandler = 4;  // until a job's time is known

    explicit AdaptiveCredit(std::uint32_t handlers)
        : handlers_(std::max<std::uint32_t>(handlers, 1)), credit_(kStartPerHandler * handlers_) {}

    // One job ran for `duration` on a handler.
    void ran(std::chrono::nanoseconds duration) noexcept {
        const double ns = std::max<double>(static_cast<double>(duration.count()), 100.0);
        // An average over the last few dozen jobs: steady, yet quick to follow a change.
        mean_ns_ = mean_ns_ == 0 ? ns : mean_ns_ + (ns - mean_ns_) / 16;
    }

    // The credit to ask for when it differs enough from what was asked last; 0 when not.
    // Changes under a quarter are ignored, so noise in job times does not flood the broker.
    std::uint32_t change() noexcept {
        if (mean_ns_ == 0) return 0;
        const double queued = std::chrono::nanoseconds(kQueuedWork).count() / mean_ns_;
        const auto target = static_cast<std::uint32_t>(std::clamp(
            std::ceil(handlers_ * (1.0 + queued)), double(handlers_), double(kMaxCredit)));
        if (4 * target >= 3 * credit_ && 4 * target <= 5 * credit_) return 0;
        credit_ = target;
        return target;
    }

    std::uint32_t credit() const noexcept { return credit_; }

  private:
    std::uint32_t handlers_;
    std::uint32_t credit_;
    double mean_ns_ = 0;
};

}  // namespace zbroker::detail
