// Round-trip samples of one benchmark point, and exact percentiles over all of them.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace zbroker::bench {

struct LatencySummary {
    double p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0, mean_us = 0;
};

class LatencyRecorder {
  public:
    void reserve(std::size_t n) { samples_ns_.reserve(n); }
    void add(std::chrono::nanoseconds sample) { samples_ns_.push_back(sample.count()); }
    void merge(const LatencyRecorder& other);
    std::size_t count() const noexcept { return samples_ns_.size(); }
    // Sorts the samples: exact nearest-rank percentiles, no histogram buckets.
    LatencySummary summarize();

  private:
    std::vector<std::int64_t> samples_ns_;
};

}  // namespace zbroker::bench
