// --plot: throughput and latency against requests in flight, drawn by gnuplot into a PNG.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "bench/report.hpp"

namespace zbroker::bench {

// gnuplot's absolute path from $PATH, or nullopt when it is not installed.
std::optional<std::string> find_gnuplot();

// Draws two panels into `png_path`: req/s, and p50 and p99 latency, against in-flight, one
// line per target (and per mode, clients, workers or size when the run swept them). Writes the
// data and the script to a temporary directory and runs gnuplot there. Throws
// std::runtime_error, with gnuplot's own message, if gnuplot fails.
void plot(const std::string& gnuplot, const std::string& png_path,
          const std::vector<Point>& points);

}  // namespace zbroker::bench
