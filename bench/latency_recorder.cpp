// Nearest-rank percentiles over sorted samples.
#include "latency_recorder.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace zbroker::bench {

void LatencyRecorder::merge(const LatencyRecorder& other) {
    samples_ns_.insert(samples_ns_.end(), other.samples_ns_.begin(), other.samples_ns_.end());
}

LatencySummary LatencyRecorder::summarize() {
    LatencySummary s;
    if (samples_ns_.empty()) return s;
    std::sort(samples_ns_.begin(), samples_ns_.end());
    const auto at = [this](double p) {
        const auto rank =
            static_cast<std::size_t>(std::ceil(p * static_cast<double>(samples_ns_.size())));
        return static_cast<double>(
                   samples_ns_[std::clamp<std::size_t>(rank, 1, samples_ns_.size()) - 1]) /
               1e3;
    };
    s.p50_us = at(0.50);
    s.p90_us = at(0.90);
    s.p99_us = at(0.99);
    s.p999_us = at(0.999);
    s.max_us = static_cast<double>(samples_ns_.back()) / 1e3;
    const double total = std::accumulate(samples_ns_.begin(), samples_ns_.end(), 0.0);
    s.mean_us = total / static_cast<double>(samples_ns_.size()) / 1e3;
    return s;
}

}  // namespace zbroker::bench
